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

pub mod certs;
pub mod client;
mod metrics;
pub mod protocol;
mod reactor;
pub mod server;
pub mod store;

use std::collections::BTreeMap;
use std::net::SocketAddr;

pub use server::{Args, KvServer};

/// Parses `1=host:port,2=host:port`.
///
/// # Errors
/// A part that is not `ID=HOST:PORT`, a zero id, or nothing at all.
pub fn parse_peers(s: &str) -> Result<BTreeMap<u64, SocketAddr>, String> {
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

/// Locks a mutex, carrying on past a poisoned one: a panicking holder leaves nothing half-done
/// that a later user relies on (every critical section here completes its update or none).
pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
