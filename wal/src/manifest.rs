//! The manifest: the crash-atomic record of what lives outside the frame stream — the sealed
//! segments and the part of each still in use, the tail segment, the log bounds and the stable
//! keys as of the start of the tail segment. Recovery starts from it and replays only the tail.
//!
//! It is replaced atomically: write `MANIFEST.tmp`, `fsync` it, rename over `MANIFEST`, `fsync`
//! the directory. A crash leaves either the old or the new one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::CorruptKind;
use crate::format::{SegmentId, MANIFEST, MANIFEST_TMP, MAX_MANIFEST_LEN};
use crate::vfs::{OpenMode, Vfs};
use crate::{Error, Result};

/// A sealed segment as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    /// Sequence number (file name).
    pub seq: u64,
    /// Checksum salt.
    pub epoch: u64,
    /// First index in use.
    pub lo: u64,
    /// One past the last index in use.
    pub hi: u64,
    /// End of the committed frames.
    pub data_end: u64,
}

impl SegmentRecord {
    /// The segment's identity.
    pub(crate) fn id(&self) -> SegmentId {
        SegmentId {
            seq: self.seq,
            epoch: self.epoch,
        }
    }
}

/// The decoded manifest.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Manifest {
    /// Incremented on every rewrite.
    pub generation: u64,
    /// The log's first index at the start of the tail segment.
    pub first: u64,
    /// One past the log's last index at the start of the tail segment.
    pub next: u64,
    /// The next segment sequence number to allocate.
    pub next_seq: u64,
    /// Sealed segments, oldest first.
    pub sealed: Vec<SegmentRecord>,
    /// The tail segment's sequence number.
    pub tail_seq: u64,
    /// The tail segment's epoch.
    pub tail_epoch: u64,
    /// 0, or a clean-close checkpoint: the bounds and stable keys here are as of this offset in
    /// the tail segment, whose frames before it are indexed by the tail's `.idx` file; recovery
    /// replays only what follows.
    pub tail_from: u64,
    /// Stable keys as of the start of the tail segment.
    pub stable: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl Manifest {
    /// The tail segment's identity.
    pub(crate) fn tail_id(&self) -> SegmentId {
        SegmentId {
            seq: self.tail_seq,
            epoch: self.tail_epoch,
        }
    }

    /// Atomically replaces the manifest in `dir`.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub fn write(&self, vfs: &dyn Vfs, dir: &Path) -> Result<()> {
        let tmp = dir.join(MANIFEST_TMP);
        let dst = dir.join(MANIFEST);
        let bytes = self.encode();
        let f = vfs
            .open(&tmp, OpenMode::CreateTruncate)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all_at(&bytes, 0)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        drop(f);
        vfs.rename(&tmp, &dst)
            .map_err(|e| Error::io("rename", &tmp, e))?;
        vfs.sync_dir(dir)
            .map_err(|e| Error::io("fsync directory", dir, e))?;
        Ok(())
    }

    /// Reads the manifest of `dir`, or `None` if there is none.
    ///
    /// # Errors
    /// I/O errors, [`Error::Corrupt`], [`Error::UnsupportedVersion`].
    pub fn read(vfs: &dyn Vfs, dir: &Path) -> Result<Option<Self>> {
        let path: PathBuf = dir.join(MANIFEST);
        let f = match vfs.open(&path, OpenMode::Read) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open", &path, e)),
        };
        let len = f.len().map_err(|e| Error::io("stat", &path, e))?;
        if len > MAX_MANIFEST_LEN {
            return Err(Error::Corrupt {
                path,
                offset: 0,
                indexes: None,
                kind: CorruptKind::BadLength {
                    found: len,
                    limit: MAX_MANIFEST_LEN,
                },
            });
        }
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, 0)
            .map_err(|e| Error::io("read", &path, e))?;
        Self::decode(&b, &path).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_every_byte_damage_is_an_error() {
        let mut m = Manifest {
            generation: 3,
            first: 5,
            next: 99,
            next_seq: 4,
            tail_seq: 3,
            tail_epoch: 77,
            ..Default::default()
        };
        m.sealed.push(SegmentRecord {
            seq: 2,
            epoch: 1,
            lo: 5,
            hi: 50,
            data_end: 4096,
        });
        m.stable
            .insert(b"term".to_vec(), 7u64.to_le_bytes().to_vec());
        let b = m.encode();
        let p = Path::new("/x/MANIFEST");
        assert_eq!(Manifest::decode(&b, p).unwrap(), m);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x10;
            assert!(Manifest::decode(&c, p).is_err(), "byte {i}");
        }
        for n in 0..b.len() {
            assert!(Manifest::decode(&b[..n], p).is_err());
        }
    }
}
