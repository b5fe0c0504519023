//! How a node runs: [`Config`] and its validation.

use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};

/// The clock-rate margin the lease bound allows for: every node's clock advances at a rate
/// within 5% of real time (see [`Config::lease_bound`]).
pub const MAX_CLOCK_DRIFT: f64 = 0.05;

/// Bytes a message adds around its entries (header fields, each entry's index, term, type and
/// request id), with room to spare: a transport must carry the largest command or append
/// plus this.
pub const MESSAGE_OVERHEAD: usize = 4096;

/// How a node runs.
#[derive(Clone)]
pub struct Config {
    /// This node's id (non-zero).
    pub id: u64,
    /// The voters of a brand-new cluster (used only to bootstrap empty storage).
    pub peers: Vec<u64>,
    /// The logical clock's period. Ticks are at least this far apart on the node's clock.
    pub tick: Duration,
    /// Ticks without hearing from a leader before a follower may campaign or vote for another
    /// node (raft-rs randomises its own campaign in [`Config::campaign_ticks`]). The lease
    /// is derived from it: give every node of a cluster the same value.
    pub election_ticks: usize,
    /// The range raft-rs draws this node's campaign timeout from, in ticks: `None` (the
    /// default) is `election_ticks..2 × election_ticks`. It may not start below
    /// `election_ticks` (the lease counts on no node campaigning sooner) nor end past
    /// `100 × election_ticks`. A one-tick range fixes the timeout, which makes a node's
    /// behaviour a function of its inputs (deterministic tests; give each node its own range
    /// then, or their campaigns collide).
    pub campaign_ticks: Option<std::ops::Range<usize>>,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// The clock for ticks and the leader lease. The default, [`SystemClock`], keeps counting
    /// while the machine is suspended.
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
    /// The leader lease ([`Node::lease_read`](crate::Node::lease_read)): `None` (the default)
    /// takes 90% of [`Config::lease_bound`]; `Some(Duration::ZERO)` turns lease reads off (every
    /// read is a read-index round). [`Node::start`](crate::Node::start) refuses a lease that is
    /// not strictly shorter than the bound.
    pub lease: Option<Duration>,
    /// The largest command [`Node::propose`](crate::Node::propose) accepts, in bytes; larger
    /// ones are refused with [`Error::TooLarge`] before anything is written. Default 1 MiB.
    pub max_command_size: usize,
    /// The most entry bytes one append message carries (raft-rs's `max_size_per_msg`; one
    /// entry is always sent whatever its size). Default 1 MiB.
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower (raft-rs's `max_inflight_msgs`). Default 256.
    pub max_inflight_msgs: usize,
    /// Let a learner be promoted by [`Node::add_voter`](crate::Node::add_voter) once its log
    /// is within this many entries of the leader's commit index. Default 1024.
    pub max_learner_lag: u64,
    /// Proposals (commands and membership changes) awaiting their outcome at most;
    /// [`Node::propose`](crate::Node::propose) answers [`Error::Busy`] beyond. Default 8192.
    pub max_pending_proposals: usize,
    /// Bytes of entries a leader holds uncommitted at most (raft-rs's
    /// `max_uncommitted_size`); a round beyond is refused with [`Error::Busy`]. Default 64 MiB.
    pub max_uncommitted_size: u64,
    /// Messages whose term is more than this far ahead of the node's are dropped (a peer
    /// that is that far ahead is broken or hostile). Default 1,000,000.
    pub max_term_gap: u64,
    /// Bytes of received messages waiting for the node's Raft thread at most; beyond, a
    /// transport's deliveries are dropped ([`DropReason::Backlog`](crate::DropReason::Backlog))
    /// and Raft resends. At least [`Config::max_message_size`]. Default 64 MiB.
    pub max_inbound_bytes: usize,
}

impl Config {
    /// Defaults: 50 ms ticks, elections after 10 ticks, heartbeats every 2, the lease at 90% of
    /// its bound, 1 MiB commands and appends.
    pub fn new(id: u64, peers: Vec<u64>) -> Self {
        Config {
            id,
            peers,
            tick: Duration::from_millis(50),
            election_ticks: 10,
            campaign_ticks: None,
            heartbeat_ticks: 2,
            clock: Arc::new(SystemClock),
            batch_proposals: true,
            snapshot_threshold: 8192,
            trailing_entries: 1024,
            lease: None,
            max_command_size: 1 << 20,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            max_learner_lag: 1024,
            max_term_gap: 1_000_000,
            max_inbound_bytes: 64 << 20,
            max_pending_proposals: 8192,
            max_uncommitted_size: 64 << 20,
        }
    }

