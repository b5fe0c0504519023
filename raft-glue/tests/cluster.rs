//! Three `Node`s on real `Wal`s and `FileSnapshotStore`s over the in-memory network: election,
//! replication, the not-leader hint, leader crash and restart from the WAL, a partitioned
//! leader, membership changes, joint consensus, a failed fsync, power loss, a lossy network.
//! Snapshots are in `cluster_snapshots.rs`.
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

use kvcluster::{start_with, wait_counter, Cluster, Kv};
use wait::wait;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use raftwal_glue::{Config, MemNetwork, Node, NodeError, NodeEvent, RaftStorage, Role};
use raftwal_snapshot::FileSnapshotStore;
use raftwal_wal::{Wal, WalOptions};

#[test]
fn elects_one_leader_replicates_and_hints_followers() {
    let c = Cluster::new();
    let l = c.wait_leader(&[1, 2, 3]);
    let a = c.apply(l, "set x 1").unwrap();
    assert_eq!(a.response, b"");
    let b = c.apply(l, "set x 2").unwrap();
    assert_eq!(b.response, b"1", "the response is the state machine's");
    assert!(b.index > a.index);
    let f = (1..=3).find(|&i| i != l).unwrap();
    let hint = wait(|| match c.apply(f, "set y 1") {
        Err(NodeError::NotLeader {
            leader_hint: Some(h),
        }) => Some(h),
        _ => None,
    });
    assert_eq!(hint, Some(l));
    let mut want = BTreeMap::new();
    want.insert("x".to_string(), "2".to_string());
    c.wait_converged(&want);
}

#[test]
fn leader_crash_and_restart_lose_nothing_acknowledged() {
    let mut c = Cluster::new();
    let mut want = BTreeMap::new();
    for i in 0..20 {
        c.apply_anywhere(&format!("set k{i} {i}"));
        want.insert(format!("k{i}"), i.to_string());
    }
    let l = c.wait_leader(&[1, 2, 3]);
    c.crash(l);
    let others: Vec<u64> = (1..=3).filter(|&i| i != l).collect();
    let l2 = c.wait_leader(&others);
    assert_ne!(l2, l);
    for i in 20..30 {
        c.apply_anywhere(&format!("set k{i} {i}"));
        want.insert(format!("k{i}"), i.to_string());
    }
    // The old leader restarts from its WAL and catches up.
    c.restart(l);
    c.wait_converged(&want);
    // And a follower crash/restart too.
    let f = others.into_iter().find(|&i| i != l2).unwrap();
    c.crash(f);
    c.apply_anywhere("set after crash");
    want.insert("after".into(), "crash".into());
    c.restart(f);
    c.wait_converged(&want);
    let lasts: Vec<u64> = c
        .nodes
        .values()
        .map(|(n, _)| n.status().last_index)
        .collect();
    assert!(lasts.windows(2).all(|w| w[0] == w[1]), "{lasts:?}");
}

#[test]
fn a_partitioned_leader_steps_down_and_the_majority_goes_on() {
    let c = Cluster::new();
    let l = c.wait_leader(&[1, 2, 3]);
    c.apply(l, "set a 1").unwrap();
    let others: Vec<u64> = (1..=3).filter(|&i| i != l).collect();
    c.net.partition(&[l], &others);
    // The majority elects a new leader and keeps accepting writes.
    let l2 = c.wait_leader(&others);
    c.apply(l2, "set a 2").unwrap();
    // The isolated leader cannot commit and steps down (check-quorum).
    match c.apply(l, "set a 3") {
        Err(NodeError::NotLeader { .. } | NodeError::LeadershipLost | NodeError::Timeout) => {}
        other => panic!("the isolated leader must not commit: {other:?}"),
    }
    assert!(
        wait(|| (c.nodes[&l].0.role() != Role::Leader).then_some(())).is_some(),
        "the isolated leader never stepped down"
    );
    c.net.heal();
    let mut want = BTreeMap::new();
    want.insert("a".to_string(), "2".to_string());
    c.wait_converged(&want);
}

#[test]
fn whole_cluster_restart_keeps_every_acknowledged_write() {
    let mut c = Cluster::new();
    let mut want = BTreeMap::new();
    for i in 0..25 {
        c.apply_anywhere(&format!("set k{i} v{i}"));
        want.insert(format!("k{i}"), format!("v{i}"));
    }
    for id in 1..=3 {
        c.crash(id);
    }
    for id in 1..=3 {
        c.restart(id);
    }
    // Everything acknowledged comes back from the WALs alone.
    c.wait_converged(&want);
    c.apply_anywhere("set after restart");
    want.insert("after".into(), "restart".into());
    c.wait_converged(&want);
}

