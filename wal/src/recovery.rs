//! Opening a WAL directory: the only place that scans, truncates or repairs.
//!
//! The algorithm:
//! 1. Refuse a path that is a file, or a directory holding files that are not ours and no
//!    `MANIFEST` ([`Error::NotAWal`]). Take the directory lock ([`Error::Locked`]).
//! 2. With no `MANIFEST`, nothing was ever acknowledged: remove our leftovers, prepare segment 1
//!    and write the first manifest.
//! 3. Read and verify the manifest: the log bounds and stable keys as of the start of the tail
//!    segment, the sealed segments with the ranges still in use, the tail segment.
//! 4. Map each sealed segment and its index. An index that is missing or whose header fails its
//!    checksum or disagrees with the manifest is rebuilt from the frames (every frame of a sealed
//!    segment must verify, since it was fully synced before sealing) and rewritten.
//! 5. Replay the tail segment from its header, batch by batch: a batch counts only when its
//!    commit record is found and verifies.
//! 6. The scan stops at zeroed space (clean end) or at a damaged or incomplete batch. In the
//!    latter case, look for a later valid commit record whose `durable_to` lies beyond the damage:
//!    if there is one, the damage hit data already fsynced, so it is corruption, not a torn write:
//!    [`RecoveryMode::Strict`] fails with [`Error::Corrupt`]; [`RecoveryMode::TruncateCorruptTail`]
//!    drops it and reports it. Otherwise it is the unacknowledged tail of a crash and is dropped.
//! 7. Zero every non-zero byte after the last committed batch (so stale frames can never be
//!    mistaken for new ones), `fdatasync` the tail, and remove files the manifest does not name.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{Bounds, Step};
use crate::error::CorruptKind;
use crate::format::{
    decode_frame, index_name, parse_free, parse_name, segment_name, FrameType, SegmentHeader,
    SegmentId, LOCK, MANIFEST, MANIFEST_TMP, SEGMENT_HEADER_LEN,
};
use crate::manifest::Manifest;
use crate::segment::{
    decode_header, encode_index, preallocate, reader, rebuild_index, ActiveIndex, IndexHeader,
    Sealed, SealedRef,
};
use crate::state::LogState;
use crate::vfs::{FileKind, Mapped, OpenMode, Vfs, VfsFile};
use crate::{Error, RecoveryMode, Result, WalOptions};

/// Bytes that recovery dropped from the tail segment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DroppedRange {
    /// The segment file.
    pub path: PathBuf,
    /// Offset of the first byte dropped (the end of the last committed batch kept).
    pub offset: u64,
    /// Offset of the frame that failed.
    pub bad_offset: u64,
    /// Why it failed.
    pub reason: CorruptKind,
    /// Entry indexes found in intact frames of the dropped region, if any.
    pub indexes: Option<(u64, u64)>,
    /// Whether later records prove the dropped data had been durable (only possible in
    /// [`RecoveryMode::TruncateCorruptTail`]; in strict mode that is an error instead).
    pub was_durable: bool,
}

/// What recovery found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Tail data dropped: a torn, unacknowledged batch, or (lenient mode) damaged data.
    pub dropped: Vec<DroppedRange>,
    /// Sealed-segment indexes rebuilt from frames.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Files removed because the manifest does not name them (leftovers of a crash).
    pub removed_files: Vec<PathBuf>,
}

/// Everything `Wal::open` needs to start.
pub(crate) struct Recovered {
    pub lock: Option<Box<dyn Send + Sync>>,
    pub manifest: Manifest,
    pub state: LogState,
    pub tail_file: Arc<dyn VfsFile>,
    pub tail_epoch: u64,
    pub write_offset: u64,
    pub capacity: u64,
    pub report: RecoveryReport,
    /// The next segment, if an earlier run prepared it and it is intact.
    pub prepared: Option<preallocate::Prepared>,
    /// Retired segment files kept for reuse.
    pub free: Vec<PathBuf>,
}

fn corrupt(path: &Path, offset: u64, kind: CorruptKind) -> Error {
    Error::Corrupt {
        path: path.to_path_buf(),
        offset,
        indexes: None,
        kind,
    }
}

fn unsupported(path: &Path, found: u32) -> Error {
    Error::UnsupportedVersion {
        path: path.to_path_buf(),
        found,
        supported: crate::format::FORMAT_VERSION,
    }
}

