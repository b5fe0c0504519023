//! Snapshots in a three-node cluster on real stores: taken every N entries and compacting the
//! log, restarts that neither re-apply nor skip, a lagging follower and a newcomer catching up
//! by a snapshot streamed out of band (despite broken streams) and knowing from it which nodes
//! were removed, snapshots on demand, and a snapshot Raft refuses that is not kept.
//! Assertions wait for outcomes with generous deadlines; nothing asserts a duration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/kvcluster.rs"]
mod kvcluster;
#[path = "support/pairs.rs"]
mod pairs;
#[path = "support/stores.rs"]
mod stores;
#[path = "support/wait.rs"]
mod wait;

use kvcluster::{wait_counter, Cluster};
use wait::wait;

use std::time::Duration;

use raftwal_glue::NodeEvent;
use raftwal_snapshot::{FileSnapshotStore, SnapshotStore};

/// Snapshots are taken every N entries and compact the log (keeping the trailing entries);
/// a restart restores the snapshot and replays only what follows, so the counter (whose
/// increments are not idempotent) is neither re-applied nor skipped.
#[test]
fn snapshots_compact_the_log_and_restarts_neither_reapply_nor_skip() {
    let mut c = Cluster::with_snapshots(40, 8);
    for _ in 0..200 {
        c.apply_anywhere("add n 1");
    }
    wait_counter(&c, "n", 200);
    for id in 1..=3 {
        let ok = wait(|| (c.nodes[&id].0.status().snapshot_index >= 160).then_some(()));
        assert!(ok.is_some(), "{:?}", c.nodes[&id].0.status());
    }
    for id in 1..=3 {
        c.crash(id);
    }
    for id in 1..=3 {
        let first = c.first_index(id);
        assert!(first > 100, "node {id}'s log still starts at {first}");
        let snaps = FileSnapshotStore::open(c.path(id).join("snapshots"), 2)
            .unwrap()
            .list()
            .unwrap();
        assert!(!snaps.is_empty() && snaps.len() <= 2, "{snaps:?}");
        // Compacted to the snapshot's index less the trailing entries, never beyond.
        assert!(first <= snaps[0].index - 8 + 1, "{first} vs {snaps:?}");
    }
    for id in 1..=3 {
        c.restart(id);
    }
    for id in 1..=3 {
        let s = c.nodes[&id].0.status();
        assert!(s.applied >= 160, "restored from the snapshot: {s:?}");
    }
    wait_counter(&c, "n", 200);
    c.apply_anywhere("add n 1");
    wait_counter(&c, "n", 201);
}

/// A follower that was down while the others compacted their logs catches up by a snapshot
/// streamed out of band, even when the first streams break (Raft is told, and retries); it
/// then restarts from the installed snapshot.
#[test]
fn a_lagging_follower_catches_up_by_snapshot_despite_broken_streams() {
    let mut c = Cluster::with_snapshots(30, 5);
    c.apply_anywhere("add n 1");
    wait_counter(&c, "n", 1);
    c.crash(3);
    for _ in 0..150 {
        c.apply_anywhere("add n 1");
    }
    let l = c.wait_leader(&[1, 2]);
    let ok = wait(|| (c.nodes[&l].0.status().snapshot_index >= 120).then_some(()));
    assert!(ok.is_some(), "{:?}", c.nodes[&l].0.status());
    c.net.fail_snapshots(2);
    c.restart(3);
    wait_counter(&c, "n", 151);
    let stats = c.net.stats();
    assert!(stats.snapshots >= 1, "{stats:?}");
    assert_eq!(stats.snapshots_failed, 2, "{stats:?}");
    let s = c.nodes[&3].0.status();
    assert!(s.snapshot_index >= 120, "installed a snapshot: {s:?}");
    c.crash(3);
    c.restart(3);
    assert!(c.nodes[&3].0.status().applied >= 120);
    wait_counter(&c, "n", 151);
}

