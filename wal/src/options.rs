//! Options for [`crate::Wal::open`].

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::vfs::{StdVfs, Vfs};

/// How a durable write reaches stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `fdatasync` (the default): data and the metadata needed to read it back.
    #[default]
    Data,
    /// `fsync`: data and all metadata.
    All,
    /// **Unsafe, for benchmarks only**: never sync. `wait_durable` returns at once and nothing
    /// survives a power cut; an OS crash may leave the log torn anywhere.
    None,
}

/// What recovery does with damage it finds while opening.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RecoveryMode {
    /// The default: a torn batch after the last durable commit of the tail is discarded (it was
    /// never acknowledged); any other damage fails `open` with [`crate::Error::Corrupt`].
    #[default]
    Strict,
    /// Explicit and lossy: truncate the tail segment at the first damaged record, even when
    /// later records prove it was durable, and report exactly what was dropped in
    /// [`crate::Wal::recovery_report`]. Damage in sealed segments is still an error.
    TruncateCorruptTail,
}

/// Options for opening a [`crate::Wal`].
#[derive(Clone)]
pub struct WalOptions {
    /// Size of each segment file, preallocated (default 64 MiB, minimum 4 KiB). A batch larger
    /// than a segment gets a segment of its own, grown to fit.
    pub(crate) segment_size: u64,
    /// How writes are made durable.
    pub(crate) sync: SyncMode,
    /// What recovery does with damage.
    pub(crate) recovery: RecoveryMode,
    /// Prepare segments by writing zeros (default `true`) so that appends overwrite allocated,
    /// written blocks and `fdatasync` never converts unwritten extents. `false` only sets the
    /// length (sparse), which is faster to create and slower to write.
    pub(crate) zero_fill: bool,
    /// How many retired segment files (freed by head compaction) to keep for reuse as new
    /// segments (default 4; 0 deletes them). A recycled file's blocks are already written, so
    /// it needs no zero-filling and costs no I/O to prepare; its old frames carry an old epoch
    /// in their checksums and can never be mistaken for new ones.
    pub(crate) recycle_segments: usize,
    /// Prepare the next segment in a background thread (default `true`), started once the
    /// active segment is an eighth full, or at once when a retired file can be recycled.
    /// `false` prepares it on the writer's thread at rotation, which stalls that write;
    /// deterministic simulation tests use it so that every file operation happens in a
    /// reproducible order.
    pub(crate) background_prepare: bool,
    /// How long a thread in [`crate::Wal::wait_durable`] may spin for an fsync in flight
    /// before it sleeps (default 500 µs; zero always sleeps). Spinning yields the CPU on every
    /// turn and only happens while the last fsync took no longer than this, for at most twice
    /// that fsync's time. Why: waking a sleeping thread costs tens of microseconds where an idle
    /// CPU must be woken first (measured ~30 µs on a 2-vCPU VM, a quarter of a fast fsync);
    /// a spinning waiter returns the moment the fsync ends and writes again in time for the
    /// next one. A single writer waits alone (it runs the fsync itself) and never spins.
    pub(crate) spin_wait: Duration,
    /// Keep at most this many sealed segments in the page cache (default `None`: the OS
    /// decides). When a segment is sealed, the one that falls out of the newest `n` has its
    /// cached pages dropped ([`crate::vfs::Vfs::drop_cache`]); it stays readable, from the disk.
    /// For logs that are rarely compacted: they stop growing the page cache with every segment,
    /// and new segments reuse the memory of old ones (on a VM whose host took back the guest's
    /// free memory, fresh page cache costs a host fault per page: 1 MiB appends ran 2-3x
    /// faster with old segments dropped in `examples/segment_prep.rs`). Raft reads old
    /// entries only to catch a follower up, sequentially.
    pub(crate) cached_segments: Option<usize>,
    /// Open without modifying anything: no recovery truncation, no cleanup, writes refused,
    /// no file created (the directory lock is taken only if its file exists).
    pub(crate) read_only: bool,
    /// Read-only without the lock, tolerating a writer appending meanwhile (for inspecting a
    /// running node's log).
    pub(crate) live: bool,
    /// The file system (the real one unless a test injects [`crate::vfs::SimVfs`]).
    pub(crate) vfs: Arc<dyn Vfs>,
}

