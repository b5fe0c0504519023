//! What a node call can fail with.

use std::sync::Arc;

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
    /// The change adds a node this node knows was removed from the cluster: an id is never
    /// used again (the members that remember the removal would not hear it). Nothing was
    /// proposed; give the node a fresh id.
    #[error("node {id} was removed from the cluster; its id cannot be used again")]
    IdRemoved {
        /// The removed node's id.
        id: u64,
    },
    /// The node is shut down.
    #[error("the node is shut down")]
    Shutdown,
    /// The configuration is invalid (or disagrees with the transport); the node did not start.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The node stopped on a storage error (the cause keeps the store's error as its source).
    #[error("storage error: {0}")]
    Storage(#[source] Cause),
    /// A snapshot could not be taken (the node keeps running).
    #[error("snapshot failed: {0}")]
    Snapshot(#[source] Cause),
    /// A thread the node needs could not be started; the node did not start (or, for a
    /// snapshot writer, the snapshot was not taken).
    #[error("could not start a thread: {0}")]
    Spawn(#[source] Cause),
    /// The node's thread panicked (raft-rs panics on some storage failures); the node stopped.
    #[error("the node's thread panicked: {0}")]
    Panicked(String),
}

/// Why something failed: what was being done and, when there is one, the error underneath,
/// kept as this error's [`source`](std::error::Error::source) so the whole chain can be
/// reported. Cloneable (every waiting caller gets the same cause); two causes are equal when
/// their messages are.
///
/// ```
/// use std::error::Error as _;
/// let io = std::io::Error::new(std::io::ErrorKind::Other, "disk full");
/// let e = raftwal_glue::NodeError::Storage(raftwal_glue::Cause::with("appending", io));
/// assert_eq!(e.to_string(), "storage error: appending: disk full");
/// assert_eq!(e.source().unwrap().source().unwrap().to_string(), "disk full");
/// ```
#[derive(Debug, Clone)]
pub struct Cause {
    what: String,
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause with no error underneath.
    pub fn new(what: impl Into<String>) -> Self {
        Cause {
            what: what.into(),
            source: None,
        }
    }

    /// `what` failed because of `source`.
    pub fn with(
        what: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Cause {
            what: what.into(),
            source: Some(Arc::new(source)),
        }
    }

    /// What was being done.
    pub fn what(&self) -> &str {
        &self.what
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {s}", self.what),
            None => f.write_str(&self.what),
        }
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Cause {}

impl Error {
    /// [`Error::Storage`]: `what` failed because of `e`.
    pub(crate) fn storage(what: &str, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Storage(Cause::with(what, e))
    }
}

/// A node call's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
