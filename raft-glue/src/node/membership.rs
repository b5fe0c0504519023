//! Membership in a node: applying committed configuration changes exactly once (also across
//! restarts), a leader that removed itself handing over until another node leads, and a joint
//! configuration always left.
//!
//! Exactly once across restarts: the stored configuration is the latest applied one, recorded
//! with the index of the change that produced it ([`RaftStorage::conf_index`]). Raft starts
//! from it, and the log is replayed from the snapshot's index; a change at or below the
//! recorded index is already part of the configuration, so the replay does not apply it
//! again (applying a joint change twice is an error in raft-rs).

use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, ConfState, Entry, EntryType};
use raft::{StateRole, INVALID_ID};
use raftwal_snapshot::SnapshotStore;
use raftwal_wal::BatchStore;

use super::core::Core;
use crate::error::{Error, Result};
use crate::state_machine::StateMachine;
use crate::transport::Transport;

#[cfg(doc)]
use crate::storage::RaftStorage;

/// A node's membership bookkeeping.
#[derive(Debug, Default)]
pub(crate) struct MembershipState {
    /// Changes at or below this index are already in the configuration Raft started with.
    pub(crate) replayed_upto: u64,
    /// When this leader applied its own removal (it hands over, then steps down).
    pub(crate) removed_at: Option<Instant>,
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
                .map_err(|x| Error::Storage(x.to_string()))?;
            cs
        };
        self.snapshots.conf_index = e.index;
        self.publish_conf(&cs);
        self.proposals.applied(e, Vec::new());
        Ok(())
    }

    /// Once per loop: a leader that is no longer a voter hands leadership over (again, if a
    /// hand-off fails) and steps down if none succeeds within two election timeouts; a leader
    /// in a joint configuration with no change pending proposes to leave it (raft-rs leaves
    /// on its own only if the leader that entered it is still leading when it applies it).
    pub(super) fn maintain_membership(&mut self, now: Instant) {
        let leader = self.node.raft.state == StateRole::Leader;
        let cs: ConfState = self.node.raft.prs().conf().to_conf_state();
        let id = self.node.raft.id;
        if !leader || cs.voters.contains(&id) {
            self.membership.removed_at = None;
        } else {
            let since = *self.membership.removed_at.get_or_insert(now);
            let term = self.node.raft.term;
            self.reads.transfer_started(term);
            if now >= since + self.election_timeout() * 2 {
                self.proposals.flush(&mut self.node);
                self.node.raft.become_follower(term, INVALID_ID);
                return;
            }
            if self.node.raft.lead_transferee.is_none() {
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
            }
            return;
        }
        let r = &self.node.raft;
        if leader
            && !cs.voters_outgoing.is_empty()
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
