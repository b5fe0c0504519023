//! An in-memory network for tests: per-link partitions (both ways or one way), seedable message
//! loss, delay, duplication and reordering, and rules aimed at one kind of message ([`Route`]):
//! hold it back, delay it, or cut the network the moment it is sent.

use std::collections::{BTreeSet, HashMap};
use std::io::{self, Read};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use raft::eraftpb::{Message, MessageType};
use raftwal_snapshot::SnapshotMeta;

use crate::mailbox::Mailbox;
use crate::transport::Transport;

/// Message faults an in-memory network injects, decided by a seeded PRNG.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NetFaults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Probability that a message is held back and delivered later, after others.
    pub reorder: f64,
    /// Probability that a message is delivered after a delay (up to `max_delay`, uniformly).
    pub delay: f64,
    /// The longest injected delay.
    pub max_delay: Duration,
    /// PRNG seed.
    pub seed: u64,
}

/// Which messages a rule applies to: every field that is set must match.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Route {
    /// The sender.
    pub from: Option<u64>,
    /// The recipient.
    pub to: Option<u64>,
    /// The message type.
    pub msg_type: Option<MessageType>,
}

impl Route {
    /// Every message of one type.
    pub fn of(msg_type: MessageType) -> Self {
        Route {
            msg_type: Some(msg_type),
            ..Route::default()
        }
    }

    /// Messages of one type from one node.
    pub fn from(from: u64, msg_type: MessageType) -> Self {
        Route {
            from: Some(from),
            msg_type: Some(msg_type),
            ..Route::default()
        }
    }

    fn matches(&self, m: &Message) -> bool {
        self.from.is_none_or(|f| f == m.from)
            && self.to.is_none_or(|t| t == m.to)
            && self.msg_type.is_none_or(|t| t == m.get_msg_type())
    }
}

/// What happens to the messages of a [`Route`].
#[derive(Debug, Clone)]
enum Rule {
    /// Kept until [`MemNetwork::release`].
    Hold(Route),
    /// Delivered this much later.
    Delay(Route, Duration),
    /// The first one sent cuts these links (before it is delivered), then the rule is gone.
    CutOn(Route, Vec<(u64, u64)>),
}

#[derive(Default)]
struct Net {
    mailboxes: HashMap<u64, Mailbox>,
    /// Directed links that drop everything.
    cut: BTreeSet<(u64, u64)>,
    faults: NetFaults,
    rng: fastrand::Rng,
    /// Messages held back for reordering.
    held: Vec<Message>,
    /// Messages held back by a [`Rule::Hold`], in the order sent.
    parked: Vec<Message>,
    rules: Vec<Rule>,
    stats: NetStats,
    /// Snapshot streams still to break halfway.
    fail_snapshots: u32,
    /// Messages larger than this are dropped.
    max_message: Option<usize>,
}

/// What an in-memory network did with the messages it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetStats {
    /// Messages sent.
    pub sent: u64,
    /// Lost to a cut link or an injected drop.
    pub dropped: u64,
    /// Delivered twice.
    pub duplicated: u64,
    /// Held back and delivered out of order.
    pub reordered: u64,
    /// Delivered after an injected delay.
    pub delayed: u64,
    /// Snapshots streamed to a peer that took them.
    pub snapshots: u64,
    /// Snapshot streams that failed (cut link, no peer, injected failure, refused).
    pub snapshots_failed: u64,
    /// Held back by a rule ([`MemNetwork::hold`]).
    pub held: u64,
    /// Dropped for exceeding [`MemNetwork::set_max_message_size`].
    pub oversized: u64,
    /// Partitions started by a message ([`MemNetwork::partition_on`] triggers that fired and
    /// cut a link that was whole).
    pub triggered: u64,
}

impl Net {
    /// A uniform draw in [0, 1).
    fn unit(&mut self) -> f64 {
        self.rng.f64()
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && self.unit() < p
    }
}

/// An in-memory network connecting nodes of one process. Links can be cut per direction, so
/// tests can partition the cluster and heal it.
#[derive(Clone, Default)]
pub struct MemNetwork {
    inner: Arc<Mutex<Net>>,
}

impl std::fmt::Debug for MemNetwork {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemNetwork").finish_non_exhaustive()
    }
}

