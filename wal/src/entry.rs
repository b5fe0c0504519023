//! The log entry type.

/// What an entry carries. The numbering is part of the on-disk format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum EntryKind {
    /// An application command (raft-rs `EntryNormal`).
    #[default]
    Normal = 0,
    /// A configuration change (raft-rs `EntryConfChange`).
    ConfChange = 1,
    /// A joint-consensus configuration change (raft-rs `EntryConfChangeV2`).
    ConfChangeV2 = 2,
    /// A no-op or barrier entry.
    Noop = 3,
}

impl EntryKind {
    /// Decodes the on-disk byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => EntryKind::Normal,
            1 => EntryKind::ConfChange,
            2 => EntryKind::ConfChangeV2,
            3 => EntryKind::Noop,
            _ => return None,
        })
    }
}

/// One Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LogEntry {
    /// Its log index (≥ 1).
    pub index: u64,
    /// The term it was proposed in.
    pub term: u64,
    /// What it carries.
    pub kind: EntryKind,
    /// The payload.
    pub data: Vec<u8>,
    /// Opaque context bytes (raft-rs `Entry::context`).
    pub context: Vec<u8>,
}

impl LogEntry {
    /// A normal entry with empty context.
    ///
    /// ```
    /// let e = raftwal_wal::LogEntry::new(7, 2, b"put x=1".to_vec());
    /// assert_eq!((e.index, e.term), (7, 2));
    /// ```
    pub fn new(index: u64, term: u64, data: Vec<u8>) -> Self {
        LogEntry {
            index,
            term,
            kind: EntryKind::Normal,
            data,
            context: Vec::new(),
        }
    }

    /// The bytes of payload and context, the measure `get_logs` uses for `max_bytes`.
    pub fn payload_len(&self) -> u64 {
        (self.data.len() + self.context.len()) as u64
    }
}
