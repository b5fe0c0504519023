//! raft-rs logs through `slog`; this bridge forwards its records to `tracing` (target `raft`),
//! with the node's id and, when the record carries one, the term as fields: warnings and errors
//! as such, its info and debug records at debug. Records are formatted only when `tracing`
//! would keep them.

use std::fmt::{self, Write as _};

use slog::{Drain, Key, OwnedKVList, Record, Serializer, KV};
use tracing::Level;

/// A `slog::Logger` for node `id` that forwards to `tracing`.
pub(crate) fn raft_logger(id: u64) -> slog::Logger {
    slog::Logger::root(Bridge { node: id }, slog::o!())
}

struct Bridge {
    node: u64,
}

/// The record's key-values: the term apart, the rest as `key=value` text.
#[derive(Default)]
struct Fields {
    term: Option<u64>,
    rest: String,
}

impl Serializer for Fields {
    fn emit_arguments(&mut self, key: Key, val: &fmt::Arguments<'_>) -> slog::Result {
        if key == "term" {
            if let Ok(t) = val.to_string().parse() {
                self.term = Some(t);
                return Ok(());
            }
        }
        if key == "raft_id" {
            return Ok(()); // the node id is its own field
        }
        let _ = write!(self.rest, " {key}={val}");
        Ok(())
    }
}

fn level(l: slog::Level) -> Level {
    match l {
        slog::Level::Critical | slog::Level::Error => Level::ERROR,
        slog::Level::Warning => Level::WARN,
        // raft-rs logs at info for events a peer can cause at will (every message of a lower
        // term, every rejected vote): kept at debug, so a peer cannot flood an operator's logs.
        // The glue logs the events an operator needs (leader and membership changes) itself.
        slog::Level::Info | slog::Level::Debug => Level::DEBUG,
        slog::Level::Trace => Level::TRACE,
    }
}

impl Drain for Bridge {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        // `tracing`'s macros need the level as a constant: one arm per level.
        macro_rules! forward {
            ($lvl:expr) => {{
                if tracing::enabled!(target: "raft", $lvl) {
                    let mut f = Fields::default();
                    let _ = record.kv().serialize(record, &mut f);
                    let _ = values.serialize(record, &mut f);
                    let msg = record.msg();
                    match f.term {
                        Some(term) => tracing::event!(target: "raft", $lvl, node = self.node, term, "{msg}{}", f.rest),
                        None => tracing::event!(target: "raft", $lvl, node = self.node, "{msg}{}", f.rest),
                    }
                }
            }};
        }
        match level(record.level()) {
            Level::ERROR => forward!(Level::ERROR),
            Level::WARN => forward!(Level::WARN),
            Level::DEBUG => forward!(Level::DEBUG),
            _ => forward!(Level::TRACE),
        }
        Ok(())
    }
}
