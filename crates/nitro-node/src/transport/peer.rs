//! What the transport keeps per peer: its connections, our stream of messages to it (its id,
//! sequence numbers, the bounded unacknowledged outbox, resend timers) and the position of its
//! stream to us.
//!
//! Every function here is synchronous and quick; they run under the peer's lock.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use alloy_primitives::Address;
use serde_json::Value;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::error::ConnError;

/// Live connections kept per peer; a newer one beyond this closes the oldest. Normally there
/// is one; two when both sides dialed at once; a third can be an older connection whose end
/// we did not notice yet.
pub(super) const MAX_CONNECTIONS_PER_PEER: usize = 3;

/// Messages remembered per peer (a digest of each one's id and body, with its stream), so
/// that what a restarted peer sends again on its new stream is not delivered twice. Covers a
/// sender that re-sends its most recent few hundred messages after a restart.
pub(super) const REMEMBERED: usize = 512;

/// A digest of a message's caller id and body: equal for a message sent again. Not keyed: a
/// peer that makes two of its messages collide only holds back its own message.
pub(super) fn digest(id: u64, body: &Value) -> u64 {
    let mut hasher = foldhash::quality::FixedState::default().build_hasher();
    id.hash(&mut hasher);
    body.hash(&mut hasher);
    hasher.finish()
}

/// One message waiting for its acknowledgement.
pub(super) struct Pending {
    /// The encoded `MSG` frame.
    pub(super) frame: Bytes,
    /// The caller's id.
    pub(super) id: u64,
    /// Writes on the current connection so far.
    pub(super) attempts: u32,
    /// When it is due to be written again (an entry of `PeerState::timers`).
    pub(super) deadline: Option<Instant>,
}

/// One authenticated connection.
pub(super) struct Conn {
    /// A number for the logs.
    pub(super) id: u64,
    /// Whether we dialed it.
    pub(super) outbound: bool,
    /// The stream the peer announced in its `HELLO` on this connection.
    pub(super) remote_stream: u64,
    /// The stream we announced in our `HELLO` on this connection.
    pub(super) local_stream: u64,
    /// Wakes the writer: an acknowledgement to send, new messages, a new role.
    pub(super) notify: Notify,
    /// Whether the writer owes the peer an `ACK`.
    pub(super) ack_due: AtomicBool,
    /// Closes the connection.
    pub(super) closed: CancellationToken,
}

