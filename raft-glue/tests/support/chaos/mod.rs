//! A cluster under a seeded nemesis, with clients recording a history.
//!
//! Clients write (`key = value`, every value unique) and read (read-index or lease reads)
//! through random live nodes, following leader hints. The nemesis, driven by the seed,
//! partitions nodes (both ways or one way), crashes and restarts them (a power cut on the
//! simulated disk), restarts followers, transfers leadership, replaces voters by joint
//! consensus (crashing nodes while the configuration is joint), makes the leader remove
//! itself, and fails fsyncs (simulated disk only).
//!
//! After the run the network heals, every member restarts, and the checks are:
//! - no node stopped, except after an injected storage fault;
//! - every node applied each command at most once, in log order, and all agree on what is at
//!   each index; once settled, every member applied the same log;
//! - every acknowledged write is in that log at the index it was acknowledged with;
//! - the history of writes, read-index reads and lease reads is linearizable.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use raftwal_glue::raft::eraftpb::MessageType;
use raftwal_glue::{
    Config, MemNetwork, Membership, NetFaults, Node, NodeError, RaftStorage, ReadVia, Role, Route,
    StateMachine, StateSnapshot,
};
use raftwal_snapshot::FileSnapshotStore;
use raftwal_wal::vfs::{CrashPolicy, SimFaults, SimVfs, StdVfs, Vfs};
use raftwal_wal::{Wal, WalOptions};

use crate::lin;
use crate::pairs;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub use raftwal_testkit::Rng;

/// The state machine: registers, and every command applied with its index.
#[derive(Clone, Default)]
pub struct Kv(Arc<Mutex<KvState>>);

#[derive(Default)]
pub struct KvState {
    pub map: BTreeMap<u64, u64>,
    /// `(index, key, value)` of every command applied, in order.
    pub applied: Vec<(u64, u64, u64)>,
}

fn command(key: u64, value: u64) -> Vec<u8> {
    let mut c = key.to_le_bytes().to_vec();
    c.extend_from_slice(&value.to_le_bytes());
    c
}

fn num(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))
}

impl Kv {
    pub fn get(&self, key: u64) -> Option<u64> {
        lock(&self.0).map.get(&key).copied()
    }
    pub fn applied(&self) -> Vec<(u64, u64, u64)> {
        lock(&self.0).applied.clone()
    }
}

impl StateMachine for Kv {
    fn apply(&mut self, index: u64, cmd: &[u8]) -> Vec<u8> {
        if cmd.len() == 16 {
            let (k, v) = (num(&cmd[..8]), num(&cmd[8..]));
            let mut s = lock(&self.0);
            s.map.insert(k, v);
            s.applied.push((index, k, v));
        }
        cmd.to_vec()
    }

    fn snapshot(&mut self) -> std::io::Result<Box<dyn StateSnapshot>> {
        let s = lock(&self.0);
        let rows: Vec<([u8; 8], [u8; 16])> = s
            .applied
            .iter()
            .map(|&(i, k, v)| {
                let mut kv = [0u8; 16];
                kv[..8].copy_from_slice(&k.to_le_bytes());
                kv[8..].copy_from_slice(&v.to_le_bytes());
                (i.to_le_bytes(), kv)
            })
            .collect();
        Ok(Box::new(pairs::encode(
            rows.iter().map(|(i, kv)| (&i[..], &kv[..])),
        )))
    }

    fn restore(&mut self, data: &mut dyn Read) -> std::io::Result<()> {
        let mut st = KvState::default();
        for (i, kv) in pairs::decode(data)? {
            let (k, v) = (num(&kv[..8]), num(&kv[8..]));
            st.map.insert(k, v);
            st.applied.push((num(&i), k, v));
        }
        *lock(&self.0) = st;
        Ok(())
    }
}

/// How a run goes.
#[derive(Debug, Clone)]
pub struct Params {
    pub seed: u64,
    pub clients: u64,
    pub keys: u64,
    /// How long clients run at least…
    pub duration: Duration,
    /// …and until the history holds this many events and each of these faults took effect
    /// (for at most a minute).
    pub min_events: usize,
    pub require: &'static [&'static str],
    /// The nemesis acts this often.
    pub every: Duration,
    /// On the simulated disk (power cuts, failed fsyncs) rather than the real one.
    pub sim: bool,
    /// Message faults throughout.
    pub faults: bool,
    pub tick: Duration,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub events: usize,
    pub acked: usize,
    pub lease_reads: usize,
    pub actions: Vec<String>,
    pub snapshots: u64,
    /// How often each fault took effect, by name (`World::did`, plus the network's
    /// partitions started by a message).
    pub effects: BTreeMap<&'static str, usize>,
    /// How long the linearizability check took.
    pub check_time: Duration,
}

impl Outcome {
    /// Adds another run's counts to these.
    pub fn add(&mut self, o: &Outcome) {
        self.events += o.events;
        self.acked += o.acked;
        self.lease_reads += o.lease_reads;
        self.snapshots += o.snapshots;
        self.check_time += o.check_time;
        for (k, v) in &o.effects {
            *self.effects.entry(k).or_default() += v;
        }
    }

    /// Panics unless each of `what` took effect at least once, writes were acknowledged and
    /// lease reads served by the lease.
    pub fn assert_covered(&self, what: &[&str]) {
        assert!(self.acked > 0, "no write was acknowledged: {self:?}");
        assert!(
            self.lease_reads > 0,
            "no read was served by the lease: {self:?}"
        );
        for w in what {
            assert!(
                self.effects.get(w).is_some_and(|&n| n > 0),
                "'{w}' never took effect: {:?}",
                self.effects
            );
        }
    }
}

