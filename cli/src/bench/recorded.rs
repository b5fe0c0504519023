//! The WAL's own view of a run: the bench installs a metrics recorder (unless
//! `--no-recorder`) and reports the WAL's fsync durations and group sizes, over every WAL the
//! run opened, next to the client-side latencies.

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use serde::Serialize;

/// A distribution's summary.
#[derive(Debug, Clone, Serialize)]
pub struct Distribution {
    /// Samples.
    pub count: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Maximum.
    pub max: f64,
}

impl Distribution {
    fn of(mut v: Vec<f64>) -> Option<Self> {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        Some(Distribution {
            count: v.len(),
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: q(0.5),
            p99: q(0.99),
            p999: q(0.999),
            max: v[v.len() - 1],
        })
    }
}

/// What the WAL recorded during the run.
#[derive(Debug, Clone, Serialize)]
pub struct WalMetrics {
    /// Every durability fsync, seconds.
    pub fsync_seconds: Option<Distribution>,
    /// Writes per group-commit fsync.
    pub group_writes: Option<Distribution>,
    /// Bytes per group-commit fsync.
    pub group_bytes: Option<Distribution>,
}

/// Installs the process's recorder.
///
/// # Errors
/// Another recorder is installed.
pub fn install() -> Result<Snapshotter, String> {
    let r = DebuggingRecorder::new();
    let s = r.snapshotter();
    r.install()
        .map_err(|e| format!("install a metrics recorder: {e}"))?;
    Ok(s)
}

/// Summarises (and drains) what was recorded.
pub fn summarize(s: &Snapshotter) -> WalMetrics {
    let mut hist = std::collections::HashMap::<String, Vec<f64>>::new();
    for (key, _, _, value) in s.snapshot().into_vec() {
        if let DebugValue::Histogram(v) = value {
            hist.entry(key.key().name().to_string())
                .or_default()
                .extend(v.into_iter().map(|x| x.into_inner()));
        }
    }
    let mut take = |name: &str| hist.remove(name).and_then(Distribution::of);
    WalMetrics {
        fsync_seconds: take(raftwal_wal::metrics::FSYNC_SECONDS),
        group_writes: take(raftwal_wal::metrics::FSYNC_GROUP_WRITES),
        group_bytes: take(raftwal_wal::metrics::FSYNC_GROUP_BYTES),
    }
}

/// The summary as table lines.
pub fn table(m: &WalMetrics) -> String {
    let mut s = String::from("\nthe WAL's own metrics, every WAL of the run:\n");
    let mut line = |name: &str, d: &Option<Distribution>, scale: f64, unit: &str| {
        if let Some(d) = d {
            s.push_str(&format!(
                "{name:<28} n={:<8} mean {:.1}{unit}  p50 {:.1}{unit}  p99 {:.1}{unit}  p99.9 {:.1}{unit}  max {:.1}{unit}\n",
                d.count,
                d.mean * scale,
                d.p50 * scale,
                d.p99 * scale,
                d.p999 * scale,
                d.max * scale
            ));
        }
    };
    line("fsync", &m.fsync_seconds, 1e6, " µs");
    line("writes per group fsync", &m.group_writes, 1.0, "");
    line("KiB per group fsync", &m.group_bytes, 1.0 / 1024.0, "");
    s
}
