//! cargo-fuzz target: see `raftwal_fuzz::wal_open_bytes`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftwal_fuzz::wal_open_bytes(data));
