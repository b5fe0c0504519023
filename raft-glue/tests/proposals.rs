//! What a proposer is told: only its own entry answers it, a command too large for the
//! transport is refused before anything is written, a membership change that Raft would drop
//! is refused at once, and no message built from accepted commands exceeds the transport's
//! frame.
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
use raftwal_glue::{Config, MemNetwork, Node, NodeError, Route};
use wait::wait;

/// A leader's uncommitted entries are committed by its successor, whose own proposers are
/// waiting meanwhile: each of them must get the result of its own command (request ids are
/// unique across nodes and starts; with per-node counters they collided).
#[test]
fn proposers_are_answered_only_by_their_own_entries() {
    let c = Cluster::new(3);
    let a = c.wait_leader(&[1, 2, 3]);
    let before = c
        .node(a)
        .apply(b"first".to_vec(), Duration::from_secs(10))
        .unwrap()
        .index;
    // Nothing commits from now on: the leader's entries reach the followers, their answers
    // do not reach it.
    c.net.hold(Route::of(MessageType::MsgAppendResponse));
    let old: Vec<_> = (0..50)
        .map(|i| c.node(a).propose(format!("a{i}").into_bytes()).unwrap())
        .collect();
    let others: Vec<u64> = (1..=3).filter(|&i| i != a).collect();
    let last = wait(|| {
        let l = c.node(a).status().last_index;
        (l > before + 50 - 1 && others.iter().all(|&f| c.node(f).status().last_index == l))
            .then_some(l)
    })
    .expect("the followers hold the old leader's entries");
    assert_eq!(c.node(a).status().commit, before, "nothing committed");
    // The old leader is cut off; a new one is elected with those entries in its log, and
    // takes proposals of its own before it can commit anything.
    c.net.partition(&[a], &others);
    let b = c.wait_leader(&others);
    let mine: Vec<(Vec<u8>, _)> = (0..100)
        .map(|i| {
            let cmd = format!("b{i}").into_bytes();
            (cmd.clone(), c.node(b).propose(cmd).unwrap())
        })
        .collect();
    c.net.release();
    for (cmd, p) in mine {
        let applied = p.wait(Duration::from_secs(20)).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&applied.response),
            String::from_utf8_lossy(&cmd),
            "a proposer was answered with another entry's result"
        );
        assert!(applied.index > last, "{applied:?}");
        let at = c
            .echo(b)
            .applied()
            .into_iter()
            .find(|(i, _)| *i == applied.index);
        assert_eq!(
            at.map(|(_, c)| c),
            Some(cmd),
            "the answer's index is its entry's"
        );
    }
    // The old leader's proposers learn nothing certain: never a success.
    for p in old {
        if let Some(Ok(a)) = p.try_result() {
            panic!("the cut-off leader reported a commit: {a:?}");
        }
    }
    c.net.heal();
    let applied = c.converged(151);
    assert!(
        applied.iter().any(|(_, cmd)| cmd == b"a49"),
        "the old entries committed"
    );
}

fn small(c: Config) -> Config {
    Config {
        max_command_size: 64 << 10,
        max_size_per_msg: 64 << 10,
        ..echo::quick(c)
    }
}

