//! `--metrics-addr`: every metric of the node (WAL, snapshot store, Raft) in Prometheus text
//! format, at `GET /metrics` on a small HTTP listener of its own.
//!
//! The listener reads at most one bounded request head (8 KiB) per connection and answers it
//! within one deadline (2 s), only `GET /metrics`, with text rendered at most once a second.
//! It serves one connection at a time: put it on an address only the scraper reaches. Its
//! threads live as long as the process (the recorder is the process's).

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
            let mut cache = None;
            for conn in listener.incoming() {
                match conn {
                    Ok(c) => answer(c, &handle, &mut cache),
                    Err(_) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(bound)
}

/// The rendered text, reused for this long (each render walks every series).
const RENDER_EVERY: Duration = Duration::from_secs(1);

/// Answers one connection, all of it (reading the request head and writing the reply) within
/// one deadline: a client trickling bytes either way cannot hold the (single) listener thread
/// longer than that.
fn answer(mut c: TcpStream, handle: &PrometheusHandle, cache: &mut Option<(Instant, String)>) {
    let deadline = Instant::now() + REQUEST_TIME;
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
            send(&mut c, b"HTTP/1.1 431 Request Header Fields Too Large\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", deadline);
            return;
        }
    }
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let mut parts = line.split(|&b| b == b' ');
    let ok = parts.next() == Some(&b"GET"[..]) && parts.next() == Some(&b"/metrics"[..]);
    if !ok {
        send(
            &mut c,
            b"HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            deadline,
        );
        return;
    }
    let fresh = cache
        .as_ref()
        .is_some_and(|(at, _)| at.elapsed() < RENDER_EVERY);
    if !fresh {
        *cache = Some((Instant::now(), handle.render()));
    }
    let body = cache.as_ref().map_or("", |(_, b)| b.as_str());
    let reply = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send(&mut c, reply.as_bytes(), deadline);
}

/// Writes `bytes` until done, an error, or `deadline`.
fn send(c: &mut TcpStream, mut bytes: &[u8], deadline: Instant) {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || c.set_write_timeout(Some(left)).is_err() {
            return;
        }
        match c.write(bytes) {
            Ok(0) | Err(_) => return,
            Ok(n) => bytes = &bytes[n..],
        }
    }
}
