//! The client port: one thread serves every connection (mio), so a request costs no thread
//! hand-off of its own: requests from many connections are read in one wake-up, their writes
//! proposed as they are parsed (sharing Raft rounds), and outcomes come back through a callback
//! ([`Node::propose_with`]) that queues them and wakes the thread once for many. Reads run on
//! a few worker threads (a read may wait for a leader). Each connection's requests take effect
//! in order: a read starts once every earlier request of its connection is answered, a write is
//! proposed at once unless an earlier read of its connection is unanswered (so pipelined
//! writes share rounds, and a read sees the writes sent before it). Replies go back in order,
//! as many as are ready in one write.
//!
//! Bounds: at most `max_clients` connections (more are told so and closed), request lines of at
//! most `max_line` bytes (longer ones are skipped and answered with an error, never held), a
//! connection idle for [`CLIENT_IDLE`] (also one whose client stopped reading) is closed, and
//! an accept error (out of descriptors) is logged and retried. A connection with
//! [`MAX_PIPELINE`] requests unanswered or unsent, or [`MAX_OUT`] bytes of replies its client
//! has not read, is not read from until that drops (its client is held back by TCP flow
//! control), and only its first `MAX_PIPELINE` requests are started: one connection holds at
//! most `MAX_PIPELINE` replies (each within `max_line`), the requests of one more 16 KiB read,
//! and `MAX_OUT` bytes of output.

use std::collections::{HashMap, VecDeque};
use std::io::{self, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use raftwal_glue::Node;

use crate::protocol::{self, Lines, Request};
use crate::server::{read, write_error};
use crate::store::{self, Kv};

/// A client connection that made no progress this long (nothing read from it or written to
/// it, and no request of its under way) is closed.
pub(crate) const CLIENT_IDLE: Duration = Duration::from_secs(300);
/// Requests of one connection held at most (unanswered, or answered and not yet sent).
pub(crate) const MAX_PIPELINE: usize = 128;
/// Bytes of replies written for one connection and not yet taken by its socket, at most.
pub(crate) const MAX_OUT: usize = 1 << 20;
/// Worker threads serving reads.
const READERS: usize = 4;
const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);

/// Outcomes waiting for the reactor: `(connection, request number, reply line)`.
#[derive(Clone)]
struct Done {
    queue: Arc<Mutex<Vec<(Token, u64, String)>>>,
    woken: Arc<AtomicBool>,
    waker: Arc<Waker>,
}

impl Done {
    fn push(&self, token: Token, seq: u64, reply: String) {
        crate::lock(&self.queue).push((token, seq, reply));
        if !self.woken.swap(true, Ordering::SeqCst) {
            let _ = self.waker.wake();
        }
    }

    fn take(&self) -> Vec<(Token, u64, String)> {
        self.woken.store(false, Ordering::SeqCst);
        std::mem::take(&mut *crate::lock(&self.queue))
    }
}

/// A request of a connection, in order.
enum Slot {
    /// Answered.
    Done(String),
    /// Under way (a read on a worker, or a write proposed).
    Waiting { read: bool },
    /// Not started: an earlier request must be answered first.
    Deferred(Request),
}

struct Conn {
    stream: TcpStream,
    lines: Lines,
    /// Requests in order; the first is request number `first`.
    slots: VecDeque<Slot>,
    first: u64,
    out: Vec<u8>,
    writable: bool,
    eof: bool,
    /// Reading stopped at a bound, with what arrived perhaps still in the socket.
    paused: bool,
    active: Instant,
}

impl Conn {
    /// At a bound: no more requests are read until it drops.
    fn full(&self) -> bool {
        self.slots.len() >= MAX_PIPELINE || self.out.len() >= MAX_OUT
    }
}

