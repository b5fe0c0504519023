//! Preparing segment files ahead of need, in a background thread, so rotation never waits for
//! allocation and appends always overwrite blocks that were already written (zero-filled):
//! `fdatasync` then never has to convert unwritten extents or grow the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::format::{segment_name, SegmentHeader, SegmentId, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::vfs::{OpenMode, Vfs, VfsFile};
use crate::{Error, Result};

/// A segment file ready to receive frames: created, sized, zero-filled (if asked), header
/// written, and all of it durable, including its directory entry.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub id: SegmentId,
    pub path: PathBuf,
    pub file: Arc<dyn VfsFile>,
    pub capacity: u64,
}

/// The next segment: prepared and ready, being prepared in the background, or not started.
#[derive(Debug, Default)]
pub(crate) enum Next {
    #[default]
    None,
    Ready(Prepared),
    Pending(JoinHandle<Result<Prepared>>),
}

impl Next {
    /// Takes the prepared segment, waiting for a background preparation; `None` if none was
    /// started.
    pub fn take(&mut self) -> Option<Result<Prepared>> {
        match std::mem::take(self) {
            Next::None => None,
            Next::Ready(p) => Some(Ok(p)),
            Next::Pending(h) => Some(h.join().unwrap_or_else(|_| {
                Err(Error::Invalid("segment preparation thread panicked".into()))
            })),
        }
    }
}

/// Reuses a segment prepared by an earlier run and never used: a file named for the next
/// sequence number never holds frames (frames are written only after the manifest names the
/// segment), so if its header and size are right it is ready. Holes left by a crash during its
/// zero-filling read as zeros, which is correct, just slower to write once.
pub(crate) fn reuse(vfs: &dyn Vfs, dir: &Path, seq: u64, size: u64) -> Option<Prepared> {
    let path = dir.join(segment_name(seq));
    let file = vfs.open(&path, OpenMode::ReadWrite).ok()?;
    if file.len().ok()? != size.max(SEGMENT_HEADER_LEN) {
        return None;
    }
    let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
    file.read_exact_at(&mut b, 0).ok()?;
    let h = SegmentHeader::decode(&b).ok()?;
    (h.seq == seq).then_some(Prepared {
        id: SegmentId {
            seq,
            epoch: h.epoch,
        },
        path,
        file,
        capacity: size.max(SEGMENT_HEADER_LEN),
    })
}

/// A fresh random salt for a segment's checksums.
pub(crate) fn new_epoch(seq: u64) -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((seq, std::time::SystemTime::now()))
}

/// Where a new segment's file comes from.
#[derive(Debug, Clone)]
pub(crate) enum Source {
    /// A new file, zero-filled (or only sized, if `zero_fill` is false).
    New { zero_fill: bool },
    /// A retired segment file (`{seq}.free`): its blocks are already written, so it needs no
    /// filling; its old frames carry an old epoch and can never verify again.
    Recycle(PathBuf),
}

/// Prepares segment `seq` synchronously.
pub(crate) fn prepare(
    vfs: &dyn Vfs,
    dir: &Path,
    seq: u64,
    size: u64,
    source: Source,
) -> Result<Prepared> {
    let path = dir.join(segment_name(seq));
    let io = |op| {
        let path = path.clone();
        move |e| Error::io(op, path, e)
    };
    crate::metrics::prepared(match &source {
        Source::Recycle(_) => "recycled",
        Source::New { zero_fill: true } => "zero_filled",
        Source::New { zero_fill: false } => "sparse",
    });
    let file = match &source {
        Source::Recycle(from) => {
            vfs.rename(from, &path).map_err(io("recycle segment"))?;
            let f = vfs
                .open(&path, OpenMode::ReadWrite)
                .map_err(io("open recycled segment"))?;
            if f.len().map_err(io("stat segment"))? != size {
                f.set_len(size).map_err(io("size segment"))?;
            }
            f
        }
        Source::New { zero_fill } => {
            let f = vfs
                .open(&path, OpenMode::CreateTruncate)
                .map_err(io("create segment"))?;
            if *zero_fill {
                const CHUNK: u64 = 1 << 20;
                let zeros = vec![0u8; CHUNK as usize];
                let mut off = SEGMENT_HEADER_LEN;
                while off < size {
                    let n = CHUNK.min(size - off) as usize;
                    f.write_all_at(&zeros[..n], off)
                        .map_err(io("zero-fill segment"))?;
                    off += n as u64;
                }
            } else {
                f.set_len(size).map_err(io("size segment"))?;
            }
            f
        }
    };
    let epoch = new_epoch(seq);
    let header = SegmentHeader {
        seq,
        epoch,
        base_hint: 0,
    };
    // The first frame slot is zeroed with the header, so even a recycled file reads as an
    // empty segment from the first byte after the header.
    let mut first = header.encode().to_vec();
    first.resize(SEGMENT_HEADER_LEN as usize + FRAME_HEADER_LEN, 0);
    file.write_all_at(&first, 0)
        .map_err(io("write segment header"))?;
    file.sync_all().map_err(io("fsync segment"))?;
    vfs.sync_dir(dir).map_err(io("fsync directory"))?;
    Ok(Prepared {
        id: SegmentId { seq, epoch },
        path,
        file,
        capacity: size.max(SEGMENT_HEADER_LEN),
    })
}

/// Starts preparing segment `seq` in a background thread; `None` if no thread could be
/// started (the caller then prepares it synchronously when it is needed).
pub(crate) fn spawn(
    vfs: Arc<dyn Vfs>,
    dir: PathBuf,
    seq: u64,
    size: u64,
    source: Source,
) -> Option<JoinHandle<Result<Prepared>>> {
    std::thread::Builder::new()
        .name("raftwal-prealloc".into())
        .spawn(move || prepare(vfs.as_ref(), &dir, seq, size, source))
        .ok()
}
