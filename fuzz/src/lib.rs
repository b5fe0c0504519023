//! Crash-recovery fuzz scenarios, driven by raw input bytes.
//!
//! The same functions run under cargo-fuzz (`fuzz_targets/*.rs`) and as plain regression tests
//! (`raftwal/tests/fuzz_regressions.rs` includes this file), so every input the
//! fuzzers save replays under `cargo test` without nightly.
//!
//! Each scenario panics (with a message) on a broken invariant; returning means all held.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "raft_messages.rs"]
mod raft_messages;
pub use raft_messages::raft_messages;

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use raftwal_snapshot::{FileSnapshotStore, SnapshotMeta, SnapshotSink, SnapshotStore};
use raftwal_testkit::{apply_model, apply_wal, entry, same, Op};
use raftwal_wal::vfs::{CrashPolicy, SimFaults, SimVfs, Vfs};
use raftwal_wal::{Error, LogStore, MemStore, RecoveryMode, StableStore, Wal, WalOptions};

/// Reads numbers from the input; yields zeros once it runs out (so every input is valid).
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }
    pub fn u8(&mut self) -> u8 {
        let v = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        v
    }
    pub fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }
    pub fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = (start + n).min(self.data.len());
        self.pos = start + n;
        &self.data[start..end]
    }
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

const DIR: &str = "/fz/wal";

fn wal_opts(vfs: &SimVfs, segment_size: u64) -> WalOptions {
    WalOptions::default()
        .segment_size(segment_size)
        .background_prepare(false)
        .vfs(Arc::new(vfs.process()))
}

/// Reads everything a WAL claims to hold; must not panic whatever the files contained.
fn exercise(wal: &Wal) {
    let (first, last) = (wal.first_index().unwrap(), wal.last_index().unwrap());
    if last > 0 {
        let span = (last - first + 1).min(10_000);
        for i in first..first + span {
            let _ = wal.get_log(i);
        }
        let _ = wal.get_logs(first, first + span, 1 << 16);
    }
    let _ = wal.check(raftwal_wal::VerifyMode::Every);
    let _ = wal.stable_entries();
    let _ = wal.segments();
}

/// Builds a small valid WAL with sealed segments, a stable key and a truncation.
fn generate(vfs: &SimVfs) {
    let wal = Wal::open(DIR, wal_opts(vfs, 4096)).unwrap();
    for i in 1..=40u64 {
        wal.store_logs(&[entry(i, 1 + i / 10, (i as usize * 13) % 300)])
            .unwrap();
    }
    wal.set_u64(b"term", 4).unwrap();
    wal.delete_range(35, 40).unwrap();
    wal.delete_range(1, 5).unwrap();
}

/// Target 1: arbitrary bytes become (or damage) the manifest, segment and index files; opening
/// and reading must give `Ok` or a clear error, never a panic or a huge allocation.
pub fn wal_open_bytes(data: &[u8]) {
    let mut inp = Input::new(data);
    let vfs = SimVfs::new(1);
    let mode = inp.u8() % 3;
    let dir = Path::new(DIR);
    if mode == 0 {
        // Files made of raw input.
        vfs.create_dir_all(dir).unwrap();
        for name in [
            "MANIFEST",
            "0000000000000001.seg",
            "0000000000000001.idx",
            "0000000000000002.seg",
        ] {
            let n = inp.u16() as usize;
            let bytes = inp.bytes(n);
            if !bytes.is_empty() || inp.u8() & 1 == 0 {
                vfs.write_file(&dir.join(name), bytes).unwrap();
            }
        }
    } else {
        generate(&vfs);
        let names = vfs.list(dir).unwrap();
        let files: Vec<_> = names.iter().filter(|n| n.as_str() != "LOCK").collect();
        while !inp.is_empty() {
            let f = dir.join(files[inp.u8() as usize % files.len()]);
            let cur = vfs.read_file(&f).unwrap_or_default();
            let op = inp.u8();
            let off = inp.u32() as usize % (cur.len() + 1);
            let mut new = cur.clone();
            match op % 4 {
                0 => {
                    if off < new.len() {
                        new[off] ^= inp.u8() | 1;
                    }
                }
                1 => new.truncate(off),
                2 => {
                    let n = inp.u8() as usize;
                    let bytes = inp.bytes(n);
                    let end = (off + bytes.len()).min(new.len());
                    new[off..end].copy_from_slice(&bytes[..end - off]);
                }
                _ => {
                    if mode == 2 {
                        new.extend_from_slice(inp.rest());
                    }
                }
            }
            vfs.write_file(&f, &new).unwrap();
        }
    }
    for opts in [
        wal_opts(&vfs, 4096),
        wal_opts(&vfs, 4096).read_only(true),
        wal_opts(&vfs, 4096).recovery(RecoveryMode::TruncateCorruptTail),
    ] {
        if let Ok(wal) = Wal::open(DIR, opts) {
            exercise(&wal);
        }
    }
}

