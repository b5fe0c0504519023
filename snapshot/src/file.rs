//! The file snapshot store: one directory per snapshot, committed by an atomic rename.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Instant;

use raftwal_wal::vfs::{FileKind, OpenMode, StdVfs, Vfs, VfsFile};

use crate::meta::{new_id, now_nanos, MAX_META_LEN, META_VERSION};
use crate::{CorruptKind, Error, Result, SnapshotMeta, SnapshotSink, SnapshotStore};

const DATA: &str = "data";
const META: &str = "meta";
const TMP: &str = ".tmp";
const DEL: &str = ".del";
const CHUNK: usize = 1 << 20;

/// Snapshots in a directory, each committed crash-safely: written into `{id}.tmp/`, data and
/// metadata `fsync`ed, the directory `fsync`ed, renamed to `{id}/`, and the parent `fsync`ed.
/// Only then is it listed, and only then are snapshots beyond `retain` reaped, oldest first.
///
/// ```
/// use std::io::{Read, Write};
/// use raftwal_snapshot::{FileSnapshotStore, SnapshotSink, SnapshotStore};
///
/// let dir = tempfile::tempdir().unwrap();
/// let store = FileSnapshotStore::open(dir.path(), 2).unwrap();
/// let mut sink = store.create(10, 2, b"voters=1,2,3", 1).unwrap();
/// sink.write_all(b"state machine bytes").unwrap();
/// let meta = sink.commit().unwrap();
///
/// let (m, mut reader) = store.open(&meta.id).unwrap();
/// let mut data = Vec::new();
/// reader.read_to_end(&mut data).unwrap(); // the checksum is verified as it streams
/// assert_eq!((m.index, data.as_slice()), (10, &b"state machine bytes"[..]));
/// assert_eq!(store.list().unwrap()[0].id, meta.id);
/// ```
///
/// Reading while reaping: a reader keeps its open file handle, and on Linux (and every Unix) an
/// unlinked file stays readable through open handles, so a reaped snapshot being streamed to a
/// follower is read to the end.
#[derive(Debug, Clone)]
pub struct FileSnapshotStore {
    dir: PathBuf,
    retain: usize,
    vfs: Arc<dyn Vfs>,
    /// Never reaped ([`SnapshotStore::protect`]).
    protected: Arc<Mutex<Option<(u64, u64)>>>,
    /// Opened by [`FileSnapshotStore::open_read_only`]: nothing is written or removed.
    read_only: bool,
}

impl FileSnapshotStore {
    /// Opens (creating if needed) the store in `dir`, keeping the `retain` newest snapshots, and
    /// removes temporaries left by a crash.
    ///
    /// # Errors
    /// [`Error::Invalid`] for `retain == 0` or a path that is a file; I/O errors (for example an
    /// unwritable directory).
    pub fn open(dir: impl AsRef<Path>, retain: usize) -> Result<Self> {
        Self::open_with(dir, retain, Arc::new(StdVfs))
    }

    /// As [`FileSnapshotStore::open`], through the given file system (tests use
    /// [`raftwal_wal::vfs::SimVfs`]).
    ///
    /// # Errors
    /// As [`FileSnapshotStore::open`].
    pub fn open_with(dir: impl AsRef<Path>, retain: usize, vfs: Arc<dyn Vfs>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if retain == 0 {
            return Err(Error::Invalid("retain must be at least 1".into()));
        }
        match vfs.kind(&dir).map_err(|e| Error::io("stat", &dir, e))? {
            Some(FileKind::File) => {
                return Err(Error::Invalid(format!(
                    "{} is a file, not a snapshot directory",
                    dir.display()
                )))
            }
            Some(FileKind::Dir) => {}
            None => {
                vfs.create_dir_durable(&dir)
                    .map_err(|(op, path, e)| Error::io(op, path, e))?;
            }
        }
        let store = FileSnapshotStore {
            dir,
            retain,
            vfs,
            protected: Arc::default(),
            read_only: false,
        };
        let mut removed = false;
        for name in store.names()? {
            if name.ends_with(TMP) || name.ends_with(DEL) {
                tracing::info!(dir = %name, "removing a snapshot left incomplete by a crash");
                store.remove_tree(&store.dir.join(&name))?;
                removed = true;
            }
        }
        if removed {
            store.sync_parent()?;
        }
        Ok(store)
    }