/// `Node::snapshot` on demand: durable, compacts, and with nothing new returns the same one.
#[test]
fn snapshot_on_demand() {
    let c = Cluster::with_snapshots(0, 2);
    for i in 0..20 {
        c.apply_anywhere(&format!("set k{i} {i}"));
    }
    let l = c.wait_leader(&[1, 2, 3]);
    let node = &c.nodes[&l].0;
    let m = node.snapshot(Duration::from_secs(10)).unwrap();
    let s = node.status();
    assert!(m.index >= 20 && m.index <= s.applied, "{m:?} {s:?}");
    assert_eq!(s.snapshot_index, m.index);
    let again = node.snapshot(Duration::from_secs(10)).unwrap();
    assert_eq!(again.id, m.id, "nothing new: the same snapshot");
    let stored = FileSnapshotStore::open(c.path(l).join("snapshots"), 2)
        .unwrap()
        .list()
        .unwrap();
    assert_eq!(stored[0].id, m.id);
}

/// Replace a node after the log was compacted: the newcomer joins empty and gets a snapshot;
/// then the leader removes itself and the rest elect a new one and go on.
#[test]
fn replace_a_node_by_snapshot_and_remove_the_leader() {
    let mut c = Cluster::with_snapshots(20, 0);
    let events = {
        let l = c.wait_leader(&[1, 2, 3]);
        c.nodes[&l].0.subscribe()
    };
    for _ in 0..60 {
        c.apply_anywhere("add n 1");
    }
    let l = c.wait_leader(&[1, 2, 3]);
    let ok = wait(|| (c.nodes[&l].0.status().snapshot_index >= 40).then_some(()));
    assert!(ok.is_some());
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.nodes[&l]
        .0
        .remove_server(f, Duration::from_secs(10))
        .unwrap();
    c.crash(f);
    c.start_new(4);
    c.nodes[&l].0.add_voter(4, Duration::from_secs(20)).unwrap();
    wait_counter(&c, "n", 60);
    assert!(c.nodes[&4].0.status().snapshot_index >= 40);
    assert!(c.net.stats().snapshots >= 1);
    // The leader removes itself; the other two elect a leader and go on.
    let rest: Vec<u64> = c.nodes.keys().copied().filter(|&i| i != l).collect();
    c.nodes[&l]
        .0
        .remove_server(l, Duration::from_secs(10))
        .unwrap();
    let nl = c.wait_leader(&rest);
    assert_ne!(nl, l);
    c.crash(l);
    c.apply(nl, "add n 1").unwrap();
    wait_counter(&c, "n", 61);
    // The old leader's subscribers heard of the membership changes.
    let seen: Vec<NodeEvent> = events.try_iter().collect();
    assert!(
        seen.iter().any(
            |e| matches!(e, NodeEvent::MembershipChanged { voters, .. } if voters.contains(&4))
        ),
        "{seen:?}"
    );
}

/// A node that joins from a snapshot taken after another node's removal (the removal itself
/// compacted away) still knows that node was removed, because the snapshot's configuration
/// carries the removed nodes: it drops that node's messages (`NotAMember`) and, leading,
/// refuses to add it back (`IdRemoved`). Without them it would never have heard of the node,
/// and would let it take over with a higher term.
#[test]
fn a_newcomer_from_a_snapshot_knows_who_was_removed() {
    use raft::eraftpb::{Message, MessageType};
    use raftwal_glue::{DropReason, NodeError};
    let mut c = Cluster::with_snapshots(20, 0);
    let l = c.wait_leader(&[1, 2, 3]);
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.nodes[&l]
        .0
        .remove_server(f, Duration::from_secs(10))
        .unwrap();
    let removed_at = c.nodes[&l].0.status().applied;
    c.crash(f);
    for _ in 0..60 {
        c.apply_anywhere("add n 1");
    }
    let compacted =
        wait(|| (c.nodes[&l].0.status().snapshot_index > removed_at + 20).then_some(()));
    assert!(compacted.is_some(), "{:?}", c.nodes[&l].0.status());
    c.start_new(4);
    c.nodes[&l].0.add_voter(4, Duration::from_secs(20)).unwrap();
    wait_counter(&c, "n", 60);
    assert!(c.nodes[&4].0.status().snapshot_index > removed_at);
    let term = c.nodes[&4].0.status().term;
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = f;
    m.to = 4;
    m.term = term + 3;
    c.nodes[&4].0.mailbox().deliver_from(f, m);
    let dropped = wait(|| {
        let s = c.nodes[&4].0.status();
        (s.dropped.get(&DropReason::NotAMember).copied().unwrap_or(0) >= 1).then_some(())
    });
    assert!(dropped.is_some(), "{:?}", c.nodes[&4].0.status());
    assert_eq!(c.nodes[&4].0.status().term, term);
    c.nodes[&l]
        .0
        .transfer_leadership(4, Duration::from_secs(10))
        .unwrap();
    assert_eq!(c.wait_leader(&[4]), 4);
    assert_eq!(
        c.nodes[&4].0.add_learner(f, Duration::from_secs(5)),
        Err(NodeError::IdRemoved { id: f })
    );
}

