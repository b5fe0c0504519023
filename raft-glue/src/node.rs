//! `Node`: a Raft node on its own thread, driving a raft-rs `RawNode` over [`RaftStorage`].
//!
//! The loop, per iteration: take every queued event (proposals and messages join the same
//! round), tick when due, then handle the `Ready` in the order raft-rs requires:
//! 1. send the leader's messages (it may replicate before its own fsync);
//! 2. persist the round's entries (cutting a conflicting tail) and hard state in one batch;
//! 3. apply committed entries and answer their proposers;
//! 4. send the messages that acknowledge persisted state, only now;
//! 5. advance, then send and apply what the light ready holds.
//!
//! Snapshots (see [`crate::snapshot`]) are taken every [`Config::snapshot_threshold`] applied
//! entries or on demand, written on a thread of their own, and only then used to compact the
//! log. A leader streams a snapshot to a follower out of band through
//! [`Transport::send_snapshot`]; the follower installs it once Raft accepts it.
//!
//! A storage error stops the node: pending proposals get the error, later calls `Shutdown`.

use std::collections::HashMap;
use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use raft::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType,
    Message, MessageType, SnapshotMetadata,
};
use raft::{RawNode, SnapshotStatus, StateRole};
use raftwal_snapshot::{SnapshotMeta, SnapshotStore};
use raftwal_wal::BatchStore;

use crate::clock::{Clock, SystemClock};
use crate::snapshot::{self, Inbox, Received, StateSnapshot, StoreInbox};
use crate::storage::{encode_conf_state, RaftStorage};
use crate::transport::Transport;

/// The replicated state machine: applies committed commands, captures and restores its state.
pub trait StateMachine: Send + 'static {
    /// Applies the command committed at `index`; the result goes back to its proposer.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;

    /// Captures the state as of the last applied command. Called on the node's thread, so it
    /// should be quick (a copy-on-write handle, a clone); the returned snapshot is written out
    /// on another thread while later commands are applied.
    ///
    /// # Errors
    /// Any; the snapshot is skipped and retried after another threshold of entries.
    fn snapshot(&mut self) -> io::Result<Box<dyn StateSnapshot>>;

    /// Replaces the whole state with a snapshot's (written by [`StateSnapshot::persist`]).
    ///
    /// # Errors
    /// Any; the node does not start (or stops) then, since its state is unknown.
    fn restore(&mut self, data: &mut dyn Read) -> io::Result<()>;
}

/// How a node runs.
#[derive(Clone)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: u64,
    /// The voters of a brand-new cluster (used only to bootstrap empty storage).
    pub peers: Vec<u64>,
    /// The logical clock's period.
    pub tick: Duration,
    /// Ticks without a leader before an election (randomised up to twice this).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// The clock for ticks and the leader lease.
    pub clock: Arc<dyn Clock>,
    /// Let every proposal queued while a round was persisted join the next round, so one
    /// fsync covers all of them (default `true`). `false` takes one proposal (on a leader) or
    /// one append message (on a follower) per round, persisted synchronously: one fsync per
    /// proposal on every node (for measuring what batching buys).
    pub batch_proposals: bool,
    /// Take a snapshot every this many applied entries (0: only on demand). Default 8192.
    pub snapshot_threshold: u64,
    /// Entries kept in the log below a snapshot when compacting, so a follower slightly
    /// behind catches up from the log rather than with a whole snapshot. Default 1024.
    pub trailing_entries: u64,
}

impl Config {
    /// Defaults: 50 ms ticks, elections after 10 ticks, heartbeats every 2.
    pub fn new(id: u64, peers: Vec<u64>) -> Self {
        Config {
            id,
            peers,
            tick: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
            clock: Arc::new(SystemClock),
            batch_proposals: true,
            snapshot_threshold: 8192,
            trailing_entries: 1024,
        }
    }

    /// The leader lease: 80% of the shortest election timeout, counted from when a heartbeat
    /// round that a quorum acknowledged was sent. No follower can start an election before
    /// the full timeout has passed since it heard that round, so while the lease holds no other
    /// leader can exist (assuming clocks drift by less than 20% over one timeout).
    pub fn lease(&self) -> Duration {
        self.tick * self.election_ticks as u32 * 4 / 5
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("id", &self.id)
            .field("peers", &self.peers)
            .field("tick", &self.tick)
            .field("election_ticks", &self.election_ticks)
            .field("heartbeat_ticks", &self.heartbeat_ticks)
            .field("batch_proposals", &self.batch_proposals)
            .field("snapshot_threshold", &self.snapshot_threshold)
            .field("trailing_entries", &self.trailing_entries)
            .finish_non_exhaustive()
    }
}

/// How a read point was established.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadVia {
    /// Locally, under a valid leader lease (no message exchanged).
    Lease,
    /// Through Raft's read-index (a quorum round).
    ReadIndex,
}

/// A linearizable read point: the state machine has applied at least `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPoint {
    /// The index the state machine has applied up to (at least).
    pub index: u64,
    /// How it was established.
    pub via: ReadVia,
}

/// A node's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Following a leader (or waiting for one).
    #[default]
    Follower,
    /// Pre-voting before an election.
    PreCandidate,
    /// Campaigning.
    Candidate,
    /// Leading.
    Leader,
}

impl From<StateRole> for Role {
    fn from(r: StateRole) -> Self {
        match r {
            StateRole::Follower => Role::Follower,
            StateRole::PreCandidate => Role::PreCandidate,
            StateRole::Candidate => Role::Candidate,
            StateRole::Leader => Role::Leader,
        }
    }
}

