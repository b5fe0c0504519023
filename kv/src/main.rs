//! `raftwal-kv`: a replicated key–value server on raftwal — Raft between the nodes over mutual
//! TLS, each node's log in a raftwal `Wal` and its snapshots in a `FileSnapshotStore` — and
//! its client.
//!
//! ```text
//! raftwal-kv certs --dir certs --nodes 1,2,3        # a development CA and node certificates
//! raftwal-kv serve --id 1 --peers 1=127.0.0.1:7001,2=127.0.0.1:7002,3=127.0.0.1:7003 \
//!     --client 127.0.0.1:8001 --dir /tmp/kv1 --certs certs
//! raftwal-kv set k v --servers 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003
//! raftwal-kv get k   --servers 1=127.0.0.1:8001,2=127.0.0.1:8002,3=127.0.0.1:8003
//! ```
//!
//! The client protocol (`protocol.rs`), lines over TCP, answered in order (several may be in
//! flight on one connection):
//! - `SET key value` → `OK index` once committed and applied; `NOTLEADER id` (0: unknown);
//!   `ERR …` (a write that timed out may or may not have committed, and says so)
//! - `DEL key` → as `SET`
//! - `GET key` → `VALUE value` or `NONE` after a linearizable read (any node serves it);
//!   `ERR no leader yet`, `ERR read timed out` (a read never "may or may not commit")
//! - a line over the maximum → `ERR line too long …`; anything else → `ERR bad request`
//!
//! A node that stops (a full disk, corruption) logs why and the process exits with status 1,
//! so a supervisor notices.
#![allow(clippy::disallowed_methods)] // certificate files and the client's sockets: not the WAL's I/O

mod certs;
mod client;
mod protocol;
mod server;
mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "raftwal-kv",
    about = "A replicated key-value store on raftwal",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Runs one node.
    Serve(server::Args),
    /// Makes a development CA and a certificate for each node, in a directory.
    Certs {
        /// Where to write them (created if missing).
        #[arg(long)]
        dir: PathBuf,
        /// The node ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<u64>,
    },
    /// Reads a key (linearizable).
    Get {
        key: String,
        #[command(flatten)]
        servers: client::Servers,
    },
    /// Writes a key.
    Set {
        key: String,
        value: String,
        #[command(flatten)]
        servers: client::Servers,
    },
    /// Deletes a key.
    Del {
        key: String,
        #[command(flatten)]
        servers: client::Servers,
    },
}

/// Parses `1=host:port,2=host:port`.
pub(crate) fn parse_peers(s: &str) -> Result<BTreeMap<u64, SocketAddr>, String> {
    let mut out = BTreeMap::new();
    for p in s.split(',').filter(|p| !p.is_empty()) {
        let (id, addr) = p
            .split_once('=')
            .ok_or_else(|| format!("{p:?}: expected ID=HOST:PORT"))?;
        let id: u64 = id.parse().map_err(|e| format!("node id {id:?}: {e}"))?;
        if id == 0 {
            return Err("node id 0 is not allowed".into());
        }
        let addr = addr.parse().map_err(|e| format!("address {addr:?}: {e}"))?;
        out.insert(id, addr);
    }
    if out.is_empty() {
        return Err("no peers".into());
    }
    Ok(out)
}

fn main() {
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Serve(args) => {
            tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
                )
                .init();
            match server::run(&args) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(node = args.id, "{e}");
                    1
                }
            }
        }
        Command::Certs { dir, nodes } => match certs::write(&dir, &nodes) {
            Ok(()) => {
                println!(
                    "wrote a development CA and certificates for {nodes:?} in {}",
                    dir.display()
                );
                0
            }
            Err(e) => {
                eprintln!("raftwal-kv certs: {e}");
                1
            }
        },
        Command::Get { key, servers } => client::run(&servers, &format!("GET {key}")),
        Command::Set {
            key,
            value,
            servers,
        } => client::run(&servers, &format!("SET {key} {value}")),
        Command::Del { key, servers } => client::run(&servers, &format!("DEL {key}")),
    };
    std::process::exit(code);
}
