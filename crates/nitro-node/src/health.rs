//! Whether the node is ready to serve: its store open, its transport listening, its chain
//! reachable and its main loop turning. The node sets each as it learns it; `GET /health`
//! reads a [`HealthReport`] (`docs/api.md`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

/// A main loop that has not finished a turn for this long is reported stalled (a turn makes
/// a few chain requests, each retried for a few seconds at most).
pub const STALL_AFTER: Duration = Duration::from_secs(120);

/// The node's readiness, shared between its main loop (which writes) and the API (which
/// reads). Cheap to clone; every clone is the same state.
#[derive(Clone, Debug, Default)]
pub struct Health {
    inner: Arc<Mutex<State>>,
}

#[derive(Debug, Default)]
struct State {
    address: Option<Address>,
    store_open: bool,
    p2p: Option<SocketAddr>,
    chain: Chain,
    chain_head: Option<u64>,
    watcher_lag_blocks: Option<u64>,
    last_turn: Option<Instant>,
    stopping: bool,
}

#[derive(Debug, Default)]
enum Chain {
    #[default]
    Unknown,
    Reachable,
    Unreachable(String),
}

/// What `GET /health` answers (HTTP 200 when `status` is `"ready"`, 503 otherwise).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReport {
    /// `"ready"` or `"unavailable"`.
    pub status: String,
    /// Why it is not ready (absent when ready).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The node's Ethereum address, once its key is read.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_address")]
    pub address: Option<Address>,
    /// `"open"` or `"closed"`.
    pub store: String,
    /// `"listening"` or `"down"`.
    pub transport: String,
    /// Where the transport listens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p2p: Option<SocketAddr>,
    /// `"reachable"`, `"unreachable"` or `"unknown"` (not asked yet).
    pub chain: String,
    /// The latest block the node saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_head: Option<u64>,
    /// Blocks the event watcher still has to scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watcher_lag_blocks: Option<u64>,
}

impl HealthReport {
    /// Whether the node is ready.
    pub fn is_ready(&self) -> bool {
        self.status == "ready"
    }
}

