//! Rotation (seal the active segment, switch to the prepared next one), the clean-close
//! checkpoint, and the retirement of dead segments (recycled or removed). Rotation and the
//! checkpoint seal an index and build a manifest the same way.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::batch::Bounds;
use crate::format::{index_name, SegmentId, SEGMENT_HEADER_LEN};
use crate::manifest::{Manifest, SegmentRecord};
use crate::recovery::write_index;
use crate::segment::preallocate::{self, Next, Source};
use crate::segment::{ActiveIndex, Sealed, SealedRef};
use crate::{Error, Result, WalOptions};

use super::{lock, Wal, Writer};

/// Starts preparing segment `seq` in the background, from a retired file if one is kept; or
/// leaves it to be prepared at rotation when background preparation is off (or fails to start).
pub(super) fn start_next(opts: &WalOptions, dir: &Path, seq: u64, free: &mut Vec<PathBuf>) -> Next {
    if opts.read_only || !opts.background_prepare {
        return Next::None;
    }
    let source = next_source(free, opts);
    preallocate::spawn(
        opts.vfs.clone(),
        dir.to_path_buf(),
        seq,
        opts.segment_size,
        source,
    )
    .map_or(Next::None, Next::Pending)
}

/// Whether to start preparing the next segment: at once if a retired file can be recycled (a
/// rename), otherwise once the active segment is an eighth full. Not at once: a new file is a
/// whole segment of zeros to write and flush, which would compete with the appends of a
/// segment just started (a fresh log's first seconds, or right after every rotation); from an
/// eighth on, seven eighths of a segment's time remain to prepare it, and compaction meanwhile
/// may retire a file to recycle instead.
pub(super) fn prepare_due(offset: u64, capacity: u64, free: &[PathBuf]) -> bool {
    let used = offset.saturating_sub(SEGMENT_HEADER_LEN);
    !free.is_empty() || used >= capacity.saturating_sub(SEGMENT_HEADER_LEN) / 8
}

/// Where the next segment comes from: a retired file if one is kept, else a new one.
fn next_source(free: &mut Vec<PathBuf>, opts: &WalOptions) -> Source {
    match free.pop() {
        Some(p) => Source::Recycle(p),
        None => Source::New {
            zero_fill: opts.zero_fill,
        },
    }
}

impl Wal {
    /// Seals the active segment and switches to the prepared next one. Called with the writer
    /// lock held; on error the caller poisons the WAL.
    pub(super) fn rotate(&self, w: &mut Writer) -> Result<()> {
        // 1. Everything written so far becomes durable.
        let started = Instant::now();
        self.sync_file(w.file.as_ref())
            .map_err(|e| Error::io("fdatasync", &w.path, e))?;
        self.metrics.fsync(started.elapsed());
        {
            let mut s = lock(&self.sync);
            s.durable = s.durable.max(w.written);
            s.durable_bytes = s.durable_bytes.max(w.bytes);
            self.durable_seg.store(w.id.seq, Ordering::Release);
            self.durable_offset.store(w.offset, Ordering::Release);
        }
        self.synced.notify_all();
        // 2. The sealed segment's index.
        let (active, bounds, stable, sealed_refs) = {
            let st = self.read_state();
            (
                st.active.clone(),
                st.bounds,
                st.stable.clone(),
                st.sealed.clone(),
            )
        };
        let offsets = self.seal_index(w, &active)?;
        let vfs = self.opts.vfs.as_ref();
        let data = w.file.map().map_err(|e| Error::io("map", &w.path, e))?;
        let sealed = Arc::new(Sealed::with_offsets(
            w.id,
            w.path.clone(),
            data,
            w.offset,
            active.base,
            offsets,
        ));
        // 3. The next segment.
        let waited = Instant::now();
        let next = match w.next.take() {
            Some(p) => p?,
            None => {
                let source = next_source(&mut w.free, &self.opts);
                preallocate::prepare(
                    vfs,
                    &self.dir,
                    w.base.next_seq,
                    self.opts.segment_size,
                    source,
                )?
            }
        };
        ::metrics::histogram!(crate::metrics::PREPARE_WAIT_SECONDS).record(waited.elapsed());
        // 4. The manifest names the new tail; its base state is the state now.
        let new_ref = active.end().map(|end| SealedRef {
            seg: sealed.clone(),
            lo: active.base,
            hi: end,
        });
        let mut records: Vec<SegmentRecord> = sealed_refs.iter().map(SealedRef::record).collect();
        if let Some(r) = &new_ref {
            records.push(SegmentRecord {
                seq: w.id.seq,
                epoch: w.id.epoch,
                lo: r.lo,
                hi: r.hi,
                data_end: w.offset,
            });
        }
        let manifest = next_manifest(
            &w.base,
            bounds,
            records,
            stable,
            (next.id, 0),
            next.id.seq + 1,
        );
        manifest.write(vfs, &self.dir)?;
        // 5. Readers switch over.
        let (dead, uncache) = {
            let mut st = self.write_state();
            if let Some(r) = new_ref {
                st.sealed.push(r);
            } else {
                st.dead.push(w.id.seq);
            }
            // The sealed segment that falls out of the newest `cached_segments` (synced: its
            // pages are clean and can be dropped).
            let uncache = self
                .opts
                .cached_segments
                .and_then(|n| st.sealed.len().checked_sub(n + 1))
                .map(|i| st.sealed[i].seg.path.clone());
            st.active = ActiveIndex::default();
            st.active_file = next.file.clone();
            st.active_path = next.path.clone();
            st.active_epoch = next.id.epoch;
            (std::mem::take(&mut st.dead), uncache)
        };
        if let Some(path) = uncache {
            if let Err(e) = vfs.drop_cache(&path) {
                tracing::warn!(file = %path.display(), error = %e, "could not drop a sealed segment's cached pages");
            }
        }
        w.base = manifest;
        w.file = next.file;
        w.path = next.path;
        w.id.seq = next.id.seq;
        w.id.epoch = next.id.epoch;
        w.offset = SEGMENT_HEADER_LEN;
        w.capacity = next.capacity;
        self.durable_offset
            .store(SEGMENT_HEADER_LEN, Ordering::Release);
        self.durable_seg.store(w.id.seq, Ordering::Release);
        self.remove_segments(w, &dead);
        self.prepare_next_if_due(w);
        self.stats.rotations.fetch_add(1, Ordering::Relaxed);
        ::metrics::counter!(crate::metrics::ROTATIONS).increment(1);
        self.publish_sizes(w.capacity);
        Ok(())
    }

