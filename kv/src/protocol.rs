//! The client protocol: one request per line, bounded in length, parsed into a [`Request`].

use std::io::{self, BufRead};

/// What a client asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    Get(String),
    Set(String, String),
    Del(String),
    /// A request that cannot be served, with the reply that says why.
    Bad(String),
}

/// Parses one line (without its `\n`).
pub(crate) fn parse(line: &str) -> Request {
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

/// One line read with a bound.
pub(crate) enum Line {
    Text(String),
    /// Longer than the bound; its bytes were skipped up to the next newline.
    TooLong,
    Eof,
}

/// Reads a line of at most `max` bytes (without its `\n`), never holding more than `max`: a
/// longer one is skipped to its end and reported as [`Line::TooLong`].
pub(crate) fn read_line(r: &mut impl BufRead, max: usize) -> io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    loop {
        let buf = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(if line.is_empty() && !too_long {
                Line::Eof
            } else if too_long {
                Line::TooLong
            } else {
                Line::Text(String::from_utf8_lossy(&line).into_owned())
            });
        }
        let (chunk, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (&buf[..i], Some(i + 1)),
            None => (buf, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buf.len());
        r.consume(used);
        if done.is_some() {
            return Ok(if too_long {
                Line::TooLong
            } else {
                Line::Text(String::from_utf8_lossy(&line).into_owned())
            });
        }
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
        input.extend_from_slice(b"\nGET b\n");
        let mut r = io::BufReader::with_capacity(64, &input[..]);
        assert!(matches!(read_line(&mut r, 100).unwrap(), Line::Text(l) if l == "GET a"));
        assert!(matches!(read_line(&mut r, 100).unwrap(), Line::TooLong));
        assert!(matches!(read_line(&mut r, 100).unwrap(), Line::Text(l) if l == "GET b"));
        assert!(matches!(read_line(&mut r, 100).unwrap(), Line::Eof));
    }
}
