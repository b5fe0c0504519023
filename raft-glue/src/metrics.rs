//! The Raft node's metrics, recorded through the [`metrics`] facade (see
//! `raftwal_wal::metrics` for the conventions; install the recorder before starting nodes).
//! Every series carries a `node` label, the node's id; `README.md` lists them all.

use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Gauge, Histogram, Unit,
};
use raft::eraftpb::MessageType;
use raft::StateRole;

/// The node's current term.
pub const TERM: &str = "raftwal_raft_term";
/// The node's role: 0 follower, 1 pre-candidate, 2 candidate, 3 leader.
pub const ROLE: &str = "raftwal_raft_role";
/// Changes of the leader this node knows of.
pub const LEADER_CHANGES: &str = "raftwal_raft_leader_changes_total";
/// The commit index.
pub const COMMIT_INDEX: &str = "raftwal_raft_commit_index";
/// The applied index.
pub const APPLIED_INDEX: &str = "raftwal_raft_applied_index";
/// Committed entries not yet applied.
pub const APPLY_LAG: &str = "raftwal_raft_apply_lag_entries";
/// Proposals, by `outcome`: `accepted` (appended by the leader), `dropped`, `too_large`,
/// `busy`, `not_leader`.
pub const PROPOSALS: &str = "raftwal_raft_proposals_total";
/// Entries persisted per Ready round.
pub const ROUND_ENTRIES: &str = "raftwal_raft_round_entries";
/// A Ready round from submit until durable.
pub const PERSIST_SECONDS: &str = "raftwal_raft_persist_duration_seconds";
/// Messages sent, by `type`.
pub const SENT: &str = "raftwal_raft_messages_sent_total";
/// Messages received and handed to Raft, by `type`.
pub const RECEIVED: &str = "raftwal_raft_messages_received_total";
/// Messages dropped before Raft saw them, by `reason`.
pub const DROPPED: &str = "raftwal_raft_messages_dropped_total";
/// Snapshots streamed to followers, by `ok` (`true`/`false`).
pub const SNAPSHOTS_SENT: &str = "raftwal_raft_snapshots_sent_total";
/// Snapshots received from a leader.
pub const SNAPSHOTS_RECEIVED: &str = "raftwal_raft_snapshots_received_total";
/// Received snapshots installed.
pub const SNAPSHOTS_INSTALLED: &str = "raftwal_raft_snapshots_installed_total";
/// Installing a received snapshot (commit, record, restore the state machine).
pub const SNAPSHOT_INSTALL_SECONDS: &str = "raftwal_raft_snapshot_install_duration_seconds";
/// Streaming a snapshot to a follower.
pub const SNAPSHOT_SEND_SECONDS: &str = "raftwal_raft_snapshot_send_duration_seconds";
/// Reads served, by `via`: `lease` or `read_index`.
pub const READS: &str = "raftwal_raft_reads_total";
/// Lease reads that found the lease expired (and went through read-index).
pub const LEASE_EXPIRIES: &str = "raftwal_raft_lease_expiries_total";

/// Gives every metric above its unit and help text in the installed recorder.
pub fn describe() {
    describe_gauge!(TERM, Unit::Count, "The node's current term.");
    describe_gauge!(
        ROLE,
        Unit::Count,
        "0 follower, 1 pre-candidate, 2 candidate, 3 leader."
    );
    describe_counter!(
        LEADER_CHANGES,
        Unit::Count,
        "Changes of the leader this node knows of."
    );
    describe_gauge!(COMMIT_INDEX, Unit::Count, "The commit index.");
    describe_gauge!(APPLIED_INDEX, Unit::Count, "The applied index.");
    describe_gauge!(APPLY_LAG, Unit::Count, "Committed entries not yet applied.");
    describe_counter!(PROPOSALS, Unit::Count, "Proposals, by outcome.");
    describe_histogram!(
        ROUND_ENTRIES,
        Unit::Count,
        "Entries persisted per Ready round."
    );
    describe_histogram!(
        PERSIST_SECONDS,
        Unit::Seconds,
        "A Ready round from submit until durable."
    );
    describe_counter!(SENT, Unit::Count, "Messages sent, by type.");
    describe_counter!(
        RECEIVED,
        Unit::Count,
        "Messages received and handed to Raft, by type."
    );
    describe_counter!(
        DROPPED,
        Unit::Count,
        "Messages dropped before Raft saw them, by reason."
    );
    describe_counter!(
        SNAPSHOTS_SENT,
        Unit::Count,
        "Snapshots streamed to followers."
    );
    describe_counter!(
        SNAPSHOTS_RECEIVED,
        Unit::Count,
        "Snapshots received from a leader."
    );
    describe_counter!(
        SNAPSHOTS_INSTALLED,
        Unit::Count,
        "Received snapshots installed."
    );
    describe_histogram!(
        SNAPSHOT_INSTALL_SECONDS,
        Unit::Seconds,
        "Installing a received snapshot."
    );
    describe_histogram!(
        SNAPSHOT_SEND_SECONDS,
        Unit::Seconds,
        "Streaming a snapshot to a follower."
    );
    describe_counter!(READS, Unit::Count, "Reads served, by how.");
    describe_counter!(
        LEASE_EXPIRIES,
        Unit::Count,
        "Lease reads that found the lease expired."
    );
}

