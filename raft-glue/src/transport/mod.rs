//! The transport seam ([`Transport`]) and its two implementations: an in-memory network for
//! tests ([`MemNetwork`]) and TCP ([`TcpTransport`], [`TcpServer`]).

mod mem;
mod tcp;
mod tls;
mod wire;

use std::io::{self, Read};

use raft::eraftpb::Message;
use raftwal_snapshot::SnapshotMeta;

pub use mem::{MemNetwork, MemTransport, NetFaults, NetStats, Route};
pub use tcp::{Security, TcpOptions, TcpServer, TcpTransport, DEFAULT_MAX_FRAME};
#[cfg(feature = "dev-certs")]
pub use tls::DevCa;
pub use tls::{node_name, TlsIdentity};
pub use wire::SNAPSHOT_CHUNK;

/// Carries Raft messages to peers. Sends are fire-and-forget: Raft retries.
pub trait Transport: Send + Sync + 'static {
    /// Sends a message to `msg.to`.
    fn send(&self, msg: Message);

    /// Streams a snapshot to `msg.to` out of band, in chunks rather than inside one message:
    /// `msg` is the `MsgSnapshot` (metadata only), `meta` the stored snapshot's metadata,
    /// `data` its bytes. The receiver hands them to its node's
    /// [`Mailbox::receive_snapshot`](crate::Mailbox::receive_snapshot). Called on a thread of
    /// its own; returns once the receiver has taken the whole snapshot.
    ///
    /// # Errors
    /// The peer is unreachable or refused the snapshot, or reading `data` failed (for example
    /// a checksum mismatch at its end); Raft is told the send failed and retries later.
    fn send_snapshot(
        &self,
        msg: Message,
        meta: &SnapshotMeta,
        data: &mut dyn Read,
    ) -> io::Result<()>;

    /// Peers found unreachable since the last call; the node reports them to Raft, which then
    /// stops pipelining to them until they answer. None by default.
    fn unreachable(&self) -> Vec<u64> {
        Vec::new()
    }

    /// The largest encoded message this transport carries (and its peers accept). A node
    /// refuses to start if a message it may build (one command of
    /// [`Config::max_command_size`](crate::Config::max_command_size), or an append of
    /// [`Config::max_size_per_msg`](crate::Config::max_size_per_msg)) could exceed it.
    /// Unbounded by default.
    fn max_message_size(&self) -> usize {
        usize::MAX
    }

    /// Learns where peer `id` can be reached: the `address` a membership change that adds it
    /// carries ([`Node::add_voter_at`](crate::Node::add_voter_at)), applied on every node.
    /// Ignored by default.
    fn set_address(&self, id: u64, address: &[u8]) {
        let _ = (id, address);
    }
}
