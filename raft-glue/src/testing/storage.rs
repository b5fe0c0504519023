//! A conformance suite for `raft::Storage` implementations: raft-rs 0.7's
//! own storage rules (its `MemStorage` tests, generalised where `MemStorage` makes a choice the
//! contract leaves open), each checked again after the storage is closed and reopened when
//! the implementation can be.
//!
//! Run it with [`check_storage`] and a [`StorageHarness`] (the storage plus a way to write into
//! it). Harnesses for raftwal's [`RaftStorage`] ([`RaftStorageHarness`], over any stores) and
//! for raft-rs's `MemStorage` ([`MemStorageHarness`]) are included.
//!
//! ```
//! use raftwal_glue::testing::{check_storage, MemStorageHarness};
//! let report = check_storage(MemStorageHarness::default);
//! assert!(report.reopened.is_empty()); // an in-memory storage cannot be reopened
//! ```

use std::panic::{catch_unwind, AssertUnwindSafe};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::storage::MemStorage;
use raft::{Error as RaftError, GetEntriesContext, Storage, StorageError};
use raftwal_snapshot::{SnapshotSink, SnapshotStore};
use raftwal_wal::BatchStore;

use crate::storage::{encode_conf_state, RaftStorage};

/// A storage under test and the writes a Raft node makes to it.
pub trait StorageHarness {
    /// The storage.
    type S: Storage;

    /// The storage as it is now.
    fn storage(&self) -> &Self::S;

    /// Makes a fresh storage hold exactly `entries` (contiguous, starting past 1): the entries
    /// before them are gone (compacted, or covered by a snapshot at the one just before).
    ///
    /// # Errors
    /// Any, as text; the suite stops.
    fn load(&mut self, entries: &[Entry]) -> Result<(), String>;

    /// Appends a round of entries, replacing any conflicting tail.
    ///
    /// # Errors
    /// Entries below the first index, or not continuing the log, must be refused.
    fn append(&mut self, entries: &[Entry]) -> Result<(), String>;

    /// Discards the entries before `index`.
    ///
    /// # Errors
    /// Past `last_index + 1` must be refused.
    fn compact(&mut self, index: u64) -> Result<(), String>;

    /// Installs a snapshot (its data, if the storage keeps any, made up by the harness).
    ///
    /// # Errors
    /// A snapshot older than the first index must be refused, changing nothing.
    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String>;

    /// Makes the storage able to serve a snapshot at `(index, term)` of configuration `conf`
    /// through [`Storage::snapshot`], as a node that took one would.
    ///
    /// # Errors
    /// Any, as text; the suite stops.
    fn make_snapshot(&mut self, index: u64, term: u64, conf: &ConfState) -> Result<(), String>;

    /// Closes the storage and opens it again from what it made durable; `false` if it cannot
    /// (an in-memory storage).
    fn reopen(&mut self) -> bool;
}

/// What [`check_storage`] checked.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Every rule, by name.
    pub rules: Vec<&'static str>,
    /// The rules also checked after a reopen.
    pub reopened: Vec<&'static str>,
}

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        ..Default::default()
    }
}

fn ents(terms: &[(u64, u64)]) -> Vec<Entry> {
    terms.iter().map(|&(i, t)| ent(i, t)).collect()
}

fn snap(index: u64, term: u64, voters: &[u64]) -> Snapshot {
    let mut s = Snapshot::default();
    s.mut_metadata().index = index;
    s.mut_metadata().term = term;
    s.mut_metadata().mut_conf_state().voters = voters.to_vec();
    s
}

fn all_entries<S: Storage>(s: &S) -> Vec<Entry> {
    let (first, last) = (s.first_index().unwrap_or(0), s.last_index().unwrap_or(0));
    if first > last {
        return Vec::new();
    }
    s.entries(first, last + 1, None, GetEntriesContext::empty(false))
        .unwrap_or_default()
}

fn size(e: &Entry) -> u64 {
    u64::from(e.compute_size())
}

/// The fixture of raft-rs's tests: entries 3, 4, 5 of terms 3, 4, 5.
const BASE: [(u64, u64); 3] = [(3, 3), (4, 4), (5, 5)];

