//! The node process: the engine wired to the store, the peer transport, the chain and the
//! JSON-RPC API.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use nitro_chain::{ChainConfig, ChainError, EthChainService, EthClient, TxManager};
use nitro_core::{
    party::{ObjectiveId, Party, PartyConfig, PartyEvent, Payload, TransactionRequest, WaitingFor},
    ConsensusChannel, SigningKey, U48,
};
use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::mpsc;

mod chain;

use chain::{open_watcher, spawn_reader};

use crate::{
    api::{
        self, ApiCall, ApiConfig, ApiRequest, GuaranteeSummary, LedgerList, LedgerRole, LedgerStatus, LedgerSummary,
        ObjectiveStarted, ObjectiveStatus, Ops, PaymentSent, RpcError, WaitResult,
    },
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
    /// The watcher state last stored.
    watcher_saved: Option<nitro_chain::WatcherState>,
}

/// Peer messages that arrived together are stepped as one group, up to this many (one commit,
/// one fsync, their ledger changes proposed together).
const MAX_GROUP: usize = 64;

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
        wallet: None,
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
    let (reader, mut chain_rounds) = spawn_reader(chain.clone(), watcher, me, tick_every);
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

    fn step(&mut self, input: Input) -> Result<Output, EngineError> {
        let kind = StepKind::of(&input);
        let started = Instant::now();
        let stepped = self.engine.step(input);
        self.metrics.step(kind, started.elapsed());
        match stepped {
            Ok(output) => {
                self.dispatch(&output);
                Ok(output)
            }
            Err(EngineError::Declined { error, output }) => {
                tracing::info!(%error, "declined a peer's objective");
                self.dispatch(&output);
                Err(EngineError::Declined { error, output })
            }
            Err(e) => Err(e),
        }
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
        for result in group.results {
            match result {
                Err(EngineError::Declined { error, .. }) => tracing::info!(%error, "declined a peer's objective"),
                Err(e) if self.fatal(&e) => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Handles one API call: reads and refusals are answered at once; a request for the
    /// engine is returned with its call, to be stepped ([`Node::step_requests`]).
    fn api(&mut self, call: ApiCall) -> Option<(ApiCall, Request)> {
        let request = match call.request() {
            Ok(r) => r,
            Err(e) => {
                call.respond::<Value>(Err(e));
                return None;
            }
        };
        let me = self.me;
        let write = match request {
            ApiRequest::ObjectivesWait(w) => {
                let party = self.engine.party();
                if let Some(unknown) = w.objective_ids.iter().find(|id| party.objective(id).is_none()) {
                    call.respond::<Value>(Err(RpcError::refused(format!("unknown objective {unknown}"))));
                    return None;
                }
                let deadline = Instant::now() + w.timeout;
                self.waiters.push(Waiter { ids: w.objective_ids, any: w.any, deadline, call });
                self.answer_waiters(false);
                return None;
            }
            ApiRequest::LedgerGet { channel_id } => {
                let party = self.engine.party();
                let answer = party
                    .ledger(&channel_id)
                    .map(|l| summary(party, l))
                    .ok_or_else(|| RpcError::refused(format!("unknown ledger {channel_id}")));
                call.respond(answer);
                return None;
            }
            ApiRequest::VirtualGet { channel_id } => {
                call.respond(virtual_summary(self.engine.party(), channel_id));
                return None;
            }
            ApiRequest::LedgerList => {
                let party = self.engine.party();
                call.respond(Ok(LedgerList { ledgers: party.ledgers().map(|l| summary(party, l)).collect() }));
                return None;
            }
            ApiRequest::ObjectiveGet { objective_id } => {
                call.respond(self.status(&objective_id));
                return None;
            }
            ApiRequest::ObjectiveList(filter) => {
                call.respond(Ok(self.list(&filter)));
                return None;
            }
            ApiRequest::ObjectiveCancel { objective_id } => Request::Cancel { objective: objective_id },
            ApiRequest::ChannelForceClose { channel_id } => Request::ForceClose { channel_id },
            ApiRequest::LedgerOpen(o) => {
                if let Err(why) = self.check_ledger_open(&o) {
                    call.respond::<Value>(Err(RpcError::refused(why)));
                    return None;
                }
                Request::LedgerOpen {
                    participants: [me, o.counterparty],
                    asset: o.asset,
                    amounts: [o.my_amount, o.counterparty_amount],
                    nonce: o.nonce.unwrap_or_else(|| self.next_nonce()),
                }
            }
            ApiRequest::LedgerClose { channel_id } => Request::LedgerClose { channel_id },
            ApiRequest::VirtualFund(v) => {
                if v.counterparty == me || v.intermediaries.contains(&me) {
                    call.respond::<Value>(Err(RpcError::refused(
                        "this node cannot be the payee or an intermediary of a channel it pays from",
                    )));
                    return None;
                }
                if v.intermediaries.contains(&v.counterparty) {
                    call.respond::<Value>(Err(RpcError::refused(format!(
                        "{} is an intermediary, not a payee",
                        v.counterparty
                    ))));
                    return None;
                }
                let mut participants = vec![me];
                participants.extend(v.intermediaries);
                participants.push(v.counterparty);
                Request::VirtualFund {
                    participants,
                    asset: v.asset,
                    amounts: [v.amount, v.counterparty_amount],
                    nonce: v.nonce.unwrap_or_else(|| self.next_nonce()),
                }
            }
            ApiRequest::VirtualPay { channel_id, amount } => Request::Pay { channel_id, amount },
            ApiRequest::VirtualDefund { channel_id } => Request::VirtualDefund { channel_id },
        };
        Some((call, write))
    }

    /// Steps the API's requests that arrived together as one group (one commit) and answers
    /// each: the objective it started, what is paid after a payment, or why it was refused.
    /// Returns an error only when the engine failed fatally.
    fn step_requests(&mut self, writes: Vec<(ApiCall, Request)>) -> Result<(), EngineError> {
        if writes.is_empty() {
            return Ok(());
        }
        let (calls, requests): (Vec<ApiCall>, Vec<Request>) = writes.into_iter().unzip();
        let pays: Vec<Option<nitro_core::ChannelId>> = requests
            .iter()
            .map(|r| match r {
                Request::Pay { channel_id, .. } => Some(*channel_id),
                _ => None,
            })
            .collect();
        let started = Instant::now();
        let group = self.engine.step_group(requests.into_iter().map(Input::Request).collect());
        self.metrics.step(StepKind::Request, started.elapsed());
        let group = match group {
            Ok(group) => group,
            Err(e) => {
                for call in calls {
                    call.respond::<Value>(Err(RpcError::internal(&e)));
                }
                self.fatal(&e);
                return Err(e);
            }
        };
        self.dispatch(&group.output);
        let mut fatal = None;
        for ((call, result), pay) in calls.into_iter().zip(group.results).zip(pays) {
            match (result, pay) {
                (Ok(Some(objective_id)), _) => {
                    call.respond(Ok(ObjectiveStarted { objective_id, channel_id: objective_id.channel_id() }))
                }
                (Ok(None), Some(channel_id)) => {
                    call.respond(Ok(PaymentSent { channel_id, paid: self.engine.party().paid(&channel_id) }))
                }
                (Ok(None), None) => call.respond(Ok(json!({}))),
                (Err(EngineError::Party(e)), _) => call.respond::<Value>(Err(RpcError::refused(e))),
                (Err(EngineError::Declined { error, .. }), _) => call.respond::<Value>(Err(RpcError::refused(error))),
                (Err(e), _) => {
                    call.respond::<Value>(Err(RpcError::internal(&e)));
                    fatal.get_or_insert(e);
                }
            }
        }
        match fatal {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// What a ledger opening needs and can be checked before anything starts: a configured
    /// peer that is not us, amounts that add up, and a wallet that holds our deposit.
    fn check_ledger_open(&self, o: &crate::api::LedgerOpen) -> Result<(), String> {
        if o.counterparty == self.me {
            return Err("a ledger needs a counterparty other than this node".into());
        }
        if !self.peers.contains(&o.counterparty) {
            return Err(format!(
                "{} is not a configured peer (add it under [[peers]] to open a ledger with it)",
                o.counterparty
            ));
        }
        if o.my_amount.checked_add(o.counterparty_amount).is_none() {
            return Err("the two deposits overflow 256 bits".into());
        }
        if !o.asset.is_zero() {
            return Err(format!("asset {} is not supported: ledgers hold ETH (the zero address)", o.asset));
        }
        match self.wallet {
            Some(held) if held < o.my_amount => {
                Err(format!("the wallet holds {held} wei; the deposit needs {} wei plus gas", o.my_amount))
            }
            _ => Ok(()),
        }
    }

    fn list(&self, filter: &crate::api::ObjectiveFilter) -> crate::api::ObjectiveList {
        use crate::api::ObjectiveState;
        let party = self.engine.party();
        // The finished objectives the party let go of come from the archive (the newest
        // `ARCHIVE_LISTED` of them), then the ones it holds.
        let archived = self.engine.archived_list(filter.channel_id, ARCHIVE_LISTED).unwrap_or_default();
        let objectives = archived
            .into_iter()
            .map(|(id, a)| archived_status(id, a))
            .chain(party.objectives().filter_map(|(id, _)| self.status(&id).ok()))
            .filter(|s| filter.channel_id.is_none_or(|c| c == s.objective_id.channel_id()))
            .filter(|s| filter.kind.as_deref().is_none_or(|k| s.objective_id.to_string().starts_with(&format!("{k}-"))))
            .filter(|s| {
                let state = match (s.done, &s.failed) {
                    (true, _) => ObjectiveState::Done,
                    (false, Some(_)) => ObjectiveState::Failed,
                    (false, None) => ObjectiveState::Pending,
                };
                filter.status.is_none_or(|f| f == state)
            })
            .collect();
        crate::api::ObjectiveList { objectives }
    }

    fn next_nonce(&mut self) -> u64 {
        // Distinct per call within a run and across restarts (time-based, strictly increasing).
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64);
        self.nonce = now.unwrap_or(0).max(self.nonce + 1);
        self.nonce
    }

    fn status(&self, id: &ObjectiveId) -> Result<ObjectiveStatus, RpcError> {
        let party = self.engine.party();
        let Some(waiting) = party.waiting_for(id) else {
            // Finished and let go of: the archive answers.
            let archived = self.engine.archived(id).map_err(|e| RpcError::internal(&e))?;
            let a = archived.ok_or_else(|| RpcError::refused(format!("unknown objective {id}")))?;
            return Ok(archived_status(*id, a));
        };
        let failed = match &waiting {
            WaitingFor::Failed(why) => Some(why.clone()),
            _ => None,
        };
        let finalizes_at = match id {
            ObjectiveId::ForceClose(c) => party.registered_challenge(c).map(|c| c.finalizes_at),
            _ => None,
        };
        Ok(ObjectiveStatus {
            objective_id: *id,
            channel_id: id.channel_id(),
            done: party.is_complete(id),
            failed,
            waiting_for: waiting.to_string(),
            finalizes_at,
        })
    }

    /// Answers the waiters whose objectives are done (or failed), and, if `expire`, those whose
    /// time is up.
    fn answer_waiters(&mut self, expire: bool) {
        let now = Instant::now();
        let party = self.engine.party();
        let mut still = Vec::new();
        for w in std::mem::take(&mut self.waiters) {
            let mut result = WaitResult { done: Vec::new(), failed: Vec::new(), pending: Vec::new() };
            for id in &w.ids {
                match party.waiting_for(id) {
                    _ if party.is_complete(id) => result.done.push(*id),
                    Some(WaitingFor::Failed(_)) => result.failed.push(*id),
                    Some(_) => result.pending.push(*id),
                    None => match self.engine.archived(id) {
                        Ok(Some(a)) if a.done => result.done.push(*id),
                        Ok(Some(_)) => result.failed.push(*id),
                        _ => result.pending.push(*id),
                    },
                }
            }
            let settled = if w.any { result.pending.len() < w.ids.len() } else { result.pending.is_empty() };
            if settled || (expire && w.deadline <= now) {
                w.call.respond(Ok(result));
            } else {
                still.push(w);
            }
        }
        self.waiters = still;
    }
}

/// A virtual channel the party funds, is paid in, or routes (while it holds its funding).
fn virtual_summary(party: &Party, channel_id: nitro_core::ChannelId) -> Result<crate::api::VirtualSummary, RpcError> {
    use crate::api::{VirtualRole, VirtualStatus, VirtualSummary};
    use nitro_core::party::Objective;
    let Some(Objective::VirtualFund(v)) = party.objective(&ObjectiveId::VirtualFund(channel_id)) else {
        return Err(RpcError::refused(format!("unknown virtual channel {channel_id}")));
    };
    let channel = v.channel();
    let participants = &channel.prefund.participants;
    let (payer, payee) = match (participants.first(), participants.last()) {
        (Some(a), Some(b)) => (*a, *b),
        _ => return Err(RpcError::refused(format!("virtual channel {channel_id} has no participants"))),
    };
    let me = party.address();
    let role = if me == payer {
        VirtualRole::Payer
    } else if me == payee {
        VirtualRole::Payee
    } else {
        VirtualRole::Intermediary
    };
    let closing = [ObjectiveId::VirtualDefund(channel_id), ObjectiveId::ForceClose(channel_id)]
        .iter()
        .any(|id| party.objective(id).is_some());
    let status = match (party.is_complete(&ObjectiveId::VirtualFund(channel_id)), closing) {
        (_, true) => VirtualStatus::Closing,
        (true, false) => VirtualStatus::Open,
        (false, false) => VirtualStatus::Funding,
    };
    Ok(VirtualSummary {
        channel_id,
        role,
        status,
        payer,
        payee,
        asset: channel.asset,
        amount: channel.amounts[0],
        paid: party.paid(&channel_id),
    })
}

/// How many archived objectives `objective_list` includes at most.
const ARCHIVE_LISTED: usize = 1_000;

/// The status of an objective known only from the archive.
fn archived_status(id: ObjectiveId, a: crate::engine::Archived) -> ObjectiveStatus {
    ObjectiveStatus {
        objective_id: id,
        channel_id: id.channel_id(),
        done: a.done,
        failed: (!a.done).then(|| a.detail.clone()),
        waiting_for: if a.done { "done".into() } else { format!("failed: {}", a.detail) },
        finalizes_at: None,
    }
}

fn summary(party: &Party, l: &ConsensusChannel) -> LedgerSummary {
    let o = l.consensus_outcome();
    let state = l.consensus_state();
    let me = party.address();
    let counterparty = state.state().participants.iter().find(|p| **p != me).copied().unwrap_or_default();
    let (mine, theirs) = match l {
        ConsensusChannel::Leader(_) => (o.leader().amount, o.follower().amount),
        ConsensusChannel::Follower(_) => (o.follower().amount, o.leader().amount),
    };
    let closing = party.objective(&ObjectiveId::DirectDefund(l.channel_id())).is_some();
    LedgerSummary {
        channel_id: l.channel_id(),
        counterparty,
        role: match l {
            ConsensusChannel::Leader(_) => LedgerRole::Leader,
            ConsensusChannel::Follower(_) => LedgerRole::Follower,
        },
        status: if closing { LedgerStatus::Closing } else { LedgerStatus::Open },
        asset: o.asset(),
        my_balance: mine,
        counterparty_balance: theirs,
        guarantees: o.guarantees().map(|g| GuaranteeSummary { channel_id: g.target(), amount: g.amount() }).collect(),
        turn_num: l.consensus_turn().to::<u64>(),
    }
}
