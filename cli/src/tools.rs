//! `raftwal inspect`, `verify` and `dump`: tools that open the WAL and the snapshot store
//! read-only (they change nothing, create no file, and refuse a WAL a running node holds,
//! unless `--live`: then they take no lock and read while the node appends); and
//! `raftwal repair`, the explicit, operator-run counterpart of
//! `RecoveryMode::TruncateCorruptTail`.

use std::io::Write;
use std::path::Path;

use raftwal_snapshot::{FileSnapshotStore, SnapshotStore};
use raftwal_wal::{LogStore, RecoveryMode, VerifyMode, Wal, WalOptions};
use serde::Serialize;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How a tool opens the WAL.
#[derive(Debug, Clone, Copy, Default)]
pub struct Open {
    /// Without the lock, tolerating a writer (a running node).
    pub live: bool,
}

fn open_ro(dir: &Path, how: Open) -> Result<Wal, Error> {
    Ok(Wal::open(
        dir,
        WalOptions::default().read_only(true).live(how.live),
    )?)
}

fn show_bytes(b: &[u8], max: usize) -> String {
    let cut = &b[..b.len().min(max)];
    let more = if b.len() > max { "…" } else { "" };
    match std::str::from_utf8(cut) {
        Ok(s) if s.chars().all(|c| !c.is_control() || c == '\n') => format!("{s:?}{more}"),
        _ => format!(
            "0x{}{more}",
            cut.iter().map(|x| format!("{x:02x}")).collect::<String>()
        ),
    }
}

/// Prints the segments, the stable keys, the snapshots (if a directory is given) and totals.
///
/// # Errors
/// Opening the WAL or the snapshot store.
pub fn inspect(
    dir: &Path,
    snapshots: Option<&Path>,
    how: Open,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let wal = open_ro(dir, how)?;
    writeln!(out, "WAL {}", dir.display())?;
    let (first, last) = (wal.first_index()?, wal.last_index()?);
    writeln!(
        out,
        "entries: first {first}, last {last} ({} live)",
        if last == 0 { 0 } else { last - first + 1 }
    )?;
    writeln!(
        out,
        "\n{:<24} {:>6} {:>12} {:>12} {:>12} {:>12}  state",
        "segment", "seq", "first", "last", "data bytes", "file bytes"
    )?;
    let mut total = 0;
    for s in wal.segments() {
        let name = s
            .path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        writeln!(
            out,
            "{:<24} {:>6} {:>12} {:>12} {:>12} {:>12}  {}",
            name,
            s.seq,
            opt(s.first),
            opt(s.last),
            s.data_end,
            s.file_size,
            if s.sealed { "sealed" } else { "active" }
        )?;
        total += s.file_size;
    }
    writeln!(out, "total segment bytes: {total}")?;
    let m = wal.manifest();
    writeln!(
        out,
        "\nmanifest: generation {}, base bounds [{}, {}), {} sealed segment(s), tail {:016x}{}, next segment {:016x}",
        m.generation,
        m.first,
        m.next,
        m.sealed.len(),
        m.tail_seq,
        if m.tail_from > 0 {
            format!(" (clean-close checkpoint at offset {})", m.tail_from)
        } else {
            " (replayed from its start)".to_string()
        },
        m.next_seq
    )?;
    let stable = wal.stable_entries();
    writeln!(out, "\nstable keys: {}", stable.len())?;
    for (k, v) in &stable {
        let num = <[u8; 8]>::try_from(v.as_slice())
            .map(u64::from_le_bytes)
            .ok()
            .map(|n| format!(" (u64 {n})"));
        writeln!(
            out,
            "  {} = {}{}",
            show_bytes(k, 64),
            show_bytes(v, 64),
            raftwal_glue::describe_stable_key(k, v)
                .map(|d| format!(" ({d})"))
                .or(num)
                .unwrap_or_default()
        )?;
    }
    let rep = wal.recovery_report();
    for d in &rep.dropped {
        writeln!(
            out,
            "note: an unacknowledged torn tail would be dropped at {}:{} ({})",
            d.path.display(),
            d.offset,
            d.reason
        )?;
    }
    if let Some(sd) = snapshots {
        let store = FileSnapshotStore::open_read_only(sd)?;
        let list = store.list_all()?;
        writeln!(out, "\nsnapshots in {}: {}", sd.display(), list.len())?;
        for m in list {
            match m {
                Ok(m) => writeln!(
                    out,
                    "  {}  index {} term {} size {} crc {:#010x}",
                    m.id, m.index, m.term, m.size, m.checksum
                )?,
                Err(e) => writeln!(out, "  damaged: {e}")?,
            }
        }
    }
    Ok(())
}

