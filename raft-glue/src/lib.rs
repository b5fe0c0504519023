//! Raft glue: runs Raft over the raftwal stores. Not built yet (see the project issues).
