//! The node's Prometheus metrics, recorded through the `metrics` crate into a
//! `metrics-exporter-prometheus` recorder of the node's own (no process-wide recorder: two
//! nodes in one process, as in the tests, keep separate figures).
//!
//! Recording is cheap: every handle is registered once, in [`NodeMetrics::new`], and
//! recording is an atomic add (a histogram sample: a push into a lock-free bucket). The
//! gauges that describe the party (ledgers, locked amounts, objectives) are
//! computed from it at most once per [`GAUGE_REFRESH`] by the main loop.
//!
//! `docs/api.md` lists every metric with its meaning.

use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, U256};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Level, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use nitro_core::party::{Party, WaitingFor};

use crate::engine::Input;

/// Every `nitro_*` metric the node exports, with its type and meaning.
pub const METRICS: &[(&str, &str, &str)] = &[
    (NODE_INFO, "gauge", "always 1; labels: the node's address and version"),
    (LEDGERS_OPEN, "gauge", "ledger channels open (funded, not being closed)"),
    (GUARANTEES_LOCKED, "gauge", "wei locked in guarantees for virtual channels, over every ledger's consensus state"),
    (OBJECTIVES, "gauge", "objectives by state (label state: pending, done, failed)"),
    (MESSAGES_RECEIVED, "counter", "messages received from peers (each delivered once by the transport)"),
    (MESSAGES_SENT, "counter", "new messages handed to the transport"),
    (MESSAGES_RESENT, "counter", "messages handed to the transport again (the recent outbox, after a restart)"),
    (PEER_UNACKED, "gauge", "messages to configured peers not yet acknowledged"),
    (
        PEER_DROPPED,
        "counter",
        "messages to configured peers dropped from a full queue (the peer is resynced when its session is re-established)",
    ),
    (STEP_SECONDS, "histogram", "time of one engine step, its durable SQLite commit included (label input)"),
    (TX_SENT, "counter", "chain transactions confirmed (label function)"),
    (TX_FAILED, "counter", "chain transactions that failed or reverted (label function)"),
    (GAS_USED, "counter", "gas used by confirmed transactions (label function)"),
    (CHAIN_HEAD, "gauge", "the latest block number seen"),
    (WATCHER_LAG, "gauge", "blocks the adjudicator event watcher has yet to scan"),
];

/// `nitro_node_info`.
pub const NODE_INFO: &str = "nitro_node_info";
/// `nitro_ledgers_open`.
pub const LEDGERS_OPEN: &str = "nitro_ledgers_open";
/// `nitro_guarantees_locked_wei`.
pub const GUARANTEES_LOCKED: &str = "nitro_guarantees_locked_wei";
/// `nitro_objectives`.
pub const OBJECTIVES: &str = "nitro_objectives";
/// `nitro_messages_received_total`.
pub const MESSAGES_RECEIVED: &str = "nitro_messages_received_total";
/// `nitro_messages_sent_total`.
pub const MESSAGES_SENT: &str = "nitro_messages_sent_total";
/// `nitro_messages_resent_total`.
pub const MESSAGES_RESENT: &str = "nitro_messages_resent_total";
/// `nitro_peer_unacked_messages`.
pub const PEER_UNACKED: &str = "nitro_peer_unacked_messages";
/// `nitro_peer_messages_dropped_total`.
pub const PEER_DROPPED: &str = "nitro_peer_messages_dropped_total";
/// `nitro_engine_step_seconds`.
pub const STEP_SECONDS: &str = "nitro_engine_step_seconds";
/// `nitro_chain_transactions_sent_total`.
pub const TX_SENT: &str = "nitro_chain_transactions_sent_total";
/// `nitro_chain_transactions_failed_total`.
pub const TX_FAILED: &str = "nitro_chain_transactions_failed_total";
/// `nitro_chain_gas_used_total`.
pub const GAS_USED: &str = "nitro_chain_gas_used_total";
/// `nitro_chain_head_block`.
pub const CHAIN_HEAD: &str = "nitro_chain_head_block";
/// `nitro_watcher_lag_blocks`.
pub const WATCHER_LAG: &str = "nitro_watcher_lag_blocks";

/// The adjudicator functions the node calls (`ChainTransaction::function_name`): their
/// transaction series exist, at zero, from the start.
pub const TX_FUNCTIONS: &[&str] =
    &["deposit", "checkpoint", "challenge", "conclude", "concludeAndTransferAllAssets", "transfer", "reclaim"];

