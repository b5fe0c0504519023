//! Command-line tests: every subcommand, on generated WALs, with clear errors on bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::path::Path;

use raftwal_snapshot::{FileSnapshotStore, SnapshotSink, SnapshotStore};
use raftwal_wal::{LogEntry, LogStore, StableStore, Wal, WalOptions};

mod common;
use common::{raftwal, text};

/// A WAL with sealed and active segments, stable keys, and a snapshot directory.
fn generate(dir: &Path) {
    let wal = Wal::open(
        dir.join("wal"),
        WalOptions::default().segment_size(16 << 10),
    )
    .unwrap();
    for i in 1..=300u64 {
        wal.store_logs(&[LogEntry::new(
            i,
            1 + i / 100,
            format!("cmd {i}").into_bytes(),
        )])
        .unwrap();
    }
    wal.set_u64(b"term", 3).unwrap();
    wal.set(b"vote", b"node-2").unwrap();
    let snaps = FileSnapshotStore::open(dir.join("snaps"), 2).unwrap();
    let mut s = snaps.create(100, 1, b"voters=1,2,3", 1).unwrap();
    std::io::Write::write_all(&mut s, b"snapshot data").unwrap();
    s.commit().unwrap();
}

#[test]
fn inspect_verify_dump_on_a_generated_wal() {
    let d = tempfile::tempdir().unwrap();
    generate(d.path());
    let wal = d.path().join("wal");
    let w = wal.to_str().unwrap();
    let snaps = d.path().join("snaps");
    let s = snaps.to_str().unwrap();

    let o = raftwal(&["inspect", w, "--snapshots", s]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("first 1, last 300 (300 live)"), "{t}");
    assert!(t.contains("sealed") && t.contains("active"), "{t}");
    assert!(
        t.contains("manifest: generation") && t.contains("clean-close checkpoint"),
        "{t}"
    );
    assert!(t.contains("\"term\"") && t.contains("(u64 3)"), "{t}");
    assert!(t.contains("\"node-2\""), "{t}");
    assert!(
        t.contains("snapshots in") && t.contains("index 100 term 1"),
        "{t}"
    );

    let o = raftwal(&["verify", w, "--snapshots", s]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("checked 300 entries"), "{}", text(&o));
    assert!(text(&o).contains("OK"));

    let o = raftwal(&["dump", w, "--from", "10", "--to", "12"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert_eq!(t.lines().count(), 3, "{t}");
    assert!(t.contains("\"cmd 11\""), "{t}");

    let o = raftwal(&["dump", w, "--from", "299", "--format", "json"]);
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[1]["index"], 300);
    assert_eq!(lines[1]["term"], 4);
    assert_eq!(lines[1]["kind"], "Normal");
    assert_eq!(lines[1]["size"], 7);

    // The tools never modify the WAL.
    let before: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    raftwal(&["verify", w]);
    raftwal(&["inspect", w]);
    let after: Vec<_> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (e.file_name(), std::fs::read(e.path()).unwrap())
        })
        .collect();
    assert_eq!(before.len(), after.len());
    for (b, a) in before.iter().zip(&after) {
        assert!(b == a, "{:?} changed", b.0);
    }
}

#[test]
fn verify_names_the_damaged_file() {
    let d = tempfile::tempdir().unwrap();
    generate(d.path());
    let wal = d.path().join("wal");
    let seg = wal.join("0000000000000001.seg");
    let mut b = std::fs::read(&seg).unwrap();
    b[64 + 32 + 32 + 3] ^= 0x10; // inside the first entry frame of a sealed segment
    std::fs::write(&seg, &b).unwrap();
    let o = raftwal(&["verify", wal.to_str().unwrap(), "--all"]);
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("0000000000000001.seg"), "{t}");
    assert!(t.contains("offset"), "{t}");
    assert!(t.contains("entries 1..=1"), "{t}");

    // A damaged snapshot is reported too.
    let snaps = d.path().join("snaps");
    let id = std::fs::read_dir(&snaps)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let data = id.join("data");
    let mut b = std::fs::read(&data).unwrap();
    b[0] ^= 1;
    std::fs::write(&data, &b).unwrap();
    let o = raftwal(&[
        "verify",
        wal.to_str().unwrap(),
        "--snapshots",
        snaps.to_str().unwrap(),
        "--all",
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("checksum"), "{}", text(&o));
}

