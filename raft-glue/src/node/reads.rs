//! Reads: read-index requests and the leader lease. Nothing else touches either.
//!
//! # Read-index
//! A read is a read-index request to Raft, its context a read id ([`Kind::Read`]). Raft drops
//! a request in two cases, and the node never lets a caller wait for nothing:
//! - on a leader that has not yet committed an entry in its term, the request is parked here
//!   and issued once the leader has;
//! - on a follower that knows no leader, the caller gets [`Error::NotLeader`] at once.
//!
//! A request forwarded to the leader (by a follower), or whose heartbeat round was lost, is
//! issued again every retry interval; a request whose caller has given up is forgotten. A
//! leader that loses leadership answers its pending reads with [`Error::NotLeader`] (a read
//! changes nothing, so it can always be retried).
//!
//! # The lease
//! A leader serves a read from its commit index without a quorum round while it holds a lease.
//! Claim: while leader L's lease holds, no other node can have become leader, so no write can
//! have committed that L's commit index does not cover. The argument:
//!
//! 1. L renews its lease with a read-index round (a heartbeat carrying the read's context),
//!    first issued at time t on L's clock, in term T. Its lease runs to t + lease once a
//!    quorum Q has acknowledged that round. Each member f of Q handled the heartbeat at a real
//!    time after t and, doing so, reset its election timer (raft-rs sets `election_elapsed` to
//!    0 on a heartbeat from its leader).
//! 2. f neither votes nor pre-votes for another node until `election_elapsed` reaches
//!    `election_ticks` (raft-rs's in-lease check; `check_quorum` is on), unless the request is
//!    a leadership transfer's (see 5). The node ticks at least `tick` apart on its clock
//!    (`core.rs` schedules the next tick a whole tick after the last), and the first tick may
//!    come at once: that is at least (election_ticks − 1) × tick on f's clock.
//! 3. A node that restarts has forgotten when it last heard from a leader: it ignores vote and
//!    pre-vote requests for a whole election timeout after it starts (`guard.rs`), which
//!    outlasts any promise it made before.
//! 4. Clocks: each runs within ρ = [`MAX_CLOCK_DRIFT`](super::config::MAX_CLOCK_DRIFT) of real
//!    time, so f's wait lasts at least (election_ticks − 1) × tick / (1 + ρ) of real time and
//!    L's lease at most lease / (1 − ρ). [`Config::validate`](crate::Config::validate) requires
//!    lease < (election_ticks − 1) × tick × (1 − ρ) / (1 + ρ): L's lease ends before any f in
//!    Q may vote for another node, and a new leader needs the votes of a quorum, which
//!    intersects Q. The default clock counts time while the machine is suspended
//!    (`CLOCK_BOOTTIME`), so a leader waking from a suspend does not find its lease fresh.
//! 5. A leadership transfer makes followers vote at once: the transferee campaigns with
//!    `CAMPAIGN_TRANSFER`, which overrides 2. Once L starts a transfer in term T it trusts no
//!    lease for the rest of term T — not only while the transfer is pending, because a
//!    `MsgTimeoutNow` delayed in the network can start the transferee's campaign after L gave
//!    the transfer up. Its reads go through read-index instead.
//! 6. L also needs to have committed an entry in its term, so that its commit index covers
//!    everything earlier leaders committed.
//!
//! A round counts for the lease only if L was leader of the same term when it issued it and
//! when the quorum answered, and from the time it was *first* issued (a retried round may be
//! answered by a follower that saw only the first heartbeat).

use std::collections::HashMap;
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant};

use raft::{RawNode, ReadState, StateRole, Storage};

use super::ids::{Ids, Kind};
use super::proposals::not_leader;
use crate::error::{Error, Result};
use crate::mailbox::ReadRequest;
use crate::metrics::NodeMetrics;
use crate::types::{ReadPoint, ReadVia};

/// Who waits for a read point.
enum Waiter {
    /// `read_index`, or with `leader_only` `verify_leader` (which needs no apply).
    Index {
        reply: SyncSender<Result<u64>>,
        leader_only: bool,
    },
    /// `lease_read` that went through read-index.
    Lease(SyncSender<Result<ReadPoint>>),
    /// A round that only renews the lease.
    Renew,
}

impl Waiter {
    fn ok(self, index: u64, via: ReadVia) {
        match self {
            Waiter::Index { reply, .. } => {
                let _ = reply.send(Ok(index));
            }
            Waiter::Lease(reply) => {
                let _ = reply.send(Ok(ReadPoint { index, via }));
            }
            Waiter::Renew => {}
        }
    }

