//! Benchmark building blocks shared by the criterion benches and `raftwal bench`.

pub mod raw;
