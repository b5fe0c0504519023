//! The TCP wire format, and reads that never trust a length.
//!
//! All integers little-endian. Once per connection, after TLS (if any), the client sends a
//! hello: a magic (`RWRAFT\0\x02` for messages, `RWSNAP\0\x02` for a snapshot stream), the
//! cluster id (u64) and its node id (u64). Then frames: a length (u32, at most the
//! connection's maximum) and that many bytes: a protobuf-encoded raft `Message`.
//!
//! A snapshot stream is a frame with the `MsgSnapshot`, a frame with the stored snapshot's
//! metadata (`SnapshotMeta::encode`), the data as chunk frames of at most [`SNAPSHOT_CHUNK`]
//! bytes, and an empty frame; the receiver answers one byte, 0 (taken) or 1 (refused).
//!
//! A frame's body is read as it arrives, in pieces of at most [`READ_PIECE`] bytes: a length
//! field alone never makes the reader allocate.

use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use protobuf::Message as _;
use raft::eraftpb::Message;

/// The hello of a connection carrying Raft messages.
pub(crate) const MAGIC: [u8; 8] = *b"RWRAFT\x00\x02";
/// The hello of a connection carrying one snapshot.
pub(crate) const SNAP_MAGIC: [u8; 8] = *b"RWSNAP\x00\x02";
/// The largest chunk of snapshot data sent in one frame.
pub const SNAPSHOT_CHUNK: usize = 1 << 20;
/// A frame's body is read (and its buffer grown) this much at a time.
pub(crate) const READ_PIECE: usize = 64 << 10;

/// What a client says first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hello {
    pub(crate) magic: [u8; 8],
    pub(crate) cluster: u64,
    pub(crate) from: u64,
}

impl Hello {
    pub(crate) fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.magic);
        b[8..16].copy_from_slice(&self.cluster.to_le_bytes());
        b[16..].copy_from_slice(&self.from.to_le_bytes());
        b
    }

    pub(crate) fn decode(b: &[u8; 24]) -> Hello {
        let word = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[..8]);
        Hello {
            magic,
            cluster: word(8),
            from: word(16),
        }
    }
}

/// When a read gives up.
#[derive(Clone, Copy)]
pub(crate) struct Deadline<'a> {
    /// The server is stopping.
    pub(crate) stop: &'a AtomicBool,
    /// No byte by then: the connection is idle (or a handshake too slow).
    pub(crate) until: Instant,
}

/// Reads at least one byte (of a non-empty `buf`), waking up periodically (the socket's read
/// timeout) to honour `stop` and the deadline; the end of the stream is an error here.
pub(crate) fn read_some(r: &mut impl Read, buf: &mut [u8], d: Deadline<'_>) -> io::Result<usize> {
    loop {
        if d.stop.load(Ordering::SeqCst) {
            return Err(io::Error::other("stopped"));
        }
        if Instant::now() >= d.until {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "no data in time"));
        }
        match r.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => return Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Reads exactly `buf.len()` bytes.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8], d: Deadline<'_>) -> io::Result<()> {
    let mut got = 0;
    while got < buf.len() {
        got += read_some(r, &mut buf[got..], d)?;
    }
    Ok(())
}

/// Reads one frame's length, refusing one over `max`.
pub(crate) fn read_len(r: &mut impl Read, max: usize, d: Deadline<'_>) -> io::Result<usize> {
    let mut len = [0u8; 4];
    read_full(r, &mut len, d)?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes, at most {max} expected"),
        ));
    }
    Ok(len)
}

/// Reads one frame into `buf` (replacing its contents), the body as it arrives.
pub(crate) fn read_frame(
    r: &mut impl Read,
    buf: &mut Vec<u8>,
    max: usize,
    d: Deadline<'_>,
) -> io::Result<()> {
    let len = read_len(r, max, d)?;
    buf.clear();
    let mut piece = [0u8; 4096];
    while buf.len() < len {
        let want = (len - buf.len()).min(piece.len());
        let n = read_some(r, &mut piece[..want], d)?;
        if buf.capacity() - buf.len() < n {
            buf.reserve((len - buf.len()).min(READ_PIECE));
        }
        buf.extend_from_slice(&piece[..n]);
    }
    Ok(())
}

/// Writes one frame: the message, if it encodes within `max` bytes.
pub(crate) fn write_frame(w: &mut impl Write, m: &Message, max: usize) -> io::Result<()> {
    let b = m
        .write_to_bytes()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    write_bytes_frame(w, &b, max)
}

/// Writes one frame of raw bytes.
pub(crate) fn write_bytes_frame(w: &mut impl Write, b: &[u8], max: usize) -> io::Result<()> {
    let len = u32::try_from(b.len())
        .ok()
        .filter(|l| *l as usize <= max)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("a frame of {} bytes exceeds the maximum of {max}", b.len()),
            )
        })?;
    w.write_all(&len.to_le_bytes())?;
    w.write_all(b)
}

/// The snapshot data of a stream of chunk frames, up to the empty frame.
pub(crate) struct Chunks<'a, R> {
    pub(crate) r: &'a mut R,
    pub(crate) left: usize,
    pub(crate) done: bool,
    pub(crate) deadline: Deadline<'a>,
    /// The idle timeout: each chunk must start arriving within it.
    pub(crate) idle: std::time::Duration,
}

impl<R: Read> Read for Chunks<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let d = Deadline {
            until: Instant::now() + self.idle,
            ..self.deadline
        };
        while self.left == 0 {
            if self.done {
                return Ok(0);
            }
            self.left = read_len(self.r, SNAPSHOT_CHUNK, d)?;
            self.done = self.left == 0;
        }
        let want = buf.len().min(self.left);
        let n = read_some(self.r, &mut buf[..want], d)?;
        self.left -= n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn forever(stop: &AtomicBool) -> Deadline<'_> {
        Deadline {
            stop,
            until: Instant::now() + Duration::from_secs(60),
        }
    }

    #[test]
    fn a_length_alone_allocates_nothing() {
        let stop = AtomicBool::new(false);
        // 64 MiB announced, 10 bytes sent.
        let mut input = (64u32 << 20).to_le_bytes().to_vec();
        input.extend_from_slice(&[7; 10]);
        let mut buf = Vec::new();
        let r = read_frame(&mut &input[..], &mut buf, 64 << 20, forever(&stop));
        assert!(r.is_err());
        assert!(
            buf.capacity() <= READ_PIECE,
            "{} bytes reserved",
            buf.capacity()
        );
        // Over the maximum: refused before reading anything more.
        let input = (65u32 << 20).to_le_bytes();
        let e = read_frame(&mut &input[..], &mut buf, 64 << 20, forever(&stop)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn frames_round_trip() {
        let stop = AtomicBool::new(false);
        let mut m = Message {
            term: 7,
            ..Default::default()
        };
        m.mut_entries().push(raft::eraftpb::Entry {
            data: vec![1; 200_000].into(),
            ..Default::default()
        });
        let mut out = Vec::new();
        write_frame(&mut out, &m, 1 << 20).unwrap();
        assert!(write_frame(&mut Vec::new(), &m, 1000).is_err());
        let mut buf = Vec::new();
        read_frame(&mut &out[..], &mut buf, 1 << 20, forever(&stop)).unwrap();
        assert_eq!(Message::parse_from_bytes(&buf).unwrap(), m);
        let h = Hello {
            magic: MAGIC,
            cluster: 9,
            from: 3,
        };
        assert_eq!(Hello::decode(&h.encode()), h);
    }
}
