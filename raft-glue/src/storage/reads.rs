//! What raft-rs reads: the [`raft::Storage`] implementation of [`RaftStorage`].

use raft::eraftpb::{Entry, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};
use raftwal_snapshot::SnapshotStore;
use raftwal_wal::BatchStore;

use super::codec::*;
use super::RaftStorage;
use crate::lock;

fn store_err(e: impl std::error::Error + Send + Sync + 'static) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl<L: BatchStore, S: SnapshotStore> raft::Storage for RaftStorage<L, S> {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state().map_err(store_err)?,
            conf_state: self.conf_state().map_err(store_err)?,
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max = max_size.into();
        {
            let cache = lock(&self.cache);
            if low < high && cache.get(low).is_some() && cache.get(high - 1).is_some() {
                let from = (low - cache.first().unwrap_or(low)) as usize;
                let mut v: Vec<Entry> = cache
                    .entries
                    .range(from..from + (high - low) as usize)
                    .cloned()
                    .collect();
                raft::util::limit_size(&mut v, max);
                return Ok(v);
            }
        }
        let first = self.first().map_err(store_err)?;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last().map_err(store_err)? + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        if low >= high {
            return Ok(Vec::new());
        }
        // The log limits by payload bytes, never more than the encoded size Raft counts, so
        // what it returns covers Raft's limit; the limit is then applied as Raft counts it.
        let v = self
            .log
            .get_logs(low, high, max.unwrap_or(u64::MAX))
            .map_err(store_err)?;
        let mut v: Vec<Entry> = v.into_iter().map(to_raft_entry).collect();
        raft::util::limit_size(&mut v, max);
        Ok(v)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if let Some(e) = lock(&self.cache).get(idx) {
            return Ok(e.term);
        }
        let (snap_index, snap_term) = self.snapshot_mark().map_err(store_err)?;
        if idx == snap_index {
            return Ok(snap_term);
        }
        let first = self.first().map_err(store_err)?;
        let last = self.last().map_err(store_err)?;
        if idx + 1 == first && idx > 0 {
            let (point, term) = self.compaction_point().map_err(store_err)?;
            if point == idx {
                return Ok(term);
            }
        }
        if idx < first {
            return if idx == 0 {
                Ok(0)
            } else {
                Err(raft::Error::Store(StorageError::Compacted))
            };
        }
        if idx > last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(self.log.get_log(idx).map_err(store_err)?.term)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.first().map_err(store_err)
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.last().map_err(store_err)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let list = self.snapshots.list().map_err(store_err)?;
        let newest = list.into_iter().next().filter(|m| m.index >= request_index);
        let newest = match newest {
            Some(m) => {
                let (conf, _) = decode_snapshot_conf(&m.configuration).map_err(store_err)?;
                let member = [
                    &conf.voters,
                    &conf.learners,
                    &conf.voters_outgoing,
                    &conf.learners_next,
                ]
                .iter()
                .any(|ids| ids.contains(&to));
                member.then_some((m, conf))
            }
            None => None,
        };
        let Some((m, conf)) = newest else {
            self.wanted.store(true, std::sync::atomic::Ordering::SeqCst);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        };
        let mut s = Snapshot {
            data: m.id.into_bytes().into(),
            ..Default::default()
        };
        let meta = s.mut_metadata();
        meta.index = m.index;
        meta.term = m.term;
        meta.set_conf_state(conf);
        Ok(s)
    }
}
