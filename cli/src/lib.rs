//! The `raftwal` command line's library: the benchmark ([`mod@bench`], `raftwal bench`, also used
//! by the criterion benches) and the tools ([`tools`]: `inspect`, `verify`, `dump`).

pub mod bench;
pub mod tools;
