//! The transport seam, and an in-memory network for tests with per-link partitions and drops.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use raft::eraftpb::Message;

use crate::node::Mailbox;

/// Carries Raft messages to peers. Sends are fire-and-forget: Raft retries.
pub trait Transport: Send + 'static {
    /// Sends a message to `msg.to`.
    fn send(&self, msg: Message);
}

#[derive(Default)]
struct Net {
    mailboxes: HashMap<u64, Mailbox>,
    /// Directed links that drop everything.
    cut: BTreeSet<(u64, u64)>,
}

/// An in-memory network connecting nodes of one process. Links can be cut per direction, so
/// tests can partition the cluster and heal it.
#[derive(Clone, Default)]
pub struct MemNetwork {
    inner: Arc<Mutex<Net>>,
}

impl std::fmt::Debug for MemNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNetwork").finish_non_exhaustive()
    }
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connects (or reconnects, after a restart) node `id`'s mailbox.
    pub fn connect(&self, id: u64, mailbox: Mailbox) {
        self.lock().mailboxes.insert(id, mailbox);
    }

    /// Disconnects node `id` (it crashed): messages to it are dropped.
    pub fn disconnect(&self, id: u64) {
        self.lock().mailboxes.remove(&id);
    }

    /// The transport node `from` sends through.
    pub fn transport(&self, from: u64) -> MemTransport {
        MemTransport {
            net: self.clone(),
            from,
        }
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        let mut n = self.lock();
        for &x in a {
            for &y in b {
                n.cut.insert((x, y));
                n.cut.insert((y, x));
            }
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.lock().cut.clear();
    }
}

/// One node's handle on a [`MemNetwork`].
#[derive(Clone, Debug)]
pub struct MemTransport {
    net: MemNetwork,
    from: u64,
}

impl Transport for MemTransport {
    fn send(&self, msg: Message) {
        let target = {
            let n = self.net.lock();
            if n.cut.contains(&(self.from, msg.to)) {
                return;
            }
            n.mailboxes.get(&msg.to).cloned()
        };
        if let Some(m) = target {
            m.deliver(msg);
        }
    }
}
