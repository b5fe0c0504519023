//! Three `Node`s on real `Wal`s and `FileSnapshotStore`s over the in-memory network, with a
//! key-value state machine whose `add` is not idempotent (a command applied twice or skipped
//! shows).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftwal_glue::{Config, MemNetwork, Node, NodeError, Role, StateMachine};
use raftwal_wal::{LogStore, Wal, WalOptions};

use crate::pairs;
use crate::stores;
use crate::wait::wait;

/// `set k v` → the previous value; `add k n` adds to a number (not idempotent, so a command
/// applied twice or skipped shows); the map is shared so the test can look at it.
#[derive(Clone, Default)]
pub struct Kv(pub Arc<Mutex<BTreeMap<String, String>>>);

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
pub struct Cluster {
    pub nodes: BTreeMap<u64, (Node, Kv)>,
    pub net: MemNetwork,
    pub dir: tempfile::TempDir,
    /// (snapshot every, trailing entries).
    pub snap: (u64, u64),
}

/// Snapshots in `dir/snapshots`, the log in `dir/wal`.
pub fn start_with(
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
    pub fn new() -> Self {
        Self::with_snapshots(8192, 1024)
    }

    pub fn with_snapshots(every: u64, trailing: u64) -> Self {
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

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    pub fn start_new(&mut self, id: u64) {
        let n = start_with(&self.path(id), id, vec![], &self.net, self.snap);
        self.nodes.insert(id, n);
    }

    pub fn crash(&mut self, id: u64) {
        self.net.disconnect(id);
        if let Some((n, _)) = self.nodes.remove(&id) {
            n.shutdown();
        }
    }

    pub fn restart(&mut self, id: u64) {
        let n = start_with(&self.path(id), id, vec![1, 2, 3], &self.net, self.snap);
        self.nodes.insert(id, n);
    }

    /// The first index of a stopped node's log.
    pub fn first_index(&self, id: u64) -> u64 {
        let wal = Wal::open(self.path(id).join("wal"), WalOptions::default()).unwrap();
        wal.first_index().unwrap()
    }

    /// The leader that the given nodes agree on.
    pub fn leader_among(&self, ids: &[u64]) -> Option<u64> {
        let leaders: Vec<u64> = ids
            .iter()
            .filter_map(|id| self.nodes.get(id))
            .filter(|(n, _)| n.role() == Role::Leader)
            .map(|(n, _)| n.status().id)
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    }

    pub fn wait_leader(&self, ids: &[u64]) -> u64 {
        wait(|| self.leader_among(ids)).expect("a leader is elected")
    }

    pub fn apply(&self, id: u64, cmd: &str) -> Result<raftwal_glue::Applied, NodeError> {
        self.nodes[&id]
            .0
            .apply(cmd.as_bytes().to_vec(), Duration::from_secs(10))
    }

    /// Applies through whoever is leader, retrying on leadership changes.
    pub fn apply_anywhere(&self, cmd: &str) -> raftwal_glue::Applied {
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

    pub fn state(&self, id: u64) -> BTreeMap<String, String> {
        self.nodes[&id].1 .0.lock().unwrap().clone()
    }

    pub fn wait_converged(&self, want: &BTreeMap<String, String>) {
        let ok = wait(|| {
            self.nodes
                .keys()
                .all(|id| &self.state(*id) == want)
                .then_some(())
        });
        assert!(ok.is_some(), "state machines did not converge");
    }
}

/// The value of counter `k` on node `id`.
pub fn counter(c: &Cluster, id: u64, k: &str) -> u64 {
    c.state(id).get(k).map_or(0, |v| v.parse().unwrap())
}

pub fn wait_counter(c: &Cluster, k: &str, want: u64) {
    let ok = wait(|| {
        c.nodes
            .keys()
            .all(|id| counter(c, *id, k) == want)
            .then_some(())
    });
    let got: Vec<u64> = c.nodes.keys().map(|id| counter(c, *id, k)).collect();
    assert!(ok.is_some(), "counters {got:?}, {want} expected");
}
