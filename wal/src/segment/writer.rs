//! Encoding a batch into frames ready for one positional (vectored) write.

use std::ops::Range;

use crate::batch::Step;
use crate::format::{encode_frame, encode_frame_parts, FrameHeader, FrameType};
use crate::WriteBatch;

use super::Loc;

/// Entry payloads at least this large are written straight from the caller's buffer (one
/// vectored write) instead of being copied into the batch buffer first: at 1 MiB per entry the
/// copy was the largest cost of an append after the write itself.
pub(crate) const BORROW_MIN: usize = 64 << 10;

/// One piece of an encoded batch, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// A range of the batch buffer.
    Own(Range<usize>),
    /// The payload of the batch's `n`-th entry, borrowed.
    Data(usize),
}

/// A batch encoded by [`encode_batch`].
#[derive(Debug, Default)]
pub(crate) struct Encoded {
    /// What to write, in order: ranges of the buffer and borrowed payloads.
    pub pieces: Vec<Piece>,
    /// Bytes the pieces add up to.
    pub len: u64,
    /// Each entry's location.
    pub locs: Vec<Loc>,
}

impl Encoded {
    /// Appends `n` zero bytes to `out` and to the pieces.
    pub fn push_zeros(&mut self, out: &mut Vec<u8>, n: usize) {
        let start = out.len();
        out.resize(start + n, 0);
        self.push_own(start..out.len());
    }

    fn push_own(&mut self, r: Range<usize>) {
        if r.is_empty() {
            return;
        }
        self.len += r.len() as u64;
        match self.pieces.last_mut() {
            Some(Piece::Own(last)) if last.end == r.start => last.end = r.end,
            _ => self.pieces.push(Piece::Own(r)),
        }
    }

    /// The pieces as byte slices of `out` and `batch`, for one vectored write.
    pub fn slices<'a>(&self, out: &'a [u8], batch: &'a WriteBatch) -> Vec<&'a [u8]> {
        self.pieces
            .iter()
            .map(|p| match p {
                Piece::Own(r) => &out[r.clone()],
                Piece::Data(i) => batch.entries[*i].data.as_slice(),
            })
            .collect()
    }
}

/// Encodes `steps`, then the batch's entries and stable updates, then the commit record, into
/// `out` (cleared first) and pieces that borrow large payloads from `batch`. `base` is the file
/// offset the batch will be written at; `durable_to` is the offset up to which the file is
/// known durable.
pub(crate) fn encode_batch(
    out: &mut Vec<u8>,
    epoch: u64,
    base: u64,
    durable_to: u64,
    steps: &[Step],
    batch: &WriteBatch,
) -> Encoded {
    out.clear();
    let mut enc = Encoded {
        locs: Vec::with_capacity(batch.entries.len()),
        ..Encoded::default()
    };
    let mut frames = 0u64;
    // Everything small is encoded into `out`; `mark` is where the part not yet in a piece
    // starts.
    let mut mark = 0;
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
    for (i, e) in batch.entries.iter().enumerate() {
        let offset = base + enc.len + (out.len() - mark) as u64;
        let h = FrameHeader {
            ftype: FrameType::Entry,
            kind: e.kind as u8,
            len: 0,
            aux: e.context.len() as u32,
            a: e.index,
            b: e.term,
        };
        let payload: [&[u8]; 2] = [&e.context, &e.data];
        if e.data.len() >= BORROW_MIN {
            let padding = encode_frame_parts(out, epoch, &h, &payload, 1);
            enc.push_own(mark..out.len());
            enc.pieces.push(Piece::Data(i));
            enc.len += e.data.len() as u64;
            mark = out.len();
            out.resize(mark + padding, 0);
        } else {
            encode_frame(out, epoch, &h, &payload);
        }
        enc.locs.push(Loc {
            offset,
            size: base + enc.len + (out.len() - mark) as u64 - offset,
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
    enc.push_own(mark..out.len());
    enc
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::LogEntry;

    /// The bytes the pieces describe, concatenated.
    fn flat(enc: &Encoded, out: &[u8], batch: &WriteBatch) -> Vec<u8> {
        enc.slices(out, batch).concat()
    }

    #[test]
    fn borrowed_payloads_encode_exactly_as_copied_ones() {
        // Small, large (borrowed), small, large: the same bytes as if every payload were
        // copied, and the same locations.
        let sizes = [10, BORROW_MIN, 3, BORROW_MIN + 5];
        let batch = WriteBatch::from_entries(
            sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| LogEntry::new(7 + i as u64, 2, vec![i as u8 + 1; n]))
                .collect(),
        );
        let mut out = Vec::new();
        let enc = encode_batch(&mut out, 5, 4096, 64, &[Step::TruncateTail(6)], &batch);
        assert_eq!(enc.pieces.len(), 5, "{:?}", enc.pieces);
        let bytes = flat(&enc, &out, &batch);
        assert_eq!(bytes.len() as u64, enc.len);

        let step = |ftype, a, b| FrameHeader {
            ftype,
            kind: 0,
            len: 0,
            aux: 0,
            a,
            b,
        };
        let mut copied = Vec::new();
        encode_frame(&mut copied, 5, &step(FrameType::TruncateTail, 6, 0), &[]);
        let mut locs = Vec::new();
        for e in &batch.entries {
            let start = copied.len();
            let h = FrameHeader {
                ftype: FrameType::Entry,
                kind: e.kind as u8,
                len: 0,
                aux: 0,
                a: e.index,
                b: e.term,
            };
            encode_frame(&mut copied, 5, &h, &[&e.context, &e.data]);
            locs.push(Loc {
                offset: 4096 + start as u64,
                size: (copied.len() - start) as u64,
            });
        }
        encode_frame(&mut copied, 5, &step(FrameType::Commit, 64, 5), &[]);
        assert!(
            bytes == copied,
            "borrowed encoding differs from the copied one"
        );
        assert_eq!(enc.locs, locs);
    }
}
