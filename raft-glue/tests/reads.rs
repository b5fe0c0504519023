//! Reads that Raft would drop never leave their caller waiting for nothing: on a new leader
//! they wait for its first commit, on a follower that knows no leader they fail at once with
//! `NotLeader`, and a read whose caller gave up is forgotten.
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
use raftwal_glue::raft::eraftpb::MessageType;
use raftwal_glue::{NodeError, ReadVia, Route};
use wait::wait;

/// A cluster whose first leader cannot commit (its followers' answers are held back).
fn stalled() -> (Cluster, u64) {
    let mut c = Cluster::with(0, echo::quick, None);
    c.net.hold(Route::of(MessageType::MsgAppendResponse));
    for id in 1..=3 {
        c.start(id, vec![1, 2, 3]);
    }
    let l = c.wait_leader(&[1, 2, 3]);
    (c, l)
}

#[test]
fn a_read_on_a_new_leader_waits_for_its_first_commit() {
    let (c, l) = stalled();
    let commit = c.node(l).status().commit;
    std::thread::scope(|s| {
        let read = s.spawn(|| c.node(l).read_index(Duration::from_secs(30)));
        let lease = s.spawn(|| c.node(l).lease_read(Duration::from_secs(30)));
        wait(|| (c.node(l).status().pending_reads >= 2).then_some(()))
            .expect("the reads wait for the leader's first commit");
        assert_eq!(c.node(l).status().commit, commit, "nothing committed yet");
        c.net.release();
        let index = read.join().unwrap().unwrap();
        assert!(
            index > commit,
            "read point {index} covers the new leader's entry"
        );
        let p = lease.join().unwrap().unwrap();
        assert_eq!(
            p.via,
            ReadVia::ReadIndex,
            "no lease before the first commit"
        );
    });
}

#[test]
fn reads_whose_caller_gave_up_are_forgotten() {
    let (c, l) = stalled();
    for _ in 0..20 {
        match c.node(l).read_index(Duration::from_millis(30)) {
            Err(e @ NodeError::ReadTimeout) => {
                assert!(!e.to_string().contains("commit"), "a read says: {e}");
            }
            other => panic!("expected ReadTimeout, got {other:?}"),
        }
    }
    wait(|| (c.node(l).status().pending_reads == 0).then_some(()))
        .expect("nothing stays queued for callers that left");
    c.net.release();
    c.node(l).read_index(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_follower_that_knows_no_leader_refuses_reads_at_once() {
    let c = Cluster::new(3);
    let l = c.wait_leader(&[1, 2, 3]);
    let f = (1..=3).find(|&i| i != l).unwrap();
    let others: Vec<u64> = (1..=3).filter(|&i| i != f).collect();
    c.net.partition(&[f], &others);
    wait(|| c.node(f).status().leader.is_none().then_some(()))
        .expect("the follower lost its leader");
    for call in 0..2 {
        let r = if call == 0 {
            c.node(f).read_index(Duration::from_secs(30))
        } else {
            c.node(f)
                .lease_read(Duration::from_secs(30))
                .map(|p| p.index)
        };
        match r {
            Err(NodeError::NotLeader { leader_hint: None }) => {}
            other => panic!("expected NotLeader without a hint, got {other:?}"),
        }
    }
    c.net.heal();
    // Once it hears from the leader again, it reads through it.
    let index = wait(|| c.node(f).read_index(Duration::from_secs(5)).ok()).unwrap();
    assert!(index > 0);
}

/// A read-index request that reaches a node which is not the leader is dropped as
/// `not_leader` (a follower whose view is behind asks again), and one without its context as
/// `malformed`: an operator tells a stale forward from garbage.
#[test]
fn a_read_index_at_a_follower_is_dropped_as_not_leader() {
    use raftwal_glue::raft::eraftpb::{Entry, Message};
    use raftwal_glue::DropReason;
    let c = Cluster::new(3);
    let l = c.wait_leader(&[1, 2, 3]);
    let (f, g) = {
        let mut others = [1, 2, 3].into_iter().filter(|&i| i != l);
        (others.next().unwrap(), others.next().unwrap())
    };
    let read = |entries: Vec<Entry>| {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgReadIndex);
        m.from = g;
        m.to = f;
        m.set_entries(entries.into());
        m
    };
    let ctx = Entry {
        data: b"ctx".to_vec().into(),
        ..Default::default()
    };
    c.node(f).mailbox().deliver(read(vec![ctx]));
    c.node(f).mailbox().deliver(read(Vec::new()));
    let dropped = |r: DropReason| c.node(f).status().dropped.get(&r).copied().unwrap_or(0);
    assert!(
        wait(
            || (dropped(DropReason::NotLeader) == 1 && dropped(DropReason::Malformed) == 1)
                .then_some(())
        )
        .is_some(),
        "{:?}",
        c.node(f).status().dropped
    );
}
