//! Shared test harness: one way to make, reopen and crash each store under test.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use raftwal_wal::vfs::{CrashPolicy, SimVfs};
use raftwal_wal::{LogStore, MemStore, StableStore, Wal, WalOptions};

/// A store under test that can be closed and reopened.
pub trait Harness {
    type Store: LogStore + StableStore;
    fn name(&self) -> &'static str;
    fn open(&mut self) -> Self::Store;
    /// Closes and reopens (a clean restart).
    fn reopen(&mut self, s: Self::Store) -> Self::Store;
}

pub struct MemHarness;
impl Harness for MemHarness {
    type Store = MemStore;
    fn name(&self) -> &'static str {
        "MemStore"
    }
    fn open(&mut self) -> MemStore {
        MemStore::new()
    }
    fn reopen(&mut self, s: MemStore) -> MemStore {
        s
    }
}

pub struct DiskHarness {
    pub dir: tempfile::TempDir,
    pub segment_size: u64,
}
impl DiskHarness {
    pub fn new(segment_size: u64) -> Self {
        DiskHarness {
            dir: tempfile::tempdir().unwrap(),
            segment_size,
        }
    }
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("wal")
    }
}
impl Harness for DiskHarness {
    type Store = Wal;
    fn name(&self) -> &'static str {
        "Wal(disk)"
    }
    fn open(&mut self) -> Wal {
        Wal::open(
            self.path(),
            WalOptions::default().segment_size(self.segment_size),
        )
        .unwrap()
    }
    fn reopen(&mut self, s: Wal) -> Wal {
        drop(s);
        self.open()
    }
}

pub struct SimHarness {
    pub vfs: SimVfs,
    pub segment_size: u64,
}
impl SimHarness {
    pub fn new(seed: u64, segment_size: u64) -> Self {
        SimHarness {
            vfs: SimVfs::new(seed),
            segment_size,
        }
    }
    pub fn opts(&self) -> WalOptions {
        WalOptions::default()
            .segment_size(self.segment_size)
            .vfs(Arc::new(self.vfs.process()))
    }
    pub fn try_open(&self) -> raftwal_wal::Result<Wal> {
        Wal::open(Path::new("/db/wal"), self.opts())
    }
    /// Crashes the simulated machine (dropping the store first) and reopens.
    pub fn crash_reopen(&mut self, s: Wal, policy: CrashPolicy) -> Wal {
        drop(s);
        self.vfs.crash(policy);
        self.open()
    }
}
impl Harness for SimHarness {
    type Store = Wal;
    fn name(&self) -> &'static str {
        "Wal(sim)"
    }
    fn open(&mut self) -> Wal {
        self.try_open().unwrap()
    }
    fn reopen(&mut self, s: Wal) -> Wal {
        drop(s);
        self.open()
    }
}

pub use raftwal_testkit::*;