impl MemNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Net> {
        crate::lock(&self.inner)
    }

    /// Connects (or reconnects, after a restart) node `id`'s mailbox.
    pub fn connect(&self, id: u64, mailbox: Mailbox) {
        self.lock().mailboxes.insert(id, mailbox);
    }

    /// Disconnects node `id` (it crashed): messages to it are dropped.
    pub fn disconnect(&self, id: u64) {
        self.lock().mailboxes.remove(&id);
    }

    /// The transport node `from` sends through.
    pub fn transport(&self, from: u64) -> MemTransport {
        MemTransport {
            net: self.clone(),
            from,
        }
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&self, a: &[u64], b: &[u64]) {
        let mut n = self.lock();
        for &x in a {
            for &y in b {
                n.cut.insert((x, y));
                n.cut.insert((y, x));
            }
        }
    }

    /// Cuts the link from `from` to `to` only: messages the other way still pass.
    pub fn cut(&self, from: u64, to: u64) {
        self.lock().cut.insert((from, to));
    }

    /// Restores every link and forgets armed [`MemNetwork::partition_on`] triggers (holds and
    /// delays stay until [`MemNetwork::release`]).
    pub fn heal(&self) {
        let mut n = self.lock();
        n.cut.clear();
        n.rules.retain(|r| !matches!(r, Rule::CutOn(..)));
    }

    /// Holds back every message of `route` from now on, until [`MemNetwork::release`].
    pub fn hold(&self, route: Route) {
        self.lock().rules.push(Rule::Hold(route));
    }

    /// Delays every message of `route` by `by` from now on, until [`MemNetwork::release`].
    pub fn delay(&self, route: Route, by: Duration) {
        self.lock().rules.push(Rule::Delay(route, by));
    }

    /// Partitions `a` from `b` (both ways) the moment a message of `route` is sent, before it
    /// is delivered; once.
    pub fn partition_on(&self, route: Route, a: &[u64], b: &[u64]) {
        let links = a
            .iter()
            .flat_map(|&x| b.iter().flat_map(move |&y| [(x, y), (y, x)]))
            .collect();
        self.lock().rules.push(Rule::CutOn(route, links));
    }

    /// Delivers the messages held so far, in the order they were sent (through the links as
    /// they are now); the holds stay in force for later messages.
    pub fn deliver_held(&self) {
        self.deliver_held_if(|_| true);
    }

    /// As [`MemNetwork::deliver_held`], for the held messages `pick` chooses; the others stay.
    pub fn deliver_held_if(&self, mut pick: impl FnMut(&Message) -> bool) {
        let picked: Vec<Message> = {
            let mut n = self.lock();
            let (picked, kept) = std::mem::take(&mut n.parked)
                .into_iter()
                .partition(|m| pick(m));
            n.parked = kept;
            picked
        };
        for m in picked {
            self.send_as(m);
        }
    }

    /// Messages held back right now.
    pub fn held(&self) -> usize {
        self.lock().parked.len()
    }

    /// Drops (and counts in [`NetStats::oversized`]) every message whose encoding exceeds
    /// `max` bytes, as a transport with that frame limit would; nodes see it as the
    /// transport's [`Transport::max_message_size`].
    pub fn set_max_message_size(&self, max: usize) {
        self.lock().max_message = Some(max);
    }

    /// Delivers a message that was held back: through the links as they are now, past the
    /// rules (which held it once already).
    fn send_as(&self, m: Message) {
        self.transport(m.from).route(m, false);
    }

    /// Ends every hold and delay, and delivers the held messages in the order they were sent
    /// (through the links as they are now).
    pub fn release(&self) {
        let parked = {
            let mut n = self.lock();
            n.rules
                .retain(|r| !matches!(r, Rule::Hold(_) | Rule::Delay(..)));
            std::mem::take(&mut n.parked)
        };
        for m in parked {
            self.send_as(m);
        }
    }

    /// Counts of what the network did so far.
    pub fn stats(&self) -> NetStats {
        self.lock().stats
    }

    /// Breaks the next `n` snapshot streams halfway through (the sender sees an error, the
    /// receiver a short stream).
    pub fn fail_snapshots(&self, n: u32) {
        self.lock().fail_snapshots = n;
    }

    /// Injects message faults from now on (all zero: none). Held-back messages are delivered
    /// by later sends.
    pub fn set_faults(&self, faults: NetFaults) {
        let mut n = self.lock();
        n.rng = fastrand::Rng::with_seed(faults.seed);
        n.faults = faults;
    }
}

/// One node's handle on a [`MemNetwork`].
#[derive(Clone, Debug)]
pub struct MemTransport {
    net: MemNetwork,
    from: u64,
}

impl Transport for MemTransport {
    fn send(&self, msg: Message) {
        self.route(msg, true);
    }

    fn max_message_size(&self) -> usize {
        self.net.lock().max_message.unwrap_or(usize::MAX)
    }

    fn send_snapshot(
        &self,
        msg: Message,
        meta: &SnapshotMeta,
        data: &mut dyn Read,
    ) -> io::Result<()> {
        self.stream(msg, meta, data)
    }
}

