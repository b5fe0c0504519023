//! A cluster of `Node`s on real stores over a `MemNetwork`, whose state machine records every
//! command it applies (with its index) and answers each with the command itself, so a test
//! can tell whose entry answered a proposer and compare what every node applied.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftwal_glue::{Config, ManualClock, MemNetwork, Node, Role, StateMachine, StateSnapshot};

use crate::pairs;
use crate::stores;
use crate::wait::wait;

/// Commands with the indexes they were applied at, in order.
pub type Log = Vec<(u64, Vec<u8>)>;

/// The commands applied, in order, with their indexes; the response is the command.
#[derive(Clone, Default)]
pub struct Echo(pub Arc<Mutex<Log>>);

impl Echo {
    /// What was applied.
    pub fn applied(&self) -> Vec<(u64, Vec<u8>)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl StateMachine for Echo {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((index, command.to_vec()));
        command.to_vec()
    }

    fn snapshot(&mut self) -> std::io::Result<Box<dyn StateSnapshot>> {
        let v = self.applied();
        let keys: Vec<[u8; 8]> = v.iter().map(|(i, _)| i.to_le_bytes()).collect();
        Ok(Box::new(pairs::encode(
            keys.iter().zip(&v).map(|(k, (_, c))| (&k[..], &c[..])),
        )))
    }

    fn restore(&mut self, data: &mut dyn Read) -> std::io::Result<()> {
        let v = pairs::decode(data)?
            .into_iter()
            .map(|(k, c)| (u64::from_le_bytes(k.try_into().unwrap_or([0; 8])), c))
            .collect();
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = v;
        Ok(())
    }
}

/// Fields drop in order: the nodes stop before their directory is removed.
pub struct Cluster {
    pub nodes: BTreeMap<u64, (Node, Echo)>,
    pub net: MemNetwork,
    pub clock: Option<ManualClock>,
    pub configure: fn(Config) -> Config,
    pub dir: tempfile::TempDir,
}

/// 10 ms ticks; everything else the defaults.
pub fn quick(c: Config) -> Config {
    Config {
        tick: Duration::from_millis(10),
        ..c
    }
}

impl Cluster {
    /// Nodes `1..=n`, founding members of one cluster.
    pub fn new(n: u64) -> Self {
        Self::with(n, quick, None)
    }

    /// As [`Cluster::new`], each node's configuration passed through `configure`, on `clock`
    /// if given.
    pub fn with(n: u64, configure: fn(Config) -> Config, clock: Option<ManualClock>) -> Self {
        let mut c = Cluster {
            nodes: BTreeMap::new(),
            net: MemNetwork::new(),
            clock,
            configure,
            dir: tempfile::tempdir().expect("a temporary directory"),
        };
        let peers: Vec<u64> = (1..=n).collect();
        for id in 1..=n {
            c.start(id, peers.clone());
        }
        c
    }

    pub fn path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    /// The configuration node `id` starts with.
    pub fn config(&self, id: u64, peers: Vec<u64>) -> Config {
        let mut cfg = (self.configure)(Config::new(id, peers));
        if let Some(clock) = &self.clock {
            cfg.clock = Arc::new(clock.clone());
        }
        cfg
    }

    /// Starts (or restarts) node `id` from its directory; `peers` bootstrap an empty one.
    pub fn start(&mut self, id: u64, peers: Vec<u64>) {
        let echo = Echo::default();
        let cfg = self.config(id, peers);
        let node = Node::start(
            cfg,
            echo.clone(),
            stores::open(&self.path(id)),
            self.net.transport(id),
        )
        .expect("the node starts");
        self.net.connect(id, node.mailbox());
        self.nodes.insert(id, (node, echo));
    }

    /// Stops node `id` (its stores stay).
    pub fn crash(&mut self, id: u64) {
        self.net.disconnect(id);
        if let Some((n, _)) = self.nodes.remove(&id) {
            n.shutdown();
        }
    }

    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id].0
    }

    pub fn echo(&self, id: u64) -> &Echo {
        &self.nodes[&id].1
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The one leader among `ids`, if exactly one of them leads.
    pub fn leader_among(&self, ids: &[u64]) -> Option<u64> {
        let l: Vec<u64> = ids
            .iter()
            .copied()
            .filter(|id| {
                self.nodes
                    .get(id)
                    .is_some_and(|(n, _)| n.role() == Role::Leader)
            })
            .collect();
        (l.len() == 1).then(|| l[0])
    }

    /// Waits (moving the manual clock, if any) until one of `ids` leads.
    pub fn wait_leader(&self, ids: &[u64]) -> u64 {
        wait(|| {
            self.step();
            self.leader_among(ids)
        })
        .expect("a leader is elected")
    }

    /// With a manual clock: moves it one tick and lets every node notice. Otherwise nothing.
    pub fn step(&self) {
        if let Some(clock) = &self.clock {
            let tick = self.config(1, vec![]).tick;
            clock.advance(tick);
            std::thread::sleep(tick + Duration::from_millis(2));
        }
    }

    /// Waits until every node has applied the same commands at the same indexes, at least
    /// `min` of them; returns them.
    pub fn converged(&self, min: usize) -> Vec<(u64, Vec<u8>)> {
        wait(|| {
            self.step();
            let all: Vec<_> = self.nodes.values().map(|(_, e)| e.applied()).collect();
            (all[0].len() >= min && all.windows(2).all(|w| w[0] == w[1])).then(|| all[0].clone())
        })
        .unwrap_or_else(|| {
            let lens: Vec<usize> = self
                .nodes
                .values()
                .map(|(_, e)| e.applied().len())
                .collect();
            panic!("the nodes never applied the same {min}+ commands: {lens:?}")
        })
    }
}
