//! The node's chain wiring: the event watcher at the confirmation depth (resuming from its
//! stored state), and the transaction manager's requests and outcomes.

use nitro_chain::{EthChainService, EventWatcher, TxEvent, TxOutcome, WatcherConfig, WatcherState};
use nitro_core::party::TransactionRequest;

use super::{Node, NodeError};
use crate::{
    config::NodeConfig,
    engine::{Engine, EngineError, Input},
};

/// The store's meta key of the watcher's state (cursor and reorg records).
pub(super) const WATCHER_STATE: &str = "chain_watcher";

/// The event watcher, resuming from its stored state (or the cursor older versions stored),
/// at the configured depth.
/// The watcher's stored state and legacy cursor, read before any await (the store is not
/// shared across threads).
pub(super) fn stored_watcher(engine: &Engine) -> Result<(Option<String>, Option<String>), NodeError> {
    Ok((engine.store().meta(WATCHER_STATE)?, engine.store().meta("chain_cursor")?))
}

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

impl Node {
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
        for id in event.ids {
            self.engine.store().transaction_done(id)?;
            let Some(request) = self.outstanding.remove(&id) else { continue };
            if let (true, Some(objective)) = (failed, request.objective) {
                if let Err(e) = self.step(Input::TransactionFailed { objective }) {
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
