//! Damage on the medium: flipped bits in sealed segments, indexes, the manifest and the tail.
//! Every read returns the right entry or a clear `Corrupt` error naming the file — never wrong
//! data, never a panic. Index damage is repaired from the frames.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use raftwal_wal::vfs::CrashPolicy;
use raftwal_wal::{CorruptKind, Error, LogStore, RecoveryMode, StableStore, Wal, WriteBatch};

const SEG: u64 = 4096;

/// A WAL with a few sealed segments holding entries 1..=60.
fn populated() -> (SimHarness, Vec<raftwal_wal::LogEntry>) {
    let mut h = SimHarness::new(5, SEG);
    let wal = h.open();
    let all = entries(1, 61, 2, 150);
    for c in all.chunks(4) {
        wal.store_logs(c).unwrap();
    }
    assert!(wal.segments().len() >= 3, "need sealed segments");
    drop(wal);
    (h, all)
}

fn sealed_paths(h: &mut SimHarness) -> (PathBuf, PathBuf) {
    let wal = h.open();
    let s = wal.segments()[1].clone();
    assert!(s.sealed);
    let idx = s.path.with_extension("idx");
    (s.path, idx)
}

/// Every read is either the right entry or `Corrupt` naming `path`.
fn reads_are_right_or_corrupt(wal: &Wal, all: &[raftwal_wal::LogEntry], path: &Path) -> usize {
    let mut bad = 0;
    for e in all {
        match wal.get_log(e.index) {
            Ok(got) => assert_eq!(&got, e, "wrong data for index {}", e.index),
            Err(Error::Corrupt { path: p, .. }) => {
                assert_eq!(p, path);
                bad += 1;
            }
            Err(other) => panic!("unexpected error for index {}: {other}", e.index),
        }
    }
    bad
}

#[test]
fn every_byte_of_a_sealed_segment_flipped() {
    let (mut h, all) = populated();
    let (seg, _) = sealed_paths(&mut h);
    let len = h.vfs.read_file(&seg).unwrap().len() as u64;
    let mut detected = 0;
    for off in (0..len).step_by(3) {
        h.vfs.corrupt(&seg, off, 0x20).unwrap();
        match h.try_open() {
            Ok(wal) => {
                let bad = reads_are_right_or_corrupt(&wal, &all, &seg);
                if bad > 0 {
                    detected += 1;
                    assert!(matches!(wal.verify(), Err(Error::Corrupt { .. })));
                }
            }
            Err(Error::Corrupt { path, .. }) => {
                assert_eq!(path, seg, "offset {off}");
                detected += 1;
            }
            Err(e) => panic!("offset {off}: unexpected {e}"),
        }
        h.vfs.corrupt(&seg, off, 0x20).unwrap();
    }
    assert!(detected > 100, "only {detected} flips detected");
}

#[test]
fn every_byte_of_an_index_flipped_is_repaired() {
    let (mut h, all) = populated();
    let (_, idx) = sealed_paths(&mut h);
    let original = h.vfs.read_file(&idx).unwrap();
    let len = original.len() as u64;
    let mut rebuilt = 0;
    for off in 0..len {
        h.vfs.corrupt(&idx, off, 0x01).unwrap();
        let wal = h.try_open().unwrap_or_else(|e| panic!("offset {off}: {e}"));
        rebuilt += wal.recovery_report().rebuilt_indexes.len();
        for e in &all {
            assert_eq!(&wal.get_log(e.index).unwrap(), e, "index byte {off}");
        }
        drop(wal);
        // A rebuilt index was rewritten; put the original bytes back either way.
        h.vfs.write_file(&idx, &original).unwrap();
    }
    assert!(
        rebuilt >= 64,
        "header damage must trigger rebuilds ({rebuilt})"
    );
}

#[test]
fn missing_index_is_rebuilt() {
    let (mut h, all) = populated();
    let (_, idx) = sealed_paths(&mut h);
    use raftwal_wal::vfs::Vfs;
    h.vfs.remove_file(&idx).unwrap();
    let wal = h.open();
    assert_eq!(wal.recovery_report().rebuilt_indexes, vec![idx.clone()]);
    for e in &all {
        assert_eq!(&wal.get_log(e.index).unwrap(), e);
    }
    drop(wal);
    assert!(h.vfs.read_file(&idx).is_ok(), "rebuilt index rewritten");
}