    /// The shortest time after which a follower that acknowledged a leader may vote for
    /// another node, shrunk by the clock-drift margin: `(election_ticks − 1) × tick ×
    /// (1 − ρ) / (1 + ρ)` with ρ = [`MAX_CLOCK_DRIFT`]. A lease must be strictly shorter. The
    /// argument is in the `reads` module of the node (`raft-glue/src/node/reads.rs`).
    pub fn lease_bound(&self) -> Duration {
        let ticks = u32::try_from(self.election_ticks.saturating_sub(1)).unwrap_or(u32::MAX);
        self.tick
            .saturating_mul(ticks)
            .mul_f64((1.0 - MAX_CLOCK_DRIFT) / (1.0 + MAX_CLOCK_DRIFT))
    }

    /// The lease in use: [`Config::lease`], or 90% of [`Config::lease_bound`] if unset.
    pub fn lease(&self) -> Duration {
        self.lease
            .unwrap_or_else(|| self.lease_bound().mul_f64(0.9))
    }

    /// The largest message a node with this configuration may build: a transport must carry
    /// it.
    pub fn max_message_size(&self) -> usize {
        let appends = usize::try_from(self.max_size_per_msg).unwrap_or(usize::MAX);
        self.max_command_size
            .max(appends)
            .saturating_add(MESSAGE_OVERHEAD)
    }

    /// Checks the configuration.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first problem: a zero id or tick, election ticks not above
    /// heartbeat ticks (or below 2), `campaign_ticks` empty or out of its bounds, a lease
    /// not strictly shorter than [`Config::lease_bound`], a zero command or message size,
    /// `max_inbound_bytes` smaller than a message.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::Config(s));
        if self.id == 0 {
            return bad("the node id must not be 0".into());
        }
        if self.tick.is_zero() {
            return bad("tick must be longer than zero".into());
        }
        if self.heartbeat_ticks == 0 || self.election_ticks <= self.heartbeat_ticks {
            return bad(format!(
                "election_ticks ({}) must be greater than heartbeat_ticks ({}), which must be at least 1",
                self.election_ticks, self.heartbeat_ticks
            ));
        }
        if let Some(c) = &self.campaign_ticks {
            if c.is_empty()
                || c.start < self.election_ticks
                || c.end > self.election_ticks.saturating_mul(100)
            {
                return bad(format!(
                    "campaign_ticks ({c:?}) must be a non-empty range from election_ticks ({}) to 100 x election_ticks",
                    self.election_ticks
                ));
            }
        }
        let lease = self.lease();
        if !lease.is_zero() && lease >= self.lease_bound() {
            return bad(format!(
                "the lease ({lease:?}) must be shorter than {:?}: (election_ticks - 1) x tick, less the clock-drift margin",
                self.lease_bound()
            ));
        }
        if self.max_command_size == 0 || self.max_size_per_msg == 0 {
            return bad("max_command_size and max_size_per_msg must be at least 1".into());
        }
        if self.max_inflight_msgs == 0 || self.max_pending_proposals == 0 {
            return bad("max_inflight_msgs and max_pending_proposals must be at least 1".into());
        }
        if self.max_inbound_bytes < self.max_message_size() {
            return bad(format!(
                "max_inbound_bytes ({}) must hold the largest message ({} bytes)",
                self.max_inbound_bytes,
                self.max_message_size()
            ));
        }
        if self.max_uncommitted_size < self.max_size_per_msg
            || self.max_uncommitted_size < self.max_command_size as u64
        {
            return bad(format!(
                "max_uncommitted_size ({}) must hold at least one command and one append",
                self.max_uncommitted_size
            ));
        }
        Ok(())
    }

