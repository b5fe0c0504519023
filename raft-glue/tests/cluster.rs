//! Three `Node`s on real `Wal`s and `FileSnapshotStore`s over the in-memory network: election,
//! replication, the not-leader hint, leader crash and restart from the WAL, a partitioned
//! leader, membership changes, snapshots (compaction, restart from a snapshot, a follower and
//! a newcomer catching up by snapshot, broken snapshot streams).
//! Assertions wait for outcomes with generous deadlines; nothing asserts a duration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/pairs.rs"]
mod pairs;
#[path = "support/stores.rs"]
mod stores;
#[path = "support/wait.rs"]
mod wait;

use wait::wait;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftwal_glue::{
    Config, MemNetwork, Node, NodeError, NodeEvent, RaftStorage, Role, StateMachine,
};
use raftwal_snapshot::{FileSnapshotStore, SnapshotStore};
use raftwal_wal::{LogStore, Wal, WalOptions};

/// `set k v` → the previous value; `add k n` adds to a number (not idempotent, so a command
/// applied twice or skipped shows); the map is shared so the test can look at it.
#[derive(Clone, Default)]
struct Kv(Arc<Mutex<BTreeMap<String, String>>>);

impl StateMachine for Kv {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        let s = String::from_utf8_lossy(command);
        let mut parts = s.splitn(3, ' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("set"), Some(k), Some(v)) => self
                .0
                .lock()
                .unwrap()
                .insert(k.to_string(), v.to_string())
                .unwrap_or_default()
                .into_bytes(),
            (Some("add"), Some(k), Some(n)) => {
                let mut m = self.0.lock().unwrap();
                let sum =
                    m.get(k).map_or(0, |v| v.parse::<u64>().unwrap()) + n.parse::<u64>().unwrap();
                m.insert(k.to_string(), sum.to_string());
                sum.to_string().into_bytes()
            }
            _ => b"?".to_vec(),
        }
    }

    fn snapshot(&mut self) -> std::io::Result<Box<dyn raftwal_glue::StateSnapshot>> {
        let m = self.0.lock().unwrap();
        Ok(Box::new(pairs::encode(
            m.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())),
        )))
    }

    fn restore(&mut self, data: &mut dyn std::io::Read) -> std::io::Result<()> {
        let restored = pairs::decode(data)?
            .into_iter()
            .map(|(k, v)| {
                (
                    String::from_utf8_lossy(&k).into_owned(),
                    String::from_utf8_lossy(&v).into_owned(),
                )
            })
            .collect();
        *self.0.lock().unwrap() = restored;
        Ok(())
    }
}

/// Fields drop in order: the nodes stop before their directory is removed.
struct Cluster {
    nodes: BTreeMap<u64, (Node, Kv)>,
    net: MemNetwork,
    dir: tempfile::TempDir,
    /// (snapshot every, trailing entries).
    snap: (u64, u64),
}

/// Snapshots in `dir/snapshots`, the log in `dir/wal`.
fn start_with(
    dir: &Path,
    id: u64,
    peers: Vec<u64>,
    net: &MemNetwork,
    (every, trailing): (u64, u64),
) -> (Node, Kv) {
    let storage = stores::open(dir);
    let kv = Kv::default();
    let cfg = Config {
        tick: Duration::from_millis(10),
        snapshot_threshold: every,
        trailing_entries: trailing,
        ..Config::new(id, peers)
    };
    let node = Node::start(cfg, kv.clone(), storage, net.transport(id)).unwrap();
    net.connect(id, node.mailbox());
    (node, kv)
}

impl Cluster {
    fn new() -> Self {
        Self::with_snapshots(8192, 1024)
    }

