//! What the storage adapter's own writes can fail with.

/// Errors of the adapter's own write helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The log store failed.
    #[error(transparent)]
    Log(#[from] raftwal_wal::Error),
    /// The snapshot store failed.
    #[error(transparent)]
    Snapshot(#[from] raftwal_snapshot::Error),
    /// The log was compacted up to a snapshot the snapshot store no longer holds.
    #[error("the snapshot at index {index} (term {term}) that the log was compacted to is missing from the snapshot store")]
    MissingSnapshot {
        /// Its index.
        index: u64,
        /// Its term.
        term: u64,
    },
    /// A snapshot older than the log's first index (raft-rs's `SnapshotOutOfDate`); nothing
    /// was written.
    #[error("the snapshot at index {index} is older than the log, which starts at {first}")]
    SnapshotOutOfDate {
        /// The snapshot's index.
        index: u64,
        /// The log's first index.
        first: u64,
    },
    /// A round that does not fit the log: it starts before the first index (overwriting
    /// compacted entries) or after `last_index + 1` (a gap); nothing was written.
    #[error("entries from {index} do not fit a log holding [{first}, {last}]")]
    NotContiguous {
        /// The round's first index.
        index: u64,
        /// The log's first index.
        first: u64,
        /// The log's last index.
        last: u64,
    },
    /// Compaction past the end of the log; nothing was written.
    #[error("cannot compact the log to {index}: its last index is {last}")]
    CompactBeyondLog {
        /// The first index asked to keep.
        index: u64,
        /// The log's last index.
        last: u64,
    },
    /// A stored Raft state did not decode.
    #[error("stored {what} does not decode: {detail}")]
    Decode {
        /// Which state.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
}
