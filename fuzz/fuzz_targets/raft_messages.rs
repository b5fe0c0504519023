//! cargo-fuzz target: see `raftwal_fuzz::raft_messages`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| raftwal_fuzz::raft_messages(data));
