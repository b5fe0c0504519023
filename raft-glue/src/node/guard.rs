//! The gate between the network and Raft: every message a transport delivers is checked here
//! before raft-rs sees it, and dropped (and counted, by [`DropReason`]) unless it is one a
//! correct peer could have sent. raft-rs trusts its input: it panics on some malformed
//! messages (an empty `MsgReadIndex`, a heartbeat committing past the log, a term that
//! overflows) and obeys any well-formed one.
//!
//! Who may speak: a leader hears only from the members of its configuration. A follower hears
//! from members and from nodes it has never known (a leader added while it lagged behind must
//! reach it, as in etcd). It drops nodes that left its configuration
//! ([`RaftStorage::removed_nodes`](crate::RaftStorage::removed_nodes), kept across restarts):
//! a removed node cannot take a follower over with a higher term (the one exception: the
//! hand-off request of this node's own leader of its term, which removed itself). The check
//! reads nothing but memory: a message costs no disk read, whoever sends it.
//!
//! So an id, once removed, is not used again: a leader refuses to add one it knows was removed
//! ([`Error::IdRemoved`](crate::Error::IdRemoved)), and a follower that remembers the removal
//! hears the node again only once it has applied the change adding it back. Snapshots carry
//! the removed set, so every node knows the removals before its own history starts.
//!
//! It also keeps a restarted node's promise (see the lease argument in `reads.rs`): for a
//! whole election timeout after the node starts, it grants no vote and no pre-vote (except to
//! a leadership transfer, which its leader started).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, EntryType, Message, MessageType};
use raft::{RawNode, StateRole, Storage, CAMPAIGN_TRANSFER};

use crate::types::DropReason;

/// Terms this close to `u64::MAX` are refused outright: a node never gets near an overflow.
const TERM_CEILING: u64 = u64::MAX - (1 << 32);

/// The checks, and what they dropped.
#[derive(Debug)]
pub(crate) struct Guard {
    id: u64,
    /// No votes before then (the node's clock).
    quiet_until: Instant,
    max_term_gap: u64,
    dropped: BTreeMap<DropReason, u64>,
    /// The drop counter of each reason seen (registered on its first drop).
    counters: BTreeMap<DropReason, ::metrics::Counter>,
    /// Nodes that left the configuration.
    removed: BTreeSet<u64>,
}

impl Guard {
    pub(crate) fn new(id: u64, quiet_until: Instant, max_term_gap: u64) -> Self {
        Guard {
            id,
            quiet_until,
            max_term_gap,
            dropped: BTreeMap::new(),
            counters: BTreeMap::new(),
            removed: BTreeSet::new(),
        }
    }

    /// The nodes that left the configuration, as the storage records them.
    pub(crate) fn set_removed(&mut self, removed: BTreeSet<u64>) {
        self.removed = removed;
    }

    /// Whether `id` left this node's configuration (so may not join it again).
    pub(crate) fn was_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// The nodes that left this node's configuration (as stored, kept in memory).
    pub(crate) fn removed(&self) -> &BTreeSet<u64> {
        &self.removed
    }

    /// Messages dropped so far, by reason.
    pub(crate) fn dropped(&self) -> &BTreeMap<DropReason, u64> {
        &self.dropped
    }

    /// Whether `m` may be stepped into Raft; counts it if not. `peer` is the connection's
    /// authenticated peer, if the transport knows it; `snapshot` says it came with its data
    /// through the snapshot path.
    pub(crate) fn admit<S: Storage>(
        &mut self,
        node: &RawNode<S>,
        m: &Message,
        peer: Option<u64>,
        now: Instant,
        snapshot: bool,
    ) -> bool {
        let checked = match peer {
            Some(p) if p != m.from => Err(DropReason::Spoofed),
            _ => self
                .check(node, m, now, snapshot)
                .and_then(|()| self.check_sender(node, m)),
        };
        match checked {
            Ok(()) => true,
            Err(r) => {
                self.count(r, 1);
                false
            }
        }
    }

    /// Counts `n` messages dropped for `r` (in [`Guard::dropped`] and the metrics).
    pub(crate) fn count(&mut self, r: DropReason, n: u64) {
        if n == 0 {
            return;
        }
        *self.dropped.entry(r).or_default() += n;
        let id = self.id;
        self.counters
            .entry(r)
            .or_insert_with(|| {
                ::metrics::counter!(
                    crate::metrics::DROPPED,
                    "node" => id.to_string(),
                    "reason" => r.to_string()
                )
            })
            .increment(n);
    }

