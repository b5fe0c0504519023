//! A replicated key–value server: Raft over TCP, the log in a raftwal `Wal`.
//!
//! ```text
//! cargo run -p raftwal-glue --bin raftwal-kv -- --id 1 \
//!    --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//!    --client 127.0.0.1:8001 --dir /tmp/kv1
//! ```
//!
//! (one process per node; the same `--peers` everywhere). In full:
//!
//! ```text
//! raftwal-kv --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//!    --client 127.0.0.1:8001 --dir /tmp/kv1 [--snapshot-every 8192]
//! ```
//!
//! Clients speak lines over TCP:
//! - `SET key value` → `OK index` once committed and applied, or `NOTLEADER hint` (0: unknown)
//! - `GET key` → `VALUE value` or `NONE` after a linearizable read-index, or `NOTLEADER hint`
//! - anything else, or a failure → `ERR message`
//!
//! The state machine is in memory; it is snapshotted every `--snapshot-every` entries into
//! `DIR/snapshots` (the log is in `DIR/wal`), and rebuilt at start from the latest snapshot
//! and the log after it.
#![allow(clippy::disallowed_methods, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raftwal_glue::{
    Config, Node, NodeError, RaftStorage, StateMachine, StateSnapshot, TcpServer, TcpTransport,
};
use raftwal_snapshot::FileSnapshotStore;
use raftwal_wal::{Wal, WalOptions};

const CLUSTER_ID: u64 = 0x6b76;

#[derive(Clone, Default)]
struct Kv(Arc<Mutex<BTreeMap<String, String>>>);

impl StateMachine for Kv {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        let s = String::from_utf8_lossy(command);
        if let Some((k, v)) = s.split_once(' ') {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(k.to_string(), v.to_string());
        }
        Vec::new()
    }

    /// One `key value` line per key.
    fn snapshot(&mut self) -> std::io::Result<Box<dyn StateSnapshot>> {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (k, v) in map.iter() {
            writeln!(out, "{k} {v}")?;
        }
        Ok(Box::new(out))
    }

    fn restore(&mut self, data: &mut dyn Read) -> std::io::Result<()> {
        let mut map = BTreeMap::new();
        for line in BufReader::new(data).lines() {
            let line = line?;
            let (k, v) = line.split_once(' ').ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "snapshot line without a value",
                )
            })?;
            map.insert(k.to_string(), v.to_string());
        }
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }
}

struct Args {
    id: u64,
    peers: HashMap<u64, SocketAddr>,
    client: SocketAddr,
    dir: String,
    snapshot_every: u64,
}

fn parse() -> Result<Args, String> {
    let mut id = None;
    let mut peers = HashMap::new();
    let mut client = None;
    let mut dir = None;
    let mut snapshot_every = 8192;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let v = it.next().ok_or(format!("{a} needs a value"))?;
        match a.as_str() {
            "--id" => id = Some(v.parse().map_err(|e| format!("--id: {e}"))?),
            "--client" => client = Some(v.parse().map_err(|e| format!("--client: {e}"))?),
            "--dir" => dir = Some(v),
            "--snapshot-every" => {
                snapshot_every = v.parse().map_err(|e| format!("--snapshot-every: {e}"))?;
            }
            "--peers" => {
                for p in v.split(',') {
                    let (i, addr) = p.split_once('=').ok_or(format!("bad peer {p}"))?;
                    peers.insert(
                        i.parse().map_err(|e| format!("peer id {i}: {e}"))?,
                        addr.parse().map_err(|e| format!("peer addr {addr}: {e}"))?,
                    );
                }
            }
            _ => return Err(format!("unknown argument {a}")),
        }
    }
    Ok(Args {
        id: id.ok_or("--id is required")?,
        peers,
        client: client.ok_or("--client is required")?,
        dir: dir.ok_or("--dir is required")?,
        snapshot_every,
    })
}

fn serve(stream: TcpStream, node: &Node, kv: &Kv) -> std::io::Result<()> {
    let mut out = stream.try_clone()?;
    for line in BufReader::new(stream).lines() {
        let line = line?;
        let mut parts = line.splitn(3, ' ');
        let reply = match (parts.next(), parts.next(), parts.next()) {
            (Some("SET"), Some(k), Some(v)) => {
                match node.apply(format!("{k} {v}").into_bytes(), Duration::from_secs(5)) {
                    Ok(a) => format!("OK {}", a.index),
                    Err(NodeError::NotLeader { leader_hint }) => {
                        format!("NOTLEADER {}", leader_hint.unwrap_or(0))
                    }
                    Err(e) => format!("ERR {e}"),
                }
            }
            (Some("GET"), Some(k), None) => match node.read_index(Duration::from_secs(5)) {
                Ok(_) => match kv.0.lock().unwrap_or_else(|e| e.into_inner()).get(k) {
                    Some(v) => format!("VALUE {v}"),
                    None => "NONE".to_string(),
                },
                Err(e) => format!("ERR {e}"),
            },
            _ => "ERR bad request".to_string(),
        };
        out.write_all(reply.as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("kv: {e}");
            std::process::exit(2);
        }
    };
    let run = || -> Result<(), Box<dyn std::error::Error>> {
        let own = *args
            .peers
            .get(&args.id)
            .ok_or("--peers must include --id")?;
        let raft_listener = TcpServer::bind(own)?;
        let dir = std::path::Path::new(&args.dir);
        let wal = Wal::open(dir.join("wal"), WalOptions::default().segment_size(4 << 20))?;
        let storage = RaftStorage::new(wal, FileSnapshotStore::open(dir.join("snapshots"), 2)?);
        let kv = Kv::default();
        let mut voters: Vec<u64> = args.peers.keys().copied().collect();
        voters.sort_unstable();
        let cfg = Config {
            tick: Duration::from_millis(20),
            snapshot_threshold: args.snapshot_every,
            trailing_entries: args.snapshot_every / 4,
            ..Config::new(args.id, voters)
        };
        let transport = TcpTransport::new(args.id, CLUSTER_ID, args.peers.clone());
        let node = Arc::new(Node::start(cfg, kv.clone(), storage, transport)?);
        let _server = TcpServer::serve(raft_listener, CLUSTER_ID, node.mailbox())?;
        let clients = TcpListener::bind(args.client)?;
        eprintln!("kv {} serving clients on {}", args.id, args.client);
        for stream in clients.incoming() {
            let stream = stream?;
            let (node, kv) = (node.clone(), kv.clone());
            std::thread::spawn(move || {
                let _ = serve(stream, &node, &kv);
            });
        }
        Ok(())
    };
    if let Err(e) = run() {
        eprintln!("kv {}: {e}", args.id);
        std::process::exit(1);
    }
}