/// How often the main loop recomputes the party gauges ([`PartyGauges::of`]) at most.
pub const GAUGE_REFRESH: Duration = Duration::from_secs(1);

/// How often histogram samples are folded into their buckets at most (also done at every
/// scrape), so that memory stays flat when nobody scrapes.
pub const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Upper bounds of the step-time buckets, in seconds (an fsync'd commit is 0.1–10 ms on an
/// SSD; a step that waits for a slow disk shows up in the last ones).
const STEP_BUCKETS: &[f64] = &[0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

const METADATA: Metadata<'static> = Metadata::new("nitro_node", Level::INFO, Some(module_path!()));

/// The kind of an engine input, the label of [`STEP_SECONDS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepKind {
    /// An API request.
    Request,
    /// A peer's message.
    Message,
    /// A chain event.
    Chain,
    /// A failed transaction.
    TransactionFailed,
    /// A peer reconnected (the party resyncs it).
    PeerConnected,
    /// A timer tick.
    Tick,
}

impl StepKind {
    const ALL: [StepKind; 6] = [
        StepKind::Request,
        StepKind::Message,
        StepKind::Chain,
        StepKind::TransactionFailed,
        StepKind::PeerConnected,
        StepKind::Tick,
    ];

    /// The kind of `input`.
    pub fn of(input: &Input) -> Self {
        match input {
            Input::Request(_) => StepKind::Request,
            Input::Message { .. } => StepKind::Message,
            Input::Chain(_) => StepKind::Chain,
            Input::TransactionFailed { .. } => StepKind::TransactionFailed,
            Input::PeerConnected { .. } => StepKind::PeerConnected,
            Input::Tick { .. } => StepKind::Tick,
        }
    }

    fn label(self) -> &'static str {
        match self {
            StepKind::Request => "request",
            StepKind::Message => "message",
            StepKind::Chain => "chain",
            StepKind::TransactionFailed => "transaction_failed",
            StepKind::PeerConnected => "peer_connected",
            StepKind::Tick => "tick",
        }
    }
}

/// The gauges that describe the party, computed from it in one pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartyGauges {
    /// Ledgers open (not being closed).
    pub ledgers_open: u64,
    /// Wei in guarantees, over every ledger's consensus state.
    pub locked: U256,
    /// Objectives going on.
    pub pending: u64,
    /// Objectives complete.
    pub done: u64,
    /// Objectives stopped for good.
    pub failed: u64,
}

impl PartyGauges {
    /// Counts `party`'s ledgers, locked amounts and objectives (a pass over each).
    pub fn of(party: &Party) -> Self {
        let mut gauges = PartyGauges::default();
        for ledger in party.ledgers() {
            let closing = party.objective(&nitro_core::party::ObjectiveId::DirectDefund(ledger.channel_id())).is_some();
            if !closing {
                gauges.ledgers_open += 1;
            }
            for g in ledger.consensus_outcome().guarantees() {
                gauges.locked = gauges.locked.saturating_add(g.amount());
            }
        }
        for (id, done) in party.objectives() {
            match (done, party.waiting_for(&id)) {
                (true, _) => gauges.done += 1,
                (false, Some(WaitingFor::Failed(_))) => gauges.failed += 1,
                (false, _) => gauges.pending += 1,
            }
        }
        gauges
    }
}

/// The node's metrics: cheap to clone (every clone records into the same recorder).
#[derive(Clone)]
pub struct NodeMetrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NodeMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeMetrics").finish_non_exhaustive()
    }
}

