//! `RaftStorage`: raft::Storage semantics over the stores, and raft-rs `RawNode`s replicating,
//! restarting and catching up on it over real `Wal`s.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/stores.rs"]
mod stores;

use std::collections::VecDeque;
use std::io::{Read, Write};

use raft::eraftpb::{ConfState, Entry, HardState, Message, SnapshotMetadata};
use raft::{Config, GetEntriesContext, RawNode, StateRole, Storage, StorageError};
use raftwal_glue::RaftStorage;
use raftwal_snapshot::{MemSnapshotStore, SnapshotSink, SnapshotStore};
use raftwal_wal::{LogStore, MemStore, Wal, WalOptions};
use stores::put_snapshot;

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("e{index}t{term}").into_bytes().into(),
        ..Default::default()
    }
}

fn is(e: raft::Error, want: StorageError) -> bool {
    matches!(e, raft::Error::Store(ref s) if std::mem::discriminant(s) == std::mem::discriminant(&want))
}

#[test]
fn storage_semantics() {
    let s = RaftStorage::new(MemStore::new(), MemSnapshotStore::new(2).unwrap());
    assert!(!s.is_initialized().unwrap());
    let conf = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    s.initialize(&conf).unwrap();
    assert!(s.is_initialized().unwrap());
    let st = s.initial_state().unwrap();
    assert_eq!(st.conf_state, conf);
    assert_eq!(st.hard_state.term, 1);
    assert_eq!(st.hard_state.commit, 3);
    // The initial membership is in the log: one committed AddNode per voter, at term 1.
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 3));
    let boot = s
        .entries(1, 4, None, GetEntriesContext::empty(false))
        .unwrap();
    assert!(boot
        .iter()
        .all(|e| e.get_entry_type() == raft::eraftpb::EntryType::EntryConfChange && e.term == 1));
    assert_eq!(s.term(0).unwrap(), 0);
    // Start the log over for the rest of the test.
    s.log().delete_range(1, 3).unwrap();

    let hs = HardState {
        term: 1,
        vote: 2,
        commit: 3,
        ..Default::default()
    };
    s.append(&(1..=10).map(|i| ent(i, 1)).collect::<Vec<_>>(), Some(&hs))
        .unwrap();
    assert_eq!(s.initial_state().unwrap().hard_state, hs);
    assert_eq!((s.first_index().unwrap(), s.last_index().unwrap()), (1, 10));
    let got = s
        .entries(2, 5, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(got, vec![ent(2, 1), ent(3, 1), ent(4, 1)]);
    let one = s
        .entries(2, 5, Some(0), GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(one.len(), 1, "at least one entry whatever max_size");
    assert!(is(
        s.entries(2, 12, None, GetEntriesContext::empty(false))
            .unwrap_err(),
        StorageError::Unavailable
    ));
    assert!(is(s.term(11).unwrap_err(), StorageError::Unavailable));

    // A conflicting tail is cut in the same batch as the new entries.
    s.append(&[ent(6, 2), ent(7, 2)], None).unwrap();
    assert_eq!(s.last_index().unwrap(), 7);
    assert_eq!(s.term(6).unwrap(), 2);
    assert_eq!(s.term(5).unwrap(), 1);

    // A local snapshot at 5, log compacted to 4 (keeping a trailing entry).
    s.compact(5, 1, 4).unwrap();
    assert_eq!(s.first_index().unwrap(), 5);
    assert_eq!(s.term(5).unwrap(), 1);
    assert!(is(s.term(3).unwrap_err(), StorageError::Compacted));
    assert!(is(
        s.entries(3, 6, None, GetEntriesContext::empty(false))
            .unwrap_err(),
        StorageError::Compacted
    ));

    // Snapshot retrieval: none stored yet, then the newest one, referenced by id.
    assert!(is(
        s.snapshot(5, 2).unwrap_err(),
        StorageError::SnapshotTemporarilyUnavailable
    ));
    let mut sink = s
        .snapshots()
        .create(5, 1, &raftwal_glue::encode_conf_state(&conf), 1)
        .unwrap();
    sink.write_all(b"state at 5").unwrap();
    let meta = sink.commit().unwrap();
    let snap = s.snapshot(5, 2).unwrap();
    assert_eq!(snap.get_metadata().index, 5);
    assert_eq!(snap.get_metadata().get_conf_state(), &conf);
    assert_eq!(&snap.data[..], meta.id.as_bytes());
    assert!(is(
        s.snapshot(6, 2).unwrap_err(),
        StorageError::SnapshotTemporarilyUnavailable
    ));

    // Installing a leader's snapshot empties the log atomically.
    let mut m = SnapshotMetadata {
        index: 20,
        term: 3,
        ..Default::default()
    };
    m.set_conf_state(conf.clone());
    s.apply_snapshot(&m).unwrap();
    assert_eq!(
        (s.first_index().unwrap(), s.last_index().unwrap()),
        (21, 20)
    );
    assert_eq!(s.term(20).unwrap(), 3);
    assert_eq!(s.initial_state().unwrap().hard_state.commit, 20);
    s.append(&[ent(21, 3)], None).unwrap();
    assert_eq!(s.last_index().unwrap(), 21);
}

type Store = RaftStorage<Wal, MemSnapshotStore>;

struct Peer {
    id: u64,
    dir: std::path::PathBuf,
    node: Option<RawNode<Store>>,
    applied: Vec<Vec<u8>>,
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

fn open_node(id: u64, dir: &std::path::Path, bootstrap: bool) -> RawNode<Store> {
    let wal = Wal::open(dir, WalOptions::default().segment_size(64 << 10)).unwrap();
    let s = RaftStorage::new(wal, MemSnapshotStore::new(1).unwrap());
    if bootstrap {
        s.initialize(&ConfState {
            voters: vec![1, 2, 3],
            ..Default::default()
        })
        .unwrap();
    }
    // The state machine in this test is in memory, so a restarted node re-applies the log
    // from the start (applied = 0).
    let cfg = Config {
        id,
        election_tick: 10,
        heartbeat_tick: 2,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    };
    RawNode::new(&cfg, s, &logger()).unwrap()
}

fn is_command(e: &Entry) -> bool {
    e.get_entry_type() == raft::eraftpb::EntryType::EntryNormal && !e.data.is_empty()
}

/// One round for a peer: the synchronous Ready protocol, persisting each round with one batch.
fn handle_ready(p: &mut Peer, out: &mut VecDeque<Message>) {
    let Some(node) = p.node.as_mut() else {
        return;
    };
    if !node.has_ready() {
        return;
    }
    let mut rd = node.ready();
    out.extend(rd.take_messages()); // the leader sends before its own fsync
    assert_eq!(
        rd.snapshot().get_metadata().index,
        0,
        "no snapshots in this test"
    );
    node.store().append(rd.entries(), rd.hs()).unwrap();
    for e in rd.take_committed_entries() {
        if is_command(&e) {
            p.applied.push(e.data.to_vec());
        }
    }
    out.extend(rd.take_persisted_messages()); // acknowledgements only after the fsync
    let mut light = node.advance(rd);
    if let Some(c) = light.commit_index() {
        node.store().set_commit(c).unwrap();
    }
    out.extend(light.take_messages());
    for e in light.take_committed_entries() {
        if is_command(&e) {
            p.applied.push(e.data.to_vec());
        }
    }
    node.advance_apply();
}

fn run(peers: &mut [Peer], rounds: usize) {
    let mut q = VecDeque::new();
    for _ in 0..rounds {
        for p in peers.iter_mut() {
            if let Some(n) = p.node.as_mut() {
                n.tick();
            }
        }
        for _ in 0..3 {
            for p in peers.iter_mut() {
                handle_ready(p, &mut q);
            }
            while let Some(m) = q.pop_front() {
                if let Some(n) = peers
                    .iter_mut()
                    .find(|p| p.id == m.to)
                    .and_then(|p| p.node.as_mut())
                {
                    let _ = n.step(m);
                }
            }
        }
    }
}

fn leader(peers: &[Peer]) -> Option<usize> {
    peers.iter().position(|p| {
        p.node
            .as_ref()
            .is_some_and(|n| n.raft.state == StateRole::Leader)
    })
}

fn propose(peers: &mut [Peer], l: usize, data: Vec<u8>) {
    peers[l]
        .node
        .as_mut()
        .unwrap()
        .propose(vec![], data)
        .unwrap();
    run(peers, 1);
}

#[test]
fn three_nodes_replicate_restart_and_catch_up_on_wal() {
    let d = tempfile::tempdir().unwrap();
    let mut peers: Vec<Peer> = (1..=3)
        .map(|id| {
            let dir = d.path().join(format!("n{id}"));
            Peer {
                id,
                node: Some(open_node(id, &dir, true)),
                dir,
                applied: Vec::new(),
            }
        })
        .collect();
    run(&mut peers, 40);
    let l = leader(&peers).expect("a leader is elected");
    for i in 0..30 {
        propose(&mut peers, l, format!("cmd{i}").into_bytes());
    }
    run(&mut peers, 10);
    for p in &peers {
        assert_eq!(p.applied.len(), 30, "node {}", p.id);
    }

    // Crash a follower (everything in memory lost), keep writing, restart it from its WAL.
    let f = (l + 1) % 3;
    peers[f].node = None;
    for i in 30..50 {
        propose(&mut peers, l, format!("cmd{i}").into_bytes());
    }
    let dir = peers[f].dir.clone();
    peers[f].node = Some(open_node(peers[f].id, &dir, false));
    peers[f].applied.clear();
    run(&mut peers, 30);
    let mut want: Vec<Vec<u8>> = (0..50).map(|i| format!("cmd{i}").into_bytes()).collect();
    assert_eq!(peers[l].applied, want);
    assert_eq!(
        peers[f].applied, want,
        "the restarted follower caught up from its WAL"
    );

    // Crash the leader: the others elect a new one and keep the log; the old leader rejoins.
    let old = l;
    peers[old].node = None;
    run(&mut peers, 60);
    let l2 = leader(&peers).expect("a new leader is elected");
    assert_ne!(l2, old);
    propose(&mut peers, l2, b"after".to_vec());
    run(&mut peers, 10);
    let dir = peers[old].dir.clone();
    peers[old].node = Some(open_node(peers[old].id, &dir, false));
    peers[old].applied.clear();
    run(&mut peers, 40);
    want.push(b"after".to_vec());
    let last = peers[l2]
        .node
        .as_ref()
        .unwrap()
        .store()
        .last_index()
        .unwrap();
    for p in &peers {
        assert_eq!(p.applied, want, "node {}", p.id);
        assert_eq!(p.node.as_ref().unwrap().store().last_index().unwrap(), last);
    }
}

/// What a restart restores from: the snapshot of the recorded mark; a newer local snapshot
/// that was made durable just before a crash cut off its mark (recorded now, with the commit
/// raised to it); never a snapshot that does not match the log; a clear error when the mark's
/// snapshot is gone. Compaction never moves the mark back, and `snapshot()` asks for a fresh
/// snapshot when the stored one cannot serve the recipient.
#[test]
fn snapshot_recovery_and_compaction_rules() {
    let s = RaftStorage::new(MemStore::new(), MemSnapshotStore::new(3).unwrap());
    let hs = HardState {
        term: 2,
        commit: 10,
        ..Default::default()
    };
    s.append(&(1..=20).map(|i| ent(i, 2)).collect::<Vec<_>>(), Some(&hs))
        .unwrap();
    assert_eq!(s.recover_snapshot().unwrap(), None, "no snapshot yet");

    // A snapshot at 15 made durable, then a crash before its mark: it is used, and recorded.
    put_snapshot(s.snapshots(), 15, 2).unwrap();
    let m = s.recover_snapshot().unwrap().expect("the durable snapshot");
    assert_eq!((m.index, m.term), (15, 2));
    assert_eq!(s.snapshot_mark().unwrap(), (15, 2));
    assert_eq!(
        s.hard_state().unwrap().commit,
        15,
        "commit raised to the snapshot"
    );

    // A snapshot whose term does not match the log is never used.
    put_snapshot(s.snapshots(), 18, 7).unwrap();
    let m = s.recover_snapshot().unwrap().unwrap();
    assert_eq!(m.index, 15);

    // Compaction keeps the trailing entries; an older snapshot never moves the mark back.
    s.compact(15, 2, 12).unwrap();
    assert_eq!(s.first_index().unwrap(), 13);
    s.compact(9, 2, 9).unwrap();
    assert_eq!(s.snapshot_mark().unwrap(), (15, 2));
    assert_eq!(s.first_index().unwrap(), 13);
    assert_eq!(s.term(15).unwrap(), 2);

    // A recipient outside the newest snapshot's membership: unavailable, and a fresh
    // snapshot is requested (once).
    assert!(!s.take_snapshot_request());
    assert!(is(
        s.snapshot(0, 9).unwrap_err(),
        StorageError::SnapshotTemporarilyUnavailable
    ));
    assert!(s.take_snapshot_request());
    assert!(!s.take_snapshot_request());
    // A member gets the newest snapshot, named by its id.
    let snap = s.snapshot(0, 1).unwrap();
    assert_eq!(snap.get_metadata().index, 18);

    // The mark's snapshot missing from the store: a clear error, not an empty state machine.
    let lost = RaftStorage::new(MemStore::new(), MemSnapshotStore::new(1).unwrap());
    lost.append(&(1..=20).map(|i| ent(i, 2)).collect::<Vec<_>>(), Some(&hs))
        .unwrap();
    lost.compact(15, 2, 15).unwrap();
    let err = lost.recover_snapshot().unwrap_err();
    assert!(
        err.to_string().contains("index 15") && err.to_string().contains("missing"),
        "{err}"
    );
}

/// What one run of the snapshot workload got acknowledged before it stopped.
#[derive(Debug, Default)]
struct Acked {
    /// The last entry index acknowledged durable, with its term.
    last: (u64, u64),
    /// The last snapshot mark acknowledged (by `compact` or `apply_snapshot`).
    mark: (u64, u64),
}

type SimStorage = RaftStorage<Wal, raftwal_snapshot::FileSnapshotStore>;

/// A node's stores on the simulated disk, its snapshot store keeping `retain` snapshots.
fn sim_storage(vfs: &raftwal_wal::vfs::SimVfs, retain: usize) -> Result<SimStorage, String> {
    let v = std::sync::Arc::new(vfs.process());
    let wal = Wal::open(
        "/n/wal",
        WalOptions::default()
            .segment_size(16 << 10)
            .background_prepare(false)
            .vfs(v.clone()),
    )
    .map_err(|e| e.to_string())?;
    let snaps = raftwal_snapshot::FileSnapshotStore::open_with("/n/snapshots", retain, v)
        .map_err(|e| e.to_string())?;
    Ok(RaftStorage::new(wal, snaps))
}

/// A node's snapshot life: appends, local snapshots each followed by compaction, a snapshot
/// received and installed (log emptied), more appends. Stops at the first error.
fn snapshot_workload(s: &SimStorage, acked: &mut Acked) -> Result<(), String> {
    let e = |e: raftwal_glue::Error| e.to_string();
    let append = |s: &SimStorage, lo: u64, hi: u64, term: u64| {
        let hs = HardState {
            term,
            commit: hi,
            ..Default::default()
        };
        let entries: Vec<Entry> = (lo..=hi).map(|i| ent(i, term)).collect();
        s.append(&entries, Some(&hs))
    };
    append(s, 1, 30, 1).map_err(e)?;
    acked.last = (30, 1);
    put_snapshot(s.snapshots(), 20, 1)?;
    s.compact(20, 1, 15).map_err(e)?;
    acked.mark = (20, 1);
    append(s, 31, 40, 1).map_err(e)?;
    acked.last = (40, 1);
    put_snapshot(s.snapshots(), 35, 1)?;
    s.compact(35, 1, 30).map_err(e)?;
    acked.mark = (35, 1);
    // A leader's snapshot, received and installed: the log starts over after it.
    put_snapshot(s.snapshots(), 50, 2)?;
    let mut meta = SnapshotMetadata {
        index: 50,
        term: 2,
        ..Default::default()
    };
    meta.mut_conf_state().voters = vec![1];
    s.apply_snapshot(&meta).map_err(e)?;
    acked.mark = (50, 2);
    acked.last = (50, 2);
    append(s, 51, 55, 2).map_err(e)?;
    acked.last = (55, 2);
    Ok(())
}

/// A power cut at every file operation of the snapshot workload (unsynced data dropped, or
/// kept, torn or garbled at random): on restart there is always a snapshot to restore when a
/// mark was recorded (the log is compacted only after its snapshot is durable), it is at least
/// the last acknowledged mark, its data verifies, the hard state's commit covers it, and every
/// acknowledged entry after it is still in the log. With a store that keeps a single snapshot
/// too: committing the received snapshot must not reap the one the durable mark still names.
#[test]
fn snapshot_steps_survive_a_power_cut_at_every_operation() {
    for retain in [1, 2] {
        power_cuts_through_the_snapshot_workload(retain);
    }
}

fn power_cuts_through_the_snapshot_workload(retain: usize) {
    use raftwal_wal::vfs::{CrashPolicy, SimFaults, SimVfs};
    let vfs = SimVfs::new(1);
    let total = {
        let s = sim_storage(&vfs, retain).unwrap();
        snapshot_workload(&s, &mut Acked::default()).unwrap();
        vfs.ops()
    };
    assert!(total > 50, "workload too small: {total} ops");
    let mut checked = 0;
    for n in 1..=total {
        for policy in [CrashPolicy::DropAll, CrashPolicy::Random(n)] {
            let vfs = SimVfs::new(n);
            vfs.set_faults(SimFaults {
                crash_at_op: Some(n),
                ..Default::default()
            });
            let mut acked = Acked::default();
            if let Ok(s) = sim_storage(&vfs, retain) {
                let _ = snapshot_workload(&s, &mut acked);
            }
            vfs.crash(policy);
            let at = format!(
                "retaining {retain}: power cut at op {n} of {total} ({policy:?}), acked {acked:?}"
            );
            let s = sim_storage(&vfs, retain).unwrap_or_else(|e| panic!("{at}: reopen: {e}"));
            let snap = s
                .recover_snapshot()
                .unwrap_or_else(|e| panic!("{at}: recover: {e}"));
            let base = match &snap {
                Some(m) => {
                    assert!(
                        (m.index, m.term) >= acked.mark,
                        "{at}: restored {m:?}, older than the acknowledged mark"
                    );
                    let (_, mut r) = s.snapshots().open(&m.id).unwrap();
                    let mut data = String::new();
                    r.read_to_string(&mut data)
                        .unwrap_or_else(|e| panic!("{at}: snapshot data: {e}"));
                    assert_eq!(data, format!("state at {}", m.index), "{at}");
                    assert!(s.hard_state().unwrap().commit >= m.index, "{at}");
                    m.index
                }
                None => {
                    assert_eq!(
                        acked.mark,
                        (0, 0),
                        "{at}: the acknowledged snapshot is gone"
                    );
                    0
                }
            };
            // Entries up to 40 were written in term 1, those after the install at 50 in term 2.
            for i in base + 1..=acked.last.0 {
                assert_eq!(
                    s.term(i).unwrap_or_else(|e| panic!("{at}: entry {i}: {e}")),
                    if i > 50 { 2 } else { 1 },
                    "{at}: entry {i}"
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * total);
    eprintln!("{checked} power cuts checked over {total} operations");
}

fn conf(voters: &[u64], learners: &[u64]) -> ConfState {
    ConfState {
        voters: voters.to_vec(),
        learners: learners.to_vec(),
        ..Default::default()
    }
}

/// The removed nodes: recorded with each configuration (nodes that left it, minus those that
/// came back), kept across a reopen, and taken from a snapshot's configuration when it is
/// installed, so a node that joins from a snapshot knows who left before it joined.
#[test]
fn removed_nodes_follow_configurations_reopens_and_snapshots() {
    use std::collections::BTreeSet;
    let dir = tempfile::tempdir().unwrap();
    let open = || {
        RaftStorage::new(
            Wal::open(dir.path().join("wal"), WalOptions::default()).unwrap(),
            MemSnapshotStore::new(1).unwrap(),
        )
    };
    let s = open();
    s.initialize(&conf(&[1, 2, 3], &[])).unwrap();
    assert!(s.removed_nodes().unwrap().is_empty());
    s.set_conf_state_at(&conf(&[1, 2], &[4]), 5).unwrap();
    assert_eq!(s.removed_nodes().unwrap(), BTreeSet::from([3]));
    // A learner demoted from voter is still a member; so is a returning node.
    s.set_conf_state_at(&conf(&[1], &[2, 3, 4]), 6).unwrap();
    assert!(s.removed_nodes().unwrap().is_empty());
    s.set_conf_state_at(&conf(&[1, 2], &[]), 7).unwrap();
    assert_eq!(s.removed_nodes().unwrap(), BTreeSet::from([3, 4]));
    drop(s);
    let s = open();
    assert_eq!(s.removed_nodes().unwrap(), BTreeSet::from([3, 4]));
    // A snapshot's configuration carries the nodes removed before it.
    let cs = conf(&[1, 2, 9], &[]);
    let encoded = raftwal_glue::encode_snapshot_conf(&cs, &BTreeSet::from([5, 6, u64::MAX]));
    let (decoded, removed) = raftwal_glue::decode_snapshot_conf(&encoded).unwrap();
    assert_eq!(
        (&decoded, &removed),
        (&cs, &BTreeSet::from([5, 6, u64::MAX]))
    );
    // Readers that do not know the field see the configuration alone.
    let plain: ConfState = protobuf::Message::parse_from_bytes(&encoded).unwrap();
    assert_eq!(
        (plain.voters.clone(), plain.learners.clone()),
        (cs.voters.clone(), cs.learners.clone())
    );
    let bare = raftwal_glue::encode_conf_state(&cs);
    assert!(raftwal_glue::decode_snapshot_conf(&bare)
        .unwrap()
        .1
        .is_empty());
    let mut broken = encoded.clone();
    *broken.last_mut().unwrap() = 0xff;
    assert!(raftwal_glue::decode_snapshot_conf(&broken).is_err());
    let mut meta = SnapshotMetadata {
        index: 20,
        term: 3,
        ..Default::default()
    };
    meta.set_conf_state(cs);
    s.apply_snapshot_with_removed(&meta, &removed).unwrap();
    drop(s);
    // 3 and 4 from before, 5 and 6 and u64::MAX from the snapshot; 9 is a member.
    assert_eq!(
        open().removed_nodes().unwrap(),
        BTreeSet::from([3, 4, 5, 6, u64::MAX])
    );
}
