//! `raftwal bench`: the engine measured against the raw disk, in the same run.
//!
//! Every phase runs for a fixed time. The disk is measured the way the engine uses it (one
//! positional write plus `fdatasync` per record into a preallocated, zero-filled file, and
//! 1 MiB write+fdatasync bandwidth), in rounds interleaved with the engine workload compared
//! with it; each engine figure is reported with its ratio to the matching limit. The
//! concurrent-appender counts are interleaved with each other the same way, so the slow drifts
//! of a shared machine fall on both sides of every ratio.
// The raw-disk baselines deliberately bypass the Vfs: they are what the engine is measured
// against.
#![allow(clippy::disallowed_methods)]

pub mod cluster;
#[cfg(feature = "compare-raft-engine")]
pub mod compare;
pub mod machine;
mod phases;
pub mod plot;
pub mod raw;
pub mod recorded;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use raftwal_wal::{LogEntry, SyncMode, Wal, WalOptions, WriteBatch};
use serde::Serialize;

use self::phases::SECTIONS;
use self::raw::RawFile;

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// A temporary directory is made inside this one.
    pub dir: PathBuf,
    /// Time per phase.
    pub phase: Duration,
    /// Payload bytes per entry.
    pub entry_size: usize,
    /// Upper bound on operations per phase.
    pub max_ops: u64,
    /// Concurrent appender counts to run.
    pub threads: Vec<usize>,
    /// WAL segment size.
    pub segment_size: u64,
    /// How the WAL syncs.
    pub sync: SyncMode,
    /// Size of the log built for the read and open phases.
    pub log_bytes: u64,
    /// Size of the snapshot written and read.
    pub snapshot_bytes: u64,
    /// Show progress bars.
    pub progress: bool,
    /// Also run the workloads against TiKV's raft-engine (feature `compare-raft-engine`).
    pub compare_raft_engine: bool,
    /// Also run the 3-node cluster workloads.
    pub cluster: bool,
}

/// One workload run against raftwal and against raft-engine.
#[derive(Debug, Clone, Serialize)]
pub struct CompareRow {
    /// The workload.
    pub workload: String,
    /// The unit of both figures.
    pub unit: String,
    /// raftwal's figure.
    pub raftwal: f64,
    /// raft-engine's figure.
    pub raft_engine: f64,
    /// How many times better raftwal is (for times: theirs / ours; for rates: ours / theirs).
    pub ratio: f64,
}

/// One line of the report.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Row {
    /// Workload group (`disk`, `append`, `concurrent`, `read`, `open`, `snapshot`).
    pub group: String,
    /// Workload name.
    pub name: String,
    /// Operations (calls) made.
    pub ops: u64,
    /// Entries written or read.
    pub entries: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Wall time.
    pub seconds: f64,
    /// Entries per second.
    pub entries_per_sec: f64,
    /// Payload MB (10^6 bytes) per second.
    pub mb_per_sec: f64,
    /// Per-operation latency percentiles, microseconds.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Maximum.
    pub max_us: f64,
    /// fsyncs issued by the engine (group-commit rows).
    pub fsyncs: Option<u64>,
    /// fsyncs per second.
    pub fsyncs_per_sec: Option<f64>,
    /// Entries made durable per fsync.
    pub entries_per_fsync: Option<f64>,
    /// The row this one is compared with.
    pub baseline: Option<String>,
    /// This row's throughput divided by the baseline's (for `open`: time divided by time).
    pub ratio: Option<f64>,
}

/// The whole report, as written by `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// raftwal version.
    pub version: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// The machine and file system.
    pub machine: machine::Machine,
    /// The configuration, as text.
    pub config: String,
    /// The measurements.
    pub rows: Vec<Row>,
    /// raftwal against raft-engine, when `--compare raft-engine` ran.
    pub comparison: Vec<CompareRow>,
    /// Total wall time.
    pub total_seconds: f64,
    /// What the WAL itself recorded (absent with `--no-recorder`).
    pub wal_metrics: Option<recorded::WalMetrics>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

pub(crate) struct Hist(pub(crate) Histogram<u64>);

impl Hist {
    /// Nanosecond latencies from 1 ns to 100 s, 3 significant digits.
    pub(crate) fn new() -> Result<Self, Error> {
        Ok(Hist(Histogram::new_with_bounds(1, 100_000_000_000, 3)?))
    }
    pub(crate) fn record(&mut self, d: Duration) {
        let _ = self.0.record((d.as_nanos() as u64).max(1));
    }
    fn fill(&self, r: &mut Row) {
        let us = |v: u64| v as f64 / 1000.0;
        if self.0.is_empty() {
            return;
        }
        r.p50_us = us(self.0.value_at_quantile(0.5));
        r.p99_us = us(self.0.value_at_quantile(0.99));
        r.p999_us = us(self.0.value_at_quantile(0.999));
        r.max_us = us(self.0.max());
    }
}

