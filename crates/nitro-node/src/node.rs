//! The node process: the engine wired to the store, the peer transport, the chain and the
//! JSON-RPC API.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use nitro_chain::{ChainConfig, ChainError, EthChainService, EthClient, TxManager};
use nitro_core::{
    party::{ObjectiveId, PartyConfig, PartyEvent, Payload, TransactionRequest},
    SigningKey, U48,
};
use thiserror::Error;
use tokio::sync::mpsc;

mod chain;
mod requests;

use chain::{open_watcher, spawn_reader};

use crate::{
    api::{self, ApiCall, ApiConfig, Ops},
    config::NodeConfig,
    engine::{Engine, EngineError, Input, Output, Request},
    health::Health,
    metrics::{NodeMetrics, PartyGauges, StepKind, GAUGE_REFRESH, UPKEEP_EVERY},
    store::{Store, StoreError},
    transport::{Inbound, Transport, TransportConfig},
};

/// Why the node stopped.
#[derive(Debug, Error)]
pub enum NodeError {
    /// The configuration is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The key file is missing or malformed.
    #[error("key file {0}: {1}")]
    Key(String, String),
    /// The store failed (fatal: restart to recover).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The chain could not be reached at start.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The transport could not start.
    #[error("transport: {0}")]
    Transport(String),
    /// The API could not start.
    #[error("api: {0}")]
    Api(String),
}

/// Reads a private key file (0x-hex). On Unix, a file that group or others may read or
/// change is refused (with the `chmod` that fixes it).
pub fn read_key(path: &std::path::Path) -> Result<SigningKey, NodeError> {
    crate::startup::check_key_file(path).map_err(|why| NodeError::Key(path.display().to_string(), why))?;
    let text = std::fs::read_to_string(path).map_err(|e| NodeError::Key(path.display().to_string(), e.to_string()))?;
    SigningKey::from_hex(text.trim()).map_err(|e| NodeError::Key(path.display().to_string(), e.to_string()))
}

struct Waiter {
    ids: Vec<ObjectiveId>,
    any: bool,
    deadline: Instant,
    call: ApiCall,
}

/// The running node's state (owned by its main loop).
struct Node {
    engine: Engine,
    transport: Transport,
    /// Lands the transactions the party asks for.
    transactions: TxManager,
    /// Transactions handed to the manager and not settled, by id: cancelled once the party no
    /// longer needs them.
    outstanding: std::collections::BTreeMap<u64, TransactionRequest>,
    waiters: Vec<Waiter>,
    metrics: NodeMetrics,
    health: Health,
    /// The highest message id handed to the transport: a lower or equal one is a resend.
    max_sent_id: u64,
    /// When the party gauges were last computed, and histograms last folded.
    gauges_at: Option<Instant>,
    upkeep_at: Instant,
    me: Address,
    nonce: u64,
    /// Peers from the configuration: the only ones this node opens ledgers with.
    peers: Vec<Address>,
    /// The latest block timestamp read from the chain.
    chain_time: Option<u64>,
    /// The wallet's balance, read by the chain reader: requests that need more fail at once.
    wallet: Option<U256>,
    /// The wallet's balance of each accepted token, read likewise.
    token_wallet: std::collections::BTreeMap<Address, U256>,
    /// The watcher state last stored.
    watcher_saved: Option<nitro_chain::WatcherState>,
}

/// Peer messages that arrived together are stepped as one group, up to this many (one commit,
/// one fsync, their ledger changes proposed together).
const MAX_GROUP: usize = 64;

/// One input's result in a group: the objective it started, or why it was refused.
type StepResult = Result<Option<ObjectiveId>, EngineError>;

