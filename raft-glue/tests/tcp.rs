//! Three `Node`s over the TCP transport on 127.0.0.1: replication, a node of another cluster is
//! refused, a damaged snapshot stream is refused, a node restarted on the same port catches up
//! by a snapshot streamed over TCP (the others compacted their logs meanwhile).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/pairs.rs"]
mod pairs;
#[path = "support/stores.rs"]
mod stores;
#[path = "support/wait.rs"]
mod wait;

use wait::wait;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use raft::eraftpb::{Message, MessageType};
use raftwal_glue::{Config, Node, Role, StateMachine, TcpServer, TcpTransport, Transport};
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

fn start(dir: &std::path::Path, id: u64, addrs: &HashMap<u64, SocketAddr>) -> Member {
    try_start(dir, id, addrs).unwrap()
}

/// Starts a member; the port may still be held by a just-stopped one, which is the error.
fn try_start(
    dir: &std::path::Path,
    id: u64,
    addrs: &HashMap<u64, SocketAddr>,
) -> std::io::Result<Member> {
    let listener = TcpServer::bind(addrs[&id])?;
    let storage = stores::open(dir);
    let log = Log::default();
    let cfg = Config {
        tick: Duration::from_millis(10),
        snapshot_threshold: 10,
        trailing_entries: 2,
        ..Config::new(id, vec![1, 2, 3])
    };
    let transport = TcpTransport::new(id, CLUSTER, addrs.clone());
    let node = Node::start(cfg, log.clone(), storage, transport).unwrap();
    let server = TcpServer::serve(listener, CLUSTER, node.mailbox())?;
    Ok(Member { node, server, log })
}

fn leader(m: &BTreeMap<u64, Member>) -> Option<u64> {
    let l: Vec<u64> = m
        .iter()
        .filter(|(_, x)| x.node.role() == Role::Leader)
        .map(|(id, _)| *id)
        .collect();
    (l.len() == 1).then(|| l[0])
}

#[test]
fn three_nodes_over_tcp() {
    let d = tempfile::tempdir().unwrap();
    // Reserve three loopback ports.
    let addrs: HashMap<u64, SocketAddr> = (1..=3)
        .map(|id| {
            let l = TcpServer::bind("127.0.0.1:0".parse().unwrap()).unwrap();
            (id, l.local_addr().unwrap())
        })
        .collect();
    let mut members: BTreeMap<u64, Member> = (1..=3)
        .map(|id| (id, start(&d.path().join(format!("n{id}")), id, &addrs)))
        .collect();
    let l = wait(|| leader(&members)).expect("a leader over TCP");
    for i in 0..20 {
        members[&l]
            .node
            .apply(format!("c{i}").into_bytes(), Duration::from_secs(10))
            .unwrap();
    }
    let want: Vec<Vec<u8>> = (0..20).map(|i| format!("c{i}").into_bytes()).collect();
    assert!(wait(|| members
        .values()
        .all(|m| *m.log.0.lock().unwrap() == want)
        .then_some(()))
    .is_some());

    // A node of another cluster is refused at the handshake.
    let mut foreign_addrs = HashMap::new();
    foreign_addrs.insert(1, addrs[&1]);
    let foreign = TcpTransport::new(9, CLUSTER + 1, foreign_addrs);
    let mut m = Message::default();
    m.set_msg_type(MessageType::MsgHeartbeat);
    m.from = 9;
    m.to = 1;
    m.term = 1_000;
    foreign.send(m);
    assert!(wait(|| (members[&1].server.refused() > 0).then_some(())).is_some());
    assert!(
        members[&1].node.status().term < 1_000,
        "a foreign message reached Raft"
    );

    // A snapshot stream whose bytes do not match the announced checksum is refused, and
    // nothing is kept.
    let sender = TcpTransport::new(l, CLUSTER, addrs.clone());
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
    let r = sender.send_snapshot(msg, &meta, &mut &data[..]);
    assert!(r.is_err(), "a damaged snapshot was taken");
    assert!(members[&to].node.status().snapshot_index < 1_000);

    // Restart a follower on the same port after the others compacted their logs: it catches
    // up by a snapshot streamed over TCP, then from the log.
    let f = (1..=3).find(|&i| i != l).unwrap();
    drop(members.remove(&f));
    let l = wait(|| leader(&members)).expect("still a leader");
    let mut want = want;
    for i in 0..40 {
        let c = format!("while down {i}").into_bytes();
        members[&l]
            .node
            .apply(c.clone(), Duration::from_secs(10))
            .unwrap();
        want.push(c);
    }
    assert!(wait(|| (members[&l].node.status().snapshot_index >= 50).then_some(())).is_some());
    let restarted = wait(|| try_start(&d.path().join(format!("n{f}")), f, &addrs).ok())
        .expect("restart on the same port");
    members.insert(f, restarted);
    assert!(
        wait(|| (*members[&f].log.0.lock().unwrap() == want).then_some(())).is_some(),
        "the restarted node did not catch up"
    );
    let s = members[&f].node.status();
    assert!(s.snapshot_index >= 50, "caught up by snapshot: {s:?}");
    let stored = FileSnapshotStore::open(d.path().join(format!("n{f}/snapshots")), 2)
        .unwrap()
        .list()
        .unwrap();
    assert!(stored.iter().all(|m| m.id != "bogus"), "{stored:?}");
}
