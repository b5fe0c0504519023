//! `--metrics-addr`: every metric of the node (WAL, snapshot store, Raft) in Prometheus text
//! format, at `GET /metrics` on a small HTTP listener of its own.
//!
//! The listener reads at most one bounded request head (8 KiB) per connection, within one
//! deadline (2 s), and answers only `GET /metrics`. It serves one connection at a time: put it
//! on an address only the scraper reaches.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// The longest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// The longest a request head may take to arrive.
const REQUEST_TIME: Duration = Duration::from_secs(2);

/// Installs the Prometheus recorder (once per process; it must come before the node starts)
/// and serves it on `addr`; returns the bound address.
///
/// # Errors
/// A recorder is already installed, or `addr` cannot be bound.
pub(crate) fn serve(addr: SocketAddr) -> Result<SocketAddr, String> {
    let handle = PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("install the metrics recorder: {e}"))?;
    raftwal_wal::metrics::describe();
    raftwal_snapshot::metrics::describe();
    raftwal_glue::metrics::describe();
    let listener = TcpListener::bind(addr).map_err(|e| format!("bind {addr}: {e}"))?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    let upkeep = handle.clone();
    std::thread::Builder::new()
        .name("raftwal-kv-metrics-upkeep".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_secs(5));
            upkeep.run_upkeep();
        })
        .map_err(|e| e.to_string())?;
    std::thread::Builder::new()
        .name("raftwal-kv-metrics".into())
        .spawn(move || {
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => answer(c, &handle),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(bound)
}

fn answer(mut c: TcpStream, handle: &PrometheusHandle) {
    // One deadline for the whole request head: a client trickling bytes cannot hold the
    // (single) listener thread longer than that.
    let deadline = Instant::now() + REQUEST_TIME;
    let _ = c.set_write_timeout(Some(REQUEST_TIME));
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || c.set_read_timeout(Some(left)).is_err() {
            return;
        }
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
        if head.len() > MAX_REQUEST {
            let _ = c.write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
            return;
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let ok = parts.next() == Some(&b"GET"[..]) && parts.next() == Some(&b"/metrics"[..]);
    let reply = if ok {
        let body = handle.render();
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    } else {
        "HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_string()
    };
    let _ = c.write_all(reply.as_bytes());
}