struct Suite<'a, H, F> {
    new: &'a mut F,
    report: Report,
    _h: std::marker::PhantomData<H>,
}

impl<H: StorageHarness, F: FnMut() -> H> Suite<'_, H, F> {
    /// A storage holding `entries`.
    fn fixture(&mut self, rule: &str, entries: &[(u64, u64)]) -> H {
        let mut h = (self.new)();
        if !entries.is_empty() {
            h.load(&ents(entries))
                .unwrap_or_else(|e| panic!("{rule}: loading the fixture: {e}"));
        }
        h
    }

    /// Checks `observe` now, and again after a reopen if the storage supports it.
    fn check(
        &mut self,
        rule: &'static str,
        h: &mut H,
        observe: impl Fn(&H::S) -> Result<(), String>,
    ) {
        if let Err(e) = observe(h.storage()) {
            panic!("rule '{rule}' broken: {e}");
        }
        if !self.report.rules.contains(&rule) {
            self.report.rules.push(rule);
        }
        if h.reopen() {
            if let Err(e) = observe(h.storage()) {
                panic!("rule '{rule}' broken after a reopen: {e}");
            }
            if !self.report.reopened.contains(&rule) {
                self.report.reopened.push(rule);
            }
        }
    }

    fn term(&mut self) {
        let mut h = self.fixture("term", &BASE);
        self.check("term", &mut h, |s| {
            // raft-rs answers Compacted below the first index; remembering the term of the
            // entry just before it (2 here) is allowed too.
            match s.term(2) {
                Err(RaftError::Store(StorageError::Compacted)) | Ok(2) => {}
                other => return Err(format!("term(2) = {other:?}")),
            }
            for (i, t) in BASE {
                if s.term(i) != Ok(t) {
                    return Err(format!("term({i}) = {:?}, {t} expected", s.term(i)));
                }
            }
            match s.term(6) {
                Err(RaftError::Store(StorageError::Unavailable)) => Ok(()),
                other => Err(format!("term(6) = {other:?}, Unavailable expected")),
            }
        });
    }

    fn entries(&mut self) {
        let base = ents(&[(3, 3), (4, 4), (5, 5), (6, 6)]);
        let (s4, s5, s6) = (size(&base[1]), size(&base[2]), size(&base[3]));
        type Case = (u64, u64, u64, Result<Vec<Entry>, StorageError>);
        let cases: Vec<Case> = vec![
            (2, 6, u64::MAX, Err(StorageError::Compacted)),
            (3, 4, u64::MAX, Ok(ents(&[(3, 3)]))),
            (4, 5, u64::MAX, Ok(ents(&[(4, 4)]))),
            (4, 6, u64::MAX, Ok(ents(&[(4, 4), (5, 5)]))),
            (4, 7, u64::MAX, Ok(ents(&[(4, 4), (5, 5), (6, 6)]))),
            // Even with a limit of 0, the first entry is returned.
            (4, 7, 0, Ok(ents(&[(4, 4)]))),
            // The limit counts encoded entry sizes.
            (4, 7, s4 + s5, Ok(ents(&[(4, 4), (5, 5)]))),
            (4, 7, s4 + s5 + s6 / 2, Ok(ents(&[(4, 4), (5, 5)]))),
            (4, 7, s4 + s5 + s6 - 1, Ok(ents(&[(4, 4), (5, 5)]))),
            (4, 7, s4 + s5 + s6, Ok(ents(&[(4, 4), (5, 5), (6, 6)]))),
        ];
        let mut h = self.fixture("entries", &[(3, 3), (4, 4), (5, 5), (6, 6)]);
        self.check("entries", &mut h, |s| {
            for (lo, hi, max, want) in &cases {
                let got = s.entries(*lo, *hi, *max, GetEntriesContext::empty(false));
                let ok = match (&got, want) {
                    (Ok(g), Ok(w)) => g == w,
                    (Err(RaftError::Store(g)), Err(w)) => g == w,
                    _ => false,
                };
                if !ok {
                    return Err(format!(
                        "entries({lo}, {hi}, {max}) = {got:?}, {want:?} expected"
                    ));
                }
            }
            Ok(())
        });
    }

    fn last_index(&mut self) {
        let mut h = self.fixture("last_index", &BASE);
        self.check("last_index", &mut h, |s| {
            expect(s.last_index(), 5, "last_index")
        });
        h.append(&ents(&[(6, 5)]))
            .unwrap_or_else(|e| panic!("last_index: append: {e}"));
        self.check("last_index", &mut h, |s| {
            expect(s.last_index(), 6, "last_index")
        });
    }

    fn first_index(&mut self) {
        let mut h = self.fixture("first_index", &BASE);
        self.check("first_index", &mut h, |s| {
            expect(s.first_index(), 3, "first_index")
        });
        h.compact(4)
            .unwrap_or_else(|e| panic!("first_index: compact: {e}"));
        self.check("first_index", &mut h, |s| {
            expect(s.first_index(), 4, "first_index")
        });
    }

    fn compact(&mut self) {
        // (compact to, first index, its term, entries left)
        for (to, first, term, left) in [(2, 3, 3, 3), (3, 3, 3, 3), (4, 4, 4, 2), (5, 5, 5, 1)] {
            let mut h = self.fixture("compact", &BASE);
            h.compact(to)
                .unwrap_or_else(|e| panic!("compact({to}): {e}"));
            self.check("compact", &mut h, |s| {
                expect(s.first_index(), first, "first_index")?;
                let e = s
                    .entries(first, first + 1, 1, GetEntriesContext::empty(false))
                    .map_err(|e| e.to_string())?;
                if e.first().map(|e| e.term) != Some(term) {
                    return Err(format!(
                        "compact({to}): first entry {e:?}, term {term} expected"
                    ));
                }
                let n = all_entries(s).len();
                if n != left {
                    return Err(format!("compact({to}): {n} entries left, {left} expected"));
                }
                Ok(())
            });
        }
        let mut h = self.fixture("compact", &BASE);
        if h.compact(7).is_ok() {
            panic!("rule 'compact' broken: compacting past last_index + 1 was accepted");
        }
    }

    fn snapshot(&mut self) {
        let voters = [1, 2, 3];
        let conf = ConfState {
            voters: voters.to_vec(),
            ..Default::default()
        };
        let mut h = self.fixture("snapshot", &BASE);
        h.make_snapshot(5, 5, &conf)
            .unwrap_or_else(|e| panic!("snapshot: {e}"));
        self.check("snapshot", &mut h, |s| {
            for request in [0, 5] {
                let got = s.snapshot(request, 1).map_err(|e| e.to_string())?;
                let m = got.get_metadata();
                if (m.index, m.term) != (5, 5) || m.get_conf_state().voters != voters {
                    return Err(format!("snapshot({request}) = {m:?}"));
                }
            }
            // Asked for one newer than it has: a newer one, or "temporarily unavailable".
            match s.snapshot(6, 1) {
                Ok(got) if got.get_metadata().index >= 6 => Ok(()),
                Err(RaftError::Store(StorageError::SnapshotTemporarilyUnavailable)) => Ok(()),
                other => Err(format!("snapshot(6) = {other:?}")),
            }
        });
    }

    fn append(&mut self) {
        // (the round, the log after it or None if it must be refused)
        type Case = (Vec<(u64, u64)>, Option<Vec<(u64, u64)>>);
        let cases: Vec<Case> = vec![
            (BASE.to_vec(), Some(BASE.to_vec())),
            (
                vec![(3, 3), (4, 6), (5, 6)],
                Some(vec![(3, 3), (4, 6), (5, 6)]),
            ),
            (
                vec![(3, 3), (4, 4), (5, 5), (6, 5)],
                Some(vec![(3, 3), (4, 4), (5, 5), (6, 5)]),
            ),
            // Overwriting compacted entries is refused.
            (vec![(2, 3), (3, 3), (4, 5)], None),
            // A conflicting tail is cut, then the round appended.
            (vec![(4, 5)], Some(vec![(3, 3), (4, 5)])),
            (vec![(6, 6)], Some(vec![(3, 3), (4, 4), (5, 5), (6, 6)])),
            // A gap is refused.
            (vec![(7, 6)], None),
        ];
        for (round, want) in cases {
            let mut h = self.fixture("append", &BASE);
            let r = h.append(&ents(&round));
            match want {
                Some(want) => {
                    r.unwrap_or_else(|e| panic!("rule 'append' broken: {round:?}: {e}"));
                    let want = ents(&want);
                    self.check("append", &mut h, |s| {
                        let got = all_entries(s);
                        (got == want)
                            .then_some(())
                            .ok_or(format!("after {round:?}: {got:?}, {want:?} expected"))
                    });
                }
                None => {
                    if r.is_ok() {
                        panic!("rule 'append' broken: {round:?} was accepted");
                    }
                    let want = ents(&BASE);
                    self.check("append", &mut h, |s| {
                        let got = all_entries(s);
                        (got == want)
                            .then_some(())
                            .ok_or(format!("a refused {round:?} changed the log: {got:?}"))
                    });
                }
            }
        }
    }

    fn apply_snapshot(&mut self) {
        let voters = [1, 2, 3];
        let mut h = (self.new)();
        h.apply_snapshot(&snap(4, 4, &voters))
            .unwrap_or_else(|e| panic!("rule 'apply_snapshot' broken: {e}"));
        let observe = |s: &H::S| -> Result<(), String> {
            expect(s.first_index(), 5, "first_index")?;
            expect(s.last_index(), 4, "last_index")?;
            expect(s.term(4), 4, "term(4)")?;
            let st = s.initial_state().map_err(|e| e.to_string())?;
            if st.conf_state.voters != voters {
                return Err(format!(
                    "initial_state's configuration: {:?}",
                    st.conf_state
                ));
            }
            let hs: &HardState = &st.hard_state;
            if hs.commit < 4 || hs.term < 4 {
                return Err(format!("initial_state's hard state: {hs:?}"));
            }
            Ok(())
        };
        self.check("apply_snapshot", &mut h, observe);
        if h.apply_snapshot(&snap(3, 3, &voters)).is_ok() {
            panic!("rule 'apply_snapshot' broken: a snapshot older than the log was accepted");
        }
        self.check("apply_snapshot", &mut h, observe);
        // And entries continue after it.
        h.append(&ents(&[(5, 4), (6, 5)]))
            .unwrap_or_else(|e| panic!("rule 'apply_snapshot' broken: append after it: {e}"));
        self.check("apply_snapshot", &mut h, |s| {
            expect(s.first_index(), 5, "first_index")?;
            expect(s.term(6), 5, "term(6)")
        });
    }
}