fn next_op(inp: &mut Input<'_>, first: u64, last: u64) -> Op {
    let kind = inp.u8();
    let span = last.saturating_sub(first) + 2;
    let pick = |x: u32| first.saturating_sub(1) + u64::from(x) % span;
    match kind % 10 {
        0..=4 => {
            let t = inp.u8();
            let truncate_after = (t.is_multiple_of(5) && last > 0).then(|| pick(inp.u32()));
            let count = u64::from(inp.u8() % 6);
            // 70,000 bytes: a payload written from the caller's buffer (vectored); one per
            // batch, so that no input can grow the simulated disk past the fuzzer's memory limit.
            let size = [0usize, 1, 40, 300, 2000, 5000, 5000, 70_000][usize::from(inp.u8() % 8)];
            Op::Write {
                truncate_after,
                count: if size > 5000 { count.min(1) } else { count },
                size,
                term: u64::from(inp.u8() % 4) + 1,
                stable: t
                    .is_multiple_of(3)
                    .then(|| (vec![b'k', inp.u8() % 3], u64::from(inp.u32())))
                    .into_iter()
                    .collect(),
            }
        }
        5 => Op::DeleteHead(pick(inp.u32())),
        6 => Op::DeleteTail(pick(inp.u32())),
        7 | 8 => Op::Set(vec![b'k', inp.u8() % 3], u64::from(inp.u32())),
        _ => Op::Reopen,
    }
}

/// What happens to unsynced data at the simulated crash, drawn from the input.
fn crash_policy(inp: &mut Input<'_>) -> CrashPolicy {
    match inp.u8() % 3 {
        0 => CrashPolicy::DropAll,
        1 => CrashPolicy::KeepAll,
        _ => CrashPolicy::Random(u64::from(inp.u32())),
    }
}

