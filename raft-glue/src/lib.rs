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
//! partitions; [`TcpTransport`] and [`TcpServer`] connect nodes over TCP (length-prefixed frames,
//! cluster-id handshake, reconnect with backoff). Also: `read_index`, `verify_leader`, `barrier`,
//! membership changes (`add_learner`, `add_voter`, `remove_server`) and `transfer_leadership`.
//! `lease_read` serves reads locally under a leader lease (on a [`Clock`] tests can drive) and
//! falls back to read-index, saying which it used. `examples/kv` is a replicated key–value
//! server over TCP (tested with three processes and kill -9). Not built yet: snapshots (taking, streaming, installing), the async-ready
//! persistence thread, and the cluster benchmark.

mod clock;
mod node;
mod storage;
mod tcp;
mod transport;

pub use clock::{Clock, ManualClock, SystemClock};
pub use node::{
    Applied, Config, Error as NodeError, Mailbox, Node, ReadPoint, ReadVia, Role, StateMachine,
    Status,
};
pub use tcp::{TcpServer, TcpTransport, MAX_FRAME};
pub use transport::{MemNetwork, MemTransport, Transport};

pub use storage::{
    encode_conf_state, to_log_entry, to_raft_entry, Error, RaftStorage, CONF_STATE_KEY,
    HARD_STATE_KEY, SNAPSHOT_KEY,
};

/// raft-rs, re-exported so applications use the same version.
pub use raft;
