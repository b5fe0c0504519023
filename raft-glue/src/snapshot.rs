//! Snapshots in a node: taken on a thread of their own while the state machine keeps applying,
//! received from a leader out of band (streamed into the snapshot store, verified, and only
//! then handed to Raft), and restored into the state machine.
//!
//! The order that keeps them safe:
//! - a local snapshot is committed (durable) in the [`SnapshotStore`] before the log is
//!   compacted and before its `(index, term)` mark is recorded;
//! - a received snapshot is written to a sink and checked against the sender's size and
//!   checksum; it is committed only if Raft accepts it, and then installed (log emptied, mark,
//!   configuration and hard state recorded in one batch) before the state machine is restored.

use std::io::{self, Read, Write};

use crate::state_machine::{StateMachine, StateSnapshot};
use std::sync::Arc;

use raftwal_snapshot::{SnapshotMeta, SnapshotSink, SnapshotStore};

use crate::error::Cause;

/// A snapshot received from a leader, written to this node's store but not committed yet.
pub(crate) trait Received: Send {
    /// The snapshot's `(index, term)`.
    fn mark(&self) -> (u64, u64);
    /// Makes it durable and listed.
    fn commit(self: Box<Self>) -> Result<SnapshotMeta, Cause>;
    /// Discards it.
    fn cancel(self: Box<Self>);
}

/// Writes incoming snapshots into a node's store (type-erased, so a mailbox is not generic).
pub(crate) trait Inbox: Send + Sync {
    /// Streams `data` into a new sink, checking it against `meta`'s size and checksum.
    fn receive(&self, meta: &SnapshotMeta, data: &mut dyn Read) -> io::Result<Box<dyn Received>>;
}

/// The [`Inbox`] of a node whose snapshots live in `S`.
pub(crate) struct StoreInbox<S>(pub Arc<S>);

struct Pending<K> {
    sink: K,
    mark: (u64, u64),
}

impl<K: SnapshotSink + 'static> Received for Pending<K> {
    fn mark(&self) -> (u64, u64) {
        self.mark
    }

    fn commit(self: Box<Self>) -> Result<SnapshotMeta, Cause> {
        let mark = self.mark;
        self.sink
            .commit()
            .map_err(|e| Cause::with(format!("committing the snapshot received at {}", mark.0), e))
    }

    fn cancel(self: Box<Self>) {
        let _ = self.sink.cancel();
    }
}

/// A writer that counts and checksums what passes through it.
struct Tee<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W: Write> Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl<S> Inbox for StoreInbox<S>
where
    S: SnapshotStore + 'static,
    S::Sink: 'static,
{
    fn receive(&self, meta: &SnapshotMeta, data: &mut dyn Read) -> io::Result<Box<dyn Received>> {
        let sink = self
            .0
            .create(
                meta.index,
                meta.term,
                &meta.configuration,
                meta.configuration_index,
            )
            .map_err(io::Error::other)?;
        let mut tee = Tee {
            inner: sink,
            crc: crc32fast::Hasher::new(),
            len: 0,
        };
        // Never more than announced: a sender that keeps going is cut off and refused.
        let copied = io::copy(&mut data.take(meta.size.saturating_add(1)), &mut tee);
        let (crc, len) = (tee.crc.finalize(), tee.len);
        let sink = tee.inner;
        let problem = match copied {
            Err(e) => Some(e),
            Ok(_) if len != meta.size => Some(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot {} (index {}): received {len} bytes, {} announced",
                    meta.id, meta.index, meta.size
                ),
            )),
            Ok(_) if crc != meta.checksum => Some(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "snapshot {} (index {}): checksum {crc:#010x} received, {:#010x} announced",
                    meta.id, meta.index, meta.checksum
                ),
            )),
            Ok(_) => None,
        };
        if let Some(e) = problem {
            let _ = sink.cancel();
            return Err(e);
        }
        Ok(Box::new(Pending {
            sink,
            mark: (meta.index, meta.term),
        }))
    }
}

/// What a local snapshot covers.
pub(crate) struct Point {
    pub index: u64,
    pub term: u64,
    pub configuration: Vec<u8>,
    pub configuration_index: u64,
}

/// Writes a captured state into `store` as the snapshot at `at`, durably.
pub(crate) fn write<S: SnapshotStore>(
    store: &S,
    at: &Point,
    mut state: Box<dyn StateSnapshot>,
) -> Result<SnapshotMeta, Cause> {
    let mut sink = store
        .create(at.index, at.term, &at.configuration, at.configuration_index)
        .map_err(|e| Cause::with(format!("creating snapshot at {}", at.index), e))?;
    if let Err(e) = state.persist(&mut sink).and_then(|()| sink.flush()) {
        let _ = sink.cancel();
        return Err(Cause::with(format!("writing snapshot at {}", at.index), e));
    }
    sink.commit()
        .map_err(|e| Cause::with(format!("committing snapshot at {}", at.index), e))
}

/// Replaces the state machine's state with the stored snapshot `meta`, reading it to the end
/// so its checksum is verified.
pub(crate) fn restore<S: SnapshotStore, M: StateMachine>(
    store: &S,
    sm: &mut M,
    meta: &SnapshotMeta,
) -> Result<(), Cause> {
    let what = format!("restoring snapshot {}", meta.id);
    let (_, mut r) = store
        .open(&meta.id)
        .map_err(|e| Cause::with(what.clone(), e))?;
    sm.restore(&mut r)
        .map_err(|e| Cause::with(what.clone(), e))?;
    io::copy(&mut r, &mut io::sink()).map_err(|e| Cause::with(what, e))?;
    Ok(())
}
