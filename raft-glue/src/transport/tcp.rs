//! The TCP transport: one outgoing connection per peer, length-prefixed frames, a cluster-id
//! handshake.
//!
//! Wire format, all integers little-endian:
//! - handshake, once per connection, client → server: magic `RWRAFT\0\x01` (8 bytes), cluster id
//!   (u64), sender id (u64). A server closes a connection whose magic or cluster id is wrong, so
//!   a node of another cluster is refused.
//! - then frames: length (u32, at most [`MAX_FRAME`]), then a protobuf-encoded raft `Message`.
//!
//! A snapshot travels on a connection of its own, out of band: handshake with the magic
//! `RWSNAP\0\x01` (then cluster id and sender id as above), a frame with the `MsgSnapshot`, a
//! frame with the stored snapshot's metadata (`SnapshotMeta::encode`), then the data as chunk
//! frames of at most [`SNAPSHOT_CHUNK`] bytes, ended by an empty frame. The receiver stores and
//! verifies it (size and checksum), then answers one byte: 0 taken, 1 refused.
//!
//! Sends are pipelined through a bounded queue per peer, drained by that peer's writer thread;
//! a full queue drops the message (Raft retries). A broken connection is re-established with
//! exponential backoff (50 ms up to 2 s), and the peer is reported unreachable to Raft.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::Message;
use raftwal_snapshot::SnapshotMeta;

use crate::mailbox::Mailbox;
use crate::transport::Transport;

/// The largest frame accepted (a bigger length field closes the connection).
pub const MAX_FRAME: u32 = 64 << 20;
/// The largest chunk of snapshot data sent in one frame.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
const MAGIC: [u8; 8] = *b"RWRAFT\x00\x01";
const SNAP_MAGIC: [u8; 8] = *b"RWSNAP\x00\x01";
const QUEUE: usize = 4096;

/// Sends a node's messages to its peers over TCP.
pub struct TcpTransport {
    from: u64,
    cluster_id: u64,
    addrs: HashMap<u64, SocketAddr>,
    peers: Mutex<HashMap<u64, SyncSender<Message>>>,
    /// Peers a writer could not reach, until the node collects them.
    unreachable: Arc<Mutex<BTreeSet<u64>>>,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("from", &self.from)
            .field("cluster_id", &self.cluster_id)
            .finish_non_exhaustive()
    }
}

