//! A simulated, fault-injecting file system in the style of RocksDB's `FaultInjectionTestFS`.
//!
//! Every file keeps its *durable* bytes (what survives a power cut) apart from the writes made
//! since its last sync; every directory keeps its durable entries apart from its current ones.
//! [`SimVfs::crash`] turns the machine off and on again: each unsynced write is kept, dropped,
//! torn to a prefix, replaced by garbage or by zeros, as the [`CrashPolicy`] decides, and
//! directory entries not made durable by `sync_dir` vanish. [`SimFaults`] cut the power at the
//! n-th operation, fail an `fsync`, fail writes with `ENOSPC`, or make syncs take time.
//!
//! Everything is deterministic for a given seed, so a failing test can be replayed.

use crate::lock;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{FileKind, Mapped, OpenMode, Vfs, VfsFile};

/// Faults to inject. Counters start when the faults are installed with [`SimVfs::set_faults`].
#[derive(Debug, Clone, Default)]
pub struct SimFaults {
    /// Cut the power just before the n-th mutating operation (write, set_len, sync, rename,
    /// remove, create; 1-based): it and every later operation fail with `EIO` until
    /// [`SimVfs::crash`].
    pub crash_at_op: Option<u64>,
    /// Fail the n-th `sync_data`/`sync_all` (1-based) with `EIO`; the data it should have made
    /// durable stays unsynced.
    pub fail_sync_at: Option<u64>,
    /// After this many more bytes are written, every write fails with `ENOSPC`.
    pub enospc_after_bytes: Option<u64>,
    /// How long each file sync takes (default zero), like a real device's flush: the data a sync
    /// covers is what was written when it started.
    pub sync_latency: Duration,
}

/// What happens to unsynced writes at a simulated crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPolicy {
    /// Every unsynced write and every unsynced directory change is lost.
    DropAll,
    /// Every unsynced write survives (directory changes still need `sync_dir`).
    KeepAll,
    /// Each unsynced write independently survives whole, is lost, is torn to a random prefix,
    /// becomes random garbage, or becomes zeros, chosen by a PRNG with this seed; directory
    /// changes not synced are lost.
    Random(u64),
}

#[derive(Debug, Clone)]
enum Pending {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct InodeData {
    current: Vec<u8>,
    durable: Vec<u8>,
    pending: Vec<Pending>,
}

#[derive(Debug, Default)]
struct Inode {
    data: Mutex<InodeData>,
}

#[derive(Debug, Clone)]
enum Node {
    File(Arc<Inode>),
    Dir(u64),
}

#[derive(Debug)]
struct State {
    generation: u64,
    next_dir: u64,
    current: HashMap<u64, BTreeMap<String, Node>>,
    durable: HashMap<u64, BTreeMap<String, Node>>,
    locks: BTreeSet<PathBuf>,
    faults: SimFaults,
    ops: u64,
    syncs: u64,
    bytes: u64,
    /// Paths passed to `drop_cache`, oldest first.
    cache_drops: Vec<PathBuf>,
    dead: bool,
    rng: fastrand::Rng,
}

const ROOT: u64 = 0;

/// The simulated file system. Cloning gives another handle to the same machine.
#[derive(Debug, Clone)]
pub struct SimVfs {
    state: Arc<Mutex<State>>,
    /// For a [`SimVfs::process`] handle: the boot it belongs to.
    pin: Option<u64>,
}

impl Default for SimVfs {
    fn default() -> Self {
        Self::new(0)
    }
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("simulated EIO: {what}"))
}

fn components(path: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(s) => out.push(s.to_string_lossy().into_owned()),
            Component::ParentDir => {
                out.pop();
            }
            Component::Prefix(_) => {
                return Err(io::Error::new(io::ErrorKind::InvalidInput, "path prefix"))
            }
        }
    }
    Ok(out)
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: not found", path.display()),
    )
}

impl State {
    fn next_rand(&mut self) -> u64 {
        self.rng.u64(..)
    }

    fn check_alive(&self, generation: u64) -> io::Result<()> {
        if self.dead {
            return Err(eio("the machine is off (simulated power cut)"));
        }
        if generation != self.generation {
            return Err(eio("stale handle from before a simulated crash"));
        }
        Ok(())
    }

