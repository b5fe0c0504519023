//! `raftwal-kv serve`: one node, its Raft transport (mutual TLS unless `--plaintext`), and the
//! client port.

use std::collections::BTreeMap;
use std::io::{BufReader, BufWriter, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftwal_glue::{
    Config, Node, NodeError, Proposal, RaftStorage, TcpOptions, TcpServer, TcpTransport,
    TlsIdentity,
};
use raftwal_snapshot::FileSnapshotStore;
use raftwal_wal::{Wal, WalOptions};

use crate::protocol::{self, Line, Request};
use crate::store::{self, Kv};

/// The cluster id in every peer handshake.
const CLUSTER_ID: u64 = 0x6b76;
/// A client connection silent this long is closed.
const CLIENT_IDLE: Duration = Duration::from_secs(300);
/// How long a client request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How a node runs (the `serve` subcommand's flags).
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// This node's id.
    #[arg(long)]
    pub id: u64,
    /// Every node's Raft address, the same on every node: `1=host:port,2=…`.
    #[arg(long, value_parser = crate::parse_peers)]
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Where clients connect.
    #[arg(long)]
    pub client: SocketAddr,
    /// The node's data: `DIR/wal`, `DIR/snapshots`.
    #[arg(long)]
    pub dir: PathBuf,
    /// The CA and this node's certificate and key (`raftwal-kv certs` makes them).
    #[arg(long, default_value = "certs")]
    pub certs: PathBuf,
    /// No TLS between nodes: anyone who can reach the Raft port can claim to be a node. For
    /// loopback and tests only.
    #[arg(long)]
    pub plaintext: bool,
    /// Take a snapshot every this many applied entries.
    #[arg(long, default_value_t = 8192)]
    pub snapshot_every: u64,
    /// The longest request line accepted, in bytes (a value is at most this long).
    #[arg(long, default_value_t = 64 * 1024)]
    pub max_line: usize,
    /// Client connections served at once.
    #[arg(long, default_value_t = 1024)]
    pub max_clients: usize,
}

impl Args {
    /// A node with the defaults of `serve` (TLS certificates in `./certs`).
    pub fn new(
        id: u64,
        peers: BTreeMap<u64, SocketAddr>,
        client: SocketAddr,
        dir: PathBuf,
    ) -> Self {
        Args {
            id,
            peers,
            client,
            dir,
            certs: PathBuf::from("certs"),
            plaintext: false,
            snapshot_every: 8192,
            max_line: 64 * 1024,
            max_clients: 1024,
        }
    }
}

/// A running node: Raft (node and server) and the client port.
pub struct KvServer {
    node: Arc<Node>,
    client: SocketAddr,
    stop: Arc<AtomicBool>,
    accept: Option<std::thread::JoinHandle<()>>,
    _raft: TcpServer,
}

impl std::fmt::Debug for KvServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvServer")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

impl KvServer {
    /// Starts a node as `args` say.
    ///
    /// # Errors
    /// Certificates, binding, the stores, or the node refusing to start; as text.
    pub fn start(args: &Args) -> Result<Self, String> {
        let own = *args
            .peers
            .get(&args.id)
            .ok_or("--peers must include --id")?;
        let opts = if args.plaintext {
            TcpOptions::plaintext()
        } else {
            let [ca, cert, key] = crate::certs::files(&args.certs, args.id);
            let id = TlsIdentity::from_files(args.id, &ca, &cert, &key).map_err(|e| {
                format!(
                    "{e}\n(make certificates with `raftwal-kv certs --dir {} --nodes …`, or \
                     pass --plaintext on loopback)",
                    args.certs.display()
                )
            })?;
            TcpOptions::tls(id)
        };
        let raft_listener = TcpServer::bind(own).map_err(|e| format!("bind {own}: {e}"))?;
        let clients =
            TcpListener::bind(args.client).map_err(|e| format!("bind {}: {e}", args.client))?;
        let client = clients.local_addr().map_err(|e| e.to_string())?;
        let wal = Wal::open(
            args.dir.join("wal"),
            WalOptions::default().segment_size(4 << 20),
        )
        .map_err(|e| format!("open the WAL: {e}"))?;
        let snaps = FileSnapshotStore::open(args.dir.join("snapshots"), 2)
            .map_err(|e| format!("open the snapshot store: {e}"))?;
        let kv = Kv::default();
        let cfg = Config {
            tick: Duration::from_millis(20),
            snapshot_threshold: args.snapshot_every,
            trailing_entries: args.snapshot_every / 4,
            max_command_size: args.max_line.max(1),
            ..Config::new(args.id, args.peers.keys().copied().collect())
        };
        let transport = TcpTransport::new(
            args.id,
            CLUSTER_ID,
            args.peers.clone().into_iter().collect(),
            opts.clone(),
        );
        let node = Arc::new(
            Node::start(cfg, kv.clone(), RaftStorage::new(wal, snaps), transport)
                .map_err(|e| format!("start the node: {e}"))?,
        );
        let raft = TcpServer::serve(raft_listener, CLUSTER_ID, node.mailbox(), opts)
            .map_err(|e| format!("serve Raft on {own}: {e}"))?;
        tracing::info!(
            node = args.id,
            raft = %own,
            clients = %client,
            tls = !args.plaintext,
            "serving"
        );
        let stop = Arc::new(AtomicBool::new(false));
        clients
            .set_nonblocking(true)
            .map_err(|e| format!("client listener: {e}"))?;
        let (n, st, max_clients, max_line) =
            (node.clone(), stop.clone(), args.max_clients, args.max_line);
        let accept = std::thread::Builder::new()
            .name("kv-accept".into())
            .spawn(move || accept_clients(&clients, &n, &kv, &st, max_clients, max_line))
            .map_err(|e| format!("start the client listener: {e}"))?;
        Ok(KvServer {
            node,
            client,
            stop,
            accept: Some(accept),
            _raft: raft,
        })
    }

