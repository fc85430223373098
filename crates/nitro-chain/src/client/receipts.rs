//! Waiting for a sent transaction: its receipt (never calling a mined transaction dropped),
//! and its confirmation at depth (only while it is still in the canonical chain).

use std::time::Duration;

use alloy::{
    eips::{BlockId, BlockNumberOrTag},
    providers::Provider,
};
use alloy_primitives::B256;
use tokio::time::{sleep, Instant};

use super::{with_retries, EthClient};
use crate::ChainError;

/// How often [`EthClient::wait_for_receipt`] looks for what was mined at a nonce that moved on.
const SEARCH_EVERY: Duration = Duration::from_secs(1);

impl EthClient {
    /// Polls for the receipt of `tx_hash` (sent with `nonce` when the chain was at block
    /// `sent_above`).
    ///
    /// - Not mined within [`ChainConfig::receipt_timeout`]: [`ChainError::Timeout`].
    /// - The account's nonce moved past ours without a receipt: that alone proves nothing (the
    ///   node may store the receipt after the state, or another backend behind the same URL
    ///   answered). We look for the transaction mined at our nonce: if it is another one, ours
    ///   is [`ChainError::Dropped`] at once; otherwise we keep polling for our receipt, up to
    ///   [`ChainConfig::dropped_after`] after the nonce moved — then `Dropped` (or `Timeout`
    ///   when ours was seen mined but its receipt never became visible).
    pub(super) async fn wait_for_receipt(
        &self,
        tx_hash: B256,
        nonce: u64,
        sent_above: u64,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        let deadline = Instant::now() + self.config.receipt_timeout;
        // When the nonce was first seen past ours, and what mined at our nonce (once known).
        let mut nonce_moved_at: Option<Instant> = None;
        let mut mined_at_nonce: Option<B256> = None;
        let mut last_search: Option<Instant> = None;
        loop {
            match with_retries(&self.config, "eth_getTransactionReceipt", "", || {
                self.provider.get_transaction_receipt(tx_hash)
            })
            .await
            {
                Ok(Some(receipt)) => return Ok(receipt),
                Ok(None) if nonce_moved_at.is_none() => {
                    match with_retries(&self.config, "eth_getTransactionCount", "", || {
                        self.provider.get_transaction_count(self.address).latest()
                    })
                    .await
                    {
                        Ok(mined) if mined > nonce => nonce_moved_at = Some(Instant::now()),
                        Ok(_) => {}
                        Err(e) if e.is_transient() => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(None) => {}
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e),
            }
            if let Some(moved_at) = nonce_moved_at {
                // Best effort, at most once a second: a node without the history (or a lagging
                // backend) leaves the question open for a later try.
                if mined_at_nonce.is_none() && last_search.is_none_or(|at| at.elapsed() >= SEARCH_EVERY) {
                    last_search = Some(Instant::now());
                    mined_at_nonce = self.mined_at_nonce(nonce, sent_above).await.ok().flatten();
                }
                match mined_at_nonce {
                    Some(other) if other != tx_hash => {
                        return Err(ChainError::Dropped { tx_hash, replaced_by: Some(other) });
                    }
                    Some(_) if moved_at.elapsed() >= self.config.dropped_after => {
                        return Err(ChainError::Timeout {
                            what: format!("the receipt of transaction {tx_hash}, which is mined"),
                            after: self.config.dropped_after,
                        });
                    }
                    None if moved_at.elapsed() >= self.config.dropped_after => {
                        return Err(ChainError::Dropped { tx_hash, replaced_by: None });
                    }
                    _ => {}
                }
            } else if Instant::now() >= deadline {
                return Err(ChainError::Timeout {
                    what: format!("transaction {tx_hash} to be mined"),
                    after: self.config.receipt_timeout,
                });
            }
            sleep(self.config.poll_interval).await;
        }
    }

    /// The hash of the transaction of ours mined with `nonce`, searched above block
    /// `sent_above` (the account's nonce at each block, by bisection, then that one block);
    /// `None` when it cannot be found (yet).
    pub(crate) async fn mined_at_nonce(&self, nonce: u64, sent_above: u64) -> Result<Option<B256>, ChainError> {
        let nonce_at = |block: u64| {
            with_retries(&self.config, "eth_getTransactionCount", "", move || {
                self.provider.get_transaction_count(self.address).block_id(BlockId::number(block))
            })
        };
        let (mut low, mut high) = (sent_above, self.block_number().await?);
        if high <= low || nonce_at(high).await? <= nonce {
            return Ok(None);
        }
        if nonce_at(low).await? > nonce {
            return Ok(None); // mined before we sent: not ours to find here
        }
        // Invariant: the nonce at `low` is ours or less, at `high` past ours.
        while high - low > 1 {
            let middle = low + (high - low) / 2;
            if nonce_at(middle).await? > nonce {
                high = middle;
            } else {
                low = middle;
            }
        }
        let block = with_retries(&self.config, "eth_getBlockByNumber", "", || {
            self.provider.get_block_by_number(BlockNumberOrTag::Number(high)).full()
        })
        .await?;
        let Some(block) = block else { return Ok(None) };
        let found = block
            .transactions
            .txns()
            .find(|tx| tx.inner.signer() == self.address && alloy::consensus::Transaction::nonce(*tx) == nonce)
            .map(|tx| *tx.inner.tx_hash());
        Ok(found)
    }

    /// Waits until the block of `tx_hash` (`block_number`, `block_hash`) is
    /// [`ChainConfig::confirmations`](crate::ChainConfig::confirmations) deep, then checks that
    /// the transaction is still there: `true` when it is, `false` when a reorg took it out (its
    /// receipt is gone or names another block, or the block at its height is another one).
    pub(super) async fn wait_for_confirmations(
        &self,
        tx_hash: B256,
        block_number: u64,
        block_hash: B256,
    ) -> Result<bool, ChainError> {
        let deadline = Instant::now() + self.config.receipt_timeout;
        loop {
            let head = self.block_number().await?;
            match self.depth_of(tx_hash, block_number, block_hash, head).await? {
                Depth::Confirmed => return Ok(true),
                Depth::Reorged => return Ok(false),
                Depth::Shallow => {}
            }
            if Instant::now() >= deadline {
                return Err(ChainError::Timeout {
                    what: format!("{} confirmations of block {block_number}", self.config.confirmations),
                    after: self.config.receipt_timeout,
                });
            }
            sleep(self.config.poll_interval).await;
        }
    }

    /// Where a transaction mined in `block_number` (`block_hash`) stands when the chain's head
    /// is `head`: not deep enough yet, confirmed at
    /// [`ChainConfig::confirmations`](crate::ChainConfig::confirmations) (its receipt still
    /// names that block and the block is still canonical), or taken out by a reorg.
    pub(crate) async fn depth_of(
        &self,
        tx_hash: B256,
        block_number: u64,
        block_hash: B256,
        head: u64,
    ) -> Result<Depth, ChainError> {
        let wanted = block_number.saturating_add(self.config.confirmations.saturating_sub(1));
        // A head below the block itself may be a reorg to a shorter chain: the receipt tells.
        if head < wanted && head >= block_number {
            return Ok(Depth::Shallow);
        }
        let receipt = with_retries(&self.config, "eth_getTransactionReceipt", "", || {
            self.provider.get_transaction_receipt(tx_hash)
        })
        .await?;
        if receipt.as_ref().is_none_or(|r| r.block_hash != Some(block_hash)) {
            return Ok(Depth::Reorged);
        }
        if head < wanted {
            return Ok(Depth::Shallow);
        }
        match self.block_hash(block_number).await? {
            Some(canonical) if canonical == block_hash => Ok(Depth::Confirmed),
            _ => Ok(Depth::Reorged),
        }
    }

    /// The hash of the canonical block at `number`, if the node has one.
    pub async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError> {
        let block = with_retries(&self.config, "eth_getBlockByNumber", "", || {
            self.provider.get_block_by_number(BlockNumberOrTag::Number(number))
        })
        .await?;
        Ok(block.map(|b| b.header.hash))
    }
}

/// Where a mined transaction stands against the confirmation depth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Depth {
    /// Mined, not deep enough yet.
    Shallow,
    /// Deep enough and still in the canonical chain.
    Confirmed,
    /// Taken out of the chain by a reorg.
    Reorged,
}

/// The block a receipt names: its number and hash.
pub(crate) fn mined_in(receipt: &alloy::rpc::types::TransactionReceipt) -> Result<(u64, B256), ChainError> {
    match (receipt.block_number, receipt.block_hash) {
        (Some(number), Some(hash)) => Ok((number, hash)),
        _ => Err(ChainError::Rpc {
            operation: "eth_getTransactionReceipt",
            message: "receipt without a block number or hash".into(),
        }),
    }
}
