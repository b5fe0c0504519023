//! The persistence thread: rounds are written (and readable) on the node's thread, and made
//! durable here, one fsync for every round queued meanwhile; a round's messages (the ones that
//! acknowledge what it wrote) go out only once it is durable.

use std::sync::mpsc::{Receiver, Sender};

use raft::eraftpb::Message;
use raftwal_wal::BatchStore;

use crate::error::Cause;
use crate::mailbox::Event;

/// A round written to the log, waiting to be made durable.
pub(crate) struct Job {
    pub(crate) number: u64,
    pub(crate) ticket: Option<raftwal_wal::Ticket>,
    pub(crate) msgs: Vec<Message>,
    /// When it was submitted.
    pub(crate) submitted: std::time::Instant,
}

/// The persistence thread: one `wait` (one fsync) covers every round queued meanwhile; rounds
/// are reported back in order. A failure stops the node; it is never retried.
pub(crate) fn persist_loop<L: BatchStore>(
    log: &L,
    jobs: &Receiver<Job>,
    events: &Sender<Event>,
    latency: &metrics::Histogram,
) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while let Ok(j) = jobs.try_recv() {
            batch.push(j);
        }
        if let Some(t) = batch.iter().rev().find_map(|j| j.ticket) {
            if let Err(e) = log.wait(t) {
                let _ = events.send(Event::PersistFailed(Cause::with(
                    "making the log durable",
                    e,
                )));
                return;
            }
        }
        for j in batch {
            latency.record(j.submitted.elapsed());
            let _ = events.send(Event::Persisted {
                number: j.number,
                msgs: j.msgs,
            });
        }
    }
}
