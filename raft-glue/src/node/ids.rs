//! Request ids: how a waiting caller is matched to its own entry or read, and never to
//! another's.
//!
//! An id is `(kind, node, epoch, sequence)`, carried whole in the entry's context (proposals,
//! membership changes) or the read-index request's context (reads): 25 bytes, a kind byte then
//! three little-endian u64s. `epoch` is drawn at random each time a node starts, so ids differ
//! across nodes (by `node`) and across restarts of one node (by `epoch`): an entry proposed by
//! a previous leader, or by this node before a restart, never matches a waiting caller. Reads
//! have a kind of their own, so a read never matches a proposal.

use std::hash::{BuildHasher, Hasher};

/// The kinds of request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A command or membership change (an entry's context).
    Proposal = b'P' as isize,
    /// A read-index request.
    Read = b'R' as isize,
}

/// The encoded size of an id.
pub(crate) const ID_LEN: usize = 25;

/// Makes and recognises this node's request ids.
#[derive(Debug)]
pub(crate) struct Ids {
    node: u64,
    epoch: u64,
    next: u64,
}

impl Ids {
    /// Ids for `node`, with a fresh random epoch.
    pub(crate) fn new(node: u64) -> Self {
        Ids {
            node,
            epoch: random_u64(),
            next: 0,
        }
    }

    /// A new id of `kind`: its sequence number and its encoding.
    pub(crate) fn next(&mut self, kind: Kind) -> (u64, Vec<u8>) {
        self.next += 1;
        let mut b = Vec::with_capacity(ID_LEN);
        b.push(kind as u8);
        b.extend_from_slice(&self.node.to_le_bytes());
        b.extend_from_slice(&self.epoch.to_le_bytes());
        b.extend_from_slice(&self.next.to_le_bytes());
        (self.next, b)
    }

    /// The sequence number of `ctx` if it is one of this node's ids (this start) of `kind`.
    pub(crate) fn ours(&self, kind: Kind, ctx: &[u8]) -> Option<u64> {
        if ctx.len() != ID_LEN || ctx[0] != kind as u8 {
            return None;
        }
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&ctx[1 + 8 * i..9 + 8 * i]);
            u64::from_le_bytes(w)
        };
        (word(0) == self.node && word(1) == self.epoch).then(|| word(2))
    }
}

/// 64 random bits, from the standard library's randomly keyed hasher (seeded from the
/// operating system) over the time and the process id.
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_only_their_own_node_start_and_kind() {
        let mut a = Ids::new(1);
        let b = Ids::new(1); // the same node, restarted
        let c = Ids {
            node: 2,
            epoch: a.epoch,
            next: 0,
        };
        let (seq, ctx) = a.next(Kind::Proposal);
        assert_eq!(a.ours(Kind::Proposal, &ctx), Some(seq));
        assert_eq!(a.ours(Kind::Read, &ctx), None);
        assert_eq!(b.ours(Kind::Proposal, &ctx), None);
        assert_eq!(c.ours(Kind::Proposal, &ctx), None);
        assert_eq!(a.ours(Kind::Proposal, &seq.to_le_bytes()), None);
        assert_eq!(a.ours(Kind::Proposal, &[]), None);
    }
}