#[test]
fn every_byte_of_the_manifest_flipped() {
    let (h, _) = populated();
    let m = Path::new("/db/wal/MANIFEST");
    let len = h.vfs.read_file(m).unwrap().len() as u64;
    for off in 0..len {
        h.vfs.corrupt(m, off, 0x80).unwrap();
        match h.try_open() {
            Err(Error::Corrupt { path, .. }) => assert_eq!(path, m),
            Ok(_) => panic!("manifest byte {off} flipped went unnoticed"),
            Err(e) => panic!("manifest byte {off}: unexpected {e}"),
        }
        h.vfs.corrupt(m, off, 0x80).unwrap();
    }
    h.try_open().unwrap();
}

#[test]
fn newer_manifest_version_is_refused() {
    let (h, _) = populated();
    let m = Path::new("/db/wal/MANIFEST");
    let mut b = h.vfs.read_file(m).unwrap();
    b[8] = 2;
    let n = b.len() - 4;
    let c = crc32fast::hash(&b[..n]);
    b[n..].copy_from_slice(&c.to_le_bytes());
    h.vfs.write_file(m, &b).unwrap();
    assert!(matches!(
        h.try_open(),
        Err(Error::UnsupportedVersion {
            found: 2,
            supported: 1,
            ..
        })
    ));
}

/// Writes five acknowledged batches into a fresh tail segment and returns the tail path and
/// the offset of the second batch's first entry payload.
fn tail_with_batches() -> (SimHarness, PathBuf, Vec<raftwal_wal::LogEntry>) {
    let mut h = SimHarness::new(9, 1 << 20);
    let wal = h.open();
    let all = entries(1, 11, 1, 40);
    for c in all.chunks(2) {
        wal.store_logs(c).unwrap();
    }
    let tail = wal.segments().last().unwrap().path.clone();
    // A crash, not a clean close: no checkpoint, so the next open scans the tail.
    std::mem::forget(wal);
    h.vfs.crash(CrashPolicy::KeepAll);
    (h, tail, all)
}

