//! Three `Node`s over the TCP transport on 127.0.0.1, with mutual TLS and in plaintext:
//! replication, a node restarted on the same port catching up by a snapshot streamed over TCP,
//! a damaged snapshot stream refused. And the attacks of an outsider on the same network:
//! connecting without a certificate, with another CA's, or with a valid one while claiming
//! another node's id; forged messages (a term of `u64::MAX`, an empty proposal, a proposal
//! from a stranger, a configuration change removing a node); a hundred connections that
//! announce 4 MiB frames and stop, then a thousand idle ones; silent connections past the
//! handshake and idle deadlines; a peer that accepts and stops reading.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/pairs.rs"]
mod pairs;
#[path = "support/stores.rs"]
mod stores;
#[path = "support/wait.rs"]
mod wait;

use wait::wait;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType, Entry, EntryType, Message, MessageType};
use raftwal_glue::{
    Config, DevCa, DropReason, Node, Role, StateMachine, TcpOptions, TcpServer, TcpTransport,
    Transport,
};
use raftwal_snapshot::{FileSnapshotStore, SnapshotMeta, SnapshotStore};

const CLUSTER: u64 = 0xC1u64;

#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Vec<u8>>>>);

impl StateMachine for Log {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        self.0.lock().unwrap().push(command.to_vec());
        Vec::new()
    }

    fn snapshot(&mut self) -> std::io::Result<Box<dyn raftwal_glue::StateSnapshot>> {
        let l = self.0.lock().unwrap();
        Ok(Box::new(pairs::encode(l.iter().map(|c| (&c[..], &[][..])))))
    }

    fn restore(&mut self, data: &mut dyn std::io::Read) -> std::io::Result<()> {
        *self.0.lock().unwrap() = pairs::decode(data)?.into_iter().map(|(c, _)| c).collect();
        Ok(())
    }
}

struct Member {
    node: Node,
    server: TcpServer,
    log: Log,
}

/// A cluster of three on loopback ports, TLS (certificates from one development CA) or not.
struct Net {
    addrs: HashMap<u64, SocketAddr>,
    ca: Option<DevCa>,
    dir: tempfile::TempDir,
    /// Changes every member's transport and server options.
    tweak: fn(TcpOptions) -> TcpOptions,
}

impl Net {
    fn new(tls: bool) -> Self {
        Net {
            addrs: (1..=3)
                .map(|id| {
                    let l = TcpServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
                    (id, l.local_addr().unwrap())
                })
                .collect(),
            ca: tls.then(|| DevCa::new().unwrap()),
            dir: tempfile::tempdir().unwrap(),
            tweak: |o| o,
        }
    }

    fn opts(&self, id: u64) -> TcpOptions {
        (self.tweak)(match &self.ca {
            Some(ca) => TcpOptions::tls(ca.identity(id).unwrap()),
            None => TcpOptions::plaintext(),
        })
    }

    /// Starts a member; the port may still be held by a just-stopped one, which is the error.
    fn start(&self, id: u64) -> std::io::Result<Member> {
        let listener = TcpServer::bind(self.addrs[&id])?;
        let storage = stores::open(&self.dir.path().join(format!("n{id}")));
        let log = Log::default();
        let cfg = Config {
            tick: Duration::from_millis(10),
            snapshot_threshold: 10,
            trailing_entries: 2,
            ..Config::new(id, vec![1, 2, 3])
        };
        let transport = TcpTransport::new(id, CLUSTER, self.addrs.clone(), self.opts(id));
        let node = Node::start(cfg, log.clone(), storage, transport).unwrap();
        let server = TcpServer::serve(listener, CLUSTER, node.mailbox(), self.opts(id))?;
        Ok(Member { node, server, log })
    }

    fn start_all(&self) -> BTreeMap<u64, Member> {
        (1..=3).map(|id| (id, self.start(id).unwrap())).collect()
    }
}

fn leader(m: &BTreeMap<u64, Member>) -> Option<u64> {
    let l: Vec<u64> = m
        .iter()
        .filter(|(_, x)| x.node.role() == Role::Leader)
        .map(|(id, _)| *id)
        .collect();
    (l.len() == 1).then(|| l[0])
}

