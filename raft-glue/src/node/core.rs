//! The node's thread: the event loop and the `Ready` protocol.
//!
//! Per iteration: take every queued event (proposals and messages join the same round), tick
//! when due, then handle the `Ready` in the order raft-rs requires:
//! 1. send the leader's messages (it may replicate before its own fsync);
//! 2. install an accepted snapshot, then persist the round's entries (cutting a conflicting
//!    tail) and hard state in one batch;
//! 3. apply committed entries and answer their proposers;
//! 4. send the messages that acknowledge persisted state, only once it is durable;
//! 5. advance, then persist, send and apply what the light ready holds.
//!
//! A storage error stops the node: waiting callers get the error, later calls `Shutdown`.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfChangeType, ConfState, Entry, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use raftwal_snapshot::SnapshotStore;
use raftwal_wal::BatchStore;

use super::config::Config;
use super::guard::Guard;
use super::membership::MembershipState;
use super::persist::Job;
use super::proposals::Proposals;
use super::reads::Reads;
use super::snapshots::SnapshotState;
use crate::clock::Clock;
use crate::error::{Cause, Error, Result};
use crate::inbound::Backlog;
use crate::lock;
use crate::mailbox::Event;
use crate::state_machine::StateMachine;
use crate::storage::RaftStorage;
use crate::transport::Transport;
use crate::types::{DropReason, NodeEvent, Status};

/// Who hears of leadership and membership changes.
#[derive(Clone, Default)]
pub(crate) struct Subscribers(pub(crate) Arc<Mutex<Vec<Sender<NodeEvent>>>>);

impl Subscribers {
    fn publish(&self, ev: &NodeEvent) {
        lock(&self.0).retain(|s| s.send(ev.clone()).is_ok());
    }
}

/// Everything the node's thread owns.
pub(crate) struct Core<L: BatchStore, S: SnapshotStore, M, T> {
    pub(super) node: RawNode<RaftStorage<L, S>>,
    pub(super) sm: M,
    pub(super) transport: Arc<T>,
    /// The node's own event queue (for its helper threads to report back).
    pub(super) events: Sender<Event>,
    pub(super) cfg: Config,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) proposals: Proposals,
    pub(super) reads: Reads,
    pub(super) guard: Guard,
    pub(super) snapshots: SnapshotState,
    pub(super) membership: MembershipState,
    pub(super) applied: u64,
    pub(super) status: Arc<Mutex<Status>>,
    pub(super) subscribers: Subscribers,
    pub(super) was_leader: bool,
    /// Network messages handed over and not yet taken (shared with the mailboxes).
    pub(super) backlog: Arc<Backlog>,
    /// Messages dropped at the guard when status was last published.
    pub(super) dropped_seen: u64,
    /// With batching: rounds handed to the persistence thread.
    pub(super) persist: Option<Sender<Job>>,
    /// When the next tick is due (the node's clock).
    pub(super) next_tick: Instant,
    /// Its metrics.
    pub(super) metrics: crate::metrics::NodeMetrics,
}

/// Whether an event brings new entries to persist: a proposal, or a leader's append.
fn carries_entries(ev: &Event) -> bool {
    match ev {
        Event::Propose { .. } => true,
        Event::Step { msg, .. } => {
            msg.get_msg_type() == MessageType::MsgAppend && !msg.entries.is_empty()
        }
        _ => false,
    }
}