    /// The election timeout on the node's clock.
    pub(crate) fn election_timeout(&self) -> Duration {
        self.tick
            .saturating_mul(u32::try_from(self.election_ticks).unwrap_or(u32::MAX))
    }

    /// The heartbeat interval on the node's clock.
    pub(crate) fn heartbeat(&self) -> Duration {
        self.tick
            .saturating_mul(u32::try_from(self.heartbeat_ticks).unwrap_or(u32::MAX))
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("id", &self.id)
            .field("peers", &self.peers)
            .field("tick", &self.tick)
            .field("election_ticks", &self.election_ticks)
            .field("campaign_ticks", &self.campaign_ticks)
            .field("heartbeat_ticks", &self.heartbeat_ticks)
            .field("batch_proposals", &self.batch_proposals)
            .field("snapshot_threshold", &self.snapshot_threshold)
            .field("trailing_entries", &self.trailing_entries)
            .field("lease", &self.lease())
            .field("max_command_size", &self.max_command_size)
            .field("max_size_per_msg", &self.max_size_per_msg)
            .field("max_inflight_msgs", &self.max_inflight_msgs)
            .field("max_learner_lag", &self.max_learner_lag)
            .field("max_term_gap", &self.max_term_gap)
            .field("max_inbound_bytes", &self.max_inbound_bytes)
            .field("max_pending_proposals", &self.max_pending_proposals)
            .field("max_uncommitted_size", &self.max_uncommitted_size)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lease_must_be_shorter_than_a_follower_promise() {
        let mut c = Config::new(1, vec![1]);
        c.validate().unwrap();
        // 9 ticks of 50 ms, less the drift margin.
        assert!(c.lease_bound() < Duration::from_millis(450));
        assert!(c.lease_bound() > Duration::from_millis(400));
        c.lease = Some(c.lease_bound());
        assert!(matches!(c.validate(), Err(Error::Config(_))));
        c.lease = Some(Duration::ZERO);
        c.validate().unwrap();
        // The reproduction of the audit: 3 election ticks of 10 ms, a 24 ms lease.
        let c = Config {
            tick: Duration::from_millis(10),
            election_ticks: 3,
            heartbeat_ticks: 1,
            lease: Some(Duration::from_millis(24)),
            ..Config::new(1, vec![1])
        };
        assert!(matches!(c.validate(), Err(Error::Config(_))));
        assert!(Config { lease: None, ..c }.validate().is_ok());
    }

    #[test]
    fn nonsense_is_refused() {
        for c in [
            Config::new(0, vec![]),
            Config {
                tick: Duration::ZERO,
                ..Config::new(1, vec![])
            },
            Config {
                election_ticks: 2,
                heartbeat_ticks: 2,
                ..Config::new(1, vec![])
            },
            Config {
                max_command_size: 0,
                ..Config::new(1, vec![])
            },
            Config {
                campaign_ticks: Some(9..12),
                ..Config::new(1, vec![])
            },
            Config {
                campaign_ticks: Some(11..11),
                ..Config::new(1, vec![])
            },
            Config {
                campaign_ticks: Some(10..1001),
                ..Config::new(1, vec![])
            },
            Config {
                max_inbound_bytes: 1 << 20,
                ..Config::new(1, vec![])
            },
        ] {
            assert!(matches!(c.validate(), Err(Error::Config(_))), "{c:?}");
        }
    }
}
