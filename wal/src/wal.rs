//! The write-ahead log: open, append (pipelined), read, truncate. Its parts: `sync` (group
//! commit), `rotate` (rotation, checkpoint, retiring segments), `verify` (the verifier).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use crate::batch::{delete_batch, plan, Step};
use crate::error::CorruptKind;
use crate::format::SegmentId;
use crate::format::{decode_frame, SEGMENT_HEADER_LEN};
use crate::manifest::Manifest;
use crate::recovery::{recover, RecoveryReport};
use crate::segment::preallocate::Next;
use crate::segment::{reader, writer};
use crate::state::{collect_range, Location, LogState};
use crate::vfs::VfsFile;
use crate::{
    lock, Error, LogEntry, LogStore, Result, StableStore, SyncMode, Ticket, WalOptions, WriteBatch,
};

mod rotate;
mod sync;
mod verify;

use rotate::{prepare_due, start_next};
use sync::SyncState;
pub use verify::VerifyMode;

/// The append side, serialised by one mutex.
struct Writer {
    file: Arc<dyn VfsFile>,
    path: PathBuf,
    id: SegmentId,
    offset: u64,
    capacity: u64,
    buf: Vec<u8>,
    /// Sequence number of the last write.
    written: u64,
    /// Bytes written to segments since open.
    bytes: u64,
    /// The manifest as of the start of the active segment.
    base: Manifest,
    next: Next,
    /// Retired segment files kept for reuse.
    free: Vec<PathBuf>,
}

/// Zero bytes written after every batch.
const TERMINATOR: u64 = crate::format::FRAME_HEADER_LEN as u64;

/// Counters for monitoring and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalStats {
    /// Writes (batches) accepted since open.
    pub writes: u64,
    /// `fdatasync`/`fsync` calls made for durability (not counting rotations).
    pub syncs: u64,
    /// Segment rotations.
    pub rotations: u64,
    /// Waits for an fsync in flight that ended while spinning ([`WalOptions::spin_wait`]).
    pub spun_waits: u64,
    /// Waits for an fsync in flight that went to sleep (spinning off, or its budget spent).
    pub slept_waits: u64,
}

#[derive(Default)]
struct Counters {
    writes: AtomicU64,
    syncs: AtomicU64,
    spun_waits: AtomicU64,
    slept_waits: AtomicU64,
    rotations: AtomicU64,
}

/// A description of one live segment, for tools.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SegmentInfo {
    /// Its file.
    pub path: PathBuf,
    /// Sequence number.
    pub seq: u64,
    /// First index in use (`None` when none).
    pub first: Option<u64>,
    /// Last index in use.
    pub last: Option<u64>,
    /// Whether it is sealed (immutable).
    pub sealed: bool,
    /// Bytes of committed frames, including the header.
    pub data_end: u64,
    /// File size.
    pub file_size: u64,
}

/// The segmented, checksummed write-ahead log. See the crate documentation.
pub struct Wal {
    dir: PathBuf,
    opts: WalOptions,
    state: RwLock<LogState>,
    writer: Mutex<Writer>,
    sync: Mutex<SyncState>,
    synced: Condvar,
    /// Incremented (under the sync lock) each time an fsync in flight ends, well or badly, or
    /// the WAL is poisoned: what spinning waiters watch instead of sleeping on `synced`.
    sync_ends: AtomicU64,
    poisoned: AtomicBool,
    /// Sequence number of the last write, readable without the writer lock.
    written: AtomicU64,
    stats: Counters,
    /// The active segment (by seq) is durable up to this offset. Changed for a new segment only
    /// under the writer lock; otherwise it only grows.
    durable_seg: AtomicU64,
    durable_offset: AtomicU64,
    report: RecoveryReport,
    _lock: Option<Box<dyn Send + Sync>>,
    metrics: crate::metrics::Handles,
}

