//! The in-memory reference store.

use std::io::{self, Cursor, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::meta::{new_id, now_nanos, META_VERSION};
use crate::{Error, Result, SnapshotMeta, SnapshotSink, SnapshotStore};

type Entries = Vec<(SnapshotMeta, Arc<[u8]>)>;

/// An in-memory [`SnapshotStore`] with the same semantics as the file store (ordering,
/// retention, checksums), for tests and as the reference model. Nothing is durable.
#[derive(Debug, Clone)]
pub struct MemSnapshotStore {
    inner: Arc<Mutex<Entries>>,
    retain: usize,
    protected: Arc<Mutex<Option<(u64, u64)>>>,
}

impl MemSnapshotStore {
    /// A store keeping the `retain` newest snapshots.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `retain == 0`.
    pub fn new(retain: usize) -> Result<Self> {
        if retain == 0 {
            return Err(Error::Invalid("retain must be at least 1".into()));
        }
        Ok(MemSnapshotStore {
            inner: Arc::default(),
            retain,
            protected: Arc::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Entries> {
        crate::lock(&self.inner)
    }
}

/// A snapshot being written into memory.
#[derive(Debug)]
pub struct MemSink {
    store: MemSnapshotStore,
    meta: SnapshotMeta,
    data: Vec<u8>,
}

impl Write for MemSink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.data.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl SnapshotSink for MemSink {
    fn id(&self) -> &str {
        &self.meta.id
    }
    fn commit(mut self) -> Result<SnapshotMeta> {
        self.meta.size = self.data.len() as u64;
        self.meta.checksum = crc32fast::hash(&self.data);
        let mut v = self.store.lock();
        v.push((self.meta.clone(), Arc::from(std::mem::take(&mut self.data))));
        v.sort_by(|a, b| SnapshotMeta::newest_first(&a.0, &b.0));
        let protected = *crate::lock(&self.store.protected);
        let retain = self.store.retain;
        let mut i = 0;
        v.retain(|(m, _)| {
            i += 1;
            i <= retain || Some((m.index, m.term)) == protected
        });
        Ok(self.meta)
    }
    fn cancel(self) -> Result<()> {
        Ok(())
    }
}

impl SnapshotStore for MemSnapshotStore {
    type Sink = MemSink;
    type Reader = Cursor<Arc<[u8]>>;

    fn create(
        &self,
        index: u64,
        term: u64,
        configuration: &[u8],
        configuration_index: u64,
    ) -> Result<MemSink> {
        let created = now_nanos();
        Ok(MemSink {
            store: self.clone(),
            meta: SnapshotMeta {
                id: new_id(term, index, created),
                index,
                term,
                configuration: configuration.to_vec(),
                configuration_index,
                size: 0,
                checksum: 0,
                version: META_VERSION,
                created,
            },
            data: Vec::new(),
        })
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>> {
        Ok(self.lock().iter().map(|(m, _)| m.clone()).collect())
    }

    fn open(&self, id: &str) -> Result<(SnapshotMeta, Self::Reader)> {
        self.lock()
            .iter()
            .find(|(m, _)| m.id == id)
            .map(|(m, d)| (m.clone(), Cursor::new(d.clone())))
            .ok_or_else(|| Error::NotFound { id: id.into() })
    }

    fn protect(&self, index: u64, term: u64) {
        *crate::lock(&self.protected) = Some((index, term));
    }
}

/// Reads a whole snapshot into memory (a convenience for small snapshots and tests).
///
/// # Errors
/// Any error of the reader, including a checksum mismatch.
pub fn read_all(mut r: impl Read) -> io::Result<Vec<u8>> {
    let mut v = Vec::new();
    r.read_to_end(&mut v)?;
    Ok(v)
}
