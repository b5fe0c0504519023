//! Golden WAL directories under `wal/tests/data/`, written once by this format version: one
//! closed cleanly (a checkpoint; the next open replays nothing), one left as a crash leaves it
//! (no checkpoint; the tail is replayed). Every later build must open both and find exactly
//! what the same operations give the `MemStore` model. The codecs' own bytes are pinned by
//! the unit tests in `wal/src/format/golden.rs`. `RAFTWAL_BLESS=1` rewrites the directories
//! (only with a new format version).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    missing_docs
)]

use std::path::{Path, PathBuf};

use raftwal_wal::{LogEntry, LogStore, MemStore, StableStore, VerifyMode, Wal, WalOptions};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn opts() -> WalOptions {
    WalOptions::default()
        .segment_size(4096)
        .background_prepare(false)
}

/// The operations both directories hold: several sealed segments, a head compaction, a tail
/// truncation with a rewrite, stable keys set and overwritten.
fn script<S: LogStore + StableStore>(s: &S) {
    let entry = |i: u64, term: u64| {
        LogEntry::new(i, term, format!("entry {i} of term {term}").into_bytes())
    };
    for chunk in (1..=150u64).collect::<Vec<_>>().chunks(10) {
        let es: Vec<LogEntry> = chunk.iter().map(|&i| entry(i, 1 + i / 60)).collect();
        s.store_logs(&es).unwrap();
    }
    s.set(b"vote", &2u64.to_le_bytes()).unwrap();
    s.delete_range(1, 40).unwrap();
    s.delete_range(141, 150).unwrap();
    let es: Vec<LogEntry> = (141..=170).map(|i| entry(i, 4)).collect();
    s.store_logs(&es).unwrap();
    s.set(b"term", &4u64.to_le_bytes()).unwrap();
    s.set(b"vote", &3u64.to_le_bytes()).unwrap();
}

fn bless(name: &str, clean: bool) {
    let dir = data(name);
    let _ = std::fs::remove_dir_all(&dir);
    let wal = Wal::open(&dir, opts()).unwrap();
    script(&wal);
    if clean {
        drop(wal);
    } else {
        // No checkpoint, as after kill -9 (every write above was synchronous, so durable).
        std::mem::forget(wal);
    }
    let _ = std::fs::remove_file(dir.join("LOCK"));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn check(name: &str, clean: bool) {
    if std::env::var_os("RAFTWAL_BLESS").is_some() {
        bless(name, clean);
    }
    let model = MemStore::new();
    script(&model);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("wal");
    copy_dir(&data(name), &dir);
    let wal = Wal::open(&dir, opts()).unwrap();
    let report = wal.recovery_report();
    assert!(
        report.dropped.is_empty(),
        "{name}: recovery dropped {:?}",
        report.dropped
    );
    assert_eq!(
        wal.first_index().unwrap(),
        model.first_index().unwrap(),
        "{name}"
    );
    assert_eq!(
        wal.last_index().unwrap(),
        model.last_index().unwrap(),
        "{name}"
    );
    let (lo, hi) = (model.first_index().unwrap(), model.last_index().unwrap());
    assert_eq!(
        wal.get_logs(lo, hi + 1, u64::MAX).unwrap(),
        model.get_logs(lo, hi + 1, u64::MAX).unwrap(),
        "{name}"
    );
    assert_eq!(wal.stable_entries(), model.stable_entries(), "{name}");
    let (checked, problems) = wal.check(VerifyMode::Every);
    assert!(problems.is_empty(), "{name}: {problems:?}");
    assert_eq!(checked, hi - lo + 1);
    assert!(
        wal.segments().len() > 2,
        "{name}: the image should span several segments"
    );
}

#[test]
fn a_cleanly_closed_wal_of_this_format_opens() {
    check("wal-v1-clean", true);
}

#[test]
fn a_crashed_wal_of_this_format_opens() {
    check("wal-v1-crashed", false);
}
