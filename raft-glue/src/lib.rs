//! # raftwal-glue
//!
//! Raft over the raftwal stores. The consensus core is tikv/raft-rs 0.7 (`RawNode`).
//!
//! This release provides [`RaftStorage`]: `raft::Storage` over any [`raftwal_wal::BatchStore`]
//! (such as the [`raftwal_wal::Wal`]) and [`raftwal_snapshot::SnapshotStore`], with the writes a
//! Raft node makes (a round's entries and hard state in one atomic batch, snapshot install,
//! compaction). Applications that already drive a raft-rs `RawNode` can swap it in; see its
//! example.
//!
//! [`Node`] runs a raft-rs `RawNode` on its own thread over a [`RaftStorage`]: `apply` a command
//! and get the state machine's response once it is committed and applied; `status`, `leader`,
//! `role`, `shutdown`; specific errors (`NotLeader` with a hint, `Timeout`, `LeadershipLost`,
//! `Dropped`, `Shutdown`, `Storage`). [`MemNetwork`] connects nodes of one process, with
//! partitions. Not built yet: barrier, read-index and lease reads, membership changes, snapshots
//! (taking, streaming, installing), the async-ready persistence thread, and the TCP transport.

mod node;
mod storage;
mod transport;

pub use node::{Applied, Config, Error as NodeError, Mailbox, Node, Role, StateMachine, Status};
pub use transport::{MemNetwork, MemTransport, Transport};

pub use storage::{
    encode_conf_state, to_log_entry, to_raft_entry, Error, RaftStorage, CONF_STATE_KEY,
    HARD_STATE_KEY, SNAPSHOT_KEY,
};

/// raft-rs, re-exported so applications use the same version.
pub use raft;
