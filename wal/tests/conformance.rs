//! One conformance suite, written once, run against `MemStore`, the `Wal` on disk and the `Wal`
//! on the simulated file system. Each check reopens the store after each step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use raftwal_wal::{EntryKind, Error, LogEntry, LogStore, StableStore};

fn bounds<S: LogStore>(s: &S) -> (u64, u64) {
    (s.first_index().unwrap(), s.last_index().unwrap())
}

fn suite<H: Harness>(h: &mut H) {
    let name = h.name();
    // Empty log.
    let mut s = h.open();
    assert_eq!(bounds(&s), (0, 0), "{name}");
    assert!(
        matches!(s.get_log(1), Err(Error::NotFound { .. })),
        "{name}"
    );
    assert!(s.get_logs(1, 1, 100).unwrap().is_empty());
    assert_eq!(s.get(b"term").unwrap(), None);
    assert_eq!(s.get_u64(b"term").unwrap(), None);
    s.delete_range(1, 10).unwrap(); // nothing to delete
    s = h.reopen(s);
    assert_eq!(bounds(&s), (0, 0));

    // First entry at a high index (after a snapshot install).
    s.store_logs(&entries(1000, 1001, 1, 10)).unwrap();
    assert_eq!(bounds(&s), (1000, 1000), "{name}");
    s = h.reopen(s);
    assert_eq!(bounds(&s), (1000, 1000), "{name}");
    assert_eq!(s.get_log(1000).unwrap(), entry(1000, 1, 10));
    assert!(matches!(s.get_log(999), Err(Error::NotFound { .. })));
    assert!(matches!(s.get_log(1001), Err(Error::NotFound { .. })));

    // Non-contiguous appends are refused and change nothing.
    assert!(matches!(
        s.store_logs(&entries(1002, 1003, 1, 1)),
        Err(Error::OutOfOrder {
            expected: 1001,
            got: 1002
        })
    ));
    let mut gap = entries(1001, 1003, 1, 1);
    gap[1].index = 1005;
    assert!(matches!(s.store_logs(&gap), Err(Error::OutOfOrder { .. })));
    assert!(matches!(
        s.store_logs(&entries(1000, 1001, 1, 1)),
        Err(Error::OutOfOrder { .. })
    ));
    assert_eq!(bounds(&s), (1000, 1000));

    // Many appends, mixed sizes including empty and multi-MiB entries, kinds and context.
    let mut all = vec![entry(1000, 1, 10)];
    for i in 1001..1300u64 {
        let len = match i % 50 {
            0 => 0,
            7 => 3 << 20,
            _ => (i % 13 * 37) as usize,
        };
        let mut e = entry(i, 1 + i / 100, len);
        e.kind = match i % 4 {
            0 => EntryKind::Normal,
            1 => EntryKind::ConfChange,
            2 => EntryKind::ConfChangeV2,
            _ => EntryKind::Noop,
        };
        all.push(e);
    }
    for chunk in all[1..].chunks(17) {
        s.store_logs(chunk).unwrap();
    }
    assert_eq!(bounds(&s), (1000, 1299));
    s = h.reopen(s);
    assert_eq!(bounds(&s), (1000, 1299), "{name}");
    for e in &all {
        assert_eq!(&s.get_log(e.index).unwrap(), e, "{name} index {}", e.index);
    }
    // get_logs: range, max_bytes, at least one.
    let got = s.get_logs(1000, 1300, u64::MAX).unwrap();
    assert_eq!(got, all);
    let one = s.get_logs(1007, 1300, 0).unwrap();
    assert_eq!(one.len(), 1);
    let some = s.get_logs(1001, 1300, 1000).unwrap();
    assert!(!some.is_empty() && some.len() < 299);
    assert!(some.iter().map(|e| e.payload_len()).sum::<u64>() <= 1000 || some.len() == 1);
    assert!(matches!(
        s.get_logs(990, 1005, 10),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        s.get_logs(1290, 1301, 10),
        Err(Error::NotFound { .. })
    ));

    // Delete head.
    s.delete_range(1000, 1099).unwrap();
    assert_eq!(bounds(&s), (1100, 1299));
    assert!(matches!(s.get_log(1099), Err(Error::NotFound { .. })));
    s = h.reopen(s);
    assert_eq!(bounds(&s), (1100, 1299), "{name}");
    assert_eq!(s.get_log(1100).unwrap(), all[100]);
    // Already-deleted head range: nothing to do.
    s.delete_range(900, 1050).unwrap();
    assert_eq!(bounds(&s), (1100, 1299));

    // Middle ranges, inverted ranges and ranges past the end are refused.
    assert!(matches!(
        s.delete_range(1150, 1160),
        Err(Error::InvalidRange { .. })
    ));
    assert!(matches!(
        s.delete_range(1160, 1150),
        Err(Error::InvalidRange { .. })
    ));
    assert!(matches!(
        s.delete_range(1300, 1400),
        Err(Error::InvalidRange { .. })
    ));
    assert_eq!(bounds(&s), (1100, 1299));

    // Delete tail, then re-append at the same indexes with a new term.
    s.delete_range(1250, 1299).unwrap();
    assert_eq!(bounds(&s), (1100, 1249));
    s = h.reopen(s);
    assert_eq!(bounds(&s), (1100, 1249), "{name}");
    assert!(matches!(s.get_log(1250), Err(Error::NotFound { .. })));
    let re = entries(1250, 1260, 9, 5);
    s.store_logs(&re).unwrap();
    s = h.reopen(s);
    assert_eq!(s.get_log(1250).unwrap(), re[0], "{name}");
    assert_eq!(s.get_log(1249).unwrap(), all[249]);
    assert_eq!(bounds(&s), (1100, 1259));

    // Single entry left, then delete everything, then re-append anywhere.
    s.delete_range(1100, 1258).unwrap();
    assert_eq!(bounds(&s), (1259, 1259));
    s = h.reopen(s);
    assert_eq!(bounds(&s), (1259, 1259), "{name}");
    s.delete_range(1259, 1259).unwrap();
    assert_eq!(bounds(&s), (0, 0), "{name}");
    s = h.reopen(s);
    assert_eq!(bounds(&s), (0, 0), "{name}");
    s.store_logs(&entries(5, 8, 10, 4)).unwrap();
    assert_eq!(bounds(&s), (5, 7));
    s = h.reopen(s);
    assert_eq!(bounds(&s), (5, 7), "{name}");
    assert_eq!(s.get_log(6).unwrap(), entry(6, 10, 4));

    // Delete everything as a tail range, and re-append at the same index.
    s.delete_range(5, 100).unwrap();
    assert_eq!(bounds(&s), (0, 0), "{name}");
    s.store_logs(&entries(5, 6, 11, 4)).unwrap();
    s = h.reopen(s);
    assert_eq!(s.get_log(5).unwrap(), entry(5, 11, 4), "{name}");

    // Index 0 is never valid.
    s.delete_range(5, 5).unwrap();
    assert!(matches!(
        s.store_logs(&[LogEntry::new(0, 1, vec![])]),
        Err(Error::OutOfOrder { .. })
    ));

    // Stable store.
    s.set(b"term", b"x").unwrap();
    s.set_u64(b"vote", 42).unwrap();
    s.set(b"", b"empty key").unwrap();
    s.set(b"big", &vec![7u8; 100_000]).unwrap();
    s = h.reopen(s);
    assert_eq!(
        s.get(b"term").unwrap().as_deref(),
        Some(&b"x"[..]),
        "{name}"
    );
    assert_eq!(s.get_u64(b"vote").unwrap(), Some(42));
    assert_eq!(s.get(b"").unwrap().as_deref(), Some(&b"empty key"[..]));
    assert_eq!(s.get(b"big").unwrap().unwrap().len(), 100_000);
    assert!(matches!(s.get_u64(b"term"), Err(Error::Invalid(_))));
    s.set_u64(b"vote", 43).unwrap();
    s = h.reopen(s);
    assert_eq!(s.get_u64(b"vote").unwrap(), Some(43), "{name}");
    assert!(matches!(
        s.set(&vec![0u8; raftwal_wal::MAX_STABLE_KEY + 1], b""),
        Err(Error::TooLarge { .. })
    ));
}