impl std::fmt::Debug for Wal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("dir", &self.dir)
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, recovering after a crash.
    ///
    /// # Errors
    /// [`Error::Locked`] if another user holds it; [`Error::NotAWal`] for a file or a foreign
    /// directory; [`Error::Corrupt`] for damage recovery may not repair in the chosen
    /// [`crate::RecoveryMode`]; [`Error::UnsupportedVersion`]; I/O errors.
    pub fn open(dir: impl AsRef<Path>, opts: WalOptions) -> Result<Wal> {
        let dir = dir.as_ref().to_path_buf();
        let started = Instant::now();
        let r = recover(&dir, &opts)?;
        crate::metrics::recovered(&dir, &r.report, started.elapsed());
        let seq = r.manifest.tail_seq;
        let mut free = r.free;
        let next = match r.prepared {
            Some(p) => Next::Ready(p),
            None if prepare_due(r.write_offset, r.capacity, &free) => {
                start_next(&opts, &dir, r.manifest.next_seq, &mut free)
            }
            None => Next::None,
        };
        let writer = Writer {
            file: r.tail_file,
            path: r.state.active_path.clone(),
            id: SegmentId {
                seq,
                epoch: r.tail_epoch,
            },
            offset: r.write_offset,
            capacity: r.capacity,
            buf: Vec::new(),
            written: 0,
            bytes: 0,
            base: r.manifest,
            next,
            free,
        };
        let wal = Wal {
            metrics: crate::metrics::Handles::new(),
            dir,
            state: RwLock::new(r.state),
            writer: Mutex::new(writer),
            sync: Mutex::new(SyncState::default()),
            synced: Condvar::new(),
            sync_ends: AtomicU64::new(0),
            poisoned: AtomicBool::new(false),
            written: AtomicU64::new(0),
            stats: Counters::default(),
            durable_seg: AtomicU64::new(seq),
            durable_offset: AtomicU64::new(r.write_offset),
            report: r.report,
            _lock: r.lock,
            opts,
        };
        if !wal.opts.is_read_only() {
            ::metrics::gauge!(crate::metrics::POISONED).set(0.0);
            let active = lock(&wal.writer).capacity;
            wal.publish_sizes(active);
        }
        Ok(wal)
    }

    /// Publishes the live segments' count and size on disk (`active`: the active segment's).
    fn publish_sizes(&self, active: u64) {
        let st = self.read_state();
        let sealed: u64 = st
            .sealed
            .iter()
            .map(|s| (*s.seg.data).as_ref().len() as u64)
            .sum();
        crate::metrics::sizes(st.sealed.len() + 1, sealed + active);
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What recovery found and did when this WAL was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Counters since open.
    pub fn stats(&self) -> WalStats {
        WalStats {
            writes: self.stats.writes.load(Ordering::Relaxed),
            syncs: self.stats.syncs.load(Ordering::Relaxed),
            rotations: self.stats.rotations.load(Ordering::Relaxed),
            spun_waits: self.stats.spun_waits.load(Ordering::Relaxed),
            slept_waits: self.stats.slept_waits.load(Ordering::Relaxed),
        }
    }

    fn read_state(&self) -> RwLockReadGuard<'_, LogState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, LogState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        crate::metrics::poisoned(&self.dir);
        let _g = lock(&self.sync);
        self.sync_ends.fetch_add(1, Ordering::Release);
        self.synced.notify_all();
    }

    fn check_writable(&self) -> Result<()> {
        if self.opts.read_only {
            return Err(Error::ReadOnly);
        }
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Poisoned);
        }
        Ok(())
    }

    /// Writes a batch: validated, ordered after every earlier write, and readable as soon as
    /// this returns — but **not yet durable**. Redeem the ticket with [`Wal::wait_durable`].
    ///
    /// ```
    /// # let dir = tempfile::tempdir().unwrap();
    /// use raftwal_wal::{LogEntry, LogStore, Wal, WalOptions, WriteBatch};
    /// let wal = Wal::open(dir.path(), WalOptions::default().segment_size(1 << 20)).unwrap();
    /// let mut b = WriteBatch::new();
    /// b.append(LogEntry::new(1, 1, b"a".to_vec())).set_u64(b"vote", 2);
    /// let t = wal.write(b).unwrap();
    /// assert_eq!(wal.get_log(1).unwrap().data, b"a"); // readable at once
    /// wal.wait_durable(t).unwrap();                      // durable now
    /// ```
    ///
    /// # Errors
    /// [`Error::OutOfOrder`], [`Error::InvalidRange`], [`Error::TooLarge`] (nothing written);
    /// [`Error::Poisoned`] after an earlier failure; [`Error::ReadOnly`]; an I/O error, which
    /// poisons the WAL.
    pub fn write(&self, batch: WriteBatch) -> Result<Ticket> {
        self.check_writable()?;
        let mut w = lock(&self.writer);
        self.check_writable()?;
        let bounds = self.read_state().bounds;
        let steps = plan(bounds, &batch)?;
        let entries = batch.entries.len() as u64;
        let mut enc = self.encode(&mut w, &steps, &batch);
        if w.offset + enc.len + TERMINATOR > w.capacity {
            if w.offset > SEGMENT_HEADER_LEN {
                self.rotate(&mut w).inspect_err(|_| self.poison())?;
                enc = self.encode(&mut w, &steps, &batch);
            }
            let need = w.offset + enc.len + TERMINATOR;
            if need > w.capacity {
                // A batch larger than a segment: this segment grows to hold it.
                w.file.set_len(need).map_err(|e| {
                    self.poison();
                    Error::io("extend segment", &w.path, e)
                })?;
                w.capacity = need;
            }
        }
        let offset = w.offset;
        let len = enc.len;
        // Every batch is followed by a zeroed frame header (overwritten by the next batch), so
        // the log always ends in a clean stop, even in a recycled file full of old frames.
        enc.push_zeros(&mut w.buf, TERMINATOR as usize);
        if let Err(e) = w
            .file
            .write_all_vectored_at(&enc.slices(&w.buf, &batch), offset)
        {
            self.poison();
            return Err(Error::io("write", &w.path, e));
        }
        w.offset += len;
        w.written += 1;
        w.bytes += len;
        self.written.store(w.written, Ordering::Release);
        self.prepare_next_if_due(&mut w);
        let ticket = Ticket(w.written);
        {
            let mut st = self.write_state();
            for s in &steps {
                st.apply_step(*s);
                self.metrics.step(s);
            }
            for (e, loc) in batch.entries.iter().zip(enc.locs) {
                // `plan` checked contiguity, so the active index accepts every entry.
                if st.active.push(e.index, loc).is_err() {
                    drop(st);
                    self.poison();
                    return Err(Error::Corrupt {
                        path: w.path.clone(),
                        offset,
                        indexes: Some((e.index, e.index)),
                        kind: CorruptKind::Structure("in-memory index out of step with the log"),
                    });
                }
                st.bounds.next = e.index + 1;
            }
            for (k, v) in batch.stable {
                st.stable.insert(k, v);
            }
        }
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        self.metrics.write(entries, len);
        drop(w);
        if self.opts.sync == SyncMode::None {
            lock(&self.sync).durable = ticket.0;
        }
        Ok(ticket)
    }

    fn encode(&self, w: &mut Writer, steps: &[Step], batch: &WriteBatch) -> writer::Encoded {
        // The writer lock is held, so the durable segment cannot change under us.
        let durable_to = if self.durable_seg.load(Ordering::Acquire) == w.id.seq {
            self.durable_offset.load(Ordering::Acquire)
        } else {
            SEGMENT_HEADER_LEN
        };
        let Writer {
            buf, id, offset, ..
        } = w;
        writer::encode_batch(buf, id.epoch, *offset, durable_to, steps, batch)
    }

    /// `write` then `wait_durable`.
    fn write_durable(&self, batch: WriteBatch) -> Result<()> {
        let started = Instant::now();
        let t = self.write(batch)?;
        self.wait_durable(t)?;
        self.metrics.write_seconds.record(started.elapsed());
        Ok(())
    }

    /// All stable keys and values.
    pub fn stable_entries(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.read_state().stable.clone()
    }

    /// The live segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let st = self.read_state();
        let mut out: Vec<SegmentInfo> = st
            .sealed
            .iter()
            .map(|s| SegmentInfo {
                path: s.seg.path.clone(),
                seq: s.seg.id.seq,
                first: Some(s.lo.max(st.bounds.first)),
                last: Some(s.hi - 1),
                sealed: true,
                data_end: s.seg.data_end,
                file_size: (*s.seg.data).as_ref().len() as u64,
            })
            .collect();
        let w = lock(&self.writer);
        let live = st.active.end().filter(|_| !st.bounds.is_empty());
        out.push(SegmentInfo {
            path: w.path.clone(),
            seq: w.id.seq,
            first: live.map(|_| st.active.base.max(st.bounds.first)),
            last: live.map(|e| e - 1),
            sealed: false,
            data_end: w.offset,
            file_size: w.capacity,
        });
        out
    }

    /// The manifest as it stands on disk (the base state recovery starts from), for tools.
    pub fn manifest(&self) -> Manifest {
        lock(&self.writer).base.clone()
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Let a background preparation finish so the next open does not race with it; a
        // finished one is reused by the next open.
        let _ = lock(&self.writer).next.take();
        if !self.opts.read_only && !self.poisoned.load(Ordering::SeqCst) {
            if let Err(e) = self.checkpoint() {
                tracing::warn!(dir = %self.dir.display(), error = %e, "clean-close checkpoint failed; the next open replays the tail");
            }
        }
    }
}

