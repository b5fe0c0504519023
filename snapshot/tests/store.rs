//! Snapshot store tests: one conformance suite for both stores; crashes at every file operation
//! of create/commit/reap; damaged data and metadata; bad input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods
)]

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use raftwal_snapshot::{
    read_all, CorruptKind, Error, FileSnapshotStore, MemSnapshotStore, SnapshotMeta, SnapshotSink,
    SnapshotStore,
};
use raftwal_wal::vfs::{CrashPolicy, SimFaults, SimVfs, Vfs};

fn data(seed: u64, len: usize) -> Vec<u8> {
    (0..len).map(|i| (i as u64 * 31 + seed * 7) as u8).collect()
}

fn put<S: SnapshotStore>(s: &S, index: u64, term: u64, body: &[u8]) -> SnapshotMeta {
    let mut sink = s.create(index, term, b"conf", index - 1).unwrap();
    for chunk in body.chunks(1000) {
        sink.write_all(chunk).unwrap();
    }
    sink.commit().unwrap()
}

fn read<S: SnapshotStore>(s: &S, id: &str) -> std::io::Result<Vec<u8>> {
    let (_, r) = s.open(id).map_err(std::io::Error::from)?;
    read_all(r)
}

fn conformance<S: SnapshotStore>(s: &S) {
    assert!(s.list().unwrap().is_empty());
    assert!(matches!(s.open("nope"), Err(Error::NotFound { .. })));
    let a = put(s, 10, 1, &data(1, 5000));
    assert_eq!(a.size, 5000);
    assert_eq!(a.checksum, crc32fast::hash(&data(1, 5000)));
    assert_eq!((a.index, a.term, a.configuration_index), (10, 1, 9));
    assert_eq!(a.configuration, b"conf");
    assert_eq!(read(s, &a.id).unwrap(), data(1, 5000));
    // Newest first: by term, then index, then creation; unique ids at the same position.
    let b = put(s, 5, 2, b"");
    let c = put(s, 5, 2, b"x");
    assert_ne!(b.id, c.id);
    let ids: Vec<_> = s.list().unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(
        ids,
        vec![c.id.clone(), b.id.clone()],
        "retain 2, newest first"
    );
    assert!(
        matches!(s.open(&a.id), Err(Error::NotFound { .. })),
        "reaped"
    );
    assert_eq!(read(s, &b.id).unwrap(), b"");
    // Cancel and drop leave nothing.
    let mut sink = s.create(99, 9, b"", 0).unwrap();
    sink.write_all(b"abandoned").unwrap();
    sink.cancel().unwrap();
    let mut sink = s.create(99, 9, b"", 0).unwrap();
    sink.write_all(b"dropped").unwrap();
    drop(sink);
    assert_eq!(s.list().unwrap().len(), 2);
    // Concurrent readers of one snapshot.
    let d = put(s, 50, 3, &data(4, 300_000));
    std::thread::scope(|sc| {
        for _ in 0..4 {
            sc.spawn(|| assert_eq!(read(s, &d.id).unwrap(), data(4, 300_000)));
        }
    });
}

#[test]
fn conformance_mem() {
    conformance(&MemSnapshotStore::new(2).unwrap());
}

#[test]
fn conformance_file() {
    let d = tempfile::tempdir().unwrap();
    let s = FileSnapshotStore::open(d.path().join("snaps"), 2).unwrap();
    conformance(&s);
    // Nothing but the retained snapshots remains on disk.
    let s2 = FileSnapshotStore::open(d.path().join("snaps"), 2).unwrap();
    assert_eq!(s2.list().unwrap().len(), 2);
    assert_eq!(
        std::fs::read_dir(d.path().join("snaps")).unwrap().count(),
        2
    );
}

#[test]
fn conformance_file_sim() {
    let vfs = Arc::new(SimVfs::new(1));
    conformance(&FileSnapshotStore::open_with("/snaps", 2, vfs).unwrap());
}

