//! `raft_messages`: arbitrary messages fed into a running three-node cluster.
//!
//! The input is a sequence of steps. Most steps deliver one message to a node's mailbox, as a
//! transport would: any type, any claimed sender and recipient, terms, indexes and commits near
//! the node's own or anywhere up to `u64::MAX`, entries of any type and content (configuration
//! changes that decode, or garbage), reject hints, contexts, and snapshots streamed with their
//! data. Other steps propose commands or let time pass. The cluster is a
//! `raftwal_glue::testing::ManualCluster`: single-threaded and deterministic, so a panic inside
//! Raft reaches the fuzzer.
//!
//! Invariants, checked after every step: no node stops; no node's term nears `u64::MAX`; a
//! node's commit index never moves back and what it committed is never rewritten.
//!
//! The input runs twice. First as it arrives unauthenticated (`Mailbox::deliver`): a sender
//! there may claim any identity, members' included, and Raft cannot survive a member that
//! lies, so nodes may disagree. Then again with every message arriving from an authenticated
//! member other than the one it claims (`Mailbox::deliver_from`, as a TLS peer forging
//! another's id): the guard must drop each one, so on top of the invariants above the nodes
//! must agree: any index two nodes committed holds the same entry on both.

use protobuf::Message as _;
use raftwal_glue::raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, Message, MessageType,
};
use raftwal_glue::testing::ManualCluster;

use super::Input;

fn u64_from(inp: &mut Input<'_>) -> u64 {
    u64::from(inp.u32()) | (u64::from(inp.u32()) << 32)
}

/// A number near `base` (a few below or above), or anything.
fn near(inp: &mut Input<'_>, base: u64) -> u64 {
    match inp.u8() % 8 {
        0 => u64_from(inp),
        1 => u64::MAX - u64::from(inp.u8() % 4),
        n => base
            .saturating_add(u64::from(inp.u8() % 8))
            .saturating_sub(u64::from(n)),
    }
}

const TYPES: [MessageType; 19] = [
    MessageType::MsgHup,
    MessageType::MsgBeat,
    MessageType::MsgPropose,
    MessageType::MsgAppend,
    MessageType::MsgAppendResponse,
    MessageType::MsgRequestVote,
    MessageType::MsgRequestVoteResponse,
    MessageType::MsgSnapshot,
    MessageType::MsgHeartbeat,
    MessageType::MsgHeartbeatResponse,
    MessageType::MsgUnreachable,
    MessageType::MsgSnapStatus,
    MessageType::MsgCheckQuorum,
    MessageType::MsgTransferLeader,
    MessageType::MsgTimeoutNow,
    MessageType::MsgReadIndex,
    MessageType::MsgReadIndexResp,
    MessageType::MsgRequestPreVote,
    MessageType::MsgRequestPreVoteResponse,
];

fn entry(inp: &mut Input<'_>, index: u64, term: u64) -> Entry {
    let mut e = Entry {
        index,
        term,
        ..Default::default()
    };
    match inp.u8() % 4 {
        0 | 1 => {
            let n = usize::from(inp.u8() % 16);
            e.data = inp.bytes(n).to_vec().into();
        }
        2 => {
            // A configuration change that decodes.
            let mut cc = ConfChange::default();
            cc.set_change_type(match inp.u8() % 3 {
                0 => ConfChangeType::AddNode,
                1 => ConfChangeType::RemoveNode,
                _ => ConfChangeType::AddLearnerNode,
            });
            cc.node_id = u64::from(inp.u8() % 6);
            e.set_entry_type(EntryType::EntryConfChange);
            e.data = cc.write_to_bytes().unwrap_or_default().into();
        }
        _ => {
            e.set_entry_type(if inp.u8().is_multiple_of(2) {
                EntryType::EntryConfChange
            } else {
                EntryType::EntryConfChangeV2
            });
            let n = usize::from(inp.u8() % 16);
            e.data = inp.bytes(n).to_vec().into();
        }
    }
    if inp.u8().is_multiple_of(4) {
        let n = usize::from(inp.u8() % 30);
        e.context = inp.bytes(n).to_vec().into();
    }
    e
}