/// Runs a node until `shutdown` resolves (or a fatal error).
pub async fn run(config: NodeConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), NodeError> {
    for warning in config.warnings() {
        tracing::warn!("{warning}");
    }
    let key = read_key(&config.key_file)?;
    let me = key.address();
    config.check_own_address(me).map_err(|e| NodeError::Config(e.to_string()))?;
    let health = Health::new();
    let metrics = NodeMetrics::new(me);
    let party_config = PartyConfig {
        consensus_app: config.consensus_app,
        virtual_payment_app: config.virtual_payment_app,
        challenge_duration: U48::from(config.challenge_duration),
    };
    let store = Store::open(&config.db_path)?;
    let policy = config.policy.to_policy(&config.peers).map_err(|e| NodeError::Config(e.to_string()))?;
    let (engine, recovery) = Engine::open_with(store, key.clone(), party_config, policy)?;
    tracing::info!(address = %me, replayed = recovery.replayed, "store opened");
    health.store_open(me);

    let transport_config = TransportConfig {
        listen: config.listen,
        queue_capacity: config.peer_queue_capacity,
        max_unknown_peers: config.unknown_peers(),
        ..TransportConfig::default()
    };
    let (transport, mut inbound) =
        Transport::bind(key.clone(), transport_config).await.map_err(|e| NodeError::Transport(e.to_string()))?;
    for peer in &config.peers {
        transport.add_peer(peer.address, peer.at);
    }
    // Counterparties of our ledgers (a hub's customers) are known peers, never evicted.
    for ledger in engine.party().ledgers() {
        for p in ledger.consensus_state().state().participants.iter().filter(|p| **p != me) {
            transport.allow_peer(*p);
        }
    }
    tracing::info!(p2p = %transport.local_addr(), "transport listening");
    health.transport_listening(transport.local_addr());

    let client = EthClient::connect(&config.chain_url, &key, ChainConfig::default()).await?;
    crate::startup::check_contracts(&client, &config).await?;
    health.chain_reachable(None);
    let confirmations = config.chain.confirmations_on(client.chain_id());
    let client = client.with_config(ChainConfig { confirmations, ..ChainConfig::default() });
    tracing::info!(chain_id = client.chain_id(), confirmations, "chain connected");
    let chain = EthChainService::new(client, config.adjudicator);
    let stored = chain::stored_watcher(&engine)?;
    let watcher = open_watcher(&chain, stored, &config).await?;
    // The head for the health report from the start (the chain reader refreshes it).
    if let Ok(head) = chain.client().block_number().await {
        health.chain_reachable(Some(head));
    }
    // The wallet too, so that a request made before the chain reader's first round is checked
    // against it (a deposit beyond the wallet fails at once, from the first request on).
    let wallet = chain.client().balance(me).await.ok();
    let tokens: Vec<Address> =
        engine.party().policy().assets.iter().flatten().copied().filter(|a| !a.is_zero()).collect();
    let token_wallet = chain::token_balances(&chain, &tokens, me).await.into_iter().collect();

    let (calls_tx, mut calls) = mpsc::channel::<ApiCall>(256);
    let api_config = ApiConfig { listen: config.api, token_file: config.token_file.clone(), max_body_bytes: 1 << 20 };
    let ops = Ops { health: health.clone(), metrics: Some(metrics.clone()) };
    let api_server =
        api::serve_with(api_config, calls_tx, ops.clone()).await.map_err(|e| NodeError::Api(e.to_string()))?;
    tracing::info!(api = %api_server.local_addr(), "json-rpc api listening");
    let ops_server = match config.metrics_listen {
        Some(listen) => Some(api::serve_ops(listen, ops).await.map_err(|e| NodeError::Api(e.to_string()))?),
        None => None,
    };

    // The transaction manager owns each transaction until it is confirmed at depth, failed for
    // good, or no longer needed; several are in flight at once.
    let (transactions, mut tx_events) = TxManager::spawn(chain.clone(), config.chain.manager());

    let tick_every = Duration::from_millis(config.tick_ms);
    let mut node = Node {
        engine,
        transport,
        transactions,
        outstanding: std::collections::BTreeMap::new(),
        waiters: Vec::new(),
        metrics,
        health,
        max_sent_id: 0,
        gauges_at: None,
        upkeep_at: Instant::now(),
        me,
        nonce: 0,
        peers: config.peers.iter().map(|p| p.address).collect(),
        chain_time: None,
        wallet,
        token_wallet,
        watcher_saved: None,
    };
    // The recent outbox goes to the transport again (the peer recognises what it had); what
    // a peer lacks beyond it, it gets when its session is established (`Input::PeerConnected`).
    for (id, envelope) in recovery.messages {
        node.send(id, envelope.to, &envelope.payload);
    }
    // Unsettled transactions go to the manager again if the party still needs them (a deposit
    // is sent only on holdings that are exactly its expectedHeld at depth, so one into a
    // channel concluded since is refused, not lost); the others are settled.
    for (id, request) in recovery.transactions {
        if node.engine.party().needs(&request) {
            node.submit(id, request);
        } else {
            node.engine.store().transaction_done(id)?;
        }
    }
    node.step(node.tick_input())?;

    let mut tick = tokio::time::interval(tick_every);
    // A loaded node that missed ticks does not catch up with a burst of them (and a stop
    // request waits for one tick at most, even while every chain request times out).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The chain is read on a task of its own; its rounds come to this loop.
    let (reader, mut chain_rounds) = spawn_reader(chain.clone(), watcher, me, tick_every, tokens);
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            Some(first) = inbound.recv() => {
                // What else has arrived is stepped with it, as one group.
                let mut inputs = Vec::new();
                node.push_inbound(first, &mut inputs);
                while inputs.len() < MAX_GROUP {
                    match inbound.try_recv() {
                        Ok(more) => node.push_inbound(more, &mut inputs),
                        Err(_) => break,
                    }
                }
                if let Err(e) = node.step_group(inputs) {
                    break Err(e.into());
                }
            }
            Some(round) = chain_rounds.recv() => {
                if let Err(e) = node.chain_round(round) {
                    break Err(e.into());
                }
            }
            Some(first) = calls.recv() => {
                // Requests that arrived together start their objectives as one group (one
                // commit); reads and refusals are answered as they come.
                let mut writes = Vec::new();
                let mut next = Some(first);
                while let Some(call) = next.take() {
                    if let Some(write) = node.api(call) {
                        let alone = matches!(write.1, Request::Pay { .. });
                        writes.push(write);
                        if alone {
                            break; // a payment's answer tells what is paid after it
                        }
                    }
                    if writes.len() < MAX_GROUP {
                        next = calls.try_recv().ok();
                    }
                }
                if let Err(e) = node.step_requests(writes) {
                    break Err(e.into());
                }
            }
            Some(event) = tx_events.recv() => {
                if let Err(e) = node.settled(event) {
                    break Err(e.into());
                }
            }
            _ = tick.tick() => {
                // A stop request is not left waiting behind ticks, slow ones (the chain
                // unreachable, each request retried) included.
                if futures::FutureExt::now_or_never(&mut shutdown).is_some() {
                    break Ok(());
                }
                if let Err(e) = node.step(node.tick_input()) {
                    if node.fatal(&e) { break Err(e.into()); }
                }
                node.cancel_unneeded()?;
                node.answer_waiters(true);
                node.refresh_gauges();
            }
        }
    };
    node.health.stopping();
    reader.abort();
    node.transactions.shutdown();
    if let Some(ops_server) = ops_server {
        let _ = ops_server.shutdown().await;
    }
    let _ = api_server.shutdown().await;
    node.transport.shutdown().await;
    result
}

