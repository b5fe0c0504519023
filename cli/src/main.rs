//! The `raftwal` command line: `bench` (the fsync-throughput benchmark), `inspect`, `verify`,
//! `dump`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use raftwal_cli::bench;
use raftwal_cli::tools::{self, Open};
use raftwal_wal::SyncMode;

#[derive(Parser)]
#[command(
    name = "raftwal",
    version,
    about = "A durable WAL storage engine for Raft: benchmark and tools"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Clone, Copy, ValueEnum, Debug)]
enum SyncArg {
    Fdatasync,
    Fsync,
    None,
}

#[derive(Subcommand)]
enum Cmd {
    /// Measure the engine against the raw disk, in the same run (≈1 minute by default).
    Bench(BenchArgs),
    /// Show segments, ranges, sizes, stable keys and snapshots (read-only).
    Inspect {
        /// The WAL directory.
        dir: PathBuf,
        /// A snapshot directory to list too.
        #[arg(long)]
        snapshots: Option<PathBuf>,
        /// Read a running node's WAL: no lock, a tail being appended is tolerated.
        #[arg(long)]
        live: bool,
    },
    /// Check checksums without modifying anything; non-zero exit on any problem.
    Verify {
        /// The WAL directory.
        dir: PathBuf,
        /// A snapshot directory to verify too.
        #[arg(long)]
        snapshots: Option<PathBuf>,
        /// Check every frame (superseded ones included) and report every problem.
        #[arg(long)]
        all: bool,
        /// Read a running node's WAL: no lock, a tail being appended is tolerated.
        #[arg(long)]
        live: bool,
    },
    /// Print entries (read-only).
    Dump {
        /// The WAL directory.
        dir: PathBuf,
        /// First index (default: the first).
        #[arg(long)]
        from: Option<u64>,
        /// Last index, inclusive (default: the last).
        #[arg(long)]
        to: Option<u64>,
        /// Output format.
        #[arg(long, value_enum, default_value = "text")]
        format: Format,
        /// Read a running node's WAL: no lock, a tail being appended is tolerated.
        #[arg(long)]
        live: bool,
    },
    /// Drop a damaged tail (what `RecoveryMode::TruncateCorruptTail` would): a dry run that
    /// prints exactly what would be dropped unless `--apply`; a copy of the dropped bytes is
    /// kept next to the WAL directory. Refuses a WAL held by a running node. Only the tail an
    /// open scans is repaired (after a crash: everything since the last clean close); damage
    /// elsewhere is reported by `verify` and refused by reads, never dropped silently.
    Repair {
        /// The WAL directory.
        dir: PathBuf,
        /// Drop it (default: a dry run).
        #[arg(long)]
        apply: bool,
    },
}

/// `raftwal bench`'s flags (also the defaults of a bare `raftwal`).
#[derive(Args)]
struct BenchArgs {
    /// Directory to run in (a temporary directory is made inside; default: the current one).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// ≈15 s preset.
    #[arg(long, conflicts_with = "full")]
    quick: bool,
    /// Longer phases and a 1 GiB log for open time.
    #[arg(long)]
    full: bool,
    /// Payload bytes per entry.
    #[arg(long, default_value_t = 256)]
    entry_size: usize,
    /// Upper bound on operations per phase.
    #[arg(long, default_value_t = 10_000_000)]
    entries: u64,
    /// Concurrent appender counts, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    threads: Vec<usize>,
    /// WAL segment size in bytes.
    #[arg(long, default_value_t = 64 << 20)]
    segment_size: u64,
    /// How the WAL syncs (`none` is unsafe and only for comparison).
    #[arg(long, value_enum, default_value = "fdatasync")]
    sync: SyncArg,
    /// Seconds per phase (overrides the preset).
    #[arg(long)]
    phase_secs: Option<f64>,
    /// Write every figure and the machine description as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also run the workloads against another engine, side by side (needs the
    /// `compare-raft-engine` cargo feature).
    #[arg(long, value_enum)]
    compare: Option<CompareWith>,
    /// Also run a 3-node Raft cluster (on-disk WALs, TCP on loopback) with 1 and 64 clients,
    /// with fsync batching on and off.
    #[arg(long)]
    cluster: bool,
    /// Draw latency percentiles and throughput per batch size (with the raw disk's limit)
    /// as SVG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    no_progress: bool,
    /// Install no metrics recorder (the report then lacks the WAL's own fsync and group-size
    /// figures): the engine's hot path measured without one.
    #[arg(long)]
    no_recorder: bool,
}

/// The largest entry `bench` writes: far beyond any Raft command, well within memory.
const MAX_ENTRY_SIZE: usize = 64 << 20;
/// The largest segment `bench` uses (it prepares several at once on the disk it measures).
const MAX_BENCH_SEGMENT: u64 = 1 << 30;

