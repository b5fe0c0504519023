//! Seeded simulations: a cluster on the simulated disk (`SimVfs`: power cuts that drop or
//! tear unsynced writes, failed fsyncs) and the in-memory network (partitions, one-way cuts,
//! held-back messages, loss, duplication, reordering, delay) driven through a random schedule
//! of crashes, restarts, membership changes (joint ones too, with restarts while joint),
//! leadership transfers and leader self-removal, while clients write and read (read-index and
//! lease reads). After each run: no node stopped but after an injected storage fault, every
//! acknowledged command applied exactly once and in the same order on every node, and the
//! history (lease reads included) is linearizable (`support/chaos/`).
//!
//! Each group of seeds must also have seen every kind of fault take effect (a transfer that
//! completed, a crash while joint, a partition a message started, a node stopped by an fsync
//! failure...), writes acknowledged and reads served by the lease: a nemesis that stopped
//! working would fail the test rather than pass it vacuously.
//!
//! `cargo test --test simulation` runs 200 seeds; `RAFTWAL_SEED=n` runs seed `n` alone;
//! `cargo test --test simulation -- --ignored` runs `RAFTWAL_SEEDS` (default 2,000) more.
//! A seed fixes the nemesis's and the clients' choices and the network's faults, not the
//! interleaving of the nodes' threads with them, so a replay re-runs the same schedule rather
//! than the same execution; a failure that does not come back at once may need a few runs
//! (`ManualCluster`, in `raftwal_glue::testing`, is the fully deterministic harness, used by
//! the `raft_messages` fuzz target).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/chaos/mod.rs"]
mod chaos;
#[path = "support/linearizability.rs"]
mod lin;
#[path = "support/pairs.rs"]
mod pairs;

use std::time::{Duration, Instant};

fn params(seed: u64) -> chaos::Params {
    chaos::Params {
        seed,
        clients: 3,
        keys: 4,
        duration: Duration::from_millis(300),
        min_events: 0,
        require: &[],
        every: Duration::from_millis(20),
        sim: true,
        faults: true,
        tick: Duration::from_millis(5),
    }
}

/// The seed `RAFTWAL_SEED` names, if set.
///
/// # Panics
/// If it is set to something other than a number.
fn replay_seed() -> Option<u64> {
    let s = std::env::var("RAFTWAL_SEED").ok()?;
    Some(
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("RAFTWAL_SEED={s:?} is not a seed number")),
    )
}

/// Runs `seeds` and checks that together they covered every fault; with `RAFTWAL_SEED` set,
/// runs only that seed, in the group whose range holds it (seeds past every group's range run
/// in the first group).
fn run(seeds: std::ops::Range<u64>) {
    let seeds: Vec<u64> = match replay_seed() {
        Some(s) if seeds.contains(&s) || (seeds.start == 0 && s >= 200) => vec![s],
        Some(_) => return,
        None => seeds.collect(),
    };
    let started = Instant::now();
    let mut total = chaos::Outcome::default();
    for &seed in &seeds {
        total.add(&chaos::run(params(seed)));
    }
    eprintln!(
        "{} seeds: {} events, {} acknowledged writes, {} lease reads, {:.1} s ({:.2} s checking histories); effects: {:?}",
        seeds.len(),
        total.events,
        total.acked,
        total.lease_reads,
        started.elapsed().as_secs_f64(),
        total.check_time.as_secs_f64(),
        total.effects
    );
    if seeds.len() > 1 {
        total.assert_covered(chaos::fault_kinds(true));
    }
}

// Four groups, run in parallel by the test harness.
#[test]
fn seeds_0_to_50() {
    run(0..50);
}

#[test]
fn seeds_50_to_100() {
    run(50..100);
}

#[test]
fn seeds_100_to_150() {
    run(100..150);
}

#[test]
fn seeds_150_to_200() {
    run(150..200);
}

#[test]
#[ignore = "long: thousands of seeds"]
fn many_seeds() {
    if replay_seed().is_some() {
        return;
    }
    let n: u64 = std::env::var("RAFTWAL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    run(1000..1000 + n);
}