/// Adds the engine's fsync figures to a group-commit row.
fn with_syncs(mut r: Row, s: raftwal_wal::WalStats) -> Row {
    r.fsyncs = Some(s.syncs);
    r.fsyncs_per_sec = Some(s.syncs as f64 / r.seconds.max(1e-9));
    r.entries_per_fsync = Some(r.entries as f64 / s.syncs.max(1) as f64);
    r
}

pub(crate) fn row(
    group: &str,
    name: &str,
    ops: u64,
    entries: u64,
    bytes: u64,
    secs: f64,
    h: &Hist,
) -> Row {
    let mut r = Row {
        group: group.into(),
        name: name.into(),
        ops,
        entries,
        bytes,
        seconds: secs,
        entries_per_sec: entries as f64 / secs.max(1e-9),
        mb_per_sec: bytes as f64 / 1e6 / secs.max(1e-9),
        ..Row::default()
    };
    h.fill(&mut r);
    r
}

/// One workload of [`interleaved`]: runs for a round, returns what it measured.
type Workload<'a> = Box<dyn FnMut() -> Result<Acc, Error> + 'a>;

/// Rounds each interleaved measurement runs in ([`alternate`]).
pub(crate) const ROUNDS: usize = 4;

/// Calls each of `ops` once per round for [`ROUNDS`] rounds, in turn, in the reverse order
/// every other round (ABBA…), and returns each one's results in round order. This shared
/// machine drifts by tens of percent over seconds, so a reference measured a minute before the
/// workload compared with it (or a workload measured alone in a slow stretch) makes a ratio
/// drift as much; interleaved, the drift falls on all of them alike.
pub(crate) fn alternate<T>(
    ops: &mut [&mut dyn FnMut() -> Result<T, Error>],
) -> Result<Vec<Vec<T>>, Error> {
    let n = ops.len();
    let mut out: Vec<Vec<T>> = (0..n).map(|_| Vec::with_capacity(ROUNDS)).collect();
    for r in 0..ROUNDS {
        for k in 0..n {
            let i = if r % 2 == 0 { k } else { n - 1 - k };
            out[i].push((ops[i])()?);
        }
    }
    Ok(out)
}

/// [`alternate`] for time-boxed workloads: each one's rounds summed.
fn interleaved(ops: &mut [&mut dyn FnMut() -> Result<Acc, Error>]) -> Result<Vec<Acc>, Error> {
    alternate(ops)?
        .into_iter()
        .map(|rounds| {
            let mut sum = Acc::new()?;
            rounds.into_iter().for_each(|a| sum.merge(a));
            Ok(sum)
        })
        .collect()
}

/// Operations, time and latencies, accumulated over rounds.
pub(crate) struct Acc {
    ops: u64,
    secs: f64,
    hist: Hist,
}

impl Acc {
    fn new() -> Result<Self, Error> {
        Ok(Acc {
            ops: 0,
            secs: 0.0,
            hist: Hist::new()?,
        })
    }

    /// Runs `op` for `time` (or `max_ops` calls), recording each call.
    fn measure(
        time: Duration,
        max_ops: u64,
        mut op: impl FnMut() -> Result<(), Error>,
    ) -> Result<Acc, Error> {
        let mut a = Acc::new()?;
        let start = Instant::now();
        while a.ops < max_ops && start.elapsed() < time {
            let t = Instant::now();
            op()?;
            a.hist.record(t.elapsed());
            a.ops += 1;
        }
        a.secs = start.elapsed().as_secs_f64();
        Ok(a)
    }

    fn merge(&mut self, other: Acc) {
        self.ops += other.ops;
        self.secs += other.secs;
        let _ = self.hist.0.add(&other.hist.0);
    }

    /// Operations per second.
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs.max(1e-9)
    }
}

struct Runner<'a> {
    cfg: &'a Config,
    /// The run's scratch directory.
    root: &'a Path,
    rows: Vec<Row>,
    bar: Option<indicatif::ProgressBar>,
    phases_left: usize,
    /// The raw-disk file the append sections share.
    raw: Option<RawFile>,
    /// Rows of the disk group so far (they lead the report).
    disk_rows: usize,
}

