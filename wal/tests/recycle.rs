//! Segment recycling: files freed by head compaction become the next segments without being
//! refilled; their old frames never verify again, before or after a crash.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::*;
use raftwal_wal::vfs::{CrashPolicy, Vfs};
use raftwal_wal::{LogStore, MemStore, Wal};

fn files(h: &SimHarness, ext: &str) -> usize {
    h.vfs
        .list(Path::new("/db/wal"))
        .unwrap()
        .iter()
        .filter(|n| n.ends_with(ext))
        .count()
}

#[test]
fn compaction_recycles_segments_and_old_frames_stay_dead() {
    let mut h = SimHarness::new(21, 8192);
    let mut wal = h.open();
    let model = MemStore::new();
    let mut next = 1u64;
    let mut recycled_seen = false;
    for round in 0..60u64 {
        let batch = entries(next, next + 6, 1 + round, 200 + (round as usize % 7) * 50);
        wal.store_logs(&batch).unwrap();
        model.store_logs(&batch).unwrap();
        next += 6;
        if round % 5 == 4 {
            // Keep only the last 20 entries, as a Raft node does after a snapshot.
            let keep_from = next.saturating_sub(20);
            wal.delete_range(wal.first_index().unwrap(), keep_from - 1)
                .unwrap();
            model
                .delete_range(model.first_index().unwrap(), keep_from - 1)
                .unwrap();
        }
        recycled_seen |= files(&h, ".free") > 0;
        assert!(files(&h, ".free") <= 4, "the pool is bounded");
        match round % 3 {
            0 => wal = h.reopen(wal),
            1 => {
                // A crash, not a clean close: recovery scans a tail that may be a recycled
                // file full of old frames; it must stop cleanly at the end of the new ones.
                std::mem::forget(wal);
                h.vfs.crash(CrashPolicy::DropAll);
                wal = h.open();
                assert!(
                    wal.recovery_report().dropped.is_empty(),
                    "round {round}: spurious drop {:?}",
                    wal.recovery_report().dropped
                );
            }
            _ => {}
        }
        assert_same(&wal, &model, &format!("round {round}"));
    }
    assert!(recycled_seen, "compaction never retired a segment");
    // Live segments plus the pool stay bounded although 60 rounds wrote far more.
    assert!(files(&h, ".seg") <= 8, "{} segments", files(&h, ".seg"));
}

#[test]
fn a_torn_write_into_a_recycled_segment_recovers() {
    for seed in 0..40 {
        let mut h = SimHarness::new(seed, 8192);
        let wal = h.open();
        let model = MemStore::new();
        let mut next = 1u64;
        for round in 0..30u64 {
            let b = entries(next, next + 5, 1, 300);
            wal.store_logs(&b).unwrap();
            model.store_logs(&b).unwrap();
            next += 5;
            if round % 4 == 3 {
                let k = next - 10;
                wal.delete_range(wal.first_index().unwrap(), k).unwrap();
                model.delete_range(model.first_index().unwrap(), k).unwrap();
            }
        }
        // An unacknowledged batch, then a crash that tears it.
        let t = wal
            .write(raftwal_wal::WriteBatch::from_entries(entries(
                next,
                next + 3,
                2,
                900,
            )))
            .unwrap();
        let _ = t;
        std::mem::forget(wal);
        h.vfs.crash(CrashPolicy::Random(seed));
        let wal: Wal = h.open();
        let after = model.clone();
        after.store_logs(&entries(next, next + 3, 2, 900)).unwrap();
        assert!(
            same(&wal, &model) || same(&wal, &after),
            "seed {seed}: wrong state after a torn write into a recycled segment"
        );
        // New appends after recovery, then a clean crash: nothing stale comes back.
        let last = wal.last_index().unwrap();
        wal.store_logs(&entries(last + 1, last + 2, 3, 10)).unwrap();
        std::mem::forget(wal);
        h.vfs.crash(CrashPolicy::DropAll);
        let wal = h.open();
        assert_eq!(wal.last_index().unwrap(), last + 1, "seed {seed}");
    }
}

