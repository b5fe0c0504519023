//! # raftwal-glue
//!
//! Raft over the raftwal stores. The consensus core is tikv/raft-rs 0.7 (`RawNode`).
//!
//! This release provides [`RaftStorage`]: `raft::Storage` over any [`raftwal_wal::BatchStore`]
//! (such as the [`raftwal_wal::Wal`]) and [`raftwal_snapshot::SnapshotStore`], with the writes a
//! Raft node makes (a round's entries and hard state in one atomic batch, snapshot install,
//! compaction). Applications that already drive a raft-rs `RawNode` can swap it in; see its
//! example. The thread-based `Node` API (apply, barrier, lease reads, membership, transports)
//! is not built yet.

mod storage;

pub use storage::{
    encode_conf_state, to_log_entry, to_raft_entry, Error, RaftStorage, CONF_STATE_KEY,
    HARD_STATE_KEY, SNAPSHOT_KEY,
};

/// raft-rs, re-exported so applications use the same version.
pub use raft;
