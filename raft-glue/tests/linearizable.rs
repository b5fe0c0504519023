//! Clients write and read (read-index and lease reads) a replicated key–value store on real
//! `Wal`s and snapshot stores (snapshotting every 40 entries, so lagging nodes install
//! snapshots) while a nemesis partitions nodes (both ways and one way), holds back one kind of
//! message at a time, crashes and restarts nodes (followers at once, to test their vote
//! promise), transfers leadership, replaces voters by joint consensus with restarts while the
//! configuration is joint, and makes the leader remove itself; messages are also lost,
//! duplicated, reordered and delayed throughout. The history is checked for linearizability
//! (Wing–Gong, `support/linearizability.rs`), the applied logs for exactly-once, same-order
//! application and every acknowledged write (`support/chaos/`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/chaos/mod.rs"]
mod chaos;
#[path = "support/linearizability.rs"]
mod lin;
#[path = "support/pairs.rs"]
mod pairs;

use std::time::{Duration, Instant};

#[test]
fn history_under_partitions_crashes_and_membership_changes_is_linearizable() {
    let seed = std::env::var("RAFTWAL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    let started = Instant::now();
    let out = chaos::run(chaos::Params {
        seed,
        clients: 12,
        keys: 32,
        duration: Duration::from_secs(8),
        min_events: 25_000,
        require: chaos::fault_kinds(false),
        every: Duration::from_millis(100),
        sim: false,
        faults: true,
        tick: Duration::from_millis(10),
    });
    eprintln!(
        "seed {seed}: {} events ({} acknowledged writes, {} lease reads), {} nemesis actions, {:.1} s ({:.2} s checking the history); effects: {:?}",
        out.events,
        out.acked,
        out.lease_reads,
        out.actions.len(),
        started.elapsed().as_secs_f64(),
        out.check_time.as_secs_f64(),
        out.effects
    );
    assert!(
        out.events >= 25_000,
        "a short history: {} events",
        out.events
    );
    assert!(
        out.acked > 1000,
        "too few acknowledged writes: {}",
        out.acked
    );
    out.assert_covered(chaos::fault_kinds(false));
}