fn is_ours(name: &str) -> bool {
    name == LOCK
        || name == MANIFEST
        || name == MANIFEST_TMP
        || parse_name(name).is_some()
        || parse_free(name).is_some()
}

fn map_file(vfs: &dyn Vfs, path: &Path, mode: OpenMode) -> Result<(Arc<dyn VfsFile>, Mapped)> {
    let f = vfs
        .open(path, mode)
        .map_err(|e| Error::io("open", path, e))?;
    let m = f.map().map_err(|e| Error::io("map", path, e))?;
    Ok((f, m))
}

fn check_header(path: &Path, data: &[u8], id: SegmentId) -> Result<()> {
    let h = SegmentHeader::decode(data).map_err(|kind| match kind {
        CorruptKind::Version { found } => unsupported(path, found),
        k => corrupt(path, 0, k),
    })?;
    if (h.seq, h.epoch) != (id.seq, id.epoch) {
        return Err(corrupt(
            path,
            0,
            CorruptKind::Structure("segment header does not match the manifest"),
        ));
    }
    Ok(())
}

/// Creates a brand-new WAL in `dir` (which holds nothing of value).
fn create(vfs: &dyn Vfs, dir: &Path, opts: &WalOptions) -> Result<Manifest> {
    let seg = preallocate::prepare(
        vfs,
        dir,
        1,
        opts.segment_size,
        preallocate::Source::New {
            zero_fill: opts.zero_fill,
        },
    )?;
    let m = Manifest {
        generation: 1,
        next_seq: 2,
        tail_seq: 1,
        tail_epoch: seg.id.epoch,
        ..Manifest::default()
    };
    m.write(vfs, dir)?;
    Ok(m)
}

