//! What raftwal's tests, fuzz targets and simulations share (not published): the random
//! workload of [`Op`]s with the batches they mean, the comparison of a store with the
//! `MemStore` model, the entries those workloads write, and seeded randomness.
//!
//! ```
//! use raftwal_testkit::{apply_model, random_op, Rng};
//! use raftwal_wal::{LogStore, MemStore};
//! let (model, mut rng) = (MemStore::new(), Rng::new(7));
//! for _ in 0..20 {
//!     let op = random_op(&mut rng, model.first_index().unwrap(), model.last_index().unwrap());
//!     let _ = apply_model(&model, &op);
//! }
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::missing_panics_doc,
    clippy::missing_errors_doc,
    clippy::should_implement_trait
)]

use raftwal_wal::{EntryKind, LogEntry, LogStore, MemStore, StableStore, Wal};

/// A seeded generator: the same seed gives the same stream on every machine.
pub struct Rng(fastrand::Rng);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(fastrand::Rng::with_seed(seed))
    }
    /// Any `u64`.
    pub fn next(&mut self) -> u64 {
        self.0.u64(..)
    }
    /// A draw in `[0, n)` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.0.u64(..n.max(1))
    }
    /// One of `v`, or `None` if it is empty.
    pub fn pick<T: Copy>(&mut self, v: &[T]) -> Option<T> {
        self.0.choice(v.iter().copied())
    }
}

/// Entry `index` of `term` with `len` bytes of data derived from its index (and, every third
/// index, a three-byte context), so a misplaced entry never compares equal.
pub fn entry(index: u64, term: u64, len: usize) -> LogEntry {
    let mut data = vec![0u8; len];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (index as usize * 31 + i * 7) as u8;
    }
    LogEntry {
        index,
        term,
        kind: EntryKind::Normal,
        context: if index.is_multiple_of(3) {
            vec![index as u8; 3]
        } else {
            vec![]
        },
        data,
    }
}

/// Entries `[lo, hi)` of `term`, as [`entry`] makes them.
pub fn entries(lo: u64, hi: u64, term: u64, len: usize) -> Vec<LogEntry> {
    (lo..hi).map(|i| entry(i, term, len)).collect()
}

/// One operation of a random workload.
#[derive(Debug, Clone)]
pub enum Op {
    /// A batch: optional tail truncation, entries (count, size), stable sets.
    Write {
        /// Drop every entry after this index first.
        truncate_after: Option<u64>,
        /// How many entries to append.
        count: u64,
        /// Each entry's data length.
        size: usize,
        /// Their term.
        term: u64,
        /// Stable keys set in the same batch.
        stable: Vec<(Vec<u8>, u64)>,
    },
    /// Delete every entry up to this index (head compaction).
    DeleteHead(u64),
    /// Delete every entry from this index on (tail truncation).
    DeleteTail(u64),
    /// Set a stable key.
    Set(Vec<u8>, u64),
    /// Close and reopen the store (the caller does it).
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
