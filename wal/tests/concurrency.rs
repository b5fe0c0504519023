//! Several threads appending and reading at once: every acknowledged entry is readable and
//! correct, and readers never see a torn or foreign entry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use raftwal_wal::vfs::{CrashPolicy, SimFaults};
use raftwal_wal::{LogStore, StableStore, Wal, WalOptions, WriteBatch};

#[test]
fn concurrent_appenders_and_readers() {
    let d = tempfile::tempdir().unwrap();
    let opts = || WalOptions::default().segment_size(64 << 10);
    let wal = Arc::new(Wal::open(d.path(), opts()).unwrap());
    let next = Arc::new(Mutex::new(1u64));
    let durable = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let per_thread = 150;
    let writers: Vec<_> = (0..4)
        .map(|t| {
            let (wal, next, durable) = (wal.clone(), next.clone(), durable.clone());
            std::thread::spawn(move || {
                for _ in 0..per_thread {
                    // The shared lock is held only around `write`; durability is awaited
                    // outside it, so fsyncs are shared.
                    let (ticket, idx) = {
                        let mut n = next.lock().unwrap();
                        let idx = *n;
                        let mut b = WriteBatch::new();
                        b.append(entry(idx, 1, 100 + t * 10)).set_u64(b"last", idx);
                        let ticket = wal.write(b).unwrap();
                        *n += 1;
                        (ticket, idx)
                    };
                    wal.wait_durable(ticket).unwrap();
                    durable.fetch_max(idx, Ordering::SeqCst);
                }
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (wal, durable, stop) = (wal.clone(), durable.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut rng = Rng::new(r);
                let mut reads = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let hi = durable.load(Ordering::SeqCst);
                    if hi == 0 {
                        std::thread::yield_now();
                        continue;
                    }
                    let i = 1 + rng.below(hi);
                    let e = wal.get_log(i).unwrap();
                    assert_eq!(e.index, i);
                    assert_eq!(e.data, entry(i, 1, e.data.len()).data, "torn read at {i}");
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    for r in readers {
        assert!(r.join().unwrap() > 0);
    }
    let n = 4 * per_thread as u64;
    assert_eq!(wal.last_index().unwrap(), n);
    let stats = wal.stats();
    assert_eq!(stats.writes, n);
    assert!(stats.rotations > 0, "exercise rotation under concurrency");
    drop(wal);
    let wal = Wal::open(d.path(), opts()).unwrap();
    assert_eq!(wal.verify().unwrap(), n);
    assert_eq!(wal.get_u64(b"last").unwrap(), Some(n));
}

/// What [`appenders_on_a_slow_disk`] saw.
struct Run {
    stats: raftwal_wal::WalStats,
    /// Indexes whose `wait_durable` returned `Ok`.
    acknowledged: Vec<u64>,
    /// The errors the appenders stopped on.
    errors: Vec<raftwal_wal::Error>,
    harness: SimHarness,
    wal: Wal,
}

/// Four threads append single entries (a shared lock around `write` only, durability awaited
/// outside it) to a simulated disk whose fsyncs take `latency`, until each has made `per_thread`
/// appends or met an error.
fn appenders_on_a_slow_disk(
    latency: Duration,
    spin: Duration,
    fail_sync_at: Option<u64>,
    per_thread: usize,
) -> Run {
    let harness = SimHarness::new(11, 1 << 20);
    let wal = Wal::open(
        std::path::Path::new("/db/wal"),
        harness.opts().spin_wait(spin),
    )
    .unwrap();
    harness.vfs.set_faults(SimFaults {
        sync_latency: latency,
        fail_sync_at,
        ..Default::default()
    });
    let next = Mutex::new(1u64);
    let acknowledged = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for _ in 0..per_thread {
                    let written = {
                        let mut n = next.lock().unwrap();
                        let idx = *n;
                        let r = wal.write(WriteBatch::from_entries(vec![entry(idx, 1, 64)]));
                        *n += u64::from(r.is_ok());
                        r.map(|t| (t, idx))
                    };
                    match written.and_then(|(t, idx)| wal.wait_durable(t).map(|()| idx)) {
                        Ok(idx) => acknowledged.lock().unwrap().push(idx),
                        Err(e) => {
                            errors.lock().unwrap().push(e);
                            return;
                        }
                    }
                }
            });
        }
    });
    Run {
        stats: wal.stats(),
        acknowledged: acknowledged.into_inner().unwrap(),
        errors: errors.into_inner().unwrap(),
        harness,
        wal,
    }
}

/// Every acknowledged entry survives a power cut that drops everything unsynced.
fn assert_acknowledged_survive(run: Run) {
    let Run {
        mut harness,
        wal,
        acknowledged,
        ..
    } = run;
    let wal = harness.crash_reopen(wal, CrashPolicy::DropAll);
    for i in acknowledged {
        assert_eq!(wal.get_log(i).unwrap(), entry(i, 1, 64), "acknowledged {i}");
    }
}

#[test]
fn waiters_spin_for_fast_fsyncs_and_sleep_for_slow_ones() {
    let fast = Duration::from_micros(200);
    // Spinning on: waiters that arrive during an fsync watch it end instead of sleeping, and
    // still share it (group commit).
    let run = appenders_on_a_slow_disk(fast, Duration::from_millis(50), None, 50);
    assert!(run.errors.is_empty(), "{:?}", run.errors);
    assert_eq!(run.acknowledged.len(), 200);
    assert!(run.stats.spun_waits > 0, "{:?}", run.stats);
    assert!(run.stats.syncs < 200, "fsyncs shared: {:?}", run.stats);
    assert_acknowledged_survive(run);
    // Spinning off: every wait for an fsync in flight sleeps.
    let run = appenders_on_a_slow_disk(fast, Duration::ZERO, None, 50);
    assert_eq!(run.stats.spun_waits, 0, "{:?}", run.stats);
    assert!(run.stats.slept_waits > 0, "{:?}", run.stats);
    assert_acknowledged_survive(run);
    // fsyncs slower than the spin limit: nobody spins (a wake-up costs little next to them).
    let run = appenders_on_a_slow_disk(
        Duration::from_millis(2),
        Duration::from_micros(500),
        None,
        10,
    );
    assert_eq!(run.stats.spun_waits, 0, "{:?}", run.stats);
    assert!(run.stats.slept_waits > 0, "{:?}", run.stats);
    assert_acknowledged_survive(run);
}

#[test]
fn a_failing_fsync_under_spinning_waiters_fails_every_waiter_and_is_never_retried() {
    for fail_at in [1, 2, 5, 9] {
        let run = appenders_on_a_slow_disk(
            Duration::from_micros(300),
            Duration::from_millis(50),
            Some(fail_at),
            50,
        );
        // Every appender stopped on an error, none hung; exactly one saw the fsync's own
        // error, the rest `Poisoned`. A retried fsync would succeed (only one is failed) and
        // acknowledge writes the failed one may have lost.
        assert_eq!(run.errors.len(), 4, "fail at {fail_at}: {:?}", run.errors);
        let io = run
            .errors
            .iter()
            .filter(|e| matches!(e, raftwal_wal::Error::Io { .. }))
            .count();
        let poisoned = run
            .errors
            .iter()
            .filter(|e| matches!(e, raftwal_wal::Error::Poisoned))
            .count();
        assert_eq!(
            (io, poisoned),
            (1, 3),
            "fail at {fail_at}: {:?}",
            run.errors
        );
        assert_eq!(run.stats.syncs, fail_at - 1, "fail at {fail_at}");
        assert_acknowledged_survive(run);
    }
}
