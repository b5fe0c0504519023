//! Membership changes under faults: a cluster stopped in a joint configuration starts again
//! (each change applied exactly once on replay) and leaves it; a leader that removed itself
//! and whose hand-off is lost steps down so another node leads; a learner is promoted under
//! steady writes; a removed node cannot take a follower over, even after the follower
//! restarts.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/echo.rs"]
mod echo;
#[path = "support/pairs.rs"]
mod pairs;
#[path = "support/stores.rs"]
mod stores;
#[path = "support/wait.rs"]
mod wait;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use echo::Cluster;
use raftwal_glue::raft::eraftpb::{Message, MessageType};
use raftwal_glue::{Config, DropReason, Membership, NodeError, Role, Route};
use wait::wait;

/// Every node applies the joint configuration, then the whole cluster stops before the
/// configuration is left; every node restarts (replaying its log from the start, bootstrap
/// entries included, onto the stored joint configuration), and the cluster leaves the joint
/// configuration and takes writes.
#[test]
fn a_cluster_stopped_in_a_joint_configuration_starts_again() {
    let mut c = Cluster::new(3);
    c.start(4, vec![]);
    let l = c.wait_leader(&[1, 2, 3]);
    c.node(l)
        .apply(b"before".to_vec(), Duration::from_secs(10))
        .unwrap();
    let out = (1..=3).find(|&i| i != l).unwrap();
    c.net.hold(Route::of(MessageType::MsgAppendResponse));
    let before = c.node(l).status().last_index;
    std::thread::scope(|s| {
        let change = s.spawn(|| {
            c.node(l).change_membership(
                &[Membership::AddVoter(4), Membership::Remove(out)],
                Duration::from_secs(3),
            )
        });
        // The acknowledgements of the joint entry go through; those of the entry that leaves
        // the joint configuration (and anything later) are held: it never commits.
        let joint_at = wait(|| {
            let last = c.node(l).status().last_index;
            (last > before).then_some(last)
        })
        .expect("the joint entry is appended");
        let _ = wait(|| {
            c.net.deliver_held_if(|m| m.index <= joint_at);
            (!c.node(l).status().voters_outgoing.is_empty()).then_some(())
        });
        let joint = wait(|| {
            (1..=3)
                .all(|id| !c.node(id).status().voters_outgoing.is_empty())
                .then_some(())
        });
        assert!(
            joint.is_some(),
            "every founding node applied the joint configuration"
        );
        assert!(
            change.join().unwrap().is_err(),
            "the joint configuration was not left"
        );
    });
    for id in 1..=4 {
        c.crash(id);
    }
    c.net.release();
    for id in 1..=3 {
        c.start(id, vec![1, 2, 3]);
    }
    c.start(4, vec![]);
    let want: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&i| i != out).collect();
    let left = wait(|| {
        let s = c.node(c.leader_among(&want)?).status();
        (s.voters == want && s.voters_outgoing.is_empty()).then_some(())
    });
    for id in 1..=4 {
        let s = c.node(id).status();
        assert!(!s.stopped, "node {id} stopped on restart: {s:?}");
    }
    assert!(left.is_some(), "the joint configuration was never left");
    let l = c.wait_leader(&want);
    c.node(l)
        .apply(b"after".to_vec(), Duration::from_secs(10))
        .unwrap();
    c.crash(out);
    let applied = c.converged(2);
    assert_eq!(
        applied.last().map(|(_, c)| c.as_slice()),
        Some(&b"after"[..])
    );
}

/// The leader removes itself and its hand-off message (`MsgTimeoutNow`) is lost, every time:
/// it must not keep leading a group it is no longer part of. It steps down, the remaining
/// voters elect a leader among themselves, and writes go on.
#[test]
fn a_removed_leader_whose_hand_off_is_lost_steps_down() {
    let mut c = Cluster::new(3);
    let l = c.wait_leader(&[1, 2, 3]);
    c.node(l)
        .apply(b"before".to_vec(), Duration::from_secs(10))
        .unwrap();
    c.net.hold(Route::of(MessageType::MsgTimeoutNow));
    c.node(l).remove_server(l, Duration::from_secs(10)).unwrap();
    let rest: Vec<u64> = (1..=3).filter(|&i| i != l).collect();
    let nl = wait(|| {
        let nl = c.leader_among(&rest)?;
        (c.node(l).role() != Role::Leader).then_some(nl)
    })
    .expect("another node leads");
    assert!(c.net.stats().held > 0, "the hand-off was attempted");
    c.node(nl)
        .apply(b"after".to_vec(), Duration::from_secs(10))
        .unwrap();
    c.crash(l);
    c.converged(2);
}

