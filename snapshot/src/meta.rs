//! Snapshot metadata and its checksummed on-disk encoding (see `snapshot/FORMAT.md`).

use std::path::Path;

use crate::{CorruptKind, Error, Result};

/// The metadata format version this build writes.
pub const META_VERSION: u32 = 1;
const MAGIC: [u8; 8] = *b"RWSNAPM\0";
/// The largest metadata file this build reads (the configuration dominates it).
pub const MAX_META_LEN: u64 = 64 << 20;

/// What a snapshot is: the Raft position it covers, the membership at that point, and the
/// size and checksum of its data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SnapshotMeta {
    /// Unique, opaque id; sorts by term, then index, then creation.
    pub id: String,
    /// The last log index the snapshot covers.
    pub index: u64,
    /// The term of that entry.
    pub term: u64,
    /// The encoded membership configuration at `index`.
    pub configuration: Vec<u8>,
    /// The index at which that configuration was committed.
    pub configuration_index: u64,
    /// Data size in bytes.
    pub size: u64,
    /// CRC-32 of the data.
    pub checksum: u32,
    /// Format version of the snapshot files.
    pub version: u32,
    /// Creation time, nanoseconds since the Unix epoch (orders snapshots at the same position).
    pub created: u64,
}

impl SnapshotMeta {
    /// Newest first: by term, then index, then creation, then id.
    pub(crate) fn newest_first(a: &SnapshotMeta, b: &SnapshotMeta) -> std::cmp::Ordering {
        (b.term, b.index, b.created, &b.id).cmp(&(a.term, a.index, a.created, &a.id))
    }

    /// Encodes to the checksummed on-disk form.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(96 + self.id.len() + self.configuration.len());
        b.extend_from_slice(&MAGIC);
        b.extend_from_slice(&self.version.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for v in [
            self.index,
            self.term,
            self.configuration_index,
            self.size,
            self.created,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&self.checksum.to_le_bytes());
        b.extend_from_slice(&(self.id.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.configuration.len() as u32).to_le_bytes());
        b.extend_from_slice(self.id.as_bytes());
        b.extend_from_slice(&self.configuration);
        let c = crc32fast::hash(&b);
        b.extend_from_slice(&c.to_le_bytes());
        b
    }

    /// Decodes and verifies bytes read from `path`.
    ///
    /// # Errors
    /// [`Error::Corrupt`] naming the file, the offset and what was expected.
    pub fn decode(b: &[u8], path: &Path) -> Result<Self> {
        let corrupt = |offset: usize, kind| Error::corrupt(path, offset as u64, kind);
        const FIXED: usize = 8 + 4 + 4 + 5 * 8 + 4 + 4 + 4;
        if b.len() < FIXED + 4 {
            return Err(corrupt(
                0,
                CorruptKind::Truncated {
                    needed: (FIXED + 4) as u64,
                    available: b.len() as u64,
                },
            ));
        }
        if b[..8] != MAGIC {
            return Err(corrupt(0, CorruptKind::BadMagic));
        }
        let n = b.len() - 4;
        let expected = u32le(b, n);
        let actual = crc32fast::hash(&b[..n]);
        if expected != actual {
            return Err(corrupt(n, CorruptKind::Checksum { expected, actual }));
        }
        let version = u32le(b, 8);
        if version != META_VERSION {
            return Err(corrupt(8, CorruptKind::Version { found: version }));
        }
        let u = |at| u64le(b, at);
        let idl = u32le(b, 60) as usize;
        let cfl = u32le(b, 64) as usize;
        if FIXED.checked_add(idl).and_then(|x| x.checked_add(cfl)) != Some(n) {
            return Err(corrupt(
                60,
                CorruptKind::BadLength {
                    found: idl as u64 + cfl as u64,
                    limit: (n - FIXED) as u64,
                },
            ));
        }
        let id = std::str::from_utf8(&b[FIXED..FIXED + idl])
            .map_err(|_| corrupt(FIXED, CorruptKind::Structure("id is not UTF-8")))?
            .to_string();
        Ok(SnapshotMeta {
            id,
            index: u(16),
            term: u(24),
            configuration_index: u(32),
            size: u(40),
            created: u(48),
            checksum: u32le(b, 56),
            configuration: b[FIXED + idl..n].to_vec(),
            version,
        })
    }
}

fn u32le(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64le(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// A new id: sorts by term, then index, then creation time; unique within and across
/// processes (a per-process counter and a random salt break ties).
pub(crate) fn new_id(term: u64, index: u64, created: u64) -> String {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let salt = RandomState::new().hash_one(n) as u32;
    format!("{term:016x}-{index:016x}-{created:016x}-{n:04x}{salt:08x}")
}

/// Nanoseconds since the Unix epoch.
pub(crate) fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_any_damage_is_detected() {
        let m = SnapshotMeta {
            id: new_id(3, 100, 5),
            index: 100,
            term: 3,
            configuration: b"voters=1,2,3".to_vec(),
            configuration_index: 90,
            size: 1 << 33,
            checksum: 0xdead_beef,
            version: META_VERSION,
            created: 5,
        };
        let b = m.encode();
        let p = Path::new("/s/meta");
        assert_eq!(SnapshotMeta::decode(&b, p).unwrap(), m);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x40;
            assert!(SnapshotMeta::decode(&c, p).is_err(), "byte {i}");
        }
        for n in 0..b.len() {
            assert!(SnapshotMeta::decode(&b[..n], p).is_err());
        }
    }

    #[test]
    fn ids_are_unique_and_ordered() {
        let a = new_id(1, 5, 10);
        let b = new_id(1, 5, 10);
        assert_ne!(a, b);
        assert!(new_id(2, 0, 0) > new_id(1, 99, 99));
        assert!(new_id(1, 6, 0) > new_id(1, 5, 99));
    }
}
