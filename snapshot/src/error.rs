//! Errors of the snapshot store.

use std::io;
use std::path::PathBuf;

pub use raftwal_wal::CorruptKind;

/// A result with the snapshot store's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in a snapshot store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No snapshot has this id.
    #[error("snapshot {id:?} not found")]
    NotFound {
        /// The id asked for.
        id: String,
    },
    /// A snapshot's files are damaged.
    #[error("corrupt snapshot file {path}, offset {offset}: {kind}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Where.
        offset: u64,
        /// What is wrong, with the expected and found values (the WAL's kinds).
        kind: CorruptKind,
    },
    /// An invalid argument (for example `retain == 0`) or a path that is not a snapshot
    /// directory.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A store opened read-only ([`crate::FileSnapshotStore::open_read_only`]) was asked to
    /// write.
    #[error("the snapshot store {dir} is open read-only")]
    ReadOnly {
        /// The store's directory.
        dir: PathBuf,
    },
    /// An I/O error, with the operation and path.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

impl Error {
    pub(crate) fn corrupt(path: impl Into<PathBuf>, offset: u64, kind: CorruptKind) -> Self {
        Error::Corrupt {
            path: path.into(),
            offset,
            kind,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            op,
            path: path.into(),
            source,
        }
    }
}

impl From<Error> for io::Error {
    fn from(e: Error) -> io::Error {
        match e {
            Error::Io { source, .. } => source,
            Error::NotFound { .. } => io::Error::new(io::ErrorKind::NotFound, e.to_string()),
            other => io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
        }
    }
}
