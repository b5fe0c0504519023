//! The stable keys Raft's state lives under, and how Raft's types are encoded in the stores.

use std::collections::BTreeSet;

use raft::eraftpb::{ConfState, Entry, EntryType, HardState};
use raftwal_wal::{EntryKind, LogEntry};

use super::Error;

/// Stable key of the encoded `HardState`.
pub const HARD_STATE_KEY: &[u8] = b"raft/hard_state";
/// Stable key of the encoded `ConfState`.
pub const CONF_STATE_KEY: &[u8] = b"raft/conf_state";
/// Stable key of the last applied snapshot's `(index, term)`.
pub const SNAPSHOT_KEY: &[u8] = b"raft/snapshot";
/// Stable key of the index up to which the stored `ConfState` includes every configuration
/// change (the index of the change that produced it).
pub const CONF_INDEX_KEY: &[u8] = b"raft/conf_index";
/// Stable key of the compaction point: the `(index, term)` of the last entry compacted away,
/// so that the term of the entry just before the first index stays known.
pub const COMPACTED_KEY: &[u8] = b"raft/compacted";
/// Stable key of the nodes that left this node's configuration and were not added back (their
/// ids, 8 bytes each, little-endian, ascending).
pub const REMOVED_KEY: &[u8] = b"raft/removed";

/// Every node a configuration names (voters, learners, both halves of a joint one).
fn members(cs: &ConfState) -> impl Iterator<Item = u64> + '_ {
    cs.voters
        .iter()
        .chain(&cs.learners)
        .chain(&cs.voters_outgoing)
        .chain(&cs.learners_next)
        .copied()
}

/// The removed nodes after the configuration moved from `old` to `new`: those `old` named
/// and `new` does not join them, those `new` names leave them.
pub(super) fn departed(old: &ConfState, new: &ConfState, removed: &mut BTreeSet<u64>) {
    let now: BTreeSet<u64> = members(new).collect();
    removed.extend(members(old).filter(|id| !now.contains(id)));
    removed.retain(|id| !now.contains(id));
}

/// Encodes a set of node ids for [`REMOVED_KEY`].
pub(super) fn encode_ids(ids: &BTreeSet<u64>) -> Vec<u8> {
    ids.iter().flat_map(|id| id.to_le_bytes()).collect()
}

