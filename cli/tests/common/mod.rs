//! What the command-line tests share: running the `raftwal` binary.
#![allow(dead_code, clippy::expect_used)]

use std::process::{Command, Output};

/// Runs `raftwal` with `args`.
pub fn raftwal(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raftwal"))
        .args(args)
        .output()
        .expect("run raftwal")
}

/// What it printed, stdout then stderr.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