/// A snapshot that arrives from the network but that Raft refuses (stale: below what the
/// follower has committed) is discarded: it is never committed into the follower's store,
/// where it would count against the retention, and leaves no temporary behind.
#[test]
fn a_refused_snapshot_from_the_network_is_not_kept() {
    use raft::eraftpb::{ConfState, Message, MessageType};
    let c = Cluster::new();
    for i in 0..5 {
        c.apply_anywhere(&format!("set k{i} {i}"));
    }
    let l = c.wait_leader(&[1, 2, 3]);
    let f = (1..=3).find(|&i| i != l).unwrap();
    let ok = wait(|| (c.nodes[&f].0.status().commit >= 5).then_some(()));
    assert!(ok.is_some());
    let conf = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    let data = b"stale state".to_vec();
    let meta = raftwal_snapshot::SnapshotMeta {
        id: "stale".into(),
        index: 2,
        term: 1,
        configuration: raftwal_glue::encode_conf_state(&conf),
        configuration_index: 2,
        size: data.len() as u64,
        checksum: crc32fast::hash(&data),
        ..Default::default()
    };
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    msg.from = l;
    msg.to = f;
    msg.term = c.nodes[&f].0.status().term;
    let m = msg.mut_snapshot().mut_metadata();
    m.index = 2;
    m.term = 1;
    m.set_conf_state(conf);
    c.nodes[&f]
        .0
        .mailbox()
        .receive_snapshot(msg, &meta, &mut &data[..])
        .unwrap();
    // A round on the follower has passed once a read through it completes.
    c.nodes[&f].0.read_index(Duration::from_secs(10)).unwrap();
    let dir = c.path(f).join("snapshots");
    let ok = wait(|| {
        use raftwal_wal::vfs::Vfs;
        let names = raftwal_wal::vfs::StdVfs.list(&dir).unwrap();
        names.is_empty().then_some(())
    });
    assert!(
        ok.is_some(),
        "the refused snapshot was kept in {}",
        dir.display()
    );
    assert!(FileSnapshotStore::open(&dir, 2)
        .unwrap()
        .list()
        .unwrap()
        .is_empty());
    assert_eq!(c.nodes[&f].0.status().snapshot_index, 0);
}

/// A reader that counts what is read from it; on its first read it says so (`started`) and
/// waits for `go`; it gives zeros forever, or nothing at all (`empty`).
#[derive(Default)]
struct Stream {
    read: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    started: Option<std::sync::mpsc::Sender<()>>,
    go: Option<std::sync::mpsc::Receiver<()>>,
    empty: bool,
}

impl std::io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if let Some(s) = self.started.take() {
            let _ = s.send(());
        }
        if let Some(go) = self.go.take() {
            let _ = go.recv();
        }
        if self.empty {
            return Ok(0);
        }
        self.read
            .fetch_add(buf.len(), std::sync::atomic::Ordering::SeqCst);
        buf.fill(0);
        Ok(buf.len())
    }
}

