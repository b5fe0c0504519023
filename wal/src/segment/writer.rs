//! Encoding a batch into frames ready for one positional write.

use crate::batch::Step;
use crate::format::{encode_frame, FrameHeader, FrameType};
use crate::WriteBatch;

use super::Loc;

/// Encodes `steps`, then the batch's entries and stable updates, then the commit record, into
/// `out` (cleared first). `base` is the file offset `out` will be written at; `durable_to` is
/// the offset up to which the file is known durable. Returns each entry's location.
pub(crate) fn encode_batch(
    out: &mut Vec<u8>,
    epoch: u64,
    base: u64,
    durable_to: u64,
    steps: &[Step],
    batch: &WriteBatch,
) -> Vec<Loc> {
    out.clear();
    let mut frames = 0u64;
    let mut locs = Vec::with_capacity(batch.entries.len());
    let header = |ftype, a| FrameHeader {
        ftype,
        kind: 0,
        len: 0,
        aux: 0,
        a,
        b: 0,
    };
    for s in steps {
        let h = match *s {
            Step::TruncateHead(k) => header(FrameType::TruncateHead, k),
            Step::TruncateTail(k) => header(FrameType::TruncateTail, k),
            Step::Reset(k) => header(FrameType::Reset, k),
        };
        encode_frame(out, epoch, &h, &[]);
        frames += 1;
    }
    for e in &batch.entries {
        let start = out.len();
        let h = FrameHeader {
            ftype: FrameType::Entry,
            kind: e.kind as u8,
            len: 0,
            aux: e.context.len() as u32,
            a: e.index,
            b: e.term,
        };
        encode_frame(out, epoch, &h, &[&e.context, &e.data]);
        locs.push(Loc {
            offset: base + start as u64,
            size: (out.len() - start) as u64,
        });
        frames += 1;
    }
    for (k, v) in &batch.stable {
        let h = FrameHeader {
            aux: k.len() as u32,
            ..header(FrameType::Stable, 0)
        };
        encode_frame(out, epoch, &h, &[k, v]);
        frames += 1;
    }
    let commit = FrameHeader {
        b: frames,
        ..header(FrameType::Commit, durable_to)
    };
    encode_frame(out, epoch, &commit, &[]);
    locs
}
