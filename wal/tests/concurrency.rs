//! Several threads appending and reading at once: every acknowledged entry is readable and
//! correct, and readers never see a torn or foreign entry.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use common::*;
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
                let mut rng = Rng(r);
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
