//! The node's event queue and the [`Mailbox`] through which transports hand it messages and
//! snapshots.

use std::io::{self, Read};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Sender, SyncSender};
use std::sync::Arc;
use std::time::Instant;

use raft::eraftpb::{ConfChangeV2, Message, MessageType};
use raftwal_snapshot::SnapshotMeta;

use crate::error::{Cause, Result};
use crate::inbound::{Admitted, Backlog, Paced, SnapshotGate};
use crate::snapshot::{Inbox, Received};
use crate::types::{Applied, ReadPoint};

/// Where a command's outcome goes. It counts as in flight (for [`Node::propose`]'s bound) until
/// it is answered or dropped.
///
/// [`Node::propose`]: crate::Node::propose
pub(crate) struct Reply {
    to: Option<ReplyTo>,
    inflight: Arc<AtomicUsize>,
    counted: bool,
}

/// Who hears the outcome.
enum ReplyTo {
    Channel(SyncSender<Result<Applied>>),
    Callback(Box<dyn FnOnce(Result<Applied>) + Send>),
}

impl Reply {
    /// A reply slot counted in `inflight` (incremented now).
    pub(crate) fn new(tx: SyncSender<Result<Applied>>, inflight: Arc<AtomicUsize>) -> Self {
        Self::to(ReplyTo::Channel(tx), inflight)
    }

    /// A reply slot that calls `done` with the outcome.
    pub(crate) fn callback(
        done: Box<dyn FnOnce(Result<Applied>) + Send>,
        inflight: Arc<AtomicUsize>,
    ) -> Self {
        Self::to(ReplyTo::Callback(done), inflight)
    }

    fn to(to: ReplyTo, inflight: Arc<AtomicUsize>) -> Self {
        inflight.fetch_add(1, Ordering::SeqCst);
        Reply {
            to: Some(to),
            inflight,
            counted: true,
        }
    }

    /// Answers the proposer (who may have stopped waiting). It stops counting first, so a
    /// proposer that proposes again once answered always finds its slot free.
    pub(crate) fn send(mut self, r: Result<Applied>) {
        self.uncount();
        match self.to.take() {
            Some(ReplyTo::Channel(tx)) => {
                let _ = tx.send(r);
            }
            Some(ReplyTo::Callback(done)) => done(r),
            None => {}
        }
    }

    fn uncount(&mut self) {
        if std::mem::take(&mut self.counted) {
            self.inflight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.uncount();
    }
}

/// Who waits for a read point, and for what.
pub(crate) enum ReadRequest {
    /// `read_index` (or, with `leader_only`, `verify_leader`, which needs no apply).
    Index {
        reply: SyncSender<Result<u64>>,
        leader_only: bool,
    },
    /// `lease_read`.
    Lease(SyncSender<Result<ReadPoint>>),
}

/// What a node's thread is asked to do.
pub(crate) enum Event {
    Propose {
        data: Vec<u8>,
        reply: Reply,
    },
    ConfChange {
        cc: ConfChangeV2,
        reply: Reply,
    },
    /// A read; the caller stops waiting at `deadline`.
    Read {
        request: ReadRequest,
        deadline: Instant,
    },
    /// The persistence thread made round `number` durable: its messages may go now.
    Persisted {
        number: u64,
        msgs: Vec<Message>,
    },
    PersistFailed(Cause),
    Transfer {
        to: u64,
    },
    /// A message from the network; `peer` is the connection's (authenticated) peer, if known;
    /// `size` its share of the [`Backlog`].
    Step {
        msg: Box<Message>,
        peer: Option<u64>,
        size: usize,
    },
    /// Take a snapshot now.
    Snapshot(SyncSender<Result<SnapshotMeta>>),
    /// The snapshot thread finished.
    SnapshotTaken(std::result::Result<SnapshotMeta, Cause>),
    /// A snapshot stream to a follower ended.
    SnapshotSent {
        to: u64,
        ok: bool,
    },
    /// A leader's snapshot, received and verified, for Raft to accept (or not).
    SnapshotReceived {
        msg: Box<Message>,
        data: Box<dyn Received>,
        peer: Option<u64>,
    },
    Shutdown,
}

/// Where a transport delivers a node's incoming messages and snapshots.
#[derive(Clone)]
pub struct Mailbox {
    pub(crate) tx: Sender<Event>,
    pub(crate) inbox: Arc<dyn Inbox>,
    pub(crate) backlog: Arc<Backlog>,
    pub(crate) gate: Arc<SnapshotGate>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mailbox")
    }
}

impl Mailbox {
    /// Hands a message to the node (dropped if it has stopped, or if the messages it has not
    /// yet taken pass [`Config::max_inbound_bytes`](crate::Config::max_inbound_bytes): counted
    /// as [`DropReason::Backlog`](crate::DropReason::Backlog)). Its sender is taken on trust:
    /// for transports that know no peer identity (the in-memory network).
    pub fn deliver(&self, msg: Message) {
        self.step(msg, None);
    }

