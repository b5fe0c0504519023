//! The newest entries of the log kept in memory as written, so Raft's constant reads of them
//! (the term before each append, the entries to replicate) cost no read and no checksum.

use std::collections::VecDeque;

use raft::eraftpb::Entry;

/// At most this many of the newest entries are cached…
const CACHE_ENTRIES: usize = 4096;
/// …and at most this many bytes of their data.
const CACHE_BYTES: usize = 8 << 20;

/// The newest entries of the log, contiguous, exactly as written (a subset of the log).
#[derive(Debug, Default)]
pub(super) struct TailCache {
    pub(super) entries: VecDeque<Entry>,
    bytes: usize,
}

impl TailCache {
    pub(super) fn first(&self) -> Option<u64> {
        self.entries.front().map(|e| e.index)
    }

    pub(super) fn get(&self, index: u64) -> Option<&Entry> {
        let first = self.first()?;
        let i = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(i)
    }

    /// Records a written round: cuts what it overwrites, appends it, trims the oldest.
    pub(super) fn put(&mut self, written: &[Entry]) {
        let Some(new_first) = written.first().map(|e| e.index) else {
            return;
        };
        let contiguous = match (self.first(), self.entries.back()) {
            (Some(first), Some(last)) => new_first >= first && new_first <= last.index + 1,
            _ => false,
        };
        if contiguous {
            self.truncate_after(new_first - 1);
        } else {
            self.clear();
        }
        for e in written {
            self.bytes += e.data.len() + e.context.len();
            self.entries.push_back(e.clone());
        }
        while self.entries.len() > CACHE_ENTRIES || self.bytes > CACHE_BYTES {
            self.pop_front();
        }
    }

    pub(super) fn truncate_after(&mut self, index: u64) {
        while self.entries.back().is_some_and(|e| e.index > index) {
            if let Some(e) = self.entries.pop_back() {
                self.bytes -= e.data.len() + e.context.len();
            }
        }
    }

    pub(super) fn drop_upto(&mut self, index: u64) {
        while self.first().is_some_and(|f| f <= index) {
            self.pop_front();
        }
    }

    pub(super) fn pop_front(&mut self) {
        if let Some(e) = self.entries.pop_front() {
            self.bytes -= e.data.len() + e.context.len();
        }
    }

    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ents(lo: u64, hi: u64, term: u64) -> Vec<Entry> {
        (lo..=hi)
            .map(|index| Entry {
                index,
                term,
                data: vec![0; 10].into(),
                ..Default::default()
            })
            .collect()
    }

    fn range(c: &TailCache) -> Option<(u64, u64)> {
        Some((c.first()?, c.entries.back()?.index))
    }

    #[test]
    fn tail_cache_follows_the_log() {
        let mut c = TailCache::default();
        c.put(&ents(5, 9, 1));
        assert_eq!(range(&c), Some((5, 9)));
        // A conflicting tail replaces what it overwrites.
        c.put(&ents(8, 12, 2));
        assert_eq!(range(&c), Some((5, 12)));
        assert_eq!(c.get(7).map(|e| e.term), Some(1));
        assert_eq!(c.get(8).map(|e| e.term), Some(2));
        assert_eq!(c.bytes, 8 * 10);
        // A gap (a snapshot install, say) starts over.
        c.put(&ents(20, 21, 3));
        assert_eq!(range(&c), Some((20, 21)));
        assert!(c.get(12).is_none());
        c.drop_upto(20);
        assert_eq!(range(&c), Some((21, 21)));
        // Bounded by count.
        c.put(&ents(22, 22 + CACHE_ENTRIES as u64, 3));
        assert_eq!(c.entries.len(), CACHE_ENTRIES);
        assert_eq!(c.bytes, CACHE_ENTRIES * 10);
        c.clear();
        assert_eq!((range(&c), c.bytes), (None, 0));
    }
}
