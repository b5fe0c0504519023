//! `raftwal bench --compare raft-engine`: the same workloads, in the same process and
//! directory, against TiKV's `raft-engine` (cargo feature `compare-raft-engine`).
//!
//! Each engine is driven the way it is meant to be used: raftwal's concurrent writers share one
//! log, calling `write` under a lock and waiting for durability outside it; raft-engine's
//! concurrent writers each own a Raft group (region) and call `write(batch, sync = true)`, which
//! groups concurrent writers internally.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::CompareRow;
use raft::eraftpb::Entry;
use raft_engine::{Config as ReConfig, Engine, LogBatch, MessageExt};
use raftwal_wal::{LogEntry, LogStore, Wal, WalOptions, WriteBatch};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone)]
struct EntryType;

impl MessageExt for EntryType {
    type Entry = Entry;
    fn index(e: &Entry) -> u64 {
        e.index
    }
}

trait Subject: Send + Sync {
    /// Appends `n` entries of `size` bytes to `group` starting at `first`, durably.
    fn append(&self, group: u64, first: u64, n: u64, size: usize) -> Result<(), Error>;
    /// Reads one entry.
    fn get(&self, group: u64, index: u64) -> Result<(), Error>;
}

struct Ours(Wal);

impl Subject for Ours {
    fn append(&self, _group: u64, first: u64, n: u64, size: usize) -> Result<(), Error> {
        let v: Vec<LogEntry> = (first..first + n)
            .map(|i| LogEntry::new(i, 1, vec![(i % 251) as u8; size]))
            .collect();
        Ok(self.0.store_logs(&v)?)
    }
    fn get(&self, _group: u64, index: u64) -> Result<(), Error> {
        self.0.get_log(index)?;
        Ok(())
    }
}

/// A raft-rs entry with the same payload raftwal's workloads write.
fn re_entry(index: u64, size: usize) -> Entry {
    Entry {
        index,
        term: 1,
        data: vec![(index % 251) as u8; size].into(),
        ..Default::default()
    }
}

struct Theirs(Engine);

impl Subject for Theirs {
    fn append(&self, group: u64, first: u64, n: u64, size: usize) -> Result<(), Error> {
        let v: Vec<Entry> = (first..first + n).map(|i| re_entry(i, size)).collect();
        let mut b = LogBatch::default();
        b.add_entries::<EntryType>(group, &v)?;
        self.0.write(&mut b, true)?;
        Ok(())
    }
    fn get(&self, group: u64, index: u64) -> Result<(), Error> {
        self.0
            .get_entry::<EntryType>(group, index)?
            .ok_or("raft-engine lost an entry")?;
        Ok(())
    }
}

fn open_theirs(dir: &Path) -> Result<Theirs, Error> {
    let cfg = ReConfig {
        dir: dir.to_string_lossy().into_owned(),
        ..ReConfig::default()
    };
    Ok(Theirs(Engine::open(cfg)?))
}

fn open_ours(dir: &Path) -> Result<Ours, Error> {
    Ok(Ours(Wal::open(dir, WalOptions::default())?))
}

/// Appends for `phase`, `n` entries per call; returns entries per second.
fn appends(s: &dyn Subject, phase: Duration, n: u64, size: usize) -> Result<f64, Error> {
    let start = Instant::now();
    let mut next = 1;
    while start.elapsed() < phase {
        s.append(1, next, n, size)?;
        next += n;
    }
    Ok((next - 1) as f64 / start.elapsed().as_secs_f64())
}