    fn err(self, e: Error) {
        match self {
            Waiter::Index { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            Waiter::Lease(reply) => {
                let _ = reply.send(Err(e));
            }
            Waiter::Renew => {}
        }
    }

    /// Whether the caller needs the state machine to have applied the read point.
    fn needs_apply(&self) -> bool {
        !matches!(
            self,
            Waiter::Index {
                leader_only: true,
                ..
            } | Waiter::Renew
        )
    }
}

impl From<ReadRequest> for Waiter {
    fn from(r: ReadRequest) -> Self {
        match r {
            ReadRequest::Index { reply, leader_only } => Waiter::Index { reply, leader_only },
            ReadRequest::Lease(reply) => Waiter::Lease(reply),
        }
    }
}

/// A read-index request.
struct Pending {
    waiter: Waiter,
    /// When the caller stops waiting (real time); `None` for lease renewals.
    deadline: Option<Instant>,
    /// When it was first issued to Raft (the node's clock), and in which term as leader
    /// (`None` if this node was not the leader).
    first_issued: Option<(Instant, Option<u64>)>,
    /// When it was last issued (the node's clock).
    last_issued: Instant,
    /// Its context.
    ctx: Vec<u8>,
}

/// The leader lease.
#[derive(Debug, Default)]
struct Lease {
    /// Its length (zero: no lease reads).
    duration: Duration,
    /// Valid until then, in this term.
    until: Option<(u64, Instant)>,
    /// The last term in which this node started a leadership transfer.
    transferred_in: Option<u64>,
}

impl Lease {
    fn holds<S: Storage>(&self, node: &RawNode<S>, now: Instant) -> bool {
        let r = &node.raft;
        r.state == StateRole::Leader
            && r.lead_transferee.is_none()
            && self.transferred_in != Some(r.term)
            && r.commit_to_current_term()
            && self.until.is_some_and(|(t, u)| t == r.term && now < u)
    }

    /// A quorum answered a round first issued at `at` in `term` (as leader).
    fn extend<S: Storage>(&mut self, node: &RawNode<S>, at: Instant, term: u64) {
        let r = &node.raft;
        if self.duration.is_zero()
            || r.state != StateRole::Leader
            || r.term != term
            || self.transferred_in == Some(term)
        {
            return;
        }
        let until = at + self.duration;
        self.until = Some(match self.until {
            Some((t, u)) if t == term => (term, u.max(until)),
            _ => (term, until),
        });
    }
}

/// Every read in flight on a node, and its lease.
pub(crate) struct Reads {
    ids: Ids,
    lease: Lease,
    /// Issued to Raft, by sequence number.
    pending: HashMap<u64, Pending>,
    /// Waiting for this leader's first commit in its term.
    parked: Vec<Pending>,
    /// Read points waiting for the state machine to apply up to them.
    waits: Vec<(u64, Waiter, ReadVia)>,
    /// Unanswered requests are issued again this often.
    retry: Duration,
    /// A leader renews its lease this often.
    renew_every: Duration,
    next_renewal: Option<Instant>,
    metrics: NodeMetrics,
}

impl Reads {
    pub(crate) fn new(
        node: u64,
        lease: Duration,
        heartbeat: Duration,
        metrics: NodeMetrics,
    ) -> Self {
        Reads {
            ids: Ids::new(node),
            lease: Lease {
                duration: lease,
                ..Lease::default()
            },
            pending: HashMap::new(),
            parked: Vec::new(),
            waits: Vec::new(),
            retry: heartbeat * 2,
            renew_every: heartbeat,
            next_renewal: None,
            metrics,
        }
    }

    /// A caller's read: served under the lease if it holds (for `lease_read`), else through
    /// read-index.
    pub(crate) fn request<S: Storage>(
        &mut self,
        node: &mut RawNode<S>,
        request: ReadRequest,
        deadline: Instant,
        now: Instant,
        applied: u64,
    ) {
        let waiter = Waiter::from(request);
        if let Waiter::Index {
            leader_only: true, ..
        } = waiter
        {
            if node.raft.state != StateRole::Leader {
                waiter.err(not_leader(node));
                return;
            }
        }
        if matches!(waiter, Waiter::Lease(_)) {
            if self.lease.holds(node, now) {
                self.metrics.reads_lease.increment(1);
                let index = node.raft.raft_log.committed;
                self.wait_applied(index, waiter, ReadVia::Lease, applied);
                return;
            }
            let term = node.raft.term;
            if self.lease.until.is_some_and(|(t, u)| t == term && now >= u) {
                self.metrics.lease_expiries.increment(1);
            }
        }
        self.start(node, waiter, Some(deadline), now);
    }

    fn start<S: Storage>(
        &mut self,
        node: &mut RawNode<S>,
        waiter: Waiter,
        deadline: Option<Instant>,
        now: Instant,
    ) {
        let (seq, ctx) = self.ids.next(Kind::Read);
        let p = Pending {
            waiter,
            deadline,
            first_issued: None,
            last_issued: now,
            ctx,
        };
        if node.raft.state == StateRole::Leader && !node.raft.commit_to_current_term() {
            self.parked.push(p);
            return;
        }
        if node.raft.state != StateRole::Leader && node.raft.leader_id == 0 {
            p.waiter.err(not_leader(node));
            return;
        }
        self.issue(node, seq, p, now);
    }

    fn issue<S: Storage>(&mut self, node: &mut RawNode<S>, seq: u64, mut p: Pending, now: Instant) {
        let leader = node.raft.state == StateRole::Leader;
        p.first_issued
            .get_or_insert((now, leader.then_some(node.raft.term)));
        p.last_issued = now;
        node.read_index(p.ctx.clone());
        self.pending.insert(seq, p);
    }