#[derive(Clone, Copy, ValueEnum)]
enum CompareWith {
    /// TiKV's raft-engine.
    RaftEngine,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    // A bare `raftwal` runs the benchmark with its defaults (the flags' own).
    let cmd = cli
        .cmd
        .unwrap_or_else(|| match Cli::parse_from(["raftwal", "bench"]).cmd {
            Some(c) => c,
            None => unreachable!("`raftwal bench` parses as the bench command"),
        });
    let result = match cmd {
        Cmd::Bench(BenchArgs {
            dir,
            quick,
            full,
            entry_size,
            entries,
            threads,
            segment_size,
            sync,
            phase_secs,
            json,
            compare,
            cluster,
            plot,
            no_progress,
            no_recorder,
        }) => (|| -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
            let dir = match dir {
                Some(d) => d,
                None => std::env::current_dir()?,
            };
            bench::check_dir(&dir)?;
            if compare.is_some() && !cfg!(feature = "compare-raft-engine") {
                return Err("this build has no raft-engine: rebuild with \
                            `cargo run --release --features compare-raft-engine -- bench --compare raft-engine`"
                    .into());
            }
            if threads.is_empty() || threads.iter().any(|&t| t == 0 || t > 1024) {
                return Err("--threads needs counts from 1 to 1024".into());
            }
            if entry_size == 0 || entry_size > MAX_ENTRY_SIZE {
                return Err(
                    format!("--entry-size must be from 1 to {MAX_ENTRY_SIZE} bytes").into(),
                );
            }
            // The WAL's own bounds, and the bench's: it preallocates several segments at once.
            raftwal_wal::WalOptions::default()
                .segment_size(segment_size)
                .validate()
                .map_err(|e| format!("--segment-size: {e}"))?;
            if segment_size > MAX_BENCH_SEGMENT {
                return Err("--segment-size must be at most 1 GiB for the benchmark".into());
            }
            let (phase, log_bytes, snapshot_bytes) = match (quick, full) {
                (true, _) => (0.6, 64u64 << 20, 64u64 << 20),
                (_, true) => (8.0, 1 << 30, 256 << 20),
                _ => (2.5, 256 << 20, 256 << 20),
            };
            let phase = phase_secs.unwrap_or(phase);
            if !(phase > 0.0 && phase < 3600.0) {
                return Err("--phase-secs must be between 0 and 3600".into());
            }
            let cfg = bench::Config {
                dir,
                phase: Duration::from_secs_f64(phase),
                entry_size,
                max_ops: entries.max(1),
                threads,
                segment_size,
                sync: match sync {
                    SyncArg::Fdatasync => SyncMode::Data,
                    SyncArg::Fsync => SyncMode::All,
                    SyncArg::None => SyncMode::None,
                },
                log_bytes: if phase_secs.is_some() && quick {
                    log_bytes.min(16 << 20)
                } else {
                    log_bytes
                },
                snapshot_bytes: if phase_secs.is_some() && quick {
                    snapshot_bytes.min(16 << 20)
                } else {
                    snapshot_bytes
                },
                progress: !no_progress && std::io::IsTerminal::is_terminal(&std::io::stderr()),
                compare_raft_engine: matches!(compare, Some(CompareWith::RaftEngine)),
                cluster,
            };
            eprintln!(
                "raftwal bench: ≈{:.0} s in a temporary directory under {}",
                phase * (21.0 + cfg.threads.len() as f64) + 3.0,
                cfg.dir.display()
            );
            let recorder = (!no_recorder).then(bench::recorded::install).transpose()?;
            let mut rep = bench::run(&cfg)?;
            rep.wal_metrics = recorder.as_ref().map(bench::recorded::summarize);
            use std::io::Write;
            write!(out, "{}", bench::table(&rep))?;
            if let Some(m) = &rep.wal_metrics {
                write!(out, "{}", bench::recorded::table(m))?;
            }
            if let Some(p) = json {
                std::fs::write(&p, serde_json::to_string_pretty(&rep)?)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            if let Some(p) = plot {
                bench::plot::svg(&rep, &p).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        })(),
        Cmd::Inspect {
            dir,
            snapshots,
            live,
        } => tools::inspect(&dir, snapshots.as_deref(), Open { live }, &mut out)
            .map(|()| ExitCode::SUCCESS),
        Cmd::Verify {
            dir,
            snapshots,
            all,
            live,
        } => tools::verify(&dir, snapshots.as_deref(), all, Open { live }, &mut out).map(|n| {
            if n == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }),
        Cmd::Dump {
            dir,
            from,
            to,
            format,
            live,
        } => {
            let json = matches!(format, Format::Json);
            tools::dump(&dir, from, to, json, Open { live }, &mut out).map(|()| ExitCode::SUCCESS)
        }
        Cmd::Repair { dir, apply } => {
            tools::repair(&dir, apply, &mut out).map(|_| ExitCode::SUCCESS)
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("raftwal: {e}");
            ExitCode::FAILURE
        }
    }
}