    /// Opens an existing store without changing anything in it: no directory is created, no
    /// temporary left by a crash is removed, and [`SnapshotStore::create`] fails with
    /// [`Error::ReadOnly`]. For tools.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `dir` is not a directory; I/O errors.
    pub fn open_read_only(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let vfs: Arc<dyn Vfs> = Arc::new(StdVfs);
        if vfs.kind(&dir).map_err(|e| Error::io("stat", &dir, e))? != Some(FileKind::Dir) {
            return Err(Error::Invalid(format!(
                "{} is not a snapshot directory",
                dir.display()
            )));
        }
        Ok(FileSnapshotStore {
            dir,
            retain: usize::MAX,
            vfs,
            protected: Arc::default(),
            read_only: true,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn names(&self) -> Result<Vec<String>> {
        self.vfs
            .list(&self.dir)
            .map_err(|e| Error::io("list", &self.dir, e))
    }

    fn sync_parent(&self) -> Result<()> {
        self.vfs
            .sync_dir(&self.dir)
            .map_err(|e| Error::io("fsync directory", &self.dir, e))
    }

    fn remove_tree(&self, dir: &Path) -> Result<()> {
        let names = match self.vfs.list(dir) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(Error::io("list", dir, e)),
        };
        for n in names {
            let p = dir.join(n);
            self.vfs
                .remove_file(&p)
                .map_err(|e| Error::io("remove", &p, e))?;
        }
        self.vfs
            .remove_dir(dir)
            .map_err(|e| Error::io("remove directory", dir, e))
    }

    fn read_meta(&self, dir: &Path) -> Result<SnapshotMeta> {
        let path = dir.join(META);
        let f = self.vfs.open(&path, OpenMode::Read).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::corrupt(&path, 0, CorruptKind::Structure("metadata file missing"))
            } else {
                Error::io("open", &path, e)
            }
        })?;
        let len = f.len().map_err(|e| Error::io("stat", &path, e))?;
        if len > MAX_META_LEN {
            return Err(Error::corrupt(
                path,
                0,
                CorruptKind::BadLength {
                    found: len,
                    limit: MAX_META_LEN,
                },
            ));
        }
        let mut b = vec![0u8; len as usize];
        f.read_exact_at(&mut b, 0)
            .map_err(|e| Error::io("read", &path, e))?;
        let m =
            SnapshotMeta::decode(&b, &path).inspect_err(|_| crate::metrics::damaged("metadata"))?;
        if dir.file_name().and_then(|n| n.to_str()) != Some(m.id.as_str()) {
            return Err(Error::corrupt(
                path,
                0,
                CorruptKind::Structure("the metadata names another snapshot than its directory"),
            ));
        }
        Ok(m)
    }

    /// Committed snapshots, newest first, including ones with damaged metadata reported as
    /// errors (for `verify` tools).
    ///
    /// # Errors
    /// I/O errors listing the directory.
    pub fn list_all(&self) -> Result<Vec<Result<SnapshotMeta>>> {
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for name in self.names()? {
            if name.ends_with(TMP) || name.ends_with(DEL) {
                continue;
            }
            let p = self.dir.join(&name);
            if self.vfs.kind(&p).ok().flatten() != Some(FileKind::Dir) {
                continue;
            }
            match self.read_meta(&p) {
                Ok(m) => good.push(m),
                Err(e) => bad.push(Err(e)),
            }
        }
        good.sort_by(SnapshotMeta::newest_first);
        Ok(good.into_iter().map(Ok).chain(bad).collect())
    }

    /// Removes snapshots beyond `retain`, oldest first, but never the protected one. Each is
    /// first renamed to `{id}.del` (an atomic step: it leaves the listing at once), then its
    /// files are removed.
    fn reap(&self) -> Result<()> {
        let list = self.list()?;
        let protected = *crate::lock(&self.protected);
        let mut kept = list.len().min(self.retain);
        for m in list.iter().skip(self.retain) {
            if Some((m.index, m.term)) == protected {
                kept += 1;
                continue;
            }
            let from = self.dir.join(&m.id);
            let to = self.dir.join(format!("{}{DEL}", m.id));
            self.vfs
                .rename(&from, &to)
                .map_err(|e| Error::io("rename", &from, e))?;
            self.sync_parent()?;
            self.remove_tree(&to)?;
        }
        crate::metrics::retained(kept);
        Ok(())
    }
}

impl SnapshotStore for FileSnapshotStore {
    type Sink = FileSink;
    type Reader = FileReader;

