//! Shared test harness: one way to make, reopen and crash each store under test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raftwal_wal::vfs::{CrashPolicy, SimVfs};
use raftwal_wal::{LogEntry, LogStore, MemStore, StableStore, Wal, WalOptions};

/// A store under test that can be closed and reopened.
pub trait Harness {
    type Store: LogStore + StableStore;
    fn name(&self) -> &'static str;
    fn open(&mut self) -> Self::Store;
    /// Closes and reopens (a clean restart).
    fn reopen(&mut self, s: Self::Store) -> Self::Store;
}

pub struct MemHarness;
impl Harness for MemHarness {
    type Store = MemStore;
    fn name(&self) -> &'static str {
        "MemStore"
    }
    fn open(&mut self) -> MemStore {
        MemStore::new()
    }
    fn reopen(&mut self, s: MemStore) -> MemStore {
        s
    }
}

pub struct DiskHarness {
    pub dir: tempfile::TempDir,
    pub segment_size: u64,
}
impl DiskHarness {
    pub fn new(segment_size: u64) -> Self {
        DiskHarness {
            dir: tempfile::tempdir().unwrap(),
            segment_size,
        }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("wal")
    }
}
impl Harness for DiskHarness {
    type Store = Wal;
    fn name(&self) -> &'static str {
        "Wal(disk)"
    }
    fn open(&mut self) -> Wal {
        Wal::open(
            self.path(),
            WalOptions::default().segment_size(self.segment_size),
        )
        .unwrap()
    }
    fn reopen(&mut self, s: Wal) -> Wal {
        drop(s);
        self.open()
    }
}

pub struct SimHarness {
    pub vfs: SimVfs,
    pub segment_size: u64,
}
impl SimHarness {
    pub fn new(seed: u64, segment_size: u64) -> Self {
        SimHarness {
            vfs: SimVfs::new(seed),
            segment_size,
        }
    }
    pub fn opts(&self) -> WalOptions {
        WalOptions::default()
            .segment_size(self.segment_size)
            .vfs(Arc::new(self.vfs.process()))
    }
    pub fn try_open(&self) -> raftwal_wal::Result<Wal> {
        Wal::open(Path::new("/db/wal"), self.opts())
    }
    /// Crashes the simulated machine (dropping the store first) and reopens.
    pub fn crash_reopen(&mut self, s: Wal, policy: CrashPolicy) -> Wal {
        drop(s);
        self.vfs.crash(policy);
        self.open()
    }
}
impl Harness for SimHarness {
    type Store = Wal;
    fn name(&self) -> &'static str {
        "Wal(sim)"
    }
    fn open(&mut self) -> Wal {
        self.try_open().unwrap()
    }
    fn reopen(&mut self, s: Wal) -> Wal {
        drop(s);
        self.open()
    }
}

pub fn entry(index: u64, term: u64, len: usize) -> LogEntry {
    let mut data = vec![0u8; len];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (index as usize * 31 + i * 7) as u8;
    }
    LogEntry {
        index,
        term,
        kind: raftwal_wal::EntryKind::Normal,
        context: if index.is_multiple_of(3) {
            vec![index as u8; 3]
        } else {
            vec![]
        },
        data,
    }
}

pub fn entries(lo: u64, hi: u64, term: u64, len: usize) -> Vec<LogEntry> {
    (lo..hi).map(|i| entry(i, term, len)).collect()
}

/// A tiny deterministic PRNG for tests (splitmix64).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

/// One operation of a random workload.
#[derive(Debug, Clone)]
pub enum Op {
    /// A batch: optional tail truncation, entries (count, size), stable sets.
    Write {
        truncate_after: Option<u64>,
        count: u64,
        size: usize,
        term: u64,
        stable: Vec<(Vec<u8>, u64)>,
    },
    DeleteHead(u64),
    DeleteTail(u64),
    Set(Vec<u8>, u64),
    Reopen,
}