mod opt_address {
    use alloy_primitives::Address;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(a: &Option<Address>, s: S) -> Result<S::Ok, S::Error> {
        match a {
            Some(a) => nitro_core::json::address::serialize(a, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Address>, D::Error> {
        let s = <Option<std::borrow::Cow<'de, str>>>::deserialize(d)?;
        s.map(|s| nitro_core::json::parse_address(&s).map_err(serde::de::Error::custom)).transpose()
    }
}

impl Health {
    /// A node that has done nothing yet: not ready.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The store is open, for the party of `address`.
    pub fn store_open(&self, address: Address) {
        self.with(|s| {
            s.address = Some(address);
            s.store_open = true;
        });
    }

    /// The transport listens on `p2p`.
    pub fn transport_listening(&self, p2p: SocketAddr) {
        self.with(|s| s.p2p = Some(p2p));
    }

    /// The chain answered; `head` is its latest block, when asked.
    pub fn chain_reachable(&self, head: Option<u64>) {
        self.with(|s| {
            s.chain = Chain::Reachable;
            if head.is_some() {
                s.chain_head = head;
            }
        });
    }

    /// The chain did not answer; `reason` says how it failed.
    pub fn chain_unreachable(&self, reason: impl std::fmt::Display) {
        let reason = reason.to_string();
        self.with(|s| s.chain = Chain::Unreachable(reason));
    }

    /// The event watcher has `lag` blocks left to scan.
    pub fn watcher_lag(&self, lag: u64) {
        self.with(|s| s.watcher_lag_blocks = Some(lag));
    }

    /// The main loop finished a turn (a timer tick) now.
    pub fn turned(&self) {
        self.turned_at(Instant::now());
    }

    /// The main loop finished a turn at `at`.
    pub fn turned_at(&self, at: Instant) {
        self.with(|s| s.last_turn = Some(at));
    }

    /// The node is shutting down: not ready any more.
    pub fn stopping(&self) {
        self.with(|s| s.stopping = true);
    }

    /// Where the node stands now.
    pub fn report(&self) -> HealthReport {
        self.report_at(Instant::now())
    }

    /// Where the node stands at `now`.
    pub fn report_at(&self, now: Instant) -> HealthReport {
        self.with(|s| {
            let stalled = s.last_turn.map(|t| now.saturating_duration_since(t)).filter(|age| *age > STALL_AFTER);
            let reason = if s.stopping {
                Some("the node is shutting down".to_owned())
            } else if !s.store_open {
                Some("starting: the store is not open yet".to_owned())
            } else if s.p2p.is_none() {
                Some("starting: the transport is not listening yet".to_owned())
            } else {
                match (&s.chain, stalled) {
                    (Chain::Unknown, _) => Some("starting: the chain was not reached yet".to_owned()),
                    (Chain::Unreachable(why), _) => Some(format!("chain unreachable: {why}")),
                    (Chain::Reachable, Some(age)) => {
                        Some(format!("the main loop has not turned for {} s", age.as_secs()))
                    }
                    (Chain::Reachable, None) if s.last_turn.is_none() => {
                        Some("starting: the main loop has not turned yet".to_owned())
                    }
                    (Chain::Reachable, None) => None,
                }
            };
            HealthReport {
                status: if reason.is_none() { "ready" } else { "unavailable" }.to_owned(),
                reason,
                address: s.address,
                store: if s.store_open && !s.stopping { "open" } else { "closed" }.to_owned(),
                transport: if s.p2p.is_some() && !s.stopping { "listening" } else { "down" }.to_owned(),
                p2p: s.p2p,
                chain: match s.chain {
                    Chain::Unknown => "unknown",
                    Chain::Reachable => "reachable",
                    Chain::Unreachable(_) => "unreachable",
                }
                .to_owned(),
                chain_head: s.chain_head,
                watcher_lag_blocks: s.watcher_lag_blocks,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_once_everything_is_up_and_turning() {
        let health = Health::new();
        let start = Instant::now();
        let reason = |h: &Health, at| h.report_at(at).reason.unwrap_or_default();
        assert!(reason(&health, start).contains("store"));
        health.store_open(Address::repeat_byte(1));
        assert!(reason(&health, start).contains("transport"));
        health.transport_listening("127.0.0.1:9".parse().unwrap());
        assert!(reason(&health, start).contains("chain was not reached"));
        health.chain_reachable(Some(7));
        assert!(reason(&health, start).contains("not turned yet"));
        health.turned_at(start);
        let ready = health.report_at(start);
        assert!(ready.is_ready(), "{ready:?}");
        assert_eq!((ready.chain_head, ready.reason), (Some(7), None));

        health.chain_unreachable("connection refused");
        let down = health.report_at(start);
        assert_eq!(down.reason.as_deref(), Some("chain unreachable: connection refused"));
        assert_eq!(down.chain, "unreachable");
        health.chain_reachable(None);
        assert!(health.report_at(start).is_ready());
        assert_eq!(health.report_at(start).chain_head, Some(7));

        let late = start + STALL_AFTER + Duration::from_secs(1);
        assert!(reason(&health, late).contains("has not turned for"));
        health.stopping();
        let stopping = health.report_at(start);
        assert_eq!((stopping.store.as_str(), stopping.transport.as_str()), ("closed", "down"));
        assert!(reason(&health, start).contains("shutting down"));
    }

    #[test]
    fn reports_round_trip_as_json() {
        let health = Health::new();
        health.store_open(Address::repeat_byte(0xab));
        let report = health.report();
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["status"], "unavailable");
        assert_eq!(json["address"], Address::repeat_byte(0xab).to_checksum(None));
        assert!(json.get("chain_head").is_none());
        assert_eq!(serde_json::from_value::<HealthReport>(json).unwrap(), report);
    }
}
