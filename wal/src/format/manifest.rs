//! The manifest's bytes: magic, version, the counters and bounds, the sealed segments and the
//! stable keys, and a checksum over all of it.

use std::path::Path;

use super::{get_u32, get_u64, FORMAT_VERSION, MANIFEST_MAGIC};
use crate::error::CorruptKind;
use crate::manifest::{Manifest, SegmentRecord};
use crate::{Error, Result};

struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], CorruptKind> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or(CorruptKind::Truncated {
                needed: (self.pos as u64).saturating_add(n as u64),
                available: self.b.len() as u64,
            })?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u64(&mut self) -> Result<u64, CorruptKind> {
        Ok(get_u64(self.take(8)?, 0))
    }
    fn u32(&mut self) -> Result<u32, CorruptKind> {
        Ok(get_u32(self.take(4)?, 0))
    }
}

impl Manifest {
    /// Encodes to bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(128 + self.sealed.len() * 40);
        b.extend_from_slice(&MANIFEST_MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes()); // body length, patched below
        for v in [
            self.generation,
            self.first,
            self.next,
            self.next_seq,
            self.tail_seq,
            self.tail_epoch,
            self.tail_from,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&(self.sealed.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.stable.len() as u32).to_le_bytes());
        for s in &self.sealed {
            for v in [s.seq, s.epoch, s.lo, s.hi, s.data_end] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        for (k, v) in &self.stable {
            b.extend_from_slice(&(k.len() as u32).to_le_bytes());
            b.extend_from_slice(&(v.len() as u32).to_le_bytes());
            b.extend_from_slice(k);
            b.extend_from_slice(v);
        }
        let body = (b.len() - 16) as u32;
        b[12..16].copy_from_slice(&body.to_le_bytes());
        let c = crc32fast::hash(&b);
        b.extend_from_slice(&c.to_le_bytes());
        b
    }

    /// Decodes and verifies bytes read from `path`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] or [`Error::UnsupportedVersion`]; never panics or over-allocates.
    pub fn decode(b: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |offset: u64, kind| Error::Corrupt {
            path: path.to_path_buf(),
            offset,
            indexes: None,
            kind,
        };
        if b.len() < 20 {
            return Err(corrupt(
                0,
                CorruptKind::Truncated {
                    needed: 20,
                    available: b.len() as u64,
                },
            ));
        }
        if b[..8] != MANIFEST_MAGIC {
            return Err(corrupt(0, CorruptKind::BadMagic));
        }
        let body = get_u32(b, 12) as usize;
        if b.len() != 16 + body + 4 {
            return Err(corrupt(
                12,
                CorruptKind::BadLength {
                    found: body as u64,
                    limit: b.len().saturating_sub(20) as u64,
                },
            ));
        }
        let expected = get_u32(b, 16 + body);
        let actual = crc32fast::hash(&b[..16 + body]);
        if expected != actual {
            return Err(corrupt(
                (16 + body) as u64,
                CorruptKind::Checksum { expected, actual },
            ));
        }
        let version = get_u32(b, 8);
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        let mut c = Cursor {
            b: &b[..16 + body],
            pos: 16,
        };
        let parse = |c: &mut Cursor<'_>| -> Result<Manifest, CorruptKind> {
            let mut m = Manifest {
                generation: c.u64()?,
                first: c.u64()?,
                next: c.u64()?,
                next_seq: c.u64()?,
                tail_seq: c.u64()?,
                tail_epoch: c.u64()?,
                tail_from: c.u64()?,
                ..Manifest::default()
            };
            let nsealed = c.u32()? as usize;
            let nstable = c.u32()? as usize;
            let remaining = (c.b.len() - c.pos) as u64;
            // Bound the counts by the bytes present before allocating anything.
            if (nsealed as u64) * 40 + (nstable as u64) * 8 > remaining {
                return Err(CorruptKind::BadLength {
                    found: nsealed as u64,
                    limit: remaining / 40,
                });
            }
            m.sealed.reserve(nsealed);
            for _ in 0..nsealed {
                m.sealed.push(SegmentRecord {
                    seq: c.u64()?,
                    epoch: c.u64()?,
                    lo: c.u64()?,
                    hi: c.u64()?,
                    data_end: c.u64()?,
                });
            }
            for _ in 0..nstable {
                let kl = c.u32()? as usize;
                let vl = c.u32()? as usize;
                let k = c.take(kl)?.to_vec();
                let v = c.take(vl)?.to_vec();
                m.stable.insert(k, v);
            }
            if c.pos != c.b.len() {
                return Err(CorruptKind::Structure("trailing bytes in manifest"));
            }
            Ok(m)
        };
        let m = parse(&mut c).map_err(|k| corrupt(c.pos as u64, k))?;
        let mut prev_seq = None;
        for s in &m.sealed {
            if prev_seq.is_some_and(|p| p >= s.seq) || s.seq >= m.tail_seq || s.lo > s.hi {
                return Err(corrupt(
                    0,
                    CorruptKind::Structure("segment list out of order"),
                ));
            }
            prev_seq = Some(s.seq);
        }
        Ok(m)
    }
}