impl MemTransport {
    /// Sends `msg` through the network's faults, and its rules if `rules`.
    fn route(&self, msg: Message, rules: bool) {
        let mut out: Vec<(Mailbox, Message)> = Vec::new();
        let mut late = None;
        {
            let mut n = self.net.lock();
            let f = n.faults;
            // Sometimes release a held-back message first: it arrives after later ones.
            if !n.held.is_empty() && n.chance(0.5) {
                let held = n.held.len();
                let i = n.rng.usize(..held);
                let m = n.held.swap_remove(i);
                if let Some(mb) = n.mailboxes.get(&m.to) {
                    out.push((mb.clone(), m));
                }
            }
            n.stats.sent += 1;
            let mut rule_delay = None;
            let mut hold = false;
            let mut i = 0;
            while rules && i < n.rules.len() {
                match &n.rules[i] {
                    Rule::CutOn(r, _) if r.matches(&msg) => {
                        if let Rule::CutOn(_, links) = n.rules.remove(i) {
                            let before = n.cut.len();
                            n.cut.extend(links);
                            if n.cut.len() > before {
                                n.stats.triggered += 1;
                            }
                        }
                        continue;
                    }
                    Rule::Hold(r) if r.matches(&msg) => {
                        hold = true;
                        break;
                    }
                    Rule::Delay(r, by) if r.matches(&msg) => rule_delay = Some(*by),
                    _ => {}
                }
                i += 1;
            }
            let too_big = n
                .max_message
                .is_some_and(|max| protobuf::Message::compute_size(&msg) as usize > max);
            if too_big {
                n.stats.oversized += 1;
            } else if hold {
                n.stats.held += 1;
                n.parked.push(msg);
            } else if n.cut.contains(&(self.from, msg.to)) || n.chance(f.drop) {
                n.stats.dropped += 1;
            } else if let Some(by) = rule_delay {
                if let Some(mb) = n.mailboxes.get(&msg.to).cloned() {
                    n.stats.delayed += 1;
                    late = Some((mb, msg, by));
                }
            } else if n.chance(f.reorder) {
                n.stats.reordered += 1;
                n.held.push(msg);
            } else if let Some(mb) = n.mailboxes.get(&msg.to).cloned() {
                if n.chance(f.duplicate) {
                    n.stats.duplicated += 1;
                    out.push((mb.clone(), msg.clone()));
                }
                if n.chance(f.delay) {
                    n.stats.delayed += 1;
                    late = Some((mb, msg, f.max_delay.mul_f64(n.unit())));
                } else {
                    out.push((mb, msg));
                }
            }
        }
        for (mb, m) in out {
            mb.deliver(m);
        }
        if let Some((mb, m, after)) = late {
            // A delayed message travels on a timer thread of its own (if none can start, it is
            // lost, which the network may do anyway).
            let _ = std::thread::Builder::new()
                .name("raftwal-memnet-delay".into())
                .spawn(move || {
                    std::thread::sleep(after);
                    mb.deliver(m);
                });
        }
    }

    /// Streams a snapshot to its recipient's mailbox (see [`Transport::send_snapshot`]).
    fn stream(&self, msg: Message, meta: &SnapshotMeta, data: &mut dyn Read) -> io::Result<()> {
        let (mailbox, fail) = {
            let mut n = self.net.lock();
            let mailbox = n.mailboxes.get(&msg.to).cloned();
            let fail = n.fail_snapshots > 0;
            n.fail_snapshots = n.fail_snapshots.saturating_sub(1);
            match mailbox {
                Some(mb) if !n.cut.contains(&(self.from, msg.to)) => (mb, fail),
                _ => {
                    n.stats.snapshots_failed += 1;
                    return Err(io::ErrorKind::NotConnected.into());
                }
            }
        };
        // Chunked: the receiver pulls the bytes through a small buffer, never the whole.
        let r = if fail {
            let mut broken = Breaking {
                inner: data,
                left: meta.size / 2,
            };
            mailbox.receive_snapshot(msg, meta, &mut broken)
        } else {
            mailbox.receive_snapshot(msg, meta, data)
        };
        let mut n = self.net.lock();
        match r {
            Ok(()) => n.stats.snapshots += 1,
            Err(_) => n.stats.snapshots_failed += 1,
        }
        r
    }
}

/// A stream that breaks after `left` bytes.
struct Breaking<'a> {
    inner: &'a mut dyn Read,
    left: u64,
}

impl Read for Breaking<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "injected: snapshot stream broken",
            ));
        }
        let max = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::ManualCluster;
    use crate::types::Role;

    #[test]
    fn a_partition_starts_on_the_message_it_waits_for() {
        let mut c = ManualCluster::new(3);
        let l = c.elect();
        let rest: Vec<u64> = c.ids().into_iter().filter(|&i| i != l).collect();
        // Armed on a message type the leader does not send while idle: nothing happens.
        c.net()
            .partition_on(Route::from(l, MessageType::MsgTimeoutNow), &[l], &rest);
        c.run(40);
        assert_eq!(c.net().stats().triggered, 0);
        assert_eq!(c.leader(), Some(l));
        c.net().heal();
        // Armed on its heartbeats: the next one cuts it off, and the others elect a leader.
        c.net()
            .partition_on(Route::from(l, MessageType::MsgHeartbeat), &[l], &rest);
        c.run(60);
        assert_eq!(c.net().stats().triggered, 1);
        let others: Vec<Role> = rest.iter().map(|&i| c.state(i).2).collect();
        assert!(others.contains(&Role::Leader), "{others:?}");
        // The trigger fired once: healed, the links stay whole.
        c.net().heal();
        c.run(60);
        assert_eq!(c.net().stats().triggered, 1);
        assert!(c.ids().iter().all(|&i| c.state(i).0 == c.state(rest[0]).0));
    }
}
