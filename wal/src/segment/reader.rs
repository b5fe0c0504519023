//! Reading frames: decoding one entry, and scanning a segment batch by batch (used by
//! recovery, by index rebuilds and by the offline verifier).

use crate::batch::Step;
use crate::error::CorruptKind;
use crate::format::{decode_frame, Frame, FrameError, FrameType, FRAME_ALIGN, FRAME_HEADER_LEN};
use crate::{EntryKind, LogEntry};

use super::Loc;

/// Builds a [`LogEntry`] from a verified frame that should hold entry `index`.
pub(crate) fn entry_from_frame(f: &Frame<'_>, index: u64) -> Result<LogEntry, CorruptKind> {
    if f.header.ftype != FrameType::Entry {
        return Err(CorruptKind::Structure(
            "index points at a frame that is not an entry",
        ));
    }
    if f.header.a != index {
        return Err(CorruptKind::IndexGap {
            expected: index,
            found: f.header.a,
        });
    }
    let ctx = f.header.aux as usize;
    if ctx > f.payload.len() {
        return Err(CorruptKind::BadLength {
            found: ctx as u64,
            limit: f.payload.len() as u64,
        });
    }
    let kind =
        EntryKind::from_u8(f.header.kind).ok_or(CorruptKind::Structure("unknown entry kind"))?;
    Ok(LogEntry {
        index,
        term: f.header.b,
        kind,
        context: f.payload[..ctx].to_vec(),
        data: f.payload[ctx..].to_vec(),
    })
}

/// One operation of a committed batch, as found on disk.
#[derive(Debug, Clone)]
pub(crate) enum Op<'a> {
    Step(Step),
    Entry { index: u64, loc: Loc },
    Stable { key: &'a [u8], value: &'a [u8] },
}

/// Where and why a scan stopped before the end of the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stop {
    /// Offset of the first byte not part of a committed batch.
    pub committed_end: u64,
    /// Offset of the frame that failed.
    pub bad_offset: u64,
    /// Why it failed.
    pub kind: CorruptKind,
}

/// The result of [`scan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScanEnd {
    /// End of the last committed batch.
    pub committed_end: u64,
    /// `None` if the scan reached `end` or zeroed (never written) space exactly after a commit;
    /// otherwise where an incomplete or damaged batch begins.
    pub stop: Option<Stop>,
}

/// Scans frames in `data[start..end]`, calling `on_batch(batch_offset, ops)` for every
/// committed batch in order. The callback may reject a batch (a structural error), which stops
/// the scan with that error.
pub(crate) fn scan<'a, E>(
    data: &'a [u8],
    epoch: u64,
    start: u64,
    end: u64,
    mut on_batch: impl FnMut(u64, &[Op<'a>]) -> Result<(), E>,
) -> Result<ScanEnd, E> {
    let end = end.min(data.len() as u64);
    let mut pos = start;
    let mut batch_start = start;
    let mut ops: Vec<Op<'a>> = Vec::new();
    let mut frames = 0u64;
    loop {
        if pos >= end {
            let stop = (pos != batch_start || frames != 0).then_some(Stop {
                committed_end: batch_start,
                bad_offset: pos,
                kind: CorruptKind::Truncated {
                    needed: FRAME_HEADER_LEN as u64,
                    available: 0,
                },
            });
            return Ok(ScanEnd {
                committed_end: batch_start,
                stop,
            });
        }
        let frame = match decode_frame(&data[pos as usize..end as usize], epoch) {
            Ok(f) => f,
            Err(FrameError::Zero) if frames == 0 => {
                return Ok(ScanEnd {
                    committed_end: batch_start,
                    stop: None,
                })
            }
            Err(e) => {
                return Ok(ScanEnd {
                    committed_end: batch_start,
                    stop: Some(Stop {
                        committed_end: batch_start,
                        bad_offset: pos,
                        kind: e.kind(),
                    }),
                })
            }
        };
        let h = frame.header;
        let bad = |kind| {
            Ok(ScanEnd {
                committed_end: batch_start,
                stop: Some(Stop {
                    committed_end: batch_start,
                    bad_offset: pos,
                    kind,
                }),
            })
        };
        match h.ftype {
            FrameType::Entry => ops.push(Op::Entry {
                index: h.a,
                loc: Loc {
                    offset: pos,
                    size: frame.size,
                },
            }),
            FrameType::Stable => {
                let klen = h.aux as usize;
                if klen > frame.payload.len() {
                    return bad(CorruptKind::BadLength {
                        found: klen as u64,
                        limit: frame.payload.len() as u64,
                    });
                }
                ops.push(Op::Stable {
                    key: &frame.payload[..klen],
                    value: &frame.payload[klen..],
                });
            }
            FrameType::TruncateHead => ops.push(Op::Step(Step::TruncateHead(h.a))),
            FrameType::TruncateTail => ops.push(Op::Step(Step::TruncateTail(h.a))),
            FrameType::Reset => ops.push(Op::Step(Step::Reset(h.a))),
            FrameType::Commit => {
                if h.b != frames {
                    return bad(CorruptKind::Structure(
                        "commit record's frame count does not match its batch",
                    ));
                }
                on_batch(batch_start, &ops)?;
                ops.clear();
                frames = 0;
                pos += frame.size;
                batch_start = pos;
                continue;
            }
        }
        frames += 1;
        pos += frame.size;
    }
}

/// Looks for a valid commit record at or after `from` (on frame alignment) that proves the
/// file was durable beyond `from`: evidence that damage at `from` is not a torn tail.
pub(crate) fn durable_commit_after(data: &[u8], epoch: u64, from: u64) -> Option<(u64, u64)> {
    let mut pos = from as usize;
    while pos + FRAME_HEADER_LEN <= data.len() {
        // Cheap filter before the checksum: type byte and an empty payload.
        if data[pos + 4] == FrameType::Commit as u8 && data[pos + 8..pos + 12] == [0; 4] {
            if let Ok(f) = decode_frame(&data[pos..pos + FRAME_HEADER_LEN], epoch) {
                if f.header.a > from {
                    return Some((pos as u64, f.header.a));
                }
            }
        }
        pos += FRAME_ALIGN;
    }
    None
}
