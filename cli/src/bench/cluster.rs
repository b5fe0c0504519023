//! `raftwal bench --cluster`: a 3-node Raft cluster in this process, on-disk WALs, TCP on
//! loopback, 256-byte commands, closed-loop clients; with the node's fsync batching on and off,
//! and with batching on over mutual TLS against plaintext.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftwal_glue::{
    Config, DevCa, Node, NodeError, RaftStorage, Role, StateMachine, TcpOptions, TcpServer,
    TcpTransport,
};
use raftwal_snapshot::MemSnapshotStore;
use raftwal_wal::{Wal, WalOptions};

use super::{row, Hist, Row};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Nop;

impl StateMachine for Nop {
    fn apply(&mut self, _: u64, _: &[u8]) -> Vec<u8> {
        Vec::new()
    }

    fn snapshot(&mut self) -> std::io::Result<Box<dyn raftwal_glue::StateSnapshot>> {
        Ok(Box::new(Vec::new()))
    }

    fn restore(&mut self, _: &mut dyn std::io::Read) -> std::io::Result<()> {
        Ok(())
    }
}

/// A 3-node cluster in this process: on-disk WALs under one root, TCP on loopback, a state
/// machine that does nothing (the figures are Raft's and the storage's). Dropping it shuts the
/// nodes down.
pub struct Cluster {
    nodes: HashMap<u64, Arc<Node>>,
    _servers: Vec<TcpServer>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values() {
            node.shutdown();
        }
    }
}

/// Starts a cluster in `root`, with the nodes' fsync batching on or off, over mutual TLS (with
/// certificates from a development CA made now) or plaintext.
///
/// # Errors
/// Bind, WAL, certificate and start-up errors.
pub fn start(root: &Path, batch: bool, tls: bool) -> Result<Cluster, Error> {
    let ca = if tls { Some(DevCa::new()?) } else { None };
    let listeners: Vec<(u64, std::net::TcpListener)> = (1..=3)
        .map(|id| Ok((id, TcpServer::bind("127.0.0.1:0".parse()?)?)))
        .collect::<Result<_, Error>>()?;
    let addrs: HashMap<u64, SocketAddr> = listeners
        .iter()
        .map(|(id, l)| Ok((*id, l.local_addr()?)))
        .collect::<Result<_, Error>>()?;
    let mut nodes = HashMap::new();
    let mut servers = Vec::new();
    for (id, listener) in listeners {
        let wal = Wal::open(root.join(format!("n{id}")), WalOptions::default())?;
        let storage = RaftStorage::new(wal, MemSnapshotStore::new(1)?);
        let cfg = Config {
            tick: Duration::from_millis(20),
            batch_proposals: batch,
            ..Config::new(id, vec![1, 2, 3])
        };
        let opts = match &ca {
            Some(ca) => TcpOptions::tls(ca.identity(id)?),
            None => TcpOptions::plaintext(),
        };
        let node = Arc::new(Node::start(
            cfg,
            Nop,
            storage,
            TcpTransport::new(id, 7, addrs.clone(), opts.clone()),
        )?);
        servers.push(TcpServer::serve(listener, 7, node.mailbox(), opts)?);
        nodes.insert(id, node);
    }
    Ok(Cluster {
        nodes,
        _servers: servers,
    })
}

/// The leader, once one is elected and has committed a barrier.
///
/// # Errors
/// No leader within 20 s.
pub fn leader(c: &Cluster) -> Result<Arc<Node>, Error> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(n) = c.nodes.values().find(|n| n.role() == Role::Leader) {
            if n.barrier(Duration::from_secs(2)).is_ok() {
                return Ok(n.clone());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err("no leader elected within 20 s".into())
}

/// `n` closed-loop clients for `phase`: each makes its own operation with `client(i)` (a
/// connection, say) and calls it in a loop (`Ok(false)`: not counted, try again). Returns the
/// operations counted, their latencies and the wall time.
fn clients<F>(
    n: usize,
    phase: Duration,
    client: impl Fn(usize) -> Result<F, Error> + Sync,
) -> Result<(u64, Hist, f64), Error>
where
    F: FnMut() -> Result<bool, Error>,
{
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let results: Vec<Result<(u64, Hist), Error>> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..n)
            .map(|i| {
                let (client, stop) = (&client, &stop);
                s.spawn(move || -> Result<(u64, Hist), Error> {
                    let mut op = client(i)?;
                    let mut h = Hist::new()?;
                    let mut ops = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        if op()? {
                            h.record(t.elapsed());
                            ops += 1;
                        }
                    }
                    Ok((ops, h))
                })
            })
            .collect();
        std::thread::sleep(phase);
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_else(|_| Err("client panicked".into())))
            .collect()
    });
    let secs = start.elapsed().as_secs_f64();
    let mut total = 0;
    let mut hist = Hist::new()?;
    for r in results {
        let (ops, h) = r?;
        total += ops;
        let _ = hist.0.add(&h.0);
    }
    Ok((total, hist, secs))
}

