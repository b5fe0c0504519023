//! The physical limits, measured the same way the engine uses the disk: positional writes into
//! a preallocated, zero-filled file, each followed by `fdatasync`.
#![allow(clippy::disallowed_methods)]

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A preallocated, zero-filled scratch file for raw-disk measurements.
#[derive(Debug)]
pub struct RawFile {
    file: File,
    path: PathBuf,
    size: u64,
    offset: u64,
}

impl RawFile {
    /// Creates `path`, zero-filled to `size` bytes and synced.
    ///
    /// # Errors
    /// Any I/O error.
    pub fn create(path: &Path, size: u64) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?;
        let zeros = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < size {
            let n = (size - off).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], off)?;
            off += n as u64;
        }
        file.sync_all()?;
        Ok(RawFile {
            file,
            path: path.to_path_buf(),
            size,
            offset: 0,
        })
    }

    /// Writes `buf` at the next offset (wrapping around) and `fdatasync`s; returns the time.
    ///
    /// # Errors
    /// Any I/O error.
    pub fn write_sync(&mut self, buf: &[u8]) -> io::Result<Duration> {
        if self.offset + buf.len() as u64 > self.size {
            self.offset = 0;
        }
        let t = Instant::now();
        self.file.write_all_at(buf, self.offset)?;
        self.file.sync_data()?;
        self.offset += buf.len() as u64;
        Ok(t.elapsed())
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Reads every file in `paths` sequentially once; returns bytes read.
///
/// # Errors
/// Any I/O error.
pub fn read_files(paths: &[PathBuf]) -> io::Result<u64> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0;
    for p in paths {
        let mut f = File::open(p)?;
        loop {
            let n = f.read(&mut buf)?;
            if n == 0 {
                break;
            }
            total += n as u64;
        }
    }
    Ok(total)
}

/// The regular files directly inside `dir`.
///
/// # Errors
/// Any I/O error.
pub fn files_in(dir: &Path) -> io::Result<Vec<PathBuf>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_file() {
            v.push(e.path());
        }
    }
    v.sort();
    Ok(v)
}

/// Drops `path`'s pages from the page cache (after they were synced), so the next read comes
/// from the device: `posix_fadvise(POSIX_FADV_DONTNEED)`. Best effort.
///
/// # Errors
/// Opening the file.
pub fn evict(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(path)?;
    f.sync_all()?;
    // SAFETY: a plain advisory syscall on a file descriptor we own for its whole duration.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    Ok(())
}
