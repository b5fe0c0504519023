//! [`ManualCluster`]: nodes on in-memory stores and the in-memory network, whose loops are
//! turned by hand on the caller's thread and whose clock moves only when told. Nothing runs
//! in the background (proposals are persisted synchronously, snapshots are taken only on
//! demand), and each node's campaign timeout is fixed (node `i` campaigns after `9 + i`
//! ticks without a leader, where raft-rs would draw one at random), so a run replays exactly
//! from its inputs, and a panic inside Raft reaches the caller instead of stopping a thread.
//!
//! ```
//! use raftwal_glue::testing::ManualCluster;
//! let mut c = ManualCluster::new(3);
//! let leader = c.elect();
//! let p = c.node(leader).propose(b"x".to_vec()).unwrap();
//! c.run(3);
//! assert_eq!(p.try_result().unwrap().unwrap().response, b"x");
//! assert_eq!(c.committed(1), c.committed(2));
//! ```

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::eraftpb::Entry;
use raft::{GetEntriesContext, Storage};
use raftwal_snapshot::MemSnapshotStore;
use raftwal_wal::MemStore;

use crate::clock::ManualClock;
use crate::error::Error;
use crate::mailbox::{Event, Mailbox};
use crate::node::{assemble, Config, Core, Node};
use crate::state_machine::{StateMachine, StateSnapshot};
use crate::storage::RaftStorage;
use crate::transport::{MemNetwork, MemTransport};
use crate::types::Role;

/// Commands with the indexes they were applied at.
pub type Applied = Vec<(u64, Vec<u8>)>;

/// A state machine that records the commands it applies and answers each with itself.
#[derive(Clone, Default, Debug)]
pub struct Recorder(pub Arc<Mutex<Applied>>);

impl StateMachine for Recorder {
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8> {
        crate::lock(&self.0).push((index, command.to_vec()));
        command.to_vec()
    }

    fn snapshot(&mut self) -> std::io::Result<Box<dyn StateSnapshot>> {
        Ok(Box::new(Vec::new()))
    }

    fn restore(&mut self, _data: &mut dyn Read) -> std::io::Result<()> {
        Ok(())
    }
}

type ManualCore = Core<MemStore, MemSnapshotStore, Recorder, MemTransport>;

struct Manual {
    core: ManualCore,
    rx: Receiver<Event>,
    node: Node,
    stopped: Option<Error>,
}

/// A cluster whose nodes run only when [`ManualCluster::run`] turns them.
pub struct ManualCluster {
    clock: ManualClock,
    net: MemNetwork,
    nodes: BTreeMap<u64, Manual>,
    tick: Duration,
}

