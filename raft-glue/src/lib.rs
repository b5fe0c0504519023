//! # raftwal-glue
//!
//! Raft over the raftwal stores. The consensus core is tikv/raft-rs 0.7 (`RawNode`).
//!
//! - [`RaftStorage`]: `raft::Storage` over any [`raftwal_wal::BatchStore`] (such as the
//!   [`raftwal_wal::Wal`]) and [`raftwal_snapshot::SnapshotStore`], with the writes a Raft node
//!   makes (a round's entries and hard state in one atomic batch, snapshot install, compaction).
//!   Applications that already drive a raft-rs `RawNode` can swap it in; see its example.
//! - [`Node`]: a `RawNode` on its own thread. `apply` a command and get the state machine's
//!   response once it is committed and applied (or `propose` it and hold a [`Proposal`]);
//!   `barrier`, `read_index`, `lease_read` (local under a leader lease on a [`Clock`], else
//!   read-index, and it says which), `verify_leader`, `snapshot`, `add_learner`, `add_voter`
//!   (learner first, promoted once caught up), `remove_server`, `change_membership` (joint
//!   consensus), `transfer_leadership`, `status`, `subscribe` ([`NodeEvent`]s), `shutdown`;
//!   specific errors ([`NodeError`]).
//! - Transports: [`MemNetwork`] (one process, with partitions and seedable loss, delay,
//!   duplication and reordering, and broken snapshot streams) and [`TcpTransport`] with
//!   [`TcpServer`] (length-prefixed frames with a maximum size, cluster-id handshake, reconnect
//!   with backoff). `examples/kv` is a replicated key-value server over TCP.
//!
//! Persistence follows raft-rs's async-ready protocol: each round is written (readable at once)
//! and handed to a persistence thread, which covers every round queued meanwhile with one
//! fsync; the messages acknowledging a round go out only after it is durable.
//!
//! Snapshots: the [`StateMachine`] captures its state ([`StateSnapshot`]) every
//! [`Config::snapshot_threshold`] applied entries or on demand ([`Node::snapshot`]); it is
//! written into the snapshot store on a thread of its own, and only once it is durable is the
//! log compacted (keeping [`Config::trailing_entries`]). A follower too far behind gets the
//! snapshot streamed out of band ([`Transport::send_snapshot`], in chunks over TCP), stored and
//! verified through its own store, then restored; Raft is told whether the send succeeded. A
//! restart restores the latest snapshot, whose index is the applied index, then replays the log.

//! A one-node cluster with a state machine that counts, a command applied, a snapshot taken:
//!
//! ```
//! use std::io::Read;
//! use std::time::Duration;
//! use raftwal_glue::{Config, MemNetwork, Node, NodeError, RaftStorage, StateMachine, StateSnapshot};
//! use raftwal_snapshot::FileSnapshotStore;
//! use raftwal_wal::{Wal, WalOptions};
//!
//! struct Counter(u64);
//!
//! impl StateMachine for Counter {
//!     fn apply(&mut self, _index: u64, _command: &[u8]) -> Vec<u8> {
//!         self.0 += 1;
//!         self.0.to_le_bytes().to_vec()
//!     }
//!     fn snapshot(&mut self) -> std::io::Result<Box<dyn StateSnapshot>> {
//!         Ok(Box::new(self.0.to_le_bytes().to_vec())) // captured now, written on another thread
//!     }
//!     fn restore(&mut self, data: &mut dyn Read) -> std::io::Result<()> {
//!         let mut b = [0u8; 8];
//!         data.read_exact(&mut b)?;
//!         self.0 = u64::from_le_bytes(b);
//!         Ok(())
//!     }
//! }
//!
//! let dir = tempfile::tempdir().unwrap();
//! let storage = RaftStorage::new(
//!     Wal::open(dir.path().join("wal"), WalOptions::default().segment_size(1 << 20)).unwrap(),
//!     FileSnapshotStore::open(dir.path().join("snapshots"), 2).unwrap(),
//! );
//! let net = MemNetwork::new();
//! let node = Node::start(Config::new(1, vec![1]), Counter(0), storage, net.transport(1)).unwrap();
//! net.connect(1, node.mailbox());
//! // The single voter elects itself after an election timeout.
//! let applied = loop {
//!     match node.apply(b"tick".to_vec(), Duration::from_secs(5)) {
//!         Err(NodeError::NotLeader { .. }) => std::thread::sleep(Duration::from_millis(20)),
//!         other => break other.unwrap(),
//!     }
//! };
//! assert_eq!(applied.response, 1u64.to_le_bytes());
//! let snapshot = node.snapshot(Duration::from_secs(5)).unwrap(); // durable, log compacted
//! assert!(snapshot.index >= applied.index);
//! node.shutdown();
//! ```

mod clock;
mod error;
mod inbound;
mod log;
mod mailbox;
pub mod metrics;
mod node;
mod snapshot;
mod state_machine;
mod storage;
#[cfg(feature = "testing")]
pub mod testing;
mod transport;
mod types;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Cause, Error as NodeError, Result as NodeResult};
pub use mailbox::Mailbox;
pub use node::{Config, Node, MAX_CLOCK_DRIFT, MESSAGE_OVERHEAD};
pub use state_machine::{StateMachine, StateSnapshot};
#[cfg(feature = "dev-certs")]
pub use transport::DevCa;
pub use transport::{
    node_name, MemNetwork, MemTransport, NetFaults, NetStats, Route, Security, TcpOptions,
    TcpServer, TcpTransport, TlsIdentity, Transport, DEFAULT_MAX_FRAME, SNAPSHOT_CHUNK,
};
pub use types::{
    Applied, DropReason, Membership, NodeEvent, Proposal, ReadPoint, ReadVia, Role, Status,
};

pub use storage::{
    decode_snapshot_conf, describe_stable_key, encode_conf_state, encode_snapshot_conf,
    to_log_entry, to_raft_entry, Error, RaftStorage, CONF_INDEX_KEY, CONF_STATE_KEY,
    HARD_STATE_KEY, REMOVED_KEY, SNAPSHOT_KEY,
};

/// raft-rs, re-exported so applications use the same version.
pub use raft;

/// Locks a mutex, carrying on past a poisoned one (a panicking holder leaves data that every
/// user here checks or overwrites).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