/// A snapshot of a node's state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// This node.
    pub id: u64,
    /// Its role.
    pub role: Role,
    /// Its current term.
    pub term: u64,
    /// The leader it knows of.
    pub leader: Option<u64>,
    /// The commit index.
    pub commit: u64,
    /// The last index applied to the state machine.
    pub applied: u64,
    /// The last log index.
    pub last_index: u64,
    /// The index of the last snapshot taken or installed here (0: none).
    pub snapshot_index: u64,
    /// Whether the node has stopped (shut down, or stopped by an error).
    pub stopped: bool,
    /// The configuration: voters.
    pub voters: Vec<u64>,
    /// The configuration: learners.
    pub learners: Vec<u64>,
    /// While a joint configuration is in force (after [`Node::change_membership`]), the
    /// previous voters, whose quorum is also needed; empty otherwise.
    pub voters_outgoing: Vec<u64>,
    /// On a leader: each peer's id and matched log index.
    pub progress: Vec<(u64, u64)>,
}

/// A committed, applied command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// Its log index.
    pub index: u64,
    /// The state machine's response.
    pub response: Vec<u8>,
}

/// One change of [`Node::change_membership`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Add a voter (or promote a learner).
    AddVoter(u64),
    /// Add a learner (or demote a voter).
    AddLearner(u64),
    /// Remove a voter or learner.
    Remove(u64),
}

/// A command proposed with [`Node::propose`], on its way to being committed and applied.
#[derive(Debug)]
pub struct Proposal(Receiver<Result<Applied>>);

impl Proposal {
    /// Waits for the outcome.
    ///
    /// # Errors
    /// As [`Node::apply`]; [`Error::Timeout`] if it is not known in time (the command may
    /// still commit).
    pub fn wait(self, timeout: Duration) -> Result<Applied> {
        match self.0.recv_timeout(timeout) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => Err(Error::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(Error::Shutdown),
        }
    }

    /// The outcome if it is known, `None` while the command is still in flight.
    pub fn try_result(&self) -> Option<Result<Applied>> {
        match self.0.try_recv() {
            Ok(r) => Some(r),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => Some(Err(Error::Shutdown)),
        }
    }
}

/// What a node call can fail with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// This node is not the leader; `leader_hint` is the leader it knows of.
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader {
        /// The leader this node knows of, if any.
        leader_hint: Option<u64>,
    },
    /// No answer in time; the command may still commit.
    #[error("timed out; the command may or may not commit")]
    Timeout,
    /// Raft dropped the proposal (for example during a leadership transfer).
    #[error("the proposal was dropped by Raft")]
    Dropped,
    /// Leadership was lost before the command was applied; it may or may not commit.
    #[error("leadership lost before the command was applied; it may or may not commit")]
    LeadershipLost,
    /// The node is shut down.
    #[error("the node is shut down")]
    Shutdown,
    /// The node stopped on a storage error.
    #[error("storage error: {0}")]
    Storage(String),
    /// A snapshot could not be taken (the node keeps running).
    #[error("snapshot failed: {0}")]
    Snapshot(String),
}

/// A change a node announces to its subscribers ([`Node::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeEvent {
    /// The known leader or the term changed.
    LeaderChanged {
        /// The leader now known, if any.
        leader: Option<u64>,
        /// The current term.
        term: u64,
    },
    /// The configuration changed (sorted ids).
    MembershipChanged {
        /// Voters.
        voters: Vec<u64>,
        /// Learners.
        learners: Vec<u64>,
        /// In a joint configuration, the previous voters (empty otherwise).
        voters_outgoing: Vec<u64>,
    },
}

/// A node call's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

type Reply = SyncSender<Result<Applied>>;

enum Event {
    Propose {
        data: Vec<u8>,
        reply: Reply,
    },
    ConfChange {
        cc: ConfChangeV2,
        reply: Reply,
    },
    ReadIndex {
        reply: SyncSender<Result<u64>>,
        leader_only: bool,
    },
    LeaseRead {
        reply: SyncSender<Result<ReadPoint>>,
    },
    /// The persistence thread made round `number` durable: its messages may go now.
    Persisted {
        number: u64,
        msgs: Vec<Message>,
    },
    PersistFailed(String),
    Transfer {
        to: u64,
    },
    Step(Box<Message>),
    /// Take a snapshot now.
    Snapshot(SyncSender<Result<SnapshotMeta>>),
    /// The snapshot thread finished.
    SnapshotTaken(Result<SnapshotMeta, String>),
    /// A snapshot stream to a follower ended.
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    /// A leader's snapshot, received and verified, for Raft to accept (or not).
    SnapshotReceived {
        msg: Box<Message>,
        data: Box<dyn Received>,
    },
    Shutdown,
}

/// Where a transport delivers a node's incoming messages and snapshots.
#[derive(Clone)]
pub struct Mailbox {
    tx: Sender<Event>,
    inbox: Arc<dyn Inbox>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

impl Mailbox {
    /// Hands a message to the node (dropped if it has stopped).
    pub fn deliver(&self, msg: Message) {
        let _ = self.tx.send(Event::Step(Box::new(msg)));
    }

