//! Bad input and hostile environments: each gives its clear error and leaves the stored data
//! intact.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

mod common;

use common::*;
use raftwal_wal::vfs::{CrashPolicy, SimFaults};
use raftwal_wal::{Error, LogEntry, LogStore, StableStore, Wal, WalOptions, WriteBatch};

#[test]
fn a_path_that_is_a_file() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("file");
    std::fs::write(&f, b"hello").unwrap();
    let e = Wal::open(&f, WalOptions::default()).unwrap_err();
    assert!(matches!(e, Error::NotAWal { .. }), "{e}");
    assert!(e.to_string().contains("is a file"), "{e}");
    assert_eq!(std::fs::read(&f).unwrap(), b"hello");
}

#[test]
fn a_directory_of_foreign_files() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("notes.txt"), b"mine").unwrap();
    let e = Wal::open(d.path(), WalOptions::default()).unwrap_err();
    assert!(matches!(e, Error::NotAWal { .. }), "{e}");
    assert!(e.to_string().contains("notes.txt"), "{e}");
    assert_eq!(std::fs::read(d.path().join("notes.txt")).unwrap(), b"mine");
}

#[test]
fn read_only_on_a_missing_or_empty_directory() {
    let d = tempfile::tempdir().unwrap();
    let ro = WalOptions::default().read_only(true);
    assert!(matches!(
        Wal::open(d.path().join("nope"), ro.clone()),
        Err(Error::NotAWal { .. })
    ));
    assert!(matches!(
        Wal::open(d.path(), ro),
        Err(Error::NotAWal { .. })
    ));
    assert!(!d.path().join("nope").exists());
}

#[test]
fn a_locked_directory() {
    let d = tempfile::tempdir().unwrap();
    let opts = || WalOptions::default().segment_size(1 << 16);
    let a = Wal::open(d.path(), opts()).unwrap();
    a.store_logs(&entries(1, 3, 1, 8)).unwrap();
    let e = Wal::open(d.path(), opts()).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    let e = Wal::open(d.path(), opts().read_only(true)).unwrap_err();
    assert!(matches!(e, Error::Locked { .. }), "{e}");
    assert_eq!(a.get_log(2).unwrap(), entry(2, 1, 8));
    drop(a);
    let b = Wal::open(d.path(), opts()).unwrap();
    assert_eq!(b.last_index().unwrap(), 2);
}

#[test]
fn read_only_refuses_writes_and_reads_everything() {
    let d = tempfile::tempdir().unwrap();
    let opts = || WalOptions::default().segment_size(8192);
    let w = Wal::open(d.path(), opts()).unwrap();
    let all = entries(1, 100, 1, 100);
    w.store_logs(&all).unwrap();
    w.set_u64(b"term", 4).unwrap();
    drop(w);
    let before: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let r = Wal::open(d.path(), opts().read_only(true)).unwrap();
    assert!(matches!(
        r.store_logs(&entries(100, 101, 1, 1)),
        Err(Error::ReadOnly)
    ));
    assert!(matches!(r.set_u64(b"term", 5), Err(Error::ReadOnly)));
    assert!(matches!(r.delete_range(1, 2), Err(Error::ReadOnly)));
    assert_eq!(r.verify().unwrap(), 99);
    assert_eq!(r.get_u64(b"term").unwrap(), Some(4));
    let after: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(before.len(), after.len());
}

#[test]
fn bad_options_and_tickets() {
    let d = tempfile::tempdir().unwrap();
    assert!(matches!(
        Wal::open(d.path(), WalOptions::default().segment_size(100)),
        Err(Error::Invalid(_))
    ));
    let w = Wal::open(d.path(), WalOptions::default().segment_size(1 << 16)).unwrap();
    let t = w
        .write(WriteBatch::from_entries(entries(1, 2, 1, 1)))
        .unwrap();
    w.wait_durable(t).unwrap();
    // A ticket from another WAL (or forged) is refused rather than waited on forever.
    let other = Wal::open(
        d.path().join("x"),
        WalOptions::default().segment_size(1 << 16),
    )
    .unwrap();
    for _ in 0..3 {
        other
            .store_logs(&entries(
                other.last_index().unwrap() + 1,
                other.last_index().unwrap() + 2,
                1,
                1,
            ))
            .unwrap();
    }
    let big = other
        .write(WriteBatch::from_entries(entries(4, 5, 1, 1)))
        .unwrap();
    assert!(matches!(w.wait_durable(big), Err(Error::Invalid(_))));
    // Oversized stable values.
    assert!(matches!(
        w.set(b"k", &vec![0; raftwal_wal::MAX_STABLE_VALUE + 1]),
        Err(Error::TooLarge { .. })
    ));
    assert_eq!(w.last_index().unwrap(), 1);
}

