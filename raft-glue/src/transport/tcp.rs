//! The TCP transport: one outgoing connection per peer, mutual TLS (or, as an explicit choice
//! for tests and loopback, plaintext), the frames of `wire.rs`, and bounds on everything a
//! peer or a stranger could make it hold.
//!
//! Sending: a queue per peer, bounded in bytes ([`TcpOptions::queue_bytes`]; a message that
//! does not fit is dropped, Raft retries), drained by the peer's writer thread. A write that
//! does not complete within [`TcpOptions::write_timeout`] (a peer that stopped reading) breaks
//! the connection; the peer is reported unreachable and reconnected with backoff (50 ms up to
//! 2 s).
//!
//! Receiving ([`TcpServer`]): at most [`TcpOptions::max_connections`] connections at once
//! (more are closed at once); the TLS handshake and the hello must complete within
//! [`TcpOptions::handshake_timeout`]; a connection silent for [`TcpOptions::idle_timeout`] is
//! closed; a frame's body is read as it arrives (never allocated from its length). The sender
//! of every message must be the connection's peer (its certificate's id with TLS).

use std::collections::{HashMap, VecDeque};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::Message;
use raftwal_snapshot::SnapshotMeta;
use rustls::{ClientConnection, ServerConnection, StreamOwned};

use super::tls::{self, TlsIdentity};
use super::wire::{self, Chunks, Deadline, Hello, MAGIC, SNAPSHOT_CHUNK, SNAP_MAGIC};
use crate::lock;
use crate::mailbox::Mailbox;
use crate::transport::Transport;

/// The default largest frame: room for the default configuration's largest message
/// ([`Config::max_message_size`](crate::Config::max_message_size)) several times over.
pub const DEFAULT_MAX_FRAME: usize = 8 << 20;

/// How peers are authenticated.
#[derive(Clone, Debug)]
pub enum Security {
    /// Mutual TLS with the cluster's CA (the default for anything on a network).
    Tls(TlsIdentity),
    /// No encryption, and a peer is whoever it says it is: only for tests and loopback.
    Plaintext,
}

/// Settings shared by a node's [`TcpTransport`] and [`TcpServer`].
#[derive(Clone, Debug)]
pub struct TcpOptions {
    /// How peers are authenticated.
    pub security: Security,
    /// The largest frame sent or accepted.
    pub max_frame: usize,
    /// Connections a server holds at once.
    pub max_connections: usize,
    /// Time for a new connection's TLS handshake and hello.
    pub handshake_timeout: Duration,
    /// A connection silent this long is closed (peers send heartbeats far more often).
    pub idle_timeout: Duration,
    /// A write blocked this long breaks its connection; the peer is reported unreachable.
    pub write_timeout: Duration,
    /// Bytes of messages queued for one peer at most.
    pub queue_bytes: usize,
}

impl TcpOptions {
    /// Mutual TLS with `identity`, and the default bounds: 8 MiB frames, 64 connections, 5 s
    /// handshakes, 30 s idle, 5 s writes, 32 MiB queued per peer.
    pub fn tls(identity: TlsIdentity) -> Self {
        TcpOptions {
            security: Security::Tls(identity),
            ..Self::plaintext()
        }
    }

    /// Plaintext (tests and loopback only), with the default bounds.
    pub fn plaintext() -> Self {
        TcpOptions {
            security: Security::Plaintext,
            max_frame: DEFAULT_MAX_FRAME,
            max_connections: 64,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(5),
            queue_bytes: 32 << 20,
        }
    }
}

