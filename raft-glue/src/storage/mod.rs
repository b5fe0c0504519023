//! `raft::Storage` over the raftwal stores: [`RaftStorage`].
//!
//! Raft's persistent state maps onto the stores like this:
//! - log entries: the [`LogStore`] (raft-rs entry types map one to one onto [`EntryKind`]);
//! - `HardState` and `ConfState`: stable keys, written in the same [`WriteBatch`] as the
//!   entries of a round, so a round costs one fsync;
//! - the last applied snapshot's `(index, term)`: a stable key, written in the same batch that
//!   empties the log when a snapshot is installed; its data lives in the [`SnapshotStore`], and
//!   [`raft::Storage::snapshot`] returns its metadata with the snapshot's *id* as `data`, so the
//!   bytes can be streamed out of band instead of inside one Raft message.
//!
//! The newest entries are also kept in memory as written ([`TailCache`]): Raft reads them back
//! constantly (the term of the entry before each append it sends, the entries to replicate),
//! and serving those from memory saves a read and a checksum each. The snapshot mark is cached
//! the same way. Both are only right while every write goes through the adapter.

use crate::lock;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfState, Entry, EntryType, HardState, SnapshotMetadata,
};
use std::collections::BTreeSet;
use std::sync::Mutex;

use raftwal_snapshot::SnapshotStore;
use raftwal_wal::{BatchStore, WriteBatch};

mod cache;
mod codec;
mod error;
mod reads;

pub use codec::{
    decode_snapshot_conf, describe_stable_key, encode_conf_state, encode_snapshot_conf,
    to_log_entry, to_raft_entry, COMPACTED_KEY, CONF_INDEX_KEY, CONF_STATE_KEY, HARD_STATE_KEY,
    REMOVED_KEY, SNAPSHOT_KEY,
};
pub use error::Error;

use cache::TailCache;
use codec::{decode, decode_ids, decode_mark, departed, encode, encode_ids, encode_mark};

/// `raft::Storage` over a [`BatchStore`] (for example [`raftwal_wal::Wal`]) and a
/// [`SnapshotStore`]. Besides the trait, it offers the writes a Raft node makes: append a round
/// (entries, cutting a conflicting tail, and the hard state, atomically), install a snapshot,
/// compact.
///
/// An application driving its own raft-rs `RawNode` can use it directly:
///
/// ```
/// use raft::eraftpb::ConfState;
/// use raft::{Config, RawNode, Storage};
/// use raftwal_glue::RaftStorage;
/// use raftwal_snapshot::MemSnapshotStore;
/// use raftwal_wal::{MemStore, Wal, WalOptions};
///
/// let dir = tempfile::tempdir().unwrap();
/// let wal = Wal::open(dir.path(), WalOptions::default().segment_size(1 << 20)).unwrap();
/// let storage = RaftStorage::new(wal, MemSnapshotStore::new(1).unwrap());
/// // The initial membership goes into the log; its entries count as applied here.
/// let applied = storage.initialize(&ConfState { voters: vec![1], ..Default::default() }).unwrap();
///
/// let logger = slog::Logger::root(slog::Discard, slog::o!());
/// let config = Config { id: 1, applied, ..Default::default() };
/// let mut node = RawNode::new(&config, storage, &logger).unwrap();
/// node.campaign().unwrap();
/// let mut applied = Vec::new();
/// for round in 0..10 {
///     if round == 3 {
///         node.propose(vec![], b"put x=1".to_vec()).unwrap();
///     }
///     if !node.has_ready() {
///         continue;
///     }
///     let mut ready = node.ready();
///     // Persist the round's entries and hard state with one commit record and one fsync.
///     node.store().append(ready.entries(), ready.hs()).unwrap();
///     applied.extend(ready.take_committed_entries());
///     let mut light = node.advance(ready);
///     if let Some(commit) = light.commit_index() {
///         node.store().set_commit(commit).unwrap();
///     }
///     applied.extend(light.take_committed_entries());
///     node.advance_apply();
/// }
/// assert!(applied.iter().any(|e| &e.data[..] == b"put x=1"));
/// assert!(node.store().last_index().unwrap() >= 2);
/// ```
#[derive(Debug)]
pub struct RaftStorage<L, S> {
    log: std::sync::Arc<L>,
    snapshots: std::sync::Arc<S>,
    /// Raft asked for a snapshot the store does not have (none yet, or one whose membership
    /// lacks the recipient): the application should take a fresh one.
    wanted: std::sync::atomic::AtomicBool,
    cache: Mutex<TailCache>,
    /// The snapshot mark, once read.
    mark: Mutex<Option<(u64, u64)>>,
    /// The compaction point, once read.
    compacted: Mutex<Option<(u64, u64)>>,
}

