//! A state machine snapshot format for the tests: length-prefixed key/value pairs.
#![allow(dead_code)]

use std::io::{self, Read};

/// Encodes pairs as `u32 key length, key, u32 value length, value`, little-endian.
pub fn encode<'a>(pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        for part in [k, v] {
            out.extend_from_slice(&(part.len() as u32).to_le_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

/// Decodes what [`encode`] wrote.
pub fn decode(r: &mut dyn Read) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut all = Vec::new();
    r.read_to_end(&mut all)?;
    let mut rest = &all[..];
    let take = |rest: &mut &[u8]| -> io::Result<Vec<u8>> {
        let bad = || io::Error::new(io::ErrorKind::InvalidData, "truncated pair");
        let len = rest.get(..4).ok_or_else(bad)?;
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let part = rest.get(4..4 + len).ok_or_else(bad)?.to_vec();
        *rest = &rest[4 + len..];
        Ok(part)
    };
    let mut out = Vec::new();
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        out.push((k, v));
    }
    Ok(out)
}
