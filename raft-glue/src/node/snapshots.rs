//! Snapshots in a node: taken every [`Config::snapshot_threshold`](crate::Config) applied
//! entries or on demand, written on a thread of their own, and only then used to compact the
//! log; streamed to followers out of band; installed when Raft accepts one from the leader.

use std::sync::mpsc::SyncSender;
use std::thread::JoinHandle;

use raft::eraftpb::{Message, SnapshotMetadata};
use raftwal_snapshot::{SnapshotMeta, SnapshotStore};
use raftwal_wal::BatchStore;

use super::core::Core;
use crate::error::{Cause, Error, Result};
use crate::lock;
use crate::mailbox::Event;
use crate::snapshot::{self, Received};
use crate::state_machine::StateMachine;
use crate::storage::{decode_snapshot_conf, encode_snapshot_conf};
use crate::transport::Transport;

/// A node's snapshot bookkeeping.
#[derive(Default)]
pub(crate) struct SnapshotState {
    /// Automatic snapshot every this many applied entries (0: never).
    pub(crate) threshold: u64,
    /// Entries kept below a snapshot when compacting.
    pub(crate) trailing: u64,
    /// The last snapshot taken or installed.
    pub(crate) index: u64,
    /// The applied index of the last attempt (a failed one waits another threshold).
    pub(crate) attempted: u64,
    /// The index of the last applied configuration change.
    pub(crate) conf_index: u64,
    /// The thread writing a snapshot, if one is.
    pub(crate) writer: Option<JoinHandle<()>>,
    /// Callers of `Node::snapshot` waiting for the next one.
    pub(crate) waiters: Vec<SyncSender<Result<SnapshotMeta>>>,
    /// Snapshots received from a leader, waiting for Raft's verdict (this round).
    pub(crate) received: Vec<Box<dyn Received>>,
}

