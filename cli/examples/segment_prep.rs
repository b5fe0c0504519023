//! What bounds 1 MiB durable appends to a log that is never compacted: a WAL-shaped loop with no
//! WAL in it (no checksums, no index, no manifest), to measure the file system and the machine.
//!
//! The foreground writes 1 MiB and `fdatasync`s, segment after segment of 64 MiB; a background
//! thread prepares the next segment meanwhile, one of three ways:
//! - `zero`: written with zeros and synced (what raftwal does: appends then overwrite written
//!   blocks, and the device writes every byte twice);
//! - `sparse`: only its length set (every `fdatasync` then allocates blocks: a journal commit);
//! - `fallocate`: unwritten extents (every `fdatasync` converts them: a journal commit).
//!
//! A finished segment is then `delete`d (its page cache freed and reused), `keep`t (the whole log
//! stays cached, as a log never compacted does: every new page of cache is fresh memory), or kept
//! with its cache dropped (`dontneed`). The raw reference is the bench's: 1 MiB write +
//! `fdatasync` in a loop over one zero-filled, preallocated 64 MiB file.
//!
//! ```sh
//! cargo run --release --example segment_prep -- [DIR] [SECONDS_PER_CASE]
//! ```
#![allow(clippy::disallowed_methods, clippy::disallowed_types)]

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{fadvise, fallocate, Advice, FallocateFlags};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SEGMENT: u64 = 64 << 20;
const BATCH: usize = 1 << 20;

fn create(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
}

/// Creates a segment prepared the way `how` says, synced.
fn prepare(path: &Path, how: &str) -> Result<File, Error> {
    let f = create(path)?;
    match how {
        "zero" => {
            let zeros = vec![0u8; BATCH];
            for i in 0..SEGMENT / BATCH as u64 {
                f.write_all_at(&zeros, i * BATCH as u64)?;
            }
        }
        "sparse" => f.set_len(SEGMENT)?,
        "fallocate" => fallocate(&f, FallocateFlags::empty(), 0, SEGMENT)?,
        _ => return Err(format!("unknown preparation {how}").into()),
    }
    f.sync_all()?;
    Ok(f)
}

/// 1 MiB write + `fdatasync` over one zero-filled file for `secs`; MB/s.
fn raw(dir: &Path, secs: Duration) -> Result<f64, Error> {
    let f = prepare(&dir.join("raw"), "zero")?;
    let buf = vec![0x5au8; BATCH];
    let (start, mut n) = (Instant::now(), 0u64);
    while start.elapsed() < secs {
        f.write_all_at(&buf, (n % (SEGMENT / BATCH as u64)) * BATCH as u64)?;
        f.sync_data()?;
        n += 1;
    }
    Ok(n as f64 * BATCH as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// The WAL-shaped loop for `secs`; MB/s.
fn segmented(dir: &Path, how: &str, retire: &str, secs: Duration) -> Result<f64, Error> {
    let name = |seq: u64| -> PathBuf { dir.join(format!("{seq:06}.seg")) };
    let buf = vec![0x5au8; BATCH];
    let mut cur = prepare(&name(0), how)?;
    let mut kept = Vec::new();
    let (mut seq, mut offset, mut n) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < secs {
        let next_path = name(seq + 1);
        let how = how.to_string();
        let next = std::thread::spawn(move || prepare(&next_path, &how));
        while offset + BATCH as u64 <= SEGMENT && start.elapsed() < secs {
            cur.write_all_at(&buf, offset)?;
            cur.sync_data()?;
            offset += BATCH as u64;
            n += 1;
        }
        let next = next.join().map_err(|_| "preparation panicked")??;
        let old = std::mem::replace(&mut cur, next);
        match retire {
            "delete" => std::fs::remove_file(name(seq))?,
            "keep" => kept.push(old),
            "dontneed" => {
                fadvise(&old, 0, None, Advice::DontNeed)?;
                kept.push(old);
            }
            _ => return Err(format!("unknown retirement {retire}").into()),
        }
        seq += 1;
        offset = 0;
    }
    let rate = n as f64 * BATCH as f64 / start.elapsed().as_secs_f64() / 1e6;
    drop((cur, kept));
    for s in 0..=seq + 1 {
        let _ = std::fs::remove_file(name(s));
    }
    Ok(rate)
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let base = PathBuf::from(args.next().unwrap_or_else(|| ".".into()));
    let secs = Duration::from_secs_f64(args.next().map_or(Ok(4.0), |s| s.parse())?);
    let dir = tempfile::Builder::new()
        .prefix("segment-prep-")
        .tempdir_in(&base)?;
    let raw = raw(dir.path(), secs)?;
    println!("raw 1 MiB write+fdatasync, one zero-filled file: {raw:7.0} MB/s");
    for how in ["zero", "sparse", "fallocate"] {
        for retire in ["delete", "keep", "dontneed"] {
            let r = segmented(dir.path(), how, retire, secs)?;
            println!(
                "prepared {how:9}, finished segments {retire:8}: {r:7.0} MB/s  {:.2} of raw",
                r / raw
            );
        }
    }
    Ok(())
}
