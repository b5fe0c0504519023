//! The stores every on-disk test node uses: a `Wal` in `dir/wal` (small segments, so tests
//! rotate and recycle) and a `FileSnapshotStore` in `dir/snapshots` keeping two snapshots.
#![allow(dead_code)]

use std::path::Path;

use raftwal_glue::RaftStorage;
use raftwal_snapshot::FileSnapshotStore;
use raftwal_wal::{Wal, WalOptions};

/// Opens (or creates) a node's stores under `dir`.
pub fn open(dir: &Path) -> RaftStorage<Wal, FileSnapshotStore> {
    let wal = Wal::open(
        dir.join("wal"),
        WalOptions::default().segment_size(256 << 10),
    )
    .expect("open the WAL");
    let snapshots =
        FileSnapshotStore::open(dir.join("snapshots"), 2).expect("open the snapshot store");
    RaftStorage::new(wal, snapshots)
}
