//! The node's chain wiring: the chain reader (its own task: the event watcher at the
//! confirmation depth, resuming from its stored state, the chain's clock, the wallet, the
//! head), and the transaction manager's requests and outcomes.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use nitro_chain::{
    ChainError, ChainService, EthChainService, EventWatcher, TxEvent, TxOutcome, WatcherConfig, WatcherState,
};
use nitro_core::{chain::ChainEvent, party::TransactionRequest};
use tokio::{sync::mpsc, task::JoinHandle};

use super::{Node, NodeError};
use crate::{
    config::NodeConfig,
    engine::{Engine, EngineError, Input},
};

/// The store's meta key of the watcher's state (cursor and reorg records).
pub(super) const WATCHER_STATE: &str = "chain_watcher";

/// The watcher's stored state and legacy cursor, read before any await (the store is not
/// shared across threads).
pub(super) fn stored_watcher(engine: &Engine) -> Result<(Option<String>, Option<String>), NodeError> {
    Ok((engine.store().meta(WATCHER_STATE)?, engine.store().meta("chain_cursor")?))
}

/// The event watcher, resuming from its stored state (or the cursor older versions stored),
/// at the configured depth.
pub(super) async fn open_watcher(
    chain: &EthChainService,
    (stored, cursor): (Option<String>, Option<String>),
    config: &NodeConfig,
) -> Result<EventWatcher, NodeError> {
    let state = match stored {
        Some(json) => serde_json::from_str::<WatcherState>(&json)
            .map_err(|e| NodeError::Config(format!("stored chain watcher state: {e}")))?,
        None => {
            let cursor = match cursor {
                Some(c) => c.parse().unwrap_or(0),
                None => chain.client().block_number().await?,
            };
            WatcherState { cursor, ..WatcherState::default() }
        }
    };
    let watcher_config = WatcherConfig {
        confirmations: chain.client().config().confirmations,
        reorg_window: config.chain.reorg_window,
        ..WatcherConfig::default()
    };
    Ok(chain.watcher(state.cursor).with_config(watcher_config).with_state(state))
}

/// What the chain reader read in one round; the main loop applies it.
pub(super) struct ChainRound {
    /// The latest block's timestamp (or why it could not be read).
    time: Result<u64, ChainError>,
    /// The wallet's balance, if it could be read.
    wallet: Option<U256>,
    /// The wallet's balance of each accepted token that could be read (with the head).
    tokens: Vec<(Address, U256)>,
    /// The chain head, read once per [`HEAD_EVERY`] at most.
    head: Option<u64>,
    /// Adjudicator events final at the depth, and retractions, in order.
    events: Vec<ChainEvent>,
    /// The watcher's state after those events: stored once they are stepped.
    state: WatcherState,
}

/// How often the reader reads the head (for the watcher-lag gauge and the health report).
const HEAD_EVERY: Duration = Duration::from_secs(1);

/// Reads the chain on a task of its own, one round every `every`: a slow or dead endpoint
/// delays only this task, never the API, the peers or the party's timer. The channel holds one
/// round: the watcher is never more than a round ahead of what the main loop has stepped (and
/// stored), and a busy main loop slows the reader down rather than queueing rounds.
pub(super) fn spawn_reader(
    chain: EthChainService,
    mut watcher: EventWatcher,
    me: Address,
    every: Duration,
    tokens: Vec<Address>,
) -> (JoinHandle<()>, mpsc::Receiver<ChainRound>) {
    let (rounds, received) = mpsc::channel(1);
    let task = tokio::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut head_at: Option<Instant> = None;
        loop {
            interval.tick().await;
            let time = chain.chain_time().await;
            let wallet = chain.client().balance(me).await.ok();
            let events = match watcher.poll().await {
                Ok(events) => events,
                Err(error) => {
                    tracing::debug!(%error, "chain poll failed; retrying");
                    Vec::new()
                }
            };
            let mut head = None;
            let mut balances = Vec::new();
            if head_at.is_none_or(|at| at.elapsed() >= HEAD_EVERY) {
                head_at = Some(Instant::now());
                head = chain.client().block_number().await.ok();
                balances = token_balances(&chain, &tokens, me).await;
            }
            let round = ChainRound { time, wallet, tokens: balances, head, events, state: watcher.state().clone() };
            if rounds.send(round).await.is_err() {
                return; // the node stopped
            }
        }
    });
    (task, received)
}