/// Only the leader a node follows, in its term, may stream it a snapshot, one stream at a
/// time, with the configuration its message carries: a snapshot from a stranger, another
/// member, or the leader in another term, or whose configuration differs or does not decode,
/// is refused before a byte is read (it would be written to disk before Raft could refuse it),
/// and so is a second stream while one is under way.
#[test]
fn only_the_leader_streams_a_snapshot_and_one_at_a_time() {
    use raft::eraftpb::{ConfState, Message, MessageType};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let c = Cluster::new();
    c.apply_anywhere("set a 1");
    let l = c.wait_leader(&[1, 2, 3]);
    let f = (1..=3).find(|&i| i != l).unwrap();
    let g = (1..=3).find(|&i| i != l && i != f).unwrap();
    let follows = wait(|| (c.nodes[&f].0.status().leader == Some(l)).then_some(()));
    assert!(follows.is_some());
    let term = c.nodes[&f].0.status().term;
    let conf = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    let meta = raftwal_snapshot::SnapshotMeta {
        id: "big".into(),
        index: 100,
        term,
        configuration: raftwal_glue::encode_conf_state(&conf),
        configuration_index: 2,
        size: 1 << 30,
        ..Default::default()
    };
    let msg = |from: u64, term: u64| {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgSnapshot);
        m.from = from;
        m.to = f;
        m.term = term;
        let md = m.mut_snapshot().mut_metadata();
        md.index = 100;
        md.term = meta.term;
        md.set_conf_state(conf.clone());
        m
    };
    let mb = c.nodes[&f].0.mailbox();
    let read = Arc::new(AtomicUsize::new(0));
    for (from, t) in [(9, term), (g, term), (l, term + 1), (l, term - 1)] {
        let mut s = Stream {
            read: read.clone(),
            ..Stream::default()
        };
        let r = mb.receive_snapshot_from(from, msg(from, t), &meta, &mut s);
        let e = r.expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    }
    // From the leader, but with a configuration other than its message's, or one that does
    // not decode.
    let other = raftwal_glue::encode_conf_state(&ConfState {
        voters: vec![1, 2],
        ..Default::default()
    });
    let mut broken = raftwal_glue::encode_snapshot_conf(&conf, &[7].into());
    *broken.last_mut().unwrap() = 0xff;
    for configuration in [other, broken] {
        let meta = raftwal_snapshot::SnapshotMeta {
            configuration,
            ..meta.clone()
        };
        let mut s = Stream {
            read: read.clone(),
            ..Stream::default()
        };
        let e = mb
            .receive_snapshot_from(l, msg(l, term), &meta, &mut s)
            .expect_err("refused");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData, "{e}");
    }
    assert_eq!(read.load(Ordering::SeqCst), 0);
    // The leader's stream is under way (held at its first byte): a second is refused.
    let (go, wait_go) = std::sync::mpsc::channel();
    let (started, wait_started) = std::sync::mpsc::channel();
    let first = {
        let (mb, msg, meta) = (mb.clone(), msg(l, term), meta.clone());
        let mut s = Stream {
            started: Some(started),
            go: Some(wait_go),
            empty: true,
            ..Stream::default()
        };
        std::thread::spawn(move || mb.receive_snapshot_from(l, msg, &meta, &mut s))
    };
    wait_started.recv().unwrap();
    let mut s = Stream {
        read: read.clone(),
        empty: true,
        ..Stream::default()
    };
    let e = mb
        .receive_snapshot_from(l, msg(l, term), &meta, &mut s)
        .expect_err("refused while another stream is under way");
    assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
    drop(go);
    // The first one then ends short; nothing is kept.
    assert!(first.join().unwrap().is_err());
    let dir = c.path(f).join("snapshots");
    assert!(FileSnapshotStore::open(&dir, 2)
        .unwrap()
        .list()
        .unwrap()
        .is_empty());
}
