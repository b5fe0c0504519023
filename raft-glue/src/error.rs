//! What a node call can fail with.

/// What a node call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This node is not the leader; `leader_hint` is the leader it knows of. Nothing was
    /// proposed (or, for a read, no read point was established).
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader_hint: Option<u64>,
    },
    /// No outcome in time; the command may or may not commit.
    #[error("timed out; the command may or may not commit")]
    Timeout,
    /// A read point (or a leadership check) could not be established in time. Reads change
    /// nothing: retrying is always safe.
    #[error("timed out before a read point was established")]
    ReadTimeout,
    /// Raft dropped the proposal (for example during a leadership transfer); it was never
    /// appended.
    #[error("the proposal was dropped by Raft")]
    Dropped,
    /// Leadership was lost before the command was applied; it may or may not commit.
    #[error("leadership lost before the command was applied; it may or may not commit")]
    LeadershipLost,
    /// The command is larger than [`Config::max_command_size`](crate::Config::max_command_size);
    /// nothing was written.
    #[error("the command is {size} bytes, more than the {max} allowed")]
    TooLarge {
        /// The command's size.
        size: usize,
        /// The largest command accepted.
        max: usize,
    },
    /// Too many commands are in flight ([`Config::max_pending_proposals`], or more uncommitted
    /// bytes than [`Config::max_uncommitted_size`]); nothing was appended: retry later.
    ///
    /// [`Config::max_pending_proposals`]: crate::Config::max_pending_proposals
    /// [`Config::max_uncommitted_size`]: crate::Config::max_uncommitted_size
    #[error("too many commands in flight; nothing was appended")]
    Busy,
    /// Another membership change is still in progress (not yet applied, or a joint
    /// configuration not yet left); nothing was proposed.
    #[error("another membership change is in progress")]
    ConfChangeInProgress,
    /// The node is shut down.
    #[error("the node is shut down")]
    Shutdown,
    /// The configuration is invalid (or disagrees with the transport); the node did not start.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The node stopped on a storage error.
    #[error("storage error: {0}")]
    Storage(String),
    /// A snapshot could not be taken (the node keeps running).
    #[error("snapshot failed: {0}")]
    Snapshot(String),
}

/// A node call's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