impl<L: BatchStore, S: SnapshotStore> RaftStorage<L, S> {
    /// Wraps the stores, and protects the snapshot the log's durable mark names from the
    /// snapshot store's retention ([`SnapshotStore::protect`]).
    pub fn new(log: L, snapshots: S) -> Self {
        let s = RaftStorage {
            log: std::sync::Arc::new(log),
            snapshots: std::sync::Arc::new(snapshots),
            wanted: std::sync::atomic::AtomicBool::new(false),
            cache: Mutex::default(),
            mark: Mutex::default(),
            compacted: Mutex::default(),
        };
        if let Ok((index, term)) = s.snapshot_mark() {
            if index > 0 {
                s.snapshots.protect(index, term);
            }
        }
        s
    }

    /// The log store.
    pub fn log(&self) -> &L {
        &self.log
    }

    /// A shared handle on the log store (for a persistence thread waiting on tickets).
    pub fn log_handle(&self) -> std::sync::Arc<L> {
        self.log.clone()
    }

    /// The snapshot store.
    pub fn snapshots(&self) -> &S {
        &self.snapshots
    }

    /// Whether Raft asked for a snapshot to send that the store could not give (there is none
    /// yet, or the newest one's membership does not include the recipient, which a follower
    /// would refuse); clears the request. The application should then take a fresh snapshot:
    /// Raft asks again on the follower's next response.
    pub fn take_snapshot_request(&self) -> bool {
        self.wanted.swap(false, std::sync::atomic::Ordering::SeqCst)
    }

    /// A shared handle on the snapshot store (for threads that write or stream snapshots).
    pub fn snapshots_handle(&self) -> std::sync::Arc<S> {
        self.snapshots.clone()
    }

    /// Bootstraps a brand-new node with this configuration. Like etcd, the initial membership
    /// is written into the log, as committed conf-change entries 1..=n of term 1 (one `AddNode`
    /// per voter, identical on every founding node), so that a node joining later learns the
    /// whole configuration by replaying the log. Returns the index of the last of them (0 for a
    /// node started with no voters, which joins an existing cluster).
    ///
    /// # Errors
    /// Store errors.
    pub fn initialize(&self, conf: &ConfState) -> Result<u64, Error> {
        let mut b = WriteBatch::new();
        for (i, id) in conf.voters.iter().enumerate() {
            let mut cc = ConfChange::default();
            cc.set_change_type(ConfChangeType::AddNode);
            cc.node_id = *id;
            let mut e = Entry {
                index: i as u64 + 1,
                term: 1,
                data: encode(&cc).into(),
                ..Default::default()
            };
            e.set_entry_type(EntryType::EntryConfChange);
            b.append(to_log_entry(&e));
        }
        let n = conf.voters.len() as u64;
        let hs = HardState {
            term: u64::from(n > 0),
            commit: n,
            ..Default::default()
        };
        b.set(CONF_STATE_KEY, &encode(conf))
            .set_u64(CONF_INDEX_KEY, n)
            .set(HARD_STATE_KEY, &encode(&hs));
        self.log.commit(b)?;
        lock(&self.cache).clear();
        Ok(n)
    }

    /// Whether this node has any persisted Raft state (so it restarts rather than bootstraps).
    ///
    /// # Errors
    /// Store errors.
    pub fn is_initialized(&self) -> Result<bool, Error> {
        Ok(self.log.get(CONF_STATE_KEY)?.is_some())
    }

    /// Persists a round: entries (cutting any conflicting tail first) and the hard state, in
    /// one atomic, durable batch.
    ///
    /// # Errors
    /// Store errors; nothing is written then.
    pub fn append(&self, entries: &[Entry], hs: Option<&HardState>) -> Result<(), Error> {
        if let Some(t) = self.submit(entries, hs)? {
            self.log.wait(t)?;
        }
        Ok(())
    }

