//! Observability: a workload over every part (the WAL on disk and simulated, the snapshot store,
//! a three-node cluster with a lagging follower, lease and read-index reads, refused proposals,
//! a forged message, a partitioned leader) moves every metric the README documents, with its
//! labels; and a node that stops logs why, at error level. One test binary, one process-wide
//! recorder and subscriber.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    missing_docs
)]

#[path = "support/echo.rs"]
mod echo;
#[path = "support/pairs.rs"]
mod pairs;
#[path = "support/stores.rs"]
mod stores;
#[path = "support/wait.rs"]
mod wait;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use raft::eraftpb::{Message, MessageType};
use raftwal_glue::{Config, NodeError, Role};
use raftwal_snapshot::{FileSnapshotStore, SnapshotSink, SnapshotStore};
use raftwal_wal::vfs::{CrashPolicy, SimFaults, SimVfs, Vfs};
use raftwal_wal::{LogEntry, LogStore, StableStore, Wal, WalOptions};

use echo::Cluster;
use wait::wait;

/// What the process-wide tracing subscriber has written.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

fn setup() -> &'static Snapshotter {
    static SNAP: OnceLock<Snapshotter> = OnceLock::new();
    SNAP.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("the only recorder of this process");
        let logs = LOGS
            .get_or_init(|| Arc::new(Mutex::new(Vec::new())))
            .clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(logs.clone()))
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        snapshotter
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);
impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.get().unwrap().lock().unwrap()).into_owned()
}

fn entries(lo: u64, hi: u64) -> Vec<LogEntry> {
    (lo..hi)
        .map(|i| LogEntry::new(i, 1, vec![7u8; 100]))
        .collect()
}

/// The WAL on disk: rotations, compaction, recycled segments, a truncation, stable keys.
fn wal_on_disk(dir: &Path) {
    let opts = WalOptions::default().segment_size(8192).recycle_segments(4);
    let wal = Wal::open(dir, opts).unwrap();
    for i in (1..400).step_by(10) {
        wal.store_logs(&entries(i, i + 10)).unwrap();
        if i > 100 {
            wal.delete_range(wal.first_index().unwrap(), i - 50)
                .unwrap();
        }
    }
    wal.delete_range(395, wal.last_index().unwrap()).unwrap();
    wal.set(b"vote", b"1").unwrap();
}

/// The WAL simulated: a torn last batch and a lost index at reopen, then a failed fsync.
fn wal_simulated() {
    let vfs = SimVfs::new(3);
    let opts = |v: &SimVfs| {
        WalOptions::default()
            .segment_size(4096)
            .background_prepare(false)
            .vfs(Arc::new(v.process()))
    };
    let wal = Wal::open("/w", opts(&vfs)).unwrap();
    for i in 1..100 {
        wal.store_logs(&entries(i, i + 1)).unwrap();
    }
    let segs = wal.segments();
    let (tail, end) = {
        let t = segs.last().unwrap();
        (t.path.clone(), t.data_end)
    };
    let sealed_index = segs[0].path.with_extension("idx");
    std::mem::forget(wal); // no clean-close checkpoint: the tail is replayed
    vfs.crash(CrashPolicy::KeepAll);
    vfs.corrupt(&tail, end - 100, 0x10).unwrap(); // inside the last batch: a torn write
    vfs.remove_file(&sealed_index).unwrap();
    let wal = Wal::open("/w", opts(&vfs)).unwrap();
    assert_eq!(wal.recovery_report().dropped.len(), 1);
    assert_eq!(wal.recovery_report().rebuilt_indexes.len(), 1);
    vfs.set_faults(SimFaults {
        fail_sync_at: Some(1),
        ..Default::default()
    });
    assert!(wal.store_logs(&entries(99, 100)).is_err());
}

/// The snapshot store: a write, a verified read, a damaged one.
fn snapshots(dir: &Path) {
    let s = FileSnapshotStore::open(dir, 1).unwrap();
    let mut sink = s.create(10, 1, b"conf", 9).unwrap();
    sink.write_all(&[5u8; 10_000]).unwrap();
    let m = sink.commit().unwrap();
    let (_, mut r) = s.open(&m.id).unwrap();
    std::io::copy(&mut r, &mut std::io::sink()).unwrap();
    let data = dir.join(&m.id).join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&data, bytes).unwrap();
    let (_, mut r) = s.open(&m.id).unwrap();
    let mut out = Vec::new();
    assert!(r.read_to_end(&mut out).is_err());
}

fn small(c: Config) -> Config {
    Config {
        tick: Duration::from_millis(10),
        snapshot_threshold: 20,
        trailing_entries: 5,
        max_command_size: 1024,
        lease: Some(Duration::from_millis(20)),
        ..c
    }
}

