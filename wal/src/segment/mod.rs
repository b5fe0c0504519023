//! Segments: the files frames live in. The active segment's index is in memory; a sealed
//! segment is immutable, memory-mapped, and indexed by a sidecar file.

pub(crate) mod preallocate;
pub(crate) mod reader;
pub(crate) mod writer;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use crate::batch::Step;
use crate::error::CorruptKind;
use crate::format::{decode_frame, SegmentId, SEGMENT_HEADER_LEN};
use crate::vfs::Mapped;
use crate::{Error, LogEntry, Result};

pub use crate::format::index::IndexHeader;
pub(crate) use crate::format::index::{
    decode_header, encode as encode_index, offset as index_offset, verify_body,
};

/// Where a frame is: its offset and total size (header, payload, padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub offset: u64,
    pub size: u64,
}

/// The physical index of a segment being written (or replayed): entry `base + k` is at
/// `locs[k]`. Applies the same structural steps the log does, so the live writer, recovery and
/// index rebuilds agree on what a segment holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct ActiveIndex {
    pub base: u64,
    pub locs: Vec<Loc>,
}

impl ActiveIndex {
    /// One past the last index held, or `None` when empty.
    pub fn end(&self) -> Option<u64> {
        (!self.locs.is_empty()).then(|| self.base + self.locs.len() as u64)
    }

    pub fn get(&self, index: u64) -> Option<Loc> {
        let k = index.checked_sub(self.base)?;
        self.locs.get(usize::try_from(k).ok()?).copied()
    }

    /// Records entry `index`; it must continue the segment (or start it).
    pub fn push(&mut self, index: u64, loc: Loc) -> Result<(), CorruptKind> {
        match self.end() {
            None => self.base = index,
            Some(e) if e == index => {}
            Some(e) => {
                return Err(CorruptKind::IndexGap {
                    expected: e,
                    found: index,
                })
            }
        }
        self.locs.push(loc);
        Ok(())
    }

    pub fn apply(&mut self, step: Step) {
        match step {
            Step::TruncateTail(k) => {
                let keep = (k + 1).saturating_sub(self.base);
                self.locs
                    .truncate(usize::try_from(keep).unwrap_or(usize::MAX));
            }
            Step::Reset(_) => self.locs.clear(),
            Step::TruncateHead(k) => {
                if self.end().is_some_and(|e| k.saturating_add(1) >= e) {
                    self.locs.clear();
                }
            }
        }
    }
}

/// How a sealed segment finds its frames.
enum Offsets {
    /// The mapped sidecar index (header already verified).
    Mapped(Mapped),
    /// Rebuilt from the frames.
    Rebuilt(Vec<u64>),
}

/// The outcome of checking a sealed segment's index after a read went astray: `Ok(None)` the
/// index is intact, `Ok(Some)` rebuilt offsets, `Err` damaged frames at an offset.
type Repair = Result<Option<Vec<u64>>, (u64, CorruptKind)>;

/// A sealed, immutable segment.
pub(crate) struct Sealed {
    pub id: SegmentId,
    pub path: PathBuf,
    pub data: Mapped,
    pub data_end: u64,
    /// Index of the first entry the index describes.
    pub first: u64,
    /// Number of entries the index describes.
    pub count: u64,
    offsets: Offsets,
    /// Filled on the first read that finds an offset not leading to its frame: the verified or
    /// rebuilt offsets.
    repaired: OnceLock<Repair>,
}

impl std::fmt::Debug for Sealed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealed")
            .field("seq", &self.id.seq)
            .field("path", &self.path)
            .field("first", &self.first)
            .field("count", &self.count)
            .finish_non_exhaustive()
    }
}

/// Rebuilds a sealed segment's physical index from its frames. Every frame up to `data_end`
/// must be valid: a sealed segment was fully durable before it was sealed.
pub(crate) fn rebuild_index(
    data: &[u8],
    epoch: u64,
    data_end: u64,
) -> Result<ActiveIndex, (u64, CorruptKind)> {
    let mut idx = ActiveIndex::default();
    let end = reader::scan(data, epoch, SEGMENT_HEADER_LEN, data_end, |at, ops| {
        for op in ops {
            match op {
                reader::Op::Step(s) => idx.apply(*s),
                reader::Op::Entry { index, loc, .. } => {
                    idx.push(*index, *loc).map_err(|k| (at, k))?
                }
                reader::Op::Stable { .. } => {}
            }
        }
        Ok(())
    })?;
    if let Some(stop) = end.stop {
        return Err((stop.bad_offset, stop.kind));
    }
    if end.committed_end != data_end.min(data.len() as u64) {
        return Err((
            end.committed_end,
            CorruptKind::Truncated {
                needed: data_end,
                available: end.committed_end,
            },
        ));
    }
    Ok(idx)
}

