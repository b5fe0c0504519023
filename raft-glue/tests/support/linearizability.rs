//! A small Wing–Gong linearizability checker for a key–value store of registers, with
//! memoisation (in the style of Porcupine). Linearizability is compositional, so each key is
//! checked on its own as a register.
//!
//! An operation that returned no answer (a timeout, lost leadership) may have taken effect at
//! any time after its call, or never: it is given an infinite return time, and a write with an
//! unknown outcome may also be left out of the linearization.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashSet};

/// What a client did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Wrote `value`.
    Write(u64),
    /// Read `Some(value)` (or `None`: the key was never written).
    Read(Option<u64>),
}

/// One operation in the history, with real-time call and return instants (in any unit).
#[derive(Debug, Clone)]
pub struct Event {
    /// The key.
    pub key: u64,
    /// The operation.
    pub op: Op,
    /// When it was called.
    pub call: u64,
    /// When it returned; `None` if its outcome is unknown.
    pub ret: Option<u64>,
}

/// Whether the whole history is linearizable; on failure, the first key that is not.
pub fn check(history: &[Event]) -> Result<(), u64> {
    let mut by_key: BTreeMap<u64, Vec<&Event>> = BTreeMap::new();
    for e in history {
        by_key.entry(e.key).or_default().push(e);
    }
    for (key, ops) in by_key {
        // Reads with unknown outcome constrain nothing; nor does a write with unknown outcome
        // whose value no read saw (if it took effect, no read falls between it and the next
        // write, so leaving it out changes no read). Dropping them keeps the search small.
        let read: HashSet<u64> = ops
            .iter()
            .filter_map(|e| match e.op {
                Op::Read(v) => v,
                Op::Write(_) => None,
            })
            .collect();
        let ops: Vec<&Event> = ops
            .into_iter()
            .filter(|e| match e.op {
                Op::Read(_) => e.ret.is_some(),
                Op::Write(v) => e.ret.is_some() || read.contains(&v),
            })
            .collect();
        let mut s = Search {
            ops: &ops,
            seen: HashSet::new(),
        };
        let done = vec![0u64; ops.len().div_ceil(64)];
        if !s.run(&done, None) {
            return Err(key);
        }
    }
    Ok(())
}

struct Search<'a> {
    ops: &'a [&'a Event],
    seen: HashSet<(Vec<u64>, Option<u64>)>,
}

fn has(done: &[u64], i: usize) -> bool {
    done[i / 64] & (1 << (i % 64)) != 0
}

impl Search<'_> {
    fn run(&mut self, done: &[u64], state: Option<u64>) -> bool {
        let n = self.ops.len();
        // Every remaining operation may be left out if its outcome is unknown.
        if (0..n).all(|i| has(done, i) || self.ops[i].ret.is_none()) {
            return true;
        }
        if !self.seen.insert((done.to_vec(), state)) {
            return false;
        }
        // An operation can go next only if no other remaining one returned before its call.
        let min_ret = (0..n)
            .filter(|&i| !has(done, i))
            .filter_map(|i| self.ops[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..n {
            if has(done, i) || self.ops[i].call > min_ret {
                continue;
            }
            let next = match self.ops[i].op {
                Op::Write(v) => Some(Some(v)),
                Op::Read(v) => (v == state).then_some(state),
            };
            if let Some(st) = next {
                let mut d = done.to_vec();
                d[i / 64] |= 1 << (i % 64);
                if self.run(&d, st) {
                    return true;
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(op: Op, call: u64, ret: Option<u64>) -> Event {
        Event {
            key: 1,
            op,
            call,
            ret,
        }
    }

    #[test]
    fn accepts_and_rejects() {
        // Sequential write then read: fine.
        assert!(check(&[
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Read(Some(1)), 2, Some(3))
        ])
        .is_ok());
        // A stale read after a completed write: not linearizable.
        assert!(check(&[
            ev(Op::Write(1), 0, Some(1)),
            ev(Op::Write(2), 2, Some(3)),
            ev(Op::Read(Some(1)), 4, Some(5)),
        ])
        .is_err());
        // Concurrent write and read: either value is fine.
        assert!(check(&[
            ev(Op::Write(1), 0, Some(10)),
            ev(Op::Read(None), 1, Some(2))
        ])
        .is_ok());
        assert!(check(&[
            ev(Op::Write(1), 0, Some(10)),
            ev(Op::Read(Some(1)), 1, Some(2))
        ])
        .is_ok());
        // A write with an unknown outcome may or may not have happened…
        assert!(check(&[ev(Op::Write(7), 0, None), ev(Op::Read(Some(7)), 5, Some(6))]).is_ok());
        assert!(check(&[ev(Op::Write(7), 0, None), ev(Op::Read(None), 5, Some(6))]).is_ok());
        // …but not before it was called.
        assert!(check(&[ev(Op::Read(Some(7)), 0, Some(1)), ev(Op::Write(7), 5, None)]).is_err());
        // Two reads that see the values in opposite orders: not linearizable.
        assert!(check(&[
            ev(Op::Write(1), 0, Some(100)),
            ev(Op::Write(2), 0, Some(100)),
            ev(Op::Read(Some(1)), 10, Some(11)),
            ev(Op::Read(Some(2)), 12, Some(13)),
            ev(Op::Read(Some(1)), 14, Some(15)),
        ])
        .is_err());
    }
}