fn expect(got: raft::Result<u64>, want: u64, what: &str) -> Result<(), String> {
    match got {
        Ok(v) if v == want => Ok(()),
        other => Err(format!("{what} = {other:?}, {want} expected")),
    }
}

/// Runs every rule against storages made by `new` (each rule starts from a fresh, empty one),
/// checking each again after a reopen where the harness supports it.
///
/// # Panics
/// On the first rule broken, naming it, what was asked and what came back.
pub fn check_storage<H: StorageHarness>(mut new: impl FnMut() -> H) -> Report {
    let mut s = Suite {
        new: &mut new,
        report: Report::default(),
        _h: std::marker::PhantomData,
    };
    s.term();
    s.entries();
    s.last_index();
    s.first_index();
    s.compact();
    s.snapshot();
    s.append();
    s.apply_snapshot();
    s.report
}

/// raft-rs's `MemStorage` under the suite (it cannot be reopened). `MemStorage` panics on a
/// round that does not fit the log or a compaction past its end, which would poison its lock:
/// the harness refuses those first, by the same conditions.
#[derive(Default)]
pub struct MemStorageHarness(pub MemStorage);

fn caught<T>(f: impl FnOnce() -> raft::Result<T>) -> Result<T, String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err("refused (panicked)".into()),
    }
}