impl std::fmt::Debug for ManualCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManualCluster")
            .field("nodes", &self.nodes.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ManualCluster {
    /// Nodes `1..=n`, founding members of one cluster, with 10 ms ticks and the fixed
    /// campaign timeouts of the module documentation.
    ///
    /// # Panics
    /// If a node does not start (it always does on in-memory stores).
    pub fn new(n: u64) -> Self {
        let clock = ManualClock::new();
        let net = MemNetwork::new();
        let peers: Vec<u64> = (1..=n).collect();
        let tick = Duration::from_millis(10);
        let mut nodes = BTreeMap::new();
        // Fixed campaign timeouts, a different one per node (raft-rs would draw them from a
        // thread-local random generator): 10 ticks for node 1, 11 for node 2, ...; the same
        // election timeout (10 ticks), hence lease, everywhere.
        for id in 1..=n {
            // Within the 100 x election_ticks bound campaign_ticks allows.
            let campaign = 10 + usize::try_from(id - 1).unwrap_or(0) % 990;
            let cfg = Config {
                tick,
                clock: Arc::new(clock.clone()),
                batch_proposals: false,
                snapshot_threshold: 0,
                election_ticks: 10,
                campaign_ticks: Some(campaign..campaign + 1),
                ..Config::new(id, peers.clone())
            };
            let storage = RaftStorage::new(
                MemStore::new(),
                MemSnapshotStore::new(1).unwrap_or_else(|e| panic!("{e}")),
            );
            let (mut core, rx, node) =
                assemble(cfg, Recorder::default(), storage, net.transport(id))
                    .unwrap_or_else(|e| panic!("node {id} does not start: {e}"));
            core.begin();
            net.connect(id, node.mailbox());
            nodes.insert(
                id,
                Manual {
                    core,
                    rx,
                    node,
                    stopped: None,
                },
            );
        }
        ManualCluster {
            clock,
            net,
            nodes,
            tick,
        }
    }

    /// The network (for partitions and holds).
    pub fn net(&self) -> &MemNetwork {
        &self.net
    }

    /// Node `id`'s handle (its calls are queued; they take effect on the next turn).
    ///
    /// # Panics
    /// If there is no node `id`.
    pub fn node(&self, id: u64) -> &Node {
        &self.nodes[&id].node
    }

    /// Node `id`'s mailbox: what it receives from the network.
    ///
    /// # Panics
    /// If there is no node `id`.
    pub fn mailbox(&self, id: u64) -> Mailbox {
        self.nodes[&id].node.mailbox()
    }

    /// Moves the clock one tick, `ticks` times, turning every node (in id order) after each
    /// move until no node has anything left to do (at most a few passes).
    pub fn run(&mut self, ticks: usize) {
        for _ in 0..ticks {
            self.clock.advance(self.tick);
            for _ in 0..8 {
                for m in self.nodes.values_mut() {
                    if m.stopped.is_none() {
                        m.stopped = m.core.turn(&m.rx, Duration::ZERO);
                    }
                }
            }
        }
    }

    /// Runs until a leader is elected; returns it.
    ///
    /// # Panics
    /// If none is within 1,000 ticks.
    pub fn elect(&mut self) -> u64 {
        for _ in 0..1000 {
            if let Some(l) = self.leader() {
                return l;
            }
            self.run(1);
        }
        panic!("no leader within 1,000 ticks")
    }

    /// The leader of the highest term, if any node leads.
    pub fn leader(&self) -> Option<u64> {
        self.nodes
            .iter()
            .filter(|(_, m)| m.core.raw().raft.state == raft::StateRole::Leader)
            .max_by_key(|(_, m)| m.core.raw().raft.term)
            .map(|(id, _)| *id)
    }

    /// Why node `id` stopped, if it did.
    ///
    /// # Panics
    /// If there is no node `id`.
    pub fn stopped(&self, id: u64) -> Option<&Error> {
        self.nodes[&id].stopped.as_ref()
    }

    /// Node `id`'s term, commit index and role.
    ///
    /// # Panics
    /// If there is no node `id`.
    pub fn state(&self, id: u64) -> (u64, u64, Role) {
        let r = &self.nodes[&id].core.raw().raft;
        (r.term, r.raft_log.committed, r.state.into())
    }

    /// Node `id`'s committed entries, read from its storage.
    ///
    /// # Panics
    /// If there is no node `id`, or its storage fails (it is in memory).
    pub fn committed(&self, id: u64) -> Vec<Entry> {
        let core = &self.nodes[&id].core;
        let commit = core.raw().raft.raft_log.committed;
        let store = core.raw().store();
        let first = store.first_index().unwrap_or(1);
        if commit < first {
            return Vec::new();
        }
        store
            .entries(first, commit + 1, None, GetEntriesContext::empty(false))
            .unwrap_or_else(|e| panic!("node {id}: committed entries: {e}"))
    }

    /// The ids of the nodes.
    pub fn ids(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What every node shows after each tick of a run with a leader cut off and brought back.
    fn trace() -> Vec<Vec<(u64, u64, Role)>> {
        let mut c = ManualCluster::new(5);
        let l = c.elect();
        let rest: Vec<u64> = c.ids().into_iter().filter(|&i| i != l).collect();
        c.net().partition(&[l], &rest);
        let mut seen = Vec::new();
        for tick in 0..120 {
            if tick == 60 {
                c.net().heal();
            }
            c.run(1);
            seen.push(c.ids().into_iter().map(|id| c.state(id)).collect());
        }
        seen
    }

    #[test]
    fn a_run_replays_exactly() {
        let first = trace();
        assert!(
            first
                .last()
                .is_some_and(|s| s.iter().any(|n| n.2 == Role::Leader)),
            "{first:?}"
        );
        for _ in 0..5 {
            assert_eq!(trace(), first);
        }
    }
}
