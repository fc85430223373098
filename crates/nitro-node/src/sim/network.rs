//! The simulated network: one connection per pair of parties, which breaks (a message lost
//! breaks it, and so does a restart) and comes back, and the messages in flight on it.
//!
//! Like the real transport, a connection holds what is sent while it is down, in order, in a
//! bounded queue that drops its oldest message when full, and writes it once the connection
//! is back. What a real transport would not lose — a message it keeps until the peer
//! acknowledges it — is lost here on purpose, standing for the worst case (a peer that
//! acknowledged it and crashed before storing it): the message whose loss breaks the
//! connection, and everything in flight on a connection when it breaks. When a connection
//! comes back, both ends are told ([`crate::engine::Input::PeerConnected`]) and resync.

use std::collections::{BTreeMap, VecDeque};

use nitro_core::party::Envelope;

/// A connection: the two parties' indices, the lower first.
pub(super) type Pair = (usize, usize);

/// The connection between `a` and `b`.
pub(super) fn pair(a: usize, b: usize) -> Pair {
    (a.min(b), a.max(b))
}

#[derive(Debug, Default)]
struct Link {
    /// Bumped each time the connection breaks: what was in flight on an older one is lost.
    epoch: u64,
    /// Down until this step, when the two ends reconnect.
    down_until: Option<u64>,
    /// What was sent while it was down, oldest first: (sender, message).
    held: VecDeque<(usize, Envelope)>,
}

/// A message on its way.
pub(super) struct Flight {
    /// The sender's index.
    pub(super) from: usize,
    /// The recipient's index.
    pub(super) to: usize,
    /// The message.
    pub(super) envelope: Envelope,
    /// The connection's epoch when it was sent.
    epoch: u64,
}

/// The connections and what is in flight on them.
#[derive(Default)]
pub(super) struct Network {
    links: BTreeMap<Pair, Link>,
    /// (arrival step, sequence) → flight.
    in_flight: BTreeMap<(u64, u64), Flight>,
    sequence: u64,
}

impl Network {
    /// Whether the connection is up.
    pub(super) fn is_up(&self, p: Pair) -> bool {
        self.links.get(&p).is_none_or(|l| l.down_until.is_none())
    }

    /// Whether every connection is up.
    pub(super) fn all_up(&self) -> bool {
        self.links.values().all(|l| l.down_until.is_none())
    }

    /// Nothing in flight.
    pub(super) fn is_empty(&self) -> bool {
        self.in_flight.is_empty()
    }

    /// Breaks the connection until step `until` (or later, if it is down longer already):
    /// what is in flight on it is lost.
    pub(super) fn break_link(&mut self, p: Pair, until: u64) {
        let link = self.links.entry(p).or_default();
        link.epoch += 1;
        link.down_until = Some(link.down_until.map_or(until, |u| u.max(until)));
    }

    /// Holds a message for a connection that is down; beyond `capacity` held messages the
    /// oldest is dropped (returns how many were).
    pub(super) fn hold(&mut self, p: Pair, from: usize, envelope: Envelope, capacity: usize) -> u64 {
        let link = self.links.entry(p).or_default();
        link.held.push_back((from, envelope));
        let mut dropped = 0;
        while link.held.len() > capacity.max(1) {
            link.held.pop_front();
            dropped += 1;
        }
        dropped
    }

    /// Takes what the connection held while it was down, oldest first.
    pub(super) fn take_held(&mut self, p: Pair) -> VecDeque<(usize, Envelope)> {
        self.links.get_mut(&p).map(|l| std::mem::take(&mut l.held)).unwrap_or_default()
    }

    /// Puts a message on its connection, arriving at step `at`.
    pub(super) fn schedule(&mut self, at: u64, from: usize, to: usize, envelope: Envelope) {
        let epoch = self.links.get(&pair(from, to)).map_or(0, |l| l.epoch);
        self.sequence += 1;
        self.in_flight.insert((at, self.sequence), Flight { from, to, envelope, epoch });
    }

    /// The connections that come back at `step` (every one that is down, if `heal`), now up,
    /// in a fixed order.
    pub(super) fn reconnect(&mut self, step: u64, heal: bool) -> Vec<Pair> {
        let mut back = Vec::new();
        for (p, link) in &mut self.links {
            if link.down_until.is_some_and(|until| heal || until <= step) {
                link.down_until = None;
                back.push(*p);
            }
        }
        back
    }

    /// The messages due by `step`, in order, each with whether its connection held while it
    /// was in flight (otherwise it is lost).
    pub(super) fn due(&mut self, step: u64) -> Vec<(Flight, bool)> {
        let rest = self.in_flight.split_off(&(step + 1, 0));
        let due = std::mem::replace(&mut self.in_flight, rest);
        due.into_values()
            .map(|f| {
                let held = self.links.get(&pair(f.from, f.to)).map_or(0, |l| l.epoch) == f.epoch;
                (f, held)
            })
            .collect()
    }
}
