//! `raftwal-kv` as a service under abuse, process by process: a 100 MB request line is refused
//! without the server holding it; a client pipelining reads it never collects is held back,
//! and pipelines past every bound are answered in full; running out of file descriptors (a flood of connections
//! under a low descriptor limit) is survived; a node whose storage fails logs why and the
//! process exits with status 1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    missing_docs
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn kv_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_raftwal-kv"))
}

/// A one-node cluster (plaintext: these tests are about the client port and the process).
struct Server {
    child: Child,
    raft: SocketAddr,
    client: SocketAddr,
    /// What the server wrote to stderr (read as it comes: a full pipe would block it).
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Server {
    /// Starts `raftwal-kv serve` through `sh -c '<limits>; exec …'`.
    fn start(dir: &Path, limits: &str) -> Server {
        Self::start_with(dir, limits, "")
    }

    /// As [`Server::start`], with `extra` arguments to `serve`.
    fn start_with(dir: &Path, limits: &str, extra: &str) -> Server {
        let (raft, client) = (common::port(), common::port());
        let cmd = format!(
            "{limits} exec '{}' serve --plaintext --id 1 --peers 1={raft} --client {client} --dir '{}' {extra}",
            kv_binary().display(),
            dir.display()
        );
        let mut child = Command::new("sh")
            .args(["-c", &cmd])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (mut pipe, sink) = (child.stderr.take().unwrap(), stderr.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let s = Server {
            child,
            raft,
            client,
            stderr,
        };
        s.wait_ready();
        s
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(r) = self.request("SET ready yes") {
                if r.starts_with("OK") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the server never took a write");
    }

    fn request(&self, line: &str) -> Option<String> {
        let s = TcpStream::connect_timeout(&self.client, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        (&s).write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        BufReader::new(&s).read_line(&mut reply).ok()?;
        Some(reply.trim_end().to_string())
    }

    fn rss_mb(&self) -> u64 {
        let s = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            / 1024
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_100_mb_line_is_refused_without_being_held() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "");
    let before = s.rss_mb();
    let c = TcpStream::connect(s.client).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = c.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(b"SET big ").unwrap();
        let chunk = vec![b'x'; 1 << 20];
        for _ in 0..100 {
            w.write_all(&chunk).unwrap();
        }
        w.write_all(b"\nSET small 1\nGET small\n").unwrap();
    });
    let mut r = BufReader::new(c);
    let mut lines = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        lines.push(l.trim_end().to_string());
    }
    writer.join().unwrap();
    assert!(lines[0].starts_with("ERR line too long"), "{lines:?}");
    assert!(lines[1].starts_with("OK"), "{lines:?}");
    assert_eq!(lines[2], "VALUE 1", "{lines:?}");
    let after = s.rss_mb();
    assert!(
        after < before + 50,
        "the server grew from {before} MB to {after} MB"
    );
}

/// A client that pipelines millions of reads of a 6 KB value and never reads a reply: the
/// server stops reading it once a bounded number of replies waits (TCP flow control holds the
/// client back), so its memory does not grow with what the client sends; the replies come,
/// in order, once the client reads, and other clients are served meanwhile.
#[test]
fn a_client_that_never_reads_is_held_back_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "");
    let value = "v".repeat(6_000);
    let set = s.request(&format!("SET big {value}")).unwrap_or_default();
    assert!(set.starts_with("OK"), "{set}");
    let before = s.rss_mb();
    let c = TcpStream::connect(s.client).unwrap();
    let mut w = c.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    // 2,000,000 reads (16 MB, more than the sockets' buffers) ask for 12 GB of replies.
    let writer = std::thread::spawn(move || {
        let mut sent = 0;
        for _ in 0..2_000_000 {
            if w.write_all(b"GET big\n").is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let sent = writer.join().unwrap();
    assert!(sent < 2_000_000, "the server read every request ({sent})");
    let after = s.rss_mb();
    assert!(
        after < before + 100,
        "the server grew from {before} MB to {after} MB"
    );
    assert_eq!(s.request("GET ready").as_deref(), Some("VALUE yes"));
    // The replies come once the client reads.
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(c);
    for _ in 0..200 {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        assert_eq!(l.trim_end(), format!("VALUE {value}"));
    }
}

/// Pipelined requests past every bound of a connection (more than its window of started
/// requests, replies larger than its output bound) are all answered, in order: 300 writes
/// sent at once, then 300 reads of a 60 KB value (18 MB of replies) read slowly at first.
#[test]
fn pipelined_requests_past_every_bound_are_all_answered() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(dir.path(), "");
    let value = "w".repeat(60_000);
    let c = TcpStream::connect(s.client).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut w = c.try_clone().unwrap();
    let sets: String = (0..300).map(|i| format!("SET k{i} {i}\n")).collect();
    w.write_all(sets.as_bytes()).unwrap();
    let mut r = BufReader::new(c);
    let mut line = String::new();
    for i in 0..300 {
        line.clear();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("OK"), "SET {i}: {line}");
    }
    let set = s.request(&format!("SET big {value}")).unwrap_or_default();
    assert!(set.starts_with("OK"), "{set}");
    let gets = "GET big\n".repeat(300);
    let writer = std::thread::spawn(move || w.write_all(gets.as_bytes()));
    for i in 0..300 {
        if i < 20 {
            std::thread::sleep(Duration::from_millis(20));
        }
        line.clear();
        if let Err(e) = r.read_line(&mut line) {
            let log = s.stderr.lock().unwrap().clone();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            panic!("GET {i}: {e}; server: {tail:#?}");
        }
        assert_eq!(
            line.trim_end().len(),
            "VALUE ".len() + value.len(),
            "GET {i}"
        );
    }
    writer.join().unwrap().unwrap();
}