/// A connection, encrypted or not.
enum Stream {
    Plain(TcpStream),
    Client(Box<StreamOwned<ClientConnection, TcpStream>>),
    Server(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Client(s) => s.read(buf),
            Stream::Server(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Client(s) => s.write(buf),
            Stream::Server(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Client(s) => s.flush(),
            Stream::Server(s) => s.flush(),
        }
    }
}

/// Where each peer listens; the application may change it at run time.
type Book = Arc<RwLock<HashMap<u64, SocketAddr>>>;

/// Opens a connection to `to` and says hello.
fn connect(
    addr: SocketAddr,
    to: u64,
    hello: Hello,
    opts: &TcpOptions,
) -> io::Result<BufWriter<Stream>> {
    let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
    tcp.set_nodelay(true)?;
    tcp.set_write_timeout(Some(opts.write_timeout))?;
    tcp.set_read_timeout(Some(opts.handshake_timeout))?;
    let stream = match &opts.security {
        Security::Plaintext => Stream::Plain(tcp),
        Security::Tls(id) => Stream::Client(Box::new(id.connect(to, tcp)?)),
    };
    let mut w = BufWriter::with_capacity(64 << 10, stream);
    w.write_all(&hello.encode())?;
    w.flush()?;
    Ok(w)
}

/// A peer's outgoing messages, bounded in bytes.
struct Queue {
    state: Mutex<QueueState>,
    ready: Condvar,
    limit: usize,
}

#[derive(Default)]
struct QueueState {
    msgs: VecDeque<(Message, usize)>,
    bytes: usize,
    closed: bool,
}

impl Queue {
    fn new(limit: usize) -> Self {
        Queue {
            state: Mutex::default(),
            ready: Condvar::new(),
            limit,
        }
    }

    /// Queues `m`, unless it would exceed the byte bound (then it is dropped: `false`).
    fn push(&self, m: Message) -> bool {
        let size = m.compute_size() as usize;
        let mut s = lock(&self.state);
        if s.closed || (s.bytes + size > self.limit && !s.msgs.is_empty()) {
            return false;
        }
        s.bytes += size;
        s.msgs.push_back((m, size));
        drop(s);
        self.ready.notify_one();
        true
    }

    /// The next message, waiting for one up to `wait`; `None` on timeout.
    fn pop(&self, wait: Duration) -> Option<Message> {
        let mut s = lock(&self.state);
        if s.msgs.is_empty() && !s.closed {
            s = self
                .ready
                .wait_timeout(s, wait)
                .map_or_else(|e| e.into_inner().0, |r| r.0);
        }
        Self::take(&mut s)
    }

    /// The next message if one is queued, without waiting.
    fn try_pop(&self) -> Option<Message> {
        Self::take(&mut lock(&self.state))
    }

    fn take(s: &mut QueueState) -> Option<Message> {
        let (m, size) = s.msgs.pop_front()?;
        s.bytes -= size;
        Some(m)
    }

    fn clear(&self) {
        let mut s = lock(&self.state);
        s.msgs.clear();
        s.bytes = 0;
    }

    fn close(&self) {
        lock(&self.state).closed = true;
        self.ready.notify_all();
    }

    fn closed(&self) -> bool {
        lock(&self.state).closed
    }
}

/// Sends a node's messages to its peers over TCP.
pub struct TcpTransport {
    from: u64,
    cluster_id: u64,
    book: Book,
    opts: Arc<TcpOptions>,
    peers: Mutex<HashMap<u64, Arc<Queue>>>,
    /// Peers a writer could not reach, until the node collects them.
    unreachable: Arc<Mutex<std::collections::BTreeSet<u64>>>,
    /// Messages dropped because a peer's queue was full.
    overflowed: Arc<AtomicU64>,
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
    pub fn new(
        from: u64,
        cluster_id: u64,
        addrs: HashMap<u64, SocketAddr>,
        opts: TcpOptions,
    ) -> Self {
        TcpTransport {
            from,
            cluster_id,
            book: Arc::new(RwLock::new(addrs)),
            opts: Arc::new(opts),
            peers: Mutex::new(HashMap::new()),
            unreachable: Arc::default(),
            overflowed: Arc::default(),
        }
    }

