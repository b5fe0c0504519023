//! A snapshot larger than 4 GiB streams through the store with bounded memory (its own test
//! binary, so the process's peak memory is this test's alone).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{Read, Write};

use raftwal_snapshot::{FileSnapshotStore, SnapshotSink, SnapshotStore};

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

#[test]
fn larger_than_4_gib_with_bounded_memory() {
    let d = tempfile::tempdir().unwrap();
    let s = FileSnapshotStore::open(d.path(), 1).unwrap();
    let total: u64 = (4 << 30) + (3 << 20) + 17; // crosses every 32-bit boundary
    let chunk: Vec<u8> = (0..(1 << 20)).map(|i| (i * 13 % 251) as u8).collect();
    let before = peak_rss_kib();
    let mut sink = s.create(1, 1, b"", 0).unwrap();
    let mut left = total;
    let mut crc = crc32fast::Hasher::new();
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        sink.write_all(&chunk[..n]).unwrap();
        crc.update(&chunk[..n]);
        left -= n as u64;
    }
    let m = sink.commit().unwrap();
    assert_eq!(m.size, total);
    assert_eq!(m.checksum, crc.finalize());
    let (_, mut r) = s.open(&m.id).unwrap();
    let mut buf = vec![0u8; 256 << 10];
    let mut read = 0u64;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        read += n as u64;
    }
    assert_eq!(read, total);
    let grew = peak_rss_kib().saturating_sub(before);
    assert!(grew < 64 << 10, "peak memory grew by {grew} KiB");
}
