//! Replays every fuzz seed and every input the fuzzers ever found failing
//! (`fuzz/seeds/<target>/`, `fuzz/regressions/<target>/`) through the same scenario code the
//! cargo-fuzz targets run, in plain `cargo test` on stable Rust.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    missing_docs
)]

#[path = "../../fuzz/src/lib.rs"]
mod scenarios;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut n = 0;
    for dir in ["seeds", "regressions"] {
        let d = root.join(dir).join(target);
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        let mut files: Vec<_> = entries.map(|e| e.unwrap().path()).collect();
        files.sort();
        for f in files {
            let data = std::fs::read(&f).unwrap();
            let r = std::panic::catch_unwind(|| run(&data));
            assert!(r.is_ok(), "{target}: input {} fails", f.display());
            n += 1;
        }
    }
    assert!(n > 0, "no inputs for {target}");
}

#[test]
fn wal_open_bytes_inputs() {
    replay("wal_open_bytes", scenarios::wal_open_bytes);
}

#[test]
fn wal_crash_inputs() {
    replay("wal_crash", scenarios::wal_crash);
}

#[test]
fn snapshot_crash_inputs() {
    replay("snapshot_crash", scenarios::snapshot_crash);
}

/// A deterministic sweep over generated inputs, so the scenarios run broadly even without the
/// fuzzer.
#[test]
fn generated_inputs() {
    let mut rng = fastrand::Rng::with_seed(0x2545_F491_4F6C_DD1D);
    for len in [0usize, 1, 3, 8, 30, 90, 250] {
        for _ in 0..12 {
            let data: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            scenarios::wal_open_bytes(&data);
            scenarios::wal_crash(&data);
            scenarios::snapshot_crash(&data);
            scenarios::raft_storage_crash(&data);
            scenarios::raft_messages(&data);
        }
    }
}

#[test]
fn raft_storage_crash_inputs() {
    replay("raft_storage_crash", scenarios::raft_storage_crash);
}

#[test]
fn raft_messages_inputs() {
    replay("raft_messages", scenarios::raft_messages);
}