impl Runner<'_> {
    fn phase(&mut self, name: &str) {
        self.phases_left = self.phases_left.saturating_sub(1);
        if let Some(b) = &self.bar {
            b.set_message(format!(
                "{name} (≈{}s left)",
                self.phases_left as u64 * self.cfg.phase.as_secs().max(1)
            ));
            b.inc(1);
        }
    }

    /// Runs `op` repeatedly for the phase time (or `max_ops`), recording each call's latency.
    fn timed(&self, op: impl FnMut() -> Result<(), Error>) -> Result<(u64, f64, Hist), Error> {
        let a = Acc::measure(self.cfg.phase, self.cfg.max_ops, op)?;
        Ok((a.ops, a.secs, a.hist))
    }

    /// A phase's share of one round of an interleaved measurement.
    fn round(&self) -> Duration {
        self.cfg.phase / ROUNDS as u32
    }

    fn find(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    fn compare(&self, mut r: Row, baseline: &str) -> Row {
        if let Some(b) = self.find(baseline) {
            let base = if b.mb_per_sec > 0.0 && r.group != "concurrent" && r.group != "append" {
                r.mb_per_sec / b.mb_per_sec
            } else {
                (r.ops as f64 / r.seconds) / (b.ops as f64 / b.seconds)
            };
            r.baseline = Some(baseline.into());
            r.ratio = Some(base);
        }
        r
    }
}

/// `r` with its ratio to `baseline`, measured in rounds interleaved with it.
fn paired(mut r: Row, baseline: &str, ratio: f64) -> Row {
    r.baseline = Some(baseline.into());
    r.ratio = Some(ratio);
    r
}

/// `threads` closed-loop appenders of single entries on `wal` for `time`: each takes the shared
/// lock only around `write` and waits for durability outside it.
fn appenders(
    wal: &Wal,
    next: &Mutex<u64>,
    threads: usize,
    time: Duration,
    size: usize,
) -> Result<Acc, Error> {
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let results = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| -> Result<(u64, Hist), Error> {
                    let mut h = Hist::new()?;
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let t0 = Instant::now();
                        let ticket = {
                            let mut g = next.lock().map_err(|_| "lock poisoned")?;
                            wal.write(WriteBatch::from_entries(entries(&mut g, 1, size)))?
                        };
                        wal.wait_durable(ticket)?;
                        h.record(t0.elapsed());
                        n += 1;
                    }
                    Ok((n, h))
                })
            })
            .collect();
        std::thread::sleep(time);
        stop.store(true, Ordering::Relaxed);
        workers
            .into_iter()
            .map(|w| {
                w.join()
                    .map_err(|_| Error::from("appender thread panicked"))?
            })
            .collect::<Result<Vec<_>, Error>>()
    })?;
    let mut acc = Acc::new()?;
    acc.secs = start.elapsed().as_secs_f64();
    for (n, h) in results {
        acc.ops += n;
        let _ = acc.hist.0.add(&h.0);
    }
    Ok(acc)
}

fn opts(cfg: &Config) -> WalOptions {
    WalOptions::default()
        .segment_size(cfg.segment_size)
        .sync(cfg.sync)
}

fn entries(next: &mut u64, n: u64, size: usize) -> Vec<LogEntry> {
    let v = (*next..*next + n)
        .map(|i| LogEntry::new(i, 1, vec![(i % 251) as u8; size]))
        .collect();
    *next += n;
    v
}

/// The bytes one batch of `n` entries of `size` occupies in the WAL (frames and commit record),
/// which the raw reference writes too.
fn record_bytes(n: u64, size: usize) -> usize {
    n as usize * (32 + size.div_ceil(8) * 8) + 32
}

