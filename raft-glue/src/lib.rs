//! # raftwal-glue
//!
//! Raft over the raftwal stores. The consensus core is tikv/raft-rs 0.7 (`RawNode`).
//!
//! - [`RaftStorage`]: `raft::Storage` over any [`raftwal_wal::BatchStore`] (such as the
//!   [`raftwal_wal::Wal`]) and [`raftwal_snapshot::SnapshotStore`], with the writes a Raft node
//!   makes (a round's entries and hard state in one atomic batch, snapshot install, compaction).
//!   Applications that already drive a raft-rs `RawNode` can swap it in; see its example.
//! - [`Node`]: a `RawNode` on its own thread. `apply` a command and get the state machine's
//!   response once it is committed and applied; `barrier`, `read_index`, `lease_read` (local
//!   under a leader lease on a [`Clock`], else read-index, and it says which), `verify_leader`,
//!   `add_learner`, `add_voter` (learner first, promoted once caught up), `remove_server`,
//!   `transfer_leadership`, `status`, `shutdown`; specific errors ([`NodeError`]).
//! - Transports: [`MemNetwork`] (one process, with partitions and seedable loss, duplication
//!   and reordering) and [`TcpTransport`] with
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

mod clock;
mod node;
mod snapshot;
mod storage;
mod tcp;
mod transport;

pub use clock::{Clock, ManualClock, SystemClock};
pub use node::{
    Applied, Config, Error as NodeError, Mailbox, Node, NodeEvent, Proposal, ReadPoint, ReadVia,
    Role, StateMachine, Status,
};
pub use snapshot::StateSnapshot;
pub use tcp::{TcpServer, TcpTransport, MAX_FRAME, SNAPSHOT_CHUNK};
pub use transport::{MemNetwork, MemTransport, NetFaults, NetStats, Transport};

pub use storage::{
    encode_conf_state, to_log_entry, to_raft_entry, Error, RaftStorage, CONF_STATE_KEY,
    HARD_STATE_KEY, SNAPSHOT_KEY,
};

/// raft-rs, re-exported so applications use the same version.
pub use raft;
