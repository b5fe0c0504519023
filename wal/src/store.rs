//! The store traits, in the spirit of hashicorp/raft's `LogStore` and `StableStore`.

use crate::{LogEntry, Result};

/// A Raft log. All methods take `&self`: readers run concurrently with the writer.
pub trait LogStore: Send + Sync {
    /// The first index held, or 0 when the log is empty.
    ///
    /// # Errors
    /// Only implementation-specific failures (the WAL answers from memory and never fails).
    fn first_index(&self) -> Result<u64>;
    /// The last index held, or 0 when the log is empty.
    ///
    /// # Errors
    /// As [`LogStore::first_index`].
    fn last_index(&self) -> Result<u64>;
    /// The entry at `index`.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] outside `[first, last]`; [`crate::Error::Corrupt`] if its
    /// bytes fail their checksum.
    fn get_log(&self, index: u64) -> Result<LogEntry>;
    /// Entries `[lo, hi)`, stopping once their payloads exceed `max_bytes`, but always at least
    /// one entry when `lo < hi`.
    ///
    /// # Errors
    /// [`crate::Error::NotFound`] when `lo` or `hi - 1` is outside the log; as `get_log`.
    fn get_logs(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<LogEntry>>;
    /// Appends a batch: durable and atomic when it returns `Ok`. The batch must be contiguous
    /// and continue `last_index + 1`, or start anywhere when the log is empty.
    ///
    /// # Errors
    /// [`crate::Error::OutOfOrder`] (nothing written), I/O errors, [`crate::Error::Poisoned`].
    fn store_logs(&self, entries: &[LogEntry]) -> Result<()>;
    /// Deletes `[min, max]` (inclusive), which must be a head range (`min <= first`) or a tail
    /// range (`max >= last`). Durable and crash-atomic when it returns.
    ///
    /// # Errors
    /// [`crate::Error::InvalidRange`] for a middle range or `min > max` or `min > last`.
    fn delete_range(&self, min: u64, max: u64) -> Result<()>;
}

/// A small durable key/value store (Raft's current term, vote, …).
pub trait StableStore: Send + Sync {
    /// Sets `key` to `value`, durably and atomically.
    ///
    /// # Errors
    /// I/O errors, [`crate::Error::TooLarge`], [`crate::Error::Poisoned`].
    fn set(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// The value of `key`, if set.
    ///
    /// # Errors
    /// Implementation-specific failures.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>>;
    /// Sets `key` to a `u64` (stored little-endian).
    ///
    /// # Errors
    /// As [`StableStore::set`].
    fn set_u64(&self, key: &[u8], value: u64) -> Result<()> {
        self.set(key, &value.to_le_bytes())
    }
    /// The `u64` value of `key`, if set.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] if the stored value is not 8 bytes.
    fn get_u64(&self, key: &[u8]) -> Result<Option<u64>> {
        match self.get(key)? {
            None => Ok(None),
            Some(v) => {
                let b: [u8; 8] = v.as_slice().try_into().map_err(|_| {
                    crate::Error::Invalid(format!(
                        "stable key {:?} holds {} bytes, not a u64",
                        String::from_utf8_lossy(key),
                        v.len()
                    ))
                })?;
                Ok(Some(u64::from_le_bytes(b)))
            }
        }
    }
}

/// A store that commits a [`crate::WriteBatch`] atomically: what a Raft layer needs to persist a
/// round's entries (cutting a conflicting tail) and its hard state with one fsync.
/// [`crate::Wal`] and [`crate::MemStore`] implement it.
pub trait BatchStore: LogStore + StableStore {
    /// Applies the batch atomically: readable at once, durable once [`BatchStore::wait`]
    /// returns for its ticket (or a later one).
    ///
    /// # Errors
    /// As [`crate::Wal::write`].
    fn submit(&self, batch: crate::WriteBatch) -> Result<crate::Ticket>;

    /// Waits until the write with this ticket, and every earlier one, is durable.
    ///
    /// # Errors
    /// As [`crate::Wal::wait_durable`].
    fn wait(&self, ticket: crate::Ticket) -> Result<()>;

    /// `submit` then `wait`: atomic and durable when it returns.
    ///
    /// # Errors
    /// As [`BatchStore::submit`] and [`BatchStore::wait`].
    fn commit(&self, batch: crate::WriteBatch) -> Result<()> {
        let t = self.submit(batch)?;
        self.wait(t)
    }
}

impl BatchStore for crate::Wal {
    fn submit(&self, batch: crate::WriteBatch) -> Result<crate::Ticket> {
        self.write(batch)
    }
    fn wait(&self, ticket: crate::Ticket) -> Result<()> {
        self.wait_durable(ticket)
    }
}

impl BatchStore for crate::MemStore {
    fn submit(&self, batch: crate::WriteBatch) -> Result<crate::Ticket> {
        self.write(&batch)?;
        Ok(crate::Ticket(0))
    }
    fn wait(&self, _ticket: crate::Ticket) -> Result<()> {
        Ok(())
    }
}

impl<T: BatchStore + ?Sized> BatchStore for std::sync::Arc<T> {
    fn submit(&self, batch: crate::WriteBatch) -> Result<crate::Ticket> {
        (**self).submit(batch)
    }
    fn wait(&self, ticket: crate::Ticket) -> Result<()> {
        (**self).wait(ticket)
    }
}

impl<T: LogStore + ?Sized> LogStore for std::sync::Arc<T> {
    fn first_index(&self) -> Result<u64> {
        (**self).first_index()
    }
    fn last_index(&self) -> Result<u64> {
        (**self).last_index()
    }
    fn get_log(&self, index: u64) -> Result<LogEntry> {
        (**self).get_log(index)
    }
    fn get_logs(&self, lo: u64, hi: u64, max_bytes: u64) -> Result<Vec<LogEntry>> {
        (**self).get_logs(lo, hi, max_bytes)
    }
    fn store_logs(&self, entries: &[LogEntry]) -> Result<()> {
        (**self).store_logs(entries)
    }
    fn delete_range(&self, min: u64, max: u64) -> Result<()> {
        (**self).delete_range(min, max)
    }
}

impl<T: StableStore + ?Sized> StableStore for std::sync::Arc<T> {
    fn set(&self, key: &[u8], value: &[u8]) -> Result<()> {
        (**self).set(key, value)
    }
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        (**self).get(key)
    }
}