impl MemStorageHarness {
    fn bounds(&self) -> (u64, u64) {
        (
            self.0.first_index().unwrap_or(0),
            self.0.last_index().unwrap_or(0),
        )
    }
}

impl StorageHarness for MemStorageHarness {
    type S = MemStorage;

    fn storage(&self) -> &MemStorage {
        &self.0
    }

    fn load(&mut self, entries: &[Entry]) -> Result<(), String> {
        let before = entries.first().map_or(0, |e| e.index.saturating_sub(1));
        let s = snap(before, before, &[1]);
        caught(|| self.0.wl().apply_snapshot(s))?;
        caught(|| self.0.wl().append(entries))
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), String> {
        let (first, last) = self.bounds();
        if let Some(e) = entries.first() {
            if e.index < first || e.index > last + 1 {
                return Err(format!(
                    "entries from {} do not fit [{first}, {last}]",
                    e.index
                ));
            }
        }
        caught(|| self.0.wl().append(entries))
    }

    fn compact(&mut self, index: u64) -> Result<(), String> {
        let (_, last) = self.bounds();
        if index > last + 1 {
            return Err(format!("compaction to {index} past the last index {last}"));
        }
        caught(|| self.0.wl().compact(index))
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        caught(|| self.0.wl().apply_snapshot(snapshot.clone()))
    }