impl Conn {
    /// Asks the writer to acknowledge what was delivered.
    pub(super) fn request_ack(&self) {
        self.ack_due.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// What an incoming `MSG` is, against the peer's stream.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// The next message: deliver it.
    Deliver,
    /// Delivered before: acknowledge again, do not deliver.
    Duplicate,
    /// The next message, but the same message (id and body) came on an earlier stream of
    /// the peer (it restarted and sends it again): counts as delivered, is not delivered.
    Redelivered,
}

/// What we know about one peer.
pub(super) struct PeerState {
    /// Where to dial it (from `add_peer`).
    pub(super) dial: Option<SocketAddr>,
    /// Whether a dial task runs for it.
    pub(super) dialing: bool,
    /// Added with `add_peer` or `allow_peer` (never evicted).
    pub(super) known: bool,
    /// The last time it connected, sent us a message or was sent one.
    pub(super) last_active: Instant,
    /// The last warning about it (violations are logged once a minute at most).
    pub(super) last_warned: Option<Instant>,
    /// Our stream to it: the id we announce in our `HELLO`s.
    pub(super) local_stream: u64,
    /// Whether a connection announced `local_stream` (the peer may then have delivered some
    /// of it and expects the rest without a gap).
    announced: bool,
    /// Whether we dropped a message the peer may not have on `local_stream`: the next
    /// handshake starts a new stream.
    gap: bool,
    /// Messages dropped from a full outbox, in all.
    pub(super) dropped: u64,
    /// The sequence number of our next message to it.
    pub(super) next_seq: u64,
    /// Unacknowledged messages by sequence number.
    pub(super) outbox: BTreeMap<u64, Pending>,
    /// The sequence number of each unacknowledged caller id.
    pub(super) by_id: HashMap<u64, u64>,
    /// Sequence numbers to write now on the active connection, lowest first.
    pub(super) ready: BTreeSet<u64>,
    /// Resend deadlines of written, unacknowledged messages.
    pub(super) timers: BTreeSet<(Instant, u64)>,
    /// Live connections, oldest first (at most `MAX_CONNECTIONS_PER_PEER`).
    pub(super) conns: Vec<Arc<Conn>>,
    /// The connection our messages are written on (the newest).
    pub(super) active: Option<Arc<Conn>>,
    /// The peer's current stream: the one of its newest connection.
    pub(super) remote_stream: Option<u64>,
    /// The highest sequence number of `remote_stream` delivered to the engine.
    pub(super) delivered: Option<u64>,
    /// The last `REMEMBERED` messages delivered from the peer: (stream, digest), oldest first.
    remembered: VecDeque<(u64, u64)>,
    /// How many of `remembered` came on another stream than `remote_stream`.
    foreign: usize,
}

/// What [`PeerState::enqueue`] did.
#[derive(Default)]
pub(super) struct Enqueued {
    /// The outbox was full: the oldest message was dropped.
    pub(super) dropped_oldest: bool,
    /// Connections to close (they carried the stream that now has a gap).
    pub(super) close: Vec<Arc<Conn>>,
}

impl PeerState {
    fn new(now: Instant, stream: u64) -> Self {
        Self {
            dial: None,
            dialing: false,
            known: false,
            last_active: now,
            last_warned: None,
            local_stream: stream,
            announced: false,
            gap: false,
            dropped: 0,
            next_seq: 1,
            outbox: BTreeMap::new(),
            by_id: HashMap::new(),
            ready: BTreeSet::new(),
            timers: BTreeSet::new(),
            conns: Vec::new(),
            active: None,
            remote_stream: None,
            delivered: None,
            remembered: VecDeque::new(),
            foreign: 0,
        }
    }

    /// The stream a new handshake announces: a new one if the current one has a gap.
    pub(super) fn stream_for_handshake(&mut self) -> u64 {
        if self.gap {
            self.local_stream = self.local_stream.wrapping_add(1);
            self.gap = false;
            self.announced = false;
        }
        self.local_stream
    }

    /// Adds an authenticated connection and makes it the one that carries our messages
    /// (every unacknowledged one is written on it again, lowest first). A connection with a
    /// new stream of the peer (it restarted) starts that stream afresh. Returns the
    /// connections closed to make room, and whether the session with the peer is new (it
    /// had no live connection, or it restarted): then the engine resyncs it. Refused if the
    /// stream we announced on `conn` was superseded during its handshake.
    pub(super) fn add_connection(&mut self, conn: Arc<Conn>) -> Result<(Vec<Arc<Conn>>, bool), ConnError> {
        if conn.local_stream != self.local_stream || self.gap {
            return Err(ConnError::Superseded);
        }
        let mut closed = Vec::new();
        if self.remote_stream != Some(conn.remote_stream) {
            self.remote_stream = Some(conn.remote_stream);
            self.delivered = None;
            self.foreign = self.remembered.iter().filter(|(stream, _)| *stream != conn.remote_stream).count();
            // The peer's older connections belong to the stream it replaced.
            closed.append(&mut self.conns);
        }
        let fresh = self.conns.is_empty();
        self.announced = true;
        self.conns.push(conn.clone());
        let excess = self.conns.len().saturating_sub(MAX_CONNECTIONS_PER_PEER);
        closed.extend(self.conns.drain(..excess));
        self.activate(conn);
        Ok((closed, fresh))
    }