    /// Writes a round as [`RaftStorage::append`] does, readable at once, without waiting for
    /// durability: wait for the returned ticket (with the log's [`BatchStore::wait`]) before
    /// acknowledging it. `None` if there was nothing to write.
    ///
    /// # Errors
    /// Store errors; nothing is written then.
    pub fn submit(
        &self,
        entries: &[Entry],
        hs: Option<&HardState>,
    ) -> Result<Option<raftwal_wal::Ticket>, Error> {
        let mut b = WriteBatch::new();
        if let Some(e) = entries.first() {
            let (first, last) = (self.first()?, self.last()?);
            if e.index < first || e.index > last + 1 {
                return Err(Error::NotContiguous {
                    index: e.index,
                    first,
                    last,
                });
            }
            if self.log.last_index()? != 0 && e.index <= last {
                b.truncate_after(e.index - 1);
            }
            b.extend(entries.iter().map(to_log_entry));
        }
        if let Some(hs) = hs {
            b.set(HARD_STATE_KEY, &encode(hs));
        }
        if b.is_empty() {
            return Ok(None);
        }
        let ticket = self.log.submit(b);
        let mut cache = lock(&self.cache);
        match ticket {
            Ok(_) => cache.put(entries),
            Err(_) => cache.clear(),
        }
        Ok(Some(ticket?))
    }

    /// The persisted hard state.
    ///
    /// # Errors
    /// Store or decode errors.
    pub fn hard_state(&self) -> Result<HardState, Error> {
        match self.log.get(HARD_STATE_KEY)? {
            Some(b) => decode("HardState", &b),
            None => Ok(HardState::default()),
        }
    }

    /// The persisted configuration.
    ///
    /// # Errors
    /// Store or decode errors.
    pub fn conf_state(&self) -> Result<ConfState, Error> {
        match self.log.get(CONF_STATE_KEY)? {
            Some(b) => decode("ConfState", &b),
            None => Ok(ConfState::default()),
        }
    }

    /// Persists a new commit index (from a light ready).
    ///
    /// # Errors
    /// Store errors.
    pub fn set_commit(&self, commit: u64) -> Result<(), Error> {
        let mut hs = self.hard_state()?;
        hs.commit = commit;
        self.append(&[], Some(&hs))
    }

    /// Persists a configuration applied from a committed conf change (without recording
    /// which: see [`RaftStorage::set_conf_state_at`]).
    ///
    /// # Errors
    /// Store errors.
    pub fn set_conf_state(&self, cs: &ConfState) -> Result<(), Error> {
        let mut b = WriteBatch::new();
        self.set_conf(&mut b, cs, &BTreeSet::new())?;
        Ok(self.log.commit(b)?)
    }

    /// Adds the new configuration to `b`, with the removed nodes it changes (`history`: nodes
    /// known to have left before it, as a snapshot records them).
    fn set_conf(
        &self,
        b: &mut WriteBatch,
        cs: &ConfState,
        history: &BTreeSet<u64>,
    ) -> Result<(), Error> {
        let mut removed = self.removed_nodes()?;
        let before = removed.clone();
        removed.extend(history);
        departed(&self.conf_state()?, cs, &mut removed);
        if removed != before {
            b.set(REMOVED_KEY, &encode_ids(&removed));
        }
        b.set(CONF_STATE_KEY, &encode(cs));
        Ok(())
    }

    /// The nodes that left this node's configuration (by a change it applied or a snapshot it
    /// installed) and were not added back. A node's guard drops their messages.
    ///
    /// # Errors
    /// Store or decode errors.
    pub fn removed_nodes(&self) -> Result<BTreeSet<u64>, Error> {
        match self.log.get(REMOVED_KEY)? {
            Some(b) => decode_ids(&b),
            None => Ok(Default::default()),
        }
    }

    /// Persists the configuration produced by the conf change at `index`, with that index
    /// (one atomic, durable batch), so that a restart replaying the log knows which changes
    /// the stored configuration already includes.
    ///
    /// # Errors
    /// Store errors.
    pub fn set_conf_state_at(&self, cs: &ConfState, index: u64) -> Result<(), Error> {
        let mut b = WriteBatch::new();
        self.set_conf(&mut b, cs, &BTreeSet::new())?;
        b.set_u64(CONF_INDEX_KEY, index);
        Ok(self.log.commit(b)?)
    }