    fn make_snapshot(&mut self, index: u64, term: u64, conf: &ConfState) -> Result<(), String> {
        let mut w = self.0.wl();
        w.mut_hard_state().commit = index;
        w.mut_hard_state().term = term;
        w.set_conf_state(conf.clone());
        Ok(())
    }

    fn reopen(&mut self) -> bool {
        false
    }
}

/// raftwal's [`RaftStorage`] under the suite, over any stores: `open` opens them (again, for
/// a reopen) from the same place.
pub struct RaftStorageHarness<L, S> {
    storage: Option<RaftStorage<L, S>>,
    open: Box<dyn FnMut() -> RaftStorage<L, S>>,
}

impl<L: BatchStore, S: SnapshotStore> RaftStorageHarness<L, S> {
    /// A harness over the storage `open` returns.
    pub fn new(mut open: impl FnMut() -> RaftStorage<L, S> + 'static) -> Self {
        RaftStorageHarness {
            storage: Some(open()),
            open: Box::new(open),
        }
    }

    fn s(&self) -> &RaftStorage<L, S> {
        // Always set outside `reopen`.
        self.storage
            .as_ref()
            .unwrap_or_else(|| unreachable!("the storage is open"))
    }

    /// Stores a snapshot's data (made up) the way a node does before recording it.
    fn put(&self, index: u64, term: u64, conf: &ConfState) -> Result<(), String> {
        let mut sink = self
            .s()
            .snapshots()
            .create(index, term, &encode_conf_state(conf), index)
            .map_err(|e| e.to_string())?;
        std::io::Write::write_all(&mut sink, format!("state at {index}").as_bytes())
            .map_err(|e| e.to_string())?;
        sink.commit().map(drop).map_err(|e| e.to_string())
    }
}

impl<L: BatchStore, S: SnapshotStore> StorageHarness for RaftStorageHarness<L, S> {
    type S = RaftStorage<L, S>;

    fn storage(&self) -> &RaftStorage<L, S> {
        self.s()
    }

    fn load(&mut self, entries: &[Entry]) -> Result<(), String> {
        let before = entries.first().map_or(0, |e| e.index.saturating_sub(1));
        if before > 0 {
            self.apply_snapshot(&snap(before, before, &[1]))?;
        }
        self.append(entries)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), String> {
        self.s().append(entries, None).map_err(|e| e.to_string())
    }

    fn compact(&mut self, index: u64) -> Result<(), String> {
        self.s().compact_log(index).map_err(|e| e.to_string())
    }

    fn apply_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        let m = snapshot.get_metadata();
        let first = self.s().first_index().map_err(|e| e.to_string())?;
        if m.index < first {
            // Refused before any data is stored, as a node would.
            return self.s().apply_snapshot(m).map_err(|e| e.to_string());
        }
        self.put(m.index, m.term, m.get_conf_state())?;
        self.s().apply_snapshot(m).map_err(|e| e.to_string())
    }

    fn make_snapshot(&mut self, index: u64, term: u64, conf: &ConfState) -> Result<(), String> {
        self.put(index, term, conf)
    }

    fn reopen(&mut self) -> bool {
        self.storage = None;
        self.storage = Some((self.open)());
        true
    }
}
