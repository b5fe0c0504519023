//! The world a chaos run acts on: the members, their disks, the network, the history; and
//! every action of the nemesis and the clients.

use super::*;

pub(super) enum Disk {
    Real(PathBuf),
    Sim(SimVfs),
}

pub(super) struct Member {
    node: Arc<Node>,
    kv: Kv,
}

/// The cluster and what the clients saw.
pub struct World {
    pub(super) p: Params,
    pub(super) net: MemNetwork,
    pub(super) members: Mutex<BTreeMap<u64, Member>>,
    /// Nodes crashed and not yet restarted.
    pub(super) down: Mutex<BTreeSet<u64>>,
    /// Nodes whose storage was made to fail: they may stop.
    pub(super) faulted: Mutex<BTreeSet<u64>>,
    pub(super) disks: Mutex<BTreeMap<u64, Disk>>,
    pub(super) history: Mutex<Vec<lin::Event>>,
    /// `(index, key, value)` of acknowledged writes.
    pub(super) acked: Mutex<Vec<(u64, u64, u64)>>,
    pub(super) lease_reads: AtomicU64,
    /// How often each fault took effect (not just was tried).
    pub(super) effects: Mutex<BTreeMap<&'static str, usize>>,
    pub(super) next_id: AtomicU64,
    pub(super) t0: Instant,
    pub(super) dir: tempfile::TempDir,
}

impl World {
    pub(super) fn new(p: Params) -> Self {
        World {
            p,
            net: MemNetwork::new(),
            members: Mutex::default(),
            down: Mutex::default(),
            faulted: Mutex::default(),
            disks: Mutex::default(),
            history: Mutex::default(),
            acked: Mutex::default(),
            lease_reads: AtomicU64::new(0),
            effects: Mutex::default(),
            next_id: AtomicU64::new(4),
            t0: Instant::now(),
            dir: tempfile::tempdir().expect("a temporary directory"),
        }
    }

    pub(super) fn now(&self) -> u64 {
        self.t0.elapsed().as_micros() as u64
    }

    pub(super) fn config(&self, id: u64, peers: Vec<u64>) -> Config {
        Config {
            tick: self.p.tick,
            snapshot_threshold: 40,
            trailing_entries: 8,
            ..Config::new(id, peers)
        }
    }

    pub(super) fn storage(&self, id: u64) -> RaftStorage<Wal, FileSnapshotStore> {
        let mut disks = lock(&self.disks);
        let disk = disks.entry(id).or_insert_with(|| {
            if self.p.sim {
                Disk::Sim(SimVfs::new(self.p.seed ^ (id << 32)))
            } else {
                Disk::Real(self.dir.path().join(format!("n{id}")))
            }
        });
        let (root, vfs): (PathBuf, Arc<dyn Vfs>) = match disk {
            Disk::Real(p) => (p.clone(), Arc::new(StdVfs)),
            Disk::Sim(v) => (PathBuf::from(format!("/n{id}")), Arc::new(v.process())),
        };
        let wal = Wal::open(
            root.join("wal"),
            WalOptions::default()
                .segment_size(64 << 10)
                .vfs(vfs.clone()),
        )
        .expect("open the WAL");
        let snaps = FileSnapshotStore::open_with(root.join("snapshots"), 1, vfs)
            .expect("open the snapshot store");
        RaftStorage::new(wal, snaps)
    }

    /// Starts (or restarts) node `id`.
    pub(super) fn start(&self, id: u64, peers: Vec<u64>) {
        let kv = Kv::default();
        let node = Node::start(
            self.config(id, peers),
            kv.clone(),
            self.storage(id),
            self.net.transport(id),
        )
        .unwrap_or_else(|e| panic!("node {id} does not start: {e}"));
        self.net.connect(id, node.mailbox());
        lock(&self.members).insert(
            id,
            Member {
                node: Arc::new(node),
                kv,
            },
        );
        lock(&self.down).remove(&id);
    }