    /// Retires the files of segments the durable manifest no longer names: each is kept for
    /// reuse (renamed to `{seq}.free`) while the pool has room, otherwise removed. Failures are
    /// only logged: a leftover file is dealt with at the next open.
    fn remove_segments(&self, w: &mut Writer, seqs: &[u64]) {
        let vfs = self.opts.vfs.as_ref();
        for &seq in seqs {
            let idx = self.dir.join(index_name(seq));
            if let Err(e) = vfs.remove_file(&idx) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %idx.display(), error = %e, "could not remove index file");
                }
            }
            let seg = self.dir.join(crate::format::segment_name(seq));
            if w.free.len() < self.opts.recycle_segments {
                let to = self.dir.join(crate::format::free_name(seq));
                match vfs.rename(&seg, &to) {
                    Ok(()) => {
                        w.free.push(to);
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(file = %seg.display(), error = %e, "could not retire segment file")
                    }
                }
            }
            if let Err(e) = vfs.remove_file(&seg) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(file = %seg.display(), error = %e, "could not remove segment file");
                }
            }
        }
    }

    /// Rewrites the manifest without segments that are no longer used, then removes their
    /// files. Called with the writer lock held, after the batch that killed them is durable.
    pub(super) fn drop_dead_segments(&self, w: &mut Writer) -> Result<()> {
        let dead = std::mem::take(&mut self.write_state().dead);
        if dead.is_empty() {
            return Ok(());
        }
        let mut m = w.base.clone();
        m.generation += 1;
        m.sealed.retain(|s| !dead.contains(&s.seq));
        m.write(self.opts.vfs.as_ref(), &self.dir)?;
        w.base = m;
        self.remove_segments(w, &dead);
        // A preparation that has not started yet can recycle a retired file now.
        self.prepare_next_if_due(w);
        self.publish_sizes(w.capacity);
        Ok(())
    }

    /// Starts preparing the next segment if none is prepared or being prepared and it is due
    /// ([`prepare_due`]). Called with the writer lock held.
    pub(super) fn prepare_next_if_due(&self, w: &mut Writer) {
        if matches!(w.next, Next::None) && prepare_due(w.offset, w.capacity, &w.free) {
            w.next = start_next(&self.opts, &self.dir, w.base.next_seq, &mut w.free);
        }
    }

    /// Writes a clean-close checkpoint: the tail's index and a manifest whose state is as of
    /// the tail's current end, so the next open replays nothing. Everything written is synced
    /// first. Called when the WAL is dropped; errors are only logged (the next open then simply
    /// replays the tail).
    pub(super) fn checkpoint(&self) -> Result<()> {
        let mut w = lock(&self.writer);
        self.sync_file(w.file.as_ref())
            .map_err(|e| Error::io("fdatasync", &w.path, e))?;
        let st = self.read_state();
        self.seal_index(&w, &st.active)?;
        let m = next_manifest(
            &w.base,
            st.bounds,
            st.sealed.iter().map(SealedRef::record).collect(),
            st.stable.clone(),
            (w.id, w.offset),
            w.base.next_seq,
        );
        drop(st);
        m.write(self.opts.vfs.as_ref(), &self.dir)?;
        w.base = m;
        Ok(())
    }

    /// Writes the index of the active segment `w` (the offsets of `active`'s entries, its data
    /// ending at `w.offset`); returns the offsets.
    fn seal_index(&self, w: &Writer, active: &ActiveIndex) -> Result<Vec<u64>> {
        let offsets: Vec<u64> = active.locs.iter().map(|l| l.offset).collect();
        write_index(
            self.opts.vfs.as_ref(),
            &self.dir.join(index_name(w.id.seq)),
            w.id,
            active.base,
            &offsets,
            w.offset,
        )?;
        Ok(offsets)
    }
}

/// The manifest that follows `base`: the log's `bounds`, its `sealed` segments and `stable`
/// keys, and its tail `(segment, replay from)`.
fn next_manifest(
    base: &Manifest,
    bounds: Bounds,
    sealed: Vec<SegmentRecord>,
    stable: BTreeMap<Vec<u8>, Vec<u8>>,
    (tail, tail_from): (SegmentId, u64),
    next_seq: u64,
) -> Manifest {
    Manifest {
        generation: base.generation + 1,
        first: bounds.first,
        next: bounds.next,
        next_seq,
        sealed,
        tail_seq: tail.seq,
        tail_epoch: tail.epoch,
        tail_from,
        stable,
    }
}