#[test]
fn running_out_of_descriptors_is_survived() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), "ulimit -n 256;");
    let mut held = Vec::new();
    for _ in 0..400 {
        for addr in [s.raft, s.client] {
            if let Ok(c) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
                held.push(c);
            }
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    drop(held);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        s.child.try_wait().is_ok_and(|st| st.is_none()),
        "the server exited"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if s.request("SET after flood")
            .is_some_and(|r| r.starts_with("OK"))
        {
            break;
        }
        assert!(Instant::now() < deadline, "the server no longer serves");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(s.request("GET after").as_deref(), Some("VALUE flood"));
}

#[test]
fn a_node_whose_storage_fails_exits_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Server::start(dir.path(), "");
    // The WAL's directory disappears: the next segment cannot be made.
    std::fs::remove_dir_all(dir.path().join("wal")).unwrap();
    let value = "v".repeat(60 << 10);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = s.child.try_wait().unwrap() {
            break st;
        }
        assert!(Instant::now() < deadline, "the server kept running");
        let _ = s.request(&format!("SET k {value}"));
    };
    assert_eq!(status.code(), Some(1), "{status:?}");
    std::thread::sleep(Duration::from_millis(200));
    let err = s.stderr.lock().unwrap().clone();
    assert!(err.contains("stopped"), "{err}");
    assert!(err.to_lowercase().contains("error"), "{err}");
}

fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(request);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// `--metrics-addr` serves every metric in Prometheus text format, answers only `GET /metrics`,
/// refuses an oversized request head, and the node logs to stderr (`RUST_LOG` filtered).
#[test]
fn metrics_are_served_to_prometheus_and_logs_go_to_stderr() {
    let d = tempfile::tempdir().unwrap();
    let m = common::port();
    let s = Server::start_with(d.path(), "", &format!("--metrics-addr {m}"));
    assert_eq!(
        s.request("SET a 1").as_deref().map(|r| r.starts_with("OK")),
        Some(true)
    );
    assert_eq!(s.request("GET a").as_deref(), Some("VALUE 1"));
    let body = http(m, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(body.starts_with("HTTP/1.1 200 OK"), "{body}");
    for want in [
        "# HELP raftwal_wal_fsync_duration_seconds",
        "raftwal_wal_fsync_duration_seconds_count ",
        "raftwal_raft_role{node=\"1\"} 3",
        "raftwal_raft_proposals_total{node=\"1\",outcome=\"accepted\"}",
        "raftwal_raft_reads_total{node=\"1\",via=\"read_index\"}",
        "raftwal_wal_live_segments ",
    ] {
        assert!(body.contains(want), "{want} missing from:\n{body}");
    }
    assert!(http(m, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    // Over the 8 KiB bound, but all of it read by the server (no reset loses the answer).
    let mut big = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    big.resize(9000, b'a');
    assert!(http(m, &big).starts_with("HTTP/1.1 431"));
    // A client trickling its request a byte a second is cut off: a scrape after it is
    // answered (it would wait tens of seconds if each byte restarted the timeout).
    let mut slow = TcpStream::connect(m).unwrap();
    let trickle = std::thread::spawn(move || {
        for b in b"GET /metrics HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
            if slow.write_all(&[*b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    });
    std::thread::sleep(Duration::from_millis(200));
    assert!(http(m, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 OK"));
    let _ = trickle.join();
    assert_eq!(
        s.request("GET a").as_deref(),
        Some("VALUE 1"),
        "still serving"
    );
    let logs = s.stderr.lock().unwrap().clone();
    assert!(logs.contains("leader changed"), "{logs}");
}