fn replicate_restart_and_snapshot(tls: bool) {
    let net = Net::new(tls);
    let mut members = net.start_all();
    let l = wait(|| leader(&members)).expect("a leader over TCP");
    for i in 0..20 {
        members[&l]
            .node
            .apply(format!("c{i}").into_bytes(), Duration::from_secs(10))
            .unwrap();
    }
    let mut want: Vec<Vec<u8>> = (0..20).map(|i| format!("c{i}").into_bytes()).collect();
    assert!(wait(|| members
        .values()
        .all(|m| *m.log.0.lock().unwrap() == want)
        .then_some(()))
    .is_some());

    // A snapshot stream whose bytes do not match the announced checksum is refused, and
    // nothing is kept.
    let sender = TcpTransport::new(l, CLUSTER, net.addrs.clone(), net.opts(l));
    let to = (1..=3).find(|&i| i != l).unwrap();
    let mut msg = Message::default();
    msg.set_msg_type(MessageType::MsgSnapshot);
    msg.from = l;
    msg.to = to;
    msg.mut_snapshot().mut_metadata().index = 1_000;
    msg.mut_snapshot().mut_metadata().term = 1;
    let data = b"not what was announced".to_vec();
    let meta = SnapshotMeta {
        id: "bogus".into(),
        index: 1_000,
        term: 1,
        size: data.len() as u64,
        checksum: crc32fast::hash(b"something else"),
        ..SnapshotMeta::default()
    };
    assert!(sender.send_snapshot(msg, &meta, &mut &data[..]).is_err());
    assert!(members[&to].node.status().snapshot_index < 1_000);

    // Restart a follower on the same port after the others compacted their logs: it catches
    // up by a snapshot streamed over TCP, then from the log.
    let f = to;
    drop(members.remove(&f));
    let l = wait(|| leader(&members)).expect("still a leader");
    for i in 0..40 {
        let c = format!("while down {i}").into_bytes();
        members[&l]
            .node
            .apply(c.clone(), Duration::from_secs(10))
            .unwrap();
        want.push(c);
    }
    assert!(wait(|| (members[&l].node.status().snapshot_index >= 50).then_some(())).is_some());
    let restarted = wait(|| net.start(f).ok()).expect("restart on the same port");
    members.insert(f, restarted);
    assert!(
        wait(|| (*members[&f].log.0.lock().unwrap() == want).then_some(())).is_some(),
        "the restarted node did not catch up"
    );
    let s = members[&f].node.status();
    assert!(s.snapshot_index >= 50, "caught up by snapshot: {s:?}");
    let stored = FileSnapshotStore::open(net.dir.path().join(format!("n{f}/snapshots")), 2)
        .unwrap()
        .list()
        .unwrap();
    assert!(stored.iter().all(|m| m.id != "bogus"), "{stored:?}");
}

#[test]
fn three_nodes_over_mutual_tls() {
    replicate_restart_and_snapshot(true);
}

#[test]
fn three_nodes_over_plaintext() {
    replicate_restart_and_snapshot(false);
}

fn heartbeat(from: u64, to: u64, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = from;
    m.to = to;
    m.term = term;
    m
}

/// Without a certificate, with another CA's, or with a valid one claiming another node's id:
/// refused at the handshake. With a valid one, a message claiming another sender: dropped;
/// a removed node speaking as itself: dropped.
#[test]
fn only_certified_peers_speak_and_only_for_themselves() {
    let net = Net::new(true);
    let members = net.start_all();
    let l = wait(|| leader(&members)).expect("a leader");
    let target = (1..=3).find(|&i| i != l).unwrap();
    let to: HashMap<u64, SocketAddr> = [(target, net.addrs[&target])].into();
    let refused =
        |n: u64| wait(|| (members[&target].server.refused() >= n).then_some(())).is_some();
    let term = members[&target].node.status().term;

    // Plaintext into a TLS server.
    let plain = TcpTransport::new(l, CLUSTER, to.clone(), TcpOptions::plaintext());
    plain.send(heartbeat(l, target, term + 5));
    assert!(refused(1), "a plaintext peer was not refused");
    // A certificate from another CA.
    let other = DevCa::new().unwrap();
    let stranger = TcpTransport::new(
        l,
        CLUSTER,
        to.clone(),
        TcpOptions::tls(other.identity(l).unwrap()),
    );
    stranger.send(heartbeat(l, target, term + 5));
    assert!(refused(2), "another CA's certificate was not refused");
    // This CA's certificate for node 9, claiming to be the leader.
    let ca = net.ca.as_ref().unwrap();
    let liar = TcpTransport::new(
        l,
        CLUSTER,
        to.clone(),
        TcpOptions::tls(ca.identity(9).unwrap()),
    );
    liar.send(heartbeat(l, target, term + 5));
    assert!(
        refused(3),
        "a certificate naming another node was not refused"
    );
    // Node 9's certificate, honest in the handshake, forging the leader's messages.
    let forger = TcpTransport::new(
        9,
        CLUSTER,
        to.clone(),
        TcpOptions::tls(ca.identity(9).unwrap()),
    );
    forger.send(heartbeat(l, target, term + 5));
    let spoofed = wait(|| {
        let s = members[&target].node.status();
        s.dropped
            .get(&DropReason::Spoofed)
            .copied()
            .filter(|&n| n > 0)
    });
    assert!(spoofed.is_some(), "{:?}", members[&target].node.status());
    assert_eq!(
        members[&target].node.leader(),
        Some(l),
        "the forged heartbeat took effect"
    );
    assert!(members[&target].node.status().term < term + 5);
    // A removed node speaking as itself: certified, but no longer a member. A follower used
    // to follow any certified peer with a higher term.
    let gone = (1..=3).find(|&i| i != l && i != target).unwrap();
    members[&l]
        .node
        .remove_server(gone, Duration::from_secs(10))
        .unwrap();
    let applied = wait(|| (members[&target].node.status().voters.len() == 2).then_some(()));
    assert!(applied.is_some(), "{:?}", members[&target].node.status());
    let term = members[&target].node.status().term;
    let ex = TcpTransport::new(
        gone,
        CLUSTER,
        to,
        TcpOptions::tls(ca.identity(gone).unwrap()),
    );
    let mut append = heartbeat(gone, target, term + 5);
    append.set_msg_type(MessageType::MsgAppend);
    for m in [heartbeat(gone, target, term + 5), append] {
        ex.send(m);
    }
    let not_member = wait(|| {
        let s = members[&target].node.status();
        s.dropped
            .get(&DropReason::NotAMember)
            .copied()
            .filter(|&n| n >= 2)
    });
    assert!(not_member.is_some(), "{:?}", members[&target].node.status());
    assert_eq!(members[&target].node.leader(), Some(l));
    assert!(members[&target].node.status().term < term + 5);
}

