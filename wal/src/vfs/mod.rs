//! The narrow I/O seam. Every byte the WAL (and the snapshot store) reads or writes goes through
//! [`Vfs`] and [`VfsFile`], so tests can swap in [`SimVfs`], which keeps written and durable data
//! apart and can crash, tear, drop, zero or corrupt whatever was not yet synced.
//!
//! Contracts every implementation honours:
//! - `write_at` makes data visible to later reads at once; it is durable only after `sync_data`
//!   (or `sync_all`) returns `Ok`.
//! - A new, removed or renamed directory entry is durable only after `sync_dir` on its parent.
//! - `map` returns a read-only view of the file's current contents; the caller must not expect
//!   it to reflect later writes.
//! - `lock` takes an exclusive advisory lock; a second lock on the same path fails with
//!   [`std::io::ErrorKind::WouldBlock`] until the first guard is dropped.

mod sim;
mod std_fs;

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use sim::{CrashPolicy, SimFaults, SimVfs};
pub use std_fs::StdVfs;

/// A read-only view of a file's bytes (a memory map for [`StdVfs`], a copy for [`SimVfs`]).
pub type Mapped = Arc<dyn AsRef<[u8]> + Send + Sync>;

/// How [`Vfs::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// Read only; the file must exist.
    Read,
    /// Read and write; the file must exist.
    ReadWrite,
    /// Read and write; the file must not exist yet.
    CreateNew,
    /// Read and write; created if missing, truncated to zero length if present.
    CreateTruncate,
}

/// What a path names, as reported by [`Vfs::kind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// An open file. All offsets are absolute; there is no cursor.
pub trait VfsFile: Send + Sync + Debug {
    /// Fills `buf` from `offset`.
    ///
    /// # Errors
    /// [`io::ErrorKind::UnexpectedEof`] when the file ends before `buf` is full, or any I/O error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed. Not durable until synced.
    ///
    /// # Errors
    /// Any I/O error, for example `ENOSPC`; the file's contents in the range are then unspecified.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes `bufs`, one after another, from `offset`: a vectored [`VfsFile::write_all_at`]
    /// (`pwritev`), so large payloads need not be copied into one buffer first. Like any
    /// write, it may be torn by a crash anywhere. The default writes the buffers one by one.
    ///
    /// # Errors
    /// As [`VfsFile::write_all_at`].
    fn write_all_vectored_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        let mut at = offset;
        for b in bufs {
            self.write_all_at(b, at)?;
            at += b.len() as u64;
        }
        Ok(())
    }
    /// Makes the file's data (and the size, if it changed) durable: `fdatasync`.
    ///
    /// # Errors
    /// Any I/O error. After a failure nothing may be assumed about unsynced data.
    fn sync_data(&self) -> io::Result<()>;
    /// Makes data and all metadata durable: `fsync`.
    ///
    /// # Errors
    /// As [`VfsFile::sync_data`].
    fn sync_all(&self) -> io::Result<()>;
    /// The file's current length.
    ///
    /// # Errors
    /// Any I/O error.
    fn len(&self) -> io::Result<u64>;
    /// Whether the file is empty.
    ///
    /// # Errors
    /// Any I/O error.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (with zeros) the file to `len`. Not durable until synced.
    ///
    /// # Errors
    /// Any I/O error.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// A read-only view of the whole file as it is now.
    ///
    /// # Errors
    /// Any I/O error.
    fn map(&self) -> io::Result<Mapped>;
}

/// An operation that failed: its name, the path it was applied to, and the I/O error.
pub type FailedOp = (&'static str, PathBuf, io::Error);

/// A file system: the only way raftwal touches the disk.
pub trait Vfs: Send + Sync + Debug {
    /// Opens (or creates) a file.
    ///
    /// # Errors
    /// [`io::ErrorKind::NotFound`], [`io::ErrorKind::AlreadyExists`] or any other I/O error.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>>;
    /// Creates a directory and its parents. Not durable until the parent is synced.
    ///
    /// # Errors
    /// Any I/O error, including a path component that is a file.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Creates a directory and its parents, durably: every directory that may have gained an
    /// entry (each ancestor) is synced. Returns the path that failed with the error.
    ///
    /// # Errors
    /// The failed operation (`"create directory"` or `"fsync directory"`), its path, and the
    /// I/O error.
    fn create_dir_durable(&self, path: &Path) -> Result<(), FailedOp> {
        self.create_dir_all(path)
            .map_err(|e| ("create directory", path.to_path_buf(), e))?;
        for parent in path
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
        {
            self.sync_dir(parent)
                .map_err(|e| ("fsync directory", parent.to_path_buf(), e))?;
        }
        Ok(())
    }
    /// Removes a file. Not durable until the parent directory is synced.
    ///
    /// # Errors
    /// Any I/O error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory.
    ///
    /// # Errors
    /// Any I/O error.
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Atomically renames a file or directory, replacing a file at `to`. Not durable until the
    /// parent directory is synced.
    ///
    /// # Errors
    /// Any I/O error.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// The names of the entries of a directory, sorted.
    ///
    /// # Errors
    /// Any I/O error.
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Makes the directory's entries (creations, removals, renames) durable.
    ///
    /// # Errors
    /// Any I/O error.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// What `path` names, or `None` if nothing.
    ///
    /// # Errors
    /// Any I/O error other than not-found.
    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>>;
    /// Takes an exclusive lock on the file at `path` (created if missing), held until the guard
    /// is dropped.
    ///
    /// # Errors
    /// [`io::ErrorKind::WouldBlock`] when another holder has it, or any I/O error.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>>;
    /// Tells the OS the file's cached pages will not be needed soon, so their memory can be
    /// reused (`posix_fadvise(DONTNEED)`: clean pages only). A hint: the file stays readable,
    /// from the medium. The default does nothing.
    ///
    /// # Errors
    /// Any I/O error; callers treat it as a lost hint, never as damage.
    fn drop_cache(&self, path: &Path) -> io::Result<()> {
        let _ = path;
        Ok(())
    }
}