    /// The node.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// Where clients connect.
    pub fn client_addr(&self) -> SocketAddr {
        self.client
    }

    /// Waits until the node stops; returns why.
    pub fn wait(&self) -> NodeError {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            let s = self.node.status();
            if s.stopped {
                return s.stop_reason.unwrap_or(NodeError::Shutdown);
            }
        }
    }
}

impl Drop for KvServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        self.node.shutdown();
    }
}

/// Runs a node until it stops.
///
/// # Errors
/// Why it did not start, or why it stopped (a node stops only on an error).
pub fn run(args: &Args) -> Result<(), String> {
    let server = KvServer::start(args)?;
    let why = server.wait();
    Err(format!("the node stopped: {why}"))
}

fn accept_clients(
    clients: &TcpListener,
    node: &Arc<Node>,
    kv: &Kv,
    stop: &AtomicBool,
    max_clients: usize,
    max_line: usize,
) {
    let active = Arc::new(AtomicUsize::new(0));
    while !stop.load(Ordering::SeqCst) {
        let stream = match clients.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "accepting a client failed; retrying");
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        if stream.set_nonblocking(false).is_err() {
            continue;
        }
        if active.load(Ordering::SeqCst) >= max_clients {
            let _ = (&stream).write_all(b"ERR too many connections\n");
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let (node, kv, active) = (node.clone(), kv.clone(), active.clone());
        let spawned = std::thread::Builder::new()
            .name("kv-client".into())
            .spawn(move || {
                if let Err(e) = serve_client(stream, &node, &kv, max_line) {
                    tracing::debug!(error = %e, "client connection ended");
                }
                active.fetch_sub(1, Ordering::SeqCst);
            });
        if spawned.is_err() {
            tracing::warn!("no thread for a client connection");
        }
    }
}

/// A request in flight on a connection, answered in order.
enum Pending {
    Write(Proposal),
    Read(String),
    Reply(String),
}

/// One client connection, on one thread: it reads a request, and every further one already
/// received (proposing writes as it goes, so pipelined writes share Raft rounds), then answers
/// them in order with one write. (A thread per connection rather than two: each hand-off
/// between threads costs a wake-up.)
fn serve_client(stream: TcpStream, node: &Node, kv: &Kv, max_line: usize) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    // A connection silent this long is closed: idle clients do not hold threads forever.
    stream.set_read_timeout(Some(CLIENT_IDLE))?;
    let mut out = BufWriter::new(stream.try_clone()?);
    let mut r = BufReader::new(stream);
    let mut batch: Vec<Pending> = Vec::new();
    loop {
        // One request (waiting for it), then those already buffered.
        loop {
            let p = match protocol::read_line(&mut r, max_line)? {
                Line::Eof => return answer_all(&mut out, batch, node, kv),
                Line::TooLong => {
                    Pending::Reply(format!("ERR line too long (at most {max_line} bytes)"))
                }
                Line::Text(l) => match protocol::parse(&l) {
                    Request::Get(k) => Pending::Read(k),
                    Request::Set(k, v) => propose(node, store::set(&k, &v)),
                    Request::Del(k) => propose(node, store::del(&k)),
                    Request::Bad(msg) => Pending::Reply(msg),
                },
            };
            batch.push(p);
            if batch.len() >= 256 || !r.buffer().contains(&b'\n') {
                break;
            }
        }
        answer_all(&mut out, std::mem::take(&mut batch), node, kv)?;
    }
}

fn propose(node: &Node, command: Vec<u8>) -> Pending {
    match node.propose(command) {
        Ok(p) => Pending::Write(p),
        Err(e) => Pending::Reply(write_error(&e)),
    }
}

fn write_error(e: &NodeError) -> String {
    match e {
        NodeError::NotLeader { leader_hint } => format!("NOTLEADER {}", leader_hint.unwrap_or(0)),
        NodeError::TooLarge { max, .. } => format!("ERR value too large (at most {max} bytes)"),
        e => format!("ERR {e}"),
    }
}

/// Answers a batch in order, in one write.
fn answer_all(
    out: &mut BufWriter<TcpStream>,
    batch: Vec<Pending>,
    node: &Node,
    kv: &Kv,
) -> std::io::Result<()> {
    for p in batch {
        let reply = match p {
            Pending::Reply(r) => r,
            Pending::Write(p) => match p.wait(REQUEST_TIMEOUT) {
                Ok(a) => format!("OK {}", a.index),
                Err(e) => write_error(&e),
            },
            Pending::Read(k) => read(node, kv, &k),
        };
        out.write_all(reply.as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// A linearizable read of `key`, retried within the request timeout while there is no leader
/// (or leadership moves); its errors say what they mean for a read.
fn read(node: &Node, kv: &Kv, key: &str) -> String {
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match node.read_index(left) {
            Ok(_) => {
                return match kv.get(key) {
                    Some(v) => format!("VALUE {v}"),
                    None => "NONE".into(),
                }
            }
            Err(NodeError::NotLeader { .. }) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(NodeError::NotLeader { .. } | NodeError::ReadTimeout) => {
                return if node.leader().is_none() {
                    "ERR no leader yet".into()
                } else {
                    "ERR read timed out".into()
                };
            }
            Err(e) => return format!("ERR {e}"),
        }
    }
}
