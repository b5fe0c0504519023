//! Errors: structured, naming the file, the offset and what was expected.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// A result with the WAL's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What exactly was wrong with corrupt bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// A checksum did not match.
    Checksum {
        /// The checksum stored in the file.
        expected: u32,
        /// The checksum of the bytes found.
        actual: u32,
    },
    /// The structure needs more bytes than the file holds.
    Truncated {
        /// Bytes needed.
        needed: u64,
        /// Bytes available.
        available: u64,
    },
    /// A magic number was not the one expected.
    BadMagic,
    /// A length or count field is impossible (larger than the file or a configured limit).
    BadLength {
        /// The length found.
        found: u64,
        /// The largest length allowed there.
        limit: u64,
    },
    /// Entry indexes are not contiguous where they must be.
    IndexGap {
        /// The index expected.
        expected: u64,
        /// The index found.
        found: u64,
    },
    /// A record that fails its checksum lies before data that was already durable, so it is not
    /// a torn write at the tail but damage to acknowledged data.
    DamagedBeforeDurable {
        /// The offset up to which a later commit record proves the file was durable.
        durable_to: u64,
    },
    /// A format version this build does not read (a newer or unknown one).
    Version {
        /// The version found.
        found: u32,
    },
    /// Any other structural problem, described.
    Structure(&'static str),
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::Checksum { expected, actual } => {
                write!(f, "checksum mismatch: stored {expected:#010x}, computed {actual:#010x}")
            }
            CorruptKind::Truncated { needed, available } => {
                write!(f, "truncated: needed {needed} bytes, {available} available")
            }
            CorruptKind::BadMagic => write!(f, "bad magic number"),
            CorruptKind::BadLength { found, limit } => {
                write!(f, "impossible length {found} (limit {limit})")
            }
            CorruptKind::IndexGap { expected, found } => {
                write!(f, "index gap: expected index {expected}, found {found}")
            }
            CorruptKind::DamagedBeforeDurable { durable_to } => write!(
                f,
                "damaged record inside the region a later commit proves durable (up to offset {durable_to})"
            ),
            CorruptKind::Version { found } => {
                write!(f, "format version {found}, which this build does not read")
            }
            CorruptKind::Structure(s) => write!(f, "{s}"),
        }
    }
}

/// Everything that can go wrong in the WAL.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The index is outside `[first_index, last_index]` (or the log is empty).
    #[error("log index {index} not found (log holds [{first}, {last}]; 0, 0 means empty)")]
    NotFound {
        /// The index asked for.
        index: u64,
        /// The first index held (0 when empty).
        first: u64,
        /// The last index held (0 when empty).
        last: u64,
    },
    /// A batch does not continue the log, or is not contiguous inside.
    #[error("entries out of order: expected index {expected}, got {got}")]
    OutOfOrder {
        /// The index the next entry must have.
        expected: u64,
        /// The index it has.
        got: u64,
    },
    /// A delete or truncation range that the log cannot honour.
    #[error("invalid range [{min}, {max}] for log [{first}, {last}]: {reason}")]
    InvalidRange {
        /// Lower bound asked for.
        min: u64,
        /// Upper bound asked for.
        max: u64,
        /// The first index held (0 when empty).
        first: u64,
        /// The last index held (0 when empty).
        last: u64,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Bytes on disk are damaged.
    #[error("corrupt {path}{}, offset {offset}: {kind}", indexes.map(|(a, b)| format!(" (entries {a}..={b})")).unwrap_or_default())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// The byte offset of the damaged structure.
        offset: u64,
        /// The entry index range affected, when known.
        indexes: Option<(u64, u64)>,
        /// What is wrong.
        kind: CorruptKind,
    },
    /// Another process (or another `Wal` in this one) holds the directory.
    #[error("{path} is locked by another user of this WAL")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// An earlier write or fsync failed; the store refuses writes until it is reopened.
    #[error("the WAL is poisoned by an earlier I/O failure and must be reopened")]
    Poisoned,
    /// The files were written by a newer (or unknown) format version.
    #[error("{path}: unsupported format version {found} (this build reads {supported})")]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build supports.
        supported: u32,
    },
    /// The path is not a WAL directory.
    #[error("{path} is not a raftwal WAL directory: {reason}")]
    NotAWal {
        /// The path given.
        path: PathBuf,
        /// Why not.
        reason: String,
    },
    /// A value exceeds a configured or format limit.
    #[error("{what} of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// What is too large.
        what: &'static str,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// A write on a WAL opened read-only.
    #[error("the WAL was opened read-only")]
    ReadOnly,
    /// An invalid argument (option or ticket).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// An I/O error, with the operation and path.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation (`"write"`, `"fdatasync"`, …).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    /// Wraps an I/O error with its operation and path.
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// Whether the error is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }
}
