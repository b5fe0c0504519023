//! Crash tests through the simulated file system: for many seeds, run a random workload, cut
//! the power at a random file operation (or fail an fsync, or run out of space), let unsynced
//! data be dropped, torn, zeroed, garbled or kept, reopen, and check against the model:
//! every acknowledged entry and stable value is there and intact, nothing unacknowledged
//! appears except the whole batch that was in flight, deleted entries never come back, and the
//! log accepts appends afterwards.
//!
//! Reproduce a failure with `RAFTWAL_SEED=<seed> cargo test -p raftwal-wal --test crash`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use raftwal_wal::vfs::{CrashPolicy, SimFaults};
use raftwal_wal::{Error, LogStore, MemStore};

#[derive(Debug, Clone, Copy)]
enum Fault {
    PowerCut,
    FsyncFails,
    NoSpace,
}

fn seeds(default: std::ops::Range<u64>) -> Vec<u64> {
    match std::env::var("RAFTWAL_SEED") {
        Ok(s) => vec![s.parse().expect("RAFTWAL_SEED must be a number")],
        Err(_) => default.collect(),
    }
}

/// Runs one seeded crash scenario; panics with the seed in the message on any violation.
/// Returns whether the fault fired during the workload (rather than after it).
fn run(seed: u64, fault: Fault, background: bool) -> bool {
    let mut rng = Rng::new(seed);
    let h = SimHarness::new(seed, [4096u64, 8192, 32768][rng.below(3) as usize]);
    let opts = || h.opts().background_prepare(background);
    let mut wal = raftwal_wal::Wal::open("/db/wal", opts()).unwrap();
    let model = MemStore::new();
    let faults = match fault {
        Fault::PowerCut => SimFaults {
            crash_at_op: Some(1 + rng.below(300)),
            ..Default::default()
        },
        Fault::FsyncFails => SimFaults {
            fail_sync_at: Some(1 + rng.below(40)),
            ..Default::default()
        },
        Fault::NoSpace => SimFaults {
            enospc_after_bytes: Some(rng.below(200_000)),
            ..Default::default()
        },
    };
    h.vfs.set_faults(faults);
    let mut in_flight = None;
    let mut failed_error = None;
    for step in 0..120 {
        let first = model.first_index().unwrap();
        let last = model.last_index().unwrap();
        let op = random_op(&mut rng, first, last);
        if let Op::Reopen = op {
            drop(wal);
            match raftwal_wal::Wal::open("/db/wal", opts()) {
                Ok(w) => wal = w,
                Err(e) => {
                    // The reopen itself hit the fault: crash and check below.
                    failed_error = Some(format!("reopen at step {step}: {e}"));
                    h.vfs.crash(CrashPolicy::Random(seed));
                    wal = h
                        .try_open()
                        .unwrap_or_else(|e| panic!("seed {seed}: reopen after crash failed: {e}"));
                    break;
                }
            }
            continue;
        }
        match apply_wal(&wal, &op) {
            Ok(()) => apply_model(&model, &op).unwrap_or_else(|e| {
                panic!("seed {seed}: WAL accepted {op:?} but the model refused: {e}")
            }),
            Err(e @ (Error::OutOfOrder { .. } | Error::InvalidRange { .. })) => {
                assert!(
                    apply_model(&model, &op).is_err(),
                    "seed {seed}: WAL refused {op:?} ({e}) but the model accepted"
                );
            }
            Err(e) => {
                in_flight = Some(op);
                failed_error = Some(e.to_string());
                // Fail closed: nothing more is accepted.
                assert!(
                    matches!(
                        apply_wal(&wal, &Op::Set(b"after".to_vec(), 1)),
                        Err(Error::Poisoned | Error::Io { .. })
                    ),
                    "seed {seed}: a write after a failure was accepted"
                );
                break;
            }
        }
    }
    // Reads still work before the crash (from the page cache).
    drop(wal);
    h.vfs.crash(CrashPolicy::Random(seed ^ 0xabcdef));
    let wal = h.try_open().unwrap_or_else(|e| {
        panic!("seed {seed} ({fault:?}): recovery failed: {e}; the fault was {failed_error:?}")
    });
    let mut candidates = vec![model.clone()];
    if let Some(op) = &in_flight {
        let after = model.clone();
        if apply_model(&after, op).is_ok() {
            candidates.push(after);
        }
    }
    assert!(
        candidates.iter().any(|c| same(&wal, c)),
        "seed {seed} ({fault:?}): recovered state matches neither the acknowledged state nor it plus the in-flight {in_flight:?}; fault: {failed_error:?}; recovered bounds ({}, {}), model ({}, {})",
        wal.first_index().unwrap(),
        wal.last_index().unwrap(),
        model.first_index().unwrap(),
        model.last_index().unwrap(),
    );
    // The log accepts appends and survives another crash.
    let last = wal.last_index().unwrap();
    let e = entries(last + 1, last + 3, 99, 10);
    wal.store_logs(&e)
        .unwrap_or_else(|err| panic!("seed {seed}: append after recovery: {err}"));
    drop(wal);
    h.vfs.crash(CrashPolicy::DropAll);
    let wal = h.try_open().unwrap();
    assert_eq!(wal.get_log(last + 2).unwrap(), e[1], "seed {seed}");
    failed_error.is_some()
}

