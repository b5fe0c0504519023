//! `raftwal-kv serve`: one node, its Raft transport (mutual TLS unless `--plaintext`), and the
//! client port.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftwal_glue::{
    Config, Node, NodeError, RaftStorage, TcpOptions, TcpServer, TcpTransport, TlsIdentity,
};
use raftwal_snapshot::FileSnapshotStore;
use raftwal_wal::{Wal, WalOptions};

use crate::store::Kv;

/// The cluster id every peer handshake carries unless `--cluster-id` says otherwise.
pub const DEFAULT_CLUSTER_ID: u64 = 0x6b76;
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
    /// Serve the node's metrics in Prometheus text format at `http://ADDR/metrics`.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// The cluster's id, the same on every node: peers of another cluster are refused at the
    /// handshake (give each cluster its own when several share hosts, in plaintext above all).
    #[arg(long, default_value_t = DEFAULT_CLUSTER_ID)]
    pub cluster_id: u64,
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
            metrics_addr: None,
            cluster_id: DEFAULT_CLUSTER_ID,
        }
    }
}

/// A running node: Raft (node and server) and the client port.
pub struct KvServer {
    node: Arc<Node>,
    client: SocketAddr,
    metrics: Option<SocketAddr>,
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
        // The recorder first: the stores and the node register their series as they start.
        let metrics = args.metrics_addr.map(crate::metrics::serve).transpose()?;
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
            args.cluster_id,
            args.peers.clone().into_iter().collect(),
            opts.clone(),
        );
        let node = Arc::new(
            Node::start(cfg, kv.clone(), RaftStorage::new(wal, snaps), transport)
                .map_err(|e| format!("start the node: {e}"))?,
        );
        let raft = TcpServer::serve(raft_listener, args.cluster_id, node.mailbox(), opts)
            .map_err(|e| format!("serve Raft on {own}: {e}"))?;
        tracing::info!(
            node = args.id,
            raft = %own,
            clients = %client,
            tls = !args.plaintext,
            "serving"
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (n, st, max_clients, max_line) =
            (node.clone(), stop.clone(), args.max_clients, args.max_line);
        let accept = std::thread::Builder::new()
            .name("kv-clients".into())
            .spawn(move || {
                if let Err(e) = crate::reactor::serve(clients, &n, &kv, &st, max_clients, max_line)
                {
                    tracing::error!(error = %e, "the client port failed");
                }
            })
            .map_err(|e| format!("start the client port: {e}"))?;
        Ok(KvServer {
            node,
            metrics,
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

    /// Where the metrics are served (`--metrics-addr`), if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics
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

pub(crate) fn write_error(e: &NodeError) -> String {
    match e {
        NodeError::NotLeader { leader_hint } => format!("NOTLEADER {}", leader_hint.unwrap_or(0)),
        NodeError::TooLarge { max, .. } => format!("ERR value too large (at most {max} bytes)"),
        e => format!("ERR {e}"),
    }
}

/// A linearizable read of `key`, retried within the request timeout while there is no leader
/// (or leadership moves); its errors say what they mean for a read.
pub(crate) fn read(node: &Node, kv: &Kv, key: &str) -> String {
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