impl TcpTransport {
    /// A transport for node `from` of cluster `cluster_id`, with the peers' listen addresses.
    pub fn new(from: u64, cluster_id: u64, addrs: HashMap<u64, SocketAddr>) -> Self {
        TcpTransport {
            from,
            cluster_id,
            addrs,
            peers: Mutex::new(HashMap::new()),
            unreachable: Arc::default(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    fn peer(&self, to: u64) -> Option<SyncSender<Message>> {
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(tx) = peers.get(&to) {
            return Some(tx.clone());
        }
        let addr = *self.addrs.get(&to)?;
        let (tx, rx) = mpsc::sync_channel(QUEUE);
        let (from, cluster, stop) = (self.from, self.cluster_id, self.stop.clone());
        let unreachable = self.unreachable.clone();
        let failed = move || {
            unreachable
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(to);
        };
        std::thread::Builder::new()
            .name(format!("raftwal-tcp-{from}-{to}"))
            .spawn(move || writer(addr, (from, cluster), &rx, &stop, failed))
            .ok()?;
        peers.insert(to, tx.clone());
        Some(tx)
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Dropping the senders ends the writer threads.
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

impl Transport for TcpTransport {
    fn send(&self, msg: Message) {
        let to = msg.to;
        let Some(tx) = self.peer(to) else {
            return;
        };
        if let Err(TrySendError::Disconnected(_)) = tx.try_send(msg) {
            // The writer thread is gone: start a new one on the next send.
            self.peers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&to);
        }
    }

    fn send_snapshot(
        &self,
        msg: Message,
        meta: &SnapshotMeta,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let addr = *self
            .addrs
            .get(&msg.to)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for the peer"))?;
        let mut w = connect(addr, SNAP_MAGIC, self.from, self.cluster_id)?;
        write_frame(&mut w, &msg)?;
        let m = meta.encode();
        w.write_all(
            &u32::try_from(m.len())
                .map_err(io::Error::other)?
                .to_le_bytes(),
        )?;
        w.write_all(&m)?;
        let mut chunk = vec![0u8; SNAPSHOT_CHUNK];
        loop {
            let n = match data.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // `n` ≤ SNAPSHOT_CHUNK, which fits a u32; the empty frame ends the data.
            w.write_all(&(n as u32).to_le_bytes())?;
            w.write_all(&chunk[..n])?;
            if n == 0 {
                break;
            }
        }
        w.flush()?;
        let s = w.into_inner().map_err(|e| e.into_error())?;
        s.set_read_timeout(Some(Duration::from_secs(60)))?;
        let mut answer = [1u8];
        (&s).read_exact(&mut answer)?;
        if answer[0] == 0 {
            Ok(())
        } else {
            Err(io::Error::other("the peer refused the snapshot"))
        }
    }

    fn unreachable(&self) -> Vec<u64> {
        let mut u = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        if u.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut *u).into_iter().collect()
    }
}

fn connect(
    addr: SocketAddr,
    magic: [u8; 8],
    from: u64,
    cluster: u64,
) -> io::Result<BufWriter<TcpStream>> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    s.set_nodelay(true)?;
    let mut w = BufWriter::new(s);
    w.write_all(&magic)?;
    w.write_all(&cluster.to_le_bytes())?;
    w.write_all(&from.to_le_bytes())?;
    w.flush()?;
    Ok(w)
}

/// One peer's writer: connects (with backoff), then writes every queued message, flushing when
/// the queue is momentarily empty (pipelining without a syscall per message).
/// A connection that breaks reports the peer unreachable (`failed`).
fn writer(
    addr: SocketAddr,
    (from, cluster): (u64, u64),
    rx: &Receiver<Message>,
    stop: &AtomicBool,
    failed: impl Fn(),
) {
    let mut backoff = Duration::from_millis(50);
    let mut conn: Option<BufWriter<TcpStream>> = None;
    while let Ok(first) = rx.recv() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let w = match conn.as_mut() {
            Some(w) => w,
            None => match connect(addr, MAGIC, from, cluster) {
                Ok(w) => {
                    backoff = Duration::from_millis(50);
                    conn.insert(w)
                }
                Err(_) => {
                    failed();
                    // Drop what is queued (Raft retries) and wait before the next attempt.
                    while rx.try_recv().is_ok() {}
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        let mut msg = Some(first);
        let mut ok = true;
        while let Some(m) = msg.take() {
            if write_frame(w, &m).is_err() {
                ok = false;
                break;
            }
            msg = rx.try_recv().ok();
        }
        if !ok || w.flush().is_err() {
            failed();
            conn = None;
        }
    }
}

fn write_frame(w: &mut impl Write, m: &Message) -> io::Result<()> {
    let b = m
        .write_to_bytes()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let len = u32::try_from(b.len())
        .ok()
        .filter(|l| *l <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(&b)
}

/// Accepts peers' connections and delivers their messages to a node's mailbox.
pub struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl TcpServer {
    /// Binds `addr` (port 0 picks a free one; see [`TcpServer::addr`]).
    ///
    /// # Errors
    /// The bind error.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr)
    }

    /// Serves a bound listener for cluster `cluster_id`, delivering to `mailbox`.
    ///
    /// # Errors
    /// If the listener cannot be configured or the thread cannot start.
    pub fn serve(listener: TcpListener, cluster_id: u64, mailbox: Mailbox) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let (s, r) = (stop.clone(), refused.clone());
        let thread = std::thread::Builder::new()
            .name(format!("raftwal-tcp-accept-{addr}"))
            .spawn(move || {
                while !s.load(Ordering::SeqCst) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (mb, s2, r2) = (mailbox.clone(), s.clone(), r.clone());
                            let _ = std::thread::Builder::new()
                                .name("raftwal-tcp-reader".into())
                                .spawn(move || reader(stream, cluster_id, &mb, &s2, &r2));
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            std::thread::sleep(Duration::from_millis(5));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(50)),
                    }
                }
            })?;
        Ok(TcpServer {
            addr,
            stop,
            refused,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections refused (bad magic or another cluster's id).
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn reader(
    stream: TcpStream,
    cluster: u64,
    mailbox: &Mailbox,
    stop: &AtomicBool,
    refused: &AtomicU64,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut r = BufReader::new(stream);
    let mut hello = [0u8; 24];
    if read_full(&mut r, &mut hello, stop).is_err()
        || (hello[..8] != MAGIC && hello[..8] != SNAP_MAGIC)
        || hello[8..16] != cluster.to_le_bytes()
    {
        refused.fetch_add(1, Ordering::SeqCst);
        return;
    }
    let mut buf = Vec::new();
    if hello[..8] == SNAP_MAGIC {
        let taken = receive_snapshot(&mut r, &mut buf, mailbox, stop).is_ok();
        let _ = r.get_mut().write_all(&[u8::from(!taken)]);
        return;
    }
    while read_frame(&mut r, &mut buf, stop).is_ok() {
        let mut m = Message::default();
        if m.merge_from_bytes(&buf).is_err() {
            return;
        }
        mailbox.deliver(m);
    }
}

/// Reads one frame into `buf`.
fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>, stop: &AtomicBool) -> io::Result<()> {
    let mut len = [0u8; 4];
    read_full(r, &mut len, stop)?;
    let len = u32::from_le_bytes(len);
    if len > MAX_FRAME {
        // A corrupt or hostile length: never allocate it.
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes, at most {MAX_FRAME} expected"),
        ));
    }
    buf.resize(len as usize, 0);
    read_full(r, buf, stop)
}

fn receive_snapshot(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    mailbox: &Mailbox,
    stop: &AtomicBool,
) -> io::Result<()> {
    read_frame(r, buf, stop)?;
    let mut msg = Message::default();
    msg.merge_from_bytes(buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    read_frame(r, buf, stop)?;
    let meta = SnapshotMeta::decode(buf, Path::new("<snapshot from the network>"))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut chunks = Chunks {
        r,
        left: 0,
        done: false,
        stop,
    };
    mailbox.receive_snapshot(msg, &meta, &mut chunks)
}

/// The snapshot data of a stream of chunk frames, up to the empty frame.
struct Chunks<'a, R> {
    r: &'a mut R,
    left: u32,
    done: bool,
    stop: &'a AtomicBool,
}

impl<R: Read> Read for Chunks<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        while self.left == 0 {
            if self.done {
                return Ok(0);
            }
            let mut len = [0u8; 4];
            read_full(self.r, &mut len, self.stop)?;
            self.left = u32::from_le_bytes(len);
            if self.left as usize > SNAPSHOT_CHUNK {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "snapshot chunk of {} bytes, at most {SNAPSHOT_CHUNK} expected",
                        self.left
                    ),
                ));
            }
            self.done = self.left == 0;
        }
        let want = buf.len().min(self.left as usize);
        let n = read_some(self.r, &mut buf[..want], self.stop)?;
        self.left -= n as u32;
        Ok(n)
    }
}

/// Reads at least one byte (of a non-empty `buf`), waking up periodically (the socket's read
/// timeout) to honour `stop`; the end of the stream is an error here.
fn read_some(r: &mut impl Read, buf: &mut [u8], stop: &AtomicBool) -> io::Result<usize> {
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("stopped"));
        }
        match r.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads exactly `buf.len()` bytes, honouring `stop`.
fn read_full(r: &mut impl Read, buf: &mut [u8], stop: &AtomicBool) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        got += read_some(r, &mut buf[got..], stop)?;
    }
    Ok(())
}