    fn with_snapshots(every: u64, trailing: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Cluster {
            dir,
            net: MemNetwork::new(),
            nodes: BTreeMap::new(),
            snap: (every, trailing),
        };
        for id in 1..=3 {
            c.restart(id);
        }
        c
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    fn start_new(&mut self, id: u64) {
        let n = start_with(&self.path(id), id, vec![], &self.net, self.snap);
        self.nodes.insert(id, n);
    }

    fn crash(&mut self, id: u64) {
        self.net.disconnect(id);
        if let Some((n, _)) = self.nodes.remove(&id) {
            n.shutdown();
        }
    }

    fn restart(&mut self, id: u64) {
        let n = start_with(&self.path(id), id, vec![1, 2, 3], &self.net, self.snap);
        self.nodes.insert(id, n);
    }

    /// The first index of a stopped node's log.
    fn first_index(&self, id: u64) -> u64 {
        let wal = Wal::open(self.path(id).join("wal"), WalOptions::default()).unwrap();
        wal.first_index().unwrap()
    }

    /// The leader that the given nodes agree on.
    fn leader_among(&self, ids: &[u64]) -> Option<u64> {
        let leaders: Vec<u64> = ids
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .filter(|(n, _)| n.role() == Role::Leader)
            .map(|(n, _)| n.status().id)
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    fn wait_leader(&self, ids: &[u64]) -> u64 {
        wait(|| self.leader_among(ids)).expect("a leader is elected")
    }

    fn apply(&self, id: u64, cmd: &str) -> Result<raftwal_glue::Applied, NodeError> {
        self.nodes[&id]
            .0
            .apply(cmd.as_bytes().to_vec(), Duration::from_secs(10))
    }

    /// Applies through whoever is leader, retrying on leadership changes.
    fn apply_anywhere(&self, cmd: &str) -> raftwal_glue::Applied {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let l = self.wait_leader(&ids);
            match self.apply(l, cmd) {
                Ok(a) => return a,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("retrying {cmd:?} after {e}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{cmd:?} failed: {e}"),
            }
        }
    }

    fn state(&self, id: u64) -> BTreeMap<String, String> {
        self.nodes[&id].1 .0.lock().unwrap().clone()
    }

    fn wait_converged(&self, want: &BTreeMap<String, String>) {
        let ok = wait(|| {
            self.nodes
                .keys()
                .all(|id| &self.state(*id) == want)
                .then_some(())
        });
        assert!(ok.is_some(), "state machines did not converge");
    }
}

#[test]
fn elects_one_leader_replicates_and_hints_followers() {
    let c = Cluster::new();
    let l = c.wait_leader(&[1, 2, 3]);
    let a = c.apply(l, "set x 1").unwrap();
    assert_eq!(a.response, b"");
    let b = c.apply(l, "set x 2").unwrap();
    assert_eq!(b.response, b"1", "the response is the state machine's");
    assert!(b.index > a.index);
    let f = (1..=3).find(|&i| i != l).unwrap();
    let hint = wait(|| match c.apply(f, "set y 1") {
        Err(NodeError::NotLeader {
            leader_hint: Some(h),
        }) => Some(h),
        _ => None,
    });
    assert_eq!(hint, Some(l));
    let mut want = BTreeMap::new();
    want.insert("x".to_string(), "2".to_string());
    c.wait_converged(&want);
}

#[test]
fn leader_crash_and_restart_lose_nothing_acknowledged() {
    let mut c = Cluster::new();
    let mut want = BTreeMap::new();
    for i in 0..20 {
        c.apply_anywhere(&format!("set k{i} {i}"));
        want.insert(format!("k{i}"), i.to_string());
    }
    let l = c.wait_leader(&[1, 2, 3]);
    c.crash(l);
    let others: Vec<u64> = (1..=3).filter(|&i| i != l).collect();
    let l2 = c.wait_leader(&others);
    assert_ne!(l2, l);
    for i in 20..30 {
        c.apply_anywhere(&format!("set k{i} {i}"));
        want.insert(format!("k{i}"), i.to_string());
    }
    // The old leader restarts from its WAL and catches up.
    c.restart(l);
    c.wait_converged(&want);
    // And a follower crash/restart too.
    let f = others.into_iter().find(|&i| i != l2).unwrap();
    c.crash(f);
    c.apply_anywhere("set after crash");
    want.insert("after".into(), "crash".into());
    c.restart(f);
    c.wait_converged(&want);
    let lasts: Vec<u64> = c
        .nodes
        .values()
        .map(|(n, _)| n.status().last_index)
        .collect();
    assert!(lasts.windows(2).all(|w| w[0] == w[1]), "{lasts:?}");
}

#[test]
fn a_partitioned_leader_steps_down_and_the_majority_goes_on() {
    let c = Cluster::new();
    let l = c.wait_leader(&[1, 2, 3]);
    c.apply(l, "set a 1").unwrap();
    let others: Vec<u64> = (1..=3).filter(|&i| i != l).collect();
    c.net.partition(&[l], &others);
    // The majority elects a new leader and keeps accepting writes.
    let l2 = c.wait_leader(&others);
    c.apply(l2, "set a 2").unwrap();
    // The isolated leader cannot commit and steps down (check-quorum).
    match c.apply(l, "set a 3") {
        Err(NodeError::NotLeader { .. } | NodeError::LeadershipLost | NodeError::Timeout) => {}
        other => panic!("the isolated leader must not commit: {other:?}"),
    }
    assert!(
        wait(|| (c.nodes[&l].0.role() != Role::Leader).then_some(())).is_some(),
        "the isolated leader never stepped down"
    );
    c.net.heal();
    let mut want = BTreeMap::new();
    want.insert("a".to_string(), "2".to_string());
    c.wait_converged(&want);
}

#[test]
fn whole_cluster_restart_keeps_every_acknowledged_write() {
    let mut c = Cluster::new();
    let mut want = BTreeMap::new();
    for i in 0..25 {
        c.apply_anywhere(&format!("set k{i} v{i}"));
        want.insert(format!("k{i}"), format!("v{i}"));
    }
    for id in 1..=3 {
        c.crash(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    // Everything acknowledged comes back from the WALs alone.
    c.wait_converged(&want);
    c.apply_anywhere("set after restart");
    want.insert("after".into(), "restart".into());
    c.wait_converged(&want);
}

#[test]
fn read_index_barrier_and_verify_leader() {
    let c = Cluster::new();
    let l = c.wait_leader(&[1, 2, 3]);
    let a = c.apply(l, "set x 1").unwrap();
    let f = (1..=3).find(|&i| i != l).unwrap();
    // A follower's linearizable read point covers the write, and its state machine has it.
    let idx = c.nodes[&f].0.read_index(Duration::from_secs(10)).unwrap();
    assert!(idx >= a.index, "read index {idx} < write {}", a.index);
    assert_eq!(c.state(f).get("x").map(String::as_str), Some("1"));
    let b = c.nodes[&l].0.barrier(Duration::from_secs(10)).unwrap();
    assert!(b > a.index);
    c.nodes[&l]
        .0
        .verify_leader(Duration::from_secs(10))
        .unwrap();
    assert!(matches!(
        c.nodes[&f].0.verify_leader(Duration::from_secs(1)),
        Err(NodeError::NotLeader { .. })
    ));
    // A leader cut off from the quorum can never confirm its leadership.
    let others: Vec<u64> = (1..=3).filter(|&i| i != l).collect();
    c.net.partition(&[l], &others);
    assert!(c.nodes[&l].0.verify_leader(Duration::from_secs(2)).is_err());
    assert!(c.nodes[&l].0.read_index(Duration::from_secs(2)).is_err());
    c.net.heal();
}

#[test]
fn add_voter_remove_server_and_transfer_leadership() {
    let mut c = Cluster::new();
    let mut want = BTreeMap::new();
    for i in 0..10 {
        c.apply_anywhere(&format!("set k{i} {i}"));
        want.insert(format!("k{i}"), i.to_string());
    }
    // A new node joins: it starts empty (no peers), becomes a learner, catches up, is promoted.
    c.start_new(4);
    let l = c.wait_leader(&[1, 2, 3]);
    c.nodes[&l].0.add_voter(4, Duration::from_secs(20)).unwrap();
    let s = c.nodes[&l].0.status();
    assert_eq!(s.voters, vec![1, 2, 3, 4], "{s:?}");
    c.wait_converged(&want);
    // Remove a follower; the cluster goes on without it.
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.nodes[&l]
        .0
        .remove_server(f, Duration::from_secs(10))
        .unwrap();
    assert!(!c.nodes[&l].0.status().voters.contains(&f));
    c.crash(f);
    c.apply_anywhere("set after removal");
    want.insert("after".into(), "removal".into());
    // Hand leadership to the newcomer; it serves writes.
    c.nodes[&l]
        .0
        .transfer_leadership(4, Duration::from_secs(10))
        .unwrap();
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    assert_eq!(c.wait_leader(&ids), 4);
    c.apply(4, "set on four").unwrap();
    want.insert("on".into(), "four".into());
    c.wait_converged(&want);
}

/// A failed fsync stops the node with a clear storage error: no retry, no later success.
#[test]
fn a_failed_fsync_stops_the_node_cleanly() {
    use raftwal_wal::vfs::{SimFaults, SimVfs};
    let vfs = SimVfs::new(1);
    let storage = stores::simulated(1, &vfs);
    let cfg = Config {
        tick: Duration::from_millis(10),
        ..Config::new(1, vec![1])
    };
    let net = MemNetwork::new();
    let node = Node::start(cfg, Kv::default(), storage, net.transport(1)).unwrap();
    assert!(wait(|| (node.role() == Role::Leader).then_some(())).is_some());
    node.apply(b"set a 1".to_vec(), Duration::from_secs(5))
        .unwrap();
    vfs.set_faults(SimFaults {
        fail_sync_at: Some(1),
        ..Default::default()
    });
    match node.apply(b"set a 2".to_vec(), Duration::from_secs(5)) {
        Err(NodeError::Storage(cause)) => {
            // The chain reaches the WAL's error, and under it the failed fsync's I/O error.
            let mut chain: Vec<&(dyn std::error::Error + 'static)> = vec![&cause];
            while let Some(next) = chain.last().and_then(|e| e.source()) {
                chain.push(next);
            }
            assert!(
                chain
                    .iter()
                    .any(|e| e.downcast_ref::<raftwal_wal::Error>().is_some()),
                "{cause}"
            );
            assert!(
                chain
                    .iter()
                    .any(|e| e.downcast_ref::<std::io::Error>().is_some()),
                "{cause}"
            );
            assert!(cause.to_string().contains("fdatasync"), "{cause}");
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert!(wait(|| node.status().stopped.then_some(())).is_some());
    assert!(matches!(
        node.apply(b"set a 3".to_vec(), Duration::from_secs(1)),
        Err(NodeError::Shutdown)
    ));
}

/// Power loss: three nodes on one simulated disk, acknowledged writes, then a power cut that
/// drops everything not fsynced, and a restart. Every acknowledged write must survive, which
/// holds only if a round's entries are durable before the messages acknowledging them go out.
#[test]
fn power_loss_of_the_whole_cluster_keeps_every_acknowledged_write() {
    use raftwal_wal::vfs::{CrashPolicy, SimVfs};
    let vfs = SimVfs::new(9);
    let start_sim = |id: u64, net: &MemNetwork| -> (Node, Kv) {
        let wal = Wal::open(
            format!("/c/n{id}"),
            WalOptions::default()
                .segment_size(64 << 10)
                .vfs(Arc::new(vfs.process())),
        )
        .unwrap();
        let snapshots =
            FileSnapshotStore::open_with(format!("/c/s{id}"), 2, Arc::new(vfs.process())).unwrap();
        let storage = RaftStorage::new(wal, snapshots);
        let kv = Kv::default();
        // Snapshots and compaction are under way when the power goes out.
        let cfg = Config {
            tick: Duration::from_millis(10),
            snapshot_threshold: 7,
            trailing_entries: 2,
            ..Config::new(id, vec![1, 2, 3])
        };
        let node = Node::start(cfg, kv.clone(), storage, net.transport(id)).unwrap();
        net.connect(id, node.mailbox());
        (node, kv)
    };
    let net = MemNetwork::new();
    let mut nodes: BTreeMap<u64, (Node, Kv)> =
        (1..=3).map(|id| (id, start_sim(id, &net))).collect();
    let leader = |nodes: &BTreeMap<u64, (Node, Kv)>| {
        wait(|| {
            nodes
                .iter()
                .find(|(_, (n, _))| n.role() == Role::Leader)
                .map(|(id, _)| *id)
        })
        .expect("a leader")
    };
    let mut want = BTreeMap::new();
    let l = leader(&nodes);
    for i in 0..40 {
        nodes[&l]
            .0
            .apply(
                format!("set k{i} v{i}").into_bytes(),
                Duration::from_secs(10),
            )
            .unwrap();
        want.insert(format!("k{i}"), format!("v{i}"));
    }
    // The power goes out: nothing that was not fsynced survives.
    for (id, (n, _)) in std::mem::take(&mut nodes) {
        net.disconnect(id);
        std::mem::forget(n); // a crash, not a shutdown: no thread gets to finish anything
    }
    vfs.crash(CrashPolicy::DropAll);
    // A new network: the crashed nodes' threads (still running in this process, unlike after
    // a real power cut) must not be able to hand the new ones anything.
    let net = MemNetwork::new();
    let nodes: BTreeMap<u64, (Node, Kv)> = (1..=3).map(|id| (id, start_sim(id, &net))).collect();
    let ok = wait(|| {
        nodes
            .values()
            .all(|(_, kv)| *kv.0.lock().unwrap() == want)
            .then_some(())
    });
    assert!(ok.is_some(), "acknowledged writes lost in a power cut");
    for (id, (n, _)) in &nodes {
        let s = n.status();
        assert!(
            s.snapshot_index > 0,
            "node {id} restored no snapshot: {s:?}"
        );
    }
}

#[test]
fn message_loss_delay_duplication_and_reordering() {
    let c = Cluster::new();
    c.net.set_faults(raftwal_glue::NetFaults {
        drop: 0.2,
        duplicate: 0.1,
        reorder: 0.2,
        delay: 0.1,
        max_delay: Duration::from_millis(30),
        seed: 7,
    });
    let mut want = BTreeMap::new();
    for i in 0..30 {
        // `set` is idempotent, so a retry after an unknown outcome is harmless.
        c.apply_anywhere(&format!("set k{i} {i}"));
        want.insert(format!("k{i}"), i.to_string());
    }
    c.net.set_faults(raftwal_glue::NetFaults::default());
    let st = c.net.stats();
    assert!(
        st.dropped > 0 && st.duplicated > 0 && st.reordered > 0 && st.delayed > 0,
        "faults were not injected: {st:?}"
    );
    c.wait_converged(&want);
}

/// The value of counter `k` on node `id`.
fn counter(c: &Cluster, id: u64, k: &str) -> u64 {
    c.state(id).get(k).map_or(0, |v| v.parse().unwrap())
}

fn wait_counter(c: &Cluster, k: &str, want: u64) {
    let ok = wait(|| {
        c.nodes
            .keys()
            .all(|id| counter(c, *id, k) == want)
            .then_some(())
    });
    let got: Vec<u64> = c.nodes.keys().map(|id| counter(c, *id, k)).collect();
    assert!(ok.is_some(), "counters {got:?}, {want} expected");
}

/// Snapshots are taken every N entries and compact the log (keeping the trailing entries);
/// a restart restores the snapshot and replays only what follows, so the counter (whose
/// increments are not idempotent) is neither re-applied nor skipped.
#[test]
fn snapshots_compact_the_log_and_restarts_neither_reapply_nor_skip() {
    let mut c = Cluster::with_snapshots(40, 8);
    for _ in 0..200 {
        c.apply_anywhere("add n 1");
    }
    wait_counter(&c, "n", 200);
    for id in 1..=3 {
        let ok = wait(|| (c.nodes[&id].0.status().snapshot_index >= 160).then_some(()));
        assert!(ok.is_some(), "{:?}", c.nodes[&id].0.status());
    }
    for id in 1..=3 {
        c.crash(id);
    }
    for id in 1..=3 {
        let first = c.first_index(id);
        assert!(first > 100, "node {id}'s log still starts at {first}");
        let snaps = FileSnapshotStore::open(c.path(id).join("snapshots"), 2)
            .unwrap()
            .list()
            .unwrap();
        assert!(!snaps.is_empty() && snaps.len() <= 2, "{snaps:?}");
        // Compacted to the snapshot's index less the trailing entries, never beyond.
        assert!(first <= snaps[0].index - 8 + 1, "{first} vs {snaps:?}");
    }
    for id in 1..=3 {
        c.restart(id);
    }
    for id in 1..=3 {
        let s = c.nodes[&id].0.status();
        assert!(s.applied >= 160, "restored from the snapshot: {s:?}");
    }
    wait_counter(&c, "n", 200);
    c.apply_anywhere("add n 1");
    wait_counter(&c, "n", 201);
}

/// A follower that was down while the others compacted their logs catches up by a snapshot
/// streamed out of band, even when the first streams break (Raft is told, and retries); it
/// then restarts from the installed snapshot.
#[test]
fn a_lagging_follower_catches_up_by_snapshot_despite_broken_streams() {
    let mut c = Cluster::with_snapshots(30, 5);
    c.apply_anywhere("add n 1");
    wait_counter(&c, "n", 1);
    c.crash(3);
    for _ in 0..150 {
        c.apply_anywhere("add n 1");
    }
    let l = c.wait_leader(&[1, 2]);
    let ok = wait(|| (c.nodes[&l].0.status().snapshot_index >= 120).then_some(()));
    assert!(ok.is_some(), "{:?}", c.nodes[&l].0.status());
    c.net.fail_snapshots(2);
    c.restart(3);
    wait_counter(&c, "n", 151);
    let stats = c.net.stats();
    assert!(stats.snapshots >= 1, "{stats:?}");
    assert_eq!(stats.snapshots_failed, 2, "{stats:?}");
    let s = c.nodes[&3].0.status();
    assert!(s.snapshot_index >= 120, "installed a snapshot: {s:?}");
    c.crash(3);
    c.restart(3);
    assert!(c.nodes[&3].0.status().applied >= 120);
    wait_counter(&c, "n", 151);
}

/// `Node::snapshot` on demand: durable, compacts, and with nothing new returns the same one.
#[test]
fn snapshot_on_demand() {
    let c = Cluster::with_snapshots(0, 2);
    for i in 0..20 {
        c.apply_anywhere(&format!("set k{i} {i}"));
    }
    let l = c.wait_leader(&[1, 2, 3]);
    let node = &c.nodes[&l].0;
    let m = node.snapshot(Duration::from_secs(10)).unwrap();
    let s = node.status();
    assert!(m.index >= 20 && m.index <= s.applied, "{m:?} {s:?}");
    assert_eq!(s.snapshot_index, m.index);
    let again = node.snapshot(Duration::from_secs(10)).unwrap();
    assert_eq!(again.id, m.id, "nothing new: the same snapshot");
    let stored = FileSnapshotStore::open(c.path(l).join("snapshots"), 2)
        .unwrap()
        .list()
        .unwrap();
    assert_eq!(stored[0].id, m.id);
}

/// Replace a node after the log was compacted: the newcomer joins empty and gets a snapshot;
/// then the leader removes itself and the rest elect a new one and go on.
#[test]
fn replace_a_node_by_snapshot_and_remove_the_leader() {
    let mut c = Cluster::with_snapshots(20, 0);
    let events = {
        let l = c.wait_leader(&[1, 2, 3]);
        c.nodes[&l].0.subscribe()
    };
    for _ in 0..60 {
        c.apply_anywhere("add n 1");
    }
    let l = c.wait_leader(&[1, 2, 3]);
    let ok = wait(|| (c.nodes[&l].0.status().snapshot_index >= 40).then_some(()));
    assert!(ok.is_some());
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.nodes[&l]
        .0
        .remove_server(f, Duration::from_secs(10))
        .unwrap();
    c.crash(f);
    c.start_new(4);
    c.nodes[&l].0.add_voter(4, Duration::from_secs(20)).unwrap();
    wait_counter(&c, "n", 60);
    assert!(c.nodes[&4].0.status().snapshot_index >= 40);
    assert!(c.net.stats().snapshots >= 1);
    // The leader removes itself; the other two elect a leader and go on.
    let rest: Vec<u64> = c.nodes.keys().copied().filter(|&i| i != l).collect();
    c.nodes[&l]
        .0
        .remove_server(l, Duration::from_secs(10))
        .unwrap();
    let nl = c.wait_leader(&rest);
    assert_ne!(nl, l);
    c.crash(l);
    c.apply(nl, "add n 1").unwrap();
    wait_counter(&c, "n", 61);
    // The old leader's subscribers heard of the membership changes.
    let seen: Vec<NodeEvent> = events.try_iter().collect();
    assert!(
        seen.iter().any(
            |e| matches!(e, NodeEvent::MembershipChanged { voters, .. } if voters.contains(&4))
        ),
        "{seen:?}"
    );
}

/// `propose` does not wait: one thread keeps many commands in flight, and each proposal
/// reports its own outcome, in log order.
#[test]
fn many_proposals_in_flight_from_one_thread() {
    let c = Cluster::new();
    let l = c.wait_leader(&[1, 2, 3]);
    let node = &c.nodes[&l].0;
    let inflight: Vec<_> = (0..200)
        .map(|_| node.propose(b"add n 1".to_vec()).unwrap())
        .collect();
    let first = &inflight[0];
    assert!(wait(|| first.try_result()).is_some_and(|r| r.is_ok()));
    let mut last = 0;
    for (i, p) in inflight.into_iter().enumerate().skip(1) {
        let a = p.wait(Duration::from_secs(20)).unwrap();
        assert!(a.index > last, "in log order");
        assert_eq!(a.response, (i + 1).to_string().into_bytes());
        last = a.index;
    }
    wait_counter(&c, "n", 200);
    // A follower's proposal fails through the proposal, not the call.
    let f = (1..=3).find(|&i| i != l).unwrap();
    let p = c.nodes[&f].0.propose(b"add n 1".to_vec()).unwrap();
    assert!(matches!(
        p.wait(Duration::from_secs(5)),
        Err(NodeError::NotLeader { .. })
    ));
}

/// Two changes at once go through a joint configuration (old and new quorums both needed),
/// which the leader leaves on its own; the new configuration survives a whole-cluster restart.
#[test]
fn joint_consensus_replaces_a_voter_in_one_change() {
    let mut c = Cluster::new();
    c.apply_anywhere("set before joint");
    c.start_new(4);
    let l = c.wait_leader(&[1, 2, 3]);
    let out = (1..=3).find(|&i| i != l).unwrap();
    let events = c.nodes[&l].0.subscribe();
    c.nodes[&l]
        .0
        .change_membership(
            &[
                raftwal_glue::Membership::AddVoter(4),
                raftwal_glue::Membership::Remove(out),
            ],
            Duration::from_secs(20),
        )
        .unwrap();
    let s = c.nodes[&l].0.status();
    let mut want_voters: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&i| i != out).collect();
    want_voters.sort_unstable();
    assert_eq!(s.voters, want_voters, "{s:?}");
    assert!(
        s.voters_outgoing.is_empty(),
        "left the joint configuration: {s:?}"
    );
    // The leader went through the joint configuration ({old} and {new} both in force), then
    // left it.
    let seen: Vec<NodeEvent> = events.try_iter().collect();
    let joint = seen.iter().position(|e| {
        matches!(e, NodeEvent::MembershipChanged { voters, voters_outgoing, .. }
            if *voters == want_voters && voters_outgoing.contains(&out))
    });
    let left = seen.iter().rposition(|e| {
        matches!(e, NodeEvent::MembershipChanged { voters, voters_outgoing, .. }
            if *voters == want_voters && voters_outgoing.is_empty())
    });
    assert!(joint.is_some() && left > joint, "{seen:?}");
    c.crash(out);
    c.apply_anywhere("set after joint");
    let mut want = BTreeMap::new();
    want.insert("before".to_string(), "joint".to_string());
    want.insert("after".to_string(), "joint".to_string());
    c.wait_converged(&want);
    // Everyone restarts from disk with the new configuration.
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for &id in &ids {
        c.crash(id);
    }
    for &id in &ids {
        let peers = if id == 4 { vec![] } else { vec![1, 2, 3] };
        let n = start_with(&c.path(id), id, peers, &c.net, c.snap);
        c.nodes.insert(id, n);
    }
    for &id in &ids {
        let ok = wait(|| (c.nodes[&id].0.status().voters == want_voters).then_some(()));
        assert!(ok.is_some(), "{:?}", c.nodes[&id].0.status());
    }
    c.apply_anywhere("set after restart");
    want.insert("after".to_string(), "restart".to_string());
    c.wait_converged(&want);
}

/// A snapshot that arrives from the network but that Raft refuses (stale: below what the
/// follower has committed) is discarded: it is never committed into the follower's store,
/// where it would count against the retention, and leaves no temporary behind.
#[test]
fn a_refused_snapshot_from_the_network_is_not_kept() {
    use raft::eraftpb::{ConfState, Message, MessageType};
    let c = Cluster::new();
    for i in 0..5 {
        c.apply_anywhere(&format!("set k{i} {i}"));
    }
    let l = c.wait_leader(&[1, 2, 3]);
    let f = (1..=3).find(|&i| i != l).unwrap();
    let ok = wait(|| (c.nodes[&f].0.status().commit >= 5).then_some(()));
    assert!(ok.is_some());
    let conf = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    let data = b"stale state".to_vec();
    let meta = raftwal_snapshot::SnapshotMeta {
        id: "stale".into(),
        index: 2,
        term: 1,
        configuration: raftwal_glue::encode_conf_state(&conf),
        configuration_index: 2,
        size: data.len() as u64,
        checksum: crc32fast::hash(&data),
        ..Default::default()
    };
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    msg.from = l;
    msg.to = f;
    msg.term = c.nodes[&f].0.status().term;
    let m = msg.mut_snapshot().mut_metadata();
    m.index = 2;
    m.term = 1;
    m.set_conf_state(conf);
    c.nodes[&f]
        .0
        .mailbox()
        .receive_snapshot(msg, &meta, &mut &data[..])
        .unwrap();
    // A round on the follower has passed once a read through it completes.
    c.nodes[&f].0.read_index(Duration::from_secs(10)).unwrap();
    let dir = c.path(f).join("snapshots");
    let ok = wait(|| {
        use raftwal_wal::vfs::Vfs;
        let names = raftwal_wal::vfs::StdVfs.list(&dir).unwrap();
        names.is_empty().then_some(())
    });
    assert!(
        ok.is_some(),
        "the refused snapshot was kept in {}",
        dir.display()
    );
    assert!(FileSnapshotStore::open(&dir, 2)
        .unwrap()
        .list()
        .unwrap()
        .is_empty());
    assert_eq!(c.nodes[&f].0.status().snapshot_index, 0);
}
