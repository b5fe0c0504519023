//! Frames: the unit every record in a segment is written as (header, payload, padding), and
//! their checksums.

use super::{frame_size, get_u32, get_u64, put_u32, put_u64, FrameType, FRAME_HEADER_LEN};
use crate::error::CorruptKind;

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
