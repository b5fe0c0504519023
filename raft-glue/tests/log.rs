//! The log a node keeps: a follower whose next entry is the first one the leader still has
//! gets entries (the compaction point's term is kept), not a whole snapshot; with proposal
//! batching off, the commit index Raft hands over outside a hard state is persisted too.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/echo.rs"]
mod echo;
#[path = "support/pairs.rs"]
mod pairs;
#[path = "support/stores.rs"]
mod stores;
#[path = "support/wait.rs"]
mod wait;

use std::time::Duration;

use echo::Cluster;
use raftwal_glue::Config;
use wait::wait;

fn on_demand(c: Config) -> Config {
    Config {
        snapshot_threshold: 0,
        trailing_entries: 10,
        ..echo::quick(c)
    }
}

#[test]
fn a_follower_next_to_the_first_entry_gets_entries_not_a_snapshot() {
    let mut c = Cluster::with(3, on_demand, None);
    let l = c.wait_leader(&[1, 2, 3]);
    for i in 0..5 {
        c.node(l)
            .apply(format!("a{i}").into_bytes(), Duration::from_secs(10))
            .unwrap();
    }
    c.converged(5);
    let f = (1..=3).find(|&i| i != l).unwrap();
    let f_last = c.node(f).status().last_index;
    assert_eq!(f_last, c.node(l).status().last_index);
    c.crash(f);
    // Exactly `trailing_entries` more, then a snapshot: the leader compacts its log up to the
    // follower's last entry, so the follower's next entry is the leader's first.
    for i in 0..10 {
        c.node(l)
            .apply(format!("b{i}").into_bytes(), Duration::from_secs(10))
            .unwrap();
    }
    let s = c.node(l).status();
    assert_eq!(s.last_index, f_last + 10, "{s:?}");
    let snap = c.node(l).snapshot(Duration::from_secs(10)).unwrap();
    assert_eq!(snap.index, f_last + 10);
    c.start(f, vec![1, 2, 3]);
    let applied = c.converged(15);
    assert_eq!(applied.len(), 15);
    assert_eq!(c.net.stats().snapshots, 0, "{:?}", c.net.stats());
    assert_eq!(c.node(f).status().snapshot_index, 0);
}

fn unbatched(c: Config) -> Config {
    Config {
        batch_proposals: false,
        ..echo::quick(c)
    }
}

/// A single node commits its own entries as soon as they are durable, and raft-rs reports that
/// commit in the light ready, not in a hard state: it must be persisted all the same.
#[test]
fn with_batching_off_every_commit_is_persisted() {
    let mut c = Cluster::with(1, unbatched, None);
    c.wait_leader(&[1]);
    let mut last = 0;
    for i in 0..5 {
        last = c
            .node(1)
            .apply(format!("c{i}").into_bytes(), Duration::from_secs(10))
            .unwrap()
            .index;
    }
    wait(|| (c.node(1).status().commit >= last).then_some(())).unwrap();
    c.crash(1);
    let storage = stores::open(&c.path(1));
    let hs = storage.hard_state().unwrap();
    assert!(hs.commit >= last, "persisted commit {} < {last}", hs.commit);
}
