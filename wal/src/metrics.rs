//! The WAL's metrics, recorded through the [`metrics`] facade: the application installs a
//! recorder (and so chooses the exporter); without one, recording costs an atomic load. Names
//! follow Prometheus conventions (base units, `_total` counters); `README.md` lists them all.
//! Every WAL in a process records into the same series.

use std::time::Duration;

use ::metrics::Unit;
use ::metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram,
};

/// Duration of each `fdatasync`/`fsync` that makes writes durable (group commits and
/// rotations).
pub const FSYNC_SECONDS: &str = "raftwal_wal_fsync_duration_seconds";
/// Writes (batches) covered by one group-commit fsync.
pub const FSYNC_GROUP_WRITES: &str = "raftwal_wal_fsync_group_writes";
/// Bytes covered by one group-commit fsync.
pub const FSYNC_GROUP_BYTES: &str = "raftwal_wal_fsync_group_bytes";
/// A synchronous write (a `LogStore`/`StableStore` call) from submit until durable.
pub const WRITE_SECONDS: &str = "raftwal_wal_write_duration_seconds";
/// Writes (batches) accepted.
pub const WRITES: &str = "raftwal_wal_writes_total";
/// Entries appended.
pub const ENTRIES: &str = "raftwal_wal_entries_appended_total";
/// Bytes written to segments (frames, commit records, padding).
pub const BYTES: &str = "raftwal_wal_bytes_written_total";
/// Segment rotations.
pub const ROTATIONS: &str = "raftwal_wal_segment_rotations_total";
/// Time a rotation waited for its next segment (0 when it was ready).
pub const PREPARE_WAIT_SECONDS: &str = "raftwal_wal_rotation_prepare_wait_seconds";
/// Segment files prepared, by `source`: `recycled` (a retired file renamed), `zero_filled`,
/// or `sparse`.
pub const SEGMENTS_PREPARED: &str = "raftwal_wal_segments_prepared_total";
/// Head compactions (entries deleted from the front).
pub const COMPACTIONS: &str = "raftwal_wal_compactions_total";
/// Tail truncations and resets.
pub const TRUNCATIONS: &str = "raftwal_wal_truncations_total";
/// Duration of the last open's recovery.
pub const RECOVERY_SECONDS: &str = "raftwal_wal_recovery_duration_seconds";
/// Ranges of entries recovery dropped (a torn tail, or damage a repair mode removed).
pub const RECOVERY_DROPPED: &str = "raftwal_wal_recovery_dropped_ranges_total";
/// Sealed-segment indexes recovery rebuilt from their frames.
pub const RECOVERY_REBUILT: &str = "raftwal_wal_recovery_rebuilt_indexes_total";
/// 1 once the WAL refuses writes after a failed write or fsync.
pub const POISONED: &str = "raftwal_wal_poisoned";
/// Live segment files (sealed and active).
pub const LIVE_SEGMENTS: &str = "raftwal_wal_live_segments";
/// Bytes of the live segment files on disk.
pub const DISK_BYTES: &str = "raftwal_wal_disk_bytes";

