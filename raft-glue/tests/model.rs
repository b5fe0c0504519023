//! `RaftStorage` against a model under random sequences of what a Raft node does to its log:
//! append rounds (overwriting a conflicting tail), snapshot + compaction, installing a leader's
//! snapshot, and restarts (which empty the adapter's caches). After every step the adapter must
//! answer `first_index`, `last_index`, `term`, `entries` and the snapshot mark exactly as the
//! model does — which also checks that its in-memory tail cache never disagrees with the log.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "support/stores.rs"]
mod stores;

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use raft::eraftpb::{Entry, HardState, SnapshotMetadata};
use raft::{GetEntriesContext, Storage};
use raftwal_glue::RaftStorage;
use raftwal_snapshot::FileSnapshotStore;
use raftwal_wal::{Wal, WalOptions};
use stores::put_snapshot;

#[derive(Debug, Clone)]
enum Op {
    /// A round: `n` entries starting `back` entries before the end (a conflicting tail is
    /// overwritten), in the current term, or a new one.
    Append { back: u64, n: u64, new_term: bool },
    /// A snapshot `back` entries before the end, then compaction keeping `keep` entries.
    Snapshot { back: u64, keep: u64 },
    /// A leader's snapshot `ahead` entries past the end, installed.
    Install { ahead: u64 },
    /// Restart: the adapter is opened again from disk.
    Reopen,
}

fn arb_op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..4u64, 1..20u64, proptest::bool::weighted(0.2))
            .prop_map(|(back, n, new_term)| Op::Append { back, n, new_term }),
        2 => (0..10u64, 0..8u64).prop_map(|(back, keep)| Op::Snapshot { back, keep }),
        1 => (0..5u64).prop_map(|ahead| Op::Install { ahead }),
        1 => Just(Op::Reopen),
    ]
}

#[derive(Debug, Default)]
struct Model {
    /// index → term.
    log: BTreeMap<u64, u64>,
    mark: (u64, u64),
    /// The last entry compacted away (its term stays known).
    compacted: (u64, u64),
    term: u64,
}

impl Model {
    fn first(&self) -> u64 {
        self.log.keys().next().copied().unwrap_or(self.mark.0 + 1)
    }
    fn last(&self) -> u64 {
        self.log.keys().next_back().copied().unwrap_or(self.mark.0)
    }
}

type Store = RaftStorage<Wal, FileSnapshotStore>;

fn open(dir: &Path) -> Store {
    let wal = Wal::open(dir.join("wal"), WalOptions::default().segment_size(8 << 10)).unwrap();
    RaftStorage::new(wal, FileSnapshotStore::open(dir.join("snap"), 2).unwrap())
}

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("e{index}t{term}").into_bytes().into(),
        ..Default::default()
    }
}

fn step(s: &mut Option<Store>, m: &mut Model, op: &Op, dir: &Path) {
    if let Op::Reopen = op {
        // The WAL is locked while open: close it, then open it again.
        *s = None;
        *s = Some(open(dir));
        return;
    }
    let Some(s) = s.as_ref() else {
        return;
    };
    match *op {
        Op::Append { back, n, new_term } => {
            if new_term || m.term == 0 {
                m.term += 1;
            }
            // Raft never overwrites what a snapshot covers (it is committed).
            let lo = (m.last() + 1)
                .saturating_sub(back)
                .max(m.first())
                .max(m.mark.0 + 1);
            let entries: Vec<Entry> = (lo..lo + n).map(|i| entry(i, m.term)).collect();
            let hs = HardState {
                term: m.term,
                commit: m.mark.0,
                ..Default::default()
            };
            s.append(&entries, Some(&hs)).unwrap();
            m.log.retain(|i, _| *i < lo);
            m.log.extend(entries.iter().map(|e| (e.index, e.term)));
        }
        Op::Snapshot { back, keep } => {
            let at = m.last().saturating_sub(back);
            let Some(&term) = m.log.get(&at) else {
                return;
            };
            if at <= m.mark.0 {
                return;
            }
            put_snapshot(s.snapshots(), at, term).unwrap();
            let upto = at.saturating_sub(keep);
            s.compact(at, term, upto).unwrap();
            if let Some(&t) = m.log.get(&upto).filter(|_| upto >= m.first()) {
                m.compacted = (upto, t);
            }
            m.mark = (at, term);
            m.log.retain(|i, _| *i > upto);
        }
        Op::Install { ahead } => {
            m.term += 1;
            let index = m.last() + 1 + ahead;
            put_snapshot(s.snapshots(), index, m.term).unwrap();
            let mut meta = SnapshotMetadata {
                index,
                term: m.term,
                ..Default::default()
            };
            meta.mut_conf_state().voters = vec![1];
            s.apply_snapshot(&meta).unwrap();
            m.mark = (index, m.term);
            m.log.clear();
        }
        Op::Reopen => {}
    }
}

fn check(s: &Store, m: &Model, after: &Op) {
    let at = format!("after {after:?}");
    assert_eq!(s.snapshot_mark().unwrap(), m.mark, "{at}: mark");
    assert_eq!(s.first_index().unwrap(), m.first(), "{at}: first");
    assert_eq!(s.last_index().unwrap(), m.last(), "{at}: last");
    if m.mark.0 > 0 {
        assert_eq!(
            s.term(m.mark.0).unwrap(),
            m.mark.1,
            "{at}: term at the mark"
        );
    }
    for (&i, &t) in &m.log {
        assert_eq!(s.term(i).unwrap(), t, "{at}: term({i})");
    }
    let (first, last) = (m.first(), m.last());
    if first <= last {
        let got = s
            .entries(first, last + 1, None, GetEntriesContext::empty(false))
            .unwrap();
        let want: Vec<Entry> = m.log.iter().map(|(&i, &t)| entry(i, t)).collect();
        assert_eq!(got, want, "{at}: entries");
        // A size limit still returns at least one entry, a prefix of the range.
        let one = s
            .entries(first, last + 1, Some(0), GetEntriesContext::empty(false))
            .unwrap();
        assert_eq!(one, want[..1], "{at}: entries with a size limit");
    }
    // Just below the first entry: the mark's term, the compaction point's, or compacted.
    if first > 1 && first - 1 != m.mark.0 {
        if first - 1 == m.compacted.0 {
            assert_eq!(
                s.term(first - 1).unwrap(),
                m.compacted.1,
                "{at}: term at the compaction point"
            );
        } else {
            assert!(
                s.term(first - 1).is_err(),
                "{at}: term({}) is compacted",
                first - 1
            );
        }
    }
}

fn run(ops: &[Op]) {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Some(open(dir.path()));
    let mut m = Model::default();
    for op in ops {
        step(&mut s, &mut m, op, dir.path());
        check(s.as_ref().unwrap(), &m, op);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn raft_storage_matches_model(ops in proptest::collection::vec(arb_op(), 1..60)) {
        run(&ops);
    }
}