/// Verifies the checksums of every live entry and sealed index, and with `all` of every frame
/// (superseded ones included), reporting every problem; returns the number found (0: all
/// good).
///
/// # Errors
/// Only output errors; problems (including a WAL that cannot be opened) are reported and
/// counted.
pub fn verify(
    dir: &Path,
    snapshots: Option<&Path>,
    all: bool,
    how: Open,
    out: &mut dyn Write,
) -> Result<usize, Error> {
    let mut problems = 0;
    match open_ro(dir, how) {
        Err(e) => {
            writeln!(out, "error: {e}")?;
            problems += 1;
        }
        Ok(wal) => {
            for d in &wal.recovery_report().dropped {
                writeln!(out, "note: torn, unacknowledged tail at {}:{} (normal after a crash; dropped at the next read-write open)", d.path.display(), d.offset)?;
            }
            for p in &wal.recovery_report().rebuilt_indexes {
                writeln!(
                    out,
                    "error: index {} is missing or damaged (rebuildable from the frames)",
                    p.display()
                )?;
                problems += 1;
            }
            let (checked, errs) = wal.check(if all {
                VerifyMode::Every
            } else {
                VerifyMode::Live
            });
            for e in &errs {
                writeln!(out, "error: {e}")?;
            }
            problems += errs.len();
            writeln!(
                out,
                "checked {checked} entries and {} segments",
                wal.segments().len()
            )?;
        }
    }
    if let Some(sd) = snapshots {
        if all || problems == 0 {
            let store = FileSnapshotStore::open_read_only(sd)?;
            for m in store.list_all()? {
                let res = m.map_err(Error::from).and_then(|m| {
                    let (_, mut r) = store.open(&m.id)?;
                    std::io::copy(&mut r, &mut std::io::sink())?;
                    Ok(m)
                });
                match res {
                    Ok(m) => writeln!(out, "snapshot {} ok ({} bytes)", m.id, m.size)?,
                    Err(e) => {
                        writeln!(out, "error: snapshot: {e}")?;
                        problems += 1;
                    }
                }
            }
        }
    }
    writeln!(
        out,
        "{}",
        if problems == 0 {
            "OK".to_string()
        } else {
            format!("{problems} problem(s)")
        }
    )?;
    Ok(problems)
}

#[derive(Serialize)]
struct DumpEntry {
    index: u64,
    term: u64,
    kind: String,
    size: usize,
    context: String,
    data: String,
}

/// Prints entries `[from, to]` as text or JSON lines.
///
/// # Errors
/// Opening or reading the WAL.
pub fn dump(
    dir: &Path,
    from: Option<u64>,
    to: Option<u64>,
    json: bool,
    how: Open,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let wal = open_ro(dir, how)?;
    let (first, last) = (wal.first_index()?, wal.last_index()?);
    if last == 0 {
        if from.is_some() || to.is_some() {
            return Err("the log is empty: no entries in that range".into());
        }
        writeln!(out, "(empty log)")?;
        return Ok(());
    }
    let (lo, hi) = (from.unwrap_or(first), to.unwrap_or(last));
    if lo > hi {
        return Err(format!("an empty range: --from {lo} is after --to {hi}").into());
    }
    if lo < first || hi > last {
        return Err(format!(
            "entries [{lo}, {hi}] are not all in the log, which holds [{first}, {last}]"
        )
        .into());
    }
    for i in lo..=hi {
        let e = wal.get_log(i)?;
        let d = DumpEntry {
            index: e.index,
            term: e.term,
            kind: format!("{:?}", e.kind),
            size: e.data.len(),
            context: show_bytes(&e.context, 32),
            data: show_bytes(&e.data, 64),
        };
        if json {
            writeln!(out, "{}", serde_json::to_string(&d)?)?;
        } else {
            writeln!(
                out,
                "{:>10} term {:<6} {:<13} {:>8} B  {}",
                d.index, d.term, d.kind, d.size, d.data
            )?;
        }
    }
    Ok(())
}

/// `raftwal repair`: what a lenient open (`RecoveryMode::TruncateCorruptTail`) would drop from
/// the tail, printed exactly; with `apply`, a copy of those bytes is kept in
/// `<dir>.repair-<unix seconds>/` and they are dropped. A WAL held by a running node is
/// refused. Returns the number of damaged ranges found.
///
/// # Errors
/// Opening the WAL (`Locked` while a node holds it), copying the damaged bytes, output.
#[allow(clippy::disallowed_methods)] // the copy of dropped bytes is an operator's file, not WAL I/O
pub fn repair(dir: &Path, apply: bool, out: &mut dyn Write) -> Result<usize, Error> {
    let lenient = || WalOptions::default().recovery(RecoveryMode::TruncateCorruptTail);
    let report = Wal::open(dir, lenient().read_only(true))?
        .recovery_report()
        .clone();
    if report.dropped.is_empty() {
        writeln!(out, "nothing to repair: every batch in the tail is whole")?;
        return Ok(0);
    }
    for d in &report.dropped {
        writeln!(
            out,
            "{}: drop from offset {} (the first bad frame at {}: {}){}{}",
            d.path.display(),
            d.offset,
            d.bad_offset,
            d.reason,
            d.indexes
                .map(|(a, b)| format!(", entries {a}..={b}"))
                .unwrap_or_default(),
            if d.was_durable {
                ", ACKNOWLEDGED data (it had been made durable)"
            } else {
                ", an unacknowledged torn write"
            }
        )?;
    }
    if !apply {
        writeln!(
            out,
            "dry run: nothing changed. `raftwal repair --apply` drops these, keeping a copy of \
             the bytes next to the WAL directory"
        )?;
        return Ok(report.dropped.len());
    }
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let keep = dir.with_file_name(format!(
        "{}.repair-{stamp}",
        dir.file_name()
            .map_or_else(|| "wal".into(), |n| n.to_string_lossy().into_owned())
    ));
    std::fs::create_dir_all(&keep)?;
    for d in &report.dropped {
        let bytes = std::fs::read(&d.path)?;
        let from = usize::try_from(d.offset)
            .unwrap_or(usize::MAX)
            .min(bytes.len());
        let end = bytes
            .iter()
            .rposition(|&b| b != 0)
            .map_or(from, |i| i + 1)
            .max(from);
        let name = d
            .path
            .file_name()
            .map_or_else(|| "segment".into(), |n| n.to_string_lossy().into_owned());
        let copy = keep.join(format!("{name}.from-{}", d.offset));
        std::fs::write(&copy, &bytes[from..end])?;
        writeln!(out, "kept {} bytes in {}", end - from, copy.display())?;
    }
    let wal = Wal::open(dir, lenient())?;
    writeln!(
        out,
        "repaired: the log now holds [{}, {}]",
        wal.first_index()?,
        wal.last_index()?
    )?;
    Ok(report.dropped.len())
}
