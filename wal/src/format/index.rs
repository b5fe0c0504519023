//! The offset index of a sealed segment: a sidecar file `{seq}.idx`, read through a memory
//! map, rebuildable from the segment's frames.
//!
//! Layout (little-endian; see `wal/FORMAT.md`): a 64-byte header (magic, version, seq, epoch,
//! first index, count, data end, header checksum), `count` u64 frame offsets, and a checksum of
//! the offsets. The header is verified at open; the body checksum lazily, the first time a read
//! finds an offset that does not lead to the expected frame.

use super::{
    check_fixed_header, get_u32, get_u64, put_u32, put_u64, FORMAT_VERSION, INDEX_HEADER_LEN,
    INDEX_MAGIC,
};
use crate::error::CorruptKind;

/// The parsed header of an index file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexHeader {
    /// Segment sequence number.
    pub seq: u64,
    /// Segment epoch.
    pub epoch: u64,
    /// Index of the first entry.
    pub first: u64,
    /// Number of entries.
    pub count: u64,
    /// End of the segment's committed data.
    pub data_end: u64,
}

/// Encodes an index file.
pub fn encode(h: &IndexHeader, offsets: &[u64]) -> Vec<u8> {
    let mut b = vec![0u8; INDEX_HEADER_LEN + offsets.len() * 8 + 4];
    b[..8].copy_from_slice(&INDEX_MAGIC);
    put_u32(&mut b, 8, FORMAT_VERSION);
    put_u64(&mut b, 16, h.seq);
    put_u64(&mut b, 24, h.epoch);
    put_u64(&mut b, 32, h.first);
    put_u64(&mut b, 40, offsets.len() as u64);
    put_u64(&mut b, 48, h.data_end);
    let hc = crc32fast::hash(&b[..60]);
    put_u32(&mut b, 60, hc);
    for (i, o) in offsets.iter().enumerate() {
        put_u64(&mut b, INDEX_HEADER_LEN + i * 8, *o);
    }
    let body_end = INDEX_HEADER_LEN + offsets.len() * 8;
    let bc = crc32fast::hash(&b[INDEX_HEADER_LEN..body_end]);
    put_u32(&mut b, body_end, bc);
    b
}

/// Verifies an index file's header and its length against the count.
///
/// # Errors
/// The corruption found; another format version is [`CorruptKind::Version`].
pub fn decode_header(b: &[u8]) -> Result<IndexHeader, CorruptKind> {
    if b.len() < INDEX_HEADER_LEN + 4 {
        return Err(CorruptKind::Truncated {
            needed: INDEX_HEADER_LEN as u64 + 4,
            available: b.len() as u64,
        });
    }
    check_fixed_header(b, &INDEX_MAGIC)?;
    let count = get_u64(b, 40);
    let body = (b.len() - INDEX_HEADER_LEN - 4) as u64;
    if count.checked_mul(8) != Some(body) {
        return Err(CorruptKind::BadLength {
            found: count,
            limit: body / 8,
        });
    }
    Ok(IndexHeader {
        seq: get_u64(b, 16),
        epoch: get_u64(b, 24),
        first: get_u64(b, 32),
        count,
        data_end: get_u64(b, 48),
    })
}

/// Verifies the body checksum of an index whose header already decoded.
///
/// # Errors
/// The checksum mismatch.
pub fn verify_body(b: &[u8], count: u64) -> Result<(), CorruptKind> {
    let end = INDEX_HEADER_LEN + count as usize * 8;
    let expected = get_u32(b, end);
    let actual = crc32fast::hash(&b[INDEX_HEADER_LEN..end]);
    if expected != actual {
        return Err(CorruptKind::Checksum { expected, actual });
    }
    Ok(())
}

/// The `k`-th offset of a decoded index (`k < count`).
pub fn offset(b: &[u8], k: u64) -> u64 {
    get_u64(b, INDEX_HEADER_LEN + k as usize * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let h = IndexHeader {
            seq: 3,
            epoch: 9,
            first: 100,
            count: 3,
            data_end: 500,
        };
        let b = encode(&h, &[64, 128, 256]);
        assert_eq!(decode_header(&b).unwrap(), h);
        verify_body(&b, 3).unwrap();
        assert_eq!(offset(&b, 2), 256);
        let mut bad = b.clone();
        bad[INDEX_HEADER_LEN + 1] ^= 4;
        assert!(verify_body(&bad, 3).is_err());
        let mut bad = b.clone();
        bad[41] ^= 1;
        assert!(decode_header(&bad).is_err());
        assert!(decode_header(&b[..b.len() - 8]).is_err());
    }
}
