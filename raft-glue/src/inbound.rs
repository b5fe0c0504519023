//! What the network may hand a node, bounded: the received messages waiting for its Raft
//! thread ([`Backlog`]), and who may stream it a snapshot, how fast, and with what
//! configuration ([`SnapshotGate`]).

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, Message};
use raftwal_snapshot::SnapshotMeta;

use crate::snapshot::Received;
use crate::storage::decode_snapshot_conf;
use crate::types::Status;

/// The bytes of network messages handed to a node and not yet taken by its Raft thread, and
/// the messages dropped because there were too many: a peer that sends faster than the node
/// steps cannot grow its memory (Raft resends what is lost).
#[derive(Debug)]
pub(crate) struct Backlog {
    bytes: AtomicUsize,
    max: usize,
    dropped: AtomicU64,
}

impl Backlog {
    pub(crate) fn new(max: usize) -> Self {
        Backlog {
            bytes: AtomicUsize::new(0),
            max,
            dropped: AtomicU64::new(0),
        }
    }

    /// What a message costs in memory: its encoded size, plus the `Message` itself and an
    /// `Entry` for each entry (an empty message or entry takes a few bytes to send and over a
    /// hundred to hold).
    pub(crate) fn cost(m: &Message) -> usize {
        use protobuf::Message as _;
        let held = std::mem::size_of::<Message>()
            .saturating_add(m.entries.len().saturating_mul(std::mem::size_of::<Entry>()));
        (m.compute_size() as usize).saturating_add(held)
    }

    /// Takes `size` bytes, unless that would pass the maximum (the message is dropped then);
    /// an empty backlog takes any one message, so none is too large ever to pass.
    pub(crate) fn take(&self, size: usize) -> bool {
        let taken = self
            .bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| {
                b.checked_add(size).filter(|&n| b == 0 || n <= self.max)
            });
        if taken.is_err() {
            self.dropped.fetch_add(1, Ordering::SeqCst);
        }
        taken.is_ok()
    }

    /// The Raft thread took a message of `size` bytes.
    pub(crate) fn release(&self, size: usize) {
        self.bytes.fetch_sub(size, Ordering::SeqCst);
    }

    /// Messages dropped since the last call.
    pub(crate) fn take_dropped(&self) -> u64 {
        self.dropped.swap(0, Ordering::SeqCst)
    }
}

/// The slowest a snapshot stream may be, on average, past its first [`STREAM_GRACE`].
const MIN_STREAM_RATE: f64 = (1 << 20) as f64;
/// The time every stream has before its rate counts.
const STREAM_GRACE: Duration = Duration::from_secs(60);

/// Who may stream this node a snapshot: the leader it follows, in its term, one stream at a
/// time, each at least 1 MiB/s on average past its first minute, with a configuration that
/// decodes and matches the one its message carries. A stream is written to disk before Raft
/// sees its message: anything else could fill the disk, or hold the way shut for the leader.
#[derive(Debug)]
pub(crate) struct SnapshotGate {
    /// The node's published status (its leader and term).
    status: Arc<Mutex<Status>>,
    /// A stream is being received, or its snapshot waits for Raft's verdict.
    busy: Arc<AtomicBool>,
}

/// The way through the gate, held until the snapshot it let in is committed or discarded
/// (it is released when dropped, also on a panic).
#[derive(Debug)]
pub(crate) struct Pass(Arc<AtomicBool>);

impl Drop for Pass {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

fn refused(kind: io::ErrorKind, why: String) -> io::Error {
    io::Error::new(kind, why)
}

impl SnapshotGate {
    pub(crate) fn new(status: Arc<Mutex<Status>>) -> Self {
        SnapshotGate {
            status,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Lets the stream of `msg` (announced by `meta`) through, or says why not.
    pub(crate) fn enter(&self, msg: &Message, meta: &SnapshotMeta) -> io::Result<Pass> {
        let (leader, term) = {
            let s = crate::lock(&self.status);
            (s.leader, s.term)
        };
        if leader != Some(msg.from) || msg.term != term {
            return Err(refused(
                io::ErrorKind::PermissionDenied,
                format!(
                    "a snapshot from {} in term {} while following {leader:?} in term {term}",
                    msg.from, msg.term
                ),
            ));
        }
        let bad = |why: String| Err(refused(io::ErrorKind::InvalidData, why));
        match decode_snapshot_conf(&meta.configuration) {
            Err(e) => return bad(format!("snapshot {}: configuration: {e}", meta.id)),
            Ok((cs, _)) if cs != *msg.get_snapshot().get_metadata().get_conf_state() => {
                return bad(format!(
                    "snapshot {}: its configuration differs from its message's",
                    meta.id
                ))
            }
            Ok(_) => {}
        }
        if self.busy.swap(true, Ordering::SeqCst) {
            return Err(refused(
                io::ErrorKind::WouldBlock,
                "another snapshot is being received".into(),
            ));
        }
        Ok(Pass(self.busy.clone()))
    }
}

/// A stream that fails once it falls below [`MIN_STREAM_RATE`] on average, past its first
/// [`STREAM_GRACE`] (so a sender trickling bytes cannot hold the gate shut).
pub(crate) struct Paced<'a> {
    inner: &'a mut dyn Read,
    started: Instant,
    read: u64,
}

impl<'a> Paced<'a> {
    pub(crate) fn new(inner: &'a mut dyn Read) -> Self {
        Paced {
            inner,
            started: Instant::now(),
            read: 0,
        }
    }
}

impl Read for Paced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let late = self.started.elapsed().saturating_sub(STREAM_GRACE);
        if (self.read as f64) < late.as_secs_f64() * MIN_STREAM_RATE {
            return Err(refused(
                io::ErrorKind::TimedOut,
                "the snapshot stream is too slow".into(),
            ));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// A received snapshot holding its [`Pass`] until it is committed or discarded.
pub(crate) struct Admitted {
    pub(crate) inner: Box<dyn Received>,
    pub(crate) _pass: Pass,
}

impl Received for Admitted {
    fn mark(&self) -> (u64, u64) {
        self.inner.mark()
    }

    fn commit(self: Box<Self>) -> Result<SnapshotMeta, crate::error::Cause> {
        self.inner.commit()
    }

    fn cancel(self: Box<Self>) {
        self.inner.cancel();
    }
}
