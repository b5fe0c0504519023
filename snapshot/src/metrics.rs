//! The snapshot store's metrics, recorded through the [`metrics`] facade (see
//! `raftwal_wal::metrics` for the conventions); `README.md` lists them all.

use std::time::Duration;

use ::metrics::Unit;
use ::metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

/// From `create` until the snapshot is committed (durable and listed).
pub const WRITE_SECONDS: &str = "raftwal_snapshot_write_duration_seconds";
/// Bytes of snapshot data committed.
pub const WRITE_BYTES: &str = "raftwal_snapshot_write_bytes_total";
/// From `open` until the whole data was read and its checksum verified.
pub const READ_SECONDS: &str = "raftwal_snapshot_read_duration_seconds";
/// Bytes of snapshot data read and verified.
pub const READ_BYTES: &str = "raftwal_snapshot_read_bytes_total";
/// Snapshots found damaged, by `what`: `data` (checksum) or `metadata`.
pub const VERIFY_FAILURES: &str = "raftwal_snapshot_verification_failures_total";
/// Snapshots kept after the last reap (file stores).
pub const RETAINED: &str = "raftwal_snapshot_retained";

/// Gives every metric above its unit and help text in the installed recorder.
pub fn describe() {
    describe_histogram!(
        WRITE_SECONDS,
        Unit::Seconds,
        "From create until the snapshot is committed."
    );
    describe_counter!(
        WRITE_BYTES,
        Unit::Bytes,
        "Bytes of snapshot data committed."
    );
    describe_histogram!(
        READ_SECONDS,
        Unit::Seconds,
        "From open until the data was read and verified."
    );
    describe_counter!(
        READ_BYTES,
        Unit::Bytes,
        "Bytes of snapshot data read and verified."
    );
    describe_counter!(
        VERIFY_FAILURES,
        Unit::Count,
        "Snapshots found damaged, by what."
    );
    describe_gauge!(RETAINED, Unit::Count, "Snapshots kept after the last reap.");
}

pub(crate) fn written(took: Duration, bytes: u64) {
    histogram!(WRITE_SECONDS).record(took);
    counter!(WRITE_BYTES).increment(bytes);
}

pub(crate) fn read(took: Duration, bytes: u64) {
    histogram!(READ_SECONDS).record(took);
    counter!(READ_BYTES).increment(bytes);
}

pub(crate) fn damaged(what: &'static str) {
    counter!(VERIFY_FAILURES, "what" => what).increment(1);
}

pub(crate) fn retained(n: usize) {
    gauge!(RETAINED).set(n as f64);
}