#[test]
fn read_index_barrier_and_verify_leader() {
    let c = Cluster::new();
    let l = c.wait_leader(&[1, 2, 3]);
    let a = c.apply(l, "set x 1").unwrap();
    let f = (1..=3).find(|&i| i != l).unwrap();
    // A follower's linearizable read point covers the write, and its state machine has it.
    let idx = c.nodes[&f].0.read_index(Duration::from_secs(10)).unwrap();
    assert!(idx >= a.index, "read index {idx} < write {}", a.index);
    assert_eq!(c.state(f).get("x").map(String::as_str), Some("1"));
    let b = c.nodes[&l].0.barrier(Duration::from_secs(10)).unwrap();
    assert!(b > a.index);
    c.nodes[&l]
        .0
        .verify_leader(Duration::from_secs(10))
        .unwrap();
    assert!(matches!(
        c.nodes[&f].0.verify_leader(Duration::from_secs(1)),
        Err(NodeError::NotLeader { .. })
    ));
    // A leader cut off from the quorum can never confirm its leadership.
    let others: Vec<u64> = (1..=3).filter(|&i| i != l).collect();
    c.net.partition(&[l], &others);
    assert!(c.nodes[&l].0.verify_leader(Duration::from_secs(2)).is_err());
    assert!(c.nodes[&l].0.read_index(Duration::from_secs(2)).is_err());
    c.net.heal();
}

#[test]
fn add_voter_remove_server_and_transfer_leadership() {
    let mut c = Cluster::new();
    let mut want = BTreeMap::new();
    for i in 0..10 {
        c.apply_anywhere(&format!("set k{i} {i}"));
        want.insert(format!("k{i}"), i.to_string());
    }
    // A new node joins: it starts empty (no peers), becomes a learner, catches up, is promoted.
    c.start_new(4);
    let l = c.wait_leader(&[1, 2, 3]);
    c.nodes[&l].0.add_voter(4, Duration::from_secs(20)).unwrap();
    let s = c.nodes[&l].0.status();
    assert_eq!(s.voters, vec![1, 2, 3, 4], "{s:?}");
    c.wait_converged(&want);
    // Remove a follower; the cluster goes on without it.
    let f = (1..=3).find(|&i| i != l).unwrap();
    c.nodes[&l]
        .0
        .remove_server(f, Duration::from_secs(10))
        .unwrap();
    assert!(!c.nodes[&l].0.status().voters.contains(&f));
    c.crash(f);
    c.apply_anywhere("set after removal");
    want.insert("after".into(), "removal".into());
    // Hand leadership to the newcomer; it serves writes.
    c.nodes[&l]
        .0
        .transfer_leadership(4, Duration::from_secs(10))
        .unwrap();
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    assert_eq!(c.wait_leader(&ids), 4);
    c.apply(4, "set on four").unwrap();
    want.insert("on".into(), "four".into());
    c.wait_converged(&want);
}