impl LogStore for Wal {
    fn first_index(&self) -> Result<u64> {
        Ok(self.read_state().bounds.reported().0)
    }

    fn last_index(&self) -> Result<u64> {
        Ok(self.read_state().bounds.reported().1)
    }

    fn get_log(&self, index: u64) -> Result<LogEntry> {
        let location = self.read_state().locate(index)?;
        match location {
            Location::Sealed(seg) => seg.read(index),
            Location::Active {
                file,
                path,
                epoch,
                loc,
            } => {
                let mut buf = vec![0u8; loc.size as usize];
                file.read_exact_at(&mut buf, loc.offset)
                    .map_err(|e| Error::io("read", &path, e))?;
                let corrupt = |kind| Error::Corrupt {
                    path: path.clone(),
                    offset: loc.offset,
                    indexes: Some((index, index)),
                    kind,
                };
                let f = decode_frame(&buf, epoch).map_err(|e| corrupt(e.kind()))?;
                reader::entry_from_frame(&f, index).map_err(corrupt)
            }
        }
    }

    fn get_logs(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<LogEntry>> {
        let b = self.read_state().bounds;
        collect_range(b, lo, hi, max_bytes, |i| self.get_log(i))
    }

    fn store_logs(&self, entries: &[LogEntry]) -> Result<()> {
        self.write_durable(WriteBatch::from_entries(entries.to_vec()))
    }

    fn delete_range(&self, min: u64, max: u64) -> Result<()> {
        self.check_writable()?;
        let bounds = self.read_state().bounds;
        let Some(batch) = delete_batch(bounds, min, max)? else {
            return Ok(());
        };
        self.write_durable(batch)?;
        let mut w = lock(&self.writer);
        self.check_writable()?;
        self.drop_dead_segments(&mut w)
            .inspect_err(|_| self.poison())
    }
}

impl StableStore for Wal {
    fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let mut b = WriteBatch::new();
        b.set(key, value);
        self.write_durable(b)
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.read_state().stable.get(key).cloned())
    }
}