    /// Receives a snapshot a leader streams out of band: `msg` is its `MsgSnapshot` (the
    /// metadata), `meta` the sender's stored metadata, `data` the bytes. They are written into
    /// this node's snapshot store and checked against `meta`'s size and checksum, then Raft
    /// decides: the snapshot is committed and installed if it accepts it, discarded if not.
    /// Returns once the data is written and handed over.
    ///
    /// # Errors
    /// A message that is not the snapshot's, a short or damaged stream, the store's errors, or
    /// a stopped node; nothing is kept then.
    pub fn receive_snapshot(
        &self,
        msg: Message,
        meta: &SnapshotMeta,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let m = msg.get_snapshot().get_metadata();
        if msg.get_msg_type() != MessageType::MsgSnapshot
            || (m.index, m.term) != (meta.index, meta.term)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a {:?} for index {} (term {}) does not announce snapshot {} at index {} (term {})",
                    msg.get_msg_type(),
                    m.index,
                    m.term,
                    meta.id,
                    meta.index,
                    meta.term
                ),
            ));
        }
        let data = self.inbox.receive(meta, data)?;
        let ev = Event::SnapshotReceived {
            msg: Box::new(msg),
            data,
        };
        if let Err(mpsc::SendError(Event::SnapshotReceived { data, .. })) = self.tx.send(ev) {
            data.cancel();
            return Err(io::Error::other("the node has stopped"));
        }
        Ok(())
    }
}

/// A running Raft node. See the module documentation for the loop.
pub struct Node {
    id: u64,
    tx: Sender<Event>,
    inbox: Arc<dyn Inbox>,
    status: Arc<Mutex<Status>>,
    subscribers: Subscribers,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The persistence thread; it ends once the node's thread (its only job source) has.
    persister: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Node {
    /// Starts a node: bootstraps empty storage with `cfg.peers` as the voters, or restarts
    /// from what the storage holds: `sm` is restored from the latest snapshot (whose index is
    /// the applied index it records), then the committed log after it is re-applied.
    ///
    /// # Errors
    /// [`Error::Storage`] if the storage cannot be read or bootstrapped, the snapshot cannot be
    /// restored, or Raft rejects the configuration.
    pub fn start<L, S, M, T>(
        cfg: Config,
        mut sm: M,
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
        let storage_err = |e: &dyn std::fmt::Display| Error::Storage(e.to_string());
        // A brand-new node writes its initial membership into the log (a founding member) or
        // starts empty and learns it from the leader (a joiner). Either way the state machine
        // starts empty and the committed log is applied to it from the start.
        if !storage.is_initialized().map_err(|e| storage_err(&e))? {
            storage
                .initialize(&ConfState {
                    voters: cfg.peers.clone(),
                    ..Default::default()
                })
                .map_err(|e| storage_err(&e))?;
        }
        // The state machine starts from the latest snapshot: its index is the applied index.
        let mut applied = 0;
        let mut conf_index = 0;
        if let Some(m) = storage.recover_snapshot().map_err(|e| storage_err(&e))? {
            snapshot::restore(storage.snapshots(), &mut sm, &m).map_err(Error::Storage)?;
            applied = m.index;
            conf_index = m.configuration_index;
        }
        let raft_cfg = raft::Config {
            id: cfg.id,
            applied,
            election_tick: cfg.election_ticks,
            heartbeat_tick: cfg.heartbeat_ticks,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        raft_cfg.validate().map_err(|e| storage_err(&e))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&raft_cfg, storage, &logger).map_err(|e| storage_err(&e))?;
        let (tx, rx) = mpsc::channel();
        let status = Arc::new(Mutex::new(Status {
            id: cfg.id,
            applied,
            snapshot_index: applied,
            ..Status::default()
        }));
        let inbox: Arc<dyn Inbox> = Arc::new(StoreInbox(raw.store().snapshots_handle()));
        let subscribers = Subscribers::default();
        let mut core = Core {
            node: raw,
            sm,
            transport: Arc::new(transport),
            events: tx.clone(),
            pending: HashMap::new(),
            proposals: Vec::new(),
            next_proposal: 0,
            reads: HashMap::new(),
            read_waits: Vec::new(),
            clock: cfg.clock.clone(),
            lease: cfg.lease(),
            lease_until: None,
            heartbeat: cfg.tick * cfg.heartbeat_ticks as u32,
            next_renewal: cfg.clock.now(),
            applied,
            status: status.clone(),
            subscribers: subscribers.clone(),
            was_leader: false,
            persist: None,
            snapshots: SnapshotState {
                threshold: cfg.snapshot_threshold,
                trailing: cfg.trailing_entries,
                index: applied,
                attempted: applied,
                conf_index,
                ..SnapshotState::default()
            },
        };
        let mut persister = None;
        if cfg.batch_proposals {
            let (jobs_tx, jobs_rx) = mpsc::channel();
            let (log, events) = (core.node.store().log_handle(), tx.clone());
            persister = Some(
                std::thread::Builder::new()
                    .name(format!("raftwal-persist-{}", cfg.id))
                    .spawn(move || persist_loop(log.as_ref(), &jobs_rx, &events))
                    .map_err(|e| storage_err(&e))?,
            );
            core.persist = Some(jobs_tx);
        }
        let tick = cfg.tick;
        let batch = cfg.batch_proposals;
        let thread = std::thread::Builder::new()
            .name(format!("raftwal-node-{}", cfg.id))
            .spawn(move || {
                // raft-rs panics on some storage errors (for example a failed read of a term):
                // contain it so the node stops cleanly instead of vanishing.
                let stopped = core.status.clone();
                let run = std::panic::AssertUnwindSafe(|| core.run(&rx, tick, batch));
                if std::panic::catch_unwind(run).is_err() {
                    lock(&stopped).stopped = true;
                }
            })
            .map_err(|e| storage_err(&e))?;
        Ok(Node {
            id: cfg.id,
            tx,
            inbox,
            status,
            subscribers,
            thread: Mutex::new(Some(thread)),
            persister: Mutex::new(persister),
        })
    }

    /// The mailbox a transport delivers this node's messages to.
    pub fn mailbox(&self) -> Mailbox {
        Mailbox {
            tx: self.tx.clone(),
            inbox: self.inbox.clone(),
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
    /// [`Error::Shutdown`] if the node has stopped; every other outcome comes through the
    /// proposal.
    pub fn propose(&self, command: Vec<u8>) -> Result<Proposal> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.tx
            .send(Event::Propose {
                data: command,
                reply,
            })
            .map_err(|_| Error::Shutdown)?;
        Ok(Proposal(rx))
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

    /// A linearizable read point: returns an index once this node's state machine has applied
    /// at least up to it, with the leader's leadership confirmed by a quorum after the call
    /// began (Raft's read-index). Works on followers too (the leader is asked).
    ///
    /// # Errors
    /// [`Error::Timeout`] (for example with no leader), [`Error::LeadershipLost`],
    /// [`Error::Shutdown`].
    pub fn read_index(&self, timeout: Duration) -> Result<u64> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.call(
            Event::ReadIndex {
                reply,
                leader_only: false,
            },
            &rx,
            timeout,
        )
    }

    /// A linearizable read point served locally while this leader's lease is valid (the
    /// leader has committed an entry in its term, no leadership transfer is under way, and a
    /// quorum acknowledged it less than [`Config::lease`] ago); otherwise through read-index.
    /// The result says which.
    ///
    /// # Errors
    /// As [`Node::read_index`].
    pub fn lease_read(&self, timeout: Duration) -> Result<ReadPoint> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.call(Event::LeaseRead { reply }, &rx, timeout)
    }

    /// Confirms that this node is still the leader: a quorum acknowledged it after the call.
    ///
    /// # Errors
    /// [`Error::NotLeader`], [`Error::Timeout`], [`Error::LeadershipLost`], [`Error::Shutdown`].
    pub fn verify_leader(&self, timeout: Duration) -> Result<()> {
        let (reply, rx) = mpsc::sync_channel(1);
        self.call(
            Event::ReadIndex {
                reply,
                leader_only: true,
            },
            &rx,
            timeout,
        )
        .map(drop)
    }

    /// Returns once every command accepted before it is committed and applied here.
    ///
    /// # Errors
    /// As [`Node::apply`].
    pub fn barrier(&self, timeout: Duration) -> Result<u64> {
        self.apply(Vec::new(), timeout).map(|a| a.index)
    }

    fn conf_change(&self, changes: Vec<(ConfChangeType, u64)>, timeout: Duration) -> Result<u64> {
        let mut cc = ConfChangeV2::default();
        for (t, id) in changes {
            let mut c = ConfChangeSingle::default();
            c.set_change_type(t);
            c.node_id = id;
            cc.mut_changes().push(c);
        }
        let (reply, rx) = mpsc::sync_channel(1);
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
    /// As [`Node::apply`]; Raft refuses a change while another is pending ([`Error::Dropped`]).
    pub fn add_learner(&self, id: u64, timeout: Duration) -> Result<u64> {
        self.conf_change(vec![(ConfChangeType::AddLearnerNode, id)], timeout)
    }

    /// Adds a voter: first as a learner, promoted once its log has caught up with the
    /// leader's commit index, so a slow newcomer never weakens the quorum.
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
            (matched >= s.commit).then_some(Ok(()))
        })?;
        self.conf_change(vec![(ConfChangeType::AddNode, id)], left())
    }

    /// Removes a voter or learner. A leader may remove itself: once the change is applied it
    /// hands leadership to the most up-to-date remaining voter, and can then be shut down.
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

