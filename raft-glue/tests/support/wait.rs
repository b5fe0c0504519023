//! Waiting for an outcome in tests: polls with a generous deadline, never asserts a duration.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// Polls `f` every 10 ms for up to 30 s; its first `Some`, or `None` at the deadline.
pub fn wait<T>(mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return Some(v);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}
