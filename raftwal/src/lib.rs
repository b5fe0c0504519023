//! # raftwal
//!
//! A durable storage backend for Raft: the facade over the three crates, and nothing else (the
//! command line and its benchmark are `raftwal-cli`, not a dependency of this crate).
//!
//! - [`wal`]: the segmented, checksummed write-ahead log ([`wal::Wal`], `LogStore`, `StableStore`).
//! - [`snapshot`]: the file snapshot store.
//! - [`glue`]: Raft over the stores.
//!
//! ```
//! use raftwal::wal::{LogEntry, LogStore, Wal, WalOptions};
//! let dir = tempfile::tempdir().unwrap();
//! let wal = Wal::open(dir.path(), WalOptions::default().segment_size(1 << 20)).unwrap();
//! wal.store_logs(&[LogEntry::new(1, 1, b"hello".to_vec())]).unwrap();
//! assert_eq!(wal.last_index().unwrap(), 1);
//! ```

pub use raftwal_glue as glue;
pub use raftwal_snapshot as snapshot;
pub use raftwal_wal as wal;