struct Inner {
    recorder: PrometheusRecorder,
    handle: PrometheusHandle,
    messages_received: Counter,
    messages_sent: Counter,
    messages_resent: Counter,
    ledgers_open: Gauge,
    locked: Gauge,
    objectives: [Gauge; 3],
    peer_unacked: Gauge,
    peer_dropped: Counter,
    chain_head: Gauge,
    watcher_lag: Gauge,
    steps: [Histogram; 6],
    /// Per adjudicator function: sent, failed, gas used.
    transactions: Vec<(&'static str, [Counter; 3])>,
}

impl NodeMetrics {
    /// A recorder for the node of `address`, every metric registered (and rendered, at zero)
    /// from the start.
    pub fn new(address: Address) -> Self {
        // Only an empty bucket list is refused, and STEP_BUCKETS is not empty.
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(STEP_SECONDS.into()), STEP_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new())
            .build_recorder();
        for (name, kind, help) in METRICS {
            let name = KeyName::from_const_str(name);
            let help = SharedString::const_str(help);
            match *kind {
                "counter" => recorder.describe_counter(name, None, help),
                "histogram" => recorder.describe_histogram(name, Some(Unit::Seconds), help),
                _ => recorder.describe_gauge(name, None, help),
            }
        }
        let counter = |name: &'static str| recorder.register_counter(&Key::from_static_name(name), &METADATA);
        let gauge = |name: &'static str| recorder.register_gauge(&Key::from_static_name(name), &METADATA);
        let state = |state: &'static str| {
            let key = Key::from_parts(OBJECTIVES, vec![Label::from_static_parts("state", state)]);
            recorder.register_gauge(&key, &METADATA)
        };
        let step = |kind: StepKind| {
            let key = Key::from_parts(STEP_SECONDS, vec![Label::from_static_parts("input", kind.label())]);
            recorder.register_histogram(&key, &METADATA)
        };
        let info = Key::from_parts(
            NODE_INFO,
            vec![
                Label::new("address", address.to_checksum(None)),
                Label::from_static_parts("version", env!("CARGO_PKG_VERSION")),
            ],
        );
        recorder.register_gauge(&info, &METADATA).set(1.0);
        let transactions = TX_FUNCTIONS.iter().map(|f| (*f, transaction_counters(&recorder, f))).collect();
        let inner = Inner {
            handle: recorder.handle(),
            messages_received: counter(MESSAGES_RECEIVED),
            messages_sent: counter(MESSAGES_SENT),
            messages_resent: counter(MESSAGES_RESENT),
            ledgers_open: gauge(LEDGERS_OPEN),
            locked: gauge(GUARANTEES_LOCKED),
            objectives: [state("pending"), state("done"), state("failed")],
            peer_unacked: gauge(PEER_UNACKED),
            peer_dropped: counter(PEER_DROPPED),
            chain_head: gauge(CHAIN_HEAD),
            watcher_lag: gauge(WATCHER_LAG),
            steps: StepKind::ALL.map(step),
            transactions,
            recorder,
        };
        Self { inner: Arc::new(inner) }
    }

    /// The metrics in the Prometheus text format (version 0.0.4).
    pub fn render(&self) -> String {
        self.inner.handle.render()
    }

    /// Folds recorded histogram samples into their buckets (call every [`UPKEEP_EVERY`]).
    pub fn upkeep(&self) {
        self.inner.handle.run_upkeep();
    }

    /// A message from a peer arrived.
    pub fn message_received(&self) {
        self.inner.messages_received.increment(1);
    }

    /// A message was handed to the transport; `again`: it had been before.
    pub fn message_sent(&self, again: bool) {
        if again {
            self.inner.messages_resent.increment(1);
        } else {
            self.inner.messages_sent.increment(1);
        }
    }

    /// One engine step of `kind` took `elapsed`.
    pub fn step(&self, kind: StepKind, elapsed: Duration) {
        let i = StepKind::ALL.iter().position(|k| *k == kind).unwrap_or(0);
        self.inner.steps[i].record(elapsed.as_secs_f64());
    }

    /// A transaction calling `function` was confirmed having used `gas_used`
    /// (`Some`), or failed (`None`).
    pub fn transaction(&self, function: &'static str, gas_used: Option<u64>) {
        let known = self.inner.transactions.iter().find(|(f, _)| *f == function).map(|(_, c)| c);
        // A function this version does not know of yet is registered on the spot.
        let registered;
        let [sent, failed, gas] = match known {
            Some(counters) => counters,
            None => {
                registered = transaction_counters(&self.inner.recorder, function);
                &registered
            }
        };
        match gas_used {
            Some(used) => {
                sent.increment(1);
                gas.increment(used);
            }
            None => failed.increment(1),
        }
    }

    /// Sets the party gauges.
    pub fn party(&self, gauges: &PartyGauges) {
        let inner = &self.inner;
        inner.ledgers_open.set(gauges.ledgers_open as f64);
        inner.locked.set(f64::from(gauges.locked));
        for (gauge, value) in inner.objectives.iter().zip([gauges.pending, gauges.done, gauges.failed]) {
            gauge.set(value as f64);
        }
    }

    /// Sets the number of messages peers have not acknowledged yet.
    pub fn peer_unacked(&self, messages: usize) {
        self.inner.peer_unacked.set(messages as f64);
    }

    /// Sets the number of messages dropped from full peer queues so far.
    pub fn peer_dropped(&self, messages: u64) {
        self.inner.peer_dropped.absolute(messages);
    }

    /// Sets the chain head and the watcher's lag behind it.
    pub fn chain(&self, head: u64, watcher_lag: u64) {
        self.inner.chain_head.set(head as f64);
        self.inner.watcher_lag.set(watcher_lag as f64);
    }
}

