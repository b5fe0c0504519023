//! The in-memory reference model.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use crate::batch::{delete_batch, plan, Bounds, Step};
use crate::{LogEntry, LogStore, Result, StableStore, WriteBatch};

/// An in-memory [`LogStore`] and [`StableStore`]: the reference model the WAL is tested against,
/// and a store for tests of code built on the traits. Nothing is durable.
///
/// ```
/// use raftwal_wal::{LogEntry, LogStore, MemStore, StableStore};
/// let m = MemStore::new();
/// m.store_logs(&[LogEntry::new(1, 1, b"a".to_vec())]).unwrap();
/// m.set_u64(b"term", 1).unwrap();
/// assert_eq!(m.last_index().unwrap(), 1);
/// assert_eq!(m.get_u64(b"term").unwrap(), Some(1));
/// ```
#[derive(Debug, Default)]
pub struct MemStore {
    inner: Mutex<Model>,
}

/// A copy of the store as it is now (entries and stable keys); the two then change
/// independently, which makes a clone a cheap crash image for tests.
///
/// ```
/// use raftwal_wal::{LogEntry, LogStore, MemStore};
/// let a = MemStore::new();
/// a.store_logs(&[LogEntry::new(1, 1, b"x".to_vec())]).unwrap();
/// let b = a.clone();
/// a.delete_range(1, 1).unwrap();
/// assert_eq!(b.get_log(1).unwrap().data, b"x");
/// ```
impl Clone for MemStore {
    fn clone(&self) -> Self {
        MemStore {
            inner: Mutex::new(self.lock().clone()),
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Model {
    bounds: Bounds,
    entries: VecDeque<LogEntry>,
    stable: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Model> {
        crate::lock(&self.inner)
    }

    /// Applies a batch atomically, with the same rules as [`crate::Wal::write`].
    ///
    /// # Errors
    /// As [`crate::Wal::write`]; nothing changes on error.
    pub fn write(&self, batch: &WriteBatch) -> Result<()> {
        let mut m = self.lock();
        let steps = plan(m.bounds, batch)?;
        for s in steps {
            s.apply(&mut m.bounds);
            let b = m.bounds;
            m.entries.retain(|e| b.contains(e.index));
            if matches!(s, Step::Reset(_)) {
                m.entries.clear();
            }
        }
        for e in &batch.entries {
            m.entries.push_back(e.clone());
            m.bounds.next = e.index + 1;
        }
        for (k, v) in &batch.stable {
            m.stable.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    /// All stable keys and values.
    pub fn stable_entries(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.lock().stable.clone()
    }
}

impl LogStore for MemStore {
    fn first_index(&self) -> Result<u64> {
        Ok(self.lock().bounds.reported().0)
    }
    fn last_index(&self) -> Result<u64> {
        Ok(self.lock().bounds.reported().1)
    }
    fn get_log(&self, index: u64) -> Result<LogEntry> {
        let m = self.lock();
        if !m.bounds.contains(index) {
            return Err(m.bounds.not_found(index));
        }
        let pos = (index - m.bounds.first) as usize;
        m.entries
            .get(pos)
            .cloned()
            .ok_or_else(|| m.bounds.not_found(index))
    }
    fn get_logs(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<LogEntry>> {
        let b = self.lock().bounds;
        crate::state::collect_range(b, lo, hi, max_bytes, |i| self.get_log(i))
    }
    fn store_logs(&self, entries: &[LogEntry]) -> Result<()> {
        self.write(&WriteBatch::from_entries(entries.to_vec()))
    }
    fn delete_range(&self, min: u64, max: u64) -> Result<()> {
        let b = self.lock().bounds;
        match delete_batch(b, min, max)? {
            Some(batch) => self.write(&batch),
            None => Ok(()),
        }
    }
}

impl StableStore for MemStore {
    fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = WriteBatch::new();
        b.set(key, value);
        self.write(&b)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.lock().stable.get(key).cloned())
    }
}