/// The snake-case name of a message type, as its label.
fn type_name(t: MessageType) -> &'static str {
    use MessageType as T;
    match t {
        T::MsgHup => "hup",
        T::MsgBeat => "beat",
        T::MsgPropose => "propose",
        T::MsgAppend => "append",
        T::MsgAppendResponse => "append_response",
        T::MsgRequestVote => "request_vote",
        T::MsgRequestVoteResponse => "request_vote_response",
        T::MsgSnapshot => "snapshot",
        T::MsgHeartbeat => "heartbeat",
        T::MsgHeartbeatResponse => "heartbeat_response",
        T::MsgUnreachable => "unreachable",
        T::MsgSnapStatus => "snap_status",
        T::MsgCheckQuorum => "check_quorum",
        T::MsgTransferLeader => "transfer_leader",
        T::MsgTimeoutNow => "timeout_now",
        T::MsgReadIndex => "read_index",
        T::MsgReadIndexResp => "read_index_response",
        T::MsgRequestPreVote => "request_pre_vote",
        T::MsgRequestPreVoteResponse => "request_pre_vote_response",
    }
}

/// Why a proposal was refused (the `outcome` label of [`PROPOSALS`] other than `accepted`).
#[derive(Clone, Copy)]
pub(crate) enum Refused {
    Dropped = 0,
    TooLarge = 1,
    Busy = 2,
    NotLeader = 3,
}

impl Refused {
    fn label(self) -> &'static str {
        match self {
            Refused::Dropped => "dropped",
            Refused::TooLarge => "too_large",
            Refused::Busy => "busy",
            Refused::NotLeader => "not_leader",
        }
    }
}

/// A node's series, registered once at start (recording through a handle costs no lookup).
#[derive(Clone)]
pub(crate) struct NodeMetrics {
    pub node: String,
    pub term: Gauge,
    pub role: Gauge,
    pub leader_changes: Counter,
    pub commit: Gauge,
    pub applied: Gauge,
    pub lag: Gauge,
    pub accepted: Counter,
    pub round_entries: Histogram,
    pub reads_lease: Counter,
    pub reads_index: Counter,
    pub lease_expiries: Counter,
    pub persist: Histogram,
    refused: [Counter; 4],
    sent: Vec<Counter>,
    received: Vec<Counter>,
}

impl NodeMetrics {
    pub fn new(id: u64) -> Self {
        let node = id.to_string();
        // Indexed by the type's value (raft-rs numbers them from 0 without gaps).
        let by_type = |name: &'static str| {
            let types = <MessageType as protobuf::ProtobufEnum>::values();
            let mut v = vec![Counter::noop(); types.len()];
            for &t in types {
                if let Some(slot) = v.get_mut(t as usize) {
                    *slot = counter!(name, "node" => node.clone(), "type" => type_name(t));
                }
            }
            v
        };
        NodeMetrics {
            term: gauge!(TERM, "node" => node.clone()),
            role: gauge!(ROLE, "node" => node.clone()),
            leader_changes: counter!(LEADER_CHANGES, "node" => node.clone()),
            commit: gauge!(COMMIT_INDEX, "node" => node.clone()),
            applied: gauge!(APPLIED_INDEX, "node" => node.clone()),
            lag: gauge!(APPLY_LAG, "node" => node.clone()),
            accepted: counter!(PROPOSALS, "node" => node.clone(), "outcome" => "accepted"),
            round_entries: histogram!(ROUND_ENTRIES, "node" => node.clone()),
            reads_lease: counter!(READS, "node" => node.clone(), "via" => "lease"),
            reads_index: counter!(READS, "node" => node.clone(), "via" => "read_index"),
            lease_expiries: counter!(LEASE_EXPIRIES, "node" => node.clone()),
            persist: histogram!(PERSIST_SECONDS, "node" => node.clone()),
            refused: [
                Refused::Dropped,
                Refused::TooLarge,
                Refused::Busy,
                Refused::NotLeader,
            ]
            .map(|r| counter!(PROPOSALS, "node" => node.clone(), "outcome" => r.label())),
            sent: by_type(SENT),
            received: by_type(RECEIVED),
            node,
        }
    }

    /// `n` proposals refused for `why`.
    pub fn refused(&self, why: Refused, n: u64) {
        self.refused[why as usize].increment(n);
    }

    pub fn sent(&self, t: MessageType) {
        if let Some(c) = self.sent.get(t as usize) {
            c.increment(1);
        }
    }

    pub fn received(&self, t: MessageType) {
        if let Some(c) = self.received.get(t as usize) {
            c.increment(1);
        }
    }

    pub fn role(&self, r: StateRole) {
        self.role.set(match r {
            StateRole::Follower => 0.0,
            StateRole::PreCandidate => 1.0,
            StateRole::Candidate => 2.0,
            StateRole::Leader => 3.0,
        });
    }

    /// A counter of this node with one more label (for rare events).
    pub fn count(&self, name: &'static str, label: &'static str, value: String) {
        counter!(name, "node" => self.node.clone(), label => value).increment(1);
    }

    /// A counter of this node without another label (for rare events).
    pub fn count_plain(&self, name: &'static str) {
        counter!(name, "node" => self.node.clone()).increment(1);
    }

    pub fn seconds(&self, name: &'static str, d: std::time::Duration) {
        histogram!(name, "node" => self.node.clone()).record(d);
    }
}
