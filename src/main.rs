//! The `raftwal` command line.
//!
//! Until the benchmark lands, `raftwal bench` runs the WAL's quick self-check: it appends,
//! reopens and verifies a small log in a temporary directory and reports what it measured.

use std::process::ExitCode;
use std::time::Instant;

use raftwal::wal::{LogEntry, LogStore, Wal, WalOptions};

fn self_check() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let opts = || WalOptions::default().segment_size(4 << 20);
    let wal = Wal::open(dir.path(), opts())?;
    let n = 2_000u64;
    let start = Instant::now();
    for i in 1..=n {
        wal.store_logs(&[LogEntry::new(i, 1, vec![i as u8; 256])])?;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(wal);
    let wal = Wal::open(dir.path(), opts())?;
    let checked = wal.verify()?;
    println!(
        "self-check: {n} durable single-entry appends of 256 B in {secs:.2} s ({:.0}/s); reopened and verified {checked} entries",
        n as f64 / secs
    );
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("bench") | None => match self_check() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("raftwal: {e}");
                ExitCode::FAILURE
            }
        },
        Some(other) => {
            eprintln!("raftwal: unknown command {other:?} (available: bench)");
            ExitCode::from(2)
        }
    }
}