#[test]
fn entries_larger_than_a_segment() {
    let mut h = SimHarness::new(2, 4096);
    let w = h.open();
    let e = vec![entry(1, 1, 10), entry(2, 1, 100_000), entry(3, 1, 10)];
    w.store_logs(&e[..1]).unwrap();
    w.store_logs(&e[1..2]).unwrap();
    w.store_logs(&e[2..]).unwrap();
    let w = h.reopen(w);
    for x in &e {
        assert_eq!(&w.get_log(x.index).unwrap(), x);
    }
    let w = h.crash_reopen(w, CrashPolicy::DropAll);
    assert_eq!(w.get_logs(1, 4, u64::MAX).unwrap(), e);
}

#[test]
fn failing_fsync_poisons_and_keeps_acknowledged_data() {
    let mut h = SimHarness::new(4, 1 << 16);
    let w = h.open();
    w.store_logs(&entries(1, 11, 1, 50)).unwrap();
    w.set_u64(b"term", 3).unwrap();
    h.vfs.set_faults(SimFaults {
        fail_sync_at: Some(1),
        ..Default::default()
    });
    let e = w.store_logs(&entries(11, 12, 1, 50)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains(".seg"), "names the file: {e}");
    // Fail closed: never retried, never assumed safe.
    assert!(matches!(
        w.store_logs(&entries(11, 12, 1, 50)),
        Err(Error::Poisoned)
    ));
    assert!(matches!(w.set_u64(b"term", 4), Err(Error::Poisoned)));
    assert!(matches!(w.delete_range(1, 2), Err(Error::Poisoned)));
    assert_eq!(w.get_log(5).unwrap(), entry(5, 1, 50), "reads still work");
    let w = h.crash_reopen(w, CrashPolicy::DropAll);
    assert_eq!(w.last_index().unwrap(), 10);
    assert_eq!(w.get_u64(b"term").unwrap(), Some(3));
    w.store_logs(&entries(11, 12, 1, 50)).unwrap();
}

#[test]
fn enospc_gives_a_clear_error_and_keeps_acknowledged_data() {
    let mut h = SimHarness::new(6, 4096);
    let w = h.open();
    w.store_logs(&entries(1, 5, 1, 50)).unwrap();
    h.vfs.set_faults(SimFaults {
        enospc_after_bytes: Some(0),
        ..Default::default()
    });
    let mut err = None;
    for i in 5..200 {
        if let Err(e) = w.store_logs(&entries(i, i + 1, 1, 500)) {
            err = Some(e);
            break;
        }
    }
    let e = err.expect("ENOSPC never surfaced");
    match &e {
        Error::Io { source, .. } => assert_eq!(source.raw_os_error(), Some(28), "{e}"),
        other => panic!("expected an I/O error, got {other}"),
    }
    let last = w.last_index().unwrap();
    assert!(matches!(
        w.store_logs(&entries(last + 1, last + 2, 1, 1)),
        Err(Error::Poisoned)
    ));
    let w = h.crash_reopen(w, CrashPolicy::Random(1));
    assert!(w.last_index().unwrap() >= 4);
    for i in 1..5 {
        assert_eq!(w.get_log(i).unwrap(), entry(i, 1, 50));
    }
}

#[test]
fn non_contiguous_and_overlapping_batches_write_nothing() {
    let mut h = SimHarness::new(8, 1 << 16);
    let w = h.open();
    w.store_logs(&entries(1, 6, 1, 5)).unwrap();
    let ops = h.vfs.ops();
    for bad in [
        entries(7, 8, 1, 5),                  // gap
        entries(5, 7, 1, 5),                  // overlap
        vec![entry(6, 1, 5), entry(8, 1, 5)], // gap inside
        vec![entry(6, 1, 5), entry(6, 1, 5)], // duplicate
        vec![LogEntry::new(0, 1, vec![])],    // index 0
    ] {
        assert!(
            matches!(w.store_logs(&bad), Err(Error::OutOfOrder { .. })),
            "{bad:?}"
        );
    }
    let mut b = WriteBatch::new();
    b.truncate_after(0).append(entry(1, 1, 5));
    w.write(b).unwrap(); // truncating everything then re-appending at 1 is fine
    assert!(h.vfs.ops() > ops);
    assert!(matches!(
        w.delete_range(1, 0),
        Err(Error::InvalidRange { .. })
    ));
    let w = h.reopen(w);
    assert_eq!((w.first_index().unwrap(), w.last_index().unwrap()), (1, 1));
    // Truncating below the head is refused.
    w.store_logs(&entries(2, 10, 1, 5)).unwrap();
    w.delete_range(1, 4).unwrap();
    let mut b = WriteBatch::new();
    b.truncate_after(2);
    assert!(matches!(w.write(b), Err(Error::InvalidRange { .. })));
    assert_eq!((w.first_index().unwrap(), w.last_index().unwrap()), (5, 9));
}
