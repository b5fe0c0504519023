//! The client protocol: one request per line, bounded in length, parsed into a [`Request`].

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `GET key`.
    Get(String),
    /// `SET key value`.
    Set(String, String),
    /// `DEL key`.
    Del(String),
    /// A request that cannot be served, with the reply that says why.
    Bad(String),
}

/// Parses one line (without its `\n`).
pub fn parse(line: &str) -> Request {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.splitn(3, ' ');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("GET"), Some(k), None) if !k.is_empty() => Request::Get(k.into()),
        (Some("DEL"), Some(k), None) if !k.is_empty() => Request::Del(k.into()),
        (Some("SET"), Some(k), Some(v)) if !k.is_empty() && !k.contains('\0') => {
            Request::Set(k.into(), v.into())
        }
        _ => Request::Bad("ERR bad request (GET key | SET key value | DEL key)".into()),
    }
}

/// Splits a byte stream into request lines of at most `max` bytes, never holding more than
/// that: a longer line is skipped to its end and reported as `None`.
#[derive(Debug, Default)]
pub struct Lines {
    max: usize,
    partial: Vec<u8>,
    skipping: bool,
}

impl Lines {
    /// A splitter for lines of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Lines {
            max,
            ..Lines::default()
        }
    }

    /// Takes the next bytes; returns the lines they complete (without `\n`; `None` for a line
    /// that was too long).
    pub fn feed(&mut self, mut bytes: &[u8]) -> Vec<Option<String>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let (chunk, end) = match bytes.iter().position(|&b| b == b'\n') {
                Some(i) => (&bytes[..i], Some(i + 1)),
                None => (bytes, None),
            };
            if !self.skipping {
                if self.partial.len() + chunk.len() > self.max {
                    self.skipping = true;
                    self.partial = Vec::new();
                } else {
                    self.partial.extend_from_slice(chunk);
                }
            }
            let Some(e) = end else {
                break;
            };
            out.push(if std::mem::take(&mut self.skipping) {
                None
            } else {
                Some(String::from_utf8_lossy(&std::mem::take(&mut self.partial)).into_owned())
            });
            bytes = &bytes[e..];
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse("GET a"), Request::Get("a".into()));
        assert_eq!(parse("SET a b c\r"), Request::Set("a".into(), "b c".into()));
        assert_eq!(parse("DEL a"), Request::Del("a".into()));
        for bad in ["", "GET", "GET a b", "SET a", "PUT a b", "SET  b"] {
            assert!(matches!(parse(bad), Request::Bad(_)), "{bad:?}");
        }
    }

    #[test]
    fn long_lines_are_skipped_without_being_held() {
        let mut input = b"GET a\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 10_000));
        input.extend_from_slice(b"\nGET b\nGET");
        let mut l = Lines::new(100);
        let mut got = Vec::new();
        for piece in input.chunks(7) {
            got.extend(l.feed(piece));
            assert!(
                l.partial.capacity() <= 200,
                "{} bytes held",
                l.partial.capacity()
            );
        }
        assert_eq!(got, vec![Some("GET a".into()), None, Some("GET b".into())]);
        assert_eq!(l.feed(b" c\n"), vec![Some("GET c".into())]);
    }
}