/// Whether an event brings new entries to persist: a proposal, or a leader's append.
fn carries_entries(ev: &Event) -> bool {
    match ev {
        Event::Propose { .. } => true,
        Event::Step(m) => m.get_msg_type() == MessageType::MsgAppend && !m.entries.is_empty(),
        _ => false,
    }
}

/// A round written to the log, waiting to be made durable.
struct Job {
    number: u64,
    ticket: Option<raftwal_wal::Ticket>,
    msgs: Vec<Message>,
}

/// The persistence thread: one `wait` (one fsync) covers every round queued meanwhile; rounds
/// are reported back in order. A failure stops the node; it is never retried.
fn persist_loop<L: BatchStore>(log: &L, jobs: &Receiver<Job>, events: &Sender<Event>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while let Ok(j) = jobs.try_recv() {
            batch.push(j);
        }
        if let Some(t) = batch.iter().rev().find_map(|j| j.ticket) {
            if let Err(e) = log.wait(t) {
                let _ = events.send(Event::PersistFailed(e.to_string()));
                return;
            }
        }
        for j in batch {
            let _ = events.send(Event::Persisted {
                number: j.number,
                msgs: j.msgs,
            });
        }
    }
}

/// Who waits for a read point.
enum ReadReply {
    /// `read_index` (or `verify_leader`, which needs no apply).
    Index {
        reply: SyncSender<Result<u64>>,
        leader_only: bool,
    },
    /// `lease_read` that fell back to read-index.
    Lease(SyncSender<Result<ReadPoint>>),
    /// An internal round that only renews the lease.
    Renew,
}