    /// Sets (or changes) where peer `id` listens; its connection is re-established there.
    pub fn set_peer_address(&self, id: u64, addr: SocketAddr) {
        self.book
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, addr);
        if let Some(q) = lock(&self.peers).remove(&id) {
            q.close();
        }
    }

    /// Messages dropped so far because a peer's queue was full.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::SeqCst)
    }

    fn address(&self, id: u64) -> Option<SocketAddr> {
        self.book
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .copied()
    }

    fn queue(&self, to: u64) -> Option<Arc<Queue>> {
        let mut peers = lock(&self.peers);
        if let Some(q) = peers.get(&to).filter(|q| !q.closed()) {
            return Some(q.clone());
        }
        self.address(to)?;
        let q = Arc::new(Queue::new(self.opts.queue_bytes));
        let w = Writer {
            to,
            hello: Hello {
                magic: MAGIC,
                cluster: self.cluster_id,
                from: self.from,
            },
            book: self.book.clone(),
            opts: self.opts.clone(),
            queue: q.clone(),
            unreachable: self.unreachable.clone(),
        };
        std::thread::Builder::new()
            .name(format!("raftwal-tcp-{}-{to}", self.from))
            .spawn(move || w.run())
            .ok()?;
        peers.insert(to, q.clone());
        Some(q)
    }
}

impl Drop for TcpTransport {
    fn drop(&mut self) {
        for (_, q) in lock(&self.peers).drain() {
            q.close();
        }
    }
}