fn message(inp: &mut Input<'_>, c: &ManualCluster, to: u64) -> Message {
    let (term, commit, _) = c.state(to);
    let last = c.committed(to).last().map_or(0, |e| e.index);
    let mut m = Message::default();
    m.set_msg_type(TYPES[usize::from(inp.u8()) % TYPES.len()]);
    m.from = u64::from(inp.u8() % 6);
    m.to = if inp.u8().is_multiple_of(8) {
        u64::from(inp.u8() % 6)
    } else {
        to
    };
    m.term = near(inp, term);
    m.log_term = near(inp, term);
    m.index = near(inp, last);
    m.commit = near(inp, commit);
    m.reject = inp.u8().is_multiple_of(4);
    m.reject_hint = near(inp, last);
    if inp.u8().is_multiple_of(4) {
        m.context = if inp.u8().is_multiple_of(2) {
            raftwal_glue::raft::CAMPAIGN_TRANSFER.to_vec().into()
        } else {
            let n = usize::from(inp.u8() % 30);
            inp.bytes(n).to_vec().into()
        };
    }
    let n = u64::from(inp.u8() % 5);
    let base_term = m.log_term;
    for i in 0..n {
        let index = if inp.u8().is_multiple_of(8) {
            near(inp, m.index)
        } else {
            m.index.wrapping_add(1 + i)
        };
        let t = near(inp, base_term);
        m.mut_entries().push(entry(inp, index, t));
    }
    m
}

fn snapshot_meta(
    inp: &mut Input<'_>,
    m: &mut Message,
) -> (raftwal_snapshot::SnapshotMeta, Vec<u8>) {
    let mut conf = ConfState::default();
    for id in 0..6u64 {
        match inp.u8() % 4 {
            0 => conf.voters.push(id),
            1 => conf.learners.push(id),
            2 if inp.u8().is_multiple_of(2) => conf.voters_outgoing.push(id),
            _ => {}
        }
    }
    conf.auto_leave = inp.u8().is_multiple_of(2);
    let (index, term) = (m.index, m.log_term);
    let sm = m.mut_snapshot().mut_metadata();
    sm.index = index;
    sm.term = term;
    sm.set_conf_state(conf.clone());
    let n = usize::from(inp.u8() % 16);
    let data = inp.bytes(n).to_vec();
    let meta = raftwal_snapshot::SnapshotMeta {
        id: "fuzz".into(),
        index: m.index,
        term: m.log_term,
        configuration: raftwal_glue::encode_conf_state(&conf),
        configuration_index: m.index,
        size: data.len() as u64,
        checksum: crc32fast_hash(&data),
        ..Default::default()
    };
    (meta, data)
}

fn crc32fast_hash(data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(data);
    h.finalize()
}

/// What each node has committed so far: it may only grow.
struct Committed(Vec<Vec<(u64, u64, Vec<u8>)>>);

impl Committed {
    fn check(&mut self, c: &ManualCluster, step: usize) {
        for (k, id) in c.ids().into_iter().enumerate() {
            if let Some(e) = c.stopped(id) {
                panic!("step {step}: node {id} stopped: {e}");
            }
            let (term, _, _) = c.state(id);
            assert!(term < u64::MAX / 2, "step {step}: node {id} at term {term}");
            let now: Vec<(u64, u64, Vec<u8>)> = c
                .committed(id)
                .into_iter()
                .map(|e| (e.index, e.term, e.data.to_vec()))
                .collect();
            let before = &self.0[k];
            // The log may have been compacted by a snapshot install: compare what both hold.
            for (i, t, d) in before {
                if let Some(n) = now.iter().find(|(ni, _, _)| ni == i) {
                    assert_eq!(
                        (&n.1, &n.2),
                        (t, d),
                        "step {step}: node {id} rewrote its committed entry {i}"
                    );
                }
            }
            let last_before = before.last().map_or(0, |e| e.0);
            let (_, commit, _) = c.state(id);
            assert!(
                commit >= last_before,
                "step {step}: node {id}'s commit went back from {last_before} to {commit}"
            );
            self.0[k] = now;
        }
    }
}