/// Runs the cluster workloads: the same closed-loop clients against a cluster with batching
/// off, one with batching on, one with batching on over mutual TLS, and `raftwal-kv`'s client
/// port (three in-process servers, batching on, plaintext), all four started up front and
/// measured in four interleaved rounds (the machine drifts; interleaved,
/// the drift falls on all alike). Ratios: batching on against off, TLS against plaintext, the
/// client port against in-process calls.
///
/// # Errors
/// Cluster start-up or I/O errors.
pub fn run(
    root: &Path,
    phase: Duration,
    clients_n: &[usize],
    size: usize,
) -> Result<Vec<Row>, Error> {
    let off = start(&root.join("cluster-off"), false, false)?;
    let on = start(&root.join("cluster-on"), true, false)?;
    let tls = start(&root.join("cluster-tls"), true, true)?;
    let kv = KvCluster::start(&root.join("cluster-kv"))?;
    let leaders = [leader(&off)?, leader(&on)?, leader(&tls)?];
    let round = phase / super::ROUNDS as u32;
    let mut rows: Vec<Row> = Vec::new();
    for &n in clients_n {
        let in_process = |l: &Arc<Node>| {
            let l = l.clone();
            move || {
                clients(n, round, |_| {
                    let l = l.clone();
                    Ok(
                        move || match l.apply(vec![7u8; size], Duration::from_secs(10)) {
                            Ok(_) => Ok(true),
                            Err(NodeError::Timeout | NodeError::Busy) => Ok(false),
                            Err(e) => Err(e.into()),
                        },
                    )
                })
            }
        };
        let (mut a, mut b, mut c) = (
            in_process(&leaders[0]),
            in_process(&leaders[1]),
            in_process(&leaders[2]),
        );
        let mut d = || kv.clients(n, round, size);
        let rounds = super::alternate(&mut [&mut a, &mut b, &mut c, &mut d])?;
        let names = [
            format!("3-node cluster, {n} client(s), batching off"),
            format!("3-node cluster, {n} client(s), batching on"),
            format!("3-node cluster, {n} client(s), batching on, mutual TLS"),
            format!("3-node cluster, {n} client(s), through raftwal-kv's client port"),
        ];
        let mut made = Vec::new();
        for (name, rs) in names.iter().zip(rounds) {
            let (mut total, mut hist, mut secs) = (0, Hist::new()?, 0.0);
            for (ops, h, s) in rs {
                total += ops;
                secs += s;
                let _ = hist.0.add(&h.0);
            }
            made.push(row(
                "cluster",
                name,
                total,
                total,
                total * size as u64,
                secs,
                &hist,
            ));
        }
        // On against off; TLS, and the client port, against on.
        for (i, base) in [(1, 0), (2, 1), (3, 1)] {
            let (r, b) = (made[i].entries_per_sec, made[base].entries_per_sec);
            made[i].ratio = Some(r / b.max(1e-9));
            made[i].baseline = Some(made[base].name.clone());
        }
        rows.extend(made);
    }
    drop((off, on, tls, kv));
    for d in ["cluster-off", "cluster-on", "cluster-tls", "cluster-kv"] {
        std::fs::remove_dir_all(root.join(d)).ok();
    }
    Ok(rows)
}

/// Three `raftwal-kv` servers in this process (plaintext between them, as in the in-process
/// rows), driven through their client port over loopback.
struct KvCluster {
    servers: Vec<raftwal_kv::KvServer>,
    leader: SocketAddr,
}

impl KvCluster {
    fn start(dir: &Path) -> Result<Self, Error> {
        let port = || -> Result<SocketAddr, Error> {
            Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
        };
        let peers: std::collections::BTreeMap<u64, SocketAddr> = (1..=3)
            .map(|id| Ok((id, port()?)))
            .collect::<Result<_, Error>>()?;
        let servers: Vec<raftwal_kv::KvServer> = (1..=3)
            .map(|id| {
                let args = raftwal_kv::Args {
                    plaintext: true,
                    ..raftwal_kv::Args::new(id, peers.clone(), port()?, dir.join(format!("n{id}")))
                };
                raftwal_kv::KvServer::start(&args).map_err(Error::from)
            })
            .collect::<Result<_, Error>>()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        let leader = loop {
            if let Some(s) = servers.iter().find(|s| {
                s.node().role() == Role::Leader && s.node().barrier(Duration::from_secs(2)).is_ok()
            }) {
                break s.client_addr();
            }
            if Instant::now() > deadline {
                return Err("no raftwal-kv leader within 20 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Ok(KvCluster { servers, leader })
    }

    /// `n` clients, each on its own connection to the leader, sending `SET` lines of
    /// `size`-byte values one at a time, for `time`.
    fn clients(&self, n: usize, time: Duration, size: usize) -> Result<(u64, Hist, f64), Error> {
        let value = "x".repeat(size);
        clients(n, time, |i| {
            let conn = std::net::TcpStream::connect(self.leader)?;
            conn.set_nodelay(true)?;
            let mut w = conn.try_clone()?;
            let mut r = std::io::BufReader::new(conn);
            let line = format!("SET k{i} {value}\n");
            let mut reply = String::new();
            Ok(move || -> Result<bool, Error> {
                use std::io::{BufRead, Write};
                w.write_all(line.as_bytes())?;
                reply.clear();
                r.read_line(&mut reply)?;
                if reply.starts_with("OK") {
                    Ok(true)
                } else if reply.starts_with("ERR timed out") || reply.starts_with("ERR too many") {
                    Ok(false)
                } else {
                    Err(format!("raftwal-kv answered {reply:?}").into())
                }
            })
        })
    }
}

impl Drop for KvCluster {
    fn drop(&mut self) {
        self.servers.clear();
    }
}