/// The hello a plaintext peer sends: magic, cluster, claimed id.
fn hello(from: u64) -> Vec<u8> {
    let mut hello = b"RWRAFT\x00\x02".to_vec();
    hello.extend_from_slice(&CLUSTER.to_le_bytes());
    hello.extend_from_slice(&from.to_le_bytes());
    hello
}

/// Speaks the plaintext wire protocol by hand: a hello, then frames.
fn raw(addr: SocketAddr, from: u64) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&hello(from)).unwrap();
    s
}

fn frame(s: &mut TcpStream, m: &Message) {
    let b = m.write_to_bytes().unwrap();
    s.write_all(&(b.len() as u32).to_le_bytes()).unwrap();
    s.write_all(&b).unwrap();
}

/// The attacks of the audit against a plaintext cluster, whose handshake (the cluster id) an
/// attacker knows: each forged message is dropped, no node stops, nothing is written, nobody
/// is removed, and the cluster keeps committing.
#[test]
fn forged_messages_neither_stop_nor_change_the_cluster() {
    let net = Net::new(false);
    let members = net.start_all();
    let l = wait(|| leader(&members)).expect("a leader");
    members[&l]
        .node
        .apply(b"before".to_vec(), Duration::from_secs(10))
        .unwrap();
    for id in 1..=3 {
        let addr = net.addrs[&id];
        let term = members[&id].node.status().term;
        // A heartbeat at the largest term (it used to be persisted, then overflow).
        let mut s = raw(addr, l);
        frame(&mut s, &heartbeat(l, id, u64::MAX));
        // An empty proposal (raft-rs's fatal!).
        let mut p = Message::default();
        p.set_msg_type(MessageType::MsgPropose);
        p.from = 2;
        p.to = id;
        frame(&mut s, &p);
        // A proposal writing a key, from a node that is not a member.
        let mut s9 = raw(addr, 9);
        let mut w = Message::default();
        w.set_msg_type(MessageType::MsgPropose);
        w.from = 9;
        w.to = id;
        w.term = term;
        w.mut_entries().push(Entry {
            data: b"forged".to_vec().into(),
            ..Default::default()
        });
        frame(&mut s9, &w);
        // A proposal removing node 2.
        let mut cc = ConfChange::default();
        cc.set_change_type(ConfChangeType::RemoveNode);
        cc.node_id = 2;
        let mut e = Entry {
            data: cc.write_to_bytes().unwrap().into(),
            ..Default::default()
        };
        e.set_entry_type(EntryType::EntryConfChange);
        let mut r = w.clone();
        r.set_entries(vec![e].into());
        frame(&mut s9, &r);
        // An empty read request, and a heartbeat committing past the log (raft-rs panics).
        let mut ri = Message::default();
        ri.set_msg_type(MessageType::MsgReadIndex);
        ri.from = l;
        ri.to = id;
        frame(&mut s, &ri);
        let mut hb = heartbeat(l, id, term);
        hb.commit = 1 << 40;
        frame(&mut s, &hb);
    }
    let dropped = |id: u64| members[&id].node.status().dropped.values().sum::<u64>();
    assert!(
        wait(|| (1..=3).all(|id| dropped(id) >= 5).then_some(())).is_some(),
        "{:?}",
        members
            .values()
            .map(|m| m.node.status().dropped)
            .collect::<Vec<_>>()
    );
    for (id, m) in &members {
        let s = m.node.status();
        assert!(!s.stopped, "node {id} stopped: {s:?}");
        assert!(s.term < 1 << 32, "node {id} took a forged term: {s:?}");
        assert_eq!(s.voters, vec![1, 2, 3], "node {id}");
    }
    let l = wait(|| leader(&members)).expect("a leader");
    members[&l]
        .node
        .apply(b"after".to_vec(), Duration::from_secs(10))
        .unwrap();
    let want = vec![b"before".to_vec(), b"after".to_vec()];
    assert!(wait(|| members
        .values()
        .all(|m| *m.log.0.lock().unwrap() == want)
        .then_some(()))
    .is_some());
}

