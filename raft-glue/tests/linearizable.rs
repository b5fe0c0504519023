//! Clients write and read a replicated key–value store while a nemesis partitions nodes and
//! crashes and restarts them (on their real `Wal`s and snapshot stores, snapshotting every 25
//! entries, so lagging nodes install snapshots); the recorded history is checked for
//! linearizability (Wing–Gong, `support/linearizability.rs`). A final read of every key after
//! healing makes a lost acknowledged write show up as a violation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/linearizability.rs"]
mod lin;
#[path = "support/pairs.rs"]
mod pairs;
#[path = "support/stores.rs"]
mod stores;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use raftwal_glue::{Config, MemNetwork, Node, NodeError, Role, StateMachine};

#[derive(Clone, Default)]
struct Kv(Arc<Mutex<BTreeMap<u64, u64>>>);

impl StateMachine for Kv {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        if let Ok(b) = <[u8; 16]>::try_from(command) {
            let k = u64::from_le_bytes(b[..8].try_into().unwrap());
            let v = u64::from_le_bytes(b[8..].try_into().unwrap());
            self.0.lock().unwrap().insert(k, v);
        }
        Vec::new()
    }

    fn snapshot(&mut self) -> std::io::Result<Box<dyn raftwal_glue::StateSnapshot>> {
        let m = self.0.lock().unwrap();
        let kv: Vec<([u8; 8], [u8; 8])> = m
            .iter()
            .map(|(k, v)| (k.to_le_bytes(), v.to_le_bytes()))
            .collect();
        Ok(Box::new(pairs::encode(
            kv.iter().map(|(k, v)| (&k[..], &v[..])),
        )))
    }

    fn restore(&mut self, data: &mut dyn std::io::Read) -> std::io::Result<()> {
        let num = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        let restored = pairs::decode(data)?
            .into_iter()
            .map(|(k, v)| (num(&k), num(&v)))
            .collect();
        *self.0.lock().unwrap() = restored;
        Ok(())
    }
}

type Members = Arc<Mutex<BTreeMap<u64, (Arc<Node>, Kv)>>>;

/// Fields drop in order: the nodes stop before their directory is removed.
struct Cluster {
    members: Members,
    net: MemNetwork,
    dir: tempfile::TempDir,
}

impl Cluster {
    fn path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}"))
    }

    fn start(&self, id: u64) {
        let storage = stores::open(&self.path(id));
        let kv = Kv::default();
        // Frequent snapshots and short trailing logs: restarted and partitioned nodes catch up
        // by snapshot, so installs are part of the checked history.
        let cfg = Config {
            tick: Duration::from_millis(10),
            snapshot_threshold: 25,
            trailing_entries: 5,
            ..Config::new(id, vec![1, 2, 3])
        };
        let node = Node::start(cfg, kv.clone(), storage, self.net.transport(id)).unwrap();
        self.net.connect(id, node.mailbox());
        self.members
            .lock()
            .unwrap()
            .insert(id, (Arc::new(node), kv));
    }

    fn crash(&self, id: u64) {
        self.net.disconnect(id);
        let m = self.members.lock().unwrap().remove(&id);
        if let Some((n, _)) = m {
            n.shutdown();
        }
    }

    fn pick(&self, r: u64) -> Option<(u64, Arc<Node>, Kv)> {
        let m = self.members.lock().unwrap();
        let ids: Vec<u64> = m.keys().copied().collect();
        let id = *ids.get(r as usize % ids.len().max(1))?;
        let (n, kv) = &m[&id];
        Some((id, n.clone(), kv.clone()))
    }

    fn node(&self, id: u64) -> Option<(Arc<Node>, Kv)> {
        self.members.lock().unwrap().get(&id).cloned()
    }
}

/// The state machine's command: `key = value`.
fn set(key: u64, value: u64) -> Vec<u8> {
    let mut cmd = key.to_le_bytes().to_vec();
    cmd.extend_from_slice(&value.to_le_bytes());
    cmd
}

fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

