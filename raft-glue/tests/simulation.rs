//! Seeded simulations: a cluster on the simulated disk (`SimVfs`: power cuts that drop or
//! tear unsynced writes, failed fsyncs) and the in-memory network (partitions, one-way cuts,
//! held-back messages, loss, duplication, reordering, delay) driven through a random schedule
//! of crashes, restarts, membership changes (joint ones too, with restarts while joint),
//! leadership transfers and leader self-removal, while clients write and read (read-index and
//! lease reads). After each run: no node stopped but after an injected storage fault, every
//! acknowledged command applied exactly once and in the same order on every node, and the
//! history (lease reads included) is linearizable (`support/chaos/`).
//!
//! `cargo test --test simulation` runs 200 seeds; `RAFTWAL_SEED=n` replays one;
//! `cargo test --test simulation -- --ignored` runs `RAFTWAL_SEEDS` (default 2,000) more.
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
        every: Duration::from_millis(20),
        sim: true,
        faults: true,
        tick: Duration::from_millis(5),
    }
}

/// Runs `seeds` (or the one `RAFTWAL_SEED` names).
fn run(seeds: std::ops::Range<u64>) {
    let seeds: Vec<u64> = match std::env::var("RAFTWAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        Some(s) => vec![s],
        None => seeds.collect(),
    };
    let started = Instant::now();
    let (mut events, mut acked, mut lease) = (0, 0, 0);
    for &seed in &seeds {
        let out = chaos::run(params(seed));
        events += out.events;
        acked += out.acked;
        lease += out.lease_reads;
    }
    eprintln!(
        "{} seeds: {events} events, {acked} acknowledged writes, {lease} lease reads, {:.1} s",
        seeds.len(),
        started.elapsed().as_secs_f64()
    );
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
    let n: u64 = std::env::var("RAFTWAL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2000);
    run(1000..1000 + n);
}