/// Runs `threads` closed-loop writers for `phase`: thread `t` calls `op(t, n)` for its `n`-th
/// durable single-entry append (n from 0). Returns entries per second.
fn closed_loop(
    threads: usize,
    phase: Duration,
    op: impl Fn(usize, u64) -> Result<(), Error> + Send + Sync + 'static,
) -> Result<f64, Error> {
    let op = Arc::new(op);
    let stop = Arc::new(AtomicBool::new(false));
    let hs: Vec<_> = (0..threads)
        .map(|t| {
            let (op, stop) = (op.clone(), stop.clone());
            std::thread::spawn(move || -> Result<u64, Error> {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    op(t, n)?;
                    n += 1;
                }
                Ok(n)
            })
        })
        .collect();
    let start = Instant::now();
    std::thread::sleep(phase);
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for h in hs {
        total += h.join().map_err(|_| "writer panicked")??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// raftwal's writers share one log: a lock around `write` only, durability awaited outside it.
fn concurrent_ours(dir: &Path, threads: usize, phase: Duration, size: usize) -> Result<f64, Error> {
    let wal = Wal::open(dir, WalOptions::default())?;
    let next = Mutex::new(1u64);
    closed_loop(threads, phase, move |_, _| {
        let t = {
            let mut g = next.lock().map_err(|_| "lock poisoned")?;
            let e = LogEntry::new(*g, 1, vec![1; size]);
            *g += 1;
            wal.write(WriteBatch::from_entries(vec![e]))?
        };
        Ok(wal.wait_durable(t)?)
    })
}

/// raft-engine's writers each own a Raft group and write with `sync = true`.
fn concurrent_theirs(
    dir: &Path,
    threads: usize,
    phase: Duration,
    size: usize,
) -> Result<f64, Error> {
    let eng = open_theirs(dir)?;
    closed_loop(threads, phase, move |t, n| {
        eng.append(t as u64 + 1, n + 1, 1, size)
    })
}

/// Random reads over `[1, last]` for `phase`; returns reads per second.
fn reads(s: &dyn Subject, last: u64, phase: Duration) -> Result<f64, Error> {
    let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < phase {
        for _ in 0..256 {
            s.get(1, rng.u64(1..=last.max(1)))?;
        }
        n += 256;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

/// Runs `ours` and `theirs` in alternating rounds ([`super::alternate`]) and returns each one's
/// mean rate.
fn interleaved(
    mut ours: impl FnMut() -> Result<f64, Error>,
    mut theirs: impl FnMut() -> Result<f64, Error>,
) -> Result<(f64, f64), Error> {
    let r = super::alternate(&mut [&mut ours, &mut theirs])?;
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    Ok((mean(&r[0]), mean(&r[1])))
}

fn rate(workload: &str, ours: f64, theirs: f64) -> CompareRow {
    CompareRow {
        workload: workload.into(),
        unit: "entries/s".into(),
        raftwal: ours,
        raft_engine: theirs,
        ratio: ours / theirs.max(1e-9),
    }
}

/// Runs every workload against both engines under `root`.
///
/// # Errors
/// Any engine or I/O error.
pub fn run(
    root: &Path,
    phase: Duration,
    entry_size: usize,
    log_bytes: u64,
    mut progress: impl FnMut(&str),
) -> Result<Vec<CompareRow>, Error> {
    let mut rows = Vec::new();
    let fresh = |name: &str| -> Result<std::path::PathBuf, Error> {
        let d = root.join(name);
        if d.exists() {
            std::fs::remove_dir_all(&d)?;
        }
        Ok(d)
    };
    let round = phase / super::ROUNDS as u32;
    for n in [1u64, 16, 256] {
        progress(&format!("compare: batches of {n}"));
        let (ours, theirs) = interleaved(
            || appends(&open_ours(&fresh("cmp-ours")?)?, round, n, entry_size),
            || appends(&open_theirs(&fresh("cmp-theirs")?)?, round, n, entry_size),
        )?;
        rows.push(rate(&format!("durable appends, batch={n}"), ours, theirs));
    }
    for t in [2usize, 4] {
        progress(&format!("compare: {t} writers"));
        let (ours, theirs) = interleaved(
            || concurrent_ours(&fresh("cmp-ours")?, t, round, entry_size),
            || concurrent_theirs(&fresh("cmp-theirs")?, t, round, entry_size),
        )?;
        rows.push(rate(&format!("{t} concurrent writers"), ours, theirs));
    }
    progress("compare: building logs for reads and open");
    let per = 256u64;
    let count = (log_bytes / (entry_size as u64 + 64)).max(per) / per * per;
    let (dour, dtheir) = (fresh("cmp-ours")?, fresh("cmp-theirs")?);
    {
        let ours = Ours(Wal::open(
            &dour,
            WalOptions::default().sync(raftwal_wal::SyncMode::None),
        )?);
        let theirs = open_theirs(&dtheir)?;
        let mut i = 1;
        while i <= count {
            ours.append(1, i, per, entry_size)?;
            let v: Vec<Entry> = (i..i + per).map(|k| re_entry(k, entry_size)).collect();
            let mut b = LogBatch::default();
            b.add_entries::<EntryType>(1, &v)?;
            theirs.0.write(&mut b, false)?;
            i += per;
        }
        theirs.0.sync()?;
    }
    progress("compare: random reads");
    let ours = open_ours(&dour)?;
    let theirs = open_theirs(&dtheir)?;
    rows.push(rate(
        "random get_log",
        reads(&ours, count, phase)?,
        reads(&theirs, count, phase)?,
    ));
    drop((ours, theirs));
    progress("compare: open time");
    let median = |f: &dyn Fn() -> Result<(), Error>| -> Result<f64, Error> {
        let mut v = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            f()?;
            v.push(t.elapsed().as_secs_f64());
        }
        v.sort_by(f64::total_cmp);
        Ok(v[v.len() / 2])
    };
    let ours = median(&|| open_ours(&dour).map(drop))?;
    let theirs = median(&|| open_theirs(&dtheir).map(drop))?;
    rows.push(CompareRow {
        workload: format!("open a {} MiB log", log_bytes >> 20),
        unit: "ms".into(),
        raftwal: ours * 1e3,
        raft_engine: theirs * 1e3,
        ratio: theirs / ours.max(1e-9),
    });
    std::fs::remove_dir_all(&dour)?;
    std::fs::remove_dir_all(&dtheir)?;
    Ok(rows)
}