/// The largest command is one setting that the node and the transport agree on: a node whose
/// messages could exceed the transport's frame does not start; a command over the maximum is
/// refused before anything is written; a round of many maximal commands is split into
/// appends that each fit a frame.
#[test]
fn commands_and_messages_fit_the_transport() {
    // A transport carrying less than the node may build: refused at start.
    let net = MemNetwork::new();
    net.set_max_message_size(small(Config::new(1, vec![1])).max_message_size() - 1);
    let dir = tempfile::tempdir().unwrap();
    match Node::start(
        small(Config::new(1, vec![1])),
        echo::Echo::default(),
        stores::open(dir.path()),
        net.transport(1),
    ) {
        Err(NodeError::Config(msg)) => assert!(msg.contains("transport"), "{msg}"),
        other => panic!("expected a configuration error, got {other:?}"),
    }

    let mut c = Cluster::with(0, small, None);
    c.net
        .set_max_message_size(small(Config::new(1, vec![])).max_message_size());
    for id in 1..=3 {
        c.start(id, vec![1, 2, 3]);
    }
    let l = c.wait_leader(&[1, 2, 3]);
    let last = c.node(l).status().last_index;
    match c.node(l).propose(vec![7; (64 << 10) + 1]) {
        Err(NodeError::TooLarge { size, max }) => {
            assert_eq!((size, max), ((64 << 10) + 1, 64 << 10));
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert_eq!(c.node(l).status().last_index, last, "nothing was written");
    // Forty maximal commands proposed at once: one round, many appends, none too large.
    let inflight: Vec<_> = (0..40u8)
        .map(|i| c.node(l).propose(vec![i; 64 << 10]).unwrap())
        .collect();
    for p in inflight {
        p.wait(Duration::from_secs(30)).unwrap();
    }
    c.converged(40);
    assert_eq!(c.net.stats().oversized, 0, "{:?}", c.net.stats());
}

/// A second membership change while the first is still pending is refused at once with a
/// specific error (Raft would turn it into an empty entry and its caller would wait for
/// nothing); the first one completes.
#[test]
fn a_membership_change_during_another_is_refused_at_once() {
    let mut c = Cluster::new(3);
    c.start(4, vec![]);
    c.start(5, vec![]);
    let l = c.wait_leader(&[1, 2, 3]);
    c.net.hold(Route::of(MessageType::MsgAppendResponse));
    let first = std::thread::scope(|s| {
        let t = s.spawn(|| c.node(l).add_learner(4, Duration::from_secs(30)));
        wait(|| (c.node(l).status().pending_proposals > 0).then_some(()))
            .expect("the first change is pending");
        match c.node(l).add_learner(5, Duration::from_secs(30)) {
            Err(NodeError::ConfChangeInProgress) => {}
            other => panic!("expected ConfChangeInProgress, got {other:?}"),
        }
        c.net.release();
        t.join().unwrap()
    });
    first.unwrap();
    assert_eq!(c.node(l).status().learners, vec![4]);
    wait(|| (c.node(l).status().pending_proposals == 0).then_some(()))
        .expect("nothing stays pending");
}

fn tight(c: Config) -> Config {
    Config {
        max_pending_proposals: 8,
        max_command_size: 16 << 10,
        max_size_per_msg: 16 << 10,
        max_uncommitted_size: 64 << 10,
        ..echo::quick(c)
    }
}

/// Backpressure: while commands cannot commit, at most `max_pending_proposals` wait (the next
/// is refused `Busy` at once), and no more than `max_uncommitted_size` bytes are appended
/// (a round beyond is answered `Busy`); once commits resume, proposals are taken again.
#[test]
fn proposals_beyond_the_bounds_are_refused_busy() {
    let c = Cluster::with(3, tight, None);
    let l = c.wait_leader(&[1, 2, 3]);
    c.node(l)
        .apply(b"first".to_vec(), Duration::from_secs(10))
        .unwrap();
    c.net.hold(Route::of(MessageType::MsgAppendResponse));
    // Small commands: the count bound.
    let waiting: Vec<_> = (0..8)
        .map(|i| {
            c.node(l)
                .propose(vec![i; 10])
                .unwrap_or_else(|e| panic!("proposal {i}: {e}: {:?}", c.node(l).status()))
        })
        .collect();
    assert!(matches!(
        c.node(l).propose(vec![9; 10]),
        Err(NodeError::Busy)
    ));
    c.net.release();
    for p in waiting {
        p.wait(Duration::from_secs(10)).unwrap();
    }
    // Large commands: the byte bound (64 KiB of 16 KiB commands).
    c.net.hold(Route::of(MessageType::MsgAppendResponse));
    let big: Vec<_> = (0..8)
        .map(|i| {
            let p = c
                .node(l)
                .propose(vec![i; 16 << 10])
                .unwrap_or_else(|e| panic!("big {i}: {e}: {:?}", c.node(l).status()));
            // One round each.
            std::thread::sleep(Duration::from_millis(20));
            p
        })
        .collect();
    let busy = big
        .iter()
        .filter(|p| matches!(p.try_result(), Some(Err(NodeError::Busy))))
        .count();
    assert!(busy > 0, "no round was refused past 64 KiB uncommitted");
    c.net.release();
    // Busy means "retry later": once the held rounds commit, room returns.
    wait(|| {
        c.node(l)
            .apply(b"after".to_vec(), Duration::from_secs(10))
            .ok()
    })
    .expect("proposals are taken again");
}
