//! # raftwal-wal
//!
//! A segmented, checksummed, memory-mapped-index write-ahead log for Raft. [`Wal`] implements
//! [`LogStore`] (the Raft log) and [`StableStore`] (term, vote, …) with one durability
//! contract: a write is durable and atomic when it returns, concurrent writers share fsyncs
//! (group commit), and recovery never returns a torn or corrupt entry nor loses an
//! acknowledged one. [`MemStore`] is the in-memory reference model both are tested against.
//!
//! ```
//! use raftwal_wal::{LogEntry, LogStore, StableStore, Wal, WalOptions, WriteBatch};
//!
//! # fn main() -> raftwal_wal::Result<()> {
//! let dir = tempfile::tempdir().unwrap();
//! let wal = Wal::open(dir.path(), WalOptions::default().segment_size(1 << 20))?;
//!
//! // Append: durable when `store_logs` returns.
//! wal.store_logs(&[
//!     LogEntry::new(1, 1, b"put a=1".to_vec()),
//!     LogEntry::new(2, 1, b"put b=2".to_vec()),
//!     LogEntry::new(3, 1, b"put c=3".to_vec()),
//! ])?;
//! wal.set_u64(b"term", 1)?;
//!
//! // A Raft round: truncate a conflicting tail, append, and persist the hard state with one
//! // commit record and one fsync.
//! let mut round = WriteBatch::new();
//! round.truncate_after(2).append(LogEntry::new(3, 2, b"put c=4".to_vec())).set_u64(b"term", 2);
//! let ticket = wal.write(round)?;
//! wal.wait_durable(ticket)?;
//!
//! // Read, compact the head, reopen.
//! assert_eq!(wal.get_log(3)?.data, b"put c=4");
//! wal.delete_range(1, 1)?;
//! drop(wal);
//! let wal = Wal::open(dir.path(), WalOptions::default().segment_size(1 << 20))?;
//! assert_eq!((wal.first_index()?, wal.last_index()?), (2, 3));
//! assert_eq!(wal.get_u64(b"term")?, Some(2));
//! # Ok(())
//! # }
//! ```
//!
//! The on-disk format and how each crash point recovers are in `wal/FORMAT.md`.

mod batch;
mod entry;
mod error;
mod format;
mod manifest;
mod mem;
pub mod metrics;
mod options;
mod recovery;
mod segment;
mod state;
mod store;
pub mod vfs;
mod wal;

pub use batch::{Ticket, WriteBatch, MAX_STABLE_KEY, MAX_STABLE_VALUE};
pub use entry::{EntryKind, LogEntry};
pub use error::{CorruptKind, Error, Result};
pub use format::FORMAT_VERSION;
pub use manifest::{Manifest, SegmentRecord};
pub use mem::MemStore;
pub use options::{RecoveryMode, SyncMode, WalOptions};
pub use recovery::{DroppedRange, RecoveryReport};
pub use store::{BatchStore, LogStore, StableStore};
pub use wal::{SegmentInfo, VerifyMode, Wal, WalStats};

/// Locks a mutex, carrying on past a poisoned one: a panicking holder leaves nothing half-done
/// that a later user relies on (every critical section here completes its update or none).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