/// Serves clients on `listener` until `stop`.
pub(crate) fn serve(
    listener: std::net::TcpListener,
    node: &Arc<Node>,
    kv: &Kv,
    stop: &AtomicBool,
    max_clients: usize,
    max_line: usize,
) -> io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let done = Done {
        queue: Arc::default(),
        woken: Arc::default(),
        waker: Arc::new(Waker::new(poll.registry(), WAKER)?),
    };
    let reads = start_readers(node, kv, &done)?;
    let mut r = Reactor {
        conns: HashMap::new(),
        next: 2,
        node: node.clone(),
        done,
        reads,
        max_clients,
        max_line,
        warned: None,
        again: Vec::new(),
    };
    let mut events = Events::with_capacity(1024);
    let mut accept_later = false;
    while !stop.load(Ordering::SeqCst) {
        let wait = if !r.again.is_empty() {
            Duration::ZERO
        } else if accept_later {
            Duration::from_millis(100)
        } else {
            Duration::from_secs(1)
        };
        if let Err(e) = poll.poll(&mut events, Some(wait)) {
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
        if accept_later {
            accept_later = !r.accept(&mut listener, &poll);
        }
        for ev in events.iter() {
            match ev.token() {
                LISTENER => accept_later = !r.accept(&mut listener, &poll),
                WAKER => r.completed(&poll),
                t => r.ready(t, ev.is_readable(), ev.is_writable(), &poll),
            }
        }
        for t in std::mem::take(&mut r.again) {
            r.resume(t, &poll);
        }
        r.close_idle(&poll);
    }
    Ok(())
}

/// What [`Reactor::advance`] starts.
enum Start {
    Read(String),
    Write(Vec<u8>),
}

/// The workers that serve reads, fed by the returned channel.
fn start_readers(
    node: &Arc<Node>,
    kv: &Kv,
    done: &Done,
) -> io::Result<Sender<(Token, u64, String)>> {
    let (tx, rx) = mpsc::channel::<(Token, u64, String)>();
    let rx = Arc::new(Mutex::new(rx));
    for _ in 0..READERS {
        let (node, kv, done, rx) = (node.clone(), kv.clone(), done.clone(), rx.clone());
        std::thread::Builder::new()
            .name("kv-read".into())
            .spawn(move || reader(&rx, &node, &kv, &done))?;
    }
    Ok(tx)
}

fn reader(rx: &Mutex<Receiver<(Token, u64, String)>>, node: &Node, kv: &Kv, done: &Done) {
    loop {
        let job = crate::lock(rx).recv();
        let Ok((token, seq, key)) = job else {
            return;
        };
        done.push(token, seq, read(node, kv, &key));
    }
}

struct Reactor {
    conns: HashMap<Token, Conn>,
    next: usize,
    node: Arc<Node>,
    done: Done,
    reads: Sender<(Token, u64, String)>,
    max_clients: usize,
    max_line: usize,
    /// When an accept error was last logged.
    warned: Option<Instant>,
    /// Connections to read from again on the next turn ([`Reactor::resume`]).
    again: Vec<Token>,
}

impl Reactor {
    /// Accepts every pending connection; `false` if an error means trying again later.
    fn accept(&mut self, listener: &mut TcpListener, poll: &Poll) -> bool {
        loop {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    if self.conns.len() >= self.max_clients {
                        let _ = stream.write_all(b"ERR too many connections\n");
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let token = Token(self.next);
                    self.next += 1;
                    if poll
                        .registry()
                        .register(&mut stream, token, Interest::READABLE)
                        .is_err()
                    {
                        continue;
                    }
                    self.conns.insert(
                        token,
                        Conn {
                            stream,
                            lines: Lines::new(self.max_line),
                            slots: VecDeque::new(),
                            first: 0,
                            out: Vec::new(),
                            writable: false,
                            eof: false,
                            paused: false,
                            active: Instant::now(),
                        },
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Once a second at most: the error lasts while descriptors are short.
                    if self
                        .warned
                        .is_none_or(|t| t.elapsed() >= Duration::from_secs(1))
                    {
                        tracing::warn!(error = %e, "accepting a client failed; retrying");
                        self.warned = Some(Instant::now());
                    }
                    return false;
                }
            }
        }
    }