/// Target 2: a sequence of operations and a crash schedule. After the crash and reopen, every
/// acknowledged entry and stable value is present and intact, nothing unacknowledged appears
/// except the whole in-flight batch, deleted entries never return, and appends work.
pub fn wal_crash(data: &[u8]) {
    let mut inp = Input::new(data);
    let segment_size = [4096u64, 8192, 65536][usize::from(inp.u8() % 3)];
    let policy = crash_policy(&mut inp);
    let faults = match inp.u8() % 4 {
        0 => SimFaults {
            crash_at_op: Some(u64::from(inp.u16() % 400) + 1),
            ..Default::default()
        },
        1 => SimFaults {
            fail_sync_at: Some(u64::from(inp.u8() % 60) + 1),
            ..Default::default()
        },
        2 => SimFaults {
            enospc_after_bytes: Some(u64::from(inp.u32() % 300_000)),
            ..Default::default()
        },
        _ => SimFaults::default(),
    };
    let vfs = SimVfs::new(7);
    let opts = || wal_opts(&vfs, segment_size);
    let mut wal = Wal::open(DIR, opts()).unwrap();
    vfs.set_faults(faults);
    let model = MemStore::new();
    let mut in_flight = None;
    let mut steps = 0;
    while !inp.is_empty() && steps < 200 {
        steps += 1;
        let op = next_op(
            &mut inp,
            model.first_index().unwrap(),
            model.last_index().unwrap(),
        );
        if let Op::Reopen = op {
            drop(wal);
            match Wal::open(DIR, opts()) {
                Ok(w) => wal = w,
                Err(_) => {
                    vfs.crash(policy);
                    wal = Wal::open(DIR, opts())
                        .unwrap_or_else(|e| panic!("recovery after a failed reopen: {e}"));
                    break;
                }
            }
            continue;
        }
        match apply_wal(&wal, &op) {
            Ok(()) => apply_model(&model, &op)
                .unwrap_or_else(|e| panic!("WAL accepted {op:?}, the model refused: {e}")),
            Err(Error::OutOfOrder { .. } | Error::InvalidRange { .. }) => {
                assert!(
                    apply_model(&model, &op).is_err(),
                    "WAL refused {op:?}, the model accepted"
                )
            }
            Err(_) => {
                in_flight = Some(op);
                assert!(
                    matches!(
                        wal.set_u64(b"x", 1),
                        Err(Error::Poisoned | Error::Io { .. })
                    ),
                    "a write after a failure was accepted"
                );
                break;
            }
        }
    }
    drop(wal);
    vfs.crash(policy);
    let wal = Wal::open(DIR, opts()).unwrap_or_else(|e| panic!("recovery failed: {e}"));
    let ok = same(&wal, &model)
        || in_flight.as_ref().is_some_and(|op| {
            let after = model.clone();
            apply_model(&after, op).is_ok() && same(&wal, &after)
        });
    assert!(ok, "recovered state is wrong; in flight: {in_flight:?}");
    let last = wal.last_index().unwrap();
    wal.store_logs(&[entry(last + 1, 9, 10)])
        .unwrap_or_else(|e| panic!("append after recovery: {e}"));
    assert_eq!(wal.get_log(last + 1).unwrap(), entry(last + 1, 9, 10));
}

/// Target 3: crash anywhere in create/write/commit/reap; afterwards `list` shows only whole
/// snapshots, each reads back with a valid checksum, and the newest committed one survives.
pub fn snapshot_crash(data: &[u8]) {
    let mut inp = Input::new(data);
    let vfs = SimVfs::new(3);
    let dir = Path::new("/fz/snaps");
    let retain = usize::from(inp.u8() % 3) + 1;
    let open = || FileSnapshotStore::open_with(dir, retain, Arc::new(vfs.process()));
    let mut store = open().unwrap();
    let policy = match inp.u8() % 3 {
        0 => CrashPolicy::DropAll,
        1 => CrashPolicy::KeepAll,
        _ => CrashPolicy::Random(u64::from(inp.u16())),
    };
    vfs.set_faults(match inp.u8() % 3 {
        0 => SimFaults {
            crash_at_op: Some(u64::from(inp.u8()) + 1),
            ..Default::default()
        },
        1 => SimFaults {
            enospc_after_bytes: Some(u64::from(inp.u32() % 400_000)),
            ..Default::default()
        },
        _ => SimFaults::default(),
    });
    let content = |index: u64, len: usize| -> Vec<u8> {
        (0..len).map(|i| (index as usize * 31 + i) as u8).collect()
    };
    let mut committed: Vec<SnapshotMeta> = Vec::new();
    let mut index = 0u64;
    let mut steps = 0;
    while !inp.is_empty() && steps < 30 && !vfs.is_dead() {
        steps += 1;
        index += 1;
        let len = usize::from(inp.u16()) * 7;
        let action = inp.u8() % 4;
        if action == 3 {
            // Reopen (the store holds no lock, so the old handle can simply be replaced).
            match open() {
                Ok(s) => store = s,
                Err(_) => break,
            }
            continue;
        }
        let Ok(mut sink) = store.create(index, 1, b"conf", index) else {
            break;
        };
        if sink.write_all(&content(index, len)).is_err() {
            break;
        }
        match action {
            0 => {
                let _ = sink.cancel();
            }
            1 => drop(sink),
            _ => match sink.commit() {
                Ok(m) => committed.push(m),
                Err(_) => break,
            },
        }
    }
    drop(store);
    vfs.crash(policy);
    let store = open().unwrap_or_else(|e| panic!("reopen after crash: {e}"));
    let list = store.list().unwrap();
    for m in &list {
        let (_, r) = store
            .open(&m.id)
            .unwrap_or_else(|e| panic!("listed but unopenable: {e}"));
        let got =
            raftwal_snapshot::read_all(r).unwrap_or_else(|e| panic!("listed but unreadable: {e}"));
        assert_eq!(
            got,
            content(m.index, m.size as usize),
            "snapshot {} has wrong data",
            m.id
        );
    }
    if let Some(newest) = committed.last() {
        assert!(
            list.iter().any(|m| m.id == newest.id),
            "the newest committed snapshot {} is gone; listed {list:?}",
            newest.id
        );
    }
    assert!(
        list.len() <= retain.max(1) + 1,
        "retention ignored: {list:?}"
    );
    for n in vfs.list(dir).unwrap() {
        assert!(!n.ends_with(".tmp") && !n.ends_with(".del"), "leftover {n}");
    }
}