/// Runs the whole benchmark.
///
/// # Errors
/// Any I/O or engine error.
pub fn run(cfg: &Config) -> Result<Report, Error> {
    let started = Instant::now();
    let tmp = tempfile::Builder::new()
        .prefix("raftwal-bench-")
        .tempdir_in(&cfg.dir)?;
    let root = tmp.path();
    let total_phases: usize = SECTIONS.iter().map(|s| (s.phases)(cfg)).sum();
    let bar = cfg.progress.then(|| {
        let b = indicatif::ProgressBar::new(total_phases as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    });
    let mut r = Runner {
        cfg,
        root,
        rows: Vec::new(),
        bar,
        phases_left: total_phases,
        raw: None,
        disk_rows: 0,
    };
    for s in SECTIONS {
        let before = r.phases_left;
        (s.run)(&mut r)?;
        debug_assert_eq!(
            before - r.phases_left,
            (s.phases)(cfg),
            "a section reported another number of phases than it declares"
        );
    }
    let comparison = compare(cfg, root, &r)?;
    if let Some(b) = &r.bar {
        b.finish_and_clear();
    }
    Ok(Report {
        version: env!("CARGO_PKG_VERSION").into(),
        started_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(started.elapsed().as_secs()),
        machine: machine::describe(root),
        config: format!("{cfg:?}"),
        rows: r.rows,
        comparison,
        total_seconds: started.elapsed().as_secs_f64(),
        wal_metrics: None,
    })
}

#[cfg(feature = "compare-raft-engine")]
fn compare(cfg: &Config, root: &Path, r: &Runner<'_>) -> Result<Vec<CompareRow>, Error> {
    if !cfg.compare_raft_engine {
        return Ok(Vec::new());
    }
    compare::run(root, cfg.phase, cfg.entry_size, cfg.log_bytes, |m| {
        if let Some(b) = &r.bar {
            b.set_message(m.to_string());
        }
    })
}

#[cfg(not(feature = "compare-raft-engine"))]
fn compare(cfg: &Config, _root: &Path, _r: &Runner<'_>) -> Result<Vec<CompareRow>, Error> {
    if cfg.compare_raft_engine {
        return Err("this build has no raft-engine: rebuild with \
                    `cargo run --release --features compare-raft-engine -- bench --compare raft-engine`"
            .into());
    }
    Ok(Vec::new())
}

/// Renders the report as a table.
pub fn table(rep: &Report) -> String {
    let mut s = String::new();
    let m = &rep.machine;
    s.push_str(&format!(
        "raftwal {} — {} ({} CPUs), kernel {}, {} on {} [{}]\n\n",
        rep.version, m.cpu, m.cpus, m.kernel, m.filesystem, m.mount, m.device_model
    ));
    s.push_str(&format!(
        "{:<34} {:>11} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}  {}\n",
        "workload",
        "entries/s",
        "MB/s",
        "p50 µs",
        "p99 µs",
        "p99.9 µs",
        "max µs",
        "ent/sync",
        "ratio",
        "vs"
    ));
    let mut group = String::new();
    for r in &rep.rows {
        if r.group != group {
            group = r.group.clone();
            s.push_str(&format!("-- {group}\n"));
        }
        let f = |v: f64| {
            if v == 0.0 {
                "-".into()
            } else {
                format!("{v:.1}")
            }
        };
        s.push_str(&format!(
            "{:<34} {:>11} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>8} {:>7}  {}\n",
            r.name,
            if r.entries == 0 {
                "-".into()
            } else {
                format!("{:.0}", r.entries_per_sec)
            },
            r.mb_per_sec,
            f(r.p50_us),
            f(r.p99_us),
            f(r.p999_us),
            f(r.max_us),
            r.entries_per_fsync
                .map_or("-".into(), |v| format!("{v:.1}")),
            r.ratio.map_or("-".into(), |v| format!("{v:.2}")),
            r.baseline.as_deref().unwrap_or(""),
        ));
    }
    if !rep.comparison.is_empty() {
        s.push_str(&format!(
            "\n{:<34} {:>14} {:>14} {:>10}\n",
            "raftwal vs raft-engine", "raftwal", "raft-engine", "raftwal is"
        ));
        for c in &rep.comparison {
            s.push_str(&format!(
                "{:<34} {:>14} {:>14} {:>9.2}x   ({})\n",
                c.workload,
                format!("{:.1}", c.raftwal),
                format!("{:.1}", c.raft_engine),
                c.ratio,
                c.unit
            ));
        }
    }
    s.push_str(&format!("\ntotal {:.1} s\n", rep.total_seconds));
    s
}

/// Runs `iters` calls of `op` spread over `clients` threads, each calling it in a closed loop,
/// and returns the time taken, scaled to exactly `iters` calls (for criterion's
/// `iter_custom`).
pub fn closed_loop(clients: usize, iters: u64, op: &(dyn Fn() + Sync)) -> Duration {
    let clients = clients.max(1);
    let per = iters.div_ceil(clients as u64);
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| (0..per).for_each(|_| op()));
        }
    });
    start
        .elapsed()
        .mul_f64(iters as f64 / (per * clients as u64).max(1) as f64)
}

/// Checks that `path` is a usable directory for the benchmark.
///
/// # Errors
/// A message naming the problem.
pub fn check_dir(path: &Path) -> Result<(), Error> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} is not a directory", path.display()).into()),
        Err(e) => Err(format!("{}: {e}", path.display()).into()),
    }
}