fn transaction_counters(recorder: &PrometheusRecorder, function: &'static str) -> [Counter; 3] {
    [TX_SENT, TX_FAILED, GAS_USED].map(|name| {
        let key = Key::from_parts(name, vec![Label::from_static_parts("function", function)]);
        recorder.register_counter(&key, &METADATA)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample line starting with `series` (name and labels).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_metric_is_rendered_with_help_and_recordings_show() {
        let metrics = NodeMetrics::new(Address::repeat_byte(0x11));
        metrics.message_received();
        metrics.message_sent(false);
        metrics.message_sent(false);
        metrics.message_sent(true);
        metrics.step(StepKind::Message, Duration::from_micros(300));
        metrics.transaction("deposit", Some(50_000));
        metrics.transaction("deposit", Some(40_000));
        metrics.transaction("challenge", None);
        let locked = U256::from(10u64).pow(U256::from(18u64));
        metrics.party(&PartyGauges { ledgers_open: 2, locked, pending: 1, done: 3, failed: 1 });
        metrics.chain(120, 2);
        metrics.upkeep();
        let text = metrics.render();
        for (name, kind, _) in METRICS {
            assert!(text.contains(&format!("# TYPE {name} {kind}")), "{name} {kind}:\n{text}");
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
        }
        assert_eq!(sample(&text, MESSAGES_RECEIVED), Some(1.0));
        assert_eq!(sample(&text, MESSAGES_SENT), Some(2.0));
        assert_eq!(sample(&text, MESSAGES_RESENT), Some(1.0));
        assert_eq!(sample(&text, LEDGERS_OPEN), Some(2.0));
        assert_eq!(sample(&text, GUARANTEES_LOCKED), Some(1e18));
        assert_eq!(sample(&text, "nitro_objectives{state=\"done\"}"), Some(3.0));
        assert_eq!(sample(&text, "nitro_chain_transactions_sent_total{function=\"deposit\"}"), Some(2.0));
        assert_eq!(sample(&text, "nitro_chain_gas_used_total{function=\"deposit\"}"), Some(90_000.0));
        assert_eq!(sample(&text, "nitro_chain_transactions_failed_total{function=\"challenge\"}"), Some(1.0));
        assert_eq!(sample(&text, "nitro_chain_transactions_failed_total{function=\"reclaim\"}"), Some(0.0));
        metrics.transaction("somethingNew", Some(1));
        assert_eq!(sample(&metrics.render(), "nitro_chain_gas_used_total{function=\"somethingNew\"}"), Some(1.0));
        assert_eq!(sample(&text, WATCHER_LAG), Some(2.0));
        assert_eq!(sample(&text, "nitro_engine_step_seconds_count{input=\"message\"}"), Some(1.0));
        assert_eq!(sample(&text, "nitro_engine_step_seconds_bucket{input=\"message\",le=\"0.0005\"}"), Some(1.0));
        assert_eq!(sample(&text, "nitro_engine_step_seconds_bucket{input=\"message\",le=\"0.00025\"}"), Some(0.0));
        let info = format!("nitro_node_info{{address=\"{}\",version=", Address::repeat_byte(0x11).to_checksum(None));
        assert!(text.contains(&info), "{text}");
    }

    #[test]
    fn two_nodes_keep_separate_figures() {
        let a = NodeMetrics::new(Address::repeat_byte(1));
        let b = NodeMetrics::new(Address::repeat_byte(2));
        a.message_received();
        assert_eq!(sample(&a.render(), MESSAGES_RECEIVED), Some(1.0));
        assert_eq!(sample(&b.render(), MESSAGES_RECEIVED), Some(0.0));
    }
}