/// Target 4: a Raft node's log life through `RaftStorage` — rounds that overwrite a
/// conflicting tail, snapshots followed by compaction (keeping trailing entries), a leader's
/// snapshot installed, restarts — with a power cut (or a failed fsync) somewhere in it. After
/// recovery there is a snapshot to restore whenever one was acknowledged, never older than the
/// last acknowledged one, its data verifies and the commit covers it; every acknowledged entry
/// after it is in the log with its term.
pub fn raft_storage_crash(data: &[u8]) {
    use raftwal_glue::raft::eraftpb::{ConfState, Entry, HardState, SnapshotMetadata};
    use raftwal_glue::raft::Storage as _;
    use raftwal_glue::RaftStorage;
    use std::collections::BTreeMap;
    use std::io::Read;

    type Store = RaftStorage<Wal, FileSnapshotStore>;
    let mut inp = Input::new(data);
    let policy = crash_policy(&mut inp);
    let faults = match inp.u8() % 3 {
        0 => SimFaults {
            fail_sync_at: Some(u64::from(inp.u8() % 40) + 1),
            ..Default::default()
        },
        _ => SimFaults {
            crash_at_op: Some(u64::from(inp.u16() % 300) + 1),
            ..Default::default()
        },
    };
    let vfs = SimVfs::new(11);
    let open = |vfs: &SimVfs| -> Result<Store, String> {
        let v: Arc<dyn Vfs> = Arc::new(vfs.process());
        let wal = Wal::open(
            "/fz/raft/wal",
            WalOptions::default()
                .segment_size(4096)
                .background_prepare(false)
                .vfs(v.clone()),
        )
        .map_err(|e| e.to_string())?;
        let snaps =
            FileSnapshotStore::open_with("/fz/raft/snap", 2, v).map_err(|e| e.to_string())?;
        Ok(RaftStorage::new(wal, snaps))
    };
    let raft_entry = |index: u64, term: u64| Entry {
        index,
        term,
        data: format!("e{index}t{term}").into_bytes().into(),
        ..Default::default()
    };
    let snapshot = |s: &Store, index: u64, term: u64| -> Result<(), String> {
        let conf = raftwal_glue::encode_conf_state(&ConfState {
            voters: vec![1],
            ..Default::default()
        });
        let mut sink = s
            .snapshots()
            .create(index, term, &conf, 1)
            .map_err(|e| e.to_string())?;
        sink.write_all(format!("state at {index}").as_bytes())
            .map_err(|e| e.to_string())?;
        sink.commit().map(drop).map_err(|e| e.to_string())
    };

    vfs.set_faults(faults);
    // What was acknowledged: entries (index → term) and the snapshot mark; and what the
    // operation that failed would have made of it (it may or may not have taken effect).
    type State = (BTreeMap<u64, u64>, (u64, u64));
    let mut acked: State = (BTreeMap::new(), (0, 0));
    let mut in_flight: Option<State> = None;
    let mut term = 1u64;
    let mut s = open(&vfs).ok();
    let mut steps = 0;
    while let Some(store) = s.as_ref() {
        if inp.is_empty() || steps >= 60 {
            break;
        }
        steps += 1;
        let (log, mark) = &acked;
        let first = log.keys().next().copied().unwrap_or(mark.0 + 1);
        let last = log.keys().next_back().copied().unwrap_or(mark.0);
        let mut after = acked.clone();
        let r = match inp.u8() % 8 {
            0..=3 => {
                term += u64::from(inp.u8().is_multiple_of(4));
                let back = u64::from(inp.u8() % 4);
                let n = u64::from(inp.u8() % 12) + 1;
                let lo = (last + 1).saturating_sub(back).max(first).max(mark.0 + 1);
                let entries: Vec<Entry> = (lo..lo + n).map(|i| raft_entry(i, term)).collect();
                after.0.retain(|i, _| *i < lo);
                after.0.extend(entries.iter().map(|e| (e.index, e.term)));
                let hs = HardState {
                    term,
                    commit: mark.0,
                    ..Default::default()
                };
                store.append(&entries, Some(&hs)).map_err(|e| e.to_string())
            }
            4 | 5 => {
                let at = last.saturating_sub(u64::from(inp.u8() % 8));
                let upto = at.saturating_sub(u64::from(inp.u8() % 6));
                match log.get(&at).copied() {
                    Some(t) if at > mark.0 => {
                        after.0.retain(|i, _| *i > upto);
                        after.1 = (at, t);
                        snapshot(store, at, t)
                            .and_then(|()| store.compact(at, t, upto).map_err(|e| e.to_string()))
                    }
                    _ => Ok(()),
                }
            }
            6 => {
                term += 1;
                let index = last + 1 + u64::from(inp.u8() % 4);
                after = (BTreeMap::new(), (index, term));
                snapshot(store, index, term).and_then(|()| {
                    let mut meta = SnapshotMetadata {
                        index,
                        term,
                        ..Default::default()
                    };
                    meta.mut_conf_state().voters = vec![1];
                    store.apply_snapshot(&meta).map_err(|e| e.to_string())
                })
            }
            _ => {
                drop(s.take()); // the WAL is locked while open
                s = open(&vfs).ok();
                if s.is_some() {
                    continue;
                }
                Err("reopen failed".into())
            }
        };
        match r {
            Ok(()) => acked = after,
            Err(_) => {
                in_flight = Some(after);
                break;
            }
        }
    }
    drop(s);
    vfs.crash(policy);
    let s = open(&vfs).unwrap_or_else(|e| panic!("reopen after the crash: {e}"));
    let snap = s
        .recover_snapshot()
        .unwrap_or_else(|e| panic!("recovering the snapshot: {e}"));
    if let Some(m) = &snap {
        let (_, mut r) = s.snapshots().open(&m.id).unwrap();
        let mut text = String::new();
        r.read_to_string(&mut text)
            .unwrap_or_else(|e| panic!("snapshot {} data: {e}", m.id));
        assert_eq!(text, format!("state at {}", m.index));
        assert!(
            s.hard_state().unwrap().commit >= m.index,
            "commit below {m:?}"
        );
    }
    // The recovered log must hold the acknowledged state, or that state with the failed
    // operation applied.
    let holds = |(log, mark): &State| -> Result<(), String> {
        let base = match &snap {
            Some(m) if (m.index, m.term) >= *mark => m.index,
            Some(m) => return Err(format!("restored {m:?}, older than the mark {mark:?}")),
            None if *mark == (0, 0) => 0,
            None => return Err(format!("the snapshot at {mark:?} is gone")),
        };
        for (&i, &t) in log.range(base + 1..) {
            match s.term(i) {
                Ok(got) if got == t => {}
                other => return Err(format!("entry {i} (term {t}): {other:?}")),
            }
        }
        Ok(())
    };
    if let Err(e) = holds(&acked) {
        let alt = in_flight.as_ref().map(holds);
        assert!(
            matches!(alt, Some(Ok(()))),
            "acknowledged state lost: {e}; with the failed operation applied: {alt:?}"
        );
    }
}