impl<L, S, M, T> Core<L, S, M, T>
where
    L: BatchStore + Send + 'static,
    S: SnapshotStore + Send + 'static,
    M: StateMachine,
    T: Transport,
{
    /// The Raft node (for test support that inspects it).
    #[cfg(feature = "testing")]
    pub(crate) fn raw(&self) -> &RawNode<RaftStorage<L, S>> {
        &self.node
    }

    /// The node's thread: turns until the node stops, then answers every waiting caller.
    pub(crate) fn run(&mut self, rx: &Receiver<Event>) {
        self.begin();
        let stop = loop {
            // Wait until the next tick by the clock (re-checked at least every tick of real
            // time, so a clock moved by hand is noticed).
            let wait = self
                .next_tick
                .saturating_duration_since(self.clock.now())
                .min(self.cfg.tick);
            if let Some(e) = self.turn(rx, wait) {
                break e;
            }
        };
        self.end(&stop);
    }

    /// Before the first turn.
    pub(crate) fn begin(&mut self) {
        let conf = self.node.raft.prs().conf().to_conf_state();
        self.publish_conf(&conf);
        self.next_tick = self.clock.now() + self.cfg.tick;
    }

    /// One iteration of the loop: waits up to `wait` for an event, takes every one queued,
    /// ticks when due, and handles the `Ready`. `Some` when the node stops.
    pub(crate) fn turn(&mut self, rx: &Receiver<Event>, wait: Duration) -> Option<Error> {
        let batch = self.cfg.batch_proposals;
        let mut stop = None;
        match rx.recv_timeout(wait) {
            Ok(ev) => {
                let mut proposals = usize::from(carries_entries(&ev));
                stop = self.handle(ev);
                // Everything already queued joins this round (one fsync for all of it), unless
                // batching is off: then a round takes one proposal (leader) or one append of
                // entries (follower), so every entry costs an fsync on every node.
                for _ in 0..1024 {
                    if stop.is_some() || (!batch && proposals > 0) {
                        break;
                    }
                    match rx.try_recv() {
                        Ok(ev) => {
                            proposals += usize::from(carries_entries(&ev));
                            stop = self.handle(ev);
                        }
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => stop = Some(Error::Shutdown),
        }
        self.proposals.flush(&mut self.node);
        if stop.is_some() {
            return stop;
        }
        let now = self.clock.now();
        if now >= self.next_tick {
            self.node.tick();
            // A whole tick after this one, never less: the lease argument (`reads.rs`) counts
            // on ticks being at least `tick` apart.
            self.next_tick = now + self.cfg.tick;
        }
        self.reads.poll(&mut self.node, now);
        self.maintain_membership();
        for id in self.transport.unreachable() {
            self.node.report_unreachable(id);
        }
        if let Err(e) = self.on_ready() {
            return Some(e);
        }
        // Received snapshots Raft did not install this round are stale: discard them.
        for r in self.snapshots.received.drain(..) {
            r.cancel();
        }
        self.maybe_snapshot();
        self.publish();
        None
    }

    /// After the last turn: every waiting caller gets `stop`.
    pub(crate) fn end(&mut self, stop: &Error) {
        self.proposals.fail_all(stop);
        self.reads.fail_all(stop);
        for w in self.snapshots.waiters.drain(..) {
            let _ = w.send(Err(stop.clone()));
        }
        // The storage is released when the node stops: wait for a snapshot being written.
        if let Some(t) = self.snapshots.writer.take() {
            let _ = t.join();
        }
        if *stop != Error::Shutdown {
            tracing::error!(node = self.node.raft.id, error = %stop, "the node stopped");
        }
        let mut s = lock(&self.status);
        s.stopped = true;
        s.stop_reason = Some(stop.clone());
    }

    fn handle(&mut self, ev: Event) -> Option<Error> {
        let now = self.clock.now();
        match ev {
            Event::Shutdown => return Some(Error::Shutdown),
            Event::Step { msg, peer, size } => {
                self.backlog.release(size);
                if self.guard.admit(&self.node, &msg, peer, now, false) {
                    self.metrics.received(msg.get_msg_type());
                    let _ = self.node.step(*msg);
                }
            }
            Event::SnapshotReceived { msg, data, peer } => {
                if self.guard.admit(&self.node, &msg, peer, now, true) {
                    self.metrics.received(msg.get_msg_type());
                    self.metrics.count_plain(crate::metrics::SNAPSHOTS_RECEIVED);
                    self.snapshots.received.push(data);
                    let _ = self.node.step(*msg);
                } else {
                    data.cancel();
                }
            }
            Event::SnapshotSent { to, ok } => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.node.report_snapshot(to, status);
            }
            Event::Snapshot(reply) => self.snapshots.waiters.push(reply),
            Event::SnapshotTaken(r) => return self.on_snapshot_taken(r).err(),
            Event::Persisted { number, msgs } => {
                self.send(msgs);
                self.node.on_persist_ready(number);
                self.advance_applied();
            }
            Event::PersistFailed(e) => return Some(Error::Storage(e)),
            Event::Transfer { to } => {
                self.proposals.flush(&mut self.node);
                if self.node.raft.state == StateRole::Leader {
                    self.reads.transfer_started(self.node.raft.term);
                    self.node.transfer_leader(to);
                }
            }
            Event::Read { request, deadline } => {
                self.reads
                    .request(&mut self.node, request, deadline, now, self.applied);
            }
            Event::ConfChange { cc, reply } => {
                let leader = self.node.raft.state == StateRole::Leader;
                let reused = cc.changes.iter().find(|c| {
                    leader
                        && c.get_change_type() != ConfChangeType::RemoveNode
                        && self.guard.was_removed(c.node_id)
                });
                match reused {
                    Some(c) => reply.send(Err(Error::IdRemoved { id: c.node_id })),
                    None => self.proposals.conf_change(&mut self.node, cc, reply),
                }
            }
            Event::Propose { data, reply } => self.proposals.queue(&self.node, data, reply),
        }
        None
    }

    pub(super) fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            self.metrics.sent(m.get_msg_type());
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.stream_snapshot(m);
            } else {
                self.transport.send(m);
            }
        }
    }

    /// Tells Raft how far the state machine has applied (never past what is durable here).
    fn advance_applied(&mut self) {
        let log = &self.node.raft.raft_log;
        let to = self.applied.min(log.persisted).min(log.committed);
        if to > log.applied {
            self.node.advance_apply_to(to);
        }
    }

    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        for e in entries {
            if e.index <= self.applied {
                continue; // covered by a snapshot restored meanwhile
            }
            match e.get_entry_type() {
                EntryType::EntryNormal => {
                    // Empty entries are a new leader's no-op or a barrier: nothing to apply.
                    let response = if e.data.is_empty() {
                        Vec::new()
                    } else {
                        self.sm.apply(e.index, &e.data)
                    };
                    self.proposals.applied(&e, response);
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&e)?;
                }
            }
            self.applied = e.index;
        }
        lock(&self.status).applied = self.applied;
        self.reads.applied(self.applied);
        Ok(())
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut rd = self.node.ready();
        self.send(rd.take_messages());
        let states = rd.take_read_states();
        self.reads.on_read_states(&self.node, states, self.applied);
        // A snapshot is durable and installed before the round's entries are written.
        if rd.snapshot().get_metadata().index != 0 {
            let meta = rd.snapshot().get_metadata().clone();
            self.install(&meta)?;
        }
        let storage_err =
            |e: crate::storage::Error| Error::Storage(Cause::with("writing a Ready round", e));
        if !rd.entries().is_empty() {
            self.metrics.round_entries.record(rd.entries().len() as f64);
        }
        let submitted = Instant::now();
        if let Some(persist) = &self.persist {
            // Asynchronous: the round is readable now and durable once the persistence thread
            // says so; only then go the messages that acknowledge it. Proposals keep joining
            // new rounds meanwhile, and one fsync covers every round queued.
            let ticket = self
                .node
                .store()
                .submit(rd.entries(), rd.hs())
                .map_err(storage_err)?;
            let job = Job {
                number: rd.number(),
                ticket,
                msgs: rd.take_persisted_messages(),
                submitted,
            };
            let persist = persist.clone();
            let committed = rd.take_committed_entries();
            self.node.advance_append_async(rd);
            persist
                .send(job)
                .map_err(|_| Error::Storage(Cause::new("the persistence thread stopped")))?;
            self.apply(committed)?;
            self.advance_applied();
            return Ok(());
        }
        self.node
            .store()
            .append(rd.entries(), rd.hs())
            .map_err(storage_err)?;
        self.metrics.persist.record(submitted.elapsed());
        self.apply(rd.take_committed_entries())?;
        self.send(rd.take_persisted_messages());
        let mut light = self.node.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.node.store().set_commit(commit).map_err(storage_err)?;
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        Ok(())
    }

    /// Publishes a configuration (sorted), before a conf change's proposer is answered.
    pub(super) fn publish_conf(&self, cs: &ConfState) {
        let sorted = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v
        };
        let (voters, learners, outgoing) = (
            sorted(&cs.voters),
            sorted(&cs.learners),
            sorted(&cs.voters_outgoing),
        );
        let mut s = lock(&self.status);
        if s.voters != voters || s.learners != learners || s.voters_outgoing != outgoing {
            s.voters.clone_from(&voters);
            s.learners.clone_from(&learners);
            s.voters_outgoing.clone_from(&outgoing);
            drop(s);
            tracing::info!(
                node = self.cfg.id,
                voters = ?voters,
                learners = ?learners,
                voters_outgoing = ?outgoing,
                "membership changed"
            );
            self.subscribers.publish(&NodeEvent::MembershipChanged {
                voters,
                learners,
                voters_outgoing: outgoing,
            });
        }
    }

    fn publish(&mut self) {
        let leader = self.node.raft.state == StateRole::Leader;
        if self.was_leader && !leader {
            self.proposals.leadership_lost();
            self.reads.leadership_lost(&self.node);
        }
        self.was_leader = leader;
        let r = &self.node.raft;
        // The configuration is published where it changes (a conf change applied, a snapshot
        // installed, start-up), not here on every iteration.
        let progress = if leader {
            let mut v: Vec<(u64, u64)> = r.prs().iter().map(|(id, p)| (*id, p.matched)).collect();
            v.sort_unstable();
            v
        } else {
            Vec::new()
        };
        let known = (r.leader_id != 0).then_some(r.leader_id);
        self.guard
            .count(DropReason::Backlog, self.backlog.take_dropped());
        let dropped: u64 = self.guard.dropped().values().sum();
        let mut s = lock(&self.status);
        let changed = (s.leader, s.term) != (known, r.term);
        let new_leader = s.leader != known;
        s.role = r.state.into();
        s.term = r.term;
        s.leader = known;
        s.commit = r.raft_log.committed;
        s.last_index = r.raft_log.last_index();
        s.progress = progress;
        s.pending_proposals = self.proposals.pending();
        s.pending_reads = self.reads.pending();
        if dropped != self.dropped_seen {
            s.dropped.clone_from(self.guard.dropped());
            self.dropped_seen = dropped;
        }
        drop(s);
        let m = &self.metrics;
        m.term.set(r.term as f64);
        m.role(r.state);
        m.commit.set(r.raft_log.committed as f64);
        m.applied.set(self.applied as f64);
        m.lag
            .set(r.raft_log.committed.saturating_sub(self.applied) as f64);
        if new_leader {
            m.leader_changes.increment(1);
            tracing::info!(node = r.id, term = r.term, leader = ?known, role = ?r.state, "leader changed");
        }
        if changed {
            self.subscribers.publish(&NodeEvent::LeaderChanged {
                leader: known,
                term: r.term,
            });
        }
    }
}
