//! A Raft node: [`Node`] (the handle) over a raft-rs `RawNode` on a thread of its own.
//!
//! - `handle.rs`: the public API and start-up;
//! - `config.rs`: [`Config`] and its validation;
//! - `core.rs`: the node's thread, its event loop and the `Ready` protocol;
//! - `guard.rs`: every message from the network is checked before Raft sees it;
//! - `proposals.rs`: commands and membership changes in flight, and what a proposer is told;
//! - `ids.rs`: request ids, unique across nodes and restarts;
//! - `reads.rs`: read-index requests and the leader lease, with the lease's safety argument;
//! - `membership.rs`: configuration changes applied exactly once, self-removal, joint exits;
//! - `persist.rs`: the persistence thread (one fsync for many rounds);
//! - `snapshots.rs`: taking, compacting, streaming and installing snapshots.

mod config;
mod core;
mod guard;
mod handle;
mod ids;
mod membership;
mod persist;
mod proposals;
mod reads;
mod snapshots;

pub use config::{Config, MAX_CLOCK_DRIFT, MESSAGE_OVERHEAD};
#[cfg(feature = "testing")]
pub(crate) use core::Core;
#[cfg(feature = "testing")]
pub(crate) use handle::assemble;
pub use handle::Node;
