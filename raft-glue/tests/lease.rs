//! Leader-lease safety on a clock the test drives: a deposed (partitioned) leader never serves a
//! lease read once a new leader could have committed a write, a lease is never used beyond its
//! duration, lease reads stop during a leadership transfer (and are not renewed while it is
//! pending), a lease longer than a follower's promise is refused, and a restarted node keeps
//! the promise it may have made before it stopped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/echo.rs"]
mod echo;
#[path = "support/pairs.rs"]
mod pairs;
#[path = "support/stores.rs"]
mod stores;
#[path = "support/wait.rs"]
mod wait;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftwal_glue::Clock;

use raftwal_glue::{
    Config, ManualClock, MemNetwork, Node, RaftStorage, ReadVia, Role, Route, StateMachine,
};
use raftwal_snapshot::MemSnapshotStore;
use raftwal_wal::MemStore;

struct Nop;
impl StateMachine for Nop {
    fn apply(&mut self, _: u64, _: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn snapshot(&mut self) -> std::io::Result<Box<dyn raftwal_glue::StateSnapshot>> {
        Ok(Box::new(Vec::new()))
    }

    fn restore(&mut self, _: &mut dyn std::io::Read) -> std::io::Result<()> {
        Ok(())
    }
}

const TICK: Duration = Duration::from_millis(10);

struct Cluster {
    clock: ManualClock,
    net: MemNetwork,
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    fn new() -> Self {
        let clock = ManualClock::new();
        let net = MemNetwork::new();
        let nodes = (1..=3)
            .map(|id| {
                let cfg = Config {
                    tick: TICK,
                    clock: Arc::new(clock.clone()),
                    ..Config::new(id, vec![1, 2, 3])
                };
                let storage = RaftStorage::new(MemStore::new(), MemSnapshotStore::new(1).unwrap());
                let n = Node::start(cfg, Nop, storage, net.transport(id)).unwrap();
                net.connect(id, n.mailbox());
                (id, n)
            })
            .collect();
        Cluster { clock, net, nodes }
    }

    /// Moves the shared clock one tick and lets every node notice it (they re-check the clock
    /// at least once per tick of real time).
    fn step(&self) {
        self.clock.advance(TICK);
        std::thread::sleep(TICK + Duration::from_millis(3));
    }

    fn leader_among(&self, ids: &[u64]) -> Option<u64> {
        let l: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| self.nodes[id].role() == Role::Leader)
            .collect();
        (l.len() == 1).then(|| l[0])
    }

    fn elect(&self, ids: &[u64]) -> u64 {
        for _ in 0..300 {
            if let Some(l) = self.leader_among(ids) {
                return l;
            }
            self.step();
        }
        panic!("no leader among {ids:?}");
    }

    /// Steps the clock until `id` serves a lease read.
    fn until_lease(&self, id: u64) {
        for _ in 0..50 {
            if let Ok(p) = self.nodes[&id].lease_read(Duration::from_millis(200)) {
                if p.via == ReadVia::Lease {
                    return;
                }
            }
            self.step();
        }
        panic!("node {id} never got a lease");
    }
}

#[test]
fn a_deposed_leader_never_serves_a_lease_read_after_a_new_leader_can_commit() {
    let c = Cluster::new();
    let old = c.elect(&[1, 2, 3]);
    c.nodes[&old]
        .apply(b"x=1".to_vec(), Duration::from_secs(5))
        .unwrap();
    c.until_lease(old);
    let lease = Config::new(1, vec![]).lease();

    // Cut the leader off. From now on it hears from no quorum, so its lease is never renewed.
    let others: Vec<u64> = (1..=3).filter(|&i| i != old).collect();
    c.net.partition(&[old], &others);
    let cut_clock = c.clock.clone();
    let since_cut = |start: Instant| cut_clock.now().saturating_duration_since(start);
    let clock_at_cut = c.clock.now();
    let mut new_write_committed = false;
    for _ in 0..200 {
        c.step();
        match c.nodes[&old].lease_read(Duration::from_millis(20)) {
            Ok(p) if p.via == ReadVia::Lease => {
                assert!(
                    !new_write_committed,
                    "a lease read was served after the new leader committed a write"
                );
                assert!(
                    since_cut(clock_at_cut) < lease,
                    "a lease read {:?} after the partition, past the {lease:?} lease",
                    since_cut(clock_at_cut)
                );
            }
            Ok(p) => panic!("a partitioned leader completed a read-index round: {p:?}"),
            Err(_) => {}
        }
        if !new_write_committed {
            if let Some(l2) = c.leader_among(&others) {
                if c.nodes[&l2]
                    .apply(b"x=2".to_vec(), Duration::from_secs(5))
                    .is_ok()
                {
                    new_write_committed = true;
                }
            }
        }
        if new_write_committed && c.nodes[&old].role() != Role::Leader {
            break;
        }
    }
    assert!(new_write_committed, "the majority never committed");
    assert_ne!(c.nodes[&old].role(), Role::Leader, "check-quorum step-down");
    c.net.heal();
}

#[test]
fn no_lease_reads_while_leadership_moves() {
    let c = Cluster::new();
    let old = c.elect(&[1, 2, 3]);
    c.nodes[&old]
        .apply(b"x=1".to_vec(), Duration::from_secs(5))
        .unwrap();
    c.until_lease(old);
    let to = (1..=3).find(|&i| i != old).unwrap();
    c.nodes[&old]
        .transfer_leadership(to, Duration::from_secs(5))
        .unwrap();
    // The old leader's lease ended with the transfer: any read it serves now is by read-index
    // (through the new leader), never by its stale lease.
    for _ in 0..5 {
        if let Ok(p) = c.nodes[&old].lease_read(Duration::from_millis(500)) {
            assert_eq!(
                p.via,
                ReadVia::ReadIndex,
                "stale lease used after a transfer"
            );
        }
        c.step();
    }
    // The new leader earns its own lease.
    c.until_lease(to);
}