    /// The index up to which the stored configuration includes every change (0 if unknown:
    /// a store written before it was recorded).
    ///
    /// # Errors
    /// Store errors.
    pub fn conf_index(&self) -> Result<u64, Error> {
        Ok(self.log.get_u64(CONF_INDEX_KEY)?.unwrap_or(0))
    }

    /// The last applied snapshot's `(index, term)`, `(0, 0)` if none.
    ///
    /// # Errors
    /// Store errors.
    pub fn snapshot_mark(&self) -> Result<(u64, u64), Error> {
        let mut cached = lock(&self.mark);
        if let Some(m) = *cached {
            return Ok(m);
        }
        let m = decode_mark("snapshot mark", self.log.get(SNAPSHOT_KEY)?)?;
        *cached = Some(m);
        Ok(m)
    }

    /// Commits a batch that changes the snapshot mark (to `mark`) and, through `cut`, the
    /// cached tail; on failure the caches are dropped, to be read again from the log.
    fn commit_marked(
        &self,
        b: WriteBatch,
        mark: (u64, u64),
        cut: impl FnOnce(&mut TailCache),
    ) -> Result<(), Error> {
        let r = self.log.commit(b);
        let mut cache = lock(&self.cache);
        let mut cached = lock(&self.mark);
        if r.is_ok() {
            cut(&mut cache);
            *cached = Some(mark);
            // The new mark is durable: its snapshot is the one to keep from now on.
            self.snapshots.protect(mark.0, mark.1);
        } else {
            cache.clear();
            *cached = None;
        }
        Ok(r?)
    }

    /// Installs a snapshot whose data is already durable in the snapshot store: in one atomic
    /// batch, the log is emptied (the next entry follows the snapshot), and the snapshot mark,
    /// configuration and hard state (commit ≥ the snapshot's index) are recorded.
    ///
    /// # Errors
    /// [`Error::SnapshotOutOfDate`] for a snapshot older than the log's first index; store
    /// errors. Nothing changes then.
    pub fn apply_snapshot(&self, meta: &SnapshotMetadata) -> Result<(), Error> {
        self.apply_snapshot_with_removed(meta, &BTreeSet::new())
    }

    /// As [`RaftStorage::apply_snapshot`], adding `removed` (the nodes that left the cluster
    /// up to the snapshot, from its configuration: [`decode_snapshot_conf`]) to
    /// [`RaftStorage::removed_nodes`] in the same batch.
    ///
    /// # Errors
    /// As [`RaftStorage::apply_snapshot`].
    pub fn apply_snapshot_with_removed(
        &self,
        meta: &SnapshotMetadata,
        removed: &BTreeSet<u64>,
    ) -> Result<(), Error> {
        let first = self.first()?;
        if meta.index < first {
            return Err(Error::SnapshotOutOfDate {
                index: meta.index,
                first,
            });
        }
        let mut hs = self.hard_state()?;
        hs.term = hs.term.max(meta.term);
        hs.commit = hs.commit.max(meta.index);
        let mark = encode_mark((meta.index, meta.term));
        let mut b = WriteBatch::new();
        let first = self.log.first_index()?;
        if self.log.last_index()? != 0 {
            b.truncate_after(first - 1);
        }
        self.set_conf(&mut b, meta.get_conf_state(), removed)?;
        b.set(SNAPSHOT_KEY, &mark)
            .set_u64(CONF_INDEX_KEY, meta.index)
            .set(HARD_STATE_KEY, &encode(&hs));
        self.commit_marked(b, (meta.index, meta.term), TailCache::clear)
    }

    /// Records a snapshot taken locally (its data already durable in the store) and compacts
    /// the log up to `compact_to` (at most the snapshot's index), keeping the entries after it.
    /// The mark never moves back: an older snapshot only compacts. The hard state's commit is
    /// raised to the snapshot's index in the same batch (its entries were applied, so they are
    /// committed), so a restart from it never finds `applied > commit`.
    ///
    /// # Errors
    /// Store errors.
    pub fn compact(
        &self,
        snapshot_index: u64,
        snapshot_term: u64,
        compact_to: u64,
    ) -> Result<(), Error> {
        self.record_mark(snapshot_index, snapshot_term)?;
        let upto = compact_to.min(snapshot_index).min(self.log.last_index()?);
        if upto >= self.log.first_index()? && upto > 0 {
            self.compact_log(upto + 1)?;
        }
        Ok(())
    }

