//! Write batches and the rules every store applies to them, shared by [`crate::Wal`] and
//! [`crate::MemStore`] so the model and the engine cannot drift apart.

use crate::{Error, LogEntry, Result};

/// The largest stable-store key.
pub const MAX_STABLE_KEY: usize = 64 << 10;
/// The largest stable-store value.
pub const MAX_STABLE_VALUE: usize = 16 << 20;

/// An atomic unit of change: an optional tail truncation, then entries, then stable-key
/// updates. A [`crate::Wal`] commits it with one commit record and one fsync; after a crash
/// either all of it is there or none of it.
///
/// ```
/// use raftwal_wal::{LogEntry, WriteBatch};
/// let mut b = WriteBatch::new();
/// b.truncate_after(9)                       // a follower cuts a conflicting tail…
///     .append(LogEntry::new(10, 3, b"x".to_vec())) // …appends the leader's entries…
///     .set_u64(b"term", 3);                 // …and persists its hard state, all at once
/// assert_eq!(b.entries().len(), 1);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub(crate) head: Option<u64>,
    pub(crate) truncate_after: Option<u64>,
    pub(crate) entries: Vec<LogEntry>,
    pub(crate) stable: Vec<(Vec<u8>, Vec<u8>)>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// A batch of these entries.
    pub fn from_entries(entries: Vec<LogEntry>) -> Self {
        WriteBatch {
            entries,
            ..Self::default()
        }
    }

    /// Drops every entry with an index greater than `index` before appending. `index` may be
    /// `first_index - 1` (drop everything); it may not be lower.
    pub fn truncate_after(&mut self, index: u64) -> &mut Self {
        self.truncate_after = Some(index);
        self
    }

    /// Appends an entry.
    pub fn append(&mut self, entry: LogEntry) -> &mut Self {
        self.entries.push(entry);
        self
    }

    /// Appends entries.
    pub fn extend(&mut self, entries: impl IntoIterator<Item = LogEntry>) -> &mut Self {
        self.entries.extend(entries);
        self
    }

    /// Sets a stable key.
    pub fn set(&mut self, key: &[u8], value: &[u8]) -> &mut Self {
        self.stable.push((key.to_vec(), value.to_vec()));
        self
    }

    /// Sets a stable key to a `u64` (little-endian, as [`crate::StableStore::set_u64`]).
    pub fn set_u64(&mut self, key: &[u8], value: u64) -> &mut Self {
        self.set(key, &value.to_le_bytes())
    }

    /// The entries to append.
    pub fn entries(&self) -> &[LogEntry] {
        &self.entries
    }

    /// Whether the batch changes nothing.
    pub fn is_empty(&self) -> bool {
        self.head.is_none()
            && self.truncate_after.is_none()
            && self.entries.is_empty()
            && self.stable.is_empty()
    }

    /// Payload bytes the batch carries (entries and stable values).
    pub fn payload_bytes(&self) -> u64 {
        self.entries.iter().map(LogEntry::payload_len).sum::<u64>()
            + self
                .stable
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum::<u64>()
    }
}

/// A write's place in the commit order, returned by [`crate::Wal::write`] and redeemed with
/// [`crate::Wal::wait_durable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(pub(crate) u64);

impl Ticket {
    /// The write's sequence number (1 for the first write since open).
    pub fn seq(&self) -> u64 {
        self.0
    }
}

/// The live range of a log: `[first, next)`; empty when `first == next`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Bounds {
    pub first: u64,
    pub next: u64,
}

impl Bounds {
    pub fn is_empty(&self) -> bool {
        self.first >= self.next
    }
    /// `(first_index, last_index)` as the traits report them: `(0, 0)` when empty.
    pub fn reported(&self) -> (u64, u64) {
        if self.is_empty() {
            (0, 0)
        } else {
            (self.first, self.next - 1)
        }
    }
    pub fn not_found(&self, index: u64) -> Error {
        let (first, last) = self.reported();
        Error::NotFound { index, first, last }
    }
    pub fn contains(&self, index: u64) -> bool {
        index >= self.first && index < self.next
    }
}