#[test]
fn history_under_partitions_and_crashes_is_linearizable() {
    let c = Arc::new(Cluster {
        dir: tempfile::tempdir().unwrap(),
        net: MemNetwork::new(),
        members: Arc::default(),
    });
    for id in 1..=3 {
        c.start(id);
    }
    // Messages are also lost, duplicated and reordered throughout.
    c.net.set_faults(raftwal_glue::NetFaults {
        drop: 0.05,
        duplicate: 0.05,
        reorder: 0.1,
        delay: 0.05,
        max_delay: Duration::from_millis(30),
        seed: 3,
    });
    let t0 = Instant::now();
    let now = move || t0.elapsed().as_micros() as u64;
    let history = Arc::new(Mutex::new(Vec::<lin::Event>::new()));
    let run_for = Duration::from_secs(4);

    let clients: Vec<_> = (0..3u64)
        .map(|client| {
            let (c, history) = (c.clone(), history.clone());
            std::thread::spawn(move || {
                let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (client + 1);
                let mut n = 0u64;
                while t0.elapsed() < run_for {
                    let key = rng(&mut seed) % 8;
                    let Some((_, node, kv)) = c.pick(rng(&mut seed)) else {
                        continue;
                    };
                    let call = now();
                    if rng(&mut seed).is_multiple_of(2) {
                        n += 1;
                        let value = client * 1_000_000 + n;
                        let cmd = set(key, value);
                        // Follow leader hints within one operation.
                        let mut target = node;
                        let outcome = loop {
                            match target.apply(cmd.clone(), Duration::from_millis(500)) {
                                Ok(_) => break Some(Some(now())),
                                Err(NodeError::NotLeader {
                                    leader_hint: Some(h),
                                }) if t0.elapsed() < run_for => match c.node(h) {
                                    Some((n, _)) => target = n,
                                    None => break None,
                                },
                                // Never proposed, or dropped by Raft: no effect.
                                Err(NodeError::NotLeader { .. } | NodeError::Dropped) => {
                                    break None
                                }
                                // May or may not have committed.
                                Err(_) => break Some(None),
                            }
                        };
                        if let Some(ret) = outcome {
                            history.lock().unwrap().push(lin::Event {
                                key,
                                op: lin::Op::Write(value),
                                call,
                                ret,
                            });
                        }
                    } else if node.read_index(Duration::from_millis(500)).is_ok() {
                        let v = kv.0.lock().unwrap().get(&key).copied();
                        history.lock().unwrap().push(lin::Event {
                            key,
                            op: lin::Op::Read(v),
                            call,
                            ret: Some(now()),
                        });
                    }
                }
            })
        })
        .collect();

    // The nemesis.
    let mut seed = 42u64;
    let mut down: Option<u64> = None;
    while t0.elapsed() < run_for {
        std::thread::sleep(Duration::from_millis(250));
        match rng(&mut seed) % 4 {
            0 => {
                let id = rng(&mut seed) % 3 + 1;
                let others: Vec<u64> = (1..=3).filter(|&i| i != id).collect();
                c.net.partition(&[id], &others);
            }
            1 => c.net.heal(),
            2 if down.is_none() => {
                let id = rng(&mut seed) % 3 + 1;
                c.crash(id);
                down = Some(id);
            }
            _ => {
                if let Some(id) = down.take() {
                    c.start(id);
                }
            }
        }
    }
    for cl in clients {
        cl.join().unwrap();
    }
    c.net.heal();
    c.net.set_faults(raftwal_glue::NetFaults::default());
    if let Some(id) = down {
        c.start(id);
    }

    // Final reads through a settled leader: every acknowledged write must be visible.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leader = loop {
        let l = (1..=3).find(|&id| {
            c.node(id).is_some_and(|(n, _)| {
                n.role() == Role::Leader && n.barrier(Duration::from_secs(2)).is_ok()
            })
        });
        if let Some(l) = l {
            break l;
        }
        assert!(Instant::now() < deadline, "no leader after healing");
        std::thread::sleep(Duration::from_millis(20));
    };
    // Every run installs a snapshot: a follower that misses more than a snapshot's worth of
    // writes (with the log compacted behind it) catches up by one. The writes are part of the
    // history.
    let (node, kv) = c.node(leader).unwrap();
    let lagging = (1..=3).find(|&id| id != leader).unwrap();
    c.crash(lagging);
    for n in 1..=60u64 {
        let key = n % 8;
        let value = 9_000_000 + n;
        let call = now();
        node.apply(set(key, value), Duration::from_secs(10))
            .unwrap();
        history.lock().unwrap().push(lin::Event {
            key,
            op: lin::Op::Write(value),
            call,
            ret: Some(now()),
        });
    }
    c.start(lagging);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.net.stats().snapshots == 0 {
        assert!(
            Instant::now() < deadline,
            "the lagging node got no snapshot"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for key in 0..8 {
        let call = now();
        node.read_index(Duration::from_secs(5)).unwrap();
        let v = kv.0.lock().unwrap().get(&key).copied();
        history.lock().unwrap().push(lin::Event {
            key,
            op: lin::Op::Read(v),
            call,
            ret: Some(now()),
        });
    }
    let h = history.lock().unwrap().clone();
    let acked = h
        .iter()
        .filter(|e| matches!(e.op, lin::Op::Write(_)) && e.ret.is_some())
        .count();
    assert!(
        acked > 10,
        "too few acknowledged writes ({acked}) for a meaningful check"
    );
    eprintln!("{acked} acknowledged writes; network: {:?}", c.net.stats());
    if let Err(key) = lin::check(&h) {
        let mut ops: Vec<_> = h.iter().filter(|e| e.key == key).collect();
        ops.sort_by_key(|e| e.call);
        panic!("key {key} is not linearizable: {ops:#?}");
    }
}