/// Waits (a little) for a background preparation to create segment `seq`.
fn segment_appears(h: &SimHarness, seq: u64) -> bool {
    let name = segment_file(seq);
    for _ in 0..500 {
        if h.vfs
            .kind(&Path::new("/db/wal").join(&name))
            .unwrap()
            .is_some()
        {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    false
}

/// The next segment is not zero-filled the moment a segment starts (that would compete with
/// its first appends): only once an eighth of it is used, or at once when a retired file can be
/// recycled instead — and then it is that file, with nothing to write.
#[test]
fn the_next_segment_is_prepared_once_an_eighth_is_used_or_a_retired_file_is_free() {
    let mut h = SimHarness::new(5, 64 << 10);
    let wal = h.open();
    let mut next = 1u64;
    // A few small appends: far below an eighth of the segment.
    for _ in 0..4 {
        wal.store_logs(&entries(next, next + 1, 1, 100)).unwrap();
        next += 1;
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !segment_appears_now(&h, 2),
        "prepared while the segment had just started"
    );
    // Past an eighth (8 KiB of 64 KiB): the preparation starts.
    while next < 100 {
        wal.store_logs(&entries(next, next + 1, 1, 100)).unwrap();
        next += 1;
    }
    assert!(
        segment_appears(&h, 2),
        "not prepared past an eighth of the segment"
    );
    // Fill a few segments, then compact: the retired files go to the pool.
    while wal.stats().rotations < 4 {
        wal.store_logs(&entries(next, next + 8, 1, 1000)).unwrap();
        next += 8;
    }
    wal.delete_range(1, next - 10).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let pooled = files(&h, ".free");
    assert!(pooled > 0, "compaction retired nothing");
    // The next rotation starts preparing its successor at once, from the pool (an empty new
    // segment is far below an eighth, so only a retired file makes it due).
    let r0 = wal.stats().rotations;
    while wal.stats().rotations == r0 {
        wal.store_logs(&entries(next, next + 1, 1, 1000)).unwrap();
        next += 1;
    }
    let mut taken = false;
    for _ in 0..500 {
        taken = files(&h, ".free") < pooled;
        if taken {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(taken, "the pool was not used right after the rotation");
}

fn segment_appears_now(h: &SimHarness, seq: u64) -> bool {
    let name = segment_file(seq);
    h.vfs
        .kind(&Path::new("/db/wal").join(name))
        .unwrap()
        .is_some()
}

/// The sealed segments, oldest first, as paths.
fn sealed_paths(wal: &Wal) -> Vec<std::path::PathBuf> {
    wal.segments()
        .into_iter()
        .filter(|s| s.sealed)
        .map(|s| s.path)
        .collect()
}

#[test]
fn only_the_newest_sealed_segments_stay_cached() {
    // Bounded: each sealed segment that falls out of the newest two has its cache dropped,
    // once, in order; every entry still reads back.
    let h = SimHarness::new(31, 8192);
    let wal = Wal::open(Path::new("/db/wal"), h.opts().cached_segments(2)).unwrap();
    let all = entries(1, 121, 1, 300);
    for chunk in all.chunks(4) {
        wal.store_logs(chunk).unwrap();
    }
    let sealed = sealed_paths(&wal);
    assert!(sealed.len() >= 5, "{} sealed", sealed.len());
    assert_eq!(h.vfs.cache_drops(), sealed[..sealed.len() - 2]);
    assert_eq!(wal.get_logs(1, 121, u64::MAX).unwrap(), all);

    // Unbounded (the default): the OS decides, nothing is dropped.
    let mut h = SimHarness::new(32, 8192);
    let wal = h.open();
    for chunk in all.chunks(4) {
        wal.store_logs(chunk).unwrap();
    }
    assert!(sealed_paths(&wal).len() >= 5);
    assert!(h.vfs.cache_drops().is_empty());
}

#[test]
fn segments_dropped_from_the_page_cache_read_back_from_the_disk() {
    let d = tempfile::tempdir().unwrap();
    let opts = || {
        raftwal_wal::WalOptions::default()
            .segment_size(64 << 10)
            .cached_segments(0)
    };
    let wal = Wal::open(d.path(), opts()).unwrap();
    let all = entries(1, 301, 1, 1000);
    for chunk in all.chunks(10) {
        wal.store_logs(chunk).unwrap();
    }
    assert!(wal.stats().rotations >= 3);
    assert_eq!(wal.get_logs(1, 301, u64::MAX).unwrap(), all);
    drop(wal);
    let wal = Wal::open(d.path(), opts()).unwrap();
    assert_eq!(wal.get_logs(1, 301, u64::MAX).unwrap(), all);
    assert_eq!(wal.verify().unwrap(), 300);
}

/// A segment's file name (`wal/FORMAT.md`).
fn segment_file(seq: u64) -> String {
    format!("{seq:016x}.seg")
}