    /// Hands a message that arrived from `peer` (as the transport authenticated it) to the
    /// node, which drops it unless `peer` is its sender (and as [`Mailbox::deliver`] does).
    pub fn deliver_from(&self, peer: u64, msg: Message) {
        self.step(msg, Some(peer));
    }

    fn step(&self, msg: Message, peer: Option<u64>) {
        let size = Backlog::cost(&msg);
        if !self.backlog.take(size) {
            return;
        }
        let ev = Event::Step {
            msg: Box::new(msg),
            peer,
            size,
        };
        if self.tx.send(ev).is_err() {
            self.backlog.release(size);
        }
    }

    /// Receives a snapshot a leader streams out of band: `msg` is its `MsgSnapshot` (the
    /// metadata), `meta` the sender's stored metadata, `data` the bytes. They are written into
    /// this node's snapshot store and checked against `meta`'s size and checksum, then Raft
    /// decides: the snapshot is committed and installed if it accepts it, discarded if not.
    /// Returns once the data is written and handed over.
    ///
    /// Only the leader this node follows, in its current term, may stream it a snapshot, one
    /// stream at a time (until Raft has decided on the last one), with a configuration that
    /// decodes and is the one its message carries: anything else is refused before a byte is
    /// read. Past its first minute, a stream must average at least 1 MiB/s.
    ///
    /// # Errors
    /// A message that is not the snapshot's, a sender that is not this node's leader in its
    /// term, another stream under way, a short or damaged stream, the store's errors, or a
    /// stopped node; nothing is kept then.
    pub fn receive_snapshot(
        &self,
        msg: Message,
        meta: &SnapshotMeta,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        self.receive(None, msg, meta, data)
    }

    /// As [`Mailbox::receive_snapshot`], from `peer` as the transport authenticated it: a
    /// snapshot whose sender is not `peer` is refused.
    ///
    /// # Errors
    /// As [`Mailbox::receive_snapshot`].
    pub fn receive_snapshot_from(
        &self,
        peer: u64,
        msg: Message,
        meta: &SnapshotMeta,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        if msg.from != peer {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("a snapshot from {} on the connection of {peer}", msg.from),
            ));
        }
        self.receive(Some(peer), msg, meta, data)
    }

    fn receive(
        &self,
        peer: Option<u64>,
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
        let pass = self.gate.enter(&msg, meta)?;
        let mut paced = Paced::new(data);
        let data: Box<dyn Received> = Box::new(Admitted {
            inner: self.inbox.receive(meta, &mut paced)?,
            _pass: pass,
        });
        let ev = Event::SnapshotReceived {
            msg: Box::new(msg),
            data,
            peer,
        };
        if let Err(mpsc::SendError(Event::SnapshotReceived { data, .. })) = self.tx.send(ev) {
            data.cancel();
            return Err(io::Error::other("the node has stopped"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::StoreInbox;
    use raft::eraftpb::Entry;
    use raftwal_snapshot::MemSnapshotStore;

    #[test]
    fn deliveries_past_the_backlog_are_dropped_and_counted() {
        let (tx, rx) = mpsc::channel();
        let mb = Mailbox {
            tx,
            inbox: Arc::new(StoreInbox(Arc::new(MemSnapshotStore::new(1).unwrap()))),
            backlog: Arc::new(Backlog::new(10_000)),
            gate: Arc::new(SnapshotGate::new(Arc::default())),
        };
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.mut_entries().push(Entry {
            data: vec![7u8; 1000].into(),
            ..Default::default()
        });
        for _ in 0..100 {
            mb.deliver_from(2, m.clone());
        }
        let sizes: Vec<usize> = rx
            .try_iter()
            .filter_map(|e| match e {
                Event::Step { size, .. } => Some(size),
                _ => None,
            })
            .collect();
        assert!((5..10).contains(&sizes.len()), "{} queued", sizes.len());
        assert!(sizes.iter().sum::<usize>() <= 10_000);
        assert_eq!(mb.backlog.take_dropped(), 100 - sizes.len() as u64);
        assert_eq!(mb.backlog.take_dropped(), 0);
        // Once the Raft thread has taken them, there is room again.
        mb.deliver(m.clone());
        assert_eq!(rx.try_iter().count(), 0, "still full");
        for s in sizes {
            mb.backlog.release(s);
        }
        mb.deliver(m);
        let sizes: Vec<usize> = rx
            .try_iter()
            .filter_map(|e| match e {
                Event::Step { size, .. } => Some(size),
                _ => None,
            })
            .collect();
        assert_eq!(sizes.len(), 1);
        assert_eq!(mb.backlog.take_dropped(), 1);
        // A message larger than the whole backlog still passes when it is alone.
        mb.backlog.release(sizes[0]);
        let mut big = Message::default();
        big.set_msg_type(MessageType::MsgAppend);
        big.mut_entries().push(Entry {
            data: vec![7u8; 20_000].into(),
            ..Default::default()
        });
        mb.deliver(big.clone());
        mb.deliver(big);
        assert_eq!(rx.try_iter().count(), 1);
        assert_eq!(mb.backlog.take_dropped(), 1);
    }
}