/// Steps the clock until `id` serves a lease read.
fn until_lease(c: &echo::Cluster, id: u64) {
    for _ in 0..100 {
        if let Ok(p) = c.node(id).lease_read(Duration::from_millis(200)) {
            if p.via == ReadVia::Lease {
                return;
            }
        }
        c.step();
    }
    panic!("node {id} never got a lease");
}

/// The audit's reproduction (3 election ticks of 10 ms, 1 heartbeat tick, a 24 ms lease, while
/// a follower may vote for another node 20 ms after it last heard from the leader): refused.
#[test]
fn a_lease_longer_than_a_follower_promise_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = Config {
        tick: Duration::from_millis(10),
        election_ticks: 3,
        heartbeat_ticks: 1,
        lease: Some(Duration::from_millis(24)),
        ..Config::new(1, vec![1])
    };
    let net = MemNetwork::new();
    match Node::start(cfg.clone(), Nop, stores::open(dir.path()), net.transport(1)) {
        Err(raftwal_glue::NodeError::Config(msg)) => assert!(msg.contains("lease"), "{msg}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }
    // The default lease for the same timing is within the bound.
    let ok = Config { lease: None, ..cfg };
    assert!(ok.lease() < ok.lease_bound());
    assert!(ok.lease_bound() < Duration::from_millis(20));
    Node::start(ok, Nop, stores::open(dir.path()), net.transport(1)).unwrap();
}

/// A node that restarts may have promised a leader, before it stopped, not to vote for
/// another node for an election timeout, and has forgotten when: it grants no vote (nor
/// pre-vote) for a whole election timeout after it starts, then votes again.
#[test]
fn a_restarted_node_grants_no_vote_for_an_election_timeout() {
    use raftwal_glue::raft::eraftpb::{Message, MessageType};
    let mut c = echo::Cluster::with(3, echo::quick, Some(ManualClock::new()));
    let l = c.wait_leader(&[1, 2, 3]);
    c.node(l)
        .apply(b"x=1".to_vec(), Duration::from_secs(5))
        .unwrap();
    let f = (1..=3).find(|&i| i != l).unwrap();
    let g = (1..=3).find(|&i| i != l && i != f).unwrap();
    c.crash(f);
    // It hears from no leader after it restarts, so Raft's own in-lease check does not apply.
    c.net.cut(l, f);
    c.net
        .hold(Route::from(f, MessageType::MsgRequestVoteResponse));
    c.start(f, vec![1, 2, 3]);
    let vote = |c: &echo::Cluster| {
        let s = c.node(f).status();
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgRequestVote);
        m.from = g;
        m.to = f;
        m.term = s.term + 1;
        m.log_term = s.term + 1;
        m.index = s.last_index + 100;
        c.node(f).mailbox().deliver(m);
    };
    let dropped = |c: &echo::Cluster| {
        c.node(f)
            .status()
            .dropped
            .get(&raftwal_glue::DropReason::VoteAfterRestart)
            .copied()
            .unwrap_or(0)
    };
    for i in 1..=3 {
        vote(&c);
        wait::wait(|| (dropped(&c) == i).then_some(())).expect("the vote request is dropped");
        c.step();
    }
    assert_eq!(
        c.net.held(),
        0,
        "a restarted node answered a vote request at once"
    );
    // A whole election timeout (10 ticks) after the restart, it answers again.
    for _ in 0..10 {
        c.step();
    }
    vote(&c);
    wait::wait(|| (c.net.held() > 0).then_some(())).expect("it votes again after the timeout");
    assert_eq!(dropped(&c), 3);
    c.net.release();
}

/// While a leadership transfer is pending (its `MsgTimeoutNow` held back in the network), the
/// leader keeps renewing its heartbeat rounds, but never trusts them as a lease: a late
/// `MsgTimeoutNow` makes the transferee campaign and win at once. Nor afterwards, in that term.
#[test]
fn a_lease_renewed_during_a_transfer_is_not_trusted() {
    use raftwal_glue::raft::eraftpb::MessageType;
    let c = echo::Cluster::with(3, echo::quick, Some(ManualClock::new()));
    let l = c.wait_leader(&[1, 2, 3]);
    c.node(l)
        .apply(b"x=1".to_vec(), Duration::from_secs(5))
        .unwrap();
    until_lease(&c, l);
    let term = c.node(l).status().term;
    let to = (1..=3).find(|&i| i != l).unwrap();
    c.net.hold(Route::of(MessageType::MsgTimeoutNow));
    assert!(c
        .node(l)
        .transfer_leadership(to, Duration::from_millis(100))
        .is_err());
    // Long enough for Raft to give the transfer up (an election timeout) and renew many times.
    for _ in 0..30 {
        c.step();
        if let Ok(p) = c.node(l).lease_read(Duration::from_millis(200)) {
            assert_eq!(
                p.via,
                ReadVia::ReadIndex,
                "a lease renewed during a transfer was used"
            );
        }
    }
    assert_eq!(c.node(l).status().term, term, "still the same term");
    assert_eq!(c.leader_among(&[1, 2, 3]), Some(l), "still leading");
    // The late message starts the transferee's campaign, which the followers grant at once.
    c.net.release();
    assert_eq!(c.wait_leader(&[to]), to);
}
