//! The tools where they used to disagree with their own documentation: read-only tools change
//! nothing (no lock file, no cleanup of a snapshot store); `dump` refuses a range it cannot
//! print; `verify --all` checks superseded frames too; `bench` refuses sizes it cannot run and
//! leaves nothing behind; `repair` is a dry run by default, keeps what it drops, refuses a WAL
//! a node holds; `--live` reads a WAL while it is being appended to.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::SystemTime;

use raftwal_snapshot::{FileSnapshotStore, SnapshotSink, SnapshotStore};
use raftwal_wal::{LogEntry, LogStore, StableStore, Wal, WalOptions};

mod common;
use common::{raftwal, text};

/// Every file under `dir`: size and modification time.
fn tree(dir: &Path) -> BTreeMap<PathBuf, (u64, SystemTime)> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            if m.is_dir() {
                todo.push(e.path());
            }
            out.insert(e.path(), (m.len(), m.modified().unwrap()));
        }
    }
    out
}

fn small() -> WalOptions {
    WalOptions::default().segment_size(16 << 10)
}

#[test]
fn read_only_tools_change_nothing() {
    let d = tempfile::tempdir().unwrap();
    let (wal, snaps) = (d.path().join("wal"), d.path().join("snaps"));
    {
        let w = Wal::open(&wal, small()).unwrap();
        for i in 1..=200u64 {
            w.store_logs(&[LogEntry::new(i, 1, vec![7; 100])]).unwrap();
        }
        let s = FileSnapshotStore::open(&snaps, 2).unwrap();
        let mut sink = s.create(100, 1, b"conf", 1).unwrap();
        std::io::Write::write_all(&mut sink, b"state").unwrap();
        sink.commit().unwrap();
    }
    // A copied WAL without its lock file, and a snapshot store with a crash's leftover.
    std::fs::remove_file(wal.join("LOCK")).unwrap();
    std::fs::create_dir(snaps.join("leftover.tmp")).unwrap();
    std::fs::write(snaps.join("leftover.tmp/data"), b"partial").unwrap();
    let before = (tree(&wal), tree(&snaps));
    let (w, s) = (wal.to_str().unwrap(), snaps.to_str().unwrap());
    for args in [
        vec!["inspect", w, "--snapshots", s],
        vec!["verify", w, "--snapshots", s, "--all"],
        vec!["dump", w, "--from", "10", "--to", "20"],
    ] {
        let o = raftwal(&args);
        assert!(o.status.success(), "{args:?}: {}", text(&o));
    }
    assert_eq!(
        (tree(&wal), tree(&snaps)),
        before,
        "a read-only tool changed something"
    );
}

