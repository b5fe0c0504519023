//! Criterion benchmark of a 3-node Raft cluster in one process (on-disk WALs, TCP on loopback,
//! 256-byte commands) with 1 and 64 closed-loop clients, fsync batching on and off, and in the
//! same run the single-node WAL's group commit with 64 appenders as the reference the cluster
//! is held to (≥ 50% of it with batching; batching ≥ 10× the unbatched cluster).
//!
//! `cargo bench --bench cluster` runs it; under `cargo test` each routine runs once.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::Mutex;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use raftwal_cli::bench::{closed_loop, cluster};
use raftwal_wal::{LogEntry, Wal, WalOptions, WriteBatch};

const SIZE: usize = 256;

fn bench(c: &mut Criterion) {
    let full = std::env::args().any(|a| a == "--bench");
    let mut g = c.benchmark_group("cluster");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(if full { 10 } else { 1 }))
        .throughput(Throughput::Elements(1));

    // The reference: one WAL, 64 appenders sharing fsyncs (a lock around `write` only).
    let dir = tempfile::tempdir().unwrap();
    let wal = Wal::open(dir.path().join("wal"), WalOptions::default()).unwrap();
    let next = Mutex::new(1u64);
    let append = || {
        let t = {
            let mut n = next.lock().unwrap();
            let e = LogEntry::new(*n, 1, vec![7; SIZE]);
            *n += 1;
            wal.write(WriteBatch::from_entries(vec![e])).unwrap()
        };
        wal.wait_durable(t).unwrap();
    };
    g.bench_function(BenchmarkId::new("one_wal_appenders", 64), |b| {
        b.iter_custom(|iters| closed_loop(64, iters, &append))
    });

    for batch in [true, false] {
        let name = if batch { "batching_on" } else { "batching_off" };
        let root = tempfile::tempdir().unwrap();
        let cl = cluster::start(root.path(), batch, false).unwrap();
        let leader = cluster::leader(&cl).unwrap();
        let apply = || {
            leader
                .apply(vec![7; SIZE], Duration::from_secs(30))
                .unwrap();
        };
        for clients in [1usize, 64] {
            g.bench_function(BenchmarkId::new(name, clients), |b| {
                b.iter_custom(|iters| closed_loop(clients, iters, &apply))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