impl ReadReply {
    fn ok(self, index: u64, via: ReadVia) {
        match self {
            ReadReply::Index { reply, .. } => {
                let _ = reply.send(Ok(index));
            }
            ReadReply::Lease(reply) => {
                let _ = reply.send(Ok(ReadPoint { index, via }));
            }
            ReadReply::Renew => {}
        }
    }

    fn err(self, e: Error) {
        match self {
            ReadReply::Index { reply, .. } => {
                let _ = reply.send(Err(e));
            }
            ReadReply::Lease(reply) => {
                let _ = reply.send(Err(e));
            }
            ReadReply::Renew => {}
        }
    }

    /// Whether the caller needs the state machine to have applied the read point.
    fn needs_apply(&self) -> bool {
        !matches!(
            self,
            ReadReply::Index {
                leader_only: true,
                ..
            } | ReadReply::Renew
        )
    }
}

/// Who hears of leadership and membership changes.
#[derive(Clone, Default)]
struct Subscribers(Arc<Mutex<Vec<Sender<NodeEvent>>>>);

impl Subscribers {
    fn publish(&self, ev: &NodeEvent) {
        lock(&self.0).retain(|s| s.send(ev.clone()).is_ok());
    }
}

/// A node's snapshot bookkeeping.
#[derive(Default)]
struct SnapshotState {
    /// Automatic snapshot every this many applied entries (0: never).
    threshold: u64,
    /// Entries kept below a snapshot when compacting.
    trailing: u64,
    /// The last snapshot taken or installed.
    index: u64,
    /// The applied index of the last attempt (a failed one waits another threshold).
    attempted: u64,
    /// The index of the last applied configuration change.
    conf_index: u64,
    /// The thread writing a snapshot, if one is.
    writer: Option<JoinHandle<()>>,
    /// Callers of `Node::snapshot` waiting for the next one.
    waiters: Vec<SyncSender<Result<SnapshotMeta>>>,
    /// Snapshots received from a leader, waiting for Raft's verdict (this round).
    received: Vec<Box<dyn Received>>,
}

struct Core<L: BatchStore, S: SnapshotStore, M, T> {
    node: RawNode<RaftStorage<L, S>>,
    sm: M,
    transport: Arc<T>,
    /// The node's own event queue (for its helper threads to report back).
    events: Sender<Event>,
    pending: HashMap<u64, Reply>,
    /// Commands received this round, proposed together once the queue is drained.
    proposals: Vec<(Vec<u8>, Reply)>,
    next_proposal: u64,
    /// Read-index requests sent to Raft, by request id, with when they were issued.
    reads: HashMap<u64, (ReadReply, Instant)>,
    /// Read points waiting for the state machine to apply up to them.
    read_waits: Vec<(u64, ReadReply, ReadVia)>,
    clock: Arc<dyn Clock>,
    lease: Duration,
    /// The lease is valid until then (leaders only).
    lease_until: Option<Instant>,
    heartbeat: Duration,
    next_renewal: Instant,
    applied: u64,
    status: Arc<Mutex<Status>>,
    subscribers: Subscribers,
    was_leader: bool,
    /// With batching: rounds handed to the persistence thread.
    persist: Option<Sender<Job>>,
    snapshots: SnapshotState,
}