#[test]
fn dump_refuses_ranges_it_cannot_print() {
    let d = tempfile::tempdir().unwrap();
    let wal = d.path().join("wal");
    {
        let w = Wal::open(&wal, small()).unwrap();
        for i in 1..=10u64 {
            w.store_logs(&[LogEntry::new(i, 1, b"x".to_vec())]).unwrap();
        }
    }
    let w = wal.to_str().unwrap();
    for (range, says) in [
        (["--from", "5", "--to", "2"], "empty range"),
        (["--from", "5", "--to", "20"], "[1, 10]"),
        (["--from", "11", "--to", "12"], "[1, 10]"),
    ] {
        let mut args = vec!["dump", w];
        args.extend(range);
        let o = raftwal(&args);
        assert!(!o.status.success(), "{args:?} succeeded: {}", text(&o));
        assert!(text(&o).contains(says), "{args:?}: {}", text(&o));
    }
    let o = raftwal(&["dump", w, "--from", "3", "--to", "4"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn verify_all_checks_superseded_frames() {
    let d = tempfile::tempdir().unwrap();
    let wal = d.path().join("wal");
    {
        let w = Wal::open(&wal, small()).unwrap();
        w.set(b"marker", b"SUPERSEDED-VALUE").unwrap();
        w.set(b"marker", b"current").unwrap();
        for i in 1..=300u64 {
            w.store_logs(&[LogEntry::new(i, 1, vec![1; 100])]).unwrap();
        }
    }
    // The first segment is sealed; damage the superseded value's frame in it.
    let seg = wal.join("0000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes
        .windows(16)
        .position(|w| w == b"SUPERSEDED-VALUE")
        .expect("the superseded frame");
    bytes[at] ^= 0x20;
    std::fs::write(&seg, &bytes).unwrap();
    let w = wal.to_str().unwrap();
    let o = raftwal(&["verify", w]);
    assert!(o.status.success(), "live entries are intact: {}", text(&o));
    let o = raftwal(&["verify", w, "--all"]);
    assert!(!o.status.success(), "verify --all missed it: {}", text(&o));
    assert!(text(&o).contains("0000000000000001.seg"), "{}", text(&o));
}

#[test]
fn bench_refuses_sizes_it_cannot_run_and_leaves_nothing() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    for (flag, value) in [
        ("--entry-size", "100000000000"),
        ("--entry-size", "0"),
        ("--segment-size", "100"),
        ("--threads", "0"),
    ] {
        let o = raftwal(&[
            "bench",
            "--quick",
            "--no-progress",
            "--dir",
            dir,
            flag,
            value,
        ]);
        assert!(!o.status.success(), "{flag} {value}: {}", text(&o));
        assert!(text(&o).contains(flag), "{flag} {value}: {}", text(&o));
    }
    assert!(
        std::fs::read_dir(d.path()).unwrap().next().is_none(),
        "bench left files behind"
    );
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

/// The WAL directory as a crash would leave it: entries 1..=10, each its own durable batch,
/// copied while the WAL is still open (so without the clean-close checkpoint).
fn crashed_with_ten(d: &Path) -> PathBuf {
    let live = d.join("live");
    let w = Wal::open(&live, small()).unwrap();
    for i in 1..=10u64 {
        w.store_logs(&[LogEntry::new(i, 1, format!("entry-{i:04}").into_bytes())])
            .unwrap();
    }
    let crashed = d.join("crashed");
    copy_dir(&live, &crashed);
    drop(w);
    crashed
}

#[test]
fn repair_is_a_dry_run_keeps_what_it_drops_and_refuses_a_held_wal() {
    let d = tempfile::tempdir().unwrap();
    let wal = crashed_with_ten(d.path());
    // Damage acknowledged data: entry 5's payload.
    let seg = wal.join("0000000000000001.seg");
    let mut bytes = std::fs::read(&seg).unwrap();
    let at = bytes.windows(10).position(|w| w == b"entry-0005").unwrap();
    bytes[at] ^= 1;
    std::fs::write(&seg, &bytes).unwrap();
    assert!(
        Wal::open(&wal, small()).is_err(),
        "a strict open refuses it"
    );
    let w = wal.to_str().unwrap();
    let o = raftwal(&["repair", w]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("dry run") && t.contains("ACKNOWLEDGED"), "{t}");
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "a dry run changed the segment"
    );
    // While a node holds it: refused, nothing changed.
    let lock = std::fs::File::options()
        .read(true)
        .write(true)
        .open(wal.join("LOCK"))
        .unwrap();
    lock.try_lock().unwrap();
    let o = raftwal(&["repair", w, "--apply"]);
    assert!(!o.status.success(), "a held WAL was repaired: {}", text(&o));
    assert!(text(&o).to_lowercase().contains("lock"), "{}", text(&o));
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        bytes,
        "a refused repair changed the segment"
    );
    drop(lock);
    // Applied: the bytes are kept next to the directory, the log ends before the damage.
    let o = raftwal(&["repair", w, "--apply"]);
    assert!(o.status.success(), "{}", text(&o));
    let kept: Vec<PathBuf> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("crashed.repair-"))
        .collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    let saved: Vec<u8> = std::fs::read_dir(&kept[0])
        .unwrap()
        .flat_map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(
        saved.windows(10).any(|w| w == b"entry-0010"),
        "the dropped entries were not kept"
    );
    let w = Wal::open(&wal, small()).unwrap();
    assert_eq!(w.last_index().unwrap(), 4);
    drop(w);
    let o = raftwal(&["repair", wal.to_str().unwrap()]);
    assert!(text(&o).contains("nothing to repair"), "{}", text(&o));
}

#[test]
fn live_tools_read_a_wal_being_appended() {
    let d = tempfile::tempdir().unwrap();
    let wal = d.path().join("wal");
    let w = Wal::open(&wal, small()).unwrap();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut i = 1u64;
            while !stop.load(Ordering::SeqCst) {
                w.store_logs(&[LogEntry::new(i, 1, vec![3; 200])]).unwrap();
                i += 1;
            }
        });
        while w.last_index().unwrap() < 200 {
            std::thread::yield_now();
        }
        let p = wal.to_str().unwrap();
        let o = raftwal(&["dump", p]);
        assert!(!o.status.success(), "a held WAL was read without --live");
        assert!(text(&o).to_lowercase().contains("lock"), "{}", text(&o));
        for args in [
            vec!["dump", p, "--live", "--from", "1", "--to", "100"],
            vec!["inspect", p, "--live"],
            vec!["verify", p, "--live"],
        ] {
            let o = raftwal(&args);
            assert!(o.status.success(), "{args:?}: {}", text(&o));
        }
        stop.store(true, Ordering::SeqCst);
    });
    w.set(b"after", b"still writable").unwrap();
}
