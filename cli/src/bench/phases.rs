//! The benchmark's sections, as data: what each measures, how many progress phases it has,
//! and how it runs. [`run`](super::run) computes the progress bar from this list.

use std::io::{Read, Write};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use raftwal_snapshot::{FileSnapshotStore, SnapshotSink, SnapshotStore};
use raftwal_wal::{LogStore, SyncMode, Wal, WriteBatch};

use super::raw::{self, files_in, read_files, RawFile};
use super::{
    alternate, appenders, cluster, entries, interleaved, opts, paired, record_bytes, row,
    with_syncs, Acc, Config, Error, Hist, Runner, Workload, ROUNDS,
};

/// One section of the benchmark.
pub(super) struct Section {
    /// How many progress phases it reports for this configuration.
    pub phases: fn(&Config) -> usize,
    /// Runs it, adding its rows.
    pub run: fn(&mut Runner<'_>) -> Result<(), Error>,
}

/// Every section, in the order they run.
pub(super) const SECTIONS: &[Section] = &[
    Section {
        phases: |_| 3,
        run: disk_and_appends,
    },
    Section {
        phases: |c| c.threads.len(),
        run: concurrent,
    },
    Section {
        phases: |_| 1,
        run: pipelined,
    },
    Section {
        phases: |_| 4,
        run: megabyte_batches,
    },
    Section {
        phases: |_| 5,
        run: reads_and_open,
    },
    Section {
        phases: |_| 1,
        run: snapshots,
    },
    Section {
        phases: |c| usize::from(c.cluster),
        run: three_nodes,
    },
];

/// The disk, and durable appends in batches of 1, 16 and 256 entries.
fn disk_and_appends(r: &mut Runner<'_>) -> Result<(), Error> {
    let (cfg, root) = (r.cfg, r.root);
    let e = cfg.entry_size;
    // The disk, and durable appends, each measured in rounds interleaved with the raw
    // disk writing the same bytes (the disk rows sum those rounds).
    let mut raw = RawFile::create(&root.join("raw"), 256 << 20)?;
    for n in [1u64, 16, 256] {
        let raw_name = format!("raw fdatasync {}B", record_bytes(n, e));
        let name = format!("append batch={n}");
        r.phase(&name);
        let buf = vec![0x5a; record_bytes(n, e)];
        let dir = root.join(format!("append-{n}"));
        let wal = Wal::open(&dir, opts(cfg))?;
        let mut next = 1;
        let (round, max) = (r.round(), cfg.max_ops);
        let accs = interleaved(&mut [
            &mut || Acc::measure(round, max, || Ok(raw.write_sync(&buf).map(drop)?)),
            &mut || {
                Acc::measure(
                    round,
                    max,
                    || Ok(wal.store_logs(&entries(&mut next, n, e))?),
                )
            },
        ])?;
        let (disk, ours) = (&accs[0], &accs[1]);
        let bytes = disk.ops * buf.len() as u64;
        let raw_row = row(
            "disk",
            &raw_name,
            disk.ops,
            disk.ops * n,
            bytes,
            disk.secs,
            &disk.hist,
        );
        let ours_row = with_syncs(
            row(
                "append",
                &name,
                ours.ops,
                ours.ops * n,
                ours.ops * n * e as u64,
                ours.secs,
                &ours.hist,
            ),
            wal.stats(),
        );
        r.rows.insert(r.disk_rows, raw_row);
        r.disk_rows += 1;
        r.rows
            .push(paired(ours_row, &raw_name, ours.rate() / disk.rate()));
        drop(wal);
        std::fs::remove_dir_all(&dir)?;
    }
    r.raw = Some(raw);
    Ok(())
}

/// Concurrent appenders sharing fsyncs.
fn concurrent(r: &mut Runner<'_>) -> Result<(), Error> {
    let (cfg, root) = (r.cfg, r.root);
    let e = cfg.entry_size;
    // Concurrent appenders sharing fsyncs: every thread count in every round, interleaved.
    let logs = cfg
        .threads
        .iter()
        .map(|&t| -> Result<_, Error> {
            let dir = root.join(format!("conc-{t}"));
            Ok((t, Wal::open(&dir, opts(cfg))?, Mutex::new(1u64), dir))
        })
        .collect::<Result<Vec<_>, _>>()?;
    for &t in &cfg.threads {
        r.phase(&format!("concurrent appenders={t}"));
    }
    let round = r.round();
    let mut runs: Vec<Workload<'_>> = logs
        .iter()
        .map(|(t, wal, next, _)| {
            Box::new(move || appenders(wal, next, *t, round, e)) as Workload<'_>
        })
        .collect();
    let mut refs: Vec<&mut dyn FnMut() -> Result<Acc, Error>> =
        runs.iter_mut().map(|b| &mut **b as _).collect();
    let accs = interleaved(&mut refs)?;
    drop(refs);
    drop(runs);
    for ((t, wal, _, dir), a) in logs.into_iter().zip(accs) {
        let name = format!("concurrent appenders={t}");
        let row = with_syncs(
            row(
                "concurrent",
                &name,
                a.ops,
                a.ops,
                a.ops * e as u64,
                a.secs,
                &a.hist,
            ),
            wal.stats(),
        );
        let base = if t == 1 {
            format!("raw fdatasync {}B", record_bytes(1, e))
        } else {
            "concurrent appenders=1".to_string()
        };
        r.rows.push(r.compare(row, &base));
        drop(wal);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// The pipelined single writer.
fn pipelined(r: &mut Runner<'_>) -> Result<(), Error> {
    let (cfg, root) = (r.cfg, r.root);
    let e = cfg.entry_size;
    // The pipelined single writer: `write` without waiting; another thread waits.
    r.phase("pipelined writer");
    {
        let dir = root.join("pipelined");
        let wal = Arc::new(Wal::open(&dir, opts(cfg))?);
        let (tx, rx) = std::sync::mpsc::sync_channel::<raftwal_wal::Ticket>(256);
        let waiter = {
            let wal = wal.clone();
            std::thread::spawn(move || -> Result<(), raftwal_wal::Error> {
                while let Ok(mut t) = rx.recv() {
                    while let Ok(newer) = rx.try_recv() {
                        t = newer;
                    }
                    wal.wait_durable(t)?;
                }
                Ok(())
            })
        };
        let mut next = 1;
        let start = Instant::now();
        let (ops, _, h) = r.timed(|| {
            let t = wal.write(WriteBatch::from_entries(entries(&mut next, 1, e)))?;
            tx.send(t).map_err(|_| "waiter stopped")?;
            Ok(())
        })?;
        drop(tx);
        waiter.join().map_err(|_| "waiter panicked")??;
        // Until the last write is durable: the waiter's final drain counts.
        let secs = start.elapsed().as_secs_f64();
        let row = with_syncs(
            row(
                "concurrent",
                "pipelined writer",
                ops,
                ops,
                ops * e as u64,
                secs,
                &h,
            ),
            wal.stats(),
        );
        let base = format!("raw fdatasync {}B", record_bytes(1, e));
        r.rows.push(r.compare(row, &base));
        drop(wal);
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}

/// 1 MiB batches against raw 1 MiB write+fdatasync.
fn megabyte_batches(r: &mut Runner<'_>) -> Result<(), Error> {
    let (cfg, root) = (r.cfg, r.root);
    // 1 MiB batches, into zero-filled and into sparse (never written) segments: the
    // preallocation choice, measured; and with all but the newest two sealed segments dropped
    // from the page cache (a growing cache needs fresh memory for every page).
    // With compaction (a Raft node keeping the last 128 MiB after each snapshot), retired
    // segment files are recycled: no zero-filling at all.
    let mut raw = r.raw.take().ok_or("the disk section runs first")?;
    let mb = vec![0x5a; 1 << 20];
    let mut disk_mb = Acc::new()?;
    for (zero_fill, cached, compact, name) in [
        (true, None, false, "append 1MiB batches"),
        (false, None, false, "append 1MiB batches (sparse segments)"),
        (true, Some(2), false, "append 1MiB batches (cache 2 segs)"),
        (true, None, true, "append 1MiB batches + compaction"),
    ] {
        r.phase(name);
        let dir = root.join("big");
        let o = opts(cfg).zero_fill(zero_fill).cached_segments(cached);
        let wal = Wal::open(&dir, o)?;
        // One payload, built once: the raw reference writes a ready buffer too, and building
        // 1 MiB per call would time the caller's allocation, not the log.
        let mut batch = entries(&mut 1, 1, 1 << 20);
        let mut next = 1;
        let mut append = || -> Result<(), Error> {
            batch[0].index = next;
            wal.store_logs(&batch)?;
            next += 1;
            if compact && next % 64 == 0 && next > 128 {
                wal.delete_range(wal.first_index()?, next - 128)?;
            }
            Ok(())
        };
        if compact {
            // The steady state: untimed, write until retired segments are being recycled
            // (a fresh log zero-fills its first segments like any log that is not compacted).
            for _ in 0..320 {
                append()?;
            }
        }
        let (round, max) = (r.round(), cfg.max_ops);
        let mut accs = interleaved(&mut [
            &mut || Acc::measure(round, max, || Ok(raw.write_sync(&mb).map(drop)?)),
            &mut || Acc::measure(round, max, &mut append),
        ])?;
        let ours = accs.pop().ok_or("no measurement")?;
        let disk = accs.pop().ok_or("no measurement")?;
        let ratio = ours.rate() / disk.rate();
        disk_mb.merge(disk);
        let row = row(
            "append",
            name,
            ours.ops,
            ours.ops,
            ours.ops << 20,
            ours.secs,
            &ours.hist,
        );
        r.rows.push(paired(row, "raw write+fdatasync 1MiB", ratio));
        drop(wal);
        std::fs::remove_dir_all(&dir)?;
    }
    drop(raw);
    let raw_mb = row(
        "disk",
        "raw write+fdatasync 1MiB",
        disk_mb.ops,
        disk_mb.ops,
        disk_mb.ops << 20,
        disk_mb.secs,
        &disk_mb.hist,
    );
    r.rows.insert(r.disk_rows, raw_mb);
    Ok(())
}

/// Reads from sealed and active segments, and open time.
fn reads_and_open(r: &mut Runner<'_>) -> Result<(), Error> {
    let (cfg, root) = (r.cfg, r.root);
    let e = cfg.entry_size;
    // Reads from sealed and active segments, and open time.
    r.phase("building the read/open log");
    let dir = root.join("log");
    let last = {
        let wal = Wal::open(&dir, opts(cfg).sync(SyncMode::None))?;
        let mut next = 1;
        let per = 256u64;
        let mut written = 0u64;
        while written < cfg.log_bytes {
            wal.store_logs(&entries(&mut next, per, e))?;
            written += per * record_bytes(1, e) as u64;
        }
        next - 1
    };
    let wal = Wal::open(&dir, opts(cfg))?;
    let segs = wal.segments();
    let active_first = segs
        .len()
        .checked_sub(2)
        .and_then(|i| segs[i].last)
        .map_or(1, |l| l + 1);
    let mut rng = fastrand::Rng::with_seed(0x9E37_79B9_7F4A_7C15);
    let mut rand = move |lo: u64, hi: u64| rng.u64(lo..hi.max(lo + 1));
    for (name, lo, hi, random) in [
        ("get_log random (sealed)", 1, active_first.max(2), true),
        ("get_log sequential (sealed)", 1, active_first.max(2), false),
        (
            "get_log random (active)",
            active_first.min(last),
            last + 1,
            true,
        ),
    ] {
        r.phase(name);
        let mut seq = lo;
        let (ops, secs, h) = r.timed(|| {
            let i = if random {
                rand(lo, hi)
            } else {
                seq = if seq + 1 >= hi { lo } else { seq + 1 };
                seq
            };
            wal.get_log(i).map(drop).map_err(Into::into)
        })?;
        r.rows
            .push(row("read", name, ops, ops, ops * e as u64, secs, &h));
    }
    drop(wal);
    r.phase("open the log just written");
    let files = files_in(&dir)?;
    let bytes = read_files(&files)?; // warm the cache like open will find it
    let mut h_read = Hist::new()?;
    let mut h_open = Hist::new()?;
    let deadline = Instant::now() + cfg.phase;
    let mut n = 0;
    while n < 3 || (Instant::now() < deadline && n < 50) {
        let t = Instant::now();
        read_files(&files)?;
        h_read.record(t.elapsed());
        let t = Instant::now();
        let w = Wal::open(&dir, opts(cfg))?;
        h_open.record(t.elapsed());
        drop(w);
        n += 1;
    }
    let med = |h: &Hist| h.0.value_at_quantile(0.5) as f64 / 1e9;
    let read_row = {
        let mut x = row(
            "open",
            "read the log sequentially",
            n,
            0,
            bytes * n,
            med(&h_read) * n as f64,
            &h_read,
        );
        x.name = format!("read {} MiB log sequentially", bytes >> 20);
        x
    };
    let mut open_row = row(
        "open",
        &format!("open {} MiB log", bytes >> 20),
        n,
        0,
        0,
        med(&h_open) * n as f64,
        &h_open,
    );
    open_row.baseline = Some(read_row.name.clone());
    open_row.ratio = Some(med(&h_open) / med(&h_read).max(1e-9));
    r.rows.push(read_row);
    r.rows.push(open_row);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Snapshots against raw sequential files of the same size.
fn snapshots(r: &mut Runner<'_>) -> Result<(), Error> {
    let (cfg, root) = (r.cfg, r.root);
    // Snapshots, against raw sequential write+fsync and read of the same size. Reads are
    // measured from the device (pages evicted after the fsync) — the disk's read bandwidth —
    // and again from the page cache, where any checksum pass shows.
    r.phase("snapshot write/read");
    let sb = cfg.snapshot_bytes;
    let chunk = vec![0xa5u8; 1 << 20];
    let raw_path = |round: usize| root.join(format!("raw-seq-{round}"));
    // A new file each round, the previous one removed once it is written: what a snapshot
    // store keeping one snapshot does (it cannot drop the old one before the new is durable).
    let write_raw = |round: usize| -> Result<f64, Error> {
        let t = Instant::now();
        let mut f = std::fs::File::create(raw_path(round))?;
        let mut left = sb;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
        if round > 0 {
            std::fs::remove_file(raw_path(round - 1))?;
        }
        Ok(t.elapsed().as_secs_f64())
    };
    // Keeps one: each commit reaps the previous round's snapshot, as a store in use does.
    let store = FileSnapshotStore::open(root.join("snaps"), 1)?;
    let write_snap = |index: u64| -> Result<(f64, raftwal_snapshot::SnapshotMeta), Error> {
        let t = Instant::now();
        let mut sink = store.create(1, index, b"", 0)?;
        let mut left = sb;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            sink.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        let meta = sink.commit()?;
        Ok((t.elapsed().as_secs_f64(), meta))
    };
    let timed_read = |p: &Path| -> Result<f64, Error> {
        let t = Instant::now();
        read_files(&[p.to_path_buf()])?;
        Ok(t.elapsed().as_secs_f64())
    };
    let snap_read = |id: &str| -> Result<f64, Error> {
        let t = Instant::now();
        let (_, mut rd) = store.open(id)?;
        let mut buf = vec![0u8; 1 << 20];
        while rd.read(&mut buf)? > 0 {}
        Ok(t.elapsed().as_secs_f64())
    };
    // One turn of each: write (and commit), then read from the device and from the page cache.
    let mut raw_rounds = 0;
    let mut raw_turn = || -> Result<[f64; 3], Error> {
        let (i, path) = (raw_rounds, raw_path(raw_rounds));
        raw_rounds += 1;
        let w = write_raw(i)?;
        raw::evict(&path)?;
        Ok([w, timed_read(&path)?, timed_read(&path)?])
    };
    let mut snap_rounds = 0;
    let mut snap_turn = || -> Result<[f64; 3], Error> {
        snap_rounds += 1;
        let (w, meta) = write_snap(snap_rounds)?;
        raw::evict(&store.dir().join(&meta.id).join("data"))?;
        Ok([w, snap_read(&meta.id)?, snap_read(&meta.id)?])
    };
    // Two untimed turns each first: until files are replaced, every one is new page cache,
    // which this VM's host hands over slowly (a first 256 MiB snapshot wrote in 770 ms, later
    // ones in 60 ms), and the steady state of a store that replaces its snapshot is the measure.
    const WARM: usize = 2;
    for _ in 0..WARM {
        raw_turn()?;
        snap_turn()?;
    }
    let turns = alternate(&mut [&mut raw_turn, &mut snap_turn])?;
    std::fs::remove_file(raw_path(WARM + ROUNDS - 1))?;
    let mean = |who: usize, k: usize| turns[who].iter().map(|t| t[k]).sum::<f64>() / ROUNDS as f64;
    let (raw_w, raw_cold, raw_warm) = (mean(0, 0), mean(0, 1), mean(0, 2));
    let (snap_w, snap_cold, snap_warm) = (mean(1, 0), mean(1, 1), mean(1, 2));
    let none = Hist::new()?;
    let mut add = |name: &str, secs: f64, base: Option<&str>| {
        let x = row("snapshot", name, 1, 0, sb, secs, &none);
        let x = match base {
            Some(b) => r.compare(x, b),
            None => x,
        };
        r.rows.push(x);
    };
    add("raw sequential write+fsync", raw_w, None);
    add("raw sequential read (device)", raw_cold, None);
    add("raw sequential read (page cache)", raw_warm, None);
    add(
        "snapshot write+commit",
        snap_w,
        Some("raw sequential write+fsync"),
    );
    add(
        "snapshot read+verify (device)",
        snap_cold,
        Some("raw sequential read (device)"),
    );
    add(
        "snapshot read+verify (page cache)",
        snap_warm,
        Some("raw sequential read (page cache)"),
    );
    Ok(())
}

/// The 3-node cluster (with `--cluster`).
fn three_nodes(r: &mut Runner<'_>) -> Result<(), Error> {
    let (cfg, root) = (r.cfg, r.root);
    if !cfg.cluster {
        return Ok(());
    }
    {
        r.phase("3-node cluster");
        let best = r
            .rows
            .iter()
            .filter(|x| x.group == "concurrent" && x.name.starts_with("concurrent appenders"))
            .max_by(|a, b| a.entries_per_sec.total_cmp(&b.entries_per_sec))
            .map(|x| (x.name.clone(), x.entries_per_sec));
        let mut rows = cluster::run(root, cfg.phase, &[1, 64], cfg.entry_size)?;
        // The cluster against the single-node WAL's group commit, measured in this run.
        let batched = rows
            .iter()
            .find(|x| x.name == "3-node cluster, 64 client(s), batching on")
            .cloned();
        if let (Some((name, eps)), Some(batched)) = (best, batched) {
            let mut x = batched;
            x.name = format!("{} vs one WAL", x.name);
            x.baseline = Some(name);
            x.ratio = Some(x.entries_per_sec / eps.max(1e-9));
            rows.push(x);
        }
        r.rows.extend(rows);
    }
    Ok(())
}
