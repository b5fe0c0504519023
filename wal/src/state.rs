//! What readers see: the log's bounds, where every live entry is, and the stable keys. Built
//! by recovery, changed only by the writer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::batch::{Bounds, Step};
use crate::error::CorruptKind;
use crate::segment::{ActiveIndex, Loc, Sealed, SealedRef};
use crate::vfs::VfsFile;
use crate::{Error, LogEntry, Result};

/// What readers see: the log's bounds, where every live entry is, and the stable keys.
/// Changed only by the writer, under a short write lock, after its bytes are in the file.
pub(crate) struct LogState {
    pub bounds: Bounds,
    pub sealed: Vec<SealedRef>,
    pub active: ActiveIndex,
    pub active_file: Arc<dyn VfsFile>,
    pub active_path: PathBuf,
    pub active_epoch: u64,
    pub stable: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Sealed segments no longer used, to remove at the next manifest rewrite.
    pub dead: Vec<u64>,
}

impl LogState {
    /// Applies a structural step to the bounds and to every segment's range.
    pub fn apply_step(&mut self, step: Step) {
        step.apply(&mut self.bounds);
        self.active.apply(step);
        match step {
            Step::TruncateTail(k) => {
                for s in &mut self.sealed {
                    s.hi = s.hi.min(k + 1);
                }
            }
            Step::Reset(_) => {
                for s in &mut self.sealed {
                    s.hi = s.lo;
                }
            }
            Step::TruncateHead(_) => {}
        }
        let first = self.bounds.first;
        let dead = &mut self.dead;
        self.sealed.retain(|s| {
            let live = s.lo < s.hi && s.hi > first;
            if !live {
                dead.push(s.seg.id.seq);
            }
            live
        });
    }

    pub(crate) fn locate(&self, index: u64) -> Result<Location> {
        if !self.bounds.contains(index) {
            return Err(self.bounds.not_found(index));
        }
        if let Some(loc) = self.active.get(index) {
            return Ok(Location::Active {
                file: self.active_file.clone(),
                path: self.active_path.clone(),
                epoch: self.active_epoch,
                loc,
            });
        }
        let p = self.sealed.partition_point(|s| s.lo <= index);
        match p.checked_sub(1).map(|i| &self.sealed[i]) {
            Some(s) if index < s.hi => Ok(Location::Sealed(s.seg.clone())),
            _ => Err(Error::Corrupt {
                path: self.active_path.clone(),
                offset: 0,
                indexes: Some((index, index)),
                kind: CorruptKind::Structure("no segment holds an index inside the log's bounds"),
            }),
        }
    }
}

/// Where one entry's frame is.
pub(crate) enum Location {
    Active {
        file: Arc<dyn VfsFile>,
        path: PathBuf,
        epoch: u64,
        loc: Loc,
    },
    Sealed(Arc<Sealed>),
}

/// Collects `[lo, hi)` through `get`, stopping after `max_bytes` of payload but returning at
/// least one entry.
pub(crate) fn collect_range(
    bounds: Bounds,
    lo: u64,
    hi: u64,
    max_bytes: u64,
    mut get: impl FnMut(u64) -> Result<LogEntry>,
) -> Result<Vec<LogEntry>> {
    if lo < hi {
        for i in [lo, hi - 1] {
            if !bounds.contains(i) {
                return Err(bounds.not_found(i));
            }
        }
    }
    let mut out = Vec::new();
    let mut bytes = 0u64;
    for i in lo..hi {
        let e = get(i)?;
        bytes += e.payload_len();
        if !out.is_empty() && bytes > max_bytes {
            break;
        }
        out.push(e);
    }
    Ok(out)
}
