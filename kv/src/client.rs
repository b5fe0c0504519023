//! `raftwal-kv get|set|del`: sends one request, following `NOTLEADER` hints and trying the
//! other servers when one cannot answer.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// The servers' client addresses.
#[derive(clap::Args, Debug)]
pub struct Servers {
    /// The nodes' client addresses: `1=127.0.0.1:8001,2=…`.
    #[arg(long, value_parser = crate::parse_peers)]
    servers: BTreeMap<u64, SocketAddr>,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
}

/// One request and its reply line; `None` if the server could not be reached.
fn ask(addr: SocketAddr, line: &str) -> Option<String> {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_nodelay(true).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    (&s).write_all(format!("{line}\n").as_bytes()).ok()?;
    let mut reply = String::new();
    BufReader::new(&s).read_line(&mut reply).ok()?;
    (!reply.is_empty()).then(|| reply.trim_end().to_string())
}

/// Prints the final reply; the exit status is 0 for a success, 1 otherwise.
pub fn run(s: &Servers, line: &str) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(s.timeout);
    let ids: Vec<u64> = s.servers.keys().copied().collect();
    let mut next = 0;
    let mut target = ids[0];
    let mut last = String::from("ERR no server answered");
    while Instant::now() < deadline {
        match ask(s.servers[&target], line) {
            Some(r) if r.starts_with("NOTLEADER") => {
                let hint: u64 = r[9..].trim().parse().unwrap_or(0);
                if s.servers.contains_key(&hint) && hint != target {
                    target = hint;
                    continue;
                }
                last = r;
            }
            Some(r) if r.starts_with("ERR no leader") => last = r,
            Some(r) => {
                println!("{r}");
                return i32::from(r.starts_with("ERR"));
            }
            None => {}
        }
        next = (next + 1) % ids.len();
        target = ids[next];
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("{last}");
    1
}
