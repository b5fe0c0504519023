//! cargo-fuzz target: see `raftwal_fuzz::snapshot_crash`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftwal_fuzz::snapshot_crash(data));