mod world;
use world::World;

/// Every kind of fault a run can see take effect (`World::did`, and the network's counts);
/// with `sim`, also the simulated disk's.
pub fn fault_kinds(sim: bool) -> &'static [&'static str] {
    const ALL: &[&str] = &[
        "partition",
        "one-way cut",
        "message held back",
        "crash",
        "follower restarted",
        "leadership transferred",
        "voter replaced jointly",
        "crash while joint",
        "leader removed itself",
        "partition on a message",
        "snapshot installed",
        // Last: only on the simulated disk.
        "node stopped by a storage fault",
    ];
    if sim {
        ALL
    } else {
        &ALL[..ALL.len() - 1]
    }
}

/// The faults that took effect so far: the world's counts and the network's.
fn effects(w: &World) -> BTreeMap<&'static str, usize> {
    let mut effects = lock(&w.effects).clone();
    let stats = w.net.stats();
    for (what, n) in [
        ("partition on a message", stats.triggered),
        ("message held back", stats.held),
        ("snapshot installed", stats.snapshots),
    ] {
        if n > 0 {
            effects.insert(what, n as usize);
        }
    }
    effects
}

/// Runs one seeded schedule and checks it; panics with the seed and the actions on failure.
pub fn run(p: Params) -> Outcome {
    let w = World::new(p.clone());
    for id in 1..=3 {
        w.start(id, vec![1, 2, 3]);
    }
    if p.faults {
        w.net.set_faults(NetFaults {
            drop: 0.03,
            duplicate: 0.03,
            reorder: 0.05,
            delay: 0.03,
            max_delay: p.tick * 3,
            seed: p.seed,
        });
    }
    let stop = AtomicBool::new(false);
    let mut rng = Rng::new(p.seed);
    // Every kind of action once (in an order the seed shuffles), then at random.
    let mut tour: Vec<u64> = (0..w.kinds()).collect();
    for i in (1..tour.len()).rev() {
        tour.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let mut actions = Vec::new();
    let result = std::thread::scope(|s| {
        let clients: Vec<_> = (0..p.clients)
            .map(|c| {
                let (w, stop) = (&w, &stop);
                s.spawn(move || w.client(c, stop))
            })
            .collect();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let (end, cap) = (
                Instant::now() + p.duration,
                Instant::now() + Duration::from_secs(60),
            );
            let wanting = || {
                lock(&w.history).len() < p.min_events
                    || p.require.iter().any(|r| !effects(&w).contains_key(r))
            };
            while Instant::now() < end || (Instant::now() < cap && wanting()) {
                // A fault, then (every other step) a calm spell: links healed, holds released.
                std::thread::sleep(p.every);
                w.net.release();
                let a = if rng.below(2) == 0 {
                    w.net.heal();
                    "calm".to_string()
                } else if rng.below(6) == 0 {
                    // Hold back one kind of message for a while.
                    let t = [
                        MessageType::MsgAppendResponse,
                        MessageType::MsgHeartbeatResponse,
                        MessageType::MsgAppend,
                    ];
                    let held = t[rng.below(3) as usize];
                    w.net.hold(Route::of(held));
                    format!("hold {held:?}")
                } else {
                    let forced = tour.pop();
                    w.act(&mut rng, forced)
                };
                actions.push(format!("{:>6} ms: {a}", w.t0.elapsed().as_millis()));
                if std::env::var("RAFTWAL_CHAOS_LOG").is_ok() {
                    eprintln!(
                        "{} | events {} | leader {:?} conf {:?} down {:?}",
                        actions.last().map_or("", String::as_str),
                        lock(&w.history).len(),
                        w.leader(),
                        w.membership(),
                        lock(&w.down)
                    );
                }
            }
        }));
        stop.store(true, Ordering::SeqCst);
        w.net.release();
        for c in clients {
            let _ = c.join();
        }
        run
    });
    let check_time = Mutex::new(Duration::ZERO);
    let check = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        if let Err(e) = result {
            std::panic::resume_unwind(e);
        }
        let leader = w.settle();
        // Final reads through the settled leader: every acknowledged write must show.
        let (node, kv) = w.node(leader).expect("the leader runs");
        for key in 0..p.keys {
            let call = w.now();
            node.read_index(Duration::from_secs(5))
                .expect("a final read");
            w.record(lin::Event {
                key,
                op: lin::Op::Read(kv.get(key)),
                call,
                ret: Some(w.now()),
            });
        }
        w.check_logs(leader);
        let h = lock(&w.history).clone();
        let checking = Instant::now();
        let verdict = lin::check(&h);
        *lock(&check_time) = checking.elapsed();
        if let Err(key) = verdict {
            let mut ops: Vec<_> = h.iter().filter(|e| e.key == key).collect();
            ops.sort_by_key(|e| e.call);
            panic!("key {key} is not linearizable: {ops:#?}");
        }
    }));
    if let Err(e) = check {
        eprintln!(
            "seed {} failed (replay with RAFTWAL_SEED={}); actions:\n{}",
            p.seed,
            p.seed,
            actions.join("\n")
        );
        std::panic::resume_unwind(e);
    }
    let events = lock(&w.history).len();
    let acked = lock(&w.acked).len();
    let effects = effects(&w);
    let check_time = *lock(&check_time);
    Outcome {
        events,
        acked,
        lease_reads: w.lease_reads.load(Ordering::SeqCst) as usize,
        actions,
        snapshots: w.net.stats().snapshots,
        effects,
        check_time,
    }
}