#[test]
fn clear_errors_on_bad_paths_and_arguments() {
    let d = tempfile::tempdir().unwrap();
    let missing = d.path().join("missing");
    for cmd in ["inspect", "verify", "dump"] {
        let o = raftwal(&[cmd, missing.to_str().unwrap()]);
        assert!(!o.status.success(), "{cmd}");
        assert!(
            text(&o).contains("not a raftwal WAL directory"),
            "{cmd}: {}",
            text(&o)
        );
        assert!(!text(&o).contains("panicked"));
    }
    let file = d.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let o = raftwal(&["inspect", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("is a file"), "{}", text(&o));
    std::fs::write(d.path().join("notes.txt"), b"x").unwrap();
    let o = raftwal(&["verify", d.path().to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("notes.txt"), "{}", text(&o));

    // A WAL held by a running node.
    let held = d.path().join("held");
    let wal = Wal::open(&held, WalOptions::default().segment_size(1 << 16)).unwrap();
    wal.store_logs(&[LogEntry::new(1, 1, vec![1])]).unwrap();
    let o = raftwal(&["inspect", held.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("locked"), "{}", text(&o));
    drop(wal);
    let o = raftwal(&["inspect", held.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));

    // Bad arguments.
    for args in [
        &["dump", "x", "--from", "abc"][..],
        &["bench", "--sync", "sometimes"],
        &["frobnicate"],
    ] {
        let o = raftwal(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", text(&o));
    }
    let o = raftwal(&[
        "bench",
        "--threads",
        "0",
        "--dir",
        d.path().to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("--threads"), "{}", text(&o));
    let o = raftwal(&["bench", "--dir", file.to_str().unwrap()]);
    assert!(!o.status.success());
    assert!(text(&o).contains("not a directory"), "{}", text(&o));
}

#[test]
fn quick_bench_reports_every_figure_as_json() {
    let d = tempfile::tempdir().unwrap();
    let json = d.path().join("bench.json");
    let svg = d.path().join("bench.svg");
    let o = raftwal(&[
        "bench",
        "--quick",
        "--phase-secs",
        "0.05",
        "--threads",
        "1,2",
        "--dir",
        d.path().to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
        "--cluster",
        "--no-progress",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("append batch=1"));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    for k in [
        "kernel",
        "cpu",
        "cpus",
        "filesystem",
        "mount",
        "device_model",
    ] {
        assert!(v["machine"].get(k).is_some(), "machine.{k}");
    }
    assert!(v["machine"]["cpus"].as_u64().unwrap() >= 1);
    // The WAL's own figures, from the recorder the bench installs.
    let m = &v["wal_metrics"];
    assert!(m["fsync_seconds"]["count"].as_u64().unwrap() > 0, "{m}");
    assert!(m["group_writes"]["max"].as_f64().unwrap() >= 1.0, "{m}");
    assert!(text(&o).contains("writes per group fsync"));
    let rows = v["rows"].as_array().unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r["name"].as_str().unwrap()).collect();
    for want in [
        "raw fdatasync 320B",
        "raw write+fdatasync 1MiB",
        "append batch=1",
        "append batch=16",
        "append batch=256",
        "concurrent appenders=1",
        "concurrent appenders=2",
        "pipelined writer",
        "append 1MiB batches",
        "append 1MiB batches (sparse segments)",
        "append 1MiB batches + compaction",
        "get_log random (sealed)",
        "get_log sequential (sealed)",
        "get_log random (active)",
        "snapshot write+commit",
        "snapshot read+verify (device)",
        "3-node cluster, 1 client(s), batching off",
        "3-node cluster, 64 client(s), batching on",
        "snapshot read+verify (page cache)",
    ] {
        assert!(names.contains(&want), "missing row {want}: {names:?}");
    }
    assert!(names.iter().any(|n| n.starts_with("open ")));
    for r in rows {
        let name = r["name"].as_str().unwrap();
        for k in [
            "ops",
            "entries",
            "bytes",
            "seconds",
            "entries_per_sec",
            "mb_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
        ] {
            assert!(r[k].is_number(), "{name}: {k}");
        }
        assert!(r["seconds"].as_f64().unwrap() > 0.0, "{name}");
        assert!(r["ops"].as_u64().unwrap() >= 1, "{name}");
        let (p50, p99, max) = (
            r["p50_us"].as_f64().unwrap(),
            r["p99_us"].as_f64().unwrap(),
            r["max_us"].as_f64().unwrap(),
        );
        assert!(p50 <= p99 && p99 <= max, "{name}: percentiles out of order");
        if let Some(ratio) = r["ratio"].as_f64() {
            assert!(ratio > 0.0 && ratio.is_finite(), "{name}: ratio {ratio}");
        }
        if name.starts_with("append batch") || name.starts_with("concurrent appenders") {
            assert!(r["entries_per_fsync"].as_f64().unwrap() >= 1.0, "{name}");
            assert!(r["fsyncs"].as_u64().unwrap() >= 1, "{name}");
        }
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.contains("<svg") && plot.contains("durable append latency"),
        "plot"
    );
    // The temporary directory is cleaned up.
    let mut left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![std::ffi::OsString::from("bench.json"), "bench.svg".into()]
    );
}

/// `inspect` decodes the Raft glue's stable keys: hard state, configuration, snapshot mark.
#[test]
fn inspect_decodes_the_raft_state() {
    use raftwal_glue::raft::eraftpb::ConfState;
    use raftwal_glue::RaftStorage;
    use raftwal_snapshot::MemSnapshotStore;
    let d = tempfile::tempdir().unwrap();
    {
        let wal = Wal::open(d.path(), WalOptions::default().segment_size(1 << 20)).unwrap();
        let s = RaftStorage::new(wal, MemSnapshotStore::new(1).unwrap());
        s.initialize(&ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        })
        .unwrap();
        s.compact(2, 1, 1).unwrap();
    }
    let o = raftwal(&["inspect", d.path().to_str().unwrap()]);
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("(voters [1, 2, 3], learners [])"), "{out}");
    assert!(out.contains("(term 1, vote 0, commit 3)"), "{out}");
    assert!(out.contains("(snapshot at index 2, term 1)"), "{out}");
}