impl Node {
    /// A timer tick carrying the wall clock and the chain's clock.
    fn tick_input(&self) -> Input {
        let unix_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        Input::Tick { unix_secs, chain_time: self.chain_time }
    }

    fn fatal(&self, e: &EngineError) -> bool {
        match e {
            EngineError::Party(error) => {
                tracing::debug!(%error, "input refused");
                false
            }
            EngineError::Declined { .. } => false,
            other => {
                tracing::error!(error = %other, "fatal engine error");
                true
            }
        }
    }

    fn send(&mut self, id: u64, to: Address, payload: &Payload) {
        match serde_json::to_value(payload) {
            Ok(body) => {
                self.metrics.message_sent(id <= self.max_sent_id);
                self.max_sent_id = self.max_sent_id.max(id);
                if let Err(error) = self.transport.send(to, id, body) {
                    tracing::warn!(%to, %error, "message not queued; the peer is resynced when its session is established");
                }
            }
            Err(error) => tracing::error!(%error, "message not encodable"),
        }
    }

    fn dispatch(&mut self, output: &Output) {
        for (id, envelope) in &output.messages {
            self.send(*id, envelope.to, &envelope.payload);
        }
        for (id, request) in &output.transactions {
            self.submit(*id, request.clone());
        }
        for event in &output.events {
            match event {
                PartyEvent::ChainReorg { .. } => tracing::warn!(?event, "event"),
                PartyEvent::LedgerOpened { state } => {
                    tracing::debug!(?event, "event");
                    for p in state.state().participants.iter().filter(|p| **p != self.me) {
                        self.transport.allow_peer(*p);
                    }
                }
                _ => tracing::debug!(?event, "event"),
            }
        }
        for id in &output.completed {
            tracing::info!(objective = %id, "objective completed");
        }
        if !output.completed.is_empty() {
            self.answer_waiters(false);
        }
    }

