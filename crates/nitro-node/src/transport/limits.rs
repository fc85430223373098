//! What unauthenticated and unknown peers may hold: pending handshakes (capped per remote IP
//! address and in all, the oldest evicted first so that a flood cannot lock new peers out),
//! and a gate that keeps a misbehaving peer from filling the log.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::lock;

/// Inbound connections still in their handshake.
pub(super) struct PendingHandshakes {
    state: Mutex<PendingState>,
    per_ip: usize,
    total: usize,
}

#[derive(Default)]
struct PendingState {
    next: u64,
    /// By admission order (oldest first): the remote IP and the token that ends it.
    entries: BTreeMap<u64, (IpAddr, CancellationToken)>,
    counts: HashMap<IpAddr, usize>,
}

impl PendingState {
    fn remove(&mut self, id: u64) -> Option<CancellationToken> {
        let (ip, token) = self.entries.remove(&id)?;
        if let Some(count) = self.counts.get_mut(&ip) {
            *count -= 1;
            if *count == 0 {
                self.counts.remove(&ip);
            }
        }
        Some(token)
    }
}

/// A handshake's place among the pending ones; leaving (drop) frees it.
pub(super) struct PendingSlot {
    owner: Arc<PendingHandshakes>,
    id: u64,
    /// Cancelled when a newer handshake evicts this one.
    pub(super) evicted: CancellationToken,
}

impl Drop for PendingSlot {
    fn drop(&mut self) {
        lock(&self.owner.state).remove(self.id);
    }
}

impl PendingHandshakes {
    /// At most `per_ip` pending handshakes from one IP address and `total` in all.
    pub(super) fn new(per_ip: usize, total: usize) -> Arc<Self> {
        Arc::new(Self { state: Mutex::default(), per_ip: per_ip.max(1), total: total.max(1) })
    }

    /// Admits a handshake from `ip`. When `ip` has `per_ip` pending already, its oldest is
    /// evicted; otherwise, when `total` are pending, the oldest of the IP address with the
    /// most pending handshakes is. Returns the new slot and how many were evicted.
    pub(super) fn admit(self: &Arc<Self>, ip: IpAddr) -> (PendingSlot, usize) {
        let mut state = lock(&self.state);
        let mut evicted = 0;
        while state.counts.get(&ip).copied().unwrap_or(0) >= self.per_ip {
            let oldest = state.entries.iter().find(|(_, (from, _))| *from == ip).map(|(id, _)| *id);
            let Some(token) = oldest.and_then(|id| state.remove(id)) else { break };
            token.cancel();
            evicted += 1;
        }
        while state.entries.len() >= self.total {
            // The busiest address pays first, so that many IPs of one attacker do not push out
            // the only handshake of an honest one.
            let busiest = state.counts.iter().max_by_key(|(_, count)| **count).map(|(ip, _)| *ip);
            let oldest = busiest
                .and_then(|busiest| state.entries.iter().find(|(_, (from, _))| *from == busiest))
                .map(|(id, _)| *id);
            let Some(token) = oldest.and_then(|id| state.remove(id)) else { break };
            token.cancel();
            evicted += 1;
        }
        let id = state.next;
        state.next += 1;
        let token = CancellationToken::new();
        state.entries.insert(id, (ip, token.clone()));
        *state.counts.entry(ip).or_insert(0) += 1;
        (PendingSlot { owner: self.clone(), id, evicted: token }, evicted)
    }

    /// Handshakes pending now.
    #[cfg(test)]
    fn len(&self) -> usize {
        lock(&self.state).entries.len()
    }
}

/// Lets one warning through per `period`; counts the ones it holds back and reports them
/// with the next warning it lets through.
pub(super) struct WarnGate {
    period: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl WarnGate {
    /// A gate that opens once per `period`.
    pub(super) fn new(period: Duration) -> Self {
        Self { period, state: Mutex::new((None, 0)) }
    }

    /// `Some(suppressed since the last warning)` if this one may be logged as a warning.
    pub(super) fn pass(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        match state.0 {
            Some(last) if now.duration_since(last) < self.period => {
                state.1 += 1;
                None
            }
            _ => {
                let suppressed = state.1;
                *state = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, n])
    }

    #[test]
    fn one_address_evicts_only_its_own_oldest() {
        let pending = PendingHandshakes::new(2, 10);
        let (a1, _) = pending.admit(ip(1));
        let (b1, _) = pending.admit(ip(2));
        let (a2, _) = pending.admit(ip(1));
        let (a3, evicted) = pending.admit(ip(1));
        assert_eq!(evicted, 1);
        assert!(a1.evicted.is_cancelled());
        assert!(!a2.evicted.is_cancelled() && !a3.evicted.is_cancelled() && !b1.evicted.is_cancelled());
        assert_eq!(pending.len(), 3);
        drop(a1);
        assert_eq!(pending.len(), 3, "an evicted slot was already freed");
        drop((a2, a3, b1));
        assert_eq!(pending.len(), 0);
    }

    #[test]
    fn a_full_table_evicts_from_the_busiest_address() {
        let pending = PendingHandshakes::new(8, 4);
        let (honest, _) = pending.admit(ip(9));
        let flood: Vec<_> = (0..3).map(|_| pending.admit(ip(1)).0).collect();
        let (newcomer, evicted) = pending.admit(ip(7));
        assert_eq!(evicted, 1);
        assert!(flood[0].evicted.is_cancelled());
        assert!(!honest.evicted.is_cancelled() && !newcomer.evicted.is_cancelled());
        assert_eq!(pending.len(), 4);
    }

    #[test]
    fn the_warn_gate_counts_what_it_holds_back() {
        let gate = WarnGate::new(Duration::from_secs(3600));
        assert_eq!(gate.pass(), Some(0));
        assert_eq!(gate.pass(), None);
        assert_eq!(gate.pass(), None);
        let open = WarnGate::new(Duration::ZERO);
        assert_eq!(open.pass(), Some(0));
        assert_eq!(open.pass(), Some(0));
    }
}