    fn create(
        &self,
        index: u64,
        term: u64,
        configuration: &[u8],
        configuration_index: u64,
    ) -> Result<FileSink> {
        if self.read_only {
            return Err(Error::ReadOnly {
                dir: self.dir.clone(),
            });
        }
        let created = now_nanos();
        let id = new_id(term, index, created);
        let tmp = self.dir.join(format!("{id}{TMP}"));
        self.vfs
            .create_dir_all(&tmp)
            .map_err(|e| Error::io("create directory", &tmp, e))?;
        let path = tmp.join(DATA);
        let file = self
            .vfs
            .open(&path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &path, e))?;
        Ok(FileSink {
            store: self.clone(),
            tmp,
            file: Some(file),
            buf: Vec::with_capacity(CHUNK),
            offset: 0,
            crc: crc32fast::Hasher::new(),
            meta: SnapshotMeta {
                id,
                index,
                term,
                configuration: configuration.to_vec(),
                configuration_index,
                size: 0,
                checksum: 0,
                version: META_VERSION,
                created,
            },
            failed: false,
            started: Instant::now(),
        })
    }

    fn list(&self) -> Result<Vec<SnapshotMeta>> {
        let mut out = Vec::new();
        for r in self.list_all()? {
            match r {
                Ok(m) => out.push(m),
                Err(e) => tracing::warn!(error = %e, "skipping a snapshot with damaged metadata"),
            }
        }
        Ok(out)
    }

    fn open(&self, id: &str) -> Result<(SnapshotMeta, FileReader)> {
        if id.is_empty() || id.contains('/') || id.ends_with(TMP) || id.ends_with(DEL) || id == ".."
        {
            return Err(Error::NotFound { id: id.into() });
        }
        let dir = self.dir.join(id);
        if self.vfs.kind(&dir).ok().flatten() != Some(FileKind::Dir) {
            return Err(Error::NotFound { id: id.into() });
        }
        let meta = self.read_meta(&dir)?;
        let path = dir.join(DATA);
        let file = self.vfs.open(&path, OpenMode::Read).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                Error::corrupt(&path, 0, CorruptKind::Structure("data file missing"))
            } else {
                Error::io("open", &path, e)
            }
        })?;
        let len = file.len().map_err(|e| Error::io("stat", &path, e))?;
        if len != meta.size {
            let kind = if len < meta.size {
                CorruptKind::Truncated {
                    needed: meta.size,
                    available: len,
                }
            } else {
                CorruptKind::BadLength {
                    found: len,
                    limit: meta.size,
                }
            };
            return Err(Error::corrupt(path, len.min(meta.size), kind));
        }
        let reader = FileReader::start(file, path, meta.size, meta.checksum);
        Ok((meta, reader))
    }

    fn protect(&self, index: u64, term: u64) {
        *crate::lock(&self.protected) = Some((index, term));
    }
}

/// A snapshot being written. `Write` streams into a temporary directory; [`SnapshotSink::commit`]
/// makes it durable and visible; [`SnapshotSink::cancel`] or dropping it removes it.
pub struct FileSink {
    store: FileSnapshotStore,
    tmp: PathBuf,
    file: Option<Arc<dyn VfsFile>>,
    buf: Vec<u8>,
    offset: u64,
    crc: crc32fast::Hasher,
    meta: SnapshotMeta,
    failed: bool,
    started: Instant,
}

impl std::fmt::Debug for FileSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileSink")
            .field("tmp", &self.tmp)
            .field("offset", &self.offset)
            .finish_non_exhaustive()
    }
}

impl FileSink {
    fn flush_buf(&mut self) -> io::Result<()> {
        if self.failed {
            return Err(io::Error::other("an earlier write to this snapshot failed"));
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        let file = self
            .file
            .as_ref()
            .ok_or_else(|| io::Error::other("snapshot sink already finished"))?;
        if let Err(e) = file.write_all_at(&self.buf, self.offset) {
            self.failed = true;
            return Err(e);
        }
        self.offset += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    fn finish(&mut self) -> Result<SnapshotMeta> {
        let data = self.tmp.join(DATA);
        self.flush_buf().map_err(|e| Error::io("write", &data, e))?;
        let file = self
            .file
            .take()
            .ok_or_else(|| Error::Invalid("snapshot sink already finished".into()))?;
        file.sync_data()
            .map_err(|e| Error::io("fdatasync", &data, e))?;
        drop(file);
        self.meta.size = self.offset;
        self.meta.checksum = self.crc.clone().finalize();
        let vfs = self.store.vfs.clone();
        let meta_path = self.tmp.join(META);
        let mf = vfs
            .open(&meta_path, OpenMode::CreateNew)
            .map_err(|e| Error::io("create", &meta_path, e))?;
        mf.write_all_at(&self.meta.encode(), 0)
            .map_err(|e| Error::io("write", &meta_path, e))?;
        mf.sync_data()
            .map_err(|e| Error::io("fdatasync", &meta_path, e))?;
        vfs.sync_dir(&self.tmp)
            .map_err(|e| Error::io("fsync directory", &self.tmp, e))?;
        let dst = self.store.dir.join(&self.meta.id);
        vfs.rename(&self.tmp, &dst)
            .map_err(|e| Error::io("rename", &self.tmp, e))?;
        self.store.sync_parent()?;
        self.tmp = dst;
        Ok(self.meta.clone())
    }

    fn discard(&mut self) -> Result<()> {
        self.file = None;
        let r = self.store.remove_tree(&self.tmp);
        self.tmp = PathBuf::new();
        r
    }
}

impl Write for FileSink {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other("an earlier write to this snapshot failed"));
        }
        self.crc.update(data);
        let mut rest = data;
        while !rest.is_empty() {
            let n = (CHUNK - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            if self.buf.len() == CHUNK {
                self.flush_buf()?;
            }
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_buf()
    }
}

impl SnapshotSink for FileSink {
    fn id(&self) -> &str {
        &self.meta.id
    }

