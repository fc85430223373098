//! The manager's task: one poll at a time over the transactions it owns, each moved on by
//! what the chain shows (see the ule above for the rules).

use std::{collections::HashSet, sync::Arc, time::Duration};

use alloy::{
    eips::BlockNumberOrTag,
    network::TransactionBuilder,
    providers::{utils::eip1559_default_estimator, Provider},
    rpc::types::TransactionRequest,
};
use alloy_primitives::{Address, Bytes, U256};
use nitro_core::chain::ChainTransaction;
use tokio::{
    sync::mpsc,
    time::{timeout, Instant},
};

use super::{
    fees::{self, Fees, Market, Urgency},
    Attempt, Command, Counters, Tracked, TxEvent, TxManagerConfig, TxOutcome,
};
use crate::{bindings, client::with_retries, ChainConfig, ChainError, EthChainService, EthClient};

/// The chain's head as one poll sees it.
pub(super) struct Head {
    pub(super) number: u64,
    pub(super) timestamp: u64,
}

/// Most attempts signed at one nonce (re-pricing stops there; the newest is sent again).
pub(super) const MAX_ATTEMPTS: usize = 32;
/// Receipts looked up per poll and transaction (the newest attempts), except while the
/// nonce has moved past it (then all).
pub(super) const RECEIPTS_PER_POLL: usize = 4;
/// Most no-ops added at once to fill a nonce gap.
pub(super) const MAX_GAP: u64 = 16;
/// How often the search for what took a transaction's nonce runs.
pub(super) const SEARCH_EVERY: Duration = Duration::from_secs(1);
/// Gas of a no-op (a plain transfer).
const NOOP_GAS: u64 = 21_000;
/// Approvals asked for one token deposit before it fails (each one landed or failed: the
/// allowance still short after that many is not going to change).
const MAX_APPROVALS: u32 = 3;
/// Fee history depth and percentile of the tip estimate (alloy's defaults).
const FEE_HISTORY_BLOCKS: u64 = 10;
const TIP_PERCENTILE: f64 = 20.0;

pub(super) struct Worker {
    pub(super) service: EthChainService,
    pub(super) client: EthClient,
    pub(super) config: TxManagerConfig,
    pub(super) txs: Vec<Tracked>,
    /// The next nonce this manager hands out (re-read from the node when nothing is tracked).
    pub(super) next_nonce: Option<u64>,
    pub(super) events: mpsc::UnboundedSender<TxEvent>,
    pub(super) counters: Arc<Counters>,
    /// Tokens with a deposit signed or an approval in flight (recomputed every poll): another
    /// deposit of the token waits, so that it cannot spend an allowance meant for that one.
    pub(super) busy_tokens: HashSet<Address>,
}