/// Runs every seed and checks that the fault really fired mid-workload in most of them, so
/// the test cannot pass by never crashing.
fn run_all(range: std::ops::Range<u64>, fault: Fault, background: bool) {
    let seeds = seeds(range);
    let fired = seeds.iter().filter(|&&s| run(s, fault, background)).count();
    assert!(
        seeds.len() == 1 || fired * 2 > seeds.len(),
        "{fault:?}: the fault fired in only {fired} of {} runs",
        seeds.len()
    );
}

#[test]
fn power_cut_at_random_operations() {
    run_all(0..400, Fault::PowerCut, false);
}

#[test]
fn power_cut_with_background_preparation() {
    run_all(1000..1100, Fault::PowerCut, true);
}

#[test]
fn fsync_failure_poisons_and_loses_nothing_acknowledged() {
    run_all(2000..2200, Fault::FsyncFails, false);
}

#[test]
fn enospc_poisons_and_loses_nothing_acknowledged() {
    run_all(3000..3200, Fault::NoSpace, false);
}

/// Crash at every single file operation of one fixed workload, with each crash policy.
#[test]
fn crash_at_every_operation() {
    let workload = |wal: &raftwal_wal::Wal, model: &MemStore| -> Result<(), Box<(Op, Error)>> {
        let mut rng = Rng::new(7);
        for _ in 0..30 {
            let op = random_op(
                &mut rng,
                model.first_index().unwrap(),
                model.last_index().unwrap(),
            );
            if let Op::Reopen = op {
                continue;
            }
            match apply_wal(wal, &op) {
                Ok(()) => apply_model(model, &op).unwrap(),
                Err(Error::OutOfOrder { .. } | Error::InvalidRange { .. }) => {}
                Err(e) => return Err(Box::new((op, e))),
            }
        }
        Ok(())
    };
    // Count the operations of a fault-free run.
    let h = SimHarness::new(0, 4096);
    h.vfs.set_faults(SimFaults::default());
    let wal = raftwal_wal::Wal::open("/db/wal", h.opts().background_prepare(false)).unwrap();
    workload(&wal, &MemStore::new()).unwrap();
    let total = h.vfs.ops();
    drop(wal);
    assert!(total > 50, "workload too small: {total} ops");
    for n in 1..=total {
        for policy in [
            CrashPolicy::DropAll,
            CrashPolicy::KeepAll,
            CrashPolicy::Random(n),
        ] {
            let h = SimHarness::new(n, 4096);
            let wal =
                raftwal_wal::Wal::open("/db/wal", h.opts().background_prepare(false)).unwrap();
            h.vfs.set_faults(SimFaults {
                crash_at_op: Some(n),
                ..Default::default()
            });
            let model = MemStore::new();
            let in_flight = workload(&wal, &model).err();
            drop(wal);
            h.vfs.crash(policy);
            let wal = h
                .try_open()
                .unwrap_or_else(|e| panic!("crash at op {n} ({policy:?}): reopen failed: {e}"));
            let ok = same(&wal, &model)
                || in_flight.as_ref().is_some_and(|b| {
                    let op = &b.0;
                    let after = model.clone();
                    apply_model(&after, op).is_ok() && same(&wal, &after)
                });
            assert!(
                ok,
                "crash at op {n} ({policy:?}): recovered state is wrong; in flight: {in_flight:?}"
            );
        }
    }
}

/// A WAL opened in directories that did not exist survives a power cut right after its first
/// durable write: every directory `open` created is durable (`Vfs::create_dir_durable` syncs
/// each ancestor), so the log is found again, not created afresh.
#[test]
fn a_new_wal_in_new_directories_survives_a_power_cut() {
    let vfs = raftwal_wal::vfs::SimVfs::new(1);
    let opts = || {
        raftwal_wal::WalOptions::default()
            .segment_size(4096)
            .background_prepare(false)
            .vfs(std::sync::Arc::new(vfs.process()))
    };
    let wal = raftwal_wal::Wal::open("/a/b/wal", opts()).unwrap();
    wal.store_logs(&entries(1, 2, 1, 10)).unwrap();
    std::mem::forget(wal); // no clean close
    vfs.crash(CrashPolicy::DropAll);
    let wal = raftwal_wal::Wal::open("/a/b/wal", opts()).unwrap();
    assert_eq!(wal.get_log(1).unwrap(), entry(1, 1, 10));
}
