//! Membership in a node: applying committed configuration changes exactly once (also across
//! restarts), a leader that removed itself handing over and stepping down, and a joint
//! configuration always left.
//!
//! A leader that is no longer a voter (in either half of the configuration) steps down the
//! moment it applies the change, after asking the most up-to-date voter to take over (the
//! request goes out if that voter has the whole log; otherwise the others elect a leader once
//! their election timeout passes). It must not lead on: raft-rs panics when a leader that is
//! not in its own progress set persists entries, and a removed node may not lead anyway.
//!
//! Exactly once across restarts: the stored configuration is the latest applied one, recorded
//! with the index of the change that produced it ([`RaftStorage::conf_index`]). Raft starts
//! from it, and the log is replayed from the snapshot's index; a change at or below the
//! recorded index is already part of the configuration, so the replay does not apply it
//! again (applying a joint change twice is an error in raft-rs).

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType};
use raft::{StateRole, INVALID_ID};
use raftwal_snapshot::SnapshotStore;
use raftwal_wal::BatchStore;

use super::core::Core;
use crate::error::{Cause, Error, Result};
use crate::state_machine::StateMachine;
use crate::transport::Transport;

#[cfg(doc)]
use crate::storage::RaftStorage;

/// A node's membership bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct MembershipState {
    /// Changes at or below this index are already in the configuration Raft started with.
    pub(crate) replayed_upto: u64,
}

impl<L, S, M, T> Core<L, S, M, T>
where
    L: BatchStore + Send + 'static,
    S: SnapshotStore + Send + 'static,
    M: StateMachine,
    T: Transport,
{
    /// Applies a committed configuration change (of either encoding), persists the new
    /// configuration with its index, publishes it, and answers its proposer. A change Raft
    /// refuses (it would remove every voter, say) is skipped, as on every other node.
    pub(super) fn apply_conf_change(&mut self, e: &Entry) -> Result<()> {
        self.learn_addresses(e);
        let cs = if e.index <= self.membership.replayed_upto {
            self.node.raft.prs().conf().to_conf_state()
        } else {
            let applied = match e.get_entry_type() {
                EntryType::EntryConfChange => {
                    let mut cc = ConfChange::default();
                    cc.merge_from_bytes(&e.data)
                        .ok()
                        .and_then(|()| self.node.apply_conf_change(&cc).ok())
                }
                _ => {
                    let mut cc = ConfChangeV2::default();
                    cc.merge_from_bytes(&e.data)
                        .ok()
                        .and_then(|()| self.node.apply_conf_change(&cc).ok())
                }
            };
            let cs = applied.unwrap_or_else(|| self.node.raft.prs().conf().to_conf_state());
            self.node
                .store()
                .set_conf_state_at(&cs, e.index)
                .map_err(|x| Error::Storage(Cause::with("recording the configuration", x)))?;
            self.refresh_removed()?;
            self.step_down_if_removed(&cs);
            cs
        };
        self.snapshots.conf_index = e.index;
        self.publish_conf(&cs);
        self.proposals.applied(e, Vec::new());
        Ok(())
    }

    /// Tells the guard which nodes left the configuration, as just recorded.
    pub(super) fn refresh_removed(&mut self) -> Result<()> {
        let removed = self
            .node
            .store()
            .removed_nodes()
            .map_err(|x| Error::Storage(Cause::with("reading the removed nodes", x)))?;
        self.guard.set_removed(removed);
        Ok(())
    }

    /// Hands the address a change adding a node carries (its context) to the transport.
    fn learn_addresses(&self, e: &Entry) {
        let (context, added): (Vec<u8>, Vec<u64>) = match e.get_entry_type() {
            EntryType::EntryConfChange => {
                let mut cc = ConfChange::default();
                if cc.merge_from_bytes(&e.data).is_err() {
                    return;
                }
                let adds = matches!(
                    cc.get_change_type(),
                    ConfChangeType::AddNode | ConfChangeType::AddLearnerNode
                );
                (
                    cc.context.to_vec(),
                    adds.then_some(cc.node_id).into_iter().collect(),
                )
            }
            _ => {
                let mut cc = ConfChangeV2::default();
                if cc.merge_from_bytes(&e.data).is_err() {
                    return;
                }
                let added = cc
                    .changes
                    .iter()
                    .filter(|c| c.get_change_type() != ConfChangeType::RemoveNode)
                    .map(|c| c.node_id)
                    .collect();
                (cc.context.to_vec(), added)
            }
        };
        if context.is_empty() {
            return;
        }
        for id in added {
            self.transport.set_address(id, &context);
        }
    }

    /// A leader that is a voter in neither half of `cs` hands over and steps down.
    fn step_down_if_removed(&mut self, cs: &ConfState) {
        let id = self.node.raft.id;
        if self.node.raft.state != StateRole::Leader
            || cs.voters.contains(&id)
            || cs.voters_outgoing.contains(&id)
        {
            return;
        }
        let term = self.node.raft.term;
        self.reads.transfer_started(term);
        let next = self
            .node
            .raft
            .prs()
            .iter()
            .filter(|(p, _)| cs.voters.contains(p))
            .max_by_key(|(_, pr)| pr.matched)
            .map(|(p, _)| *p);
        if let Some(to) = next {
            self.node.transfer_leader(to);
        }
        self.proposals.flush(&mut self.node);
        self.node.raft.become_follower(term, INVALID_ID);
    }

    /// Once per loop: a leader in a joint configuration with no change pending proposes to
    /// leave it (raft-rs leaves on its own only if the leader that entered it is still
    /// leading when it applies it).
    pub(super) fn maintain_membership(&mut self) {
        let r = &self.node.raft;
        // Only a joint configuration entered automatically is left automatically.
        if r.state != StateRole::Leader || !*r.prs().conf().auto_leave() {
            return;
        }
        let cs: ConfState = r.prs().conf().to_conf_state();
        if !cs.voters_outgoing.is_empty()
            && cs.auto_leave
            && r.commit_to_current_term()
            && !r.has_pending_conf()
        {
            let _ = self
                .node
                .propose_conf_change(Vec::new(), ConfChangeV2::default());
        }
    }
}