impl<L, S, M, T> Core<L, S, M, T>
where
    L: BatchStore + Send + 'static,
    S: SnapshotStore + Send + 'static,
    M: StateMachine,
    T: Transport,
{
    fn run(&mut self, rx: &Receiver<Event>, tick: Duration, batch: bool) {
        let conf = self.node.raft.prs().conf().to_conf_state();
        self.publish_conf(&conf);
        let mut next_tick = self.clock.now() + tick;
        let stop = loop {
            // Wait until the next tick by the clock (re-checked at least every tick of real
            // time, so a clock moved by hand is noticed).
            let wait = next_tick
                .saturating_duration_since(self.clock.now())
                .min(tick);
            let mut stop = None;
            match rx.recv_timeout(wait) {
                Ok(ev) => {
                    let mut proposals = usize::from(carries_entries(&ev));
                    stop = self.handle(ev);
                    // Everything already queued joins this round (one fsync for all of it),
                    // unless batching is off: then a round takes one proposal (leader) or one
                    // append of entries (follower), so every entry costs an fsync on every node.
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
            self.flush_proposals();
            if let Some(e) = stop {
                break e;
            }
            let now = self.clock.now();
            if now >= next_tick {
                self.node.tick();
                next_tick += tick;
                if next_tick < now {
                    next_tick = now + tick;
                }
            }
            // A leader renews its lease with a read-index round every heartbeat interval.
            if self.node.raft.state == StateRole::Leader && now >= self.next_renewal {
                self.next_renewal = now + self.heartbeat;
                self.start_read(ReadReply::Renew);
            }
            for id in self.transport.unreachable() {
                self.node.report_unreachable(id);
            }
            if let Err(e) = self.on_ready() {
                break e;
            }
            // Received snapshots Raft did not install this round are stale: discard them.
            for r in self.snapshots.received.drain(..) {
                r.cancel();
            }
            self.maybe_snapshot();
            self.publish();
        };
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(stop.clone()));
        }
        for (_, (reply, _)) in self.reads.drain() {
            reply.err(stop.clone());
        }
        for (_, reply, _) in self.read_waits.drain(..) {
            reply.err(stop.clone());
        }
        for w in self.snapshots.waiters.drain(..) {
            let _ = w.send(Err(stop.clone()));
        }
        // The storage is released when the node stops: wait for a snapshot being written.
        if let Some(t) = self.snapshots.writer.take() {
            let _ = t.join();
        }
        lock(&self.status).stopped = true;
    }

    fn handle(&mut self, ev: Event) -> Option<Error> {
        match ev {
            Event::Shutdown => return Some(Error::Shutdown),
            Event::Step(m) => {
                // A snapshot's data comes out of band (`Mailbox::receive_snapshot`); a bare
                // `MsgSnapshot` has none to install.
                if m.get_msg_type() != MessageType::MsgSnapshot {
                    let _ = self.node.step(*m);
                }
            }
            Event::SnapshotReceived { msg, data } => {
                self.snapshots.received.push(data);
                let _ = self.node.step(*msg);
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
                self.flush_proposals();
                self.lease_until = None; // no lease reads while leadership moves
                self.node.transfer_leader(to);
            }
            Event::ReadIndex { reply, leader_only } => {
                if leader_only && self.node.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return None;
                }
                self.start_read(ReadReply::Index { reply, leader_only });
            }
            Event::LeaseRead { reply } => {
                let r = &self.node.raft;
                let valid = r.state == StateRole::Leader
                    && r.lead_transferee.is_none()
                    && r.commit_to_current_term()
                    && self.lease_until.is_some_and(|t| self.clock.now() < t);
                if valid {
                    let index = r.raft_log.committed;
                    self.wait_applied(index, ReadReply::Lease(reply), ReadVia::Lease);
                } else {
                    self.start_read(ReadReply::Lease(reply));
                }
            }
            Event::ConfChange { cc, reply } => {
                self.flush_proposals();
                if self.node.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return None;
                }
                self.next_proposal += 1;
                let id = self.next_proposal;
                if self
                    .node
                    .propose_conf_change(id.to_le_bytes().to_vec(), cc)
                    .is_err()
                {
                    let _ = reply.send(Err(Error::Dropped));
                } else {
                    self.pending.insert(id, reply);
                }
            }
            Event::Propose { data, reply } => {
                if self.node.raft.state != StateRole::Leader {
                    let _ = reply.send(Err(self.not_leader()));
                    return None;
                }
                // Proposed together with every other one queued, after the queue is drained.
                self.proposals.push((data, reply));
            }
        }
        None
    }

    /// Proposes every queued command in one `MsgPropose`: one append to each follower for
    /// all of them (raft-rs sends one per proposal call otherwise).
    fn flush_proposals(&mut self) {
        let queued = std::mem::take(&mut self.proposals);
        if queued.is_empty() {
            return;
        }
        let mut replies = Vec::with_capacity(queued.len());
        let entries: Vec<Entry> = queued
            .into_iter()
            .map(|(data, reply)| {
                self.next_proposal += 1;
                replies.push((self.next_proposal, reply));
                Entry {
                    data: data.into(),
                    context: self.next_proposal.to_le_bytes().to_vec().into(),
                    ..Default::default()
                }
            })
            .collect();
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgPropose);
        m.from = self.node.raft.id;
        m.set_entries(entries.into());
        if self.node.raft.step(m).is_ok() {
            self.pending.extend(replies);
        } else {
            for (_, reply) in replies {
                let _ = reply.send(Err(Error::Dropped));
            }
        }
    }

    fn start_read(&mut self, reply: ReadReply) {
        self.next_proposal += 1;
        let id = self.next_proposal;
        self.node.read_index(id.to_le_bytes().to_vec());
        self.reads.insert(id, (reply, self.clock.now()));
    }

    fn wait_applied(&mut self, index: u64, reply: ReadReply, via: ReadVia) {
        if !reply.needs_apply() || index <= self.applied {
            reply.ok(index, via);
        } else {
            self.read_waits.push((index, reply, via));
        }
    }

    fn not_leader(&self) -> Error {
        let leader = self.node.raft.leader_id;
        Error::NotLeader {
            leader_hint: (leader != 0).then_some(leader),
        }
    }

    fn reply(&mut self, e: &Entry, response: Vec<u8>) {
        if let Ok(b) = <[u8; 8]>::try_from(&e.context[..]) {
            if let Some(reply) = self.pending.remove(&u64::from_le_bytes(b)) {
                let _ = reply.send(Ok(Applied {
                    index: e.index,
                    response,
                }));
            }
        }
    }

    fn send(&self, msgs: Vec<Message>) {
        for m in msgs {
            if m.get_msg_type() == MessageType::MsgSnapshot {
                self.stream_snapshot(m);
            } else {
                self.transport.send(m);
            }
        }
    }

    /// Streams the snapshot a `MsgSnapshot` names (its data is the snapshot's id) to its
    /// follower on a thread of its own, then reports the outcome to Raft.
    fn stream_snapshot(&self, msg: Message) {
        let to = msg.to;
        let store = self.node.store().snapshots_handle();
        let (transport, events) = (self.transport.clone(), self.events.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("raftwal-snapshot-to-{to}"))
            .spawn(move || {
                let id = String::from_utf8_lossy(msg.get_snapshot().get_data()).into_owned();
                let ok = match store.open(&id) {
                    Ok((meta, mut data)) => transport.send_snapshot(msg, &meta, &mut data).is_ok(),
                    Err(_) => false,
                };
                let _ = events.send(Event::SnapshotSent { to, ok });
            });
        if spawned.is_err() {
            let _ = self.events.send(Event::SnapshotSent { to, ok: false });
        }
    }

    /// Starts writing a snapshot when one is due or asked for (by a caller, or by Raft for a
    /// follower the stored one does not suit) and none is being written.
    fn maybe_snapshot(&mut self) {
        let requested = self.node.store().take_snapshot_request();
        let st = &mut self.snapshots;
        let due = requested
            || st.threshold > 0 && self.applied >= st.index.max(st.attempted) + st.threshold;
        let wanted = due || !st.waiters.is_empty();
        if st.writer.is_some() || !wanted {
            return;
        }
        if self.applied <= st.index {
            // Nothing new: the callers get the snapshot there is.
            let current = self
                .node
                .store()
                .snapshots()
                .list()
                .map(|l| l.into_iter().find(|m| m.index == st.index && st.index > 0));
            for w in st.waiters.drain(..) {
                let _ = w.send(match &current {
                    Ok(Some(m)) => Ok(m.clone()),
                    Ok(None) => Err(Error::Snapshot("nothing applied to snapshot".into())),
                    Err(e) => Err(Error::Snapshot(e.to_string())),
                });
            }
            return;
        }
        st.attempted = self.applied;
        let index = self.applied;
        let point = self
            .node
            .raft
            .raft_log
            .term(index)
            .map(|term| snapshot::Point {
                index,
                term,
                configuration: encode_conf_state(&self.node.raft.prs().conf().to_conf_state()),
                configuration_index: st.conf_index,
            });
        let captured = point.map_err(|e| e.to_string()).and_then(|p| {
            self.sm
                .snapshot()
                .map(|s| (p, s))
                .map_err(|e| e.to_string())
        });
        let (point, state) = match captured {
            Ok(x) => x,
            Err(e) => {
                for w in st.waiters.drain(..) {
                    let _ = w.send(Err(Error::Snapshot(e.clone())));
                }
                return;
            }
        };
        let (store, events) = (self.node.store().snapshots_handle(), self.events.clone());
        let spawned = std::thread::Builder::new()
            .name("raftwal-snapshot-writer".into())
            .spawn(move || {
                let r = snapshot::write(store.as_ref(), &point, state);
                let _ = events.send(Event::SnapshotTaken(r));
            });
        match spawned {
            Ok(t) => st.writer = Some(t),
            Err(e) => {
                for w in st.waiters.drain(..) {
                    let _ = w.send(Err(Error::Snapshot(e.to_string())));
                }
            }
        }
    }

    /// A snapshot is durable: compact the log below it (keeping the trailing entries) and
    /// answer who asked. A compaction failure stops the node.
    fn on_snapshot_taken(&mut self, r: Result<SnapshotMeta, String>) -> Result<()> {
        if let Some(t) = self.snapshots.writer.take() {
            let _ = t.join();
        }
        let reply = match r {
            Ok(m) => {
                if m.index > self.snapshots.index {
                    let upto = m.index.saturating_sub(self.snapshots.trailing);
                    self.node
                        .store()
                        .compact(m.index, m.term, upto)
                        .map_err(|e| Error::Storage(e.to_string()))?;
                    self.snapshots.index = m.index;
                    lock(&self.status).snapshot_index = m.index;
                }
                Ok(m)
            }
            Err(e) => Err(Error::Snapshot(e)),
        };
        for w in self.snapshots.waiters.drain(..) {
            let _ = w.send(reply.clone());
        }
        Ok(())
    }

    /// Installs a snapshot Raft accepted: commits the received data, records it (log emptied,
    /// configuration and hard state) in one batch, then restores the state machine from it.
    fn install(&mut self, meta: &SnapshotMetadata) -> Result<()> {
        let mark = (meta.index, meta.term);
        let Some(pos) = self
            .snapshots
            .received
            .iter()
            .position(|r| r.mark() == mark)
        else {
            return Err(Error::Storage(format!(
                "Raft accepted a snapshot at index {} (term {}) whose data was not received",
                meta.index, meta.term
            )));
        };
        let stored = self
            .snapshots
            .received
            .swap_remove(pos)
            .commit()
            .map_err(Error::Storage)?;
        self.node
            .store()
            .apply_snapshot(meta)
            .map_err(|e| Error::Storage(e.to_string()))?;
        snapshot::restore(self.node.store().snapshots(), &mut self.sm, &stored)
            .map_err(Error::Storage)?;
        self.snapshots.index = meta.index;
        self.snapshots.attempted = meta.index;
        self.snapshots.conf_index = stored.configuration_index;
        self.applied = meta.index;
        {
            let mut s = lock(&self.status);
            s.applied = meta.index;
            s.snapshot_index = meta.index;
        }
        self.publish_conf(meta.get_conf_state());
        self.release_reads();
        Ok(())
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
                    self.reply(&e, response);
                }
                EntryType::EntryConfChange => self.apply_conf_change::<ConfChange>(&e)?,
                EntryType::EntryConfChangeV2 => self.apply_conf_change::<ConfChangeV2>(&e)?,
            }
            self.applied = e.index;
        }
        lock(&self.status).applied = self.applied;
        self.release_reads();
        Ok(())
    }

    /// Answers the read points the state machine has now reached.
    fn release_reads(&mut self) {
        if self.read_waits.is_empty() {
            return;
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.read_waits)
            .into_iter()
            .partition(|(index, _, _)| *index <= applied);
        self.read_waits = waiting;
        for (index, reply, via) in ready {
            reply.ok(index, via);
        }
    }

    fn on_read_states(&mut self, states: Vec<raft::ReadState>) {
        for rs in states {
            let Ok(b) = <[u8; 8]>::try_from(&rs.request_ctx[..]) else {
                continue;
            };
            if let Some((reply, issued)) = self.reads.remove(&u64::from_le_bytes(b)) {
                // A quorum acknowledged this leader after `issued`: the lease runs from then.
                if self.node.raft.state == StateRole::Leader {
                    let until = issued + self.lease;
                    self.lease_until = Some(self.lease_until.map_or(until, |t| t.max(until)));
                }
                self.wait_applied(rs.index, reply, ReadVia::ReadIndex);
            }
        }
    }

    /// Applies a committed configuration change (of either encoding), persists the new
    /// configuration, publishes it, and answers its proposer.
    fn apply_conf_change<C: raft_proto::ConfChangeI + protobuf::Message>(
        &mut self,
        e: &Entry,
    ) -> Result<()> {
        let mut cc = C::new();
        cc.merge_from_bytes(&e.data)
            .map_err(|x| Error::Storage(format!("bad conf change at {}: {x}", e.index)))?;
        let cs = self
            .node
            .apply_conf_change(&cc)
            .map_err(|x| Error::Storage(x.to_string()))?;
        self.snapshots.conf_index = e.index;
        // A leader that removed itself hands leadership to the most up-to-date voter left
        // (raft-rs would otherwise keep leading a group it is no longer part of).
        let id = self.node.raft.id;
        if self.node.raft.state == StateRole::Leader && !cs.voters.contains(&id) {
            let next = self
                .node
                .raft
                .prs()
                .iter()
                .filter(|(p, _)| cs.voters.contains(p))
                .max_by_key(|(_, pr)| pr.matched)
                .map(|(p, _)| *p);
            if let Some(to) = next {
                self.lease_until = None;
                self.node.transfer_leader(to);
            }
        }
        self.node
            .store()
            .set_conf_state(&cs)
            .map_err(|x| Error::Storage(x.to_string()))?;
        self.publish_conf(&cs);
        self.reply(e, Vec::new());
        Ok(())
    }

    fn on_ready(&mut self) -> Result<()> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let mut rd = self.node.ready();
        self.send(rd.take_messages());
        let states = rd.take_read_states();
        self.on_read_states(states);
        // A snapshot is durable and installed before the round's entries are written.
        if rd.snapshot().get_metadata().index != 0 {
            let meta = rd.snapshot().get_metadata().clone();
            self.install(&meta)?;
        }
        if let Some(persist) = &self.persist {
            // Asynchronous: the round is readable now and durable once the persistence thread
            // says so; only then go the messages that acknowledge it. Proposals keep joining
            // new rounds meanwhile, and one fsync covers every round queued.
            let ticket = self
                .node
                .store()
                .submit(rd.entries(), rd.hs())
                .map_err(|e| Error::Storage(e.to_string()))?;
            let job = Job {
                number: rd.number(),
                ticket,
                msgs: rd.take_persisted_messages(),
            };
            let persist = persist.clone();
            let committed = rd.take_committed_entries();
            self.node.advance_append_async(rd);
            persist
                .send(job)
                .map_err(|_| Error::Storage("persistence thread stopped".into()))?;
            self.apply(committed)?;
            self.advance_applied();
            return Ok(());
        }
        self.node
            .store()
            .append(rd.entries(), rd.hs())
            .map_err(|e| Error::Storage(e.to_string()))?;
        self.apply(rd.take_committed_entries())?;
        self.send(rd.take_persisted_messages());
        let mut light = self.node.advance(rd);
        self.send(light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        Ok(())
    }

    /// Publishes a configuration (sorted), before a conf change's proposer is answered.
    fn publish_conf(&self, cs: &ConfState) {
        let mut voters = cs.voters.clone();
        voters.sort_unstable();
        let mut learners = cs.learners.clone();
        learners.sort_unstable();
        let mut outgoing = cs.voters_outgoing.clone();
        outgoing.sort_unstable();
        let mut s = lock(&self.status);
        if s.voters != voters || s.learners != learners || s.voters_outgoing != outgoing {
            s.voters.clone_from(&voters);
            s.learners.clone_from(&learners);
            s.voters_outgoing.clone_from(&outgoing);
            drop(s);
            self.subscribers.publish(&NodeEvent::MembershipChanged {
                voters,
                learners,
                voters_outgoing: outgoing,
            });
        }
    }

    fn publish(&mut self) {
        let r = &self.node.raft;
        let leader = r.state == StateRole::Leader;
        if self.was_leader && !leader {
            for (_, reply) in self.pending.drain() {
                let _ = reply.send(Err(Error::LeadershipLost));
            }
            for (_, (reply, _)) in self.reads.drain() {
                reply.err(Error::LeadershipLost);
            }
        }
        if !leader {
            self.lease_until = None;
        }
        self.was_leader = leader;
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
        let mut s = lock(&self.status);
        let changed = (s.leader, s.term) != (known, r.term);
        s.role = r.state.into();
        s.term = r.term;
        s.leader = known;
        s.commit = r.raft_log.committed;
        s.last_index = r.raft_log.last_index();
        s.progress = progress;
        drop(s);
        if changed {
            self.subscribers.publish(&NodeEvent::LeaderChanged {
                leader: known,
                term: r.term,
            });
        }
    }
}