    /// Makes `conn` the connection that carries our messages.
    pub(super) fn activate(&mut self, conn: Arc<Conn>) {
        self.ready = self.outbox.keys().copied().collect();
        self.timers.clear();
        for pending in self.outbox.values_mut() {
            pending.attempts = 0;
            pending.deadline = None;
        }
        conn.notify.notify_one();
        self.active = Some(conn);
    }

    /// Whether `conn` carries our messages.
    pub(super) fn is_active(&self, conn: &Arc<Conn>) -> bool {
        self.active.as_ref().is_some_and(|active| Arc::ptr_eq(active, conn))
    }

    /// Forgets a closed connection; another live one takes over if there is one.
    pub(super) fn remove_connection(&mut self, conn: &Arc<Conn>) {
        self.conns.retain(|c| !Arc::ptr_eq(c, conn));
        if self.is_active(conn) {
            self.active = None;
            if let Some(other) = self.conns.last().cloned() {
                self.activate(other);
            }
        }
    }

    /// Whether `conn` speaks for the peer's current stream (otherwise the peer has replaced
    /// it with a newer one and `conn` is stale).
    pub(super) fn is_current(&self, conn: &Conn) -> bool {
        self.remote_stream == Some(conn.remote_stream)
    }

    /// Queues a message (its frame is built by `frame` from the sequence number it gets);
    /// nothing happens if `id` is still unacknowledged. When `capacity` messages wait
    /// already, the oldest is dropped; if the peer may have needed it on our current stream,
    /// that stream has a gap: its connections are to be closed, the rest of its queue is
    /// abandoned, and the next handshake starts a new stream (the peer takes its first message
    /// as the next, and the engines resync on the new session).
    pub(super) fn enqueue(
        &mut self,
        id: u64,
        frame: impl FnOnce(u64) -> Bytes,
        now: Instant,
        capacity: usize,
    ) -> Enqueued {
        let mut result = Enqueued::default();
        if self.by_id.contains_key(&id) {
            return result;
        }
        while self.outbox.len() >= capacity.max(1) {
            let Some((seq, pending)) = self.outbox.pop_first() else { break };
            self.by_id.remove(&pending.id);
            self.ready.remove(&seq);
            if let Some(deadline) = pending.deadline {
                self.timers.remove(&(deadline, seq));
            }
            self.dropped += 1;
            result.dropped_oldest = true;
            if self.announced && !self.gap {
                // What is still queued was meant for the stream that now has a gap: it is
                // abandoned with it (the resync of the new session gives the peer what it
                // needs; were it kept, the resync would overflow the queue again at once and
                // each new session would end as it starts).
                self.dropped += self.outbox.len() as u64;
                self.outbox.clear();
                self.by_id.clear();
                self.timers.clear();
                self.gap = true;
                self.active = None;
                self.ready.clear();
                result.close.append(&mut self.conns);
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.outbox.insert(seq, Pending { frame: frame(seq), id, attempts: 0, deadline: None });
        self.by_id.insert(id, seq);
        self.last_active = now;
        if let Some(active) = &self.active {
            self.ready.insert(seq);
            active.notify.notify_one();
        }
        result
    }

    /// Everything up to `seq` is acknowledged on `conn`.
    pub(super) fn acknowledge(&mut self, conn: &Conn, seq: u64) -> Result<(), ConnError> {
        if !self.is_current(conn) {
            return Err(ConnError::StaleStream);
        }
        if seq >= self.next_seq {
            return Err(ConnError::ForgedAck { seq, sent: self.next_seq - 1 });
        }
        let rest = self.outbox.split_off(&(seq + 1));
        let acknowledged = std::mem::replace(&mut self.outbox, rest);
        for (seq, pending) in acknowledged {
            self.by_id.remove(&pending.id);
            self.ready.remove(&seq);
            if let Some(deadline) = pending.deadline {
                self.timers.remove(&(deadline, seq));
            }
        }
        Ok(())
    }

    /// Judges message `seq` (with `digest`, see [`digest`]) arriving on `conn`: the next one
    /// of the peer's stream is delivered (on a stream we have seen nothing of, the first one
    /// to arrive is the next) unless the peer sent the very same message on an earlier
    /// stream; an earlier one is a duplicate; a later one is refused without changing
    /// anything.
    pub(super) fn judge(&self, conn: &Conn, seq: u64, digest: u64) -> Result<Verdict, ConnError> {
        if !self.is_current(conn) {
            return Err(ConnError::StaleStream);
        }
        match self.delivered {
            Some(delivered) if seq <= delivered => Ok(Verdict::Duplicate),
            Some(delivered) if Some(seq) != delivered.checked_add(1) => {
                Err(ConnError::OutOfWindow { seq, expected: delivered.saturating_add(1) })
            }
            _ => {
                let seen = self.foreign > 0
                    && self.remembered.iter().any(|&(stream, d)| d == digest && stream != conn.remote_stream);
                Ok(if seen { Verdict::Redelivered } else { Verdict::Deliver })
            }
        }
    }

    /// Records that message `seq` of `conn`'s stream was delivered (or counts as delivered).
    pub(super) fn delivered(&mut self, conn: &Conn, seq: u64, digest: u64, now: Instant) {
        if self.is_current(conn) {
            self.delivered = Some(seq);
            self.remembered.push_back((conn.remote_stream, digest));
            if self.remembered.len() > REMEMBERED {
                if let Some((stream, _)) = self.remembered.pop_front() {
                    if stream != conn.remote_stream {
                        self.foreign -= 1;
                    }
                }
            }
        }
        self.last_active = now;
    }

    /// Whether a dial task should start (and marks it started).
    pub(super) fn claim_dial(&mut self) -> bool {
        let needed = self.active.is_none() && !self.outbox.is_empty() && self.dial.is_some() && !self.dialing;
        if needed {
            self.dialing = true;
        }
        needed
    }
}

/// One peer.
pub(super) struct Peer {
    /// Its Ethereum address.
    pub(super) address: Address,
    /// Everything else, under a short lock.
    pub(super) state: Mutex<PeerState>,
    /// Serializes deliveries from this peer across its connections (held while the inbound
    /// channel is full).
    pub(super) delivery: tokio::sync::Mutex<()>,
}

impl Peer {
    /// A peer we know nothing about yet; our stream to it starts as `stream`.
    pub(super) fn new(address: Address, stream: u64) -> Self {
        Self {
            address,
            state: Mutex::new(PeerState::new(Instant::now(), stream)),
            delivery: tokio::sync::Mutex::new(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(stream: u64) -> Arc<Conn> {
        conn_on(stream, LOCAL)
    }

    fn conn_on(stream: u64, local_stream: u64) -> Arc<Conn> {
        Arc::new(Conn {
            id: 0,
            outbound: false,
            remote_stream: stream,
            local_stream,
            notify: Notify::new(),
            ack_due: AtomicBool::new(false),
            closed: CancellationToken::new(),
        })
    }

    const LOCAL: u64 = 0x10ca1;

    fn state() -> PeerState {
        PeerState::new(Instant::now(), LOCAL)
    }

    #[test]
    fn the_window_accepts_exactly_the_next_message() {
        let mut peer = state();
        let c = conn(7);
        peer.add_connection(c.clone()).unwrap();
        // The first message of a stream we know nothing of sets where it starts.
        assert!(matches!(peer.judge(&c, 500, 0), Ok(Verdict::Deliver)));
        peer.delivered(&c, 500, 0, Instant::now());
        assert!(matches!(peer.judge(&c, 500, 0), Ok(Verdict::Duplicate)));
        assert!(matches!(peer.judge(&c, 1, 0), Ok(Verdict::Duplicate)));
        // The same content again on the same stream is a new message.
        assert!(matches!(peer.judge(&c, 501, 0), Ok(Verdict::Deliver)));
        for far in [502, u64::MAX] {
            assert!(matches!(peer.judge(&c, far, 1), Err(ConnError::OutOfWindow { expected: 501, .. })));
        }
        // Refusals moved nothing.
        assert_eq!(peer.delivered, Some(500));
        // At the very end of the range nothing more can come.
        peer.delivered(&c, u64::MAX, 2, Instant::now());
        assert!(matches!(peer.judge(&c, u64::MAX, 2), Ok(Verdict::Duplicate)));
    }

    #[test]
    fn a_new_stream_starts_afresh_and_the_old_one_is_stale() {
        let mut peer = state();
        let old = conn(1);
        peer.add_connection(old.clone()).unwrap();
        peer.delivered(&old, 10, 77, Instant::now());
        let new = conn(2);
        let (closed, fresh) = peer.add_connection(new.clone()).unwrap();
        assert!(fresh, "a restarted peer is a new session");
        assert!(closed.len() == 1 && Arc::ptr_eq(&closed[0], &old));
        assert_eq!(peer.delivered, None);
        assert!(matches!(peer.judge(&new, 1, 1), Ok(Verdict::Deliver)));
        assert_eq!(peer.conns.len(), 1, "the old stream's connection is closed");
        assert!(matches!(peer.judge(&old, 11, 1), Err(ConnError::StaleStream)));
        // What the old stream delivered is recognised when the new one sends it again.
        assert!(matches!(peer.judge(&new, 1, 77), Ok(Verdict::Redelivered)));
        assert!(matches!(peer.acknowledge(&old, 0), Err(ConnError::StaleStream)));
    }

    #[test]
    fn acknowledgements_are_cumulative_and_cannot_run_ahead() {
        let mut peer = state();
        let c = conn(1);
        peer.add_connection(c.clone()).unwrap();
        let now = Instant::now();
        for id in [10, 20, 30, 40] {
            peer.enqueue(id, |seq| Bytes::from(seq.to_be_bytes().to_vec()), now, 16);
        }
        peer.enqueue(20, |_| unreachable!("an unacknowledged id is queued once"), now, 16);
        assert_eq!(peer.outbox.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
        peer.acknowledge(&c, 2).unwrap();
        assert_eq!(peer.outbox.keys().copied().collect::<Vec<_>>(), [3, 4]);
        assert!(!peer.by_id.contains_key(&10) && peer.by_id.contains_key(&30));
        // An old acknowledgement is harmless; one of a message never sent is forged.
        peer.acknowledge(&c, 1).unwrap();
        assert!(matches!(peer.acknowledge(&c, 5), Err(ConnError::ForgedAck { seq: 5, sent: 4 })));
        assert_eq!(peer.outbox.len(), 2);
        // Once acknowledged, an id may be queued again (a new message).
        peer.enqueue(10, |seq| Bytes::from(seq.to_be_bytes().to_vec()), now, 16);
        assert_eq!(peer.by_id.get(&10), Some(&5));
    }

    #[test]
    fn only_the_last_messages_of_earlier_streams_are_remembered() {
        let mut peer = state();
        let first = conn(1);
        peer.add_connection(first.clone()).unwrap();
        let now = Instant::now();
        for seq in 1..=(REMEMBERED as u64 + 10) {
            peer.delivered(&first, seq, digest(seq, &serde_json::json!({ "n": seq })), now);
        }
        let second = conn(2);
        peer.add_connection(second.clone()).unwrap();
        assert_eq!(peer.foreign, REMEMBERED);
        let again = |seq: u64| digest(seq, &serde_json::json!({ "n": seq }));
        assert!(matches!(peer.judge(&second, 1, again(5)), Ok(Verdict::Deliver)), "forgotten: delivered again");
        assert!(matches!(peer.judge(&second, 1, again(100)), Ok(Verdict::Redelivered)));
        assert!(matches!(peer.judge(&second, 1, digest(100, &serde_json::json!("other"))), Ok(Verdict::Deliver)));
        // As the new stream delivers, the old stream's entries age out.
        for seq in 1..=REMEMBERED as u64 {
            peer.delivered(&second, seq, seq, now);
        }
        assert_eq!(peer.foreign, 0);
        assert_eq!(peer.remembered.len(), REMEMBERED);
    }

    #[test]
    fn too_many_connections_close_the_oldest() {
        let mut peer = state();
        let conns: Vec<_> = (0..4).map(|_| conn(1)).collect();
        let mut closed = Vec::new();
        for (i, c) in conns.iter().enumerate() {
            let (gone, fresh) = peer.add_connection(c.clone()).unwrap();
            assert_eq!(fresh, i == 0, "only the first connection opens a session");
            closed.extend(gone);
        }
        assert_eq!(closed.len(), 1);
        assert!(Arc::ptr_eq(&closed[0], &conns[0]));
        assert!(peer.is_active(&conns[3]));
        peer.remove_connection(&conns[3]);
        assert!(peer.is_active(&conns[2]));
    }

    #[test]
    fn a_full_outbox_drops_its_oldest_and_a_gap_starts_a_new_stream() {
        let mut peer = state();
        let now = Instant::now();
        let frame = |seq: u64| Bytes::from(seq.to_be_bytes().to_vec());
        // Never announced: the peer has seen nothing of this stream, drops leave no gap.
        for id in 1..=6 {
            let enqueued = peer.enqueue(id, frame, now, 4);
            assert_eq!(enqueued.dropped_oldest, id > 4);
            assert!(enqueued.close.is_empty());
        }
        assert_eq!(peer.outbox.keys().copied().collect::<Vec<_>>(), [3, 4, 5, 6]);
        assert!(!peer.by_id.contains_key(&1) && !peer.by_id.contains_key(&2));
        assert_eq!(peer.dropped, 2);
        assert_eq!(peer.stream_for_handshake(), LOCAL);
        // Announced on a connection: a drop may leave the peer a gap; the connection closes.
        let c = conn(7);
        let (_, fresh) = peer.add_connection(c.clone()).unwrap();
        assert!(fresh);
        let enqueued = peer.enqueue(7, frame, now, 4);
        assert!(enqueued.dropped_oldest);
        assert_eq!(enqueued.close.len(), 1);
        assert!(Arc::ptr_eq(&enqueued.close[0], &c));
        assert!(peer.active.is_none() && peer.conns.is_empty() && peer.ready.is_empty());
        assert_eq!(peer.outbox.keys().copied().collect::<Vec<_>>(), [7], "the old stream's queue is abandoned");
        assert_eq!(peer.dropped, 6);
        // Until the next handshake, more drops are plain drops: the queue fills up to its
        // bound again and is not abandoned a second time.
        for id in 8..=12 {
            assert!(peer.enqueue(id, frame, now, 4).close.is_empty());
        }
        assert_eq!(peer.outbox.len(), 4);
        assert_eq!(peer.dropped, 8);
        // A handshake that announced the old stream is refused; the next one starts a new one.
        assert!(matches!(peer.add_connection(conn(7)), Err(ConnError::Superseded)));
        let next = peer.stream_for_handshake();
        assert_ne!(next, LOCAL);
        // Not announced yet: more drops leave the new stream alone.
        assert!(peer.enqueue(13, frame, now, 4).close.is_empty());
        assert_eq!(peer.stream_for_handshake(), next);
        assert!(matches!(peer.add_connection(conn_on(7, LOCAL)), Err(ConnError::Superseded)));
        let (closed, fresh) = peer.add_connection(conn_on(7, next)).unwrap();
        assert!(closed.is_empty() && fresh);
        assert_eq!(peer.outbox.len(), 4, "bounded throughout");
        assert_eq!(peer.ready.len(), 4, "all of it is written on the new connection");
    }
}