impl<L, S, M, T> Core<L, S, M, T>
where
    L: BatchStore + Send + 'static,
    S: SnapshotStore + Send + 'static,
    M: StateMachine,
    T: Transport,
{
    /// Streams the snapshot a `MsgSnapshot` names (its data is the snapshot's id) to its
    /// follower on a thread of its own, then reports the outcome to Raft.
    pub(super) fn stream_snapshot(&self, msg: Message) {
        let to = msg.to;
        let store = self.node.store().snapshots_handle();
        let (transport, events) = (self.transport.clone(), self.events.clone());
        let metrics = self.metrics.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("raftwal-snapshot-to-{to}"))
            .spawn(move || {
                let started = std::time::Instant::now();
                let id = String::from_utf8_lossy(msg.get_snapshot().get_data()).into_owned();
                let ok = match store.open(&id) {
                    Ok((meta, mut data)) => transport.send_snapshot(msg, &meta, &mut data).is_ok(),
                    Err(_) => false,
                };
                if ok {
                    metrics.seconds(crate::metrics::SNAPSHOT_SEND_SECONDS, started.elapsed());
                } else {
                    tracing::warn!(
                        node = metrics.node,
                        to,
                        snapshot = id,
                        "could not send a snapshot"
                    );
                }
                metrics.count(crate::metrics::SNAPSHOTS_SENT, "ok", ok.to_string());
                let _ = events.send(Event::SnapshotSent { to, ok });
            });
        if spawned.is_err() {
            let _ = self.events.send(Event::SnapshotSent { to, ok: false });
        }
    }

    /// Starts writing a snapshot when one is due or asked for (by a caller, or by Raft for a
    /// follower the stored one does not suit) and none is being written.
    pub(super) fn maybe_snapshot(&mut self) {
        let requested = self.node.store().take_snapshot_request();
        let st = &mut self.snapshots;
        let due = requested
            || st.threshold > 0 && self.applied >= st.index.max(st.attempted) + st.threshold;
        let wanted = due || !st.waiters.is_empty();
        if st.writer.is_some() || !wanted {
            return;
        }
        if self.applied <= st.index {
            // Nothing new: the callers get the snapshot there is.
            let current = self
                .node
                .store()
                .snapshots()
                .list()
                .map(|l| l.into_iter().find(|m| m.index == st.index && st.index > 0));
            for w in st.waiters.drain(..) {
                let _ = w.send(match &current {
                    Ok(Some(m)) => Ok(m.clone()),
                    Ok(None) => Err(Error::Snapshot(Cause::new("nothing applied to snapshot"))),
                    Err(e) => Err(Error::Snapshot(Cause::new(format!(
                        "listing snapshots: {e}"
                    )))),
                });
            }
            return;
        }
        st.attempted = self.applied;
        let index = self.applied;
        let cs = self.node.raft.prs().conf().to_conf_state();
        let point = self
            .node
            .raft
            .raft_log
            .term(index)
            .map_err(|e| Cause::with(format!("reading the term of {index}"), e))
            .map(|term| snapshot::Point {
                index,
                term,
                configuration: encode_snapshot_conf(&cs, self.guard.removed()),
                configuration_index: st.conf_index,
            });
        let captured = point.and_then(|p| {
            self.sm
                .snapshot()
                .map(|s| (p, s))
                .map_err(|e| Cause::with("capturing the state machine", e))
        });
        let (point, state) = match captured {
            Ok(x) => x,
            Err(e) => {
                for w in st.waiters.drain(..) {
                    let _ = w.send(Err(Error::Snapshot(e.clone())));
                }
                return;
            }
        };
        let (store, events) = (self.node.store().snapshots_handle(), self.events.clone());
        let spawned = std::thread::Builder::new()
            .name("raftwal-snapshot-writer".into())
            .spawn(move || {
                let r = snapshot::write(store.as_ref(), &point, state);
                let _ = events.send(Event::SnapshotTaken(r));
            });
        match spawned {
            Ok(t) => st.writer = Some(t),
            Err(e) => {
                let cause = Cause::with("the snapshot writer", e);
                for w in st.waiters.drain(..) {
                    let _ = w.send(Err(Error::Spawn(cause.clone())));
                }
            }
        }
    }

    /// A snapshot is durable: compact the log below it (keeping the trailing entries) and
    /// answer who asked. A compaction failure stops the node.
    pub(super) fn on_snapshot_taken(
        &mut self,
        r: std::result::Result<SnapshotMeta, Cause>,
    ) -> Result<()> {
        if let Some(t) = self.snapshots.writer.take() {
            let _ = t.join();
        }
        let reply = match r {
            Ok(m) => {
                if m.index > self.snapshots.index {
                    let upto = m.index.saturating_sub(self.snapshots.trailing);
                    self.node
                        .store()
                        .compact(m.index, m.term, upto)
                        .map_err(|e| Error::Storage(Cause::with("compacting the log", e)))?;
                    self.snapshots.index = m.index;
                    lock(&self.status).snapshot_index = m.index;
                }
                Ok(m)
            }
            Err(e) => Err(Error::Snapshot(e)),
        };
        for w in self.snapshots.waiters.drain(..) {
            let _ = w.send(reply.clone());
        }
        Ok(())
    }

    /// Installs a snapshot Raft accepted: commits the received data, records it (log emptied,
    /// configuration and hard state) in one batch, then restores the state machine from it.
    pub(super) fn install(&mut self, meta: &SnapshotMetadata) -> Result<()> {
        let started = std::time::Instant::now();
        let mark = (meta.index, meta.term);
        let Some(pos) = self
            .snapshots
            .received
            .iter()
            .position(|r| r.mark() == mark)
        else {
            return Err(Error::Storage(Cause::new(format!(
                "Raft accepted a snapshot at index {} (term {}) whose data was not received",
                meta.index, meta.term
            ))));
        };
        let stored = self
            .snapshots
            .received
            .swap_remove(pos)
            .commit()
            .map_err(Error::Storage)?;
        // A configuration that does not decode names no removed node (Raft checked the one
        // it carries itself).
        let removed = decode_snapshot_conf(&stored.configuration)
            .map(|(_, r)| r)
            .unwrap_or_default();
        self.node
            .store()
            .apply_snapshot_with_removed(meta, &removed)
            .map_err(|e| Error::Storage(Cause::with("recording the snapshot", e)))?;
        snapshot::restore(self.node.store().snapshots(), &mut self.sm, &stored)
            .map_err(Error::Storage)?;
        self.snapshots.index = meta.index;
        self.snapshots.attempted = meta.index;
        self.snapshots.conf_index = stored.configuration_index;
        self.applied = meta.index;
        {
            let mut s = lock(&self.status);
            s.applied = meta.index;
            s.snapshot_index = meta.index;
        }
        self.publish_conf(meta.get_conf_state());
        self.refresh_removed()?;
        self.reads.applied(self.applied);
        self.metrics
            .seconds(crate::metrics::SNAPSHOT_INSTALL_SECONDS, started.elapsed());
        self.metrics
            .count_plain(crate::metrics::SNAPSHOTS_INSTALLED);
        tracing::info!(
            node = self.cfg.id,
            index = meta.index,
            term = meta.term,
            "installed a snapshot from the leader"
        );
        Ok(())
    }
}