fn threads() -> usize {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn rss_mb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        / 1024
}

/// Raises this process's descriptor limit to its hard limit (the test holds over a thousand
/// sockets).
fn more_descriptors() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut l = getrlimit(Resource::Nofile);
    l.current = l.maximum;
    let _ = setrlimit(Resource::Nofile, l);
}

/// A hundred connections that announce a 4 MiB frame (within `max_frame`) and send 100 bytes
/// of it, held at once, then a thousand idle ones: the half-sent frames cost what arrived, not
/// what was announced (an implementation allocating from the length alone would take 400 MiB),
/// the server holds at most its connection limit and refuses the rest, threads stay bounded,
/// and the cluster goes on.
#[test]
fn idle_and_half_sent_connections_stay_bounded() {
    more_descriptors();
    let mut net = Net::new(false);
    net.tweak = |o| TcpOptions {
        max_connections: 150,
        ..o
    };
    let members = net.start_all();
    let l = wait(|| leader(&members)).expect("a leader");
    let server = &members[&1].server;
    let (threads0, rss0, held0) = (threads(), rss_mb(), server.connections());
    let target = net.addrs[&1];
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = TcpStream::connect(target).unwrap();
        s.write_all(&hello(2)).unwrap();
        s.write_all(&(4u32 << 20).to_le_bytes()).unwrap();
        s.write_all(&[0u8; 100]).unwrap();
        held.push(s);
    }
    let all_held = wait(|| (server.connections() >= held0 + 100).then_some(()));
    assert!(
        all_held.is_some(),
        "{} connections held",
        server.connections()
    );
    let rss1 = rss_mb();
    assert!(
        rss1 <= rss0 + 100,
        "100 half-sent frames: memory grew from {rss0} MB to {rss1} MB"
    );
    for _ in 0..1000 {
        if let Ok(s) = TcpStream::connect(target) {
            held.push(s);
        }
    }
    assert!(held.len() >= 1100, "{} connections made", held.len());
    let refused = wait(|| (server.refused() >= 900).then_some(()));
    assert!(refused.is_some(), "{} refused", server.refused());
    assert!(
        server.connections() <= 150,
        "{} connections held",
        server.connections()
    );
    let (threads1, rss2) = (threads(), rss_mb());
    assert!(
        threads1 <= threads0 + 160,
        "threads grew from {threads0} to {threads1}"
    );
    assert!(
        rss2 <= rss0 + 150,
        "memory grew from {rss0} MB to {rss2} MB"
    );
    // The cluster still commits.
    members[&l]
        .node
        .apply(b"under siege".to_vec(), Duration::from_secs(10))
        .unwrap();
    drop(held);
}