    /// Crashes node `id`: a power cut on the simulated disk, a stop on the real one.
    pub(super) fn crash(&self, id: u64, rng: &mut Rng) {
        self.net.disconnect(id);
        let m = lock(&self.members).remove(&id);
        if let Some(m) = &m {
            self.check_stop(id, &m.node);
        }
        if let Some(Disk::Sim(v)) = lock(&self.disks).get(&id) {
            let policy = if rng.below(2) == 0 {
                CrashPolicy::DropAll
            } else {
                CrashPolicy::Random(rng.next())
            };
            v.crash(policy);
            // The power cut cleared the disk's faults: the restarted node has no excuse.
            lock(&self.faulted).remove(&id);
        }
        if let Some(m) = m {
            m.node.shutdown();
        }
        lock(&self.down).insert(id);
    }

    /// A node that stopped on its own must have had a storage fault injected.
    pub(super) fn check_stop(&self, id: u64, node: &Node) {
        let s = node.status();
        assert!(
            !s.stopped || lock(&self.faulted).contains(&id),
            "node {id} stopped without a storage fault: {s:?}"
        );
        if s.stopped {
            self.did("node stopped by a storage fault");
        }
    }

    pub(super) fn node(&self, id: u64) -> Option<(Arc<Node>, Kv)> {
        lock(&self.members)
            .get(&id)
            .map(|m| (m.node.clone(), m.kv.clone()))
    }

    pub(super) fn live(&self) -> Vec<u64> {
        lock(&self.members).keys().copied().collect()
    }

    pub(super) fn leader(&self) -> Option<u64> {
        let ls: Vec<u64> = lock(&self.members)
            .iter()
            .filter(|(_, m)| m.node.role() == Role::Leader)
            .map(|(id, _)| *id)
            .collect();
        // With several (a deposed one not yet told), the one of the highest term.
        ls.into_iter()
            .max_by_key(|id| self.node(*id).map_or(0, |(n, _)| n.status().term))
    }

    /// The configuration as the leader knows it.
    pub(super) fn membership(&self) -> Option<(Vec<u64>, Vec<u64>, Vec<u64>)> {
        let (n, _) = self.node(self.leader()?)?;
        let s = n.status();
        Some((s.voters, s.voters_outgoing, s.learners))
    }

    /// Counts one fault that took effect.
    pub(super) fn did(&self, what: &'static str) {
        *lock(&self.effects).entry(what).or_default() += 1;
    }

    pub(super) fn record(&self, e: lin::Event) {
        lock(&self.history).push(e);
    }