/// Decodes [`REMOVED_KEY`]'s value.
pub(super) fn decode_ids(b: &[u8]) -> Result<BTreeSet<u64>, Error> {
    if !b.len().is_multiple_of(8) {
        return Err(Error::Decode {
            what: "removed nodes",
            detail: format!("{} bytes, not a multiple of 8", b.len()),
        });
    }
    Ok(b.chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

/// Converts a raft-rs entry into a log entry.
pub fn to_log_entry(e: &Entry) -> LogEntry {
    LogEntry {
        index: e.index,
        term: e.term,
        kind: match e.get_entry_type() {
            EntryType::EntryNormal => EntryKind::Normal,
            EntryType::EntryConfChange => EntryKind::ConfChange,
            EntryType::EntryConfChangeV2 => EntryKind::ConfChangeV2,
        },
        data: e.data.to_vec(),
        context: e.context.to_vec(),
    }
}

/// Converts a log entry into a raft-rs entry.
pub fn to_raft_entry(e: LogEntry) -> Entry {
    let mut out = Entry {
        index: e.index,
        term: e.term,
        data: e.data.into(),
        context: e.context.into(),
        ..Default::default()
    };
    out.set_entry_type(match e.kind {
        EntryKind::Normal | EntryKind::Noop => EntryType::EntryNormal,
        EntryKind::ConfChange => EntryType::EntryConfChange,
        EntryKind::ConfChangeV2 => EntryType::EntryConfChangeV2,
    });
    out
}

pub(super) fn decode<M: protobuf::Message>(what: &'static str, b: &[u8]) -> Result<M, Error> {
    let mut m = M::new();
    m.merge_from_bytes(b).map_err(|e| Error::Decode {
        what,
        detail: e.to_string(),
    })?;
    Ok(m)
}

pub(super) fn encode(m: &impl protobuf::Message) -> Vec<u8> {
    // Encoding a well-formed in-memory message cannot fail; an empty value would be caught by
    // the decoder on restart.
    m.write_to_bytes().unwrap_or_default()
}

/// Encodes an `(index, term)` pair (the snapshot mark, the compaction point): 16 bytes,
/// little-endian.
pub(super) fn encode_mark((index, term): (u64, u64)) -> Vec<u8> {
    let mut b = index.to_le_bytes().to_vec();
    b.extend_from_slice(&term.to_le_bytes());
    b
}

/// Decodes what [`encode_mark`] wrote; `(0, 0)` for an absent key.
pub(super) fn decode_mark(what: &'static str, b: Option<Vec<u8>>) -> Result<(u64, u64), Error> {
    let Some(b) = b else {
        return Ok((0, 0));
    };
    let word =
        |i: usize| -> Option<u64> { Some(u64::from_le_bytes(b.get(i..i + 8)?.try_into().ok()?)) };
    match (b.len(), word(0), word(8)) {
        (16, Some(index), Some(term)) => Ok((index, term)),
        _ => Err(Error::Decode {
            what,
            detail: format!("{} bytes, 16 expected", b.len()),
        }),
    }
}

/// Describes one of the adapter's stable keys for people (the `raftwal inspect` tool): the hard
/// state, the configuration, the snapshot mark. `None` for any other key, or a value that does
/// not decode.
///
/// ```
/// use raftwal_glue::{describe_stable_key, SNAPSHOT_KEY};
/// let mut mark = 42u64.to_le_bytes().to_vec();
/// mark.extend_from_slice(&3u64.to_le_bytes());
/// assert_eq!(describe_stable_key(SNAPSHOT_KEY, &mark).unwrap(), "snapshot at index 42, term 3");
/// ```
pub fn describe_stable_key(key: &[u8], value: &[u8]) -> Option<String> {
    if key == HARD_STATE_KEY {
        let hs: HardState = decode("HardState", value).ok()?;
        return Some(format!(
            "term {}, vote {}, commit {}",
            hs.term, hs.vote, hs.commit
        ));
    }
    if key == CONF_STATE_KEY {
        let cs: ConfState = decode("ConfState", value).ok()?;
        let mut s = format!("voters {:?}, learners {:?}", cs.voters, cs.learners);
        if !cs.voters_outgoing.is_empty() {
            s += &format!(", outgoing voters {:?}", cs.voters_outgoing);
        }
        return Some(s);
    }
    if key == SNAPSHOT_KEY {
        let (index, term) = decode_mark("snapshot mark", Some(value.to_vec())).ok()?;
        return Some(format!("snapshot at index {index}, term {term}"));
    }
    if key == COMPACTED_KEY {
        let (index, term) = decode_mark("compaction point", Some(value.to_vec())).ok()?;
        return Some(format!("compacted up to index {index}, term {term}"));
    }
    if key == REMOVED_KEY {
        return Some(format!("removed nodes {:?}", decode_ids(value).ok()?));
    }
    if key == CONF_INDEX_KEY {
        let index = u64::from_le_bytes(value.try_into().ok()?);
        return Some(format!("configuration as of index {index}"));
    }
    None
}

/// Encodes a `ConfState` for [`SnapshotStore::create`](raftwal_snapshot::SnapshotStore::create)'s `configuration`.
pub fn encode_conf_state(cs: &ConfState) -> Vec<u8> {
    encode(cs)
}

/// The protobuf field a snapshot's configuration carries the removed nodes in: one `ConfState`
/// does not define, so a reader that does not know it skips it.
const REMOVED_FIELD: u32 = 15;

/// Encodes a snapshot's configuration: the `ConfState` with the nodes that left the cluster up
/// to the snapshot as a repeated varint field 15, so that a node installing the snapshot knows
/// them ([`RaftStorage::removed_nodes`](super::RaftStorage::removed_nodes)).
pub fn encode_snapshot_conf(cs: &ConfState, removed: &BTreeSet<u64>) -> Vec<u8> {
    use protobuf::Message as _;
    let mut cs = cs.clone();
    for &id in removed {
        cs.mut_unknown_fields().add_varint(REMOVED_FIELD, id);
    }
    encode(&cs)
}

/// Decodes a snapshot's configuration ([`encode_snapshot_conf`], or a bare `ConfState`): the
/// configuration (without the extra field) and the removed nodes.
///
/// # Errors
/// [`Error::Decode`] if it is not a `ConfState`.
pub fn decode_snapshot_conf(b: &[u8]) -> Result<(ConfState, BTreeSet<u64>), Error> {
    use protobuf::Message as _;
    let mut cs: ConfState = decode("ConfState", b)?;
    let removed = cs
        .get_unknown_fields()
        .get(REMOVED_FIELD)
        .map(|v| v.varint.iter().copied().collect())
        .unwrap_or_default();
    *cs.mut_unknown_fields() = protobuf::UnknownFields::new();
    Ok((cs, removed))
}
