//! The fixed header at the start of every segment file.

use super::{
    check_fixed_header, get_u64, put_u32, put_u64, FORMAT_VERSION, SEGMENT_HEADER_LEN,
    SEGMENT_MAGIC,
};
use crate::error::CorruptKind;

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
    /// The corruption found; another format version is [`CorruptKind::Version`].
    pub fn decode(b: &[u8]) -> Result<Self, CorruptKind> {
        if b.len() < SEGMENT_HEADER_LEN as usize {
            return Err(CorruptKind::Truncated {
                needed: SEGMENT_HEADER_LEN,
                available: b.len() as u64,
            });
        }
        check_fixed_header(b, &SEGMENT_MAGIC)?;
        Ok(SegmentHeader {
            seq: get_u64(b, 16),
            epoch: get_u64(b, 24),
            base_hint: get_u64(b, 32),
        })
    }
}
