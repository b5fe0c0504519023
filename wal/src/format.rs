//! Every on-disk constant and codec. The byte-level layout is documented in `wal/FORMAT.md`;
//! keep the two in step.

use crate::error::CorruptKind;

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

/// The fixed fields of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Its type.
    pub ftype: FrameType,
    /// Entry kind byte (entries only).
    pub kind: u8,
    /// Payload length.
    pub len: u32,
    /// Type-specific.
    pub aux: u32,
    /// Type-specific.
    pub a: u64,
    /// Type-specific.
    pub b: u64,
}

/// Appends one frame to `out`: header, payload parts, zero padding. The checksum covers the
/// segment epoch, the header after the checksum field, and the payload.
pub fn encode_frame(out: &mut Vec<u8>, epoch: u64, h: &FrameHeader, payload: &[&[u8]]) {
    let padding = encode_frame_parts(out, epoch, h, payload, payload.len());
    out.resize(out.len() + padding, 0);
}

/// Like [`encode_frame`], but copies only the first `copied` parts of the payload into `out`:
/// the caller writes the remaining parts right after what `out` holds, then the returned
/// number of zero bytes (padding to the frame size). The checksum covers every part.
pub fn encode_frame_parts(
    out: &mut Vec<u8>,
    epoch: u64,
    h: &FrameHeader,
    payload: &[&[u8]],
    copied: usize,
) -> usize {
    let start = out.len();
    let len: usize = payload.iter().map(|p| p.len()).sum();
    out.resize(start + FRAME_HEADER_LEN, 0);
    {
        let hb = &mut out[start..start + FRAME_HEADER_LEN];
        hb[4] = h.ftype as u8;
        hb[5] = h.kind;
        put_u32(hb, 8, len as u32);
        put_u32(hb, 12, h.aux);
        put_u64(hb, 16, h.a);
        put_u64(hb, 24, h.b);
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&epoch.to_le_bytes());
    crc.update(&out[start + 4..start + FRAME_HEADER_LEN]);
    for (i, p) in payload.iter().enumerate() {
        crc.update(p);
        if i < copied {
            out.extend_from_slice(p);
        }
    }
    let sum = crc.finalize();
    put_u32(&mut out[start..], 0, sum);
    (frame_size(len as u64) as usize) - FRAME_HEADER_LEN - len
}

/// Why bytes at some offset are not a valid frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than a frame header or the declared payload needs.
    Truncated {
        /// Needed bytes.
        needed: u64,
        /// Available bytes.
        available: u64,
    },
    /// The header is all zero: unwritten (zero-filled) space.
    Zero,
    /// Unknown type byte.
    BadType(u8),
    /// The checksum does not match.
    Checksum {
        /// Stored.
        expected: u32,
        /// Computed.
        actual: u32,
    },
}

impl FrameError {
    /// The corresponding corruption kind.
    pub fn kind(&self) -> CorruptKind {
        match self {
            FrameError::Truncated { needed, available } => CorruptKind::Truncated {
                needed: *needed,
                available: *available,
            },
            FrameError::Zero => CorruptKind::Structure("unwritten (zero) frame"),
            FrameError::BadType(_) => CorruptKind::Structure("unknown frame type"),
            FrameError::Checksum { expected, actual } => CorruptKind::Checksum {
                expected: *expected,
                actual: *actual,
            },
        }
    }
}

/// A decoded, checksum-verified frame borrowing its payload.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The header fields.
    pub header: FrameHeader,
    /// The payload (without padding).
    pub payload: &'a [u8],
    /// Total size including header and padding.
    pub size: u64,
}

/// Decodes and verifies the frame at the start of `buf`. Never reads out of bounds and never
/// allocates, whatever the bytes say.
///
/// # Errors
/// A [`FrameError`] saying why the bytes are not a valid frame.
pub fn decode_frame(buf: &[u8], epoch: u64) -> Result<Frame<'_>, FrameError> {
    if buf.len() < FRAME_HEADER_LEN {
        return Err(FrameError::Truncated {
            needed: FRAME_HEADER_LEN as u64,
            available: buf.len() as u64,
        });
    }
    let hb = &buf[..FRAME_HEADER_LEN];
    if hb.iter().all(|&b| b == 0) {
        return Err(FrameError::Zero);
    }
    let ftype = FrameType::from_u8(hb[4]).ok_or(FrameError::BadType(hb[4]))?;
    let len = get_u32(hb, 8);
    let size = frame_size(u64::from(len));
    if size > buf.len() as u64 {
        return Err(FrameError::Truncated {
            needed: size,
            available: buf.len() as u64,
        });
    }
    let payload = &buf[FRAME_HEADER_LEN..FRAME_HEADER_LEN + len as usize];
    let mut crc = crc32fast::Hasher::new();
    crc.update(&epoch.to_le_bytes());
    crc.update(&hb[4..]);
    crc.update(payload);
    let actual = crc.finalize();
    let expected = get_u32(hb, 0);
    if actual != expected {
        return Err(FrameError::Checksum { expected, actual });
    }
    Ok(Frame {
        header: FrameHeader {
            ftype,
            kind: hb[5],
            len,
            aux: get_u32(hb, 12),
            a: get_u64(hb, 16),
            b: get_u64(hb, 24),
        },
        payload,
        size,
    })
}

/// The fixed header of a segment file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's sequence number (its file name).
    pub seq: u64,
    /// A random salt mixed into every frame checksum of this segment.
    pub epoch: u64,
    /// The index the first entry was expected to have when the segment was prepared (a hint).
    pub base_hint: u64,
}

impl SegmentHeader {
    /// Encodes to the 64-byte on-disk form.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_LEN as usize] {
        let mut b = [0u8; SEGMENT_HEADER_LEN as usize];
        b[..8].copy_from_slice(&SEGMENT_MAGIC);
        put_u32(&mut b, 8, FORMAT_VERSION);
        put_u64(&mut b, 16, self.seq);
        put_u64(&mut b, 24, self.epoch);
        put_u64(&mut b, 32, self.base_hint);
        let c = crc32fast::hash(&b[..60]);
        put_u32(&mut b, 60, c);
        b
    }

    /// Decodes and verifies.
    ///
    /// # Errors
    /// `(kind, found_version)`: the corruption kind; a version mismatch is reported as
    /// `Structure("version")` with the version found.
    pub fn decode(b: &[u8]) -> Result<Self, (CorruptKind, u32)> {
        if b.len() < SEGMENT_HEADER_LEN as usize {
            return Err((
                CorruptKind::Truncated {
                    needed: SEGMENT_HEADER_LEN,
                    available: b.len() as u64,
                },
                0,
            ));
        }
        if b[..8] != SEGMENT_MAGIC {
            return Err((CorruptKind::BadMagic, 0));
        }
        let expected = get_u32(b, 60);
        let actual = crc32fast::hash(&b[..60]);
        if expected != actual {
            return Err((CorruptKind::Checksum { expected, actual }, 0));
        }
        let v = get_u32(b, 8);
        if v != FORMAT_VERSION {
            return Err((CorruptKind::Structure("version"), v));
        }
        Ok(SegmentHeader {
            seq: get_u64(b, 16),
            epoch: get_u64(b, 24),
            base_hint: get_u64(b, 32),
        })
    }
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