/// Whether the server closed `s` within `within` (it writes nothing to a peer, so a read
/// returns only at the close).
fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    use std::io::Read;
    s.set_read_timeout(Some(within)).unwrap();
    match s.read(&mut [0u8; 64]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

/// A connection that never finishes its hello is refused at the handshake deadline; one that
/// did, and then speaks more often than the idle timeout, is kept well past both deadlines and
/// closed once it falls silent.
#[test]
fn silent_connections_are_closed_at_their_deadlines() {
    let mut net = Net::new(false);
    net.tweak = |o| TcpOptions {
        handshake_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(800),
        ..o
    };
    let m = net.start(1).unwrap();
    let target = net.addrs[&1];

    let refused0 = m.server.refused();
    let mut mute = TcpStream::connect(target).unwrap();
    mute.write_all(&hello(2)[..10]).unwrap();
    assert!(closed_within(&mut mute, Duration::from_secs(20)));
    assert_eq!(m.server.refused(), refused0 + 1, "refused at the handshake");

    let mut chatty = raw(target, 2);
    let until = Instant::now() + Duration::from_millis(2400);
    while Instant::now() < until {
        frame(&mut chatty, &heartbeat(2, 1, 0));
        assert!(!closed_within(&mut chatty, Duration::from_millis(100)));
    }
    assert_eq!(m.server.refused(), refused0 + 1, "a speaking peer is kept");
    assert!(closed_within(&mut chatty, Duration::from_secs(20)));
    let gone = wait(|| (m.server.connections() == 0).then_some(()));
    assert!(
        gone.is_some(),
        "{} connections held",
        m.server.connections()
    );
}

/// A peer that accepts connections and never reads: the writer's blocked write times out, the
/// peer is reported unreachable, and what is queued for it stays within the byte bound.
#[test]
fn a_peer_that_stops_reading_is_reported_unreachable() {
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = sink.local_addr().unwrap();
    let accepted = std::thread::spawn(move || {
        let mut conns = Vec::new();
        sink.set_nonblocking(true).unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        while Instant::now() < until {
            if let Ok((s, _)) = sink.accept() {
                conns.push(s); // held open, never read
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    });
    let opts = TcpOptions {
        write_timeout: Duration::from_millis(500),
        queue_bytes: 4 << 20,
        ..TcpOptions::plaintext()
    };
    let t = TcpTransport::new(1, CLUSTER, [(2, addr)].into(), opts);
    let mut big = heartbeat(1, 2, 1);
    big.set_msg_type(MessageType::MsgAppend);
    big.mut_entries().push(Entry {
        data: vec![0u8; 256 << 10].into(),
        ..Default::default()
    });
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut unreachable = false;
    while Instant::now() < deadline && !unreachable {
        for _ in 0..64 {
            t.send(big.clone());
        }
        unreachable = t.unreachable().contains(&2);
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        unreachable,
        "a peer that stopped reading was never reported"
    );
    assert!(t.overflowed() > 0, "the queue was not bounded");
    drop(t);
    drop(accepted);
}

/// A node at an address none of the others was configured with joins with `add_voter_at`: the
/// address travels in the membership change, every node (also one restarted after it, which
/// learns it again from its log) reaches the newcomer.
#[test]
fn a_node_added_with_its_address_is_reached_by_every_node() {
    let net = Net::new(true);
    let mut members = net.start_all();
    let l = wait(|| leader(&members)).expect("a leader");
    members[&l]
        .node
        .apply(b"before".to_vec(), Duration::from_secs(10))
        .unwrap();
    // Node 4 knows the others; they do not know it.
    let listener = TcpServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr4 = listener.local_addr().unwrap();
    let mut book = net.addrs.clone();
    book.insert(4, addr4);
    let log4 = Log::default();
    let cfg = Config {
        tick: Duration::from_millis(10),
        ..Config::new(4, vec![])
    };
    let node4 = Node::start(
        cfg,
        log4.clone(),
        stores::open(&net.dir.path().join("n4")),
        TcpTransport::new(4, CLUSTER, book, net.opts(4)),
    )
    .unwrap();
    let _server4 = TcpServer::serve(listener, CLUSTER, node4.mailbox(), net.opts(4)).unwrap();
    members[&l]
        .node
        .add_voter_at(4, &addr4.to_string(), Duration::from_secs(20))
        .unwrap();
    assert_eq!(members[&l].node.status().voters, vec![1, 2, 3, 4]);
    // A follower restarts (its configured addresses lack node 4) and a write needs it.
    let f = (1..=3).find(|&i| i != l).unwrap();
    drop(members.remove(&f));
    members.insert(f, wait(|| net.start(f).ok()).unwrap());
    // It leads, so it must reach node 4 itself.
    let l = wait(|| leader(&members)).expect("a leader");
    wait(|| {
        members[&l]
            .node
            .transfer_leadership(f, Duration::from_secs(2))
            .ok()
    })
    .expect("the restarted node leads");
    members[&f]
        .node
        .apply(b"after".to_vec(), Duration::from_secs(10))
        .unwrap();
    let want = vec![b"before".to_vec(), b"after".to_vec()];
    assert!(
        wait(|| (*log4.0.lock().unwrap() == want
            && members.values().all(|m| *m.log.0.lock().unwrap() == want))
        .then_some(()))
        .is_some(),
        "the newcomer or the restarted node did not get everything"
    );
    node4.shutdown();
}