    /// One client: writes and reads until `stop`.
    pub(super) fn client(&self, client: u64, stop: &AtomicBool) {
        let mut rng = Rng::new(self.p.seed ^ (client + 1) << 8);
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            let key = rng.below(self.p.keys);
            let Some(start) = rng.pick(&self.live()) else {
                std::thread::sleep(Duration::from_millis(2));
                continue;
            };
            let call = self.now();
            if rng.below(2) == 0 {
                n += 1;
                let value = (client << 40) | n;
                self.write(start, key, value, call);
            } else {
                self.read(start, key, call, rng.below(2) == 0);
            }
        }
    }

    pub(super) fn write(&self, start: u64, key: u64, value: u64, call: u64) {
        let mut target = start;
        let timeout = Duration::from_millis(250);
        for _ in 0..4 {
            let Some((node, _)) = self.node(target) else {
                break;
            };
            match node.apply(command(key, value), timeout) {
                Ok(a) => {
                    assert_eq!(a.response, command(key, value), "answered by another entry");
                    lock(&self.acked).push((a.index, key, value));
                    self.record(lin::Event {
                        key,
                        op: lin::Op::Write(value),
                        call,
                        ret: Some(self.now()),
                    });
                    return;
                }
                Err(NodeError::NotLeader {
                    leader_hint: Some(h),
                }) => target = h,
                // Never appended: no effect.
                Err(
                    NodeError::NotLeader { .. }
                    | NodeError::Dropped
                    | NodeError::ConfChangeInProgress
                    | NodeError::TooLarge { .. }
                    | NodeError::Busy,
                ) => return,
                // May or may not have committed.
                Err(_) => break,
            }
        }
        // Nothing was appended if the first call never got through; otherwise unknown. An
        // unknown write may take effect at any time after its call.
        self.record(lin::Event {
            key,
            op: lin::Op::Write(value),
            call,
            ret: None,
        });
    }

    pub(super) fn read(&self, start: u64, key: u64, call: u64, lease: bool) {
        let Some((node, kv)) = self.node(start) else {
            return;
        };
        let timeout = Duration::from_millis(250);
        let ok = if lease {
            match node.lease_read(timeout) {
                Ok(p) => {
                    if p.via == ReadVia::Lease {
                        self.lease_reads.fetch_add(1, Ordering::SeqCst);
                    }
                    true
                }
                Err(_) => false,
            }
        } else {
            node.read_index(timeout).is_ok()
        };
        if ok {
            self.record(lin::Event {
                key,
                op: lin::Op::Read(kv.get(key)),
                call,
                ret: Some(self.now()),
            });
        }
    }

    /// The number of kinds of nemesis action.
    pub(super) fn kinds(&self) -> u64 {
        if self.p.sim {
            11
        } else {
            10
        }
    }

    /// One nemesis action (of kind `choice`, or a random one); returns what it did.
    pub(super) fn act(&self, rng: &mut Rng, choice: Option<u64>) -> String {
        let live = self.live();
        let leader = self.leader();
        let forced = choice.is_some();
        let choice = choice.unwrap_or_else(|| rng.below(self.kinds()));
        match choice {
            0 => {
                let Some(x) = rng.pick(&live) else {
                    return "nothing".into();
                };
                let rest: Vec<u64> = live.iter().copied().filter(|&i| i != x).collect();
                self.net.partition(&[x], &rest);
                self.did("partition");
                format!("partition {x}")
            }
            1 => {
                let (Some(a), Some(b)) = (rng.pick(&live), rng.pick(&live)) else {
                    return "nothing".into();
                };
                if a != b {
                    self.net.cut(a, b);
                    self.did("one-way cut");
                }
                format!("cut {a} -> {b}")
            }
            2 => {
                self.net.heal();
                "heal".into()
            }
            3 => {
                // Never more than one node down at a time.
                if !lock(&self.down).is_empty() {
                    return self.restart_down();
                }
                let Some(x) = rng.pick(&live) else {
                    return "nothing".into();
                };
                self.crash(x, rng);
                self.did("crash");
                format!("crash {x}")
            }
            4 => self.restart_down(),
            5 => {
                // A follower restarts at once (it must keep its vote promise).
                let followers: Vec<u64> = live
                    .iter()
                    .copied()
                    .filter(|&i| Some(i) != leader)
                    .collect();
                let Some(f) = rng.pick(&followers) else {
                    return "nothing".into();
                };
                self.crash(f, rng);
                self.restart(f);
                self.did("follower restarted");
                format!("restart follower {f}")
            }
            6 => {
                let (Some(l), Some((voters, _, _))) = (leader, self.membership()) else {
                    return "nothing".into();
                };
                let others: Vec<u64> = voters.iter().copied().filter(|&v| v != l).collect();
                let Some(to) = rng.pick(&others) else {
                    return "nothing".into();
                };
                let r = self
                    .node(l)
                    .map(|(n, _)| n.transfer_leadership(to, Duration::from_millis(300)));
                if matches!(r, Some(Ok(_))) {
                    self.did("leadership transferred");
                }
                format!("transfer {l} -> {to}: {r:?}")
            }
            // The tour's replacement always tries to crash a node while joint.
            7 => {
                let crash_in_joint = forced || rng.below(2) == 0;
                self.replace_voter(rng, crash_in_joint)
            }
            8 => self.remove_leader(),
            9 => {
                // The leader is cut off the moment it next sends one kind of message.
                let Some(l) = leader else {
                    return "nothing".into();
                };
                let t = [
                    MessageType::MsgAppend,
                    MessageType::MsgHeartbeat,
                    MessageType::MsgTimeoutNow,
                ][rng.below(3) as usize];
                let rest: Vec<u64> = live.iter().copied().filter(|&i| i != l).collect();
                self.net.partition_on(Route::from(l, t), &[l], &rest);
                format!("partition {l} on its next {t:?}")
            }
            _ => {
                let Some(x) = rng.pick(&live) else {
                    return "nothing".into();
                };
                if let Some(Disk::Sim(v)) = lock(&self.disks).get(&x) {
                    v.set_faults(SimFaults {
                        fail_sync_at: Some(1 + rng.below(3)),
                        ..Default::default()
                    });
                }
                lock(&self.faulted).insert(x);
                self.did("fsync fault armed");
                format!("fail an fsync on {x}")
            }
        }
    }

    pub(super) fn restart(&self, id: u64) {
        let peers = if id <= 3 { vec![1, 2, 3] } else { vec![] };
        self.start(id, peers);
    }

    pub(super) fn restart_down(&self) -> String {
        let down: Vec<u64> = lock(&self.down).iter().copied().collect();
        for &id in &down {
            self.restart(id);
        }
        format!("restart {down:?}")
    }

    /// Joint consensus: a fresh node replaces a voter; with `crash_in_joint`, a node is
    /// crashed and restarted once the configuration is seen joint (if it is seen).
    pub(super) fn replace_voter(&self, rng: &mut Rng, crash_in_joint: bool) -> String {
        let (Some(l), Some((voters, outgoing, _))) = (self.leader(), self.membership()) else {
            return "nothing".into();
        };
        if !outgoing.is_empty() {
            return "nothing (joint)".into();
        }
        let new = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.start(new, vec![]);
        if voters.len() < 3 {
            return format!("add {new}: {:?}", self.add_voter(new));
        }
        let Some(out) = rng.pick(&voters) else {
            return "nothing".into();
        };
        let Some((node, _)) = self.node(l) else {
            return "nothing".into();
        };
        let victim = rng.pick(&voters);
        let r = std::thread::scope(|s| {
            let change = s.spawn(|| {
                node.change_membership(
                    &[Membership::AddVoter(new), Membership::Remove(out)],
                    self.p.tick * 200,
                )
            });
            if crash_in_joint {
                let joint = (0..200).any(|_| {
                    std::thread::sleep(Duration::from_millis(2));
                    self.membership().is_some_and(|m| !m.1.is_empty())
                });
                if let Some(v) = victim.filter(|_| joint) {
                    let mut r2 = Rng::new(rng.next());
                    self.crash(v, &mut r2);
                    self.restart(v);
                    self.did("crash while joint");
                }
            }
            change.join().unwrap_or(Err(NodeError::Shutdown))
        });
        if r.is_ok() {
            self.retire(out);
            self.did("voter replaced jointly");
        }
        format!("replace {out} by {new} (crash in joint: {crash_in_joint}): {r:?}")
    }

    /// The leader removes itself; a fresh node takes its place.
    pub(super) fn remove_leader(&self) -> String {
        let (Some(l), Some((voters, _, _))) = (self.leader(), self.membership()) else {
            return "nothing".into();
        };
        let Some((node, _)) = self.node(l) else {
            return "nothing".into();
        };
        if voters.len() < 3 {
            return "nothing (too few voters)".into();
        }
        let r = node.remove_server(l, self.p.tick * 200);
        if r.is_ok() {
            self.retire(l);
            self.did("leader removed itself");
        }
        let new = self.next_id.fetch_add(1, Ordering::SeqCst);
        self.start(new, vec![]);
        format!(
            "leader {l} removes itself: {r:?}; {new} added: {:?}",
            self.add_voter(new)
        )
    }

    /// Adds `new` as a voter through whoever leads, retrying for a while.
    pub(super) fn add_voter(&self, new: u64) -> Result<u64, NodeError> {
        let deadline = Instant::now() + self.p.tick * 300;
        loop {
            let r = match self.leader().and_then(|l| self.node(l)) {
                Some((n, _)) => n.add_voter(new, self.p.tick * 200),
                None => Err(NodeError::NotLeader { leader_hint: None }),
            };
            if r.is_ok() || Instant::now() >= deadline {
                return r;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops node `id` for good: it was removed from the cluster.
    pub(super) fn retire(&self, id: u64) {
        self.net.disconnect(id);
        let m = lock(&self.members).remove(&id);
        if let Some(m) = m {
            self.check_stop(id, &m.node);
            m.node.shutdown();
        }
        lock(&self.down).remove(&id);
    }

    /// Stops for good every node outside `members` (a configuration the leader has applied).
    pub(super) fn retire_non_members(&self, members: &[u64]) {
        let gone: Vec<u64> = self
            .live()
            .into_iter()
            .chain(lock(&self.down).iter().copied())
            .filter(|id| !members.contains(id))
            .collect();
        for id in gone {
            self.retire(id);
        }
    }

    /// Heals everything and waits for a settled cluster: a leader, no joint configuration,
    /// every member running and having applied the same log.
    pub(super) fn settle(&self) -> u64 {
        self.net.release();
        self.net.heal();
        self.net.set_faults(NetFaults::default());
        for v in lock(&self.disks).values() {
            if let Disk::Sim(v) = v {
                v.set_faults(SimFaults::default());
            }
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut next_log = Instant::now();
        loop {
            if std::env::var("RAFTWAL_CHAOS_LOG").is_ok() && Instant::now() >= next_log {
                next_log += Duration::from_secs(1);
                eprintln!("settling: {}", self.describe());
            }
            assert!(
                Instant::now() < deadline,
                "the cluster never settled: {}",
                self.describe()
            );
            // Stopped nodes (only after an injected fault) and crashed ones come back.
            for id in self.live() {
                if self.node(id).is_some_and(|(n, _)| n.status().stopped) {
                    self.crash(id, &mut Rng::new(id));
                }
            }
            self.restart_down();
            std::thread::sleep(Duration::from_millis(20));
            let Some(l) = self.leader() else { continue };
            let Some((ln, lkv)) = self.node(l) else {
                continue;
            };
            if ln.barrier(Duration::from_secs(1)).is_err() {
                continue;
            }
            // The barrier applied everything committed before it: the configuration is current.
            let s = ln.status();
            if !s.voters_outgoing.is_empty() {
                continue;
            }
            let members: Vec<u64> = s.voters.iter().chain(&s.learners).copied().collect();
            self.retire_non_members(&members);
            let want = lkv.applied();
            let all_there = members.iter().all(|&id| {
                self.node(id)
                    .is_some_and(|(n, kv)| n.status().applied == s.applied && kv.applied() == want)
            });
            if all_there {
                return l;
            }
        }
    }

    pub(super) fn describe(&self) -> String {
        let mut out = String::new();
        for id in self.live() {
            if let Some((n, _)) = self.node(id) {
                out += &format!("\n  {:?}", n.status());
            }
        }
        out += &format!("\n  down: {:?}", lock(&self.down));
        out
    }

    /// The applied logs agree: on each node at most once per command, indexes increasing; all
    /// nodes the same command at the same index; every acknowledged write where acknowledged.
    pub(super) fn check_logs(&self, leader: u64) {
        let mut at: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
        for id in self.live() {
            let Some((_, kv)) = self.node(id) else {
                continue;
            };
            let applied = kv.applied();
            let mut seen = BTreeSet::new();
            for w in applied.windows(2) {
                assert!(w[0].0 < w[1].0, "node {id} applied out of order: {w:?}");
            }
            for &(i, k, v) in &applied {
                assert!(seen.insert((k, v)), "node {id} applied {k}={v} twice");
                if let Some(prev) = at.insert(i, (k, v)) {
                    assert_eq!(prev, (k, v), "nodes disagree at index {i}");
                }
            }
        }
        let (_, lkv) = self.node(leader).expect("the leader runs");
        let log: BTreeMap<u64, (u64, u64)> = lkv
            .applied()
            .into_iter()
            .map(|(i, k, v)| (i, (k, v)))
            .collect();
        for &(i, k, v) in lock(&self.acked).iter() {
            assert_eq!(
                log.get(&i),
                Some(&(k, v)),
                "the write {k}={v} acknowledged at index {i} is not there"
            );
        }
    }
}