fn open_sealed(
    vfs: &dyn Vfs,
    dir: &Path,
    rec: &crate::manifest::SegmentRecord,
    read_only: bool,
    report: &mut RecoveryReport,
) -> Result<SealedRef> {
    let path = dir.join(segment_name(rec.seq));
    let (_f, data) = map_file(vfs, &path, OpenMode::Read)?;
    check_header(&path, (*data).as_ref(), rec.id())?;
    let idx_path = dir.join(index_name(rec.seq));
    let mapped_index = match vfs.open(&idx_path, OpenMode::Read) {
        Ok(f) => {
            let m = f.map().map_err(|e| Error::io("map", &idx_path, e))?;
            match decode_header((*m).as_ref()) {
                Ok(h) if h.seq == rec.seq && h.epoch == rec.epoch && h.data_end == rec.data_end => {
                    Some((h, m))
                }
                Ok(_) => None,
                Err(CorruptKind::Version { found }) => return Err(unsupported(&idx_path, found)),
                Err(_) => None,
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io("open", &idx_path, e)),
    };
    let seg = match mapped_index {
        Some((h, m)) => Sealed::with_index(rec.id(), path.clone(), data, rec.data_end, h, m),
        None => {
            tracing::warn!(index = %idx_path.display(), "index missing or damaged; rebuilding from frames");
            let idx = rebuild_index((*data).as_ref(), rec.epoch, rec.data_end)
                .map_err(|(off, kind)| corrupt(&path, off, kind))?;
            let offsets: Vec<u64> = idx.locs.iter().map(|l| l.offset).collect();
            if !read_only {
                write_index(vfs, &idx_path, rec.id(), idx.base, &offsets, rec.data_end)?;
            }
            report.rebuilt_indexes.push(idx_path);
            Sealed::with_offsets(
                rec.id(),
                path.clone(),
                data,
                rec.data_end,
                idx.base,
                offsets,
            )
        }
    };
    if rec.lo < rec.hi && (rec.lo < seg.first || rec.hi > seg.first + seg.count) {
        return Err(Error::Corrupt {
            path,
            offset: 0,
            indexes: Some((rec.lo, rec.hi.saturating_sub(1))),
            kind: CorruptKind::IndexGap {
                expected: rec.lo,
                found: seg.first,
            },
        });
    }
    Ok(SealedRef {
        seg: Arc::new(seg),
        lo: rec.lo,
        hi: rec.hi,
    })
}

/// Writes (and syncs) an index file.
pub(crate) fn write_index(
    vfs: &dyn Vfs,
    path: &Path,
    SegmentId { seq, epoch }: SegmentId,
    first: u64,
    offsets: &[u64],
    data_end: u64,
) -> Result<()> {
    let bytes = encode_index(
        &IndexHeader {
            seq,
            epoch,
            first,
            count: offsets.len() as u64,
            data_end,
        },
        offsets,
    );
    let f = vfs
        .open(path, OpenMode::CreateTruncate)
        .map_err(|e| Error::io("create", path, e))?;
    f.write_all_at(&bytes, 0)
        .map_err(|e| Error::io("write", path, e))?;
    f.sync_data().map_err(|e| Error::io("fdatasync", path, e))?;
    Ok(())
}

/// Applies one committed batch found on disk to the state.
fn replay_batch(st: &mut LogState, ops: &[reader::Op<'_>]) -> Result<(), CorruptKind> {
    for op in ops {
        match op {
            reader::Op::Step(s) => st.apply_step(*s),
            reader::Op::Entry { index, loc, .. } => {
                if !st.bounds.is_empty() && *index != st.bounds.next {
                    return Err(CorruptKind::IndexGap {
                        expected: st.bounds.next,
                        found: *index,
                    });
                }
                if st.bounds.is_empty() && *index != st.bounds.next {
                    st.apply_step(Step::Reset(*index));
                }
                st.active.push(*index, *loc)?;
                st.bounds.next = index + 1;
            }
            reader::Op::Stable { key, value } => {
                st.stable.insert(key.to_vec(), value.to_vec());
            }
        }
    }
    Ok(())
}

/// The end of the last frame at or after `from` (on frame alignment) that verifies with
/// `epoch`.
fn last_valid_frame_end(data: &[u8], epoch: u64, from: u64) -> Option<u64> {
    let mut end = None;
    let mut pos = from as usize;
    while pos + crate::format::FRAME_HEADER_LEN <= data.len() {
        // Cheap filters before the checksum: a known type byte and a length that fits.
        let t = data[pos + 4];
        if (1..=6).contains(&t) {
            if let Ok(f) = decode_frame(&data[pos..], epoch) {
                end = Some(pos as u64 + f.size);
            }
        }
        pos += crate::format::FRAME_ALIGN;
    }
    end
}

/// Loads the clean-close index of the tail segment, or `None` if it is missing, damaged or not
/// the one the manifest describes.
fn load_tail_index(vfs: &dyn Vfs, path: &Path, m: &Manifest) -> Option<ActiveIndex> {
    let f = vfs.open(path, OpenMode::Read).ok()?;
    let map = f.map().ok()?;
    let b = (*map).as_ref();
    let h = decode_header(b).ok()?;
    if h.seq != m.tail_seq || h.epoch != m.tail_epoch || h.data_end != m.tail_from {
        return None;
    }
    crate::segment::verify_body(b, h.count).ok()?;
    let offsets: Vec<u64> = (0..h.count)
        .map(|k| crate::segment::index_offset(b, k))
        .collect();
    let mut idx = ActiveIndex {
        base: h.first,
        locs: Vec::with_capacity(offsets.len()),
    };
    for (k, &off) in offsets.iter().enumerate() {
        let next = offsets.get(k + 1).copied().unwrap_or(m.tail_from);
        if off < SEGMENT_HEADER_LEN || next <= off || next > m.tail_from {
            return None;
        }
        idx.locs.push(crate::segment::Loc {
            offset: off,
            size: next - off,
        });
    }
    Some(idx)
}

/// Entry indexes of the intact frames found from `from` on (best effort, for the report).
fn entries_after(data: &[u8], epoch: u64, from: u64) -> Option<(u64, u64)> {
    let mut pos = from as usize;
    let mut range: Option<(u64, u64)> = None;
    while pos < data.len() {
        match decode_frame(&data[pos..], epoch) {
            Ok(f) => {
                if f.header.ftype == FrameType::Entry {
                    let i = f.header.a;
                    range = Some(range.map_or((i, i), |(a, b)| (a.min(i), b.max(i))));
                }
                pos += f.size as usize;
            }
            Err(_) => pos += crate::format::FRAME_ALIGN,
        }
    }
    range
}

pub(crate) fn recover(dir: &Path, opts: &WalOptions) -> Result<Recovered> {
    let vfs = opts.vfs.as_ref();
    opts.validate()?;
    match vfs.kind(dir).map_err(|e| Error::io("stat", dir, e))? {
        Some(FileKind::File) => {
            return Err(Error::NotAWal {
                path: dir.to_path_buf(),
                reason: "it is a file, not a directory".into(),
            })
        }
        Some(FileKind::Dir) => {}
        None if opts.read_only => {
            return Err(Error::NotAWal {
                path: dir.to_path_buf(),
                reason: "it does not exist".into(),
            })
        }
        None => {
            vfs.create_dir_durable(dir)
                .map_err(|(op, path, e)| Error::io(op, path, e))?;
        }
    }
    let names = vfs.list(dir).map_err(|e| Error::io("list", dir, e))?;
    let has_manifest = names.iter().any(|n| n == MANIFEST);
    if !has_manifest {
        let foreign: Vec<&String> = names.iter().filter(|n| !is_ours(n)).collect();
        if !foreign.is_empty() {
            return Err(Error::NotAWal {
                path: dir.to_path_buf(),
                reason: format!(
                    "no MANIFEST, and it holds other files ({})",
                    foreign
                        .iter()
                        .take(3)
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        if opts.read_only {
            return Err(Error::NotAWal {
                path: dir.to_path_buf(),
                reason: "no MANIFEST".into(),
            });
        }
    }
    // A read-only open creates nothing: it takes the lock only if its file exists (a running
    // node's log is then refused); a live one takes no lock at all.
    let lock_path = dir.join(LOCK);
    let locked = |e: std::io::Error| {
        if e.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                path: lock_path.clone(),
            }
        } else {
            Error::io("lock", &lock_path, e)
        }
    };
    let lock: Option<Box<dyn Send + Sync>> = if opts.live {
        None
    } else if opts.read_only {
        match vfs
            .kind(&lock_path)
            .map_err(|e| Error::io("stat", &lock_path, e))?
        {
            Some(_) => Some(vfs.lock(&lock_path).map_err(locked)?),
            None => None,
        }
    } else {
        Some(vfs.lock(&lock_path).map_err(locked)?)
    };
    let mut report = RecoveryReport::default();
    let manifest = match Manifest::read(vfs, dir)? {
        Some(m) => m,
        None => {
            // Never initialised (or a crash before the first manifest): nothing was ever
            // acknowledged, so leftovers of ours can go.
            for n in names
                .iter()
                .filter(|n| parse_name(n).is_some() || *n == MANIFEST_TMP)
            {
                let p = dir.join(n);
                vfs.remove_file(&p)
                    .map_err(|e| Error::io("remove", &p, e))?;
                report.removed_files.push(p);
            }
            create(vfs, dir, opts)?
        }
    };

    let mut sealed = Vec::with_capacity(manifest.sealed.len());
    for rec in &manifest.sealed {
        let s = open_sealed(vfs, dir, rec, opts.read_only, &mut report)?;
        if s.lo < s.hi {
            sealed.push(s);
        }
    }

    let tail_path = dir.join(segment_name(manifest.tail_seq));
    let mode = if opts.read_only {
        OpenMode::Read
    } else {
        OpenMode::ReadWrite
    };
    let (tail_file, tail_map) = map_file(vfs, &tail_path, mode)?;
    let data = (*tail_map).as_ref();
    check_header(&tail_path, data, manifest.tail_id())?;
    let epoch = manifest.tail_epoch;
    let mut state = LogState {
        bounds: Bounds {
            first: manifest.first,
            next: manifest.next,
        },
        sealed,
        active: ActiveIndex::default(),
        active_file: tail_file.clone(),
        active_path: tail_path.clone(),
        active_epoch: epoch,
        stable: manifest.stable.clone(),
        dead: Vec::new(),
    };
    // A clean-close checkpoint lets recovery start at `tail_from` instead of the header.
    let mut start = SEGMENT_HEADER_LEN;
    if manifest.tail_from > 0 {
        if manifest.tail_from > data.len() as u64 || manifest.tail_from < SEGMENT_HEADER_LEN {
            return Err(corrupt(
                &dir.join(MANIFEST),
                0,
                CorruptKind::BadLength {
                    found: manifest.tail_from,
                    limit: data.len() as u64,
                },
            ));
        }
        let idx_path = dir.join(index_name(manifest.tail_seq));
        state.active = match load_tail_index(vfs, &idx_path, &manifest) {
            Some(a) => a,
            None => {
                report.rebuilt_indexes.push(idx_path);
                rebuild_index(data, epoch, manifest.tail_from)
                    .map_err(|(off, kind)| corrupt(&tail_path, off, kind))?
            }
        };
        start = manifest.tail_from;
    }
    let end = reader::scan(data, epoch, start, data.len() as u64, |at, ops| {
        replay_batch(&mut state, ops).map_err(|k| (at, k))
    })
    .map_err(|(at, kind)| corrupt(&tail_path, at, kind))?;

    let committed_end = end.committed_end;
    let stopped = end.stop.is_some();
    if let Some(stop) = end.stop {
        let proof = reader::durable_commit_after(data, epoch, stop.committed_end);
        let indexes = entries_after(data, epoch, stop.committed_end);
        if let (Some((_, durable_to)), RecoveryMode::Strict) = (proof, opts.recovery) {
            return Err(Error::Corrupt {
                path: tail_path,
                offset: stop.bad_offset,
                indexes,
                kind: CorruptKind::DamagedBeforeDurable { durable_to },
            });
        }
        tracing::warn!(
            segment = %tail_path.display(),
            offset = stop.committed_end,
            reason = %stop.kind,
            durable = proof.is_some(),
            "recovery dropped the tail of the log after the last committed batch"
        );
        report.dropped.push(DroppedRange {
            path: tail_path.clone(),
            offset: stop.committed_end,
            bad_offset: stop.bad_offset,
            reason: stop.kind,
            indexes,
            was_durable: proof.is_some(),
        });
    }

    // After a clean close with nothing written since, the rest of the segment is known to be
    // untouched zeros and synced: nothing to check or repair.
    let clean = start > SEGMENT_HEADER_LEN && committed_end == start && !stopped && {
        let z = (start + crate::format::FRAME_HEADER_LEN as u64).min(data.len() as u64) as usize;
        data[start as usize..z].iter().all(|&b| b == 0)
    };
    // Otherwise zero every frame after the last committed batch that still verifies with this
    // segment's epoch, so that no stale frame can ever be replayed as part of a later batch.
    // (Frames of an older epoch, in a recycled file, can never verify; fragments that do not
    // verify now cannot start verifying later, since new writes only overwrite them.)
    let dirty_end = if clean {
        None
    } else {
        last_valid_frame_end(data, epoch, committed_end)
    };
    let capacity = data.len() as u64;
    drop(tail_map);
    let mut prepared = None;
    let mut free = Vec::new();
    if !opts.read_only {
        if let Some(dirty_end) = dirty_end {
            let zeros = vec![0u8; (dirty_end - committed_end).min(1 << 20) as usize];
            let mut off = committed_end;
            while off < dirty_end {
                let n = (dirty_end - off).min(zeros.len() as u64) as usize;
                tail_file
                    .write_all_at(&zeros[..n], off)
                    .map_err(|e| Error::io("zero torn tail", &tail_path, e))?;
                off += n as u64;
            }
        }
        // Whatever we read is what later commit records will claim durable: make it so.
        if !clean {
            tail_file
                .sync_data()
                .map_err(|e| Error::io("fdatasync", &tail_path, e))?;
        }

        let live: BTreeSet<u64> = manifest
            .sealed
            .iter()
            .map(|s| s.seq)
            .chain([manifest.tail_seq])
            .collect();
        prepared = preallocate::reuse(vfs, dir, manifest.next_seq, opts.segment_size);
        let names = vfs.list(dir).map_err(|e| Error::io("list", dir, e))?;
        for n in names {
            if parse_free(&n).is_some() && free.len() < opts.recycle_segments {
                free.push(dir.join(&n));
                continue;
            }
            let stale = match parse_name(&n) {
                Some((seq, false)) if prepared.is_some() && seq == manifest.next_seq => false,
                Some((seq, _)) => !live.contains(&seq),
                None => n == MANIFEST_TMP || parse_free(&n).is_some(),
            };
            if stale {
                let p = dir.join(&n);
                vfs.remove_file(&p)
                    .map_err(|e| Error::io("remove", &p, e))?;
                report.removed_files.push(p);
            }
        }
    }

    Ok(Recovered {
        lock,
        manifest,
        state,
        tail_file,
        tail_epoch: epoch,
        write_offset: committed_end,
        capacity,
        report,
        prepared,
        free,
    })
}