#[test]
fn a_snapshot_being_read_survives_reaping() {
    let d = tempfile::tempdir().unwrap();
    let s = FileSnapshotStore::open(d.path(), 1).unwrap();
    let a = put(&s, 1, 1, &data(1, 3 << 20));
    let (_, mut r) = s.open(&a.id).unwrap();
    let mut first = vec![0u8; 1000];
    r.read_exact(&mut first).unwrap();
    put(&s, 2, 1, b"newer"); // reaps `a` while it is being read
    assert_eq!(s.list().unwrap().len(), 1);
    let mut rest = Vec::new();
    r.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    assert_eq!(first, data(1, 3 << 20));
}

/// Crash at every file operation of create + write + commit + reap; after reopen, `list` shows
/// only whole snapshots, the previous newest is intact, and the new one is all or nothing.
#[test]
fn crash_at_every_operation_of_commit_and_reap() {
    let setup = |seed| {
        let vfs = SimVfs::new(seed);
        let s = FileSnapshotStore::open_with("/snaps", 2, Arc::new(vfs.clone())).unwrap();
        let a = put(&s, 10, 1, &data(1, 3000));
        let b = put(&s, 20, 1, &data(2, 3000));
        (vfs, s, a, b)
    };
    let attempt = |s: &FileSnapshotStore| -> Result<SnapshotMeta, Error> {
        let mut sink = s.create(30, 2, b"conf", 29)?;
        sink.write_all(&data(3, 2_500_000))
            .map_err(|e| Error::Invalid(e.to_string()))?;
        sink.commit()
    };
    let (vfs, s, _, _) = setup(0);
    vfs.set_faults(SimFaults::default());
    attempt(&s).unwrap();
    let total = vfs.ops();
    assert!(total > 10);
    for n in 1..=total + 1 {
        for policy in [
            CrashPolicy::DropAll,
            CrashPolicy::KeepAll,
            CrashPolicy::Random(n),
        ] {
            let (vfs, s, _, b) = setup(n);
            vfs.set_faults(SimFaults {
                crash_at_op: Some(n),
                ..Default::default()
            });
            let committed = attempt(&s).ok();
            drop(s);
            vfs.crash(policy);
            let s = FileSnapshotStore::open_with("/snaps", 2, Arc::new(vfs.clone()))
                .unwrap_or_else(|e| panic!("op {n} {policy:?}: reopen: {e}"));
            let list = s.list().unwrap();
            for m in &list {
                let want = match m.index {
                    10 => data(1, 3000),
                    20 => data(2, 3000),
                    30 => data(3, 2_500_000),
                    i => panic!("op {n}: unexpected snapshot at {i}"),
                };
                assert_eq!(read(&s, &m.id).unwrap(), want, "op {n} {policy:?}: {m:?}");
            }
            assert!(
                list.iter().any(|m| m.id == b.id),
                "op {n} {policy:?}: the previous newest snapshot is gone: {list:?}"
            );
            if committed.is_some() {
                assert_eq!(
                    list[0].index, 30,
                    "op {n} {policy:?}: a committed snapshot was lost"
                );
            }
            let names = vfs.list(Path::new("/snaps")).unwrap();
            assert!(
                names
                    .iter()
                    .all(|n| !n.ends_with(".tmp") && !n.ends_with(".del")),
                "op {n}: leftovers {names:?}"
            );
        }
    }
}

#[test]
fn flipped_bits_in_data_and_metadata() {
    let vfs = SimVfs::new(3);
    let s = FileSnapshotStore::open_with("/snaps", 3, Arc::new(vfs.clone())).unwrap();
    let a = put(&s, 10, 1, &data(1, 4000));
    let data_path = Path::new("/snaps").join(&a.id).join("data");
    let meta_path = Path::new("/snaps").join(&a.id).join("meta");
    for off in (0..4000).step_by(97) {
        vfs.corrupt(&data_path, off, 0x01).unwrap();
        let e = read(&s, &a.id).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("checksum"), "{e}");
        vfs.corrupt(&data_path, off, 0x01).unwrap();
    }
    assert_eq!(read(&s, &a.id).unwrap(), data(1, 4000));
    let b = put(&s, 20, 1, b"ok");
    let len = vfs.read_file(&meta_path).unwrap().len() as u64;
    for off in 0..len {
        vfs.corrupt(&meta_path, off, 0x08).unwrap();
        assert!(
            matches!(s.open(&a.id), Err(Error::Corrupt { .. })),
            "meta byte {off}"
        );
        let list = s.list().unwrap();
        assert_eq!(list.len(), 1, "damaged one skipped, others listed");
        assert_eq!(list[0].id, b.id);
        vfs.corrupt(&meta_path, off, 0x08).unwrap();
    }
    assert_eq!(s.list().unwrap().len(), 2);
}

