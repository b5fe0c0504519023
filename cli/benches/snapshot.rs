//! Criterion benchmark of the snapshot store: write + commit and read + verify a snapshot
//! (256 MiB under `cargo bench`, 8 MiB under `cargo test`), each paired with the raw disk in the
//! same run: sequential write + fsync, and sequential read of a file evicted from the page
//! cache (the device), plus the page-cache read for reference.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    missing_docs
)]

use std::io::{Read, Write};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raftwal_cli::bench::raw::{evict, read_files};
use raftwal_snapshot::{FileSnapshotStore, SnapshotSink, SnapshotStore};

fn size() -> u64 {
    if std::env::args().any(|a| a == "--bench") {
        256 << 20
    } else {
        8 << 20
    }
}

fn snapshot(c: &mut Criterion) {
    let n = size();
    let chunk = vec![0xa5u8; 1 << 20];
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("snapshot");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .throughput(Throughput::Bytes(n));
    let label = format!("{}MiB", n >> 20);

    let raw = dir.path().join("raw");
    g.bench_function(format!("raw_write_fsync/{label}"), |b| {
        b.iter(|| {
            let mut f = std::fs::File::create(&raw).unwrap();
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                f.write_all(&chunk[..k]).unwrap();
                left -= k as u64;
            }
            f.sync_all().unwrap();
        })
    });
    g.bench_function(format!("raw_read_device/{label}"), |b| {
        b.iter(|| {
            evict(&raw).unwrap();
            read_files(std::slice::from_ref(&raw)).unwrap()
        })
    });

    let store = FileSnapshotStore::open(dir.path().join("snaps"), 1).unwrap();
    let mut last = None;
    g.bench_function(format!("write_commit/{label}"), |b| {
        b.iter(|| {
            let mut s = store.create(1, 1, b"", 0).unwrap();
            let mut left = n;
            while left > 0 {
                let k = left.min(chunk.len() as u64) as usize;
                s.write_all(&chunk[..k]).unwrap();
                left -= k as u64;
            }
            last = Some(s.commit().unwrap());
        })
    });
    let id = last.unwrap().id;
    let data = store.dir().join(&id).join("data");
    let mut buf = vec![0u8; 1 << 20];
    g.bench_function(format!("read_verify_device/{label}"), |b| {
        b.iter(|| {
            evict(&data).unwrap();
            let (_, mut r) = store.open(&id).unwrap();
            while r.read(&mut buf).unwrap() > 0 {}
        })
    });
    g.bench_function(format!("read_verify_page_cache/{label}"), |b| {
        b.iter(|| {
            let (_, mut r) = store.open(&id).unwrap();
            while r.read(&mut buf).unwrap() > 0 {}
        })
    });
    g.finish();
}

criterion_group!(benches, snapshot);
criterion_main!(benches);