impl Worker {
    pub(super) fn new(
        service: EthChainService,
        config: TxManagerConfig,
        events: mpsc::UnboundedSender<TxEvent>,
        counters: Arc<Counters>,
    ) -> Self {
        let client_config = ChainConfig { retries: config.rpc_retries, ..service.client().config().clone() };
        let client = service.client().clone().with_config(client_config);
        let service = EthChainService::new(client.clone(), service.adjudicator());
        Self {
            service,
            client,
            config,
            txs: Vec::new(),
            next_nonce: None,
            events,
            counters,
            busy_tokens: HashSet::new(),
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        let mut interval = tokio::time::interval(self.config.poll_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => {
                        self.command(command);
                        while let Ok(more) = commands.try_recv() {
                            self.command(more);
                        }
                        self.poll().await;
                    }
                    None => break,
                },
                _ = interval.tick() => {
                    if !self.txs.is_empty() {
                        self.poll().await;
                    }
                }
            }
        }
    }

    pub(super) fn command(&mut self, command: Command) {
        match command {
            Command::Submit { id, transaction, deadline } => {
                let transaction = *transaction;
                if let Err(e) = transaction.validate() {
                    self.report(vec![id], Some(transaction), TxOutcome::Failed(e.into()));
                    return;
                }
                let same = |t: &&mut Tracked| {
                    !t.cancelled && t.outcome.is_none() && t.transaction.as_ref() == Some(&transaction)
                };
                if let Some(t) = self.txs.iter_mut().find(same) {
                    // The core asked again (its own retry) while this one is in flight.
                    t.ids.push(id);
                    t.deadline = match (t.deadline, deadline) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    Counters::add(&self.counters.joined);
                    return;
                }
                if self.txs.len() >= self.config.max_tracked {
                    let error = ChainError::Rpc {
                        operation: "transaction manager",
                        message: format!("{} transactions in flight already", self.txs.len()),
                    };
                    self.report(vec![id], Some(transaction), TxOutcome::Failed(error));
                    return;
                }
                self.txs.push(Tracked::new(Some(id), Some(transaction), deadline, self.config.initial_backoff));
            }
            Command::Cancel { id } => {
                for t in &mut self.txs {
                    if let Some(k) = t.ids.iter().position(|x| *x == id) {
                        t.ids.remove(k);
                        if t.ids.is_empty() {
                            t.cancelled = true;
                        }
                    }
                }
            }
        }
        self.counters.tracked.store(self.txs.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) async fn poll(&mut self) {
        let head = match self.head().await {
            Ok(head) => head,
            Err(error) => {
                tracing::debug!(%error, "transaction manager: the node is not answering; trying again");
                return;
            }
        };
        let mut market = None;
        let mut txs = std::mem::take(&mut self.txs);
        self.busy_tokens = txs.iter().filter_map(busy_token).collect();
        for tx in &mut txs {
            self.step(tx, &head, &mut market).await;
        }
        self.txs.append(&mut txs);
        self.fill_gaps(&head).await;
        self.finish();
    }

    pub(super) async fn step(&mut self, tx: &mut Tracked, head: &Head, market: &mut Option<Market>) {
        if tx.outcome.is_some() {
            return;
        }
        let urgency = self.urgency(tx, head);
        if tx.mined.is_some() {
            self.check_mined(tx, head).await;
        } else if tx.nonce.is_none() {
            self.prepare(tx, head, market, urgency).await;
        } else if tx.attempts.is_empty() {
            self.first_attempt(tx, head, market, urgency).await;
        } else {
            self.check_pending(tx, head, market, urgency).await;
        }
    }

    pub(super) fn urgency(&self, tx: &mut Tracked, head: &Head) -> Urgency {
        let Some(deadline) = tx.deadline else { return Urgency::Normal };
        let margin = deadline.saturating_sub(head.timestamp);
        let initial = *tx.initial_margin.get_or_insert(margin);
        Urgency::of(margin, initial, self.config.alarm_margin_secs)
    }

    pub(super) fn cap(&self, tx: &Tracked) -> u128 {
        match tx.deadline {
            Some(_) => self.config.deadline_max_fee_per_gas,
            None => self.config.max_fee_per_gas,
        }
    }

    /// Everything before the first signature: still wanted, the deposit's holdings final at
    /// depth, the gas (estimation executes the call: a revert ends it here), a nonce.
    pub(super) async fn prepare(
        &mut self,
        tx: &mut Tracked,
        head: &Head,
        market: &mut Option<Market>,
        urgency: Urgency,
    ) {
        if tx.cancelled {
            tx.outcome = Some(TxOutcome::Cancelled(None));
            return;
        }
        if Instant::now() < tx.retry_at {
            return;
        }
        if let Some(deadline) = tx.deadline.filter(|d| head.timestamp >= *d) {
            tx.outcome = Some(TxOutcome::Failed(deadline_passed(deadline)));
            return;
        }
        let Some(transaction) = tx.transaction.clone() else {
            tx.outcome = Some(TxOutcome::Cancelled(None));
            return;
        };
        self.alarm(tx, head, urgency);
        match self.service.deposit_ready(&transaction, head.number).await {
            Ok(true) => {}
            Ok(false) => {
                let waited = tx.created.elapsed();
                let limit = self.client.config().deposit_timeout;
                if waited >= limit {
                    let what = format!(
                        "the holdings of {} to reach the deposit's expectedHeld at depth",
                        transaction.channel_id()
                    );
                    tx.outcome = Some(TxOutcome::Failed(ChainError::Timeout { what, after: limit }));
                } else {
                    self.back_off(tx);
                }
                return;
            }
            Err(e) if e.is_transient() => return self.back_off(tx),
            Err(e) => {
                tx.outcome = Some(TxOutcome::Failed(e));
                return;
            }
        }
        if let Some((token, _)) = transaction.token_deposit() {
            if !self.token_ready(tx, &transaction, token).await {
                return;
            }
        }
        if tx.gas.is_none() {
            match self.client.estimate_gas(transaction.function_name(), &self.request_of(&transaction)).await {
                Ok(gas) => tx.gas = Some(gas),
                Err(e) if e.is_transient() => return self.back_off(tx),
                Err(e) => {
                    tx.outcome = Some(TxOutcome::Failed(e));
                    return;
                }
            }
        }
        match self.take_nonce().await {
            Ok(nonce) => {
                tx.nonce = Some(nonce);
                tx.sent_above = head.number;
            }
            Err(_) => return self.back_off(tx),
        }
        self.first_attempt(tx, head, market, urgency).await;
    }

    /// Whether the token deposit `tx` may be signed now: no other deposit of the token in
    /// flight, the token checked ([`EthChainService::check_token`]), and the allowance enough
    /// (else an approval is added, and the deposit waits for it).
    async fn token_ready(&mut self, tx: &mut Tracked, transaction: &ChainTransaction, token: Address) -> bool {
        if self.busy_tokens.contains(&token) {
            return false;
        }
        let checked = match self.service.check_token(transaction).await {
            Ok(()) => self.service.approval_needed(transaction).await,
            Err(e) => Err(e),
        };
        match checked {
            Ok(None) => {
                self.busy_tokens.insert(token);
                true
            }
            Ok(Some(approve)) => {
                self.busy_tokens.insert(token);
                if tx.approvals >= MAX_APPROVALS {
                    let reason = format!("the allowance is still short after {MAX_APPROVALS} approvals");
                    tx.outcome = Some(TxOutcome::Failed(ChainError::UnsafeToken { token, reason }));
                    return false;
                }
                tx.approvals += 1;
                self.txs.push(Tracked::new(None, Some(approve), None, self.config.initial_backoff));
                false
            }
            Err(e) if e.is_transient() => {
                self.back_off(tx);
                false
            }
            Err(e) => {
                tx.outcome = Some(TxOutcome::Failed(e));
                false
            }
        }
    }

    pub(super) async fn first_attempt(
        &mut self,
        tx: &mut Tracked,
        head: &Head,
        market: &mut Option<Market>,
        urgency: Urgency,
    ) {
        let market = match self.market(market).await {
            Ok(market) => market,
            Err(_) => return self.back_off(tx),
        };
        let noop = tx.transaction.is_none();
        let cap = if noop { self.config.max_fee_per_gas } else { self.cap(tx) };
        self.sign_and_send(tx, fees::first_price(market, urgency, cap), noop, head).await;
    }

    pub(super) async fn sign_and_send(&mut self, tx: &mut Tracked, fees: Fees, noop: bool, head: &Head) {
        let Some(nonce) = tx.nonce else { return };
        let (request, gas) = match (&tx.transaction, tx.gas) {
            (Some(transaction), Some(gas)) if !noop => (self.request_of(transaction), gas),
            _ => (self.noop_request(), NOOP_GAS),
        };
        match self.client.sign(&request, nonce, gas, (fees.max_fee_per_gas, fees.max_priority_fee_per_gas)).await {
            Ok((hash, raw)) => {
                if !tx.attempts.is_empty() {
                    Counters::add(&self.counters.replaced);
                }
                tx.attempts.push(Attempt { hash, raw, fees, noop: noop || tx.transaction.is_none() });
                tx.reprice = false;
                Counters::add(&self.counters.sent);
                self.send_newest(tx, head).await;
            }
            Err(e) => {
                tx.outcome = Some(TxOutcome::Failed(e));
                self.release(tx);
            }
        }
    }

    /// `eth_sendRawTransaction` of the newest attempt, once; what the node answers decides.
    pub(super) async fn send_newest(&mut self, tx: &mut Tracked, head: &Head) {
        let Some(raw) = tx.attempts.last().map(|a| a.raw.clone()) else { return };
        let operation = "eth_sendRawTransaction";
        let function = tx.transaction.as_ref().map_or("no-op", ChainTransaction::function_name);
        let rpc_timeout = self.client.config().rpc_timeout;
        let error = match timeout(rpc_timeout, self.client.provider().send_raw_transaction(&raw)).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(ChainError::from_rpc(operation, function, e)),
            Err(_) => Some(ChainError::Timeout { what: format!("the node to answer {operation}"), after: rpc_timeout }),
        };
        match error {
            None => self.sent(tx, head),
            Some(e) if e.is_already_known() => self.sent(tx, head),
            Some(e) if e.is_nonce_too_low() => {
                if tx.may_have_arrived || tx.last_sent.is_some() || tx.attempts.len() > 1 {
                    // One of ours may be what took it: receipts and the nonce search tell.
                    self.sent(tx, head);
                } else {
                    // Nothing of ours reached the node: another sender of this key used it.
                    tracing::warn!(nonce = ?tx.nonce, "a nonce was used by another sender of this key; taking a fresh one");
                    tx.nonce = None;
                    tx.attempts.clear();
                    tx.retry_at = Instant::now();
                }
            }
            Some(e) if e.is_underpriced() => {
                tracing::debug!(error = %e, "the node wants a higher price; re-pricing");
                // These bytes will not do: a new price, not the same bytes again.
                tx.reprice = true;
                tx.resend = false;
                if tx.last_sent.is_none() {
                    // Nothing of this nonce is in the pool: price it again from scratch.
                    tx.last_sent = Some((Instant::now(), head.number));
                }
            }
            Some(e) if e.is_transient() => {
                tx.resend = true;
                tx.may_have_arrived = true;
                self.back_off(tx);
            }
            Some(e) => {
                tx.refusals += 1;
                tracing::warn!(error = %e, refusals = tx.refusals, "the node refused a transaction; trying again later");
                if tx.refusals > self.config.max_refusals && !tx.may_have_arrived {
                    tx.outcome = Some(TxOutcome::Failed(e));
                    self.release(tx);
                } else {
                    tx.resend = true;
                    self.back_off(tx);
                }
            }
        }
    }

    pub(super) fn sent(&self, tx: &mut Tracked, head: &Head) {
        tx.last_sent = Some((Instant::now(), head.number));
        tx.resend = false;
        tx.may_have_arrived = true;
        tx.backoff = self.config.initial_backoff;
    }

    pub(super) fn back_off(&self, tx: &mut Tracked) {
        tx.retry_at = Instant::now() + tx.backoff;
        tx.backoff = (tx.backoff * 2).min(self.config.max_backoff);
    }

    /// A transaction that never reached the node gives its nonce back (if it is the last one
    /// handed out; a gap below later ones is filled with a no-op).
    pub(super) fn release(&mut self, tx: &mut Tracked) {
        if let Some(nonce) = tx.nonce.filter(|_| !tx.may_have_arrived) {
            if self.next_nonce == Some(nonce + 1) {
                self.next_nonce = Some(nonce);
            }
            tx.nonce = None;
        }
    }

    pub(super) async fn take_nonce(&mut self) -> Result<u64, ChainError> {
        let pending = self.client.nonce(true).await?;
        let nonce = pending.max(self.next_nonce.unwrap_or(0));
        self.next_nonce = Some(nonce + 1);
        Ok(nonce)
    }

    /// Reports what ended, and forgets it.
    pub(super) fn finish(&mut self) {
        let mut keep = Vec::with_capacity(self.txs.len());
        for mut tx in std::mem::take(&mut self.txs) {
            match tx.outcome.take() {
                Some(outcome) => self.report(std::mem::take(&mut tx.ids), tx.transaction.take(), outcome),
                None => keep.push(tx),
            }
        }
        self.txs = keep;
        if self.txs.iter().all(|t| t.nonce.is_none()) {
            self.next_nonce = None; // read from the node again next time
        }
        self.counters.tracked.store(self.txs.len() as u64, std::sync::atomic::Ordering::Relaxed);
    }

    pub(super) fn report(&self, ids: Vec<u64>, transaction: Option<ChainTransaction>, outcome: TxOutcome) {
        match &outcome {
            TxOutcome::Confirmed(_) | TxOutcome::Reverted { .. } => Counters::add(&self.counters.confirmed),
            TxOutcome::Cancelled(_) => Counters::add(&self.counters.cancelled),
            TxOutcome::Failed(error) => {
                Counters::add(&self.counters.failed);
                tracing::warn!(%error, ?ids, "transaction failed");
            }
        }
        let _ = self.events.send(TxEvent { ids, transaction, outcome });
    }

    pub(super) fn alarm(&self, tx: &mut Tracked, head: &Head, urgency: Urgency) {
        let Some(deadline) = tx.deadline else { return };
        if tx.mined.is_some() || tx.cancelled {
            return;
        }
        let margin = deadline.saturating_sub(head.timestamp);
        self.counters.lowest_margin.fetch_min(margin, std::sync::atomic::Ordering::Relaxed);
        if urgency == Urgency::Normal || tx.last_alarm.is_some_and(|at| at.elapsed() < self.config.alarm_every) {
            return;
        }
        tx.last_alarm = Some(Instant::now());
        Counters::add(&self.counters.deadline_alarms);
        let function = tx.transaction.as_ref().map_or("no-op", ChainTransaction::function_name);
        let attempts = tx.attempts.len();
        if urgency == Urgency::Critical {
            tracing::error!(
                margin_secs = margin,
                deadline,
                function,
                attempts,
                "ALARM: a deadline is close and its transaction is not mined"
            );
        } else {
            tracing::warn!(
                margin_secs = margin,
                deadline,
                function,
                attempts,
                "a deadline nears and its transaction is not mined"
            );
        }
    }

    pub(super) async fn head(&self) -> Result<Head, ChainError> {
        let provider = self.client.provider();
        let block = with_retries(self.client.config(), "eth_getBlockByNumber", "", || {
            provider.get_block_by_number(BlockNumberOrTag::Latest)
        })
        .await?
        .ok_or(ChainError::Rpc { operation: "eth_getBlockByNumber", message: "no latest block".into() })?;
        Ok(Head { number: block.header.number, timestamp: block.header.timestamp })
    }

    /// What the market asks now (once per poll): the next block's base fee from
    /// `eth_feeHistory`, and alloy's tip estimate from the same history.
    pub(super) async fn market(&self, cached: &mut Option<Market>) -> Result<Market, ChainError> {
        if let Some(market) = cached {
            return Ok(*market);
        }
        let provider = self.client.provider();
        let history = with_retries(self.client.config(), "eth_feeHistory", "", || {
            provider.get_fee_history(FEE_HISTORY_BLOCKS, BlockNumberOrTag::Latest, &[TIP_PERCENTILE])
        })
        .await?;
        let base_fee = history.next_block_base_fee().or(history.latest_block_base_fee()).unwrap_or_default();
        let rewards = history.reward.clone().unwrap_or_default();
        let tip = eip1559_default_estimator(base_fee, &rewards).max_priority_fee_per_gas;
        let market = Market { base_fee, tip };
        *cached = Some(market);
        Ok(market)
    }

    pub(super) fn request_of(&self, transaction: &ChainTransaction) -> TransactionRequest {
        TransactionRequest::default()
            .with_to(bindings::target(transaction, self.service.adjudicator()))
            .with_input(Bytes::from(bindings::calldata(transaction)))
            .with_value(transaction.value())
    }

    pub(super) fn noop_request(&self) -> TransactionRequest {
        TransactionRequest::default().with_to(self.client.address()).with_value(U256::ZERO)
    }
}

/// The token a tracked transaction holds busy: an approval not yet ended, or a token deposit
/// with a nonce (signed, or about to be).
fn busy_token(tx: &Tracked) -> Option<Address> {
    if tx.outcome.is_some() {
        return None;
    }
    match tx.transaction.as_ref()? {
        ChainTransaction::Approve { token, .. } => Some(*token),
        deposit => deposit.token_deposit().filter(|_| tx.nonce.is_some()).map(|(token, _)| token),
    }
}

pub(super) fn deadline_passed(deadline: u64) -> ChainError {
    ChainError::Timeout {
        what: format!("the transaction to be mined before its deadline (chain time {deadline})"),
        after: Duration::ZERO,
    }
}
