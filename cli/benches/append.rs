//! Criterion benchmarks of the WAL, each paired with the raw disk measured in the same run
//! (STYLE.md rule 8): durable appends of 1/16/256 entries, 1–8 concurrent appenders, the
//! pipelined writer, 1 MiB batches, reads from sealed and active segments, and open time.
//!
//! `cargo bench --bench append` runs it; under `cargo test` every routine runs once on small
//! sizes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::hint::black_box;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftwal_cli::bench::closed_loop;
use raftwal_cli::bench::raw::{files_in, read_files, RawFile};
use raftwal_wal::{LogEntry, LogStore, SyncMode, Wal, WalOptions, WriteBatch};

fn full() -> bool {
    std::env::args().any(|a| a == "--bench")
}

fn wal(dir: &Path) -> Wal {
    Wal::open(dir, WalOptions::default()).unwrap()
}

fn batch(next: &mut u64, n: u64, size: usize) -> Vec<LogEntry> {
    let v = (*next..*next + n)
        .map(|i| LogEntry::new(i, 1, vec![i as u8; size]))
        .collect();
    *next += n;
    v
}

fn appends(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    g.measurement_time(Duration::from_secs(if full() { 5 } else { 1 }));
    for (n, size) in [(1u64, 256usize), (16, 256), (256, 256), (1, 1 << 20)] {
        let bytes = n as usize * size;
        let id = format!("entry={size}/batch={n}");
        g.throughput(Throughput::Bytes(bytes as u64));
        let dir = tempfile::tempdir().unwrap();
        let mut raw = RawFile::create(&dir.path().join("raw"), 64 << 20).unwrap();
        let buf = vec![7u8; bytes + 64];
        g.bench_function(BenchmarkId::new("raw_fdatasync", &id), |b| {
            b.iter(|| raw.write_sync(&buf).unwrap())
        });
        let w = wal(&dir.path().join("wal"));
        let mut next = 1;
        g.bench_function(BenchmarkId::new("wal", &id), |b| {
            b.iter(|| w.store_logs(&batch(&mut next, n, size)).unwrap())
        });
    }
    g.finish();
}

fn concurrent(c: &mut Criterion) {
    let mut g = c.benchmark_group("concurrent");
    g.measurement_time(Duration::from_secs(if full() { 5 } else { 1 }));
    g.throughput(Throughput::Elements(1));
    for threads in [1usize, 2, 4, 8] {
        let dir = tempfile::tempdir().unwrap();
        let w = wal(dir.path());
        let next = Mutex::new(1u64);
        let append = || {
            // The shared lock covers only `write`; the wait is outside it.
            let t = {
                let mut n = next.lock().unwrap();
                w.write(WriteBatch::from_entries(batch(&mut n, 1, 256)))
                    .unwrap()
            };
            w.wait_durable(t).unwrap();
        };
        g.bench_function(BenchmarkId::new("appenders", threads), |b| {
            b.iter_custom(|iters| closed_loop(threads, iters, &append))
        });
    }
    // The pipelined single writer: `write` without waiting; a second thread waits.
    let dir = tempfile::tempdir().unwrap();
    let w = Arc::new(wal(dir.path()));
    let mut next = 1;
    g.bench_function("pipelined", |b| {
        b.iter_custom(|iters| {
            let (tx, rx) = std::sync::mpsc::sync_channel(1024);
            let waiter = {
                let w = w.clone();
                std::thread::spawn(move || {
                    // Wait for the newest ticket available: one wait covers all before it.
                    while let Ok(mut t) = rx.recv() {
                        while let Ok(newer) = rx.try_recv() {
                            t = newer;
                        }
                        w.wait_durable(t).unwrap();
                    }
                })
            };
            let start = Instant::now();
            for _ in 0..iters {
                let t = w
                    .write(WriteBatch::from_entries(batch(&mut next, 1, 256)))
                    .unwrap();
                tx.send(t).unwrap();
            }
            drop(tx);
            waiter.join().unwrap();
            start.elapsed()
        })
    });
    g.finish();
}

fn reads(c: &mut Criterion) {
    let mut g = c.benchmark_group("get_log");
    g.throughput(Throughput::Elements(1));
    let dir = tempfile::tempdir().unwrap();
    let n = if full() { 400_000u64 } else { 20_000 };
    let w = Wal::open(
        dir.path(),
        WalOptions::default()
            .segment_size(if full() { 16 << 20 } else { 1 << 20 })
            .sync(SyncMode::None),
    )
    .unwrap();
    let mut next = 1;
    while next <= n {
        w.store_logs(&batch(&mut next, 256, 256)).unwrap();
    }
    // The first index of the active segment: everything below is sealed.
    let segs = w.segments();
    let active = segs[segs.len() - 2].last.unwrap() + 1;
    let mut rng = fastrand::Rng::with_seed(0x1234_5678);
    let mut rand = move |lo: u64, hi: u64| rng.u64(lo..hi);
    let mut seq = 1;
    g.bench_function("sealed/random", |b| {
        b.iter(|| black_box(w.get_log(rand(1, active)).unwrap()))
    });
    g.bench_function("sealed/sequential", |b| {
        b.iter(|| {
            seq = if seq + 1 >= active { 1 } else { seq + 1 };
            black_box(w.get_log(seq).unwrap())
        })
    });
    let last = w.last_index().unwrap();
    g.bench_function("active/random", |b| {
        b.iter(|| black_box(w.get_log(rand(active, last + 1)).unwrap()))
    });
    g.finish();
}

fn open(c: &mut Criterion) {
    let mut g = c.benchmark_group("open");
    g.sample_size(10);
    let dir = tempfile::tempdir().unwrap();
    let bytes: u64 = if full() { 1 << 30 } else { 8 << 20 };
    {
        let w = Wal::open(dir.path(), WalOptions::default().sync(SyncMode::None)).unwrap();
        let mut next = 1;
        let mut written = 0;
        while written < bytes {
            w.store_logs(&batch(&mut next, 256, 4096)).unwrap();
            written += 256 * 4096;
        }
    }
    let label = format!("{}MiB", bytes >> 20);
    g.bench_function(BenchmarkId::new("read_sequentially", &label), |b| {
        b.iter(|| read_files(&files_in(dir.path()).unwrap()).unwrap())
    });
    g.bench_function(BenchmarkId::new("wal_open", &label), |b| {
        b.iter(|| black_box(Wal::open(dir.path(), WalOptions::default()).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, appends, concurrent, reads, open);
criterion_main!(benches);