impl Sealed {
    /// A sealed segment read through its mapped index, whose header the caller verified.
    pub fn with_index(
        id: SegmentId,
        path: PathBuf,
        data: Mapped,
        data_end: u64,
        header: IndexHeader,
        index: Mapped,
    ) -> Self {
        Sealed {
            id,
            path,
            data,
            data_end,
            first: header.first,
            count: header.count,
            offsets: Offsets::Mapped(index),
            repaired: OnceLock::new(),
        }
    }

    /// A sealed segment read through offsets held in memory.
    pub fn with_offsets(
        id: SegmentId,
        path: PathBuf,
        data: Mapped,
        data_end: u64,
        first: u64,
        offsets: Vec<u64>,
    ) -> Self {
        Sealed {
            id,
            path,
            data,
            data_end,
            first,
            count: offsets.len() as u64,
            offsets: Offsets::Rebuilt(offsets),
            repaired: OnceLock::new(),
        }
    }

    fn raw_offset(&self, k: u64) -> u64 {
        match &self.offsets {
            Offsets::Mapped(m) => index_offset((**m).as_ref(), k),
            Offsets::Rebuilt(v) => v[k as usize],
        }
    }

    fn corrupt(&self, offset: u64, index: u64, kind: CorruptKind) -> Error {
        Error::Corrupt {
            path: self.path.clone(),
            offset,
            indexes: Some((index, index)),
            kind,
        }
    }

    fn decode_at(&self, offset: u64, index: u64) -> Result<LogEntry, CorruptKind> {
        let data = (*self.data).as_ref();
        let end = self.data_end.min(data.len() as u64);
        if offset < SEGMENT_HEADER_LEN || offset >= end {
            return Err(CorruptKind::BadLength {
                found: offset,
                limit: end,
            });
        }
        let f = decode_frame(&data[offset as usize..end as usize], self.id.epoch)
            .map_err(|e| e.kind())?;
        reader::entry_from_frame(&f, index)
    }

    /// Reads entry `index`, which the caller checked lies in `[first, first + count)`.
    ///
    /// If the index leads astray, the index's own checksum is checked and, if it is damaged,
    /// the offsets are rebuilt from the frames and the read retried.
    pub fn read(&self, index: u64) -> Result<LogEntry> {
        let k = index - self.first;
        if let Some(Ok(Some(v))) = self.repaired.get() {
            let off = v[k as usize];
            return self
                .decode_at(off, index)
                .map_err(|e| self.corrupt(off, index, e));
        }
        let off = self.raw_offset(k);
        let first_err = match self.decode_at(off, index) {
            Ok(e) => return Ok(e),
            Err(e) => e,
        };
        let repaired = self.repaired.get_or_init(|| self.verify_or_rebuild());
        match repaired {
            Ok(Some(v)) => {
                let off = v[k as usize];
                self.decode_at(off, index)
                    .map_err(|e| self.corrupt(off, index, e))
            }
            Ok(None) => Err(self.corrupt(off, index, first_err)),
            Err((at, kind)) => Err(self.corrupt(*at, index, kind.clone())),
        }
    }

    /// Checks the index's body checksum (a no-op for offsets rebuilt in memory).
    /// Verifies every frame up to `data_end` (a sealed segment was wholly durable).
    pub fn check_frames(&self) -> Result<(), (u64, CorruptKind)> {
        rebuild_index((*self.data).as_ref(), self.id.epoch, self.data_end).map(drop)
    }

    pub fn check_index(&self) -> Result<(), CorruptKind> {
        match &self.offsets {
            Offsets::Mapped(m) => verify_body((**m).as_ref(), self.count),
            Offsets::Rebuilt(_) => Ok(()),
        }
    }

    /// `Ok(None)`: the index is intact (the frame itself is damaged); `Ok(Some)`: rebuilt
    /// offsets; `Err`: the frames themselves are damaged.
    fn verify_or_rebuild(&self) -> Repair {
        if let Offsets::Mapped(m) = &self.offsets {
            if verify_body((**m).as_ref(), self.count).is_ok() {
                return Ok(None);
            }
            tracing::warn!(segment = %self.path.display(), "damaged index; rebuilding it from the frames");
        }
        let idx = rebuild_index((*self.data).as_ref(), self.id.epoch, self.data_end)?;
        if idx.base != self.first || (idx.locs.len() as u64) < self.count {
            return Err((
                0,
                CorruptKind::IndexGap {
                    expected: self.first,
                    found: idx.base,
                },
            ));
        }
        Ok(Some(idx.locs.iter().map(|l| l.offset).collect()))
    }
}

/// A live sealed segment and the part of it the log still uses: `[lo, hi)`.
#[derive(Debug, Clone)]
pub(crate) struct SealedRef {
    pub seg: Arc<Sealed>,
    pub lo: u64,
    pub hi: u64,
}

impl SealedRef {
    /// How the manifest records it.
    pub fn record(&self) -> crate::manifest::SegmentRecord {
        crate::manifest::SegmentRecord {
            seq: self.seg.id.seq,
            epoch: self.seg.id.epoch,
            lo: self.lo,
            hi: self.hi,
            data_end: self.seg.data_end,
        }
    }
}