#[test]
fn damage_inside_acknowledged_tail_data_is_an_error_not_a_truncation() {
    let (h, tail, all) = tail_with_batches();
    // The second batch starts after: header 64, Reset frame 32, 2 entry frames, commit 32.
    let frame = 32 + 40u64;
    let second = 64 + 32 + 2 * frame + 32;
    h.vfs.corrupt(&tail, second + 40, 0x04).unwrap();
    match h.try_open() {
        Err(Error::Corrupt {
            path,
            kind,
            indexes,
            ..
        }) => {
            assert_eq!(path, tail);
            assert!(
                matches!(kind, CorruptKind::DamagedBeforeDurable { .. }),
                "{kind:?}"
            );
            assert!(indexes.is_some());
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Lenient mode truncates there and reports exactly what it dropped.
    let wal = Wal::open(
        "/db/wal",
        h.opts().recovery(RecoveryMode::TruncateCorruptTail),
    )
    .unwrap();
    assert_eq!(wal.last_index().unwrap(), 2);
    let d = &wal.recovery_report().dropped;
    assert_eq!(d.len(), 1);
    assert!(d[0].was_durable);
    assert_eq!(d[0].offset, second);
    assert_eq!(d[0].indexes, Some((4, 10)));
    assert_eq!(wal.get_log(2).unwrap(), all[1]);
}

#[test]
fn damage_in_the_last_batch_is_indistinguishable_from_a_torn_write_and_is_reported() {
    let (h, tail, _) = tail_with_batches();
    let frame = 32 + 40u64;
    let last_batch = 64 + 32 + 5 * (2 * frame + 32) - (2 * frame + 32);
    h.vfs.corrupt(&tail, last_batch + 50, 0x04).unwrap();
    let wal = h.try_open().unwrap();
    assert_eq!(wal.last_index().unwrap(), 8);
    assert_eq!(wal.recovery_report().dropped.len(), 1);
    assert!(!wal.recovery_report().dropped[0].was_durable);
}

/// Unacknowledged frames left after a torn batch must never be replayed after a later batch
/// that happens to end exactly where they begin: recovery zeroes them.
#[test]
fn stale_frames_after_a_torn_batch_are_never_resurrected() {
    let mut h = SimHarness::new(3, 1 << 20);
    let wal = h.open();
    wal.store_logs(&entries(1, 5, 1, 40)).unwrap();
    let tail = wal.segments().last().unwrap().path.clone();
    let b1_at = {
        let s = wal.segments();
        s.last().unwrap().data_end
    };
    // Two unacknowledged batches: B1 = [5], B2 = [6, 7].
    let t1 = wal
        .write(WriteBatch::from_entries(entries(5, 6, 1, 40)))
        .unwrap();
    let t2 = wal
        .write(WriteBatch::from_entries(entries(6, 8, 1, 40)))
        .unwrap();
    let _ = (t1, t2);
    std::mem::forget(wal); // a crash: no clean-close checkpoint
    h.vfs.crash(CrashPolicy::KeepAll);
    // B1 is torn (a bit of its entry is lost); B2 survived whole.
    h.vfs.corrupt(&tail, b1_at + 40, 0x01).unwrap();
    let wal = h.open();
    assert_eq!(wal.last_index().unwrap(), 4);
    // C has exactly B1's size, so it ends where B2 begins.
    let mut c = entries(5, 6, 2, 40);
    c[0].context.clear();
    let mut c_ctx = entries(5, 6, 1, 40);
    c[0].context = std::mem::take(&mut c_ctx[0].context);
    wal.store_logs(&c).unwrap();
    std::mem::forget(wal);
    h.vfs.crash(CrashPolicy::DropAll);
    let wal = h.open();
    assert_eq!(wal.last_index().unwrap(), 5, "B2 came back from the dead");
    assert_eq!(wal.get_log(5).unwrap(), c[0]);
}

#[test]
fn clean_close_checkpoint_skips_the_tail_scan_and_survives_damage() {
    let mut h = SimHarness::new(11, 1 << 20);
    let wal = h.open();
    let all = entries(1, 201, 1, 100);
    wal.store_logs(&all).unwrap();
    wal.set_u64(b"term", 9).unwrap();
    let tail = wal.segments().last().unwrap().path.clone();
    drop(wal); // clean close: checkpoint
    let idx = tail.with_extension("idx");
    let original = h.vfs.read_file(&idx).unwrap();
    let wal = h.open();
    assert!(wal.recovery_report().rebuilt_indexes.is_empty());
    assert_eq!(wal.get_logs(1, 201, u64::MAX).unwrap(), all);
    assert_eq!(wal.get_u64(b"term").unwrap(), Some(9));
    // Appends after a checkpointed open, then a crash: replayed from the checkpoint.
    wal.store_logs(&entries(201, 211, 1, 100)).unwrap();
    let mut b = WriteBatch::new();
    b.truncate_after(150).set_u64(b"term", 10);
    let t = wal.write(b).unwrap();
    wal.wait_durable(t).unwrap();
    std::mem::forget(wal);
    h.vfs.crash(CrashPolicy::DropAll);
    let wal = h.open();
    assert_eq!(wal.last_index().unwrap(), 150);
    assert_eq!(wal.get_logs(1, 151, u64::MAX).unwrap(), all[..150].to_vec());
    assert_eq!(wal.get_u64(b"term").unwrap(), Some(10));
    drop(wal);
    // Every byte of the checkpoint index damaged: rebuilt from the frames, data intact.
    let idx_now = h.vfs.read_file(&idx).unwrap();
    for off in (0..idx_now.len() as u64).step_by(5) {
        h.vfs.corrupt(&idx, off, 0x02).unwrap();
        let wal = h
            .try_open()
            .unwrap_or_else(|e| panic!("index byte {off}: {e}"));
        assert_eq!(wal.last_index().unwrap(), 150, "index byte {off}");
        assert_eq!(wal.get_log(77).unwrap(), all[76], "index byte {off}");
        std::mem::forget(wal);
        h.vfs.crash(CrashPolicy::KeepAll);
        h.vfs.write_file(&idx, &idx_now).unwrap();
    }
    let _ = original;
}
