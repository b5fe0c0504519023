//! Golden files under `snapshot/tests/data/`: the metadata bytes for fixed values, and a store
//! directory written by this format version (two snapshots) that every later build must open,
//! list and read back. `RAFTWAL_BLESS=1` rewrites them (only with a new format version).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    missing_docs
)]

use std::io::Write;
use std::path::{Path, PathBuf};

use raftwal_snapshot::{
    read_all, FileSnapshotStore, SnapshotMeta, SnapshotSink, SnapshotStore, META_VERSION,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn bless() -> bool {
    std::env::var_os("RAFTWAL_BLESS").is_some()
}

fn body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}

#[test]
fn meta_bytes() {
    let m = SnapshotMeta {
        id: "0000000000000003-0000000000000064-0000000000000001-0001deadbeef".into(),
        index: 100,
        term: 3,
        configuration: b"voters 1 2 3".to_vec(),
        configuration_index: 90,
        size: 5000,
        checksum: 0x1234_5678,
        version: META_VERSION,
        created: 1,
    };
    let path = data("meta-v1.bin");
    if bless() {
        std::fs::write(&path, m.encode()).unwrap();
    }
    let golden = std::fs::read(&path).unwrap();
    assert!(
        golden == m.encode(),
        "the metadata bytes differ from {} (a format change needs a new version, \
         snapshot/FORMAT.md, and RAFTWAL_BLESS=1)",
        path.display()
    );
    assert_eq!(SnapshotMeta::decode(&golden, &path).unwrap(), m);
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn a_store_of_this_format_opens() {
    let dir = data("store-v1");
    if bless() {
        let _ = std::fs::remove_dir_all(&dir);
        let s = FileSnapshotStore::open(&dir, 2).unwrap();
        for (index, term, n) in [(50, 2, 3000), (100, 3, 70_000)] {
            let mut sink = s.create(index, term, b"voters 1 2 3", index - 1).unwrap();
            sink.write_all(&body(n)).unwrap();
            sink.commit().unwrap();
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("snaps");
    copy_tree(&dir, &copy);
    let s = FileSnapshotStore::open(&copy, 2).unwrap();
    let list = s.list().unwrap();
    let got: Vec<(u64, u64, u64)> = list.iter().map(|m| (m.index, m.term, m.size)).collect();
    assert_eq!(got, vec![(100, 3, 70_000), (50, 2, 3000)], "newest first");
    for m in &list {
        let (meta, r) = s.open(&m.id).unwrap();
        assert_eq!(&meta, m);
        assert_eq!(meta.configuration, b"voters 1 2 3");
        assert_eq!(meta.configuration_index, meta.index - 1);
        assert_eq!(read_all(r).unwrap(), body(meta.size as usize));
    }
}