    /// Counts a mutating operation and cuts the power if it is the chosen one.
    fn mutate(&mut self, generation: u64) -> io::Result<()> {
        self.check_alive(generation)?;
        self.ops += 1;
        if self.faults.crash_at_op.is_some_and(|n| self.ops >= n) {
            self.dead = true;
            return Err(eio("simulated power cut"));
        }
        Ok(())
    }

    fn resolve_dir(&self, parts: &[String]) -> Option<u64> {
        let mut dir = ROOT;
        for p in parts {
            match self.current.get(&dir)?.get(p)? {
                Node::Dir(id) => dir = *id,
                Node::File(_) => return None,
            }
        }
        Some(dir)
    }

    fn parent_and_name(&self, path: &Path) -> io::Result<(u64, String)> {
        let mut parts = components(path)?;
        let name = parts
            .pop()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))?;
        let dir = self.resolve_dir(&parts).ok_or_else(|| not_found(path))?;
        Ok((dir, name))
    }

    fn lookup(&self, path: &Path) -> io::Result<Option<Node>> {
        let parts = components(path)?;
        if parts.is_empty() {
            return Ok(Some(Node::Dir(ROOT)));
        }
        let (dir, name) = self.parent_and_name(path)?;
        Ok(self.current.get(&dir).and_then(|d| d.get(&name)).cloned())
    }
}

impl SimVfs {
    /// A new, empty machine whose random choices derive from `seed`.
    pub fn new(seed: u64) -> Self {
        let mut current = HashMap::new();
        current.insert(ROOT, BTreeMap::new());
        let durable = current.clone();
        SimVfs {
            pin: None,
            state: Arc::new(Mutex::new(State {
                generation: 0,
                next_dir: 1,
                current,
                durable,
                locks: BTreeSet::new(),
                faults: SimFaults::default(),
                ops: 0,
                syncs: 0,
                bytes: 0,
                cache_drops: Vec::new(),
                dead: false,
                rng: fastrand::Rng::with_seed(seed),
            })),
        }
    }

    /// A handle for one "process": it works until the next [`SimVfs::crash`], after which every
    /// operation through it fails, as no thread of a crashed process survives the crash. Give
    /// the store under test a process handle; keep the unpinned one for the test itself.
    pub fn process(&self) -> SimVfs {
        SimVfs {
            state: self.state.clone(),
            pin: Some(lock(&self.state).generation),
        }
    }

