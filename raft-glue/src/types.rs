//! The public values a node hands out: roles, status, read points, applied commands,
//! proposals in flight, membership changes and events.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::Duration;

use raft::StateRole;

use crate::error::{Error, Result};

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
#[non_exhaustive]
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
#[non_exhaustive]
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
    /// Why it stopped ([`Error::Shutdown`] after [`Node::shutdown`](crate::Node::shutdown)).
    pub stop_reason: Option<Error>,
    /// The configuration: voters.
    pub voters: Vec<u64>,
    /// The configuration: learners.
    pub learners: Vec<u64>,
    /// While a joint configuration is in force (after [`Node::change_membership`](crate::Node::change_membership)), the
    /// previous voters, whose quorum is also needed; empty otherwise.
    pub voters_outgoing: Vec<u64>,
    /// On a leader: each peer's id and matched log index.
    pub progress: Vec<(u64, u64)>,
    /// Messages from the network dropped before Raft saw them, by reason.
    pub dropped: BTreeMap<DropReason, u64>,
    /// Proposals (commands and membership changes) waiting for their outcome.
    pub pending_proposals: usize,
    /// Reads waiting for a read point (parked, issued, or waiting for the state machine),
    /// lease renewals included.
    pub pending_reads: usize,
}

/// A committed, applied command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Applied {
    /// Its log index.
    pub index: u64,
    /// The state machine's response.
    pub response: Vec<u8>,
}

/// One change of [`Node::change_membership`](crate::Node::change_membership).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Membership {
    /// Add a voter (or promote a learner).
    AddVoter(u64),
    /// Add a learner (or demote a voter).
    AddLearner(u64),
    /// Remove a voter or learner.
    Remove(u64),
}

/// A command proposed with [`Node::propose`](crate::Node::propose), on its way to being committed and applied.
#[derive(Debug)]
pub struct Proposal(pub(crate) Receiver<Result<Applied>>);

impl Proposal {
    /// Waits for the outcome.
    ///
    /// # Errors
    /// As [`Node::apply`](crate::Node::apply); [`Error::Timeout`] if it is not known in time (the command may
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

/// A change a node announces to its subscribers ([`Node::subscribe`](crate::Node::subscribe)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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

/// Why a message from the network was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum DropReason {
    /// A type no peer sends (local ones such as `MsgHup` or `MsgBeat`; proposals, which this
    /// node's peers never forward; a bare `MsgSnapshot` without its data).
    NotFromPeers,
    /// Addressed to another node, or claiming to come from this node or node 0.
    Misaddressed,
    /// To a leader: from a node its configuration does not name. To a follower: from a node
    /// that left its configuration and is not a member again.
    NotAMember,
    /// A term too far ahead of this node's (or near `u64::MAX`).
    TermOutOfRange,
    /// Inconsistent fields: entries out of order or of a later term than the message, an
    /// index or commit beyond this node's log, a read without its context, a configuration
    /// change that does not decode.
    Malformed,
    /// A message only the current leader sends (`MsgTimeoutNow`, a read's answer), from
    /// another node.
    NotFromLeader,
    /// A vote or pre-vote request during the quiet period after a (re)start.
    VoteAfterRestart,
    /// Its sender is not the peer the transport authenticated on its connection.
    Spoofed,
    /// A read-index request to a node that is not the leader (forwarded by a follower whose
    /// view is behind; the follower asks again).
    NotLeader,
    /// More bytes of received messages than
    /// [`Config::max_inbound_bytes`](crate::Config::max_inbound_bytes) were waiting for the
    /// node's Raft thread (a peer sending faster than the node steps; Raft resends).
    Backlog,
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DropReason::NotFromPeers => "not_from_peers",
            DropReason::Misaddressed => "misaddressed",
            DropReason::NotAMember => "not_a_member",
            DropReason::TermOutOfRange => "term_out_of_range",
            DropReason::Malformed => "malformed",
            DropReason::NotFromLeader => "not_from_leader",
            DropReason::VoteAfterRestart => "vote_after_restart",
            DropReason::Spoofed => "spoofed",
            DropReason::NotLeader => "not_leader",
            DropReason::Backlog => "backlog",
        })
    }
}