    /// Discards the entries before `index` (raft-rs's `MemStorage::compact`): `index` becomes
    /// the first index. The term of the entry before it (the compaction point) is recorded
    /// first, so [`raft::Storage::term`] still answers for it and a follower whose next entry
    /// is the first one is sent entries, not a snapshot. Compacting to or below the first
    /// index does nothing. Only entries known to be applied may be compacted.
    ///
    /// # Errors
    /// [`Error::CompactBeyondLog`] past `last_index + 1`; store errors.
    pub fn compact_log(&self, index: u64) -> Result<(), Error> {
        let first = self.first()?;
        let last = self.last()?;
        if index <= first {
            return Ok(());
        }
        if index > last + 1 {
            return Err(Error::CompactBeyondLog { index, last });
        }
        let term = raft::Storage::term(self, index - 1).map_err(|e| Error::Decode {
            what: "compaction point",
            detail: e.to_string(),
        })?;
        let point = (index - 1, term);
        self.log.set(COMPACTED_KEY, &encode_mark(point))?;
        *lock(&self.compacted) = Some(point);
        let r = self.log.delete_range(first, index - 1);
        let mut cache = lock(&self.cache);
        match r {
            Ok(()) => cache.drop_upto(index - 1),
            Err(_) => cache.clear(),
        }
        Ok(r?)
    }

    /// The compaction point: the `(index, term)` of the last entry compacted away, `(0, 0)` if
    /// none was recorded.
    ///
    /// # Errors
    /// Store or decode errors.
    pub fn compaction_point(&self) -> Result<(u64, u64), Error> {
        let mut cached = lock(&self.compacted);
        if let Some(p) = *cached {
            return Ok(p);
        }
        let p = decode_mark("compaction point", self.log.get(COMPACTED_KEY)?)?;
        *cached = Some(p);
        Ok(p)
    }

    fn record_mark(&self, index: u64, term: u64) -> Result<(), Error> {
        if self.snapshot_mark()?.0 >= index {
            return Ok(());
        }
        let mut hs = self.hard_state()?;
        hs.commit = hs.commit.max(index);
        let mark = encode_mark((index, term));
        let mut b = WriteBatch::new();
        b.set(SNAPSHOT_KEY, &mark).set(HARD_STATE_KEY, &encode(&hs));
        self.commit_marked(b, (index, term), |_| {})
    }

    /// The snapshot a restarting node restores its state machine from, `None` if it has none:
    /// the snapshot of the recorded mark, or a newer local one that was made durable just before
    /// a crash, before its mark was recorded (its index and term still in the log; its mark is
    /// recorded now).
    ///
    /// # Errors
    /// [`Error::MissingSnapshot`] if the mark's snapshot is not in the store; store errors.
    pub fn recover_snapshot(&self) -> Result<Option<raftwal_snapshot::SnapshotMeta>, Error> {
        let (index, term) = self.snapshot_mark()?;
        let (first, last) = (self.log.first_index()?, self.log.last_index()?);
        for m in self.snapshots.list()? {
            if (m.index, m.term) == (index, term) {
                return Ok(Some(m));
            }
            let in_log = first != 0 && (first..=last).contains(&m.index);
            if m.index > index && in_log && self.log.get_log(m.index)?.term == m.term {
                self.record_mark(m.index, m.term)?;
                return Ok(Some(m));
            }
        }
        if index == 0 {
            Ok(None)
        } else {
            Err(Error::MissingSnapshot { index, term })
        }
    }

    fn first(&self) -> Result<u64, Error> {
        let f = self.log.first_index()?;
        Ok(if f == 0 {
            self.snapshot_mark()?.0 + 1
        } else {
            f
        })
    }

    fn last(&self) -> Result<u64, Error> {
        let l = self.log.last_index()?;
        Ok(if l == 0 { self.snapshot_mark()?.0 } else { l })
    }
}
