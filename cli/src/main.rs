//! The `raftwal` command line: `bench` (the fsync-throughput benchmark), `inspect`, `verify`,
//! `dump`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use raftwal_cli::bench;
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
    Bench {
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
    },
    /// Show segments, ranges, sizes, stable keys and snapshots.
    Inspect {
        /// The WAL directory.
        dir: PathBuf,
        /// A snapshot directory to list too.
        #[arg(long)]
        snapshots: Option<PathBuf>,
    },
    /// Check every checksum without modifying anything; non-zero exit on any problem.
    Verify {
        /// The WAL directory.
        dir: PathBuf,
        /// A snapshot directory to verify too.
        #[arg(long)]
        snapshots: Option<PathBuf>,
        /// Report every problem, not just the first.
        #[arg(long)]
        all: bool,
    },
    /// Print entries.
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
    },
}

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
    let result = match cli.cmd.unwrap_or(Cmd::Bench {
        dir: None,
        quick: false,
        full: false,
        entry_size: 256,
        entries: 10_000_000,
        threads: vec![1, 2, 4, 8],
        segment_size: 64 << 20,
        sync: SyncArg::Fdatasync,
        phase_secs: None,
        json: None,
        compare: None,
        cluster: false,
        plot: None,
        no_progress: false,
    }) {
        Cmd::Bench {
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
        } => (|| -> Result<ExitCode, Box<dyn std::error::Error + Send + Sync>> {
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
            if threads.is_empty() || threads.contains(&0) {
                return Err("--threads needs positive counts".into());
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
            let rep = bench::run(&cfg)?;
            use std::io::Write;
            write!(out, "{}", bench::table(&rep))?;
            if let Some(p) = json {
                std::fs::write(&p, serde_json::to_string_pretty(&rep)?)
                    .map_err(|e| format!("{}: {e}", p.display()))?;
            }
            if let Some(p) = plot {
                bench::plot::svg(&rep, &p).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            Ok(ExitCode::SUCCESS)
        })(),
        Cmd::Inspect { dir, snapshots } => {
            raftwal_cli::tools::inspect(&dir, snapshots.as_deref(), &mut out)
                .map(|()| ExitCode::SUCCESS)
        }
        Cmd::Verify {
            dir,
            snapshots,
            all,
        } => raftwal_cli::tools::verify(&dir, snapshots.as_deref(), all, &mut out).map(|n| {
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
        } => raftwal_cli::tools::dump(&dir, from, to, matches!(format, Format::Json), &mut out)
            .map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("raftwal: {e}");
            ExitCode::FAILURE
        }
    }
}