    /// Housekeeping, once per loop: renew the lease, issue parked reads once the leader has
    /// committed in its term, re-issue unanswered ones, fail what cannot succeed, forget what
    /// nobody waits for.
    pub(crate) fn poll<S: Storage>(&mut self, node: &mut RawNode<S>, now: Instant) {
        let real = Instant::now();
        let leader = node.raft.state == StateRole::Leader;
        // Renewals only once the leader has committed in its term: a lease needs that anyway,
        // and parked renewals would pile up.
        if leader && !self.lease.duration.is_zero() && node.raft.commit_to_current_term() {
            if self.next_renewal.is_none_or(|t| now >= t) {
                self.next_renewal = Some(now + self.renew_every);
                self.start(node, Waiter::Renew, None, now);
            }
        } else {
            self.next_renewal = None;
        }
        let expired = |p: &Pending| p.deadline.is_some_and(|d| real >= d);
        for p in self.parked.extract_if(.., |p| expired(p)) {
            p.waiter.err(Error::ReadTimeout);
        }
        if leader && node.raft.commit_to_current_term() {
            for p in std::mem::take(&mut self.parked) {
                let seq = self.seq_of(&p.ctx);
                self.issue(node, seq, p, now);
            }
        }
        let no_leader = !leader && node.raft.leader_id == 0;
        let (retry, mut again) = (self.retry, Vec::new());
        self.pending.retain(|seq, p| {
            if expired(p) {
                std::mem::replace(&mut p.waiter, Waiter::Renew).err(Error::ReadTimeout);
                return false;
            }
            if p.deadline.is_none() && now >= p.last_issued + retry {
                return false;
            }
            if now >= p.last_issued + retry {
                again.push(*seq);
            }
            true
        });
        if no_leader {
            let e = not_leader(node);
            for (_, p) in self.pending.drain() {
                p.waiter.err(e.clone());
            }
            return;
        }
        for seq in again {
            if let Some(p) = self.pending.get_mut(&seq) {
                p.last_issued = now;
                node.read_index(p.ctx.clone());
            }
        }
    }

    fn seq_of(&self, ctx: &[u8]) -> u64 {
        self.ids.ours(Kind::Read, ctx).unwrap_or(0)
    }

    /// Raft's answers: read points (and lease renewals).
    pub(crate) fn on_read_states<S: Storage>(
        &mut self,
        node: &RawNode<S>,
        states: Vec<ReadState>,
        applied: u64,
    ) {
        for rs in states {
            let Some(seq) = self.ids.ours(Kind::Read, &rs.request_ctx) else {
                continue;
            };
            let Some(p) = self.pending.remove(&seq) else {
                continue;
            };
            if let Some((at, Some(term))) = p.first_issued {
                self.lease.extend(node, at, term);
            }
            if !matches!(p.waiter, Waiter::Renew) {
                self.metrics.reads_index.increment(1);
            }
            self.wait_applied(rs.index, p.waiter, ReadVia::ReadIndex, applied);
        }
    }

    fn wait_applied(&mut self, index: u64, waiter: Waiter, via: ReadVia, applied: u64) {
        if !waiter.needs_apply() || index <= applied {
            waiter.ok(index, via);
        } else {
            self.waits.push((index, waiter, via));
        }
    }

    /// Answers the read points the state machine has now reached.
    pub(crate) fn applied(&mut self, applied: u64) {
        if self.waits.is_empty() {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.waits)
            .into_iter()
            .partition(|(index, _, _)| *index <= applied);
        self.waits = waiting;
        for (index, w, via) in ready {
            w.ok(index, via);
        }
    }

    /// This node started a leadership transfer in `term`: no lease for the rest of it.
    pub(crate) fn transfer_started(&mut self, term: u64) {
        self.lease.transferred_in = Some(term);
        self.lease.until = None;
    }

    /// This node stopped leading: its reads fail (they can be retried), its lease is gone.
    pub(crate) fn leadership_lost<S: Storage>(&mut self, node: &RawNode<S>) {
        self.lease.until = None;
        let e = not_leader(node);
        for p in self.parked.drain(..) {
            p.waiter.err(e.clone());
        }
        self.pending.retain(|_, p| {
            if p.first_issued.is_some_and(|(_, term)| term.is_some()) {
                std::mem::replace(&mut p.waiter, Waiter::Renew).err(e.clone());
                false
            } else {
                true
            }
        });
    }

    /// Reads in flight in any state.
    pub(crate) fn pending(&self) -> usize {
        self.pending.len() + self.parked.len() + self.waits.len()
    }

    /// The node stops: every waiting caller gets `e`.
    pub(crate) fn fail_all(&mut self, e: &Error) {
        for p in self.parked.drain(..) {
            p.waiter.err(e.clone());
        }
        for (_, p) in self.pending.drain() {
            p.waiter.err(e.clone());
        }
        for (_, w, _) in self.waits.drain(..) {
            w.err(e.clone());
        }
    }
}