    fn commit(mut self) -> Result<SnapshotMeta> {
        match self.finish() {
            Ok(m) => {
                crate::metrics::written(self.started.elapsed(), m.size);
                self.tmp = PathBuf::new(); // committed: Drop must not remove it
                                           // The snapshot is durable whatever happens now; a failed reap only delays
                                           // reclaiming space (it is retried after the next commit).
                if let Err(e) = self.store.reap() {
                    tracing::warn!(error = %e, "could not reap old snapshots");
                }
                Ok(m)
            }
            Err(e) => {
                if let Err(e2) = self.discard() {
                    tracing::warn!(error = %e2, "could not remove a failed snapshot's temporary");
                }
                Err(e)
            }
        }
    }

    fn cancel(mut self) -> Result<()> {
        self.discard()
    }
}

impl Drop for FileSink {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            if let Err(e) = self.discard() {
                tracing::warn!(error = %e, "could not remove an abandoned snapshot's temporary");
            }
        }
    }
}

/// Streams a snapshot's data, verifying its checksum: a mismatch is an
/// [`io::ErrorKind::InvalidData`] error no later than the end of the stream.
///
/// A read-ahead thread reads and checksums the next chunks while the caller consumes the
/// current one, so the device never idles behind the checksum (at most three 1 MiB chunks are
/// in memory).
pub struct FileReader {
    path: PathBuf,
    chunks: mpsc::Receiver<io::Result<Vec<u8>>>,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for FileReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileReader")
            .field("path", &self.path)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl FileReader {
    fn start(file: Arc<dyn VfsFile>, path: PathBuf, size: u64, expected: u32) -> Self {
        let (tx, rx) = mpsc::sync_channel(2);
        let p = path.clone();
        let started = Instant::now();
        let produce = move || {
            let mut crc = crc32fast::Hasher::new();
            let mut offset = 0u64;
            loop {
                let n = (size - offset).min(CHUNK as u64) as usize;
                let mut chunk = vec![0u8; n];
                if let Err(e) = file.read_exact_at(&mut chunk, offset) {
                    let _ = tx.send(Err(io::Error::new(
                        e.kind(),
                        format!("{} at offset {offset}: {e}", p.display()),
                    )));
                    return;
                }
                crc.update(&chunk);
                offset += n as u64;
                // The last chunk is held back until the whole checksum is verified, so a
                // corrupt snapshot never reaches a clean end of stream.
                if offset == size {
                    let actual = crc.clone().finalize();
                    if actual != expected {
                        crate::metrics::damaged("data");
                        let _ = tx.send(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            Error::corrupt(&p, 0, CorruptKind::Checksum { expected, actual }),
                        )));
                        return;
                    }
                }
                if offset == size {
                    crate::metrics::read(started.elapsed(), size);
                }
                if tx.send(Ok(chunk)).is_err() || offset == size {
                    return; // done, or the reader was dropped
                }
            }
        };
        let thread = std::thread::Builder::new()
            .name("raftwal-snap-read".into())
            .spawn(produce);
        let (thread, chunks) = match thread {
            Ok(t) => (Some(t), rx),
            Err(e) => {
                let (tx, rx) = mpsc::sync_channel(1);
                let _ = tx.send(Err(e));
                (None, rx)
            }
        };
        FileReader {
            path,
            chunks,
            buf: Vec::new(),
            pos: 0,
            done: false,
            thread,
        }
    }
}

impl Drop for FileReader {
    fn drop(&mut self) {
        // Disconnect first, so a read-ahead thread blocked on a full channel stops, then wait
        // for it: no thread outlives its reader.
        let (_, closed) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.chunks, closed));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Read for FileReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            match self.chunks.recv() {
                Ok(Ok(chunk)) => {
                    self.buf = chunk;
                    self.pos = 0;
                }
                Ok(Err(e)) => {
                    self.done = true;
                    return Err(e);
                }
                // The producer finished: every chunk was delivered and verified.
                Err(_) => {
                    self.done = true;
                    return Ok(0);
                }
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
