//! Golden files: the bytes each codec writes for fixed inputs, checked in under
//! `wal/tests/data/`. A change to any layout fails here, not only in round trips; a deliberate
//! change (with a new [`FORMAT_VERSION`](super::FORMAT_VERSION) and `wal/FORMAT.md`) rewrites
//! them with `RAFTWAL_BLESS=1 cargo test -p raftwal-wal golden`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::index::{encode as encode_index, IndexHeader};
use super::{encode_frame, FrameHeader, FrameType, SegmentHeader};
use super::{free_name, index_name, segment_name};
use crate::manifest::{Manifest, SegmentRecord};

const EPOCH: u64 = 0x0123_4567_89ab_cdef;

fn check(name: &str, bytes: &[u8]) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name);
    if std::env::var_os("RAFTWAL_BLESS").is_some() {
        std::fs::write(&path, bytes).unwrap();
        return;
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        golden == bytes,
        "{name}: the bytes written differ from the golden file {} (a format change needs a new \
         format version, wal/FORMAT.md, and RAFTWAL_BLESS=1)",
        path.display()
    );
}

#[test]
fn segment_header_bytes() {
    let h = SegmentHeader {
        seq: 7,
        epoch: EPOCH,
        base_hint: 42,
    };
    check("segment-header.bin", &h.encode());
}

/// One batch of every frame type: entries (with and without context), a stable key, the
/// truncations, a reset, and the commit record that ends it.
#[test]
fn frame_bytes() {
    let mut out = Vec::new();
    let frame = |out: &mut Vec<u8>, ftype, kind, aux, a, b, payload: &[&[u8]]| {
        let len = payload.iter().map(|p| p.len()).sum::<usize>() as u32;
        let h = FrameHeader {
            ftype,
            kind,
            len,
            aux,
            a,
            b,
        };
        encode_frame(out, EPOCH, &h, payload);
    };
    frame(&mut out, FrameType::Entry, 0, 0, 5, 2, &[b"put x=1"]);
    frame(&mut out, FrameType::Entry, 1, 3, 6, 2, &[b"ctx", b"conf"]);
    frame(
        &mut out,
        FrameType::Stable,
        0,
        4,
        0,
        0,
        &[b"vote", b"\x02\0\0\0"],
    );
    frame(&mut out, FrameType::TruncateHead, 0, 0, 3, 0, &[]);
    frame(&mut out, FrameType::TruncateTail, 0, 0, 5, 0, &[]);
    frame(&mut out, FrameType::Reset, 0, 0, 100, 0, &[]);
    frame(&mut out, FrameType::Commit, 0, 0, 64, 6, &[]);
    check("frames.bin", &out);
}

#[test]
fn index_bytes() {
    let h = IndexHeader {
        seq: 7,
        epoch: EPOCH,
        first: 5,
        count: 3,
        data_end: 4000,
    };
    check("index.bin", &encode_index(&h, &[64, 136, 216]));
}

#[test]
fn manifest_bytes() {
    let mut stable = BTreeMap::new();
    stable.insert(b"term".to_vec(), 3u64.to_le_bytes().to_vec());
    stable.insert(b"vote".to_vec(), 2u64.to_le_bytes().to_vec());
    let m = Manifest {
        generation: 9,
        first: 5,
        next: 12,
        next_seq: 4,
        sealed: vec![
            SegmentRecord {
                seq: 1,
                epoch: EPOCH,
                lo: 5,
                hi: 9,
                data_end: 4000,
            },
            SegmentRecord {
                seq: 2,
                epoch: !EPOCH,
                lo: 9,
                hi: 11,
                data_end: 1024,
            },
        ],
        tail_seq: 3,
        tail_epoch: EPOCH ^ 0xff,
        tail_from: 0,
        stable,
    };
    check("manifest.bin", &m.encode());
}

#[test]
fn file_names() {
    let names = [segment_name(0x2a), index_name(0x2a), free_name(0x2a)].join("\n");
    check("file-names.txt", names.as_bytes());
}