/// A failed fsync stops the node with a clear storage error: no retry, no later success.
#[test]
fn a_failed_fsync_stops_the_node_cleanly() {
    use raftwal_wal::vfs::{SimFaults, SimVfs};
    let vfs = SimVfs::new(1);
    let storage = stores::simulated(1, &vfs);
    let cfg = Config {
        tick: Duration::from_millis(10),
        ..Config::new(1, vec![1])
    };
    let net = MemNetwork::new();
    let node = Node::start(cfg, Kv::default(), storage, net.transport(1)).unwrap();
    assert!(wait(|| (node.role() == Role::Leader).then_some(())).is_some());
    node.apply(b"set a 1".to_vec(), Duration::from_secs(5))
        .unwrap();
    vfs.set_faults(SimFaults {
        fail_sync_at: Some(1),
        ..Default::default()
    });
    match node.apply(b"set a 2".to_vec(), Duration::from_secs(5)) {
        Err(NodeError::Storage(cause)) => {
            // The chain reaches the WAL's error, and under it the failed fsync's I/O error.
            let mut chain: Vec<&(dyn std::error::Error + 'static)> = vec![&cause];
            while let Some(next) = chain.last().and_then(|e| e.source()) {
                chain.push(next);
            }
            assert!(
                chain
                    .iter()
                    .any(|e| e.downcast_ref::<raftwal_wal::Error>().is_some()),
                "{cause}"
            );
            assert!(
                chain
                    .iter()
                    .any(|e| e.downcast_ref::<std::io::Error>().is_some()),
                "{cause}"
            );
            assert!(cause.to_string().contains("fdatasync"), "{cause}");
        }
        other => panic!("expected a storage error, got {other:?}"),
    }
    assert!(wait(|| node.status().stopped.then_some(())).is_some());
    assert!(matches!(
        node.apply(b"set a 3".to_vec(), Duration::from_secs(1)),
        Err(NodeError::Shutdown)
    ));
}

/// Power loss: three nodes on one simulated disk, acknowledged writes, then a power cut that
/// drops everything not fsynced, and a restart. Every acknowledged write must survive, which
/// holds only if a round's entries are durable before the messages acknowledging them go out.
#[test]
fn power_loss_of_the_whole_cluster_keeps_every_acknowledged_write() {
    use raftwal_wal::vfs::{CrashPolicy, SimVfs};
    let vfs = SimVfs::new(9);
    let start_sim = |id: u64, net: &MemNetwork| -> (Node, Kv) {
        let wal = Wal::open(
            format!("/c/n{id}"),
            WalOptions::default()
                .segment_size(64 << 10)
                .vfs(Arc::new(vfs.process())),
        )
        .unwrap();
        let snapshots =
            FileSnapshotStore::open_with(format!("/c/s{id}"), 2, Arc::new(vfs.process())).unwrap();
        let storage = RaftStorage::new(wal, snapshots);
        let kv = Kv::default();
        // Snapshots and compaction are under way when the power goes out.
        let cfg = Config {
            tick: Duration::from_millis(10),
            snapshot_threshold: 7,
            trailing_entries: 2,
            ..Config::new(id, vec![1, 2, 3])
        };
        let node = Node::start(cfg, kv.clone(), storage, net.transport(id)).unwrap();
        net.connect(id, node.mailbox());
        (node, kv)
    };
    let net = MemNetwork::new();
    let mut nodes: BTreeMap<u64, (Node, Kv)> =
        (1..=3).map(|id| (id, start_sim(id, &net))).collect();
    let leader = |nodes: &BTreeMap<u64, (Node, Kv)>| {
        wait(|| {
            nodes
                .iter()
                .find(|(_, (n, _))| n.role() == Role::Leader)
                .map(|(id, _)| *id)
        })
        .expect("a leader")
    };
    let mut want = BTreeMap::new();
    let l = leader(&nodes);
    for i in 0..40 {
        nodes[&l]
            .0
            .apply(
                format!("set k{i} v{i}").into_bytes(),
                Duration::from_secs(10),
            )
            .unwrap();
        want.insert(format!("k{i}"), format!("v{i}"));
    }
    // The power goes out: nothing that was not fsynced survives.
    for (id, (n, _)) in std::mem::take(&mut nodes) {
        net.disconnect(id);
        std::mem::forget(n); // a crash, not a shutdown: no thread gets to finish anything
    }
    vfs.crash(CrashPolicy::DropAll);
    // A new network: the crashed nodes' threads (still running in this process, unlike after
    // a real power cut) must not be able to hand the new ones anything.
    let net = MemNetwork::new();
    let nodes: BTreeMap<u64, (Node, Kv)> = (1..=3).map(|id| (id, start_sim(id, &net))).collect();
    let ok = wait(|| {
        nodes
            .values()
            .all(|(_, kv)| *kv.0.lock().unwrap() == want)
            .then_some(())
    });
    assert!(ok.is_some(), "acknowledged writes lost in a power cut");
    for (id, (n, _)) in &nodes {
        let s = n.status();
        assert!(
            s.snapshot_index > 0,
            "node {id} restored no snapshot: {s:?}"
        );
    }
}

#[test]
fn message_loss_delay_duplication_and_reordering() {
    let c = Cluster::new();
    c.net.set_faults(raftwal_glue::NetFaults {
        drop: 0.2,
        duplicate: 0.1,
        reorder: 0.2,
        delay: 0.1,
        max_delay: Duration::from_millis(30),
        seed: 7,
    });
    let mut want = BTreeMap::new();
    for i in 0..30 {
        // `set` is idempotent, so a retry after an unknown outcome is harmless.
        c.apply_anywhere(&format!("set k{i} {i}"));
        want.insert(format!("k{i}"), i.to_string());
    }
    c.net.set_faults(raftwal_glue::NetFaults::default());
    let st = c.net.stats();
    assert!(
        st.dropped > 0 && st.duplicated > 0 && st.reordered > 0 && st.delayed > 0,
        "faults were not injected: {st:?}"
    );
    c.wait_converged(&want);
}

/// `propose` does not wait: one thread keeps many commands in flight, and each proposal
/// reports its own outcome, in log order.
#[test]
fn many_proposals_in_flight_from_one_thread() {
    let c = Cluster::new();
    let l = c.wait_leader(&[1, 2, 3]);
    let node = &c.nodes[&l].0;
    let inflight: Vec<_> = (0..200)
        .map(|_| node.propose(b"add n 1".to_vec()).unwrap())
        .collect();
    let first = &inflight[0];
    assert!(wait(|| first.try_result()).is_some_and(|r| r.is_ok()));
    let mut last = 0;
    for (i, p) in inflight.into_iter().enumerate().skip(1) {
        let a = p.wait(Duration::from_secs(20)).unwrap();
        assert!(a.index > last, "in log order");
        assert_eq!(a.response, (i + 1).to_string().into_bytes());
        last = a.index;
    }
    wait_counter(&c, "n", 200);
    // A follower's proposal fails through the proposal, not the call.
    let f = (1..=3).find(|&i| i != l).unwrap();
    let p = c.nodes[&f].0.propose(b"add n 1".to_vec()).unwrap();
    assert!(matches!(
        p.wait(Duration::from_secs(5)),
        Err(NodeError::NotLeader { .. })
    ));
}

/// Two changes at once go through a joint configuration (old and new quorums both needed),
/// which the leader leaves on its own; the new configuration survives a whole-cluster restart.
#[test]
fn joint_consensus_replaces_a_voter_in_one_change() {
    let mut c = Cluster::new();
    c.apply_anywhere("set before joint");
    c.start_new(4);
    let l = c.wait_leader(&[1, 2, 3]);
    let out = (1..=3).find(|&i| i != l).unwrap();
    let events = c.nodes[&l].0.subscribe();
    c.nodes[&l]
        .0
        .change_membership(
            &[
                raftwal_glue::Membership::AddVoter(4),
                raftwal_glue::Membership::Remove(out),
            ],
            Duration::from_secs(20),
        )
        .unwrap();
    let s = c.nodes[&l].0.status();
    let mut want_voters: Vec<u64> = [1, 2, 3, 4].into_iter().filter(|&i| i != out).collect();
    want_voters.sort_unstable();
    assert_eq!(s.voters, want_voters, "{s:?}");
    assert!(
        s.voters_outgoing.is_empty(),
        "left the joint configuration: {s:?}"
    );
    // The leader went through the joint configuration ({old} and {new} both in force), then
    // left it.
    let seen: Vec<NodeEvent> = events.try_iter().collect();
    let joint = seen.iter().position(|e| {
        matches!(e, NodeEvent::MembershipChanged { voters, voters_outgoing, .. }
            if *voters == want_voters && voters_outgoing.contains(&out))
    });
    let left = seen.iter().rposition(|e| {
        matches!(e, NodeEvent::MembershipChanged { voters, voters_outgoing, .. }
            if *voters == want_voters && voters_outgoing.is_empty())
    });
    assert!(joint.is_some() && left > joint, "{seen:?}");
    c.crash(out);
    c.apply_anywhere("set after joint");
    let mut want = BTreeMap::new();
    want.insert("before".to_string(), "joint".to_string());
    want.insert("after".to_string(), "joint".to_string());
    c.wait_converged(&want);
    // Everyone restarts from disk with the new configuration.
    let ids: Vec<u64> = c.nodes.keys().copied().collect();
    for &id in &ids {
        c.crash(id);
    }
    for &id in &ids {
        let peers = if id == 4 { vec![] } else { vec![1, 2, 3] };
        let n = start_with(&c.path(id), id, peers, &c.net, c.snap);
        c.nodes.insert(id, n);
    }
    for &id in &ids {
        let ok = wait(|| (c.nodes[&id].0.status().voters == want_voters).then_some(()));
        assert!(ok.is_some(), "{:?}", c.nodes[&id].0.status());
    }
    c.apply_anywhere("set after restart");
    want.insert("after".to_string(), "restart".to_string());
    c.wait_converged(&want);
}
