//! Leader-lease safety on a clock the test drives: a deposed (partitioned) leader never serves a
//! lease read once a new leader could have committed a write, a lease is never used beyond its
//! duration, and lease reads stop during a leadership transfer.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftwal_glue::Clock;

use raftwal_glue::{
    Config, ManualClock, MemNetwork, Node, RaftStorage, ReadVia, Role, StateMachine,
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