/// Draws an operation that is usually valid for a log with these bounds.
pub fn random_op(rng: &mut Rng, first: u64, last: u64) -> Op {
    let empty = last == 0;
    let key = |rng: &mut Rng| format!("k{}", rng.below(4)).into_bytes();
    match rng.below(20) {
        0..=10 => {
            let truncate_after = (!empty && rng.below(6) == 0)
                .then(|| first.saturating_sub(1) + rng.below(last - first + 2));
            let stable = (0..rng.below(3)).map(|_| (key(rng), rng.next())).collect();
            Op::Write {
                truncate_after,
                count: rng.below(6),
                // Now and then a payload large enough to be written from the caller's buffer
                // (a vectored write) rather than copied.
                size: [0usize, 1, 17, 200, 700, 3000, 3000, 70_000][rng.below(8) as usize],
                term: 1 + rng.below(5),
                stable,
            }
        }
        11..=12 if !empty => Op::DeleteHead(first + rng.below(last - first + 1)),
        13 if !empty => Op::DeleteTail(first + rng.below(last - first + 1)),
        14..=16 => Op::Set(key(rng), rng.next()),
        17 => Op::Reopen,
        _ => Op::Write {
            truncate_after: None,
            count: 1,
            size: 64,
            term: 1,
            stable: vec![],
        },
    }
}

/// The batch an `Op::Write` means for a log whose last index is `last` (first index for an
/// empty log is 1 when nothing was ever written).
pub fn batch_for(op: &Op, last: u64) -> raftwal_wal::WriteBatch {
    let mut b = raftwal_wal::WriteBatch::new();
    if let Op::Write {
        truncate_after,
        count,
        size,
        term,
        stable,
    } = op
    {
        let start = match truncate_after {
            Some(k) => {
                b.truncate_after(*k);
                k + 1
            }
            None => last + 1,
        };
        let start = start.max(1);
        b.extend(entries(start, start + count, *term, *size));
        for (k, v) in stable {
            b.set_u64(k, *v);
        }
    }
    b
}

/// Asserts that two stores hold exactly the same log and stable keys.
pub fn assert_same(wal: &Wal, model: &MemStore, ctx: &str) {
    let (f, l) = (model.first_index().unwrap(), model.last_index().unwrap());
    assert_eq!(
        (wal.first_index().unwrap(), wal.last_index().unwrap()),
        (f, l),
        "bounds differ: {ctx}"
    );
    if l > 0 {
        for i in f..=l {
            assert_eq!(
                wal.get_log(i).unwrap(),
                model.get_log(i).unwrap(),
                "entry {i} differs: {ctx}"
            );
        }
    }
    assert_eq!(
        wal.stable_entries(),
        model.stable_entries(),
        "stable differs: {ctx}"
    );
}

/// Whether two stores hold exactly the same log and stable keys (no panics).
pub fn same(wal: &Wal, model: &MemStore) -> bool {
    let b = |s: &dyn LogStore| (s.first_index().unwrap(), s.last_index().unwrap());
    if b(wal) != b(model) {
        return false;
    }
    let (f, l) = b(model);
    if l > 0 && (f..=l).any(|i| wal.get_log(i).ok() != model.get_log(i).ok()) {
        return false;
    }
    wal.stable_entries() == model.stable_entries()
}

/// Applies an op to the model (which must accept it whenever the WAL did).
pub fn apply_model(model: &MemStore, op: &Op) -> raftwal_wal::Result<()> {
    match op {
        Op::Write { .. } => model.write(&batch_for(op, model.last_index().unwrap())),
        Op::DeleteHead(k) => model.delete_range(model.first_index().unwrap(), *k),
        Op::DeleteTail(k) => model.delete_range(*k, model.last_index().unwrap()),
        Op::Set(k, v) => model.set_u64(k, *v),
        Op::Reopen => Ok(()),
    }
}

/// Applies an op to the WAL (reopen is the caller's business).
pub fn apply_wal(wal: &Wal, op: &Op) -> raftwal_wal::Result<()> {
    match op {
        Op::Write { .. } => {
            let t = wal.write(batch_for(op, wal.last_index().unwrap()))?;
            wal.wait_durable(t)
        }
        Op::DeleteHead(k) => wal.delete_range(wal.first_index().unwrap(), *k),
        Op::DeleteTail(k) => wal.delete_range(*k, wal.last_index().unwrap()),
        Op::Set(k, v) => wal.set_u64(k, *v),
        Op::Reopen => Ok(()),
    }
}

/// A copy of a model store.
pub fn clone_model(m: &MemStore) -> MemStore {
    let c = MemStore::new();
    let (f, l) = (m.first_index().unwrap(), m.last_index().unwrap());
    if l > 0 {
        c.store_logs(&m.get_logs(f, l + 1, u64::MAX).unwrap())
            .unwrap();
    }
    for (k, v) in m.stable_entries() {
        c.set(&k, &v).unwrap();
    }
    c
}
