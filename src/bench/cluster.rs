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

/// Runs the cluster workloads; each row's ratio compares batching on with off.
///
/// # Errors
/// Cluster start-up or I/O errors.
pub fn run(
    root: &Path,
    phase: Duration,
    clients: &[usize],
    size: usize,
) -> Result<Vec<Row>, Error> {
    let mut rows: Vec<Row> = Vec::new();
    for (batch, tls) in [(false, false), (true, false), (true, true)] {
        for &n in clients {
            let dir = root.join(format!("cluster-{batch}-{tls}-{n}"));
            let c = start(&dir, batch, tls)?;
            let l = leader(&c)?;
            let stop = Arc::new(AtomicBool::new(false));
            let start = Instant::now();
            let workers: Vec<_> = (0..n)
                .map(|_| {
                    let (l, stop) = (l.clone(), stop.clone());
                    std::thread::spawn(move || -> Result<(u64, Hist), Error> {
                        let mut h = Hist::new()?;
                        let mut ops = 0;
                        while !stop.load(Ordering::Relaxed) {
                            let t = Instant::now();
                            match l.apply(vec![7u8; size], Duration::from_secs(10)) {
                                Ok(_) => {
                                    h.record(t.elapsed());
                                    ops += 1;
                                }
                                Err(NodeError::Timeout) => {}
                                Err(e) => return Err(e.into()),
                            }
                        }
                        Ok((ops, h))
                    })
                })
                .collect();
            std::thread::sleep(phase);
            stop.store(true, Ordering::Relaxed);
            let mut total = 0;
            let mut hist = Hist::new()?;
            for w in workers {
                let (ops, h) = w.join().map_err(|_| "client panicked")??;
                total += ops;
                let _ = hist.0.add(&h.0);
            }
            let secs = start.elapsed().as_secs_f64();
            let name = format!(
                "3-node cluster, {n} client(s), batching {}{}",
                if batch { "on" } else { "off" },
                if tls { ", mutual TLS" } else { "" }
            );
            let mut r = row(
                "cluster",
                &name,
                total,
                total,
                total * size as u64,
                secs,
                &hist,
            );
            // Batching on against off; TLS against plaintext (both batching on).
            let base = match (batch, tls) {
                (true, false) => Some(format!("3-node cluster, {n} client(s), batching off")),
                (true, true) => Some(format!("3-node cluster, {n} client(s), batching on")),
                _ => None,
            };
            if let Some(base) = base {
                if let Some(b) = rows.iter().find(|x| x.name == base) {
                    r.ratio = Some(r.entries_per_sec / b.entries_per_sec.max(1e-9));
                    r.baseline = Some(base);
                }
            }
            rows.push(r);
            drop(c);
            std::fs::remove_dir_all(&dir).ok();
        }
    }
    Ok(rows)
}