/// The scenario, run unauthenticated and then forged by authenticated peers; panics on a
/// broken invariant.
pub fn raft_messages(data: &[u8]) {
    run(data, false);
    run(data, true);
}

/// The peer a forged message arrives from: a member other than the claimed sender and the
/// recipient.
fn forger(m: &Message, to: u64) -> u64 {
    (1..=3).find(|&p| p != m.from && p != to).unwrap_or(1)
}

/// Makes `m` what the leader could send `to` now: its id and term, a log term that matches
/// the recipient's entry at `m.index` (moved within its committed log), entries of the current
/// term following it.
fn plausible(m: &mut Message, c: &ManualCluster, to: u64) {
    let Some(l) = c.leader() else { return };
    let (term, _, _) = c.state(to);
    m.from = l;
    m.to = to;
    m.term = term;
    let log = c.committed(to);
    m.index = m.index.min(log.last().map_or(0, |e| e.index));
    if let Some(e) = log.iter().find(|e| e.index == m.index) {
        m.log_term = e.term;
    }
    let at = m.index;
    for (i, e) in m.mut_entries().iter_mut().enumerate() {
        e.index = at + 1 + i as u64;
        e.term = term;
    }
}

/// Any index two nodes both committed holds the same entry on both.
fn agree(c: &ManualCluster, step: usize) {
    let logs: Vec<(u64, Vec<Entry>)> = c
        .ids()
        .into_iter()
        .map(|id| (id, c.committed(id)))
        .collect();
    for (a, la) in &logs {
        for (b, lb) in &logs {
            for e in la {
                if let Some(f) = lb.iter().find(|f| f.index == e.index) {
                    assert!(
                        (e.term, &e.data) == (f.term, &f.data),
                        "step {step}: nodes {a} and {b} committed different entries at {}",
                        e.index
                    );
                }
            }
        }
    }
}

fn run(data: &[u8], forged: bool) {
    let mut inp = Input::new(data);
    let mut c = ManualCluster::new(3);
    let leader = c.elect();
    for i in 0..3u8 {
        let _ = c.node(leader).propose(vec![b'c', i]);
    }
    c.run(3);
    let mut committed = Committed(vec![Vec::new(); 3]);
    committed.check(&c, 0);
    let mut step = 0;
    while !inp.is_empty() && step < 64 {
        step += 1;
        let to = 1 + u64::from(inp.u8() % 3);
        match inp.u8() % 8 {
            0..=4 => {
                let mut m = message(&mut inp, &c, to);
                if std::env::var_os("RAFTWAL_FUZZ_TRACE").is_some() {
                    eprintln!("step {step}: to {to} state {:?}: {m:?}", c.state(to));
                }
                if forged && inp.u8().is_multiple_of(2) {
                    plausible(&mut m, &c, to);
                }
                let peer = forged.then(|| forger(&m, to));
                let mb = c.mailbox(to);
                if m.get_msg_type() == MessageType::MsgSnapshot && inp.u8().is_multiple_of(2) {
                    let (meta, data) = snapshot_meta(&mut inp, &mut m);
                    let _ = match peer {
                        Some(p) => mb.receive_snapshot_from(p, m, &meta, &mut &data[..]),
                        None => mb.receive_snapshot(m, &meta, &mut &data[..]),
                    };
                } else {
                    match peer {
                        Some(p) => mb.deliver_from(p, m),
                        None => mb.deliver(m),
                    }
                }
            }
            5 => {
                let target = c.leader().unwrap_or(to);
                let _ = c.node(target).propose(vec![b'p', step as u8]);
            }
            _ => c.run(1 + usize::from(inp.u8() % 8)),
        }
        c.run(1);
        committed.check(&c, step);
        if forged {
            agree(&c, step);
        }
    }
    // Time passes with nothing injected: still nothing breaks.
    c.run(40);
    committed.check(&c, step + 1);
    if forged {
        agree(&c, step + 1);
    }
}
