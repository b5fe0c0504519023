//! # raftwal-snapshot
//!
//! The file snapshot store (crash-safe, checksummed, streaming). Being built; see the project
//! issues.