    fn check<S: Storage>(
        &self,
        node: &RawNode<S>,
        m: &Message,
        now: Instant,
        snapshot: bool,
    ) -> Result<(), DropReason> {
        use MessageType as T;
        let r = &node.raft;
        let t = m.get_msg_type();
        let peer_type = matches!(
            t,
            T::MsgAppend
                | T::MsgAppendResponse
                | T::MsgRequestVote
                | T::MsgRequestVoteResponse
                | T::MsgRequestPreVote
                | T::MsgRequestPreVoteResponse
                | T::MsgHeartbeat
                | T::MsgHeartbeatResponse
                | T::MsgTimeoutNow
                | T::MsgReadIndex
                | T::MsgReadIndexResp
        ) || (t == T::MsgSnapshot && snapshot);
        if !peer_type {
            return Err(DropReason::NotFromPeers);
        }
        if m.to != self.id || m.from == self.id || m.from == 0 {
            return Err(DropReason::Misaddressed);
        }
        // Forwarded reads carry no term (raft-rs treats them as local); everything else does.
        let term_ok = if t == T::MsgReadIndex {
            m.term == 0 || m.term <= r.term
        } else {
            m.term >= 1 && m.term < TERM_CEILING && m.term - r.term.min(m.term) <= self.max_term_gap
        };
        if !term_ok {
            return Err(DropReason::TermOutOfRange);
        }
        let last = r.raft_log.last_index();
        let malformed = Err(DropReason::Malformed);
        match t {
            T::MsgRequestVote | T::MsgRequestPreVote => {
                if m.log_term > m.term {
                    return malformed;
                }
                if now < self.quiet_until && m.context != CAMPAIGN_TRANSFER {
                    return Err(DropReason::VoteAfterRestart);
                }
            }
            T::MsgAppend => {
                // Raft answers term 0 for any index past the log, so a zero term would match
                // entries this node does not have: only index 0 has term 0.
                if m.log_term > m.term
                    || (m.log_term == 0) != (m.index == 0)
                    || m.index.checked_add(m.entries.len() as u64).is_none()
                {
                    return malformed;
                }
                let mut term = m.log_term.max(1);
                for (i, e) in m.entries.iter().enumerate() {
                    if e.index != m.index + 1 + i as u64 || e.term < term || e.term > m.term {
                        return malformed;
                    }
                    term = e.term;
                    if !conf_change_decodes(e.get_entry_type(), &e.data) {
                        return malformed;
                    }
                }
            }
            T::MsgHeartbeat if m.commit > last => return malformed,
            T::MsgAppendResponse if m.index > last || m.reject_hint > last => return malformed,
            T::MsgReadIndex if m.entries.len() != 1 => return malformed,
            // Forwarded by a follower whose view of the leader is behind: it asks again.
            T::MsgReadIndex if r.state != StateRole::Leader => return Err(DropReason::NotLeader),
            T::MsgReadIndexResp | T::MsgTimeoutNow => {
                if m.from != r.leader_id || m.term != r.term {
                    return Err(DropReason::NotFromLeader);
                }
                if t == T::MsgReadIndexResp && m.entries.len() != 1 {
                    return malformed;
                }
            }
            T::MsgSnapshot => {
                let meta = m.get_snapshot().get_metadata();
                if meta.index == 0
                    || meta.term == 0
                    || meta.term > m.term
                    || !valid_conf_state(meta.get_conf_state())
                {
                    return malformed;
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether `m`'s sender may speak to this node (see the module documentation).
    fn check_sender<S: Storage>(&self, node: &RawNode<S>, m: &Message) -> Result<(), DropReason> {
        let (r, from) = (&node.raft, m.from);
        if r.prs().get(from).is_some() {
            return Ok(());
        }
        // A leader that removed itself hands over after applying the change, and so may the
        // node it asks: the request comes from this node's own leader of this term.
        if m.get_msg_type() == MessageType::MsgTimeoutNow && from == r.leader_id && m.term == r.term
        {
            return Ok(());
        }
        if r.state == StateRole::Leader || self.removed.contains(&from) {
            return Err(DropReason::NotAMember);
        }
        Ok(())
    }
}

/// A configuration raft-rs can restore: some voter, no zero id, no node both voter and
/// learner, learners-next only in a joint configuration and among the outgoing voters.
pub(crate) fn valid_conf_state(cs: &ConfState) -> bool {
    let joint = !cs.voters_outgoing.is_empty();
    let all = cs
        .voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners_next);
    !cs.voters.is_empty()
        && all.clone().all(|&id| id != 0)
        && !cs.voters.iter().any(|v| cs.learners.contains(v))
        && !cs.voters_outgoing.iter().any(|v| cs.learners.contains(v))
        && !cs
            .learners_next
            .iter()
            .any(|l| cs.learners.contains(l) || cs.voters.contains(l))
        && cs
            .learners_next
            .iter()
            .all(|l| cs.voters_outgoing.contains(l))
        && (joint || (cs.learners_next.is_empty() && !cs.auto_leave))
}

/// Whether an entry of this type carries a configuration change that decodes (other types
/// pass).
pub(crate) fn conf_change_decodes(t: EntryType, data: &[u8]) -> bool {
    use protobuf::Message as _;
    match t {
        EntryType::EntryNormal => true,
        EntryType::EntryConfChange => ConfChange::default().merge_from_bytes(data).is_ok(),
        EntryType::EntryConfChangeV2 => ConfChangeV2::default().merge_from_bytes(data).is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::Message as _;
    use raft::eraftpb::{ConfChangeType, Entry};
    use raft::storage::MemStorage;

    fn node(voters: Vec<u64>) -> RawNode<MemStorage> {
        let storage = MemStorage::new_with_conf_state((voters, vec![]));
        let cfg = raft::Config {
            id: 1,
            ..Default::default()
        };
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        RawNode::new(&cfg, storage, &logger).unwrap()
    }

    fn msg(t: MessageType, from: u64, term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(t);
        m.from = from;
        m.to = 1;
        m.term = term;
        m
    }

    fn admitted(g: &mut Guard, n: &RawNode<MemStorage>, from: u64) -> bool {
        g.admit(
            n,
            &msg(MessageType::MsgHeartbeat, from, 2),
            Some(from),
            Instant::now(),
            false,
        )
    }

    #[test]
    fn a_follower_drops_removed_nodes_until_it_applies_their_return() {
        let mut g = Guard::new(1, Instant::now(), 1000);
        let mut n = node(vec![1, 2, 3]);
        assert!(admitted(&mut g, &n, 2));
        assert!(
            admitted(&mut g, &n, 9),
            "a node added while this one lagged"
        );
        g.set_removed([4, 9].into());
        assert!(g.was_removed(4) && !g.was_removed(2));
        assert!(!admitted(&mut g, &n, 4), "a removed node");
        assert!(!admitted(&mut g, &n, 9));
        assert_eq!(g.dropped().get(&DropReason::NotAMember), Some(&2));

        // Member 2 leads and appends a change adding node 4 back: not applied, not enough.
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::AddNode);
        cc.node_id = 4;
        let mut e = Entry {
            index: 1,
            term: 2,
            data: cc.write_to_bytes().unwrap().into(),
            ..Default::default()
        };
        e.set_entry_type(EntryType::EntryConfChange);
        let mut append = msg(MessageType::MsgAppend, 2, 2);
        append.mut_entries().push(e);
        assert!(g.admit(&n, &append, Some(2), Instant::now(), false));
        n.step(append).unwrap();
        assert!(!admitted(&mut g, &n, 4), "a return not yet applied");
        // Once applied, node 4 is a member again.
        n.apply_conf_change(&cc).unwrap();
        assert!(
            admitted(&mut g, &n, 4),
            "the node the applied change adds back"
        );
        assert!(!admitted(&mut g, &n, 9));
        assert_eq!(g.dropped().get(&DropReason::NotAMember), Some(&4));
    }

    #[test]
    fn a_removed_leader_may_still_hand_over() {
        let mut g = Guard::new(1, Instant::now(), 1000);
        let mut n = node(vec![1, 2, 3, 4]);
        // Node 4 leads term 2, then its removal is applied here.
        n.step(msg(MessageType::MsgHeartbeat, 4, 2)).unwrap();
        assert_eq!(n.raft.leader_id, 4);
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::RemoveNode);
        cc.node_id = 4;
        n.apply_conf_change(&cc).unwrap();
        g.set_removed([4].into());
        let hand_off = |g: &mut Guard, term| {
            let m = msg(MessageType::MsgTimeoutNow, 4, term);
            g.admit(&n, &m, Some(4), Instant::now(), false)
        };
        assert!(hand_off(&mut g, 2), "its own leader's hand-off");
        assert!(!hand_off(&mut g, 3), "not of another term");
        assert!(!admitted(&mut g, &n, 4), "nothing else");
    }

    #[test]
    fn a_leader_hears_from_members_only() {
        let mut g = Guard::new(1, Instant::now(), 1000);
        let mut leader = node(vec![1, 2, 3]);
        leader.campaign().unwrap();
        leader.raft.become_leader();
        assert!(admitted(&mut g, &leader, 3));
        assert!(!admitted(&mut g, &leader, 4));
    }
}
