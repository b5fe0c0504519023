//! Criterion benchmarks of the WAL (filled in next).
fn main() {}
