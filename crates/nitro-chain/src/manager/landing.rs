//! Landing a sent transaction: its receipt and depth, the nonce taken by another, its
//! deadline, a cancellation, a failed send to repeat, re-pricing, and nonce gaps.

use std::collections::HashSet;

use alloy::providers::Provider;
use tokio::time::Instant;

use super::{
    fees::{self, Market, Urgency},
    step::{deadline_passed, Head, Worker, MAX_ATTEMPTS, MAX_GAP, RECEIPTS_PER_POLL, SEARCH_EVERY},
    Counters, Mined, Tracked, TxOutcome,
};
use crate::{
    client::{mined_in, with_retries, Depth},
    ChainError, TxReceipt,
};

impl Worker {
    /// A transaction with a nonce and attempts, not known to be mined: its receipt, the nonce
    /// taken by another, its deadline, a cancellation, a failed send to repeat, re-pricing.
    pub(super) async fn check_pending(
        &mut self,
        tx: &mut Tracked,
        head: &Head,
        market: &mut Option<Market>,
        urgency: Urgency,
    ) {
        let Some(nonce) = tx.nonce else { return };
        let lookups = if tx.nonce_moved_at.is_some() { tx.attempts.len() } else { RECEIPTS_PER_POLL };
        let hashes: Vec<(alloy_primitives::B256, bool)> =
            tx.attempts.iter().rev().take(lookups).map(|a| (a.hash, a.noop)).collect();
        for (hash, noop) in hashes {
            let provider = self.client.provider();
            match with_retries(self.client.config(), "eth_getTransactionReceipt", "", || {
                provider.get_transaction_receipt(hash)
            })
            .await
            {
                Ok(Some(receipt)) => {
                    let Ok((block_number, block_hash)) = mined_in(&receipt) else { continue };
                    let summary = TxReceipt {
                        tx_hash: hash,
                        block_number,
                        gas_used: receipt.gas_used,
                        effective_gas_price: receipt.effective_gas_price,
                        contract_address: receipt.contract_address,
                    };
                    let success = receipt.status();
                    tx.mined = Some(Mined { hash, block_number, block_hash, receipt: summary, success, noop });
                    Counters::add(&self.counters.mined);
                    tx.nonce_moved_at = None;
                    return self.check_mined(tx, head).await;
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
        match self.client.nonce(false).await {
            Ok(latest) if latest > nonce => return self.nonce_taken(tx, nonce).await,
            Ok(_) => tx.nonce_moved_at = None,
            Err(_) => return,
        }
        self.alarm(tx, head, urgency);
        if let Some(deadline) = tx.deadline.filter(|d| head.timestamp >= *d && !tx.cancelled) {
            // Of no use any more: its requests are told now; a no-op takes the nonce back.
            let ids = std::mem::take(&mut tx.ids);
            self.report(ids, tx.transaction.clone(), TxOutcome::Failed(deadline_passed(deadline)));
            tx.cancelled = true;
        }
        let Some(newest) = tx.attempts.last().cloned() else { return };
        if tx.cancelled && !newest.noop {
            let Ok(market) = self.market(market).await else { return };
            let bump = self.config.bump_percent;
            if let Some(fees) =
                fees::replacement_price(newest.fees, market, Urgency::Normal, bump, self.config.max_fee_per_gas)
            {
                self.sign_and_send(tx, fees, true, head).await;
            }
            return; // else it cannot be outbid within the cap: whatever lands ends it
        }
        if tx.resend && !tx.reprice {
            if Instant::now() >= tx.retry_at {
                Counters::add(&self.counters.rebroadcast);
                self.send_newest(tx, head).await;
            }
            return;
        }
        let Some((sent_at, sent_block)) = tx.last_sent else { return };
        let (blocks, wait) = match urgency {
            Urgency::Normal => (self.config.bump_after_blocks, self.config.bump_after),
            _ => (1, self.config.bump_after / 4),
        };
        let stuck = tx.reprice || head.number >= sent_block.saturating_add(blocks.max(1)) || sent_at.elapsed() >= wait;
        if !stuck {
            return;
        }
        let Ok(market) = self.market(market).await else { return };
        let urgency = if tx.cancelled { Urgency::Normal } else { urgency };
        let cap = if newest.noop { self.config.max_fee_per_gas } else { self.cap(tx) };
        let price = fees::replacement_price(newest.fees, market, urgency, self.config.bump_percent, cap);
        match price.filter(|_| tx.attempts.len() < MAX_ATTEMPTS) {
            Some(fees) => {
                tracing::info!(
                    nonce,
                    old = newest.fees.max_fee_per_gas,
                    new = fees.max_fee_per_gas,
                    base_fee = market.base_fee,
                    ?urgency,
                    "re-pricing a transaction that is not mined"
                );
                self.sign_and_send(tx, fees, newest.noop, head).await;
            }
            None => {
                if tx.deadline.is_some() {
                    tracing::error!(nonce, cap, "an answer to a challenge is at its fee cap and not mined");
                }
                tx.reprice = false;
                Counters::add(&self.counters.rebroadcast);
                self.send_newest(tx, head).await;
            }
        }
    }

    /// The account's nonce moved past ours and no receipt of ours is visible: find what took
    /// it. Another transaction: ours never will be mined. Ours (a receipt that lags): wait for
    /// it, up to [`ChainConfig::dropped_after`].
    pub(super) async fn nonce_taken(&mut self, tx: &mut Tracked, nonce: u64) {
        let moved_at = *tx.nonce_moved_at.get_or_insert_with(Instant::now);
        let newest = tx.attempts.last().map(|a| a.hash).unwrap_or_default();
        if tx.last_search.is_none_or(|at| at.elapsed() >= SEARCH_EVERY) {
            tx.last_search = Some(Instant::now());
            if let Ok(Some(found)) = self.client.mined_at_nonce(nonce, tx.sent_above).await {
                if tx.attempts.iter().any(|a| a.hash == found) {
                    tx.last_search = Some(Instant::now() + self.client.config().dropped_after);
                } else {
                    tx.outcome = Some(if tx.cancelled {
                        TxOutcome::Cancelled(None)
                    } else {
                        TxOutcome::Failed(ChainError::Dropped { tx_hash: newest, replaced_by: Some(found) })
                    });
                    return;
                }
            }
        }
        let limit = self.client.config().dropped_after;
        if moved_at.elapsed() >= limit {
            tx.outcome = Some(if tx.cancelled {
                TxOutcome::Cancelled(None)
            } else {
                TxOutcome::Failed(ChainError::Dropped { tx_hash: newest, replaced_by: None })
            });
        }
    }

    pub(super) async fn check_mined(&mut self, tx: &mut Tracked, head: &Head) {
        let Some(m) = tx.mined.clone() else { return };
        match self.client.depth_of(m.hash, m.block_number, m.block_hash, head.number).await {
            Ok(Depth::Shallow) => {}
            Ok(Depth::Confirmed) => {
                tx.outcome = Some(if m.noop {
                    TxOutcome::Cancelled(Some(m.receipt))
                } else if m.success {
                    TxOutcome::Confirmed(m.receipt)
                } else {
                    let reason = match &tx.transaction {
                        Some(t) => {
                            self.client.revert_reason(t.function_name(), &self.request_of(t), m.block_number).await
                        }
                        None => None,
                    };
                    TxOutcome::Reverted { receipt: m.receipt, reason }
                });
            }
            Ok(Depth::Reorged) => {
                tracing::warn!(tx = %m.hash, block = m.block_number, "a reorg took a transaction out of the chain; sending it again");
                Counters::add(&self.counters.reorged);
                tx.mined = None;
                tx.resend = true;
                tx.retry_at = Instant::now();
            }
            Err(error) => tracing::debug!(%error, "transaction manager: depth check failed; trying again"),
        }
    }

    /// A nonce below our lowest waiting transaction that nothing of ours holds and the node has
    /// nothing at (a transaction given up, or taken out of the chain after it was reported
    /// confirmed) would hold everything above it forever: a no-op takes it.
    pub(super) async fn fill_gaps(&mut self, head: &Head) {
        let waiting = self
            .txs
            .iter()
            .filter(|t| t.mined.is_none() && t.outcome.is_none())
            .filter_map(|t| Some((t.nonce?, t.last_sent?)))
            .min_by_key(|(nonce, _)| *nonce);
        let Some((lowest, (sent_at, sent_block))) = waiting else { return };
        let patient = head.number < sent_block.saturating_add(self.config.bump_after_blocks)
            && sent_at.elapsed() < self.config.bump_after;
        if patient {
            return;
        }
        let Ok(pending) = self.client.nonce(true).await else { return };
        if pending >= lowest {
            return;
        }
        let used: HashSet<u64> = self.txs.iter().filter_map(|t| t.nonce).collect();
        for nonce in pending..lowest.min(pending.saturating_add(MAX_GAP)) {
            if !used.contains(&nonce) {
                tracing::warn!(nonce, "a nonce gap holds our transactions back: filling it with a no-op");
                let mut filler = Tracked::new(None, None, None, self.config.initial_backoff);
                filler.nonce = Some(nonce);
                filler.sent_above = head.number;
                self.txs.push(filler);
            }
        }
    }
}
