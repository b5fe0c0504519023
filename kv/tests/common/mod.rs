//! What the process tests share: ports for the servers they start.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU16, Ordering};

/// The next port this test process will try.
static NEXT: AtomicU16 = AtomicU16::new(0);

/// A port on 127.0.0.1 no other server of this test process has been given, and which the
/// kernel does not hand out on its own.
///
/// Asking the kernel for a free port (binding port 0) and releasing it races: the kernel may
/// give the same port to another test's server, to a server restarted meanwhile, or to an
/// outgoing connection, and a client then talks to a server of another cluster. These ports
/// come from below the kernel's ephemeral range, each given once per process, from a start
/// that depends on the process id (so that test processes run side by side rarely meet),
/// and are checked free when given.
pub fn port() -> SocketAddr {
    let (low, high) = unassigned_range();
    let span = high - low;
    let _ = NEXT.compare_exchange(
        0,
        low + (std::process::id() % u32::from(span / 2)) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let mut p = NEXT.fetch_add(1, Ordering::SeqCst);
        if p >= high {
            p = low + (p - low) % span;
        }
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p));
        if TcpListener::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no free port in {low}..{high}");
}

/// Ports below the kernel's ephemeral range (Linux: `ip_local_port_range`) and above the
/// well-known ones.
fn unassigned_range() -> (u16, u16) {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let high = ephemeral_low.max(12_000);
    (high - 10_000, high)
}
