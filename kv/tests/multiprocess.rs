//! Three `raftwal-kv` processes over TCP on 127.0.0.1, with mutual TLS (certificates from
//! `raftwal-kv certs`) and in plaintext: kill -9 the leader, restart it, and check that no
//! acknowledged write is lost. The servers snapshot every 8 entries, so the restart goes
//! through a snapshot restore and the killed node catches up by a snapshot streamed over TCP.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::disallowed_methods,
    missing_docs
)]

use std::collections::BTreeMap;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The example server, built by Cargo as the `raftwal-kv` binary of this package.
fn kv_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_raftwal-kv"))
}

struct Proc {
    child: Child,
    client: SocketAddr,
}

struct Cluster {
    dir: tempfile::TempDir,
    tls: bool,
    raft: BTreeMap<u64, SocketAddr>,
    clients: BTreeMap<u64, SocketAddr>,
    procs: BTreeMap<u64, Proc>,
}

impl Cluster {
    fn spawn(&mut self, id: u64) {
        let peers: Vec<String> = self.raft.iter().map(|(i, a)| format!("{i}={a}")).collect();
        let mut cmd = Command::new(kv_binary());
        cmd.arg("serve");
        if self.tls {
            cmd.arg("--certs").arg(self.dir.path().join("certs"));
        } else {
            cmd.arg("--plaintext");
        }
        let child = cmd
            .args(["--id", &id.to_string()])
            .args(["--peers", &peers.join(",")])
            .args(["--client", &self.clients[&id].to_string()])
            .args(["--snapshot-every", "8"])
            // Each cluster its own id: a node of another test's cluster is refused.
            .args(["--cluster-id", &self.raft[&1].port().to_string()])
            .arg("--dir")
            .arg(self.dir.path().join(format!("n{id}")))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.procs.insert(
            id,
            Proc {
                child,
                client: self.clients[&id],
            },
        );
    }

    fn kill9(&mut self, id: u64) {
        if let Some(mut p) = self.procs.remove(&id) {
            p.child.kill().unwrap(); // SIGKILL: no clean shutdown, no checkpoint
            p.child.wait().unwrap();
        }
    }

    /// Sends one request to node `id`; `None` if it cannot be reached.
    fn request(&self, id: u64, line: &str) -> Option<String> {
        let addr = self.procs.get(&id)?.client;
        let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        let mut w = s.try_clone().ok()?;
        w.write_all(format!("{line}\n").as_bytes()).ok()?;
        let mut reply = String::new();
        BufReader::new(s).read_line(&mut reply).ok()?;
        Some(reply.trim().to_string())
    }

    /// Sends to whoever leads, following hints; returns the final reply once it is not a
    /// redirect.
    fn to_leader(&self, line: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut id = *self.procs.keys().next().unwrap();
        loop {
            assert!(Instant::now() < deadline, "no leader answered {line:?}");
            match self.request(id, line) {
                Some(r) if r.starts_with("NOTLEADER") => {
                    let hint: u64 = r[10..].trim().parse().unwrap_or(0);
                    id = if hint != 0 && self.procs.contains_key(&hint) {
                        hint
                    } else {
                        std::thread::sleep(Duration::from_millis(50));
                        self.next_id(id)
                    };
                }
                Some(r) if r.starts_with("ERR") => {
                    std::thread::sleep(Duration::from_millis(50));
                    id = self.next_id(id);
                }
                Some(r) => return format!("{id}:{r}"),
                None => {
                    std::thread::sleep(Duration::from_millis(50));
                    id = self.next_id(id);
                }
            }
        }
    }

