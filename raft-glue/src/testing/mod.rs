//! Test support (feature `testing`): a conformance suite for any `raft::Storage`
//! ([`check_storage`]), and a deterministic cluster of nodes driven by hand on one thread
//! ([`ManualCluster`]), for fuzzing and simulations that must replay exactly.

// Test support: a broken rule is reported by panicking, as assertions do.
#![allow(clippy::panic)]

mod cluster;
mod storage;

pub use cluster::{ManualCluster, Recorder};
pub use storage::{check_storage, MemStorageHarness, RaftStorageHarness, Report, StorageHarness};
