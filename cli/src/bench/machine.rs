//! What machine and file system a benchmark ran on.
#![allow(clippy::disallowed_methods)]

use std::path::Path;

use serde::Serialize;

/// The machine and the file system under the benchmark directory.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// Kernel release.
    pub kernel: String,
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// File system type of the mount holding the directory.
    pub filesystem: String,
    /// The mount point and device.
    pub mount: String,
    /// Device model, when the kernel exposes it.
    pub device_model: String,
}

fn read(p: &str) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Describes this machine and the file system holding `dir`.
pub fn describe(dir: &Path) -> Machine {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut best: Option<(usize, String, String, String)> = None;
    for line in read("/proc/mounts").lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !dir.starts_with(f[1]) {
            continue;
        }
        if best.as_ref().is_none_or(|b| f[1].len() >= b.0) {
            best = Some((f[1].len(), f[1].into(), f[0].into(), f[2].into()));
        }
    }
    let (mount, device, fs) = best.map(|(_, m, d, f)| (m, d, f)).unwrap_or_default();
    let dev_name = device.rsplit('/').next().unwrap_or("").to_string();
    let base: String = dev_name
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .into();
    let mut model = String::new();
    for cand in [&dev_name, &base] {
        for f in ["device/model", "device/name"] {
            let m = read(&format!("/sys/block/{cand}/{f}"));
            if !m.is_empty() && model.is_empty() {
                model = m;
            }
        }
    }
    if model.is_empty()
        && !base.is_empty()
        && std::path::Path::new(&format!("/sys/block/{base}")).exists()
    {
        model = format!("{base} (model not exposed; virtual disk?)");
    }
    let cpu = read("/proc/cpuinfo")
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("")
        .trim()
        .to_string();
    let memory_bytes = read("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    Machine {
        kernel: read("/proc/sys/kernel/osrelease"),
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        memory_bytes,
        filesystem: fs,
        mount: format!("{mount} on {device}"),
        device_model: model,
    }
}