/// A cluster: proposals (one too large), a follower that catches up by a snapshot, reads by
/// lease and by read-index, a forged message, a leader whose lease runs out in a partition.
fn cluster() {
    let mut c = Cluster::with(3, small, None);
    let l = c.wait_leader(&[1, 2, 3]);
    let lagging = if l == 3 { 2 } else { 3 };
    c.crash(lagging);
    for i in 0..60 {
        c.node(l)
            .apply(format!("c{i}").into_bytes(), Duration::from_secs(5))
            .unwrap();
    }
    assert!(matches!(
        c.node(l).propose(vec![0; 2048]),
        Err(NodeError::TooLarge { .. })
    ));
    c.start(lagging, vec![1, 2, 3]);
    assert!(
        wait(|| (c.node(lagging).status().applied >= 60).then_some(())).is_some(),
        "the lagging node caught up"
    );
    let follower = [1, 2, 3].into_iter().find(|&i| i != l).unwrap();
    c.node(follower).read_index(Duration::from_secs(5)).unwrap();
    assert!(wait(|| c
        .node(l)
        .lease_read(Duration::from_secs(5))
        .ok()
        .filter(|p| p.via == raftwal_glue::ReadVia::Lease))
    .is_some());
    let mut forged = Message::default();
    forged.set_msg_type(MessageType::MsgHeartbeat);
    forged.from = follower;
    forged.to = 99;
    c.node(l).mailbox().deliver(forged);
    // The leader alone: its lease runs out; its next lease read finds it expired.
    let others: Vec<u64> = [1, 2, 3].into_iter().filter(|&i| i != l).collect();
    c.net.partition(&[l], &others);
    std::thread::sleep(Duration::from_millis(100));
    let _ = c.node(l).lease_read(Duration::from_millis(50));
    c.net.heal();
}

/// `(name, labels)` of every metric in the README's tables.
fn documented() -> Vec<(String, Vec<String>)> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    readme
        .lines()
        .filter_map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let name = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            if !name.starts_with("raftwal_") {
                return None;
            }
            let labels = cells
                .get(3)
                .map(|c| {
                    c.split(',')
                        .map(|s| s.trim().trim_matches('`').to_string())
                        .filter(|s| !s.is_empty() && s != "-")
                        .collect()
                })
                .unwrap_or_default();
            Some((name.to_string(), labels))
        })
        .collect()
}

#[test]
fn a_workload_moves_every_documented_metric_and_a_stopped_node_logs_why() {
    let snap = setup();
    let dir = tempfile::tempdir().unwrap();
    wal_on_disk(&dir.path().join("wal"));
    wal_simulated();
    snapshots(&dir.path().join("snaps"));
    cluster();
    // raft-rs's info records (many of which a peer can cause at will) stay below info; the
    // leader changes an operator needs are logged by the glue itself.
    let logs_so_far = logs();
    assert!(
        !logs_so_far.lines().any(|l| l.contains(" INFO raft:")),
        "raft-rs info records at info:\n{logs_so_far}"
    );
    assert!(logs_so_far.contains("leader changed"), "{logs_so_far}");
    stopped_node_logs_why();

    let mut seen: BTreeMap<String, (BTreeSet<String>, bool)> = BTreeMap::new();
    for (key, _, _, value) in snap.snapshot().into_vec() {
        let key = key.key();
        let moved = match value {
            DebugValue::Counter(n) => n > 0,
            DebugValue::Gauge(_) => true,
            DebugValue::Histogram(v) => !v.is_empty(),
        };
        let e = seen.entry(key.name().to_string()).or_default();
        if moved {
            e.1 = true;
            e.0.extend(key.labels().map(|l| l.key().to_string()));
        }
    }
    let docs = documented();
    assert!(
        docs.len() >= 40,
        "the README documents {} metrics",
        docs.len()
    );
    let mut missing = Vec::new();
    for (name, labels) in &docs {
        match seen.get(name) {
            Some((got, true)) if labels.iter().all(|l| got.contains(l)) => {}
            other => missing.push(format!("{name} {labels:?}: {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "not moved by the workload:\n{}",
        missing.join("\n")
    );
    // And nothing is recorded that the README does not document.
    let names: BTreeSet<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
    let undocumented: Vec<&String> = seen
        .keys()
        .filter(|k| !names.contains(k.as_str()))
        .collect();
    assert!(undocumented.is_empty(), "undocumented: {undocumented:?}");
}

/// A node whose WAL fails an fsync stops, and logs why at error level.
fn stopped_node_logs_why() {
    let vfs = SimVfs::new(1);
    let storage = stores::simulated(7, &vfs);
    let net = raftwal_glue::MemNetwork::new();
    let node = raftwal_glue::Node::start(
        echo::quick(Config::new(7, vec![7])),
        echo::Echo::default(),
        storage,
        net.transport(7),
    )
    .unwrap();
    assert!(wait(|| (node.role() == Role::Leader).then_some(())).is_some());
    vfs.set_faults(SimFaults {
        fail_sync_at: Some(1),
        ..Default::default()
    });
    assert!(node.apply(b"x".to_vec(), Duration::from_secs(5)).is_err());
    assert!(wait(|| node.status().stopped.then_some(())).is_some());
    let logs = logs();
    let line = logs
        .lines()
        .find(|l| l.contains("the node stopped") && l.contains("node=7"))
        .unwrap_or_else(|| panic!("no stop logged in:\n{logs}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("fdatasync"), "the reason: {line}");
}