/// One logical step of a batch, in the order a store applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// Delete entries `<= k`.
    TruncateHead(u64),
    /// Delete entries `> k`.
    TruncateTail(u64),
    /// Empty the log; the next entry starts the log at `s`.
    Reset(u64),
}

impl Step {
    pub fn apply(self, b: &mut Bounds) {
        match self {
            Step::TruncateHead(k) => {
                b.first = b.first.max(k.saturating_add(1));
                b.next = b.next.max(b.first);
            }
            Step::TruncateTail(k) => b.next = k + 1,
            Step::Reset(s) => {
                b.first = s;
                b.next = s;
            }
        }
    }
}

/// Checks a batch against the log's bounds and returns the structural steps to apply before
/// its entries. Nothing is changed.
pub(crate) fn plan(bounds: Bounds, batch: &WriteBatch) -> Result<Vec<Step>> {
    let mut steps = Vec::new();
    let mut b = bounds;
    let (first, last) = bounds.reported();
    if let Some(k) = batch.head {
        let s = Step::TruncateHead(k);
        s.apply(&mut b);
        steps.push(s);
    }
    if let Some(k) = batch.truncate_after {
        if !b.is_empty() && k.saturating_add(1) < b.first {
            return Err(Error::InvalidRange {
                min: k.saturating_add(1),
                max: u64::MAX,
                first,
                last,
                reason: "tail truncation below the first index",
            });
        }
        if !b.is_empty() && k.saturating_add(1) < b.next {
            let s = Step::TruncateTail(k);
            s.apply(&mut b);
            steps.push(s);
        }
    }
    let mut expect = b.next;
    for (i, e) in batch.entries.iter().enumerate() {
        if e.index == 0 {
            return Err(Error::OutOfOrder {
                expected: expect.max(1),
                got: 0,
            });
        }
        if i == 0 && b.is_empty() {
            if e.index != b.next {
                steps.push(Step::Reset(e.index));
            }
            expect = e.index;
        }
        if e.index != expect {
            return Err(Error::OutOfOrder {
                expected: expect,
                got: e.index,
            });
        }
        if e.payload_len() > crate::format::MAX_FRAME_PAYLOAD {
            return Err(Error::TooLarge {
                what: "entry",
                size: e.payload_len(),
                limit: crate::format::MAX_FRAME_PAYLOAD,
            });
        }
        expect += 1;
    }
    for (k, v) in &batch.stable {
        if k.len() > MAX_STABLE_KEY {
            return Err(Error::TooLarge {
                what: "stable key",
                size: k.len() as u64,
                limit: MAX_STABLE_KEY as u64,
            });
        }
        if v.len() > MAX_STABLE_VALUE {
            return Err(Error::TooLarge {
                what: "stable value",
                size: v.len() as u64,
                limit: MAX_STABLE_VALUE as u64,
            });
        }
    }
    Ok(steps)
}

/// Turns `delete_range(min, max)` into a batch, or `None` when there is nothing to delete.
pub(crate) fn delete_batch(bounds: Bounds, min: u64, max: u64) -> Result<Option<WriteBatch>> {
    let (first, last) = bounds.reported();
    let invalid = |reason| Error::InvalidRange {
        min,
        max,
        first,
        last,
        reason,
    };
    if min > max {
        return Err(invalid("min is greater than max"));
    }
    if bounds.is_empty() || max < bounds.first {
        return Ok(None);
    }
    if min > last {
        return Err(invalid("range starts after the last index"));
    }
    let mut b = WriteBatch::new();
    if min <= bounds.first {
        b.head = Some(max);
    } else if max >= last {
        b.truncate_after = Some(min - 1);
    } else {
        return Err(invalid("only a head or a tail range can be deleted"));
    }
    Ok(Some(b))
}