    /// The state, after checking that this handle's process has not crashed.
    fn live(&self) -> io::Result<MutexGuard<'_, State>> {
        let s = lock(&self.state);
        if self.pin.is_some_and(|p| p != s.generation) {
            return Err(eio("this process did not survive a simulated crash"));
        }
        Ok(s)
    }

    /// Installs faults and restarts their counters.
    pub fn set_faults(&self, faults: SimFaults) {
        let mut s = lock(&self.state);
        s.faults = faults;
        s.ops = 0;
        s.syncs = 0;
        s.bytes = 0;
    }

    /// Mutating operations counted since the faults were last set.
    pub fn ops(&self) -> u64 {
        lock(&self.state).ops
    }

    /// Every path whose cache was dropped ([`Vfs::drop_cache`]), oldest first. The simulation
    /// has no page cache; it only records the hints.
    pub fn cache_drops(&self) -> Vec<PathBuf> {
        lock(&self.state).cache_drops.clone()
    }

    /// Whether the simulated power is off (a `crash_at_op` fault fired).
    pub fn is_dead(&self) -> bool {
        lock(&self.state).dead
    }

    /// Simulates a power cut and reboot: unsynced data meets `policy`, unsynced directory changes
    /// are lost, locks are released, faults are cleared, and every handle opened before the
    /// crash fails from now on.
    pub fn crash(&self, policy: CrashPolicy) {
        let mut s = lock(&self.state);
        if let CrashPolicy::Random(seed) = policy {
            s.rng = fastrand::Rng::with_seed(seed);
        }
        s.current = s.durable.clone();
        let mut inodes: Vec<Arc<Inode>> = Vec::new();
        for d in s.durable.values() {
            for n in d.values() {
                if let Node::File(i) = n {
                    inodes.push(i.clone());
                }
            }
        }
        for inode in inodes {
            let mut d = lock(&inode.data);
            let pending = std::mem::take(&mut d.pending);
            let mut img = d.durable.clone();
            for p in pending {
                let fate = match policy {
                    CrashPolicy::DropAll => 1,
                    CrashPolicy::KeepAll => 0,
                    CrashPolicy::Random(_) => s.next_rand() % 5,
                };
                match p {
                    Pending::SetLen(len) => {
                        if fate != 1 {
                            img.resize(len as usize, 0);
                        }
                    }
                    Pending::Write { offset, mut data } => {
                        match fate {
                            0 => {}
                            1 => continue,
                            2 => {
                                let keep = (s.next_rand() % (data.len() as u64 + 1)) as usize;
                                data.truncate(keep);
                            }
                            3 => {
                                for b in data.iter_mut() {
                                    *b = s.next_rand() as u8;
                                }
                            }
                            _ => data.iter_mut().for_each(|b| *b = 0),
                        }
                        let end = offset as usize + data.len();
                        if img.len() < end {
                            img.resize(end, 0);
                        }
                        img[offset as usize..end].copy_from_slice(&data);
                    }
                }
            }
            d.current = img.clone();
            d.durable = img;
        }
        s.locks.clear();
        s.generation += 1;
        s.dead = false;
        s.faults = SimFaults::default();
    }

    /// Test helper: XORs `mask` into the byte at `offset` of a file, in both its current and its
    /// durable contents (a bit rot on the medium).
    ///
    /// # Errors
    /// `NotFound` if there is no such file, `InvalidInput` if `offset` is past its end.
    pub fn corrupt(&self, path: &Path, offset: u64, mask: u8) -> io::Result<()> {
        let s = lock(&self.state);
        match s.lookup(path)? {
            Some(Node::File(inode)) => {
                let mut d = lock(&inode.data);
                let o = offset as usize;
                if o >= d.current.len() {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        "offset past end",
                    ));
                }
                d.current[o] ^= mask;
                if o < d.durable.len() {
                    d.durable[o] ^= mask;
                }
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }

    /// Test helper: the current contents of a file.
    ///
    /// # Errors
    /// `NotFound` if there is no such file.
    pub fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let s = lock(&self.state);
        match s.lookup(path)? {
            Some(Node::File(inode)) => Ok(lock(&inode.data).current.clone()),
            _ => Err(not_found(path)),
        }
    }

    /// Test helper: replaces a file's contents, durably, creating it (and making its name
    /// durable) if needed.
    ///
    /// # Errors
    /// `NotFound` if the parent directory does not exist.
    pub fn write_file(&self, path: &Path, contents: &[u8]) -> io::Result<()> {
        let mut s = lock(&self.state);
        let (dir, name) = s.parent_and_name(path)?;
        let existing = s.current.get(&dir).and_then(|d| d.get(&name)).cloned();
        let inode = match existing {
            Some(Node::File(i)) => i,
            Some(Node::Dir(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::IsADirectory,
                    "is a directory",
                ))
            }
            None => Arc::new(Inode::default()),
        };
        {
            let mut d = lock(&inode.data);
            d.current = contents.to_vec();
            d.durable = contents.to_vec();
            d.pending.clear();
        }
        let st = &mut *s;
        for ns in [&mut st.current, &mut st.durable] {
            ns.entry(dir)
                .or_default()
                .insert(name.clone(), Node::File(inode.clone()));
        }
        Ok(())
    }

    fn file(&self, inode: Arc<Inode>) -> Arc<dyn VfsFile> {
        let generation = lock(&self.state).generation;
        Arc::new(SimFile {
            vfs: self.clone(),
            inode,
            generation,
        })
    }
}

#[derive(Debug)]
struct SimFile {
    vfs: SimVfs,
    inode: Arc<Inode>,
    generation: u64,
}

impl SimFile {
    fn sync(&self) -> io::Result<()> {
        let latency = {
            let mut s = lock(&self.vfs.state);
            s.mutate(self.generation)?;
            s.syncs += 1;
            if s.faults.fail_sync_at == Some(s.syncs) {
                return Err(eio("fsync failed"));
            }
            s.faults.sync_latency
        };
        // What was written when the sync started becomes durable when it ends; writes made
        // meanwhile (on a slow device) stay pending, and a crash may still drop or tear them.
        let (image, covered) = {
            let d = lock(&self.inode.data);
            (d.current.clone(), d.pending.len())
        };
        if !latency.is_zero() {
            std::thread::sleep(latency);
            lock(&self.vfs.state).check_alive(self.generation)?;
        }
        let mut d = lock(&self.inode.data);
        d.durable = image;
        d.pending.drain(..covered);
        Ok(())
    }
}

