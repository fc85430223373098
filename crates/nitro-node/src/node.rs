//! The node process: the engine wired to the store, the peer transport, the chain and the
//! JSON-RPC API.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use nitro_chain::{ChainConfig, ChainError, ChainService, EthChainService, EthClient, TxManager};
use nitro_core::{
    party::{ObjectiveId, Party, PartyConfig, PartyEvent, Payload, TransactionRequest, WaitingFor},
    ConsensusChannel, SigningKey, U48,
};
use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::mpsc;

mod chain;

use chain::{open_watcher, WATCHER_STATE};

use crate::{
    api::{
        self, ApiCall, ApiConfig, ApiRequest, GuaranteeSummary, LedgerList, LedgerRole, LedgerStatus, LedgerSummary,
        ObjectiveStarted, ObjectiveStatus, PaymentSent, RpcError, WaitResult,
    },
    config::NodeConfig,
    engine::{Engine, EngineError, Input, Output, Request},
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

/// Reads a private key file (0x-hex).
pub fn read_key(path: &std::path::Path) -> Result<SigningKey, NodeError> {
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
    me: Address,
    nonce: u64,
    /// Peers from the configuration: the only ones this node opens ledgers with.
    peers: Vec<Address>,
    /// The latest block timestamp read from the chain.
    chain_time: Option<u64>,
    /// The wallet's balance, read on the timer: requests that need more fail at once.
    wallet: Option<U256>,
    resend: ResendTimer,
}

/// When to resend what peers may lack ([`Input::Tick`]). The transport already retransmits
/// until acknowledged; these resends are for what a restarted peer acknowledged but never
/// processed, so they are needed only when things stall. Every resent message is new to the
/// transport and a full step at the peer: resending everything unfinished on every tick made
/// a loaded peer fall behind, the more so the more it fell behind (a storm of duplicates).
///
/// So: a resend comes `base` after the last progress (a step that produced events), then
/// backs off, doubling up to `cap` while nothing progresses; and at least every `cap` even
/// while other objectives progress, so that none starves.
#[derive(Debug)]
struct ResendTimer {
    base: Duration,
    cap: Duration,
    interval: Duration,
    last_progress: Instant,
    last_resend: Instant,
}

impl ResendTimer {
    /// How far the back-off goes, in multiples of `base`.
    const BACKOFF: u32 = 16;

    fn new(base: Duration, now: Instant) -> Self {
        Self { base, cap: base * Self::BACKOFF, interval: base, last_progress: now, last_resend: now }
    }

    fn progressed(&mut self, now: Instant) {
        self.last_progress = now;
        self.interval = self.base;
    }

    fn due(&self, now: Instant) -> bool {
        let since_resend = now.saturating_duration_since(self.last_resend);
        let quiet = now.saturating_duration_since(self.last_progress) >= self.base;
        (quiet && since_resend >= self.interval) || since_resend >= self.cap
    }

    fn resent(&mut self, now: Instant) {
        self.last_resend = now;
        self.interval = (self.interval * 2).min(self.cap);
    }
}

/// Runs a node until `shutdown` resolves (or a fatal error).
pub async fn run(config: NodeConfig, shutdown: impl std::future::Future<Output = ()>) -> Result<(), NodeError> {
    let key = read_key(&config.key_file)?;
    let me = key.address();
    let party_config = PartyConfig {
        consensus_app: config.consensus_app,
        virtual_payment_app: config.virtual_payment_app,
        challenge_duration: U48::from(config.challenge_duration),
    };
    let store = Store::open(&config.db_path)?;
    let policy = config.policy.to_policy(&config.peers).map_err(|e| NodeError::Config(e.to_string()))?;
    let (engine, recovery) = Engine::open_with(store, key.clone(), party_config, policy)?;
    tracing::info!(address = %me, replayed = recovery.replayed, "store opened");

    let transport_config = TransportConfig { listen: config.listen, ..TransportConfig::default() };
    let (transport, mut inbound) =
        Transport::bind(key.clone(), transport_config).await.map_err(|e| NodeError::Transport(e.to_string()))?;
    for peer in &config.peers {
        transport.add_peer(peer.address, peer.at);
    }
    tracing::info!(p2p = %transport.local_addr(), "transport listening");

    let client = EthClient::connect(&config.chain_url, &key, ChainConfig::default()).await?;
    let confirmations = config.chain.confirmations_on(client.chain_id());
    let client = client.with_config(ChainConfig { confirmations, ..ChainConfig::default() });
    tracing::info!(chain_id = client.chain_id(), confirmations, "chain connected");
    let chain = EthChainService::new(client, config.adjudicator);
    let mut watcher = open_watcher(&chain, &engine, &config).await?;

    let (calls_tx, mut calls) = mpsc::channel::<ApiCall>(256);
    let api_config = ApiConfig { listen: config.api, token_file: config.token_file.clone(), max_body_bytes: 1 << 20 };
    let api_server = api::serve(api_config, calls_tx).await.map_err(|e| NodeError::Api(e.to_string()))?;
    tracing::info!(api = %api_server.local_addr(), "json-rpc api listening");

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
        me,
        nonce: 0,
        peers: config.peers.iter().map(|p| p.address).collect(),
        chain_time: None,
        wallet: None,
        resend: ResendTimer::new(tick_every, Instant::now()),
    };
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
    node.resend.resent(Instant::now());

    let mut tick = tokio::time::interval(tick_every);
    // A loaded node that missed ticks does not catch up with a burst of them.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watcher_saved = None;
    tokio::pin!(shutdown);
    let result = loop {
        tokio::select! {
            _ = &mut shutdown => break Ok(()),
            Some(Inbound::Message { from, body, .. }) = inbound.recv() => {
                match serde_json::from_value::<Payload>(body) {
                    Ok(payload) => {
                        if let Err(e) = node.step(Input::Message { from, payload }) {
                            if node.fatal(&e) { break Err(e.into()); }
                        }
                    }
                    Err(e) => tracing::warn!(%from, error = %e, "undecodable message dropped"),
                }
            }
            Some(call) = calls.recv() => {
                if let Err(e) = node.api(call) {
                    break Err(e.into());
                }
            }
            Some(event) = tx_events.recv() => {
                if let Err(e) = node.settled(event) {
                    break Err(e.into());
                }
            }
            _ = tick.tick() => {
                if let Ok(time) = chain.chain_time().await {
                    node.chain_time = Some(time);
                }
                if let Ok(balance) = chain.client().balance(me).await {
                    node.wallet = Some(balance);
                }
                if node.resend.due(Instant::now()) {
                    if let Err(e) = node.step(node.tick_input()) {
                        if node.fatal(&e) { break Err(e.into()); }
                    }
                    node.resend.resent(Instant::now());
                }
                node.cancel_unneeded()?;
                match watcher.poll().await {
                    Ok(events) => {
                        let mut failed = None;
                        for event in events {
                            if event.retracted_from().is_some() {
                                tracing::warn!(?event, "a reorg took back reported chain events; undoing them");
                            }
                            if let Err(e) = node.step(Input::Chain(event)) {
                                if node.fatal(&e) { failed = Some(e); break; }
                            }
                        }
                        if let Some(e) = failed { break Err(e.into()); }
                        // A durable write only when the watcher's state moved.
                        if watcher_saved.as_ref() != Some(watcher.state()) {
                            let state = serde_json::to_string(watcher.state()).map_err(EngineError::Encode)?;
                            node.engine.store().set_meta(WATCHER_STATE, &state)?;
                            watcher_saved = Some(watcher.state().clone());
                        }
                    }
                    Err(error) => tracing::debug!(%error, "chain poll failed; retrying"),
                }
                node.answer_waiters(true);
            }
        }
    };
    node.transactions.shutdown();
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

    fn send(&self, id: u64, to: Address, payload: &Payload) {
        match serde_json::to_value(payload) {
            Ok(body) => {
                if let Err(error) = self.transport.send(to, id, body) {
                    tracing::warn!(%to, %error, "message not queued; the resend timer will repeat it");
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
        let tick = matches!(input, Input::Tick { .. });
        match self.engine.step(input) {
            Ok(output) => {
                if !tick && !output.events.is_empty() {
                    self.resend.progressed(Instant::now());
                }
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

    /// Handles one API call. Returns an error only when the engine failed fatally.
    fn api(&mut self, call: ApiCall) -> Result<(), EngineError> {
        let request = match call.request() {
            Ok(r) => r,
            Err(e) => {
                call.respond::<Value>(Err(e));
                return Ok(());
            }
        };
        let me = self.me;
        let write = match request {
            ApiRequest::ObjectivesWait(w) => {
                let party = self.engine.party();
                if let Some(unknown) = w.objective_ids.iter().find(|id| party.objective(id).is_none()) {
                    call.respond::<Value>(Err(RpcError::refused(format!("unknown objective {unknown}"))));
                    return Ok(());
                }
                let deadline = Instant::now() + w.timeout;
                self.waiters.push(Waiter { ids: w.objective_ids, any: w.any, deadline, call });
                self.answer_waiters(false);
                return Ok(());
            }
            ApiRequest::LedgerGet { channel_id } => {
                let party = self.engine.party();
                let answer = party
                    .ledger(&channel_id)
                    .map(|l| summary(party, l))
                    .ok_or_else(|| RpcError::refused(format!("unknown ledger {channel_id}")));
                call.respond(answer);
                return Ok(());
            }
            ApiRequest::LedgerList => {
                let party = self.engine.party();
                call.respond(Ok(LedgerList { ledgers: party.ledgers().map(|l| summary(party, l)).collect() }));
                return Ok(());
            }
            ApiRequest::ObjectiveGet { objective_id } => {
                call.respond(self.status(&objective_id));
                return Ok(());
            }
            ApiRequest::ObjectiveList(filter) => {
                call.respond(Ok(self.list(&filter)));
                return Ok(());
            }
            ApiRequest::ObjectiveCancel { objective_id } => Request::Cancel { objective: objective_id },
            ApiRequest::ChannelForceClose { channel_id } => Request::ForceClose { channel_id },
            ApiRequest::LedgerOpen(o) => {
                if let Err(why) = self.check_ledger_open(&o) {
                    call.respond::<Value>(Err(RpcError::refused(why)));
                    return Ok(());
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
                    return Ok(());
                }
                if v.intermediaries.contains(&v.counterparty) {
                    call.respond::<Value>(Err(RpcError::refused(format!(
                        "{} is an intermediary, not a payee",
                        v.counterparty
                    ))));
                    return Ok(());
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
        let pay = match &write {
            Request::Pay { channel_id, .. } => Some(*channel_id),
            _ => None,
        };
        match self.step(Input::Request(write)) {
            Ok(output) => match (output.started, pay) {
                (Some(objective_id), _) => {
                    call.respond(Ok(ObjectiveStarted { objective_id, channel_id: objective_id.channel_id() }))
                }
                (None, Some(channel_id)) => {
                    call.respond(Ok(PaymentSent { channel_id, paid: self.engine.party().paid(&channel_id) }))
                }
                (None, None) => call.respond(Ok(json!({}))),
            },
            Err(EngineError::Party(e)) => call.respond::<Value>(Err(RpcError::refused(e))),
            Err(EngineError::Declined { error, .. }) => call.respond::<Value>(Err(RpcError::refused(error))),
            Err(e) => {
                call.respond::<Value>(Err(RpcError::internal(&e)));
                return Err(e);
            }
        }
        Ok(())
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
        let objectives = party
            .objectives()
            .filter(|(id, _)| filter.channel_id.is_none_or(|c| c == id.channel_id()))
            .filter(|(id, _)| filter.kind.as_deref().is_none_or(|k| id.to_string().starts_with(&format!("{k}-"))))
            .filter_map(|(id, _)| self.status(&id).ok())
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
        let waiting = party.waiting_for(id).ok_or_else(|| RpcError::refused(format!("unknown objective {id}")))?;
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
                    _ => result.pending.push(*id),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_wait_for_quiet_then_back_off_and_never_starve() {
        let base = Duration::from_millis(100);
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut timer = ResendTimer::new(base, t0);
        assert!(!timer.due(at(50)));
        assert!(timer.due(at(100)), "quiet for one base interval");
        timer.resent(at(100));
        // Nothing progresses: 200, 400, 800 … up to 16 × base between resends.
        assert!(!timer.due(at(299)) && timer.due(at(300)));
        timer.resent(at(300));
        assert!(!timer.due(at(699)) && timer.due(at(700)));
        let mut now = 700;
        for _ in 0..10 {
            timer.resent(at(now));
            now += 1600;
        }
        assert_eq!(timer.interval, base * ResendTimer::BACKOFF);
        assert!(!timer.due(at(now - 1)) && timer.due(at(now)));

        // Progress resets the back-off, and postpones the next resend until things are quiet.
        timer.resent(at(now));
        timer.progressed(at(now + 50));
        assert!(!timer.due(at(now + 149)), "not while progress is recent");
        assert!(timer.due(at(now + 150)));

        // Continuous progress (another objective) still lets a resend through every cap.
        timer.resent(at(now + 150));
        let start = now + 150;
        let mut first_resend = None;
        for ms in (start..start + 2000).step_by(10) {
            timer.progressed(at(ms));
            if first_resend.is_none() && timer.due(at(ms)) {
                first_resend = Some(ms - start);
            }
        }
        assert_eq!(first_resend, Some(1600));
    }
}
