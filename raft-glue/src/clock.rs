//! The clock seam: the node's ticks and its leader lease both read time from a [`Clock`], so a
//! test can drive time by hand and check lease safety without sleeping.
//!
//! [`SystemClock`] keeps counting while the machine is suspended (Linux `CLOCK_BOOTTIME`;
//! `Instant` is `CLOCK_MONOTONIC`, which stands still then): a leader that wakes up from a
//! suspend sees its lease as expired, not as fresh as when it fell asleep.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where a node reads the time.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real clock: monotonic, and on Linux counting the time the machine spends suspended.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        boot::now()
    }
}

#[cfg(target_os = "linux")]
mod boot {
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use rustix::time::{clock_gettime, ClockId};

    /// Time since boot, suspended time included.
    pub(super) fn since_boot() -> Duration {
        let t = clock_gettime(ClockId::Boottime);
        Duration::new(
            u64::try_from(t.tv_sec).unwrap_or(0),
            u32::try_from(t.tv_nsec).unwrap_or(0),
        )
    }

    /// An `Instant` that advances as `CLOCK_BOOTTIME` does, from a base taken once.
    pub(super) fn now() -> Instant {
        static BASE: OnceLock<(Instant, Duration)> = OnceLock::new();
        let (instant, boot) = *BASE.get_or_init(|| (Instant::now(), since_boot()));
        instant + since_boot().saturating_sub(boot)
    }
}

#[cfg(not(target_os = "linux"))]
mod boot {
    use std::time::Instant;

    pub(super) fn now() -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to. Clones share the time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    base: Instant,
    offset_ns: Arc<AtomicU64>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            base: Instant::now(),
            offset_ns: Arc::default(),
        }
    }
}

impl ManualClock {
    /// A clock starting now.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward.
    pub fn advance(&self, d: Duration) {
        self.offset_ns
            .fetch_add(d.as_nanos() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base + Duration::from_nanos(self.offset_ns.load(Ordering::SeqCst))
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The system clock follows `CLOCK_BOOTTIME` (which, unlike `Instant`, counts suspended
    /// time; a suspend itself cannot be staged in a test).
    #[test]
    fn the_system_clock_follows_boot_time() {
        let (b1, n1) = (boot::since_boot(), SystemClock.now());
        std::thread::sleep(Duration::from_millis(30));
        let (n2, b2) = (SystemClock.now(), boot::since_boot());
        let (clock, boot) = (n2 - n1, b2 - b1);
        assert!(clock <= boot, "{clock:?} > {boot:?}");
        assert!(
            boot - clock < Duration::from_millis(5),
            "{clock:?} vs {boot:?}"
        );
        assert!(clock >= Duration::from_millis(30));
    }
}
