//! raft-rs's storage rules (the conformance suite of `raftwal_glue::testing`): `RaftStorage`
//! over a real `Wal` and `FileSnapshotStore` passes every rule, each also after a reopen;
//! raft-rs's own `MemStorage` passes every rule that needs no reopen, which shows the suite
//! checks the contract rather than raftwal's choices.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use raftwal_glue::testing::{check_storage, MemStorageHarness, RaftStorageHarness};
use raftwal_glue::RaftStorage;
use raftwal_snapshot::FileSnapshotStore;
use raftwal_wal::{Wal, WalOptions};

#[test]
fn raft_storage_passes_every_rule_also_after_a_reopen() {
    let root = Arc::new(tempfile::tempdir().unwrap());
    let n = AtomicUsize::new(0);
    let report = check_storage(|| {
        // Each rule gets a fresh directory; its reopens open the same one.
        let dir = root
            .path()
            .join(n.fetch_add(1, Ordering::SeqCst).to_string());
        let _keep = root.clone();
        RaftStorageHarness::new(move || {
            let _ = &_keep;
            let wal = Wal::open(
                dir.join("wal"),
                WalOptions::default().segment_size(64 << 10),
            )
            .unwrap();
            RaftStorage::new(wal, FileSnapshotStore::open(dir.join("snap"), 1).unwrap())
        })
    });
    assert_eq!(report.rules.len(), 8, "{report:?}");
    assert_eq!(
        report.reopened, report.rules,
        "every rule checked after a reopen"
    );
}

#[test]
fn raft_rs_mem_storage_passes_every_rule_that_needs_no_reopen() {
    let report = check_storage(MemStorageHarness::default);
    assert_eq!(report.rules.len(), 8, "{report:?}");
    assert!(report.reopened.is_empty());
}
