//! The replicated state: a map from keys to values, snapshotted as one `key value` line each.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex, MutexGuard};

use raftwal_glue::{StateMachine, StateSnapshot};

/// The map, shared between the node (which applies commands) and the client connections
/// (which read after a linearizable read point).
#[derive(Clone, Default)]
pub(crate) struct Kv(Arc<Mutex<BTreeMap<String, String>>>);

impl Kv {
    fn map(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        crate::lock(&self.0)
    }

    pub(crate) fn get(&self, key: &str) -> Option<String> {
        self.map().get(key).cloned()
    }
}

/// A command: `S` key `\0` value, or `D` key.
pub(crate) fn set(key: &str, value: &str) -> Vec<u8> {
    let mut c = vec![b'S'];
    c.extend_from_slice(key.as_bytes());
    c.push(0);
    c.extend_from_slice(value.as_bytes());
    c
}

pub(crate) fn del(key: &str) -> Vec<u8> {
    let mut c = vec![b'D'];
    c.extend_from_slice(key.as_bytes());
    c
}

impl StateMachine for Kv {
    fn apply(&mut self, _index: u64, command: &[u8]) -> Vec<u8> {
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        match command.split_first() {
            Some((b'S', rest)) => {
                if let Some(p) = rest.iter().position(|&b| b == 0) {
                    self.map().insert(text(&rest[..p]), text(&rest[p + 1..]));
                }
            }
            Some((b'D', key)) => {
                self.map().remove(&text(key));
            }
            _ => {}
        }
        Vec::new()
    }

    fn snapshot(&mut self) -> std::io::Result<Box<dyn StateSnapshot>> {
        let mut out = Vec::new();
        for (k, v) in self.map().iter() {
            writeln!(out, "{k} {v}")?;
        }
        Ok(Box::new(out))
    }

    fn restore(&mut self, data: &mut dyn Read) -> std::io::Result<()> {
        let mut map = BTreeMap::new();
        for line in BufReader::new(data).lines() {
            let line = line?;
            let (k, v) = line.split_once(' ').ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "snapshot line without a value",
                )
            })?;
            map.insert(k.to_string(), v.to_string());
        }
        *self.map() = map;
        Ok(())
    }
}