#[test]
fn conformance_mem() {
    suite(&mut MemHarness);
}

#[test]
fn conformance_wal_disk() {
    suite(&mut DiskHarness::new(256 << 10));
}

#[test]
fn conformance_wal_disk_default_segments() {
    suite(&mut DiskHarness::new(64 << 20));
}

#[test]
fn conformance_wal_sim() {
    suite(&mut SimHarness::new(1, 64 << 10));
}

#[test]
fn a_batch_with_more_large_payloads_than_one_vectored_write_takes() {
    // Large payloads are written from the caller's buffers, several per `pwritev`, which takes
    // at most 1024 buffers: this batch needs more (and more than a segment: it gets its own).
    let h = DiskHarness::new(1 << 20);
    let opts = || raftwal_wal::WalOptions::default().segment_size(1 << 20);
    let wal = raftwal_wal::Wal::open(h.path(), opts()).unwrap();
    let batch = entries(1, 1301, 3, 64 << 10);
    wal.store_logs(&batch).unwrap();
    wal.store_logs(&entries(1301, 1303, 3, 100)).unwrap();
    drop(wal);
    let wal = raftwal_wal::Wal::open(h.path(), opts()).unwrap();
    assert_eq!(wal.get_logs(1, 1301, u64::MAX).unwrap(), batch);
    assert_eq!(wal.verify().unwrap(), 1302);
}
