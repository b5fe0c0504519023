//! Model-based property test: random sequences of store / delete head / delete tail / stable
//! set / reopen, applied to the `Wal` and to `MemStore`; they must agree on every result and
//! on the whole state after every step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use proptest::prelude::*;
use raftwal_wal::{LogStore, MemStore, Wal};

fn arb_op() -> impl Strategy<Value = (u8, u64, u64, u8)> {
    (0u8..20, any::<u64>(), any::<u64>(), 0u8..6)
}

/// Turns raw numbers into an operation meaningful for the current bounds (so most are valid
/// and some are deliberately not).
fn make_op(raw: (u8, u64, u64, u8), first: u64, last: u64) -> Op {
    let (kind, a, b, size) = raw;
    let span = last.saturating_sub(first) + 3;
    let pick = |x: u64| first.saturating_sub(1) + x % span;
    let size = [0usize, 1, 33, 300, 2000, 9000][size as usize];
    match kind {
        0..=8 => Op::Write {
            truncate_after: (a % 7 == 0).then(|| pick(b)),
            count: a % 5,
            size,
            term: 1 + b % 3,
            stable: if b % 4 == 0 {
                vec![(b"hs".to_vec(), a)]
            } else {
                vec![]
            },
        },
        9 => Op::Write {
            // Sometimes not contiguous: must be refused identically.
            truncate_after: Some(last + 1 + a % 3),
            count: 1,
            size,
            term: 1,
            stable: vec![],
        },
        10..=12 => Op::DeleteHead(pick(a)),
        13..=14 => Op::DeleteTail(pick(a)),
        15..=17 => Op::Set(format!("k{}", a % 3).into_bytes(), b),
        _ => Op::Reopen,
    }
}

fn check(ops: Vec<(u8, u64, u64, u8)>, segment_size: u64, on_disk: bool) {
    let disk = DiskHarness::new(segment_size);
    let sim = SimHarness::new(1, segment_size);
    let open = || -> Wal {
        if on_disk {
            Wal::open(
                disk.path(),
                raftwal_wal::WalOptions::default().segment_size(segment_size),
            )
            .unwrap()
        } else {
            sim.try_open().unwrap()
        }
    };
    let mut wal = open();
    let model = MemStore::new();
    for (step, raw) in ops.into_iter().enumerate() {
        let op = make_op(
            raw,
            model.first_index().unwrap(),
            model.last_index().unwrap(),
        );
        if let Op::Reopen = op {
            drop(wal);
            wal = open();
        } else {
            let w = apply_wal(&wal, &op);
            let m = apply_model(&model, &op);
            assert_eq!(
                w.is_ok(),
                m.is_ok(),
                "step {step} {op:?}: wal {w:?} vs model {m:?}"
            );
            if let (Err(a), Err(b)) = (&w, &m) {
                assert_eq!(
                    std::mem::discriminant(a),
                    std::mem::discriminant(b),
                    "step {step} {op:?}: different errors {a} vs {b}"
                );
            }
        }
        assert_same(&wal, &model, &format!("after step {step} {op:?}"));
    }
    drop(wal);
    let wal = open();
    assert_same(&wal, &model, "after the final reopen");
    assert_eq!(wal.verify().unwrap(), {
        let (f, l) = (model.first_index().unwrap(), model.last_index().unwrap());
        if l == 0 {
            0
        } else {
            l - f + 1
        }
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn wal_matches_model_small_segments(ops in proptest::collection::vec(arb_op(), 1..80)) {
        check(ops, 4096, false);
    }

    #[test]
    fn wal_matches_model_large_segments(ops in proptest::collection::vec(arb_op(), 1..60)) {
        check(ops, 1 << 20, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]

    #[test]
    fn wal_on_disk_matches_model(ops in proptest::collection::vec(arb_op(), 1..40)) {
        check(ops, 8192, true);
    }
}
