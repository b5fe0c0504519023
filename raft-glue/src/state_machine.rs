//! What the application supplies: the replicated state machine and its snapshots.

use std::io::{self, Read, Write};

/// The replicated state machine: applies committed commands, captures and restores its state.
pub trait StateMachine: Send + 'static {
    /// Applies the command committed at `index`; the result goes back to its proposer.
    fn apply(&mut self, index: u64, command: &[u8]) -> Vec<u8>;

    /// Captures the state as of the last applied command. Called on the node's thread, so it
    /// should be quick (a copy-on-write handle, a clone); the returned snapshot is written out
    /// on another thread while later commands are applied.
    ///
    /// # Errors
    /// Any; the snapshot is skipped and retried after another threshold of entries.
    fn snapshot(&mut self) -> io::Result<Box<dyn StateSnapshot>>;

    /// Replaces the whole state with a snapshot's (written by [`StateSnapshot::persist`]).
    ///
    /// # Errors
    /// Any; the node does not start (or stops) then, since its state is unknown.
    fn restore(&mut self, data: &mut dyn Read) -> io::Result<()>;
}

/// A point-in-time capture of a state machine, written out while later commands are applied.
pub trait StateSnapshot: Send + 'static {
    /// Writes the captured state (the bytes [`crate::StateMachine::restore`] reads back).
    ///
    /// # Errors
    /// I/O errors of `out`, or the application's own (the snapshot is then discarded).
    fn persist(&mut self, out: &mut dyn Write) -> io::Result<()>;
}

/// A state already serialized: persisting writes the bytes.
impl StateSnapshot for Vec<u8> {
    fn persist(&mut self, out: &mut dyn Write) -> io::Result<()> {
        out.write_all(self)
    }
}