impl Transport for TcpTransport {
    fn send(&self, msg: Message) {
        if let Some(q) = self.queue(msg.to) {
            if !q.push(msg) {
                self.overflowed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn send_snapshot(
        &self,
        msg: Message,
        meta: &SnapshotMeta,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        let addr = self
            .address(msg.to)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for the peer"))?;
        let hello = Hello {
            magic: SNAP_MAGIC,
            cluster: self.cluster_id,
            from: self.from,
        };
        let max = self.opts.max_frame;
        let mut w = connect(addr, msg.to, hello, &self.opts)?;
        wire::write_frame(&mut w, &msg, max)?;
        wire::write_bytes_frame(&mut w, &meta.encode(), max)?;
        let mut chunk = vec![0u8; SNAPSHOT_CHUNK];
        loop {
            let n = match data.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // The empty frame ends the data.
            wire::write_bytes_frame(&mut w, &chunk[..n], SNAPSHOT_CHUNK)?;
            if n == 0 {
                break;
            }
        }
        w.flush()?;
        let mut s = w.into_inner().map_err(|e| e.into_error())?;
        let stop = AtomicBool::new(false);
        let mut answer = [1u8];
        wire::read_full(
            &mut s,
            &mut answer,
            Deadline {
                stop: &stop,
                until: Instant::now() + Duration::from_secs(60),
            },
        )?;
        if answer[0] == 0 {
            Ok(())
        } else {
            Err(io::Error::other("the peer refused the snapshot"))
        }
    }

    fn unreachable(&self) -> Vec<u64> {
        let mut u = lock(&self.unreachable);
        if u.is_empty() {
            return Vec::new();
        }
        std::mem::take(&mut *u).into_iter().collect()
    }

    fn max_message_size(&self) -> usize {
        self.opts.max_frame
    }

    fn set_address(&self, id: u64, address: &[u8]) {
        if let Some(addr) = std::str::from_utf8(address)
            .ok()
            .and_then(|a| a.parse().ok())
        {
            self.set_peer_address(id, addr);
        }
    }
}

/// One peer's writer thread.
struct Writer {
    to: u64,
    hello: Hello,
    book: Book,
    opts: Arc<TcpOptions>,
    queue: Arc<Queue>,
    unreachable: Arc<Mutex<std::collections::BTreeSet<u64>>>,
}

impl Writer {
    /// Connects (with backoff), then writes every queued message, flushing when the queue is
    /// momentarily empty (pipelining without a syscall per message). A connection that breaks
    /// or blocks reports the peer unreachable.
    fn run(self) {
        let mut backoff = Duration::from_millis(50);
        let mut conn: Option<BufWriter<Stream>> = None;
        while !self.queue.closed() {
            let Some(first) = self.queue.pop(Duration::from_millis(200)) else {
                continue;
            };
            let w = match conn.as_mut() {
                Some(w) => w,
                None => {
                    let addr = self
                        .book
                        .read()
                        .unwrap_or_else(|e| e.into_inner())
                        .get(&self.to)
                        .copied();
                    match addr.map(|a| connect(a, self.to, self.hello, &self.opts)) {
                        Some(Ok(w)) => {
                            backoff = Duration::from_millis(50);
                            conn.insert(w)
                        }
                        _ => {
                            self.failed();
                            // Drop what is queued (Raft retries) and wait before the next try.
                            self.queue.clear();
                            std::thread::sleep(backoff);
                            backoff = (backoff * 2).min(Duration::from_secs(2));
                            continue;
                        }
                    }
                }
            };
            let mut msg = Some(first);
            let mut ok = true;
            while let Some(m) = msg.take() {
                if let Err(e) = wire::write_frame(w, &m, self.opts.max_frame) {
                    // A message too large for a frame is dropped alone; anything else breaks
                    // the connection.
                    if e.kind() != io::ErrorKind::InvalidInput {
                        ok = false;
                        break;
                    }
                }
                msg = self.queue.try_pop();
            }
            if !ok || w.flush().is_err() {
                self.failed();
                conn = None;
            }
        }
    }

    fn failed(&self) {
        lock(&self.unreachable).insert(self.to);
    }
}

/// Accepts peers' connections and delivers their messages to a node's mailbox.
pub struct TcpServer {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    active: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TcpServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// What a server's connection threads share.
struct Shared {
    cluster: u64,
    mailbox: Mailbox,
    opts: TcpOptions,
    stop: Arc<AtomicBool>,
    refused: Arc<AtomicU64>,
    active: Arc<AtomicUsize>,
}

impl TcpServer {
    /// Binds `addr` (port 0 picks a free one; see [`TcpServer::addr`]).
    ///
    /// # Errors
    /// The bind error.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
        TcpListener::bind(addr)
    }

    /// Serves a bound listener for cluster `cluster_id`, delivering to `mailbox`. An accept
    /// error (say, out of file descriptors) is logged and retried after a pause, never fatal.
    ///
    /// # Errors
    /// If the listener cannot be configured or the thread cannot start.
    pub fn serve(
        listener: TcpListener,
        cluster_id: u64,
        mailbox: Mailbox,
        opts: TcpOptions,
    ) -> io::Result<Self> {
        let addr = listener.local_addr()?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let refused = Arc::new(AtomicU64::new(0));
        let active = Arc::new(AtomicUsize::new(0));
        let shared = Arc::new(Shared {
            cluster: cluster_id,
            mailbox,
            opts,
            stop: stop.clone(),
            refused: refused.clone(),
            active: active.clone(),
        });
        let thread = std::thread::Builder::new()
            .name(format!("raftwal-tcp-accept-{addr}"))
            .spawn(move || accept_loop(&listener, &shared))?;
        Ok(TcpServer {
            addr,
            stop,
            refused,
            active,
            thread: Some(thread),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections refused so far: over the connection limit, a failed or slow handshake, a
    /// wrong magic or cluster id, or a certificate that does not name the claimed node.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::SeqCst)
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.active.load(Ordering::SeqCst)
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

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    let mut warned: Option<Instant> = None;
    while !shared.stop.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, peer)) => {
                if shared.active.load(Ordering::SeqCst) >= shared.opts.max_connections {
                    shared.refused.fetch_add(1, Ordering::SeqCst);
                    tracing::debug!(%peer, "connection refused: at the connection limit");
                    continue; // dropping the stream closes it
                }
                shared.active.fetch_add(1, Ordering::SeqCst);
                let s = shared.clone();
                let spawned = std::thread::Builder::new()
                    .name("raftwal-tcp-reader".into())
                    .spawn(move || {
                        if let Err(e) = serve_connection(stream, &s) {
                            tracing::debug!(%peer, error = %e, "peer connection closed");
                        }
                        s.active.fetch_sub(1, Ordering::SeqCst);
                    });
                if spawned.is_err() {
                    shared.active.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                // Once a second at most: the error lasts while descriptors are short.
                if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(error = %e, "accepting a peer connection failed; retrying");
                    warned = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// One accepted connection: handshake, then frames until it closes, idles or the server stops.
fn serve_connection(tcp: TcpStream, s: &Shared) -> io::Result<()> {
    tcp.set_nonblocking(false)?;
    tcp.set_nodelay(true)?;
    // Short reads, so the stop flag and the deadlines are checked while waiting.
    tcp.set_read_timeout(Some(Duration::from_millis(200)))?;
    tcp.set_write_timeout(Some(s.opts.write_timeout))?;
    let mut stream = match &s.opts.security {
        Security::Plaintext => Stream::Plain(tcp),
        Security::Tls(id) => Stream::Server(Box::new(id.accept(tcp)?)),
    };
    let handshake = Deadline {
        stop: &s.stop,
        until: Instant::now() + s.opts.handshake_timeout,
    };
    let mut hello = [0u8; 24];
    let refuse = |why: &str| {
        s.refused.fetch_add(1, Ordering::SeqCst);
        io::Error::new(io::ErrorKind::PermissionDenied, why.to_string())
    };
    if let Err(e) = wire::read_full(&mut stream, &mut hello, handshake) {
        return Err(refuse(&format!("handshake: {e}")));
    }
    let hello = Hello::decode(&hello);
    if (hello.magic != MAGIC && hello.magic != SNAP_MAGIC) || hello.cluster != s.cluster {
        return Err(refuse("not a peer of this cluster"));
    }
    if let Stream::Server(tls) = &stream {
        if !tls::client_is(&tls.conn, hello.from) {
            return Err(refuse(
                "the certificate does not name the node it claims to be",
            ));
        }
    }
    let peer = hello.from;
    let idle = || Deadline {
        stop: &s.stop,
        until: Instant::now() + s.opts.idle_timeout,
    };
    let mut r = BufReader::with_capacity(64 << 10, stream);
    let mut buf = Vec::new();
    if hello.magic == SNAP_MAGIC {
        let taken = receive_snapshot(&mut r, &mut buf, peer, s).is_ok();
        let _ = r.get_mut().write_all(&[u8::from(!taken)]);
        let _ = r.get_mut().flush();
        return Ok(());
    }
    loop {
        wire::read_frame(&mut r, &mut buf, s.opts.max_frame, idle())?;
        let m = Message::parse_from_bytes(&buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        s.mailbox.deliver_from(peer, m);
    }
}

fn receive_snapshot(
    r: &mut BufReader<Stream>,
    buf: &mut Vec<u8>,
    peer: u64,
    s: &Shared,
) -> io::Result<()> {
    let d = Deadline {
        stop: &s.stop,
        until: Instant::now() + s.opts.idle_timeout,
    };
    wire::read_frame(r, buf, s.opts.max_frame, d)?;
    let msg = Message::parse_from_bytes(buf)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    wire::read_frame(r, buf, s.opts.max_frame, d)?;
    let meta = SnapshotMeta::decode(buf, Path::new("<snapshot from the network>"))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut chunks = Chunks {
        r,
        left: 0,
        done: false,
        deadline: d,
        idle: s.opts.idle_timeout,
    };
    s.mailbox
        .receive_snapshot_from(peer, msg, &meta, &mut chunks)
}