    /// Steps one input. A refused or declined input is returned as an error (the decline's
    /// answer is sent like any output); a store failure is fatal.
    fn step(&mut self, input: Input) -> Result<(), EngineError> {
        let kind = StepKind::of(&input);
        match self.run_group(kind, vec![input])?.pop() {
            Some(Err(EngineError::Declined { error, output })) => {
                tracing::info!(%error, "declined a peer's objective");
                Err(EngineError::Declined { error, output })
            }
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Steps `inputs` of one `kind` through the engine as one group: timed, and what it
    /// produced dispatched (sent, submitted, logged). Returns each input's result; a store
    /// failure is logged and returned (fatal).
    fn run_group(&mut self, kind: StepKind, inputs: Vec<Input>) -> Result<Vec<StepResult>, EngineError> {
        let started = Instant::now();
        let group = self.engine.step_group(inputs);
        self.metrics.step(kind, started.elapsed());
        let group = match group {
            Ok(group) => group,
            Err(e) => {
                self.fatal(&e);
                return Err(e);
            }
        };
        self.dispatch(&group.output);
        Ok(group.results)
    }

    /// Once per [`GAUGE_REFRESH`] at most: the party gauges and the peers' unacknowledged
    /// messages (the chain's gauges come with the chain reader's rounds); then marks the main
    /// loop as turning.
    fn refresh_gauges(&mut self) {
        let now = Instant::now();
        if self.gauges_at.is_none_or(|at| now.duration_since(at) >= GAUGE_REFRESH) {
            self.gauges_at = Some(now);
            self.metrics.party(&PartyGauges::of(self.engine.party()));
            self.metrics.peer_unacked(self.peers.iter().map(|p| self.transport.unacked(*p)).sum());
            self.metrics.peer_dropped(self.peers.iter().map(|p| self.transport.dropped(*p)).sum());
        }
        if now.duration_since(self.upkeep_at) >= UPKEEP_EVERY {
            self.upkeep_at = now;
            self.metrics.upkeep();
        }
        self.health.turned();
    }

    /// Turns what the transport delivered into an engine input (an undecodable message is
    /// logged and dropped).
    fn push_inbound(&mut self, inbound: Inbound, inputs: &mut Vec<Input>) {
        match inbound {
            Inbound::Message { from, body, .. } => {
                self.metrics.message_received();
                match serde_json::from_value::<Payload>(body) {
                    Ok(payload) => inputs.push(Input::Message { from, payload }),
                    Err(e) => tracing::warn!(%from, error = %e, "undecodable message dropped"),
                }
            }
            Inbound::Connected { peer } => {
                tracing::debug!(%peer, "session established; resyncing the peer");
                inputs.push(Input::PeerConnected { peer });
            }
        }
    }

    /// Steps inputs that arrived together as one group (group commit): one transaction, one
    /// fsync, nothing sent before it. An input refused or declined is logged and changes
    /// nothing; only a fatal error is returned.
    fn step_group(&mut self, inputs: Vec<Input>) -> Result<(), EngineError> {
        let Some(kind) = inputs.first().map(StepKind::of) else { return Ok(()) };
        for result in self.run_group(kind, inputs)? {
            match result {
                Err(EngineError::Declined { error, .. }) => tracing::info!(%error, "declined a peer's objective"),
                Err(e) if self.fatal(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}