impl VfsFile for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        lock(&self.vfs.state).check_alive(self.generation)?;
        let d = lock(&self.inode.data);
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(buf.len());
        if end > d.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end of file",
            ));
        }
        buf.copy_from_slice(&d.current[start..end]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        {
            let mut s = lock(&self.vfs.state);
            s.mutate(self.generation)?;
            if let Some(limit) = s.faults.enospc_after_bytes {
                if s.bytes + buf.len() as u64 > limit {
                    return Err(io::Error::from_raw_os_error(28));
                }
            }
            s.bytes += buf.len() as u64;
        }
        let mut d = lock(&self.inode.data);
        let start = offset as usize;
        let end = start + buf.len();
        if d.current.len() < end {
            d.current.resize(end, 0);
        }
        d.current[start..end].copy_from_slice(buf);
        d.pending.push(Pending::Write {
            offset,
            data: buf.to_vec(),
        });
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn len(&self) -> io::Result<u64> {
        lock(&self.vfs.state).check_alive(self.generation)?;
        Ok(lock(&self.inode.data).current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        {
            let mut s = lock(&self.vfs.state);
            s.mutate(self.generation)?;
            let cur = lock(&self.inode.data).current.len() as u64;
            if let Some(limit) = s.faults.enospc_after_bytes {
                let grow = len.saturating_sub(cur);
                if s.bytes + grow > limit {
                    return Err(io::Error::from_raw_os_error(28));
                }
                s.bytes += grow;
            }
        }
        let mut d = lock(&self.inode.data);
        d.current.resize(len as usize, 0);
        d.pending.push(Pending::SetLen(len));
        Ok(())
    }

    fn map(&self) -> io::Result<Mapped> {
        lock(&self.vfs.state).check_alive(self.generation)?;
        Ok(Arc::new(lock(&self.inode.data).current.clone()))
    }
}

struct SimLock {
    vfs: SimVfs,
    path: PathBuf,
    generation: u64,
}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut s = lock(&self.vfs.state);
        if s.generation == self.generation {
            s.locks.remove(&self.path);
        }
    }
}

