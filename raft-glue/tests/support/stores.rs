//! The stores every on-disk test node uses: a `Wal` in `dir/wal` (small segments, so tests
//! rotate and recycle) and a `FileSnapshotStore` in `dir/snapshots` keeping two snapshots; and
//! a helper that stores a snapshot the way a node does.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use raft::eraftpb::ConfState;
use raftwal_glue::RaftStorage;
use raftwal_snapshot::{FileSnapshotStore, SnapshotSink, SnapshotStore};
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

/// Stores (durably) a snapshot at `index` of `term` whose data is `state at {index}`, for a
/// configuration of one voter, node 1.
///
/// # Errors
/// The store's, as text (crash tests stop at the first one).
pub fn put_snapshot<S: SnapshotStore>(store: &S, index: u64, term: u64) -> Result<(), String> {
    let conf = raftwal_glue::encode_conf_state(&ConfState {
        voters: vec![1],
        ..Default::default()
    });
    let mut sink = store
        .create(index, term, &conf, 1)
        .map_err(|e| e.to_string())?;
    sink.write_all(format!("state at {index}").as_bytes())
        .map_err(|e| e.to_string())?;
    sink.commit().map(drop).map_err(|e| e.to_string())
}

/// Stores on a simulated file system (to inject faults): a WAL at `/n{id}` and snapshots in
/// memory.
pub fn simulated(
    id: u64,
    vfs: &raftwal_wal::vfs::SimVfs,
) -> RaftStorage<Wal, raftwal_snapshot::MemSnapshotStore> {
    let wal = Wal::open(
        format!("/n{id}"),
        WalOptions::default()
            .segment_size(64 << 10)
            .vfs(std::sync::Arc::new(vfs.process())),
    )
    .expect("open the WAL");
    RaftStorage::new(
        wal,
        raftwal_snapshot::MemSnapshotStore::new(1).expect("a snapshot store"),
    )
}