impl fmt::Debug for WalOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalOptions")
            .field("segment_size", &self.segment_size)
            .field("sync", &self.sync)
            .field("recovery", &self.recovery)
            .field("zero_fill", &self.zero_fill)
            .field("recycle_segments", &self.recycle_segments)
            .field("background_prepare", &self.background_prepare)
            .field("spin_wait", &self.spin_wait)
            .field("cached_segments", &self.cached_segments)
            .field("read_only", &self.read_only)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            sync: SyncMode::Data,
            recovery: RecoveryMode::Strict,
            zero_fill: true,
            recycle_segments: 4,
            background_prepare: true,
            spin_wait: Duration::from_micros(500),
            cached_segments: None,
            read_only: false,
            live: false,
            vfs: Arc::new(StdVfs),
        }
    }
}

impl WalOptions {
    /// Sets the segment size.
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }
    /// Sets the sync mode.
    pub fn sync(mut self, mode: SyncMode) -> Self {
        self.sync = mode;
        self
    }
    /// Sets the recovery mode.
    pub fn recovery(mut self, mode: RecoveryMode) -> Self {
        self.recovery = mode;
        self
    }
    /// Opens read-only: nothing is modified or created; the directory lock is taken only if
    /// its file exists (so a running node's log is refused with `Error::Locked`).
    pub fn read_only(mut self, yes: bool) -> Self {
        self.read_only = yes;
        self
    }
    /// Opens read-only without the directory lock, for inspecting a running node's log: a tail
    /// being appended meanwhile reads as a torn tail (reported, not an error). Implies
    /// [`WalOptions::read_only`].
    pub fn live(mut self, yes: bool) -> Self {
        self.live = yes;
        self.read_only |= yes;
        self
    }
    /// Uses this file system.
    pub fn vfs(mut self, vfs: Arc<dyn Vfs>) -> Self {
        self.vfs = vfs;
        self
    }
    /// Prepares segments in the background (or not).
    pub fn background_prepare(mut self, yes: bool) -> Self {
        self.background_prepare = yes;
        self
    }
    /// Keeps up to `n` retired segment files for reuse.
    pub fn recycle_segments(mut self, n: usize) -> Self {
        self.recycle_segments = n;
        self
    }
    /// Sets how long a waiter may spin for an fsync in flight (zero: never).
    pub fn spin_wait(mut self, limit: Duration) -> Self {
        self.spin_wait = limit;
        self
    }
    /// Keeps at most `n` sealed segments in the page cache (`None`: the OS decides; `0`: every
    /// sealed segment is dropped from it).
    pub fn cached_segments(mut self, n: impl Into<Option<usize>>) -> Self {
        self.cached_segments = n.into();
        self
    }

    /// The segment size.
    pub fn get_segment_size(&self) -> u64 {
        self.segment_size
    }

    /// Whether the WAL opens read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`crate::Error::Invalid`] for a segment smaller than 4096 bytes or too large to index.
    pub fn validate(&self) -> crate::Result<()> {
        if self.segment_size < 4096 {
            return Err(crate::Error::Invalid(format!(
                "segment_size {} is below the minimum of 4096",
                self.segment_size
            )));
        }
        if self.segment_size > u64::from(u32::MAX) {
            return Err(crate::Error::Invalid(format!(
                "segment_size {} is above the maximum of {}",
                self.segment_size,
                u32::MAX
            )));
        }
        Ok(())
    }
    /// Zero-fills (or not) new segments.
    pub fn zero_fill(mut self, yes: bool) -> Self {
        self.zero_fill = yes;
        self
    }
}