impl Vfs for SimVfs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn VfsFile>> {
        let inode = {
            let mut s = self.live()?;
            s.check_alive(s.generation)?;
            let (dir, name) = s.parent_and_name(path)?;
            let existing = s.current.get(&dir).and_then(|d| d.get(&name)).cloned();
            match (existing, mode) {
                (Some(Node::Dir(_)), _) => {
                    return Err(io::Error::new(
                        io::ErrorKind::IsADirectory,
                        format!("{}: is a directory", path.display()),
                    ))
                }
                (Some(Node::File(_)), OpenMode::CreateNew) => {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{}: exists", path.display()),
                    ))
                }
                (Some(Node::File(i)), OpenMode::CreateTruncate) => {
                    let g = s.generation;
                    s.mutate(g)?;
                    let mut d = lock(&i.data);
                    d.current.clear();
                    d.pending.push(Pending::SetLen(0));
                    drop(d);
                    i
                }
                (Some(Node::File(i)), _) => i,
                (None, OpenMode::Read | OpenMode::ReadWrite) => return Err(not_found(path)),
                (None, OpenMode::CreateNew | OpenMode::CreateTruncate) => {
                    let g = s.generation;
                    s.mutate(g)?;
                    let i = Arc::new(Inode::default());
                    s.current
                        .entry(dir)
                        .or_default()
                        .insert(name, Node::File(i.clone()));
                    i
                }
            }
        };
        Ok(self.file(inode))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        let g = s.generation;
        s.check_alive(g)?;
        let mut dir = ROOT;
        for p in components(path)? {
            let existing = s.current.get(&dir).and_then(|d| d.get(&p)).cloned();
            dir = match existing {
                Some(Node::Dir(id)) => id,
                Some(Node::File(_)) => {
                    return Err(io::Error::new(
                        io::ErrorKind::NotADirectory,
                        format!("{}: a component is a file", path.display()),
                    ))
                }
                None => {
                    s.mutate(g)?;
                    let id = s.next_dir;
                    s.next_dir += 1;
                    s.current.entry(dir).or_default().insert(p, Node::Dir(id));
                    s.current.insert(id, BTreeMap::new());
                    s.durable.insert(id, BTreeMap::new());
                    id
                }
            };
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        let g = s.generation;
        s.mutate(g)?;
        let (dir, name) = s.parent_and_name(path)?;
        let d = s.current.entry(dir).or_default();
        match d.get(&name) {
            Some(Node::File(_)) => {
                d.remove(&name);
                Ok(())
            }
            Some(Node::Dir(_)) => Err(io::Error::new(io::ErrorKind::IsADirectory, "directory")),
            None => Err(not_found(path)),
        }
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        let g = s.generation;
        s.mutate(g)?;
        let (dir, name) = s.parent_and_name(path)?;
        let id = match s.current.get(&dir).and_then(|d| d.get(&name)) {
            Some(Node::Dir(id)) => *id,
            Some(Node::File(_)) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotADirectory,
                    "not a directory",
                ))
            }
            None => return Err(not_found(path)),
        };
        if s.current.get(&id).is_some_and(|d| !d.is_empty()) {
            return Err(io::Error::new(
                io::ErrorKind::DirectoryNotEmpty,
                "directory not empty",
            ));
        }
        s.current.entry(dir).or_default().remove(&name);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        let g = s.generation;
        s.mutate(g)?;
        let (fd, fname) = s.parent_and_name(from)?;
        let (td, tname) = s.parent_and_name(to)?;
        let node = s
            .current
            .get(&fd)
            .and_then(|d| d.get(&fname))
            .cloned()
            .ok_or_else(|| not_found(from))?;
        if let Some(Node::Dir(id)) = s.current.get(&td).and_then(|d| d.get(&tname)) {
            if s.current.get(id).is_some_and(|d| !d.is_empty()) {
                return Err(io::Error::new(
                    io::ErrorKind::DirectoryNotEmpty,
                    "rename target is a non-empty directory",
                ));
            }
        }
        s.current.entry(fd).or_default().remove(&fname);
        s.current.entry(td).or_default().insert(tname, node);
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let s = self.live()?;
        s.check_alive(s.generation)?;
        match s.lookup(dir)? {
            Some(Node::Dir(id)) => Ok(s
                .current
                .get(&id)
                .map(|d| d.keys().cloned().collect())
                .unwrap_or_default()),
            Some(Node::File(_)) => Err(io::Error::new(
                io::ErrorKind::NotADirectory,
                format!("{}: not a directory", dir.display()),
            )),
            None => Err(not_found(dir)),
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        let g = s.generation;
        s.mutate(g)?;
        s.syncs += 1;
        if s.faults.fail_sync_at == Some(s.syncs) {
            return Err(eio("directory fsync failed"));
        }
        match s.lookup(dir)? {
            Some(Node::Dir(id)) => {
                let entries = s.current.get(&id).cloned().unwrap_or_default();
                s.durable.insert(id, entries);
                Ok(())
            }
            _ => Err(not_found(dir)),
        }
    }

    fn kind(&self, path: &Path) -> io::Result<Option<FileKind>> {
        let s = self.live()?;
        s.check_alive(s.generation)?;
        Ok(match s.lookup(path) {
            Ok(Some(Node::Dir(_))) => Some(FileKind::Dir),
            Ok(Some(Node::File(_))) => Some(FileKind::File),
            _ => None,
        })
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn Send + Sync>> {
        let mut s = self.live()?;
        let g = s.generation;
        s.check_alive(g)?;
        let (dir, name) = s.parent_and_name(path)?;
        if s.current.get(&dir).and_then(|d| d.get(&name)).is_none() {
            s.current
                .entry(dir)
                .or_default()
                .insert(name, Node::File(Arc::new(Inode::default())));
        }
        let key = PathBuf::from(path);
        if !s.locks.insert(key.clone()) {
            return Err(io::Error::new(io::ErrorKind::WouldBlock, "lock is held"));
        }
        Ok(Box::new(SimLock {
            vfs: self.clone(),
            path: key,
            generation: g,
        }))
    }

    fn drop_cache(&self, path: &Path) -> io::Result<()> {
        let mut s = self.live()?;
        match s.lookup(path)? {
            Some(Node::File(_)) => {
                s.cache_drops.push(path.to_path_buf());
                Ok(())
            }
            _ => Err(not_found(path)),
        }
    }
}