fn small_lag(c: Config) -> Config {
    Config {
        max_learner_lag: 256,
        ..echo::quick(c)
    }
}

/// Under steady writes a learner whose acknowledgements arrive a little late never matches
/// the leader's commit index exactly; it is promoted once it is within `max_learner_lag`.
#[test]
fn a_learner_is_promoted_under_steady_writes() {
    let mut c = Cluster::with(3, small_lag, None);
    c.start(4, vec![]);
    let l = c.wait_leader(&[1, 2, 3]);
    c.net.delay(
        Route::from(4, MessageType::MsgAppendResponse),
        Duration::from_millis(20),
    );
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if c.node(l)
                    .apply(format!("w{n}").into_bytes(), Duration::from_secs(10))
                    .is_ok()
                {
                    n += 1;
                }
            }
            n
        });
        let r = c.node(l).add_voter(4, Duration::from_secs(20));
        stop.store(true, Ordering::SeqCst);
        let writes = writer.join().unwrap();
        r.unwrap_or_else(|e| panic!("promotion failed after {writes} writes: {e}"));
    });
    assert_eq!(c.node(l).status().voters, vec![1, 2, 3, 4]);
    c.net.release();
}

/// A node removed from the cluster, still holding its identity, sends a follower appends and
/// heartbeats of a higher term: the follower drops them (`NotAMember`), keeps its term and
/// leader, and still does after restarting (the removed set is stored). Followers used to
/// hear from any node, so a removed one could lead them. The leader refuses to add the id
/// back.
#[test]
fn a_removed_node_cannot_take_a_follower_over() {
    let mut c = Cluster::new(3);
    let l = c.wait_leader(&[1, 2, 3]);
    let gone = (1..=3).find(|&i| i != l).unwrap();
    let follower = (1..=3).find(|&i| i != l && i != gone).unwrap();
    c.node(l)
        .remove_server(gone, Duration::from_secs(10))
        .unwrap();
    c.crash(gone);
    let removed = wait(|| (c.node(follower).status().voters.len() == 2).then_some(()));
    assert!(removed.is_some(), "{:?}", c.node(follower).status());
    for restart in [false, true] {
        if restart {
            c.crash(follower);
            c.start(follower, vec![]);
            let back = wait(|| (c.node(follower).leader() == Some(l)).then_some(()));
            assert!(back.is_some(), "{:?}", c.node(follower).status());
        }
        let term = c.node(follower).status().term;
        for t in [MessageType::MsgHeartbeat, MessageType::MsgAppend] {
            let mut m = Message::default();
            m.set_msg_type(t);
            m.from = gone;
            m.to = follower;
            m.term = term + 3;
            c.node(follower).mailbox().deliver_from(gone, m);
        }
        let dropped = wait(|| {
            let s = c.node(follower).status();
            let n = s.dropped.get(&DropReason::NotAMember).copied().unwrap_or(0);
            (n >= 2).then_some(())
        });
        assert!(dropped.is_some(), "{:?}", c.node(follower).status());
        let s = c.node(follower).status();
        assert_eq!((s.term, s.leader), (term, Some(l)), "restart: {restart}");
    }
    c.node(l)
        .apply(b"after".to_vec(), Duration::from_secs(10))
        .unwrap();
    // Its id is not given out again: the follower would not hear it.
    for add in [
        c.node(l).add_voter(gone, Duration::from_secs(5)),
        c.node(l).add_learner(gone, Duration::from_secs(5)),
    ] {
        assert_eq!(add, Err(NodeError::IdRemoved { id: gone }));
    }
    assert_eq!(c.node(l).status().voters.len(), 2);
}