#[test]
fn truncated_and_missing_data() {
    let vfs = SimVfs::new(4);
    let s = FileSnapshotStore::open_with("/snaps", 3, Arc::new(vfs.clone())).unwrap();
    let a = put(&s, 10, 1, &data(1, 4000));
    let p = Path::new("/snaps").join(&a.id).join("data");
    let full = vfs.read_file(&p).unwrap();
    vfs.write_file(&p, &full[..3999]).unwrap();
    match s.open(&a.id) {
        Err(Error::Corrupt { path, kind, .. }) => {
            assert_eq!(path, p);
            assert_eq!(
                kind,
                CorruptKind::Truncated {
                    needed: 4000,
                    available: 3999
                }
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    vfs.remove_file(&p).unwrap();
    assert!(matches!(s.open(&a.id), Err(Error::Corrupt { .. })));
}

#[test]
fn bad_input() {
    let d = tempfile::tempdir().unwrap();
    assert!(matches!(
        FileSnapshotStore::open(d.path(), 0),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(MemSnapshotStore::new(0), Err(Error::Invalid(_))));
    let f = d.path().join("file");
    std::fs::write(&f, b"x").unwrap();
    assert!(matches!(
        FileSnapshotStore::open(&f, 1),
        Err(Error::Invalid(_))
    ));
    // An unwritable place (root ignores permission bits, so use a kernel file system).
    assert!(matches!(
        FileSnapshotStore::open("/proc/raftwal-no-such/snaps", 1),
        Err(Error::Io { .. })
    ));
    let s = FileSnapshotStore::open(d.path().join("s"), 1).unwrap();
    for id in ["", "..", "x/../../etc", "unknown"] {
        assert!(matches!(s.open(id), Err(Error::NotFound { .. })), "{id:?}");
    }
}

#[test]
fn enospc_while_writing_fails_cleanly() {
    let vfs = SimVfs::new(5);
    let s = FileSnapshotStore::open_with("/snaps", 2, Arc::new(vfs.clone())).unwrap();
    let a = put(&s, 1, 1, b"before");
    vfs.set_faults(SimFaults {
        enospc_after_bytes: Some(1 << 20),
        ..Default::default()
    });
    let mut sink = s.create(2, 1, b"", 0).unwrap();
    let err = sink.write_all(&data(9, 3 << 20)).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(28), "{err}");
    // Later writes and the commit refuse too; the temporary is removed.
    assert!(sink.write_all(b"more").is_err());
    assert!(sink.commit().is_err());
    vfs.set_faults(SimFaults::default());
    let list = s.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, a.id);
    assert_eq!(vfs.list(Path::new("/snaps")).unwrap().len(), 1);
}

/// A store opened in directories that did not exist keeps a committed snapshot across a power
/// cut: every directory `open` created is durable (`Vfs::create_dir_durable`).
#[test]
fn a_new_store_in_new_directories_survives_a_power_cut() {
    let vfs = SimVfs::new(2);
    let s = FileSnapshotStore::open_with("/x/y/snaps", 1, Arc::new(vfs.process())).unwrap();
    let m = put(&s, 10, 1, &data(3, 100));
    drop(s);
    vfs.crash(CrashPolicy::DropAll);
    let s = FileSnapshotStore::open_with("/x/y/snaps", 1, Arc::new(vfs.process())).unwrap();
    assert_eq!(read(&s, &m.id).unwrap(), data(3, 100));
}
