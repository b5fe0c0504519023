//! Three `Node`s on real `Wal`s over the in-memory network: election, replication, the
//! not-leader hint, leader crash and restart from the WAL, and a partitioned leader.
//! Assertions wait for outcomes with generous deadlines; nothing asserts a duration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftwal_glue::{Config, MemNetwork, Node, NodeError, RaftStorage, Role, StateMachine};
use raftwal_snapshot::MemSnapshotStore;
use raftwal_wal::{Wal, WalOptions};

/// `set k v` → the previous value; the map is shared so the test can look at it.
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
            _ => b"?".to_vec(),
        }
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    net: MemNetwork,
    nodes: BTreeMap<u64, (Node, Kv)>,
}

fn start(dir: &Path, id: u64, net: &MemNetwork) -> (Node, Kv) {
    let wal = Wal::open(dir, WalOptions::default().segment_size(256 << 10)).unwrap();
    let storage = RaftStorage::new(wal, MemSnapshotStore::new(1).unwrap());
    let kv = Kv::default();
    let cfg = Config {
        tick: Duration::from_millis(10),
        ..Config::new(id, vec![1, 2, 3])
    };
    let node = Node::start(cfg, kv.clone(), storage, net.transport(id)).unwrap();
    net.connect(id, node.mailbox());
    (node, kv)
}

impl Cluster {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let net = MemNetwork::new();
        let nodes = (1..=3)
            .map(|id| (id, start(&dir.path().join(format!("n{id}")), id, &net)))
            .collect();
        Cluster { dir, net, nodes }
    }

    fn path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    fn crash(&mut self, id: u64) {
        self.net.disconnect(id);
        if let Some((n, _)) = self.nodes.remove(&id) {
            n.shutdown();
        }
    }

    fn restart(&mut self, id: u64) {
        let n = start(&self.path(id), id, &self.net);
        self.nodes.insert(id, n);
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

fn wait<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
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