    /// Outcomes arrived: fill their slots and send what is ready.
    fn completed(&mut self, poll: &Poll) {
        let mut touched = Vec::new();
        for (token, seq, reply) in self.done.take() {
            if let Some(c) = self.conns.get_mut(&token) {
                if let Some(slot) = seq
                    .checked_sub(c.first)
                    .and_then(|i| c.slots.get_mut(i as usize))
                {
                    *slot = Slot::Done(reply);
                    touched.push(token);
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for t in touched {
            self.advance(t);
            self.flush(t, poll);
            self.resume(t, poll);
        }
    }

    /// Reads again, once, from a connection paused at a bound and now below it (the socket
    /// raises no new event for what arrived while paused); if it is so again, it waits in
    /// `again` for the next turn of the loop, so one client cannot keep the loop to itself.
    fn resume(&mut self, token: Token, poll: &Poll) {
        let resumable = |r: &Self| r.conns.get(&token).is_some_and(|c| c.paused && !c.full());
        if !resumable(self) {
            return;
        }
        if self.read(token).is_err() {
            self.close(token, poll);
            return;
        }
        self.flush(token, poll);
        if resumable(self) {
            self.again.push(token);
        }
    }

    fn ready(&mut self, token: Token, readable: bool, writable: bool, poll: &Poll) {
        if readable && self.read(token).is_err() {
            self.close(token, poll);
            return;
        }
        if readable || writable {
            self.flush(token, poll);
            self.resume(token, poll);
        }
    }

    /// Reads what has arrived, handling every complete line.
    fn read(&mut self, token: Token) -> io::Result<()> {
        let mut lines = Vec::new();
        {
            let Some(c) = self.conns.get_mut(&token) else {
                return Ok(());
            };
            c.paused = false;
            let mut buf = [0u8; 16 << 10];
            loop {
                if c.full() || c.slots.len() + lines.len() >= MAX_PIPELINE {
                    c.paused = true;
                    break;
                }
                let n = match c.stream.read(&mut buf) {
                    Ok(0) => {
                        c.eof = true;
                        break;
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                c.active = Instant::now();
                lines.extend(c.lines.feed(&buf[..n]));
                // A short read took everything there was; what arrives later raises a new
                // event. (Reading on to `WouldBlock` would cost a system call per request.)
                if n < buf.len() {
                    break;
                }
            }
        }
        for line in lines {
            self.request(token, line);
        }
        self.advance(token);
        Ok(())
    }

    /// One request: queued in order, answered at once if it is bad.
    fn request(&mut self, token: Token, line: Option<String>) {
        let max_line = self.max_line;
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        c.slots.push_back(match line.map(|l| protocol::parse(&l)) {
            None => Slot::Done(format!("ERR line too long (at most {max_line} bytes)")),
            Some(Request::Bad(msg)) => Slot::Done(msg),
            Some(r) => Slot::Deferred(r),
        });
    }

    /// Starts what may start: a read once everything before it is answered, a write unless an
    /// earlier read is unanswered; in order.
    fn advance(&mut self, token: Token) {
        let Some(c) = self.conns.get_mut(&token) else {
            return;
        };
        let (first, mut read_ahead, mut all_done) = (c.first, false, true);
        let mut start = Vec::new();
        // Only the first `MAX_PIPELINE` requests start: their replies are what it may hold.
        for (i, slot) in c.slots.iter_mut().enumerate().take(MAX_PIPELINE) {
            let seq = first + i as u64;
            match slot {
                Slot::Done(_) => {}
                Slot::Waiting { read } => read_ahead |= *read,
                Slot::Deferred(Request::Get(_)) if all_done => {
                    let Slot::Deferred(Request::Get(key)) =
                        std::mem::replace(slot, Slot::Waiting { read: true })
                    else {
                        break;
                    };
                    start.push((seq, Start::Read(key)));
                    read_ahead = true;
                }
                Slot::Deferred(Request::Set(..) | Request::Del(_)) if !read_ahead => {
                    let Slot::Deferred(r) = std::mem::replace(slot, Slot::Waiting { read: false })
                    else {
                        break;
                    };
                    let cmd = match r {
                        Request::Set(k, v) => store::set(&k, &v),
                        Request::Del(k) => store::del(&k),
                        _ => break,
                    };
                    start.push((seq, Start::Write(cmd)));
                }
                Slot::Deferred(_) => break,
            }
            all_done &= matches!(slot, Slot::Done(_));
        }
        for (seq, what) in start {
            let failed = match what {
                Start::Read(key) => self
                    .reads
                    .send((token, seq, key))
                    .err()
                    .map(|_| "ERR the server is stopping".to_string()),
                Start::Write(cmd) => self.propose(token, seq, cmd),
            };
            if let Some(reply) = failed {
                if let Some(slot) = self
                    .conns
                    .get_mut(&token)
                    .and_then(|c| c.slots.get_mut((seq - c.first) as usize))
                {
                    *slot = Slot::Done(reply);
                }
            }
        }
    }

    fn propose(&self, token: Token, seq: u64, command: Vec<u8>) -> Option<String> {
        let done = self.done.clone();
        let r = self.node.propose_with(command, move |r| {
            let reply = match r {
                Ok(a) => format!("OK {}", a.index),
                Err(e) => write_error(&e),
            };
            done.push(token, seq, reply);
        });
        match r {
            Ok(()) => None,
            Err(e) => Some(write_error(&e)),
        }
    }

    /// Moves the replies ready at the front into the output and writes what the socket takes;
    /// again while that frees room (requests past the window start, later replies go out).
    fn flush(&mut self, token: Token, poll: &Poll) {
        loop {
            let Some(c) = self.conns.get_mut(&token) else {
                return;
            };
            let mut popped = false;
            while c.out.len() < MAX_OUT && matches!(c.slots.front(), Some(Slot::Done(_))) {
                if let Some(Slot::Done(reply)) = c.slots.pop_front() {
                    c.out.extend_from_slice(reply.as_bytes());
                    c.out.push(b'\n');
                    c.first += 1;
                    popped = true;
                }
            }
            let mut failed = false;
            while !c.out.is_empty() {
                match c.stream.write(&c.out) {
                    Ok(0) => {
                        failed = true;
                        break;
                    }
                    Ok(n) => {
                        c.out.drain(..n);
                        c.active = Instant::now();
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        failed = true;
                        break;
                    }
                }
            }
            let finished = c.eof && c.slots.is_empty() && c.out.is_empty();
            if failed || finished {
                self.close(token, poll);
                return;
            }
            let want = !c.out.is_empty();
            if want != c.writable {
                c.writable = want;
                let interest = if want {
                    Interest::READABLE | Interest::WRITABLE
                } else {
                    Interest::READABLE
                };
                let _ = poll.registry().reregister(&mut c.stream, token, interest);
            }
            // The socket may have taken everything, making room for replies still waiting.
            let more = c.out.len() < MAX_OUT && matches!(c.slots.front(), Some(Slot::Done(_)));
            if popped {
                self.advance(token);
            } else if !more {
                return;
            }
        }
    }

    fn close(&mut self, token: Token, poll: &Poll) {
        if let Some(mut c) = self.conns.remove(&token) {
            let _ = poll.registry().deregister(&mut c.stream);
        }
    }

    fn close_idle(&mut self, poll: &Poll) {
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.active.elapsed() >= CLIENT_IDLE
                    && !c.slots.iter().any(|s| matches!(s, Slot::Waiting { .. }))
            })
            .map(|(t, _)| *t)
            .collect();
        for t in idle {
            self.close(t, poll);
        }
    }
}