/// The wallet's balance of each token that answers (one that does not is left out: requests
/// in it are then not checked against the wallet, and its deposit fails with the reason).
pub(super) async fn token_balances(chain: &EthChainService, tokens: &[Address], me: Address) -> Vec<(Address, U256)> {
    let mut out = Vec::with_capacity(tokens.len());
    for token in tokens {
        if let Ok(balance) = chain.token_balance(*token, me).await {
            out.push((*token, balance));
        }
    }
    out
}

impl Node {
    /// Applies a round of the chain reader: the clock, the wallet and the head for requests,
    /// health and metrics; each event stepped in order; then the watcher's state stored (only
    /// when it moved), so that a restart reads again what was not stepped.
    pub(super) fn chain_round(&mut self, round: ChainRound) -> Result<(), EngineError> {
        match round.time {
            Ok(time) => {
                self.chain_time = Some(time);
                self.health.chain_reachable(None);
            }
            Err(error) => self.health.chain_unreachable(error),
        }
        if let Some(balance) = round.wallet {
            self.wallet = Some(balance);
        }
        self.token_wallet.extend(round.tokens);
        if let Some(head) = round.head {
            // The cursor is the next block to scan.
            let lag = (head + 1).saturating_sub(round.state.cursor);
            self.metrics.chain(head, lag);
            self.health.chain_reachable(Some(head));
            self.health.watcher_lag(lag);
        }
        for event in round.events {
            if event.retracted_from().is_some() {
                tracing::warn!(?event, "a reorg took back reported chain events; undoing them");
            }
            if let Err(e) = self.step(Input::Chain(event)) {
                if self.fatal(&e) {
                    return Err(e);
                }
            }
        }
        if self.watcher_saved.as_ref() != Some(&round.state) {
            let state = serde_json::to_string(&round.state).map_err(EngineError::Encode)?;
            self.engine.store().set_meta(WATCHER_STATE, &state)?;
            self.watcher_saved = Some(round.state);
        }
        Ok(())
    }

    /// Hands a transaction to the manager and remembers it until it is settled.
    pub(super) fn submit(&mut self, id: u64, request: TransactionRequest) {
        if let Err(error) = self.transactions.submit(id, request.transaction.clone(), request.deadline) {
            tracing::error!(id, %error, "transaction not handed to the manager");
            return;
        }
        self.outstanding.insert(id, request);
    }

    /// A transaction ended: settled in the store; a failure is told to its objective (which
    /// asks again on its timer if it still needs it).
    pub(super) fn settled(&mut self, event: TxEvent) -> Result<(), EngineError> {
        let failed = match &event.outcome {
            TxOutcome::Confirmed(receipt) => {
                tracing::info!(tx = %receipt.tx_hash, block = receipt.block_number, ids = ?event.ids, "transaction confirmed");
                false
            }
            TxOutcome::Cancelled(_) => false,
            TxOutcome::Reverted { receipt, reason } => {
                tracing::warn!(tx = %receipt.tx_hash, ?reason, ids = ?event.ids, "transaction reverted on chain");
                true
            }
            TxOutcome::Failed(error) => {
                tracing::warn!(%error, ids = ?event.ids, "transaction failed");
                true
            }
        };
        let gas = match &event.outcome {
            TxOutcome::Confirmed(receipt) => Some(receipt.gas_used),
            _ => None,
        };
        // Counted once per transaction, also when its requests were settled earlier (the
        // party saw its effect on chain before the manager saw it at depth).
        if let (Some(transaction), false) = (&event.transaction, matches!(event.outcome, TxOutcome::Cancelled(_))) {
            self.metrics.transaction(transaction.function_name(), gas);
        }
        let refused = event.outcome.refusal();
        for id in event.ids {
            self.engine.store().transaction_done(id)?;
            let Some(request) = self.outstanding.remove(&id) else { continue };
            if let (true, Some(objective)) = (failed, request.objective) {
                if let Err(e) = self.step(Input::TransactionFailed { objective, refused: refused.clone() }) {
                    if self.fatal(&e) {
                        return Err(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Cancels what the party no longer needs (its objective ended, its challenge was answered
    /// or expired): not sent, or replaced by a no-op at its nonce.
    pub(super) fn cancel_unneeded(&mut self) -> Result<(), EngineError> {
        let party = self.engine.party();
        let unneeded: Vec<u64> =
            self.outstanding.iter().filter(|(_, request)| !party.needs(request)).map(|(id, _)| *id).collect();
        for id in unneeded {
            let _ = self.transactions.cancel(id);
            self.outstanding.remove(&id);
            self.engine.store().transaction_done(id)?;
        }
        Ok(())
    }
}