/// Gives every metric above its unit and help text in the installed recorder. Call once after
/// installing one (exporters print the help text).
pub fn describe() {
    describe_histogram!(
        FSYNC_SECONDS,
        Unit::Seconds,
        "Duration of each fsync that makes writes durable."
    );
    describe_histogram!(
        FSYNC_GROUP_WRITES,
        Unit::Count,
        "Writes covered by one group-commit fsync."
    );
    describe_histogram!(
        FSYNC_GROUP_BYTES,
        Unit::Bytes,
        "Bytes covered by one group-commit fsync."
    );
    describe_histogram!(
        WRITE_SECONDS,
        Unit::Seconds,
        "A synchronous write from submit until durable."
    );
    describe_counter!(WRITES, Unit::Count, "Writes (batches) accepted.");
    describe_counter!(ENTRIES, Unit::Count, "Entries appended.");
    describe_counter!(BYTES, Unit::Bytes, "Bytes written to segment files.");
    describe_counter!(ROTATIONS, Unit::Count, "Segment rotations.");
    describe_histogram!(
        PREPARE_WAIT_SECONDS,
        Unit::Seconds,
        "Time a rotation waited for its next segment."
    );
    describe_counter!(
        SEGMENTS_PREPARED,
        Unit::Count,
        "Segment files prepared, by source."
    );
    describe_counter!(COMPACTIONS, Unit::Count, "Head compactions.");
    describe_counter!(TRUNCATIONS, Unit::Count, "Tail truncations and resets.");
    describe_gauge!(
        RECOVERY_SECONDS,
        Unit::Seconds,
        "Duration of the last open's recovery."
    );
    describe_counter!(
        RECOVERY_DROPPED,
        Unit::Count,
        "Entry ranges recovery dropped."
    );
    describe_counter!(
        RECOVERY_REBUILT,
        Unit::Count,
        "Segment indexes recovery rebuilt."
    );
    describe_gauge!(
        POISONED,
        Unit::Count,
        "1 once the WAL refuses writes after a failed write or fsync."
    );
    describe_gauge!(LIVE_SEGMENTS, Unit::Count, "Live segment files.");
    describe_gauge!(DISK_BYTES, Unit::Bytes, "Bytes of the live segment files.");
}

/// The hot path's series, registered once when a WAL opens (recording through a handle costs
/// no lookup).
pub(crate) struct Handles {
    fsync: Histogram,
    group_writes: Histogram,
    group_bytes: Histogram,
    pub write_seconds: Histogram,
    writes: Counter,
    entries: Counter,
    bytes: Counter,
    compactions: Counter,
    truncations: Counter,
}

impl Handles {
    pub fn new() -> Self {
        Handles {
            fsync: histogram!(FSYNC_SECONDS),
            group_writes: histogram!(FSYNC_GROUP_WRITES),
            group_bytes: histogram!(FSYNC_GROUP_BYTES),
            write_seconds: histogram!(WRITE_SECONDS),
            writes: counter!(WRITES),
            entries: counter!(ENTRIES),
            bytes: counter!(BYTES),
            compactions: counter!(COMPACTIONS),
            truncations: counter!(TRUNCATIONS),
        }
    }

    pub fn fsync(&self, d: Duration) {
        self.fsync.record(d);
    }

    pub fn group(&self, writes: u64, bytes: u64) {
        self.group_writes.record(writes as f64);
        self.group_bytes.record(bytes as f64);
    }

    pub fn write(&self, entries: u64, bytes: u64) {
        self.writes.increment(1);
        self.entries.increment(entries);
        self.bytes.increment(bytes);
    }

    pub fn step(&self, s: &crate::batch::Step) {
        match s {
            crate::batch::Step::TruncateHead(_) => self.compactions.increment(1),
            _ => self.truncations.increment(1),
        }
    }
}

pub(crate) fn prepared(source: &'static str) {
    counter!(SEGMENTS_PREPARED, "source" => source).increment(1);
}

pub(crate) fn poisoned(dir: &std::path::Path) {
    gauge!(POISONED).set(1.0);
    tracing::error!(dir = %dir.display(), "the WAL refuses writes from now on: a write or fsync failed");
}

pub(crate) fn recovered(dir: &std::path::Path, r: &crate::RecoveryReport, took: Duration) {
    gauge!(RECOVERY_SECONDS).set(took.as_secs_f64());
    counter!(RECOVERY_DROPPED).increment(r.dropped.len() as u64);
    counter!(RECOVERY_REBUILT).increment(r.rebuilt_indexes.len() as u64);
    if r.dropped.is_empty() && r.rebuilt_indexes.is_empty() && r.removed_files.is_empty() {
        tracing::debug!(dir = %dir.display(), seconds = took.as_secs_f64(), "recovered");
    } else {
        tracing::info!(
            dir = %dir.display(),
            seconds = took.as_secs_f64(),
            dropped = ?r.dropped,
            rebuilt_indexes = r.rebuilt_indexes.len(),
            removed_files = r.removed_files.len(),
            "recovered, repairing what a crash left"
        );
    }
}

pub(crate) fn sizes(segments: usize, bytes: u64) {
    gauge!(LIVE_SEGMENTS).set(segments as f64);
    gauge!(DISK_BYTES).set(bytes as f64);
}