    fn next_id(&self, id: u64) -> u64 {
        self.procs
            .keys()
            .copied()
            .find(|&i| i > id)
            .or_else(|| self.procs.keys().copied().next())
            .unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, mut p) in std::mem::take(&mut self.procs) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

#[test]
fn kill_9_the_leader_and_lose_nothing_acknowledged_over_tls() {
    kill_9_the_leader(true);
}

#[test]
fn kill_9_the_leader_and_lose_nothing_acknowledged_in_plaintext() {
    kill_9_the_leader(false);
}

fn kill_9_the_leader(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    if tls {
        let made = Command::new(kv_binary())
            .args(["certs", "--nodes", "1,2,3", "--dir"])
            .arg(dir.path().join("certs"))
            .status()
            .unwrap();
        assert!(made.success());
    }
    let mut c = Cluster {
        dir,
        tls,
        raft: (1..=3).map(|i| (i, common::port())).collect(),
        clients: (1..=3).map(|i| (i, common::port())).collect(),
        procs: BTreeMap::new(),
    };
    for id in 1..=3 {
        c.spawn(id);
    }
    let mut acked = BTreeMap::new();
    let mut leader = 0;
    for i in 0..30 {
        let r = c.to_leader(&format!("SET k{i} v{i}"));
        let (id, reply) = r.split_once(':').unwrap();
        assert!(reply.starts_with("OK"), "{r}");
        leader = id.parse().unwrap();
        acked.insert(format!("k{i}"), format!("v{i}"));
    }
    c.kill9(leader);
    for i in 30..45 {
        let r = c.to_leader(&format!("SET k{i} v{i}"));
        assert!(r.split_once(':').unwrap().1.starts_with("OK"), "{r}");
        acked.insert(format!("k{i}"), format!("v{i}"));
    }
    c.spawn(leader);
    // Every acknowledged write is readable through the (possibly new) leader…
    for (k, v) in &acked {
        let r = c.to_leader(&format!("GET {k}"));
        assert_eq!(r.split_once(':').unwrap().1, format!("VALUE {v}"), "{k}");
    }
    // …and the restarted process serves them too once it is the leader or has caught up:
    // kill the others' leadership by killing one more node and reading again.
    let second = c.to_leader("GET k0");
    let now_leader: u64 = second.split_once(':').unwrap().0.parse().unwrap();
    if now_leader != leader {
        c.kill9(now_leader);
        for (k, v) in &acked {
            let r = c.to_leader(&format!("GET {k}"));
            assert_eq!(r.split_once(':').unwrap().1, format!("VALUE {v}"), "{k}");
        }
    }
}

/// Clients read through the survivors while the leader is killed. A read never answers with a
/// write's "may or may not commit"; it fails only as a read; and every read still in flight
/// when the new leader commits its first write is served (it was retried, not left to time
/// out), as is every read issued after that.
#[test]
fn reads_resume_once_a_new_leader_exists() {
    let mut c = Cluster {
        dir: tempfile::tempdir().unwrap(),
        tls: false,
        raft: (1..=3).map(|i| (i, common::port())).collect(),
        clients: (1..=3).map(|i| (i, common::port())).collect(),
        procs: BTreeMap::new(),
    };
    for id in 1..=3 {
        c.spawn(id);
    }
    let r = c.to_leader("SET k v");
    let leader: u64 = r.split_once(':').unwrap().0.parse().unwrap();
    let survivors: Vec<u64> = (1..=3).filter(|&i| i != leader).collect();
    let addrs: Vec<SocketAddr> = survivors.iter().map(|i| c.clients[i]).collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    let readers: Vec<_> = addrs
        .into_iter()
        .map(|addr| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut log = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let issued = t0.elapsed();
                    let reply = get(addr, "GET k");
                    log.push((issued, t0.elapsed(), reply));
                }
                log
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    c.kill9(leader);
    // The first write a new leader commits.
    let first_write = loop {
        let ok = survivors.iter().any(|&id| {
            c.request(id, "SET probe 1")
                .is_some_and(|r| r.starts_with("OK"))
        });
        if ok {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no new leader");
    };
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let logs: Vec<_> = readers.into_iter().map(|r| r.join().unwrap()).collect();
    // Every answer came from this cluster's own servers: none of them exited (one that could
    // not bind its ports would have).
    for id in &survivors {
        let p = c.procs.get_mut(id).unwrap();
        assert!(p.child.try_wait().unwrap().is_none(), "node {id} exited");
    }
    let mut in_flight = 0;
    for log in &logs {
        for (issued, done, reply) in log {
            let reply = reply.as_deref().unwrap_or("(no answer)");
            assert!(
                !reply.contains("may or may not"),
                "a read answered like a write: {reply}"
            );
            assert!(
                reply == "VALUE v" || reply == "ERR no leader yet" || reply == "ERR read timed out",
                "unexpected read reply {reply:?}"
            );
            if *done >= first_write {
                // In flight when the new leader committed, or issued after: served.
                assert_eq!(
                    reply, "VALUE v",
                    "a read issued at {issued:?} and answered at {done:?} failed after the new leader's first write at {first_write:?}"
                );
                if *issued < first_write {
                    in_flight += 1;
                }
            }
        }
    }
    eprintln!("reads in flight across the first new write: {in_flight}; new leader's first write at {first_write:?}");
}

fn get(addr: SocketAddr, line: &str) -> Option<String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    (&s).write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).ok()?;
    Some(reply.trim().to_string())
}
