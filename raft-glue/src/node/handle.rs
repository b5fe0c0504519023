//! [`Node`]: the handle applications hold on a running node.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::eraftpb::{ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState};
use raft::RawNode;
use raftwal_snapshot::{SnapshotMeta, SnapshotStore};
use raftwal_wal::BatchStore;

use super::config::Config;
use super::core::{Core, Subscribers};
use super::guard::Guard;
use super::membership::MembershipState;
use super::persist::persist_loop;
use super::proposals::Proposals;
use super::reads::Reads;
use super::snapshots::SnapshotState;
use crate::error::{Cause, Error, Result};
use crate::inbound::{Backlog, SnapshotGate};
use crate::lock;
use crate::mailbox::{Event, Mailbox, ReadRequest, Reply};
use crate::metrics::Refused;
use crate::snapshot::{self, Inbox, StoreInbox};
use crate::state_machine::StateMachine;
use crate::storage::RaftStorage;
use crate::transport::Transport;
use crate::types::{Applied, Membership, NodeEvent, Proposal, ReadPoint, Role, Status};

/// A running Raft node: a raft-rs `RawNode` on a thread of its own (the loop is described in
/// `core.rs`), with a persistence thread.
pub struct Node {
    id: u64,
    tx: Sender<Event>,
    inbox: Arc<dyn Inbox>,
    backlog: Arc<Backlog>,
    gate: Arc<SnapshotGate>,
    status: Arc<Mutex<Status>>,
    subscribers: Subscribers,
    max_command_size: usize,
    max_learner_lag: u64,
    /// Proposals answered not yet (bounded by `max_pending`).
    inflight: Arc<AtomicUsize>,
    max_pending: usize,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The persistence thread; it ends once the node's thread (its only job source) has.
    persister: Mutex<Option<JoinHandle<()>>>,
    /// The node's series (proposals refused here are counted here).
    metrics: crate::metrics::NodeMetrics,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Starts a node: bootstraps empty storage with `cfg.peers` as the voters, or restarts
    /// from what the storage holds: `sm` is restored from the latest snapshot (whose index is
    /// the applied index it records), then the committed log after it is re-applied. A node
    /// that restarts grants no vote for a whole election timeout (see the lease argument).
    ///
    /// # Errors
    /// [`Error::Config`] if the configuration is invalid ([`Config::validate`]) or a message it
    /// may build exceeds what `transport` carries; [`Error::Storage`] if the storage cannot be
    /// read or bootstrapped, or the snapshot cannot be restored.
    pub fn start<L, S, M, T>(
        cfg: Config,
        sm: M,
        storage: RaftStorage<L, S>,
        transport: T,
    ) -> Result<Node>
    where
        L: BatchStore + Send + 'static,
        S: SnapshotStore + Send + 'static,
        S::Sink: 'static,
        M: StateMachine,
        T: Transport,
    {
        let (mut core, rx, mut node) = assemble(cfg, sm, storage, transport)?;
        let id = node.id;
        let spawn_err = |what: &str, e| Error::Spawn(Cause::with(what, e));
        if core.cfg.batch_proposals {
            let (jobs_tx, jobs_rx) = mpsc::channel();
            let (log, events) = (core.node.store().log_handle(), node.tx.clone());
            let latency = core.metrics.persist.clone();
            node.persister = Mutex::new(Some(
                std::thread::Builder::new()
                    .name(format!("raftwal-persist-{id}"))
                    .spawn(move || persist_loop(log.as_ref(), &jobs_rx, &events, &latency))
                    .map_err(|e| spawn_err("the persistence thread", e))?,
            ));
            core.persist = Some(jobs_tx);
        }
        let thread = std::thread::Builder::new()
            .name(format!("raftwal-node-{id}"))
            .spawn(move || {
                // raft-rs panics on some storage errors (for example a failed read of a term):
                // contain it so the node stops cleanly instead of vanishing.
                let (stopped, id) = (core.status.clone(), core.cfg.id);
                let run = std::panic::AssertUnwindSafe(|| core.run(&rx));
                if let Err(p) = std::panic::catch_unwind(run) {
                    let what = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_string()))
                        .unwrap_or_default();
                    tracing::error!(node = id, panic = %what, "the node stopped on a panic");
                    let mut s = lock(&stopped);
                    s.stopped = true;
                    s.stop_reason = Some(Error::Panicked(what));
                }
            })
            .map_err(|e| spawn_err("the node's thread", e))?;
        node.thread = Mutex::new(Some(thread));
        Ok(node)
    }

    /// The mailbox a transport delivers this node's messages to.
    pub fn mailbox(&self) -> Mailbox {
        Mailbox {
            tx: self.tx.clone(),
            inbox: self.inbox.clone(),
            backlog: self.backlog.clone(),
            gate: self.gate.clone(),
        }
    }

    /// A channel of leadership and membership changes from now on (dropped receivers are
    /// forgotten).
    pub fn subscribe(&self) -> Receiver<NodeEvent> {
        let (tx, rx) = mpsc::channel();
        lock(&self.subscribers.0).push(tx);
        rx
    }

    /// Takes a snapshot of the state machine now (or joins the one being taken), and returns
    /// once it is durable and the log is compacted below it. With nothing applied since the
    /// last snapshot, returns that one.
    ///
    /// # Errors
    /// [`Error::Snapshot`] if the state machine or the store fails (the node keeps running);
    /// [`Error::Timeout`]; [`Error::Shutdown`]; [`Error::Storage`] if compaction fails.
    pub fn snapshot(&self, timeout: Duration) -> Result<SnapshotMeta> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.call(Event::Snapshot(reply), &rx, timeout)
    }

    /// Replicates `command`, and returns once it is committed and applied here, with the state
    /// machine's response.
    ///
    /// # Errors
    /// [`Error::NotLeader`] (with a hint) on a follower; [`Error::Timeout`];
    /// [`Error::LeadershipLost`]; [`Error::Dropped`]; [`Error::Shutdown`]; [`Error::Storage`].
    pub fn apply(&self, command: Vec<u8>, timeout: Duration) -> Result<Applied> {
        self.propose(command)?.wait(timeout)
    }

    /// Replicates `command` without waiting: the returned [`Proposal`] gives the outcome
    /// [`Node::apply`] would have, when it is known. Many proposals in flight from one thread
    /// share rounds (and fsyncs) just as proposals from many threads do.
    ///
    /// # Errors
    /// [`Error::TooLarge`] for a command over [`Config::max_command_size`]; [`Error::Busy`]
    /// while [`Config::max_pending_proposals`] proposals await their outcome;
    /// [`Error::Shutdown`] if the node has stopped; every other outcome comes through the
    /// proposal.
    pub fn propose(&self, command: Vec<u8>) -> Result<Proposal> {
        self.admit(&command)?;
        let (tx, rx) = mpsc::sync_channel(1);
        let reply = Reply::new(tx, self.inflight.clone());
        self.tx
            .send(Event::Propose {
                data: command,
                reply,
            })
            .map_err(|_| Error::Shutdown)?;
        Ok(Proposal(rx))
    }

    /// As [`Node::propose`], with the outcome handed to `done` instead of a [`Proposal`]:
    /// `done` is called once, on the node's thread, when the outcome is known (so it must be
    /// quick: pass the outcome on to another thread). For event-driven callers that wait for
    /// many commands at once.
    ///
    /// # Errors
    /// As [`Node::propose`]; `done` is not called then.
    pub fn propose_with(
        &self,
        command: Vec<u8>,
        done: impl FnOnce(Result<Applied>) + Send + 'static,
    ) -> Result<()> {
        self.admit(&command)?;
        let reply = Reply::callback(Box::new(done), self.inflight.clone());
        self.tx
            .send(Event::Propose {
                data: command,
                reply,
            })
            .map_err(|_| Error::Shutdown)
    }

    /// The checks a command passes before it is queued: its size, the in-flight bound.
    fn admit(&self, command: &[u8]) -> Result<()> {
        if command.len() > self.max_command_size {
            self.metrics.refused(Refused::TooLarge, 1);
            return Err(Error::TooLarge {
                size: command.len(),
                max: self.max_command_size,
            });
        }
        if self.inflight.load(Ordering::SeqCst) >= self.max_pending {
            self.metrics.refused(Refused::Busy, 1);
            return Err(Error::Busy);
        }
        Ok(())
    }

    /// The node's current status.
    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    /// The leader this node knows of.
    pub fn leader(&self) -> Option<u64> {
        self.status().leader
    }

    /// This node's role.
    pub fn role(&self) -> Role {
        self.status().role
    }

    fn call<R>(&self, ev: Event, rx: &Receiver<Result<R>>, timeout: Duration) -> Result<R> {
        self.tx.send(ev).map_err(|_| Error::Shutdown)?;
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Shutdown),
        }
    }

    /// Sends a read and waits for its outcome; the node forgets it once `timeout` has passed.
    fn read<R>(
        &self,
        request: ReadRequest,
        rx: &Receiver<Result<R>>,
        timeout: Duration,
    ) -> Result<R> {
        let deadline = Instant::now() + timeout;
        match self.call(Event::Read { request, deadline }, rx, timeout) {
            Err(Error::Timeout) => Err(Error::ReadTimeout),
            r => r,
        }
    }

    /// A linearizable read point: returns an index once this node's state machine has applied
    /// at least up to it, with the leader's leadership confirmed by a quorum after the call
    /// began (Raft's read-index). Works on followers too (the leader is asked). On a leader
    /// that has not yet committed an entry in its term, the read waits for that commit.
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a follower that knows no leader, or when this node loses
    /// leadership (a read never changes anything: retry it); [`Error::ReadTimeout`];
    /// [`Error::Shutdown`].
    pub fn read_index(&self, timeout: Duration) -> Result<u64> {
        let (reply, rx) = mpsc::sync_channel(1);
        let request = ReadRequest::Index {
            reply,
            leader_only: false,
        };
        self.read(request, &rx, timeout)
    }

    /// A linearizable read point served locally while this leader holds its lease (see
    /// [`Config::lease`]); otherwise through read-index. The result says which.
    ///
    /// # Errors
    /// As [`Node::read_index`].
    pub fn lease_read(&self, timeout: Duration) -> Result<ReadPoint> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.read(ReadRequest::Lease(reply), &rx, timeout)
    }

    /// Confirms that this node is still the leader: a quorum acknowledged it after the call.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::ReadTimeout`], [`Error::Shutdown`].
    pub fn verify_leader(&self, timeout: Duration) -> Result<()> {
        let (reply, rx) = mpsc::sync_channel(1);
        let request = ReadRequest::Index {
            reply,
            leader_only: true,
        };
        self.read(request, &rx, timeout).map(drop)
    }

    /// Returns once every command accepted before it is committed and applied here.
    ///
    /// # Errors
    /// As [`Node::apply`].
    pub fn barrier(&self, timeout: Duration) -> Result<u64> {
        self.apply(Vec::new(), timeout).map(|a| a.index)
    }

    fn conf_change(&self, changes: Vec<(ConfChangeType, u64)>, timeout: Duration) -> Result<u64> {
        self.conf_change_with(changes, Vec::new(), timeout)
    }

    fn conf_change_with(
        &self,
        changes: Vec<(ConfChangeType, u64)>,
        context: Vec<u8>,
        timeout: Duration,
    ) -> Result<u64> {
        let mut cc = ConfChangeV2 {
            context: context.into(),
            ..Default::default()
        };
        for (t, id) in changes {
            let mut c = ConfChangeSingle::default();
            c.set_change_type(t);
            c.node_id = id;
            cc.mut_changes().push(c);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let reply = Reply::new(tx, self.inflight.clone());
        self.call(Event::ConfChange { cc, reply }, &rx, timeout)
            .map(|a| a.index)
    }

    /// Applies several membership changes at once by joint consensus (Raft's C_old,new, with
    /// `ConfChangeV2`): decisions need a quorum of the old voters and one of the new ones until
    /// the leader moves the cluster out of the joint configuration, which it does on its own
    /// once the change is applied. Returns once that has happened here, with the index of the
    /// change. (A single change takes effect directly, without a joint phase.)
    ///
    /// # Errors
    /// As [`Node::apply`]; [`Error::Timeout`] if the joint configuration is not left in time.
    pub fn change_membership(&self, changes: &[Membership], timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let changes = changes
            .iter()
            .map(|c| match *c {
                Membership::AddVoter(id) => (ConfChangeType::AddNode, id),
                Membership::AddLearner(id) => (ConfChangeType::AddLearnerNode, id),
                Membership::Remove(id) => (ConfChangeType::RemoveNode, id),
            })
            .collect();
        let index = self.conf_change(changes, timeout)?;
        self.poll_status(deadline, |s| {
            s.voters_outgoing.is_empty().then_some(Ok(index))
        })
    }

    /// Polls this node's status until `outcome` gives one, or `deadline` passes.
    fn poll_status<R>(
        &self,
        deadline: Instant,
        mut outcome: impl FnMut(&Status) -> Option<Result<R>>,
    ) -> Result<R> {
        loop {
            if let Some(r) = outcome(&self.status()) {
                return r;
            }
            if Instant::now() >= deadline {
                return Err(Error::Timeout);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Adds a non-voting learner (connect it to the transport first).
    ///
    /// # Errors
    /// As [`Node::apply`]; [`Error::ConfChangeInProgress`] while another change is pending.
    pub fn add_learner(&self, id: u64, timeout: Duration) -> Result<u64> {
        self.conf_change(vec![(ConfChangeType::AddLearnerNode, id)], timeout)
    }

    /// Adds a non-voting learner that listens at `address`: the address travels in the
    /// membership change, and every node hands it to its transport
    /// ([`Transport::set_address`]) when it applies the change (also when it replays it after
    /// a restart).
    ///
    /// # Errors
    /// As [`Node::add_learner`].
    pub fn add_learner_at(&self, id: u64, address: &str, timeout: Duration) -> Result<u64> {
        self.conf_change_with(
            vec![(ConfChangeType::AddLearnerNode, id)],
            address.as_bytes().to_vec(),
            timeout,
        )
    }

    /// As [`Node::add_voter`], for a node that listens at `address` (see
    /// [`Node::add_learner_at`]).
    ///
    /// # Errors
    /// As [`Node::add_voter`].
    pub fn add_voter_at(&self, id: u64, address: &str, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        if !self.status().learners.contains(&id) && !self.status().voters.contains(&id) {
            self.add_learner_at(id, address, timeout)?;
        }
        self.add_voter(id, deadline.saturating_duration_since(Instant::now()))
    }

    /// Adds a voter: first as a learner, promoted once its log is within
    /// [`Config::max_learner_lag`] entries of the leader's commit index, so a slow newcomer
    /// never weakens the quorum (and steady writes cannot starve the promotion).
    ///
    /// # Errors
    /// As [`Node::add_learner`]; [`Error::Timeout`] if it does not catch up in time.
    pub fn add_voter(&self, id: u64, timeout: Duration) -> Result<u64> {
        let deadline = Instant::now() + timeout;
        let left = || deadline.saturating_duration_since(Instant::now());
        if !self.status().learners.contains(&id) && !self.status().voters.contains(&id) {
            self.add_learner(id, left())?;
        }
        self.poll_status(deadline, |s| {
            if s.role != Role::Leader {
                return Some(Err(Error::NotLeader {
                    leader_hint: s.leader,
                }));
            }
            let matched = s.progress.iter().find(|p| p.0 == id).map_or(0, |p| p.1);
            (matched.saturating_add(self.max_learner_lag) >= s.commit).then_some(Ok(()))
        })?;
        self.conf_change(vec![(ConfChangeType::AddNode, id)], left())
    }

    /// Removes a voter or learner. A leader may remove itself: once the change is applied it
    /// asks the most up-to-date remaining voter to take over and steps down at once; it can
    /// then be shut down.
    ///
    /// # Errors
    /// As [`Node::apply`].
    pub fn remove_server(&self, id: u64, timeout: Duration) -> Result<u64> {
        self.conf_change(vec![(ConfChangeType::RemoveNode, id)], timeout)
    }

    /// Hands leadership to `to` and waits until this node sees `to` as leader.
    ///
    /// # Errors
    /// [`Error::NotLeader`] on a follower, [`Error::Timeout`], [`Error::Shutdown`].
    pub fn transfer_leadership(&self, to: u64, timeout: Duration) -> Result<()> {
        let s = self.status();
        if s.role != Role::Leader {
            return Err(Error::NotLeader {
                leader_hint: s.leader,
            });
        }
        self.tx
            .send(Event::Transfer { to })
            .map_err(|_| Error::Shutdown)?;
        let deadline = Instant::now() + timeout;
        self.poll_status(deadline, |s| (s.leader == Some(to)).then_some(Ok(())))
    }

    /// Stops the node and waits for its threads, so its storage is released when this
    /// returns. Idempotent.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Event::Shutdown);
        if let Some(t) = lock(&self.thread).take() {
            let _ = t.join();
        }
        if let Some(t) = lock(&self.persister).take() {
            let _ = t.join();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A node's parts, not yet running: its core (the loop's state), the loop's event queue, and
/// the handle (with no threads yet). Checks the configuration, bootstraps or restores the
/// storage and the state machine.
#[allow(clippy::type_complexity)]
pub(crate) fn assemble<L, S, M, T>(
    cfg: Config,
    mut sm: M,
    storage: RaftStorage<L, S>,
    transport: T,
) -> Result<(Core<L, S, M, T>, Receiver<Event>, Node)>
where
    L: BatchStore + Send + 'static,
    S: SnapshotStore + Send + 'static,
    S::Sink: 'static,
    M: StateMachine,
    T: Transport,
{
    cfg.validate()?;
    if cfg.max_message_size() > transport.max_message_size() {
        return Err(Error::Config(format!(
                "messages of up to {} bytes (commands of {}, appends of {}) exceed the transport's maximum of {}",
                cfg.max_message_size(),
                cfg.max_command_size,
                cfg.max_size_per_msg,
                transport.max_message_size()
            )));
    }
    // A brand-new node writes its initial membership into the log (a founding member) or
    // starts empty and learns it from the leader (a joiner). Either way the state machine
    // starts empty and the committed log is applied to it from the start.
    let restarted = storage
        .is_initialized()
        .map_err(|e| Error::storage("reading the stored state", e))?;
    if !restarted {
        storage
            .initialize(&ConfState {
                voters: cfg.peers.clone(),
                ..Default::default()
            })
            .map_err(|e| Error::storage("writing the initial configuration", e))?;
    }
    // The state machine starts from the latest snapshot: its index is the applied index.
    let mut applied = 0;
    let mut conf_index = 0;
    if let Some(m) = storage
        .recover_snapshot()
        .map_err(|e| Error::storage("finding the latest snapshot", e))?
    {
        snapshot::restore(storage.snapshots(), &mut sm, &m).map_err(Error::Storage)?;
        applied = m.index;
        conf_index = m.configuration_index;
    }
    let replayed_upto = storage
        .conf_index()
        .map_err(|e| Error::storage("reading the configuration index", e))?;
    let removed = storage
        .removed_nodes()
        .map_err(|e| Error::storage("reading the removed nodes", e))?;
    let raft_cfg = raft::Config {
        id: cfg.id,
        applied,
        election_tick: cfg.election_ticks,
        min_election_tick: cfg
            .campaign_ticks
            .as_ref()
            .map_or(cfg.election_ticks, |c| c.start),
        max_election_tick: cfg
            .campaign_ticks
            .as_ref()
            .map_or(2 * cfg.election_ticks, |c| c.end),
        heartbeat_tick: cfg.heartbeat_ticks,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: cfg.max_size_per_msg,
        max_inflight_msgs: cfg.max_inflight_msgs,
        max_uncommitted_size: cfg.max_uncommitted_size,
        ..Default::default()
    };
    raft_cfg
        .validate()
        .map_err(|e| Error::Config(e.to_string()))?;
    let logger = crate::log::raft_logger(cfg.id);
    let raw = RawNode::new(&raft_cfg, storage, &logger)
        .map_err(|e| Error::storage("starting Raft", e))?;
    let (tx, rx) = mpsc::channel();
    let status = Arc::new(Mutex::new(Status {
        id: cfg.id,
        applied,
        snapshot_index: applied,
        ..Status::default()
    }));
    let inbox: Arc<dyn Inbox> = Arc::new(StoreInbox(raw.store().snapshots_handle()));
    let backlog = Arc::new(Backlog::new(cfg.max_inbound_bytes));
    let subscribers = Subscribers::default();
    let now = cfg.clock.now();
    // A restarted node may have promised a leader, before it stopped, not to vote for
    // anyone else for an election timeout: it keeps that promise without remembering it.
    let quiet_until = if restarted {
        now + cfg.election_timeout()
    } else {
        now
    };
    let mut guard = Guard::new(cfg.id, quiet_until, cfg.max_term_gap);
    guard.set_removed(removed);
    let metrics = crate::metrics::NodeMetrics::new(cfg.id);
    let node_metrics = metrics.clone();
    let core = Core {
        node: raw,
        sm,
        transport: Arc::new(transport),
        events: tx.clone(),
        clock: cfg.clock.clone(),
        proposals: Proposals::new(cfg.id, metrics.clone()),
        reads: Reads::new(cfg.id, cfg.lease(), cfg.heartbeat(), metrics.clone()),
        guard,
        snapshots: SnapshotState {
            threshold: cfg.snapshot_threshold,
            trailing: cfg.trailing_entries,
            index: applied,
            attempted: applied,
            conf_index,
            ..SnapshotState::default()
        },
        membership: MembershipState { replayed_upto },
        applied,
        status: status.clone(),
        subscribers: subscribers.clone(),
        was_leader: false,
        dropped_seen: 0,
        backlog: backlog.clone(),
        metrics,
        persist: None,
        next_tick: now,
        cfg: cfg.clone(),
    };
    let node = Node {
        id: cfg.id,
        tx,
        inbox,
        backlog,
        gate: Arc::new(SnapshotGate::new(status.clone())),
        status,
        subscribers,
        max_command_size: cfg.max_command_size,
        max_learner_lag: cfg.max_learner_lag,
        inflight: Arc::default(),
        max_pending: cfg.max_pending_proposals,
        thread: Mutex::new(None),
        persister: Mutex::new(None),
        metrics: node_metrics,
    };
    Ok((core, rx, node))
}
