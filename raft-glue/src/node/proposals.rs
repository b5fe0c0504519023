//! Proposals: commands and membership changes on their way into the log, and the callers
//! waiting for them.
//!
//! What a proposer is told (the guarantee):
//! - `Ok(Applied)`: its own entry — the one carrying its request id (`ids.rs`) — committed
//!   and was applied here, and the response is the state machine's for that entry;
//! - [`Error::NotLeader`], [`Error::Dropped`], [`Error::TooLarge`], [`Error::Busy`],
//!   [`Error::ConfChangeInProgress`]: nothing was appended; the command will never apply;
//! - [`Error::LeadershipLost`], [`Error::Timeout`], and a storage error that stops the node:
//!   the command may or may not commit.
//!
//! Commands queued in one round are proposed together in one `MsgPropose`, so the leader
//! sends one append per follower for all of them.

use std::collections::HashMap;

use raft::eraftpb::{ConfChangeV2, Entry, Message, MessageType};
use raft::{RawNode, StateRole, Storage};

use super::ids::{Ids, Kind};
use crate::error::Error;
use crate::mailbox::Reply;
use crate::metrics::{NodeMetrics, Refused};
use crate::types::Applied;

/// Proposals made by this node and not yet answered.
pub(crate) struct Proposals {
    ids: Ids,
    /// Appended to the log, by sequence number.
    pending: HashMap<u64, Reply>,
    /// Received this round, proposed together once the queue is drained.
    queued: Vec<(Vec<u8>, Reply)>,
    metrics: NodeMetrics,
}

impl Proposals {
    pub(crate) fn new(node: u64, metrics: NodeMetrics) -> Self {
        Proposals {
            ids: Ids::new(node),
            pending: HashMap::new(),
            queued: Vec::new(),
            metrics,
        }
    }

    /// A command for this round (refused at once on a follower).
    pub(crate) fn queue<S: Storage>(&mut self, node: &RawNode<S>, data: Vec<u8>, reply: Reply) {
        if node.raft.state != StateRole::Leader {
            self.metrics.refused(Refused::NotLeader, 1);
            reply.send(Err(not_leader(node)));
            return;
        }
        self.queued.push((data, reply));
    }

    /// Proposes every queued command in one `MsgPropose`.
    pub(crate) fn flush<S: Storage>(&mut self, node: &mut RawNode<S>) {
        let queued = std::mem::take(&mut self.queued);
        if queued.is_empty() {
            return;
        }
        let mut replies = Vec::with_capacity(queued.len());
        let entries: Vec<Entry> = queued
            .into_iter()
            .map(|(data, reply)| {
                let (seq, ctx) = self.ids.next(Kind::Proposal);
                replies.push((seq, reply));
                Entry {
                    data: data.into(),
                    context: ctx.into(),
                    ..Default::default()
                }
            })
            .collect();
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = node.raft.id;
        m.set_entries(entries.into());
        if node.raft.state == StateRole::Leader && node.raft.step(m).is_ok() {
            self.metrics.accepted.increment(replies.len() as u64);
            self.pending.extend(replies);
        } else {
            // Raft drops a round during a transfer, or beyond its uncommitted bytes.
            let e = if node.raft.state != StateRole::Leader {
                not_leader(node)
            } else if node.raft.lead_transferee.is_some() {
                Error::Dropped
            } else {
                Error::Busy
            };
            let why = match e {
                Error::Dropped => Refused::Dropped,
                Error::Busy => Refused::Busy,
                _ => Refused::NotLeader,
            };
            self.metrics.refused(why, replies.len() as u64);
            for (_, reply) in replies {
                reply.send(Err(e.clone()));
            }
        }
    }

    /// Proposes a membership change, refusing it at once if Raft would turn it into an empty
    /// entry (another change not yet applied, or a joint configuration not yet left).
    pub(crate) fn conf_change<S: Storage>(
        &mut self,
        node: &mut RawNode<S>,
        cc: ConfChangeV2,
        reply: Reply,
    ) {
        self.flush(node);
        let r = &node.raft;
        if r.state != StateRole::Leader {
            reply.send(Err(not_leader(node)));
            return;
        }
        let joint = !r.prs().conf().to_conf_state().voters_outgoing.is_empty();
        if r.has_pending_conf() || (joint && !cc.changes.is_empty()) {
            reply.send(Err(Error::ConfChangeInProgress));
            return;
        }
        let (seq, ctx) = self.ids.next(Kind::Proposal);
        match node.propose_conf_change(ctx, cc) {
            Err(_) => {
                reply.send(Err(Error::Dropped));
            }
            // Raft accepted it as a change only if it now waits for this very entry.
            Ok(()) if node.raft.pending_conf_index != node.raft.raft_log.last_index() => {
                reply.send(Err(Error::ConfChangeInProgress));
            }
            Ok(()) => {
                self.pending.insert(seq, reply);
            }
        }
    }

    /// Proposals waiting for their outcome.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len() + self.queued.len()
    }

    /// An entry was applied: answers its proposer if it is this node's (this start's).
    pub(crate) fn applied(&mut self, e: &Entry, response: Vec<u8>) {
        if let Some(seq) = self.ids.ours(Kind::Proposal, &e.context) {
            if let Some(reply) = self.pending.remove(&seq) {
                reply.send(Ok(Applied {
                    index: e.index,
                    response,
                }));
            }
        }
    }

    /// Leadership is lost: every pending proposal may or may not commit.
    pub(crate) fn leadership_lost(&mut self) {
        for (_, reply) in self.pending.drain() {
            reply.send(Err(Error::LeadershipLost));
        }
    }

    /// The node stops: every waiting caller gets `e`.
    pub(crate) fn fail_all(&mut self, e: &Error) {
        for (_, reply) in self.pending.drain() {
            reply.send(Err(e.clone()));
        }
        for (_, reply) in self.queued.drain(..) {
            reply.send(Err(e.clone()));
        }
    }
}

pub(crate) fn not_leader<S: Storage>(node: &RawNode<S>) -> Error {
    let l = node.raft.leader_id;
    Error::NotLeader {
        leader_hint: (l != 0 && l != node.raft.id).then_some(l),
    }
}
