//! # raftwal-snapshot
//!
//! Crash-safe, checksummed, streaming storage for Raft state-machine snapshots.
//! [`FileSnapshotStore`] keeps each snapshot in its own directory, committed by an atomic
//! rename after everything is `fsync`ed, verifies the data checksum while streaming it back,
//! and keeps the `retain` newest. [`MemSnapshotStore`] is the in-memory reference.
//!
//! ```
//! use std::io::Write;
//! use raftwal_snapshot::{read_all, FileSnapshotStore, SnapshotSink, SnapshotStore};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let store = FileSnapshotStore::open(dir.path(), 1).unwrap();
//! for index in [10, 20] {
//!     let mut sink = store.create(index, 1, b"conf", 1).unwrap();
//!     sink.write_all(format!("state at {index}").as_bytes()).unwrap();
//!     sink.commit().unwrap();
//! }
//! let list = store.list().unwrap();        // newest first; only 1 retained
//! assert_eq!(list.len(), 1);
//! let (meta, reader) = store.open(&list[0].id).unwrap();
//! assert_eq!(meta.index, 20);
//! assert_eq!(read_all(reader).unwrap(), b"state at 20");
//! ```
//!
//! The on-disk layout is in `snapshot/FORMAT.md`.

mod error;
mod file;
mod mem;
mod meta;
pub mod metrics;

use std::io::{Read, Write};

pub use error::{CorruptKind, Error, Result};
pub use file::{FileReader, FileSink, FileSnapshotStore};
pub use mem::{read_all, MemSink, MemSnapshotStore};
pub use meta::{SnapshotMeta, META_VERSION};

/// A snapshot being written: `Write` the data, then [`commit`](SnapshotSink::commit) or
/// [`cancel`](SnapshotSink::cancel). Dropping it without committing cancels it.
pub trait SnapshotSink: Write + Send {
    /// The id the snapshot will have.
    fn id(&self) -> &str;
    /// Makes the snapshot durable and visible, then reaps snapshots beyond the retention.
    ///
    /// # Errors
    /// I/O errors; the snapshot is then not listed and its temporary is removed.
    fn commit(self) -> Result<SnapshotMeta>
    where
        Self: Sized;
    /// Discards the snapshot.
    ///
    /// # Errors
    /// I/O errors while removing the temporary.
    fn cancel(self) -> Result<()>
    where
        Self: Sized;
}

/// Where Raft keeps state-machine snapshots.
pub trait SnapshotStore: Send + Sync {
    /// The writer of a new snapshot.
    type Sink: SnapshotSink;
    /// The checksum-verifying reader of a stored snapshot.
    type Reader: Read + Send;

    /// Starts a snapshot covering the log up to `index` (of `term`), with the membership
    /// `configuration` committed at `configuration_index`.
    ///
    /// # Errors
    /// I/O errors.
    fn create(
        &self,
        index: u64,
        term: u64,
        configuration: &[u8],
        configuration_index: u64,
    ) -> Result<Self::Sink>;

    /// Committed snapshots, newest first (by term, then index, then creation).
    ///
    /// # Errors
    /// I/O errors listing the directory; a snapshot with damaged metadata is skipped and
    /// logged, not an error.
    fn list(&self) -> Result<Vec<SnapshotMeta>>;

    /// Opens a snapshot for reading; its metadata is verified now, its data while streaming.
    ///
    /// # Errors
    /// [`Error::NotFound`], [`Error::Corrupt`] (damaged metadata, missing or truncated data),
    /// I/O errors.
    fn open(&self, id: &str) -> Result<(SnapshotMeta, Self::Reader)>;

    /// Keeps every snapshot at `(index, term)` whatever the retention, until another mark is
    /// protected: the snapshot a log's durable snapshot mark names must outlive newer commits
    /// until the mark has moved (and is durable). The protection lives in memory, shared by
    /// clones of the store; after a restart, its user protects its mark again before it
    /// commits anything.
    fn protect(&self, index: u64, term: u64);
}

/// Locks a mutex, carrying on past a poisoned one: a panicking holder leaves nothing half-done
/// that a later user relies on (every critical section here completes its update or none).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
