//! Every on-disk constant and codec. The byte-level layout is documented in `wal/FORMAT.md`;
//! keep the two in step.

use crate::error::CorruptKind;

mod frame;
mod header;
pub(crate) mod index;
mod manifest;

pub use frame::{decode_frame, encode_frame, encode_frame_parts, Frame, FrameError, FrameHeader};
pub use header::SegmentHeader;

/// The on-disk format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Segment file header length.
pub const SEGMENT_HEADER_LEN: u64 = 64;
/// Magic at the start of every segment file.
pub const SEGMENT_MAGIC: [u8; 8] = *b"RWALSEG\0";
/// Magic at the start of every index file.
pub const INDEX_MAGIC: [u8; 8] = *b"RWALIDX\0";
/// Magic at the start of the manifest.
pub const MANIFEST_MAGIC: [u8; 8] = *b"RWALMAN\0";
/// Index file header length.
pub const INDEX_HEADER_LEN: usize = 64;
/// Frame header length.
pub const FRAME_HEADER_LEN: usize = 32;
/// Frames start and end on this alignment.
pub const FRAME_ALIGN: usize = 8;
/// The largest payload one frame may carry.
pub const MAX_FRAME_PAYLOAD: u64 = u32::MAX as u64 - 64;
/// The largest manifest this build will read.
pub const MAX_MANIFEST_LEN: u64 = 256 << 20;

/// Manifest file name.
pub const MANIFEST: &str = "MANIFEST";
/// Temporary manifest file name.
pub const MANIFEST_TMP: &str = "MANIFEST.tmp";
/// Lock file name.
pub const LOCK: &str = "LOCK";

/// A segment's identity: its sequence number (its file name) and its epoch, the random salt
/// in every frame checksum of this use of the file (frames left over from an earlier use of a
/// recycled file never verify).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentId {
    /// Sequence number.
    pub seq: u64,
    /// Checksum salt.
    pub epoch: u64,
}

/// Frame types. 0 is invalid, so zeroed space never parses as a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// A log entry: `a` = index, `b` = term, `aux` = context length, `kind` = entry kind.
    Entry = 1,
    /// A stable-store update: `aux` = key length; payload = key then value.
    Stable = 2,
    /// The end of a batch: `a` = the offset up to which this file was durable when the batch
    /// was written, `b` = the number of frames in the batch before this one.
    Commit = 3,
    /// Delete entries `<= a` (head compaction).
    TruncateHead = 4,
    /// Delete entries `> a` (tail truncation).
    TruncateTail = 5,
    /// Empty the log; the next entry may have any index; `a` = the new first index hint.
    Reset = 6,
}

impl FrameType {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => FrameType::Entry,
            2 => FrameType::Stable,
            3 => FrameType::Commit,
            4 => FrameType::TruncateHead,
            5 => FrameType::TruncateTail,
            6 => FrameType::Reset,
            _ => return None,
        })
    }
}

/// Rounds `n` up to the frame alignment.
pub fn align(n: u64) -> u64 {
    n.div_ceil(FRAME_ALIGN as u64) * FRAME_ALIGN as u64
}

/// The total on-disk size of a frame with this payload length.
pub fn frame_size(payload: u64) -> u64 {
    FRAME_HEADER_LEN as u64 + align(payload)
}

pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
/// Reads a little-endian u32; the caller guarantees the bounds.
pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}
/// Reads a little-endian u64; the caller guarantees the bounds.
pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Checks the 64-byte header segment and index files share: `magic` first, the format version
/// at 8, a checksum of the first 60 bytes at 60. The caller checked that `b` holds 64 bytes.
pub(crate) fn check_fixed_header(b: &[u8], magic: &[u8; 8]) -> Result<(), CorruptKind> {
    if b[..8] != magic[..] {
        return Err(CorruptKind::BadMagic);
    }
    let expected = get_u32(b, 60);
    let actual = crc32fast::hash(&b[..60]);
    if expected != actual {
        return Err(CorruptKind::Checksum { expected, actual });
    }
    let found = get_u32(b, 8);
    if found != FORMAT_VERSION {
        return Err(CorruptKind::Version { found });
    }
    Ok(())
}

/// The file name of segment `seq`.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}

/// The file name of the index of segment `seq`.
pub fn index_name(seq: u64) -> String {
    format!("{seq:016x}.idx")
}

/// The file name of a retired segment file kept for reuse.
pub fn free_name(seq: u64) -> String {
    format!("{seq:016x}.free")
}

/// Parses a retired segment file name.
pub fn parse_free(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".free")?;
    (stem.len() == 16).then(|| u64::from_str_radix(stem, 16).ok())?
}

/// Parses a segment or index file name into `(seq, is_index)`.
pub fn parse_name(name: &str) -> Option<(u64, bool)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 16 {
        return None;
    }
    let seq = u64::from_str_radix(stem, 16).ok()?;
    match ext {
        "seg" => Some((seq, false)),
        "idx" => Some((seq, true)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_roundtrip_and_every_bit_flip_is_caught() {
        let mut buf = Vec::new();
        let h = FrameHeader {
            ftype: FrameType::Entry,
            kind: 2,
            len: 0,
            aux: 3,
            a: 42,
            b: 7,
        };
        encode_frame(&mut buf, 99, &h, &[b"ctx", b"hello"]);
        assert_eq!(buf.len() as u64, frame_size(8));
        let f = decode_frame(&buf, 99).unwrap();
        assert_eq!(f.header.a, 42);
        assert_eq!(f.header.len, 8);
        assert_eq!(f.payload, b"ctxhello");
        assert!(matches!(
            decode_frame(&buf, 98),
            Err(FrameError::Checksum { .. })
        ));
        for bit in 0..(FRAME_HEADER_LEN + 8) * 8 {
            let mut c = buf.clone();
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(decode_frame(&c, 99).is_err(), "bit {bit} undetected");
        }
    }

    #[test]
    fn huge_length_is_truncated_not_allocated() {
        let mut buf = Vec::new();
        let h = FrameHeader {
            ftype: FrameType::Stable,
            kind: 0,
            len: 0,
            aux: 0,
            a: 0,
            b: 0,
        };
        encode_frame(&mut buf, 1, &h, &[b"k"]);
        put_u32(&mut buf, 8, u32::MAX);
        assert!(matches!(
            decode_frame(&buf, 1),
            Err(FrameError::Truncated { .. })
        ));
    }

    #[test]
    fn names_roundtrip() {
        assert_eq!(parse_name(&segment_name(0xabc)), Some((0xabc, false)));
        assert_eq!(parse_name(&index_name(7)), Some((7, true)));
        assert_eq!(parse_name("foo.seg"), None);
    }
}

#[cfg(test)]
mod golden;
