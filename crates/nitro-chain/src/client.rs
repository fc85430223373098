//! An account on a JSON-RPC node: reads with timeouts and retries, and transactions that are
//! signed locally, sent idempotently and awaited until confirmed.

use std::{future::IntoFuture, sync::Arc, time::Duration};

use alloy::{
    eips::{BlockId, BlockNumberOrTag, Encodable2718},
    network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder},
    providers::{Provider, RootProvider},
    rpc::types::TransactionRequest,
    signers::local::PrivateKeySigner,
    transports::{RpcError, TransportErrorKind},
};
use alloy_primitives::{Address, Bytes, B256, U256};
use nitro_core::SigningKey;
use tokio::time::{sleep, timeout, Instant};

use crate::{contracts::Artifact, ChainError};

/// Timing and retry settings of an [`EthClient`].
#[derive(Clone, Debug)]
pub struct ChainConfig {
    /// Blocks a receipt must be buried under (1 = mined; anvil automines, so 1 is enough).
    pub confirmations: u64,
    /// How often to poll for receipts, confirmations and holdings.
    pub poll_interval: Duration,
    /// How long to wait for a sent transaction to be mined (that is, until the account's nonce
    /// moves past it; then [`ChainConfig::dropped_after`] applies), and for its confirmations.
    pub receipt_timeout: Duration,
    /// How long to keep looking for a transaction's receipt once the account's nonce has moved
    /// past it, before calling it [`ChainError::Dropped`]. A nonce that moved on does not prove
    /// a drop: a node may answer the nonce before its receipt is stored, and load-balanced
    /// endpoints routinely answer the nonce from one backend and the receipt from another.
    /// Earlier than this, a transaction is dropped only when the other transaction mined with
    /// its nonce is found on chain.
    pub dropped_after: Duration,
    /// How long to wait for a deposit's expected holdings.
    pub deposit_timeout: Duration,
    /// Timeout of one JSON-RPC request.
    pub rpc_timeout: Duration,
    /// Retries of a request whose node is unreachable or slow (0 = try once).
    pub retries: u32,
    /// First delay between retries; doubled after each, up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest delay between retries.
    pub max_backoff: Duration,
    /// Extra gas on top of the node's estimate, in percent.
    pub gas_margin_percent: u64,
}

impl Default for ChainConfig {
    fn default() -> Self {
        Self {
            confirmations: 1,
            poll_interval: Duration::from_millis(50),
            receipt_timeout: Duration::from_secs(60),
            dropped_after: Duration::from_secs(30),
            deposit_timeout: Duration::from_secs(60),
            rpc_timeout: Duration::from_secs(10),
            retries: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            gas_margin_percent: 20,
        }
    }
}

/// A mined, confirmed, successful transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxReceipt {
    /// Its hash.
    pub tx_hash: B256,
    /// The block it is in.
    pub block_number: u64,
    /// Gas it used.
    pub gas_used: u64,
    /// What it paid per unit of gas, in wei (so the fee is `gas_used × effective_gas_price`).
    pub effective_gas_price: u128,
    /// The contract it created, for a deployment.
    pub contract_address: Option<Address>,
}

impl TxReceipt {
    /// The fee paid, in wei.
    pub fn fee(&self) -> alloy::primitives::U256 {
        alloy::primitives::U256::from(self.gas_used) * alloy::primitives::U256::from(self.effective_gas_price)
    }
}

/// How often [`EthClient::wait_for_receipt`] looks for what was mined at a nonce that moved on.
const SEARCH_EVERY: Duration = Duration::from_secs(1);

/// An account (a private key) on a JSON-RPC node.
///
/// Transactions of one client are sent one at a time (a lock spans nonce lookup to
/// confirmation), each signed locally with the pending nonce; a send that fails in transit is
/// retried with the *same* signed bytes, so it can never be duplicated.
#[derive(Clone, Debug)]
pub struct EthClient {
    provider: RootProvider,
    url: String,
    wallet: EthereumWallet,
    address: Address,
    chain_id: u64,
    config: ChainConfig,
    send_lock: Arc<tokio::sync::Mutex<()>>,
}

pub(crate) fn http_provider(url: &str) -> Result<RootProvider, ChainError> {
    let parsed: url::Url = url
        .parse()
        .map_err(|e: url::ParseError| ChainError::Rpc { operation: "connect", message: format!("{url}: {e}") })?;
    Ok(RootProvider::new_http(parsed))
}

/// Runs `request` with a timeout, retrying with exponential backoff while the node is
/// unreachable or slow. Error responses (reverts included) are not retried.
pub(crate) async fn with_retries<T, F, Fut>(
    config: &ChainConfig,
    operation: &'static str,
    function: &'static str,
    mut request: F,
) -> Result<T, ChainError>
where
    F: FnMut() -> Fut,
    Fut: IntoFuture<Output = Result<T, RpcError<TransportErrorKind>>>,
{
    let mut delay = config.initial_backoff;
    let mut attempt = 0;
    loop {
        let error = match timeout(config.rpc_timeout, request().into_future()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => ChainError::from_rpc(operation, function, e),
            Err(_) => {
                ChainError::Timeout { what: format!("the node to answer {operation}"), after: config.rpc_timeout }
            }
        };
        if !error.is_transient() || attempt >= config.retries {
            return Err(error);
        }
        attempt += 1;
        sleep(delay).await;
        delay = (delay * 2).min(config.max_backoff);
    }
}

impl EthClient {
    /// Connects to the node at `url` (e.g. `http://127.0.0.1:8545`) as the account of `key`,
    /// asking the node for its chain id (so an unreachable node is an error here).
    pub async fn connect(url: &str, key: &SigningKey, config: ChainConfig) -> Result<Self, ChainError> {
        let provider = http_provider(url)?;
        let signer = PrivateKeySigner::from_bytes(&B256::from(key.to_bytes()))
            .map_err(|e| ChainError::Signing(e.to_string()))?;
        let address = signer.address();
        let chain_id = with_retries(&config, "eth_chainId", "", || provider.get_chain_id()).await?;
        Ok(Self {
            provider,
            url: url.to_owned(),
            wallet: EthereumWallet::from(signer),
            address,
            chain_id,
            config,
            send_lock: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The account's address.
    pub fn address(&self) -> Address {
        self.address
    }

    /// The node's chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The node's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The settings.
    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// The underlying alloy provider (no fillers, no signer).
    pub fn provider(&self) -> &RootProvider {
        &self.provider
    }

    /// The latest block number.
    pub async fn block_number(&self) -> Result<u64, ChainError> {
        with_retries(&self.config, "eth_blockNumber", "", || self.provider.get_block_number()).await
    }

    /// The latest block's timestamp (the chain's "now", which decides channel modes).
    pub async fn latest_timestamp(&self) -> Result<u64, ChainError> {
        let block = with_retries(&self.config, "eth_getBlockByNumber", "", || {
            self.provider.get_block_by_number(BlockNumberOrTag::Latest)
        })
        .await?;
        block
            .map(|b| b.header.timestamp)
            .ok_or(ChainError::Rpc { operation: "eth_getBlockByNumber", message: "no latest block".into() })
    }

    /// The ETH balance of `who`.
    pub async fn balance(&self, who: Address) -> Result<U256, ChainError> {
        with_retries(&self.config, "eth_getBalance", "", || self.provider.get_balance(who)).await
    }

    /// `eth_call` of `input` on `to` at the latest block; a revert is [`ChainError::Reverted`].
    pub async fn call(&self, function: &'static str, to: Address, input: Bytes) -> Result<Bytes, ChainError> {
        let request = TransactionRequest::default().with_from(self.address).with_to(to).with_input(input);
        with_retries(&self.config, "eth_call", function, || self.provider.call(request.clone())).await
    }

    /// Deploys `artifact` (no constructor arguments) and returns the contract's address.
    pub async fn deploy(&self, artifact: &Artifact) -> Result<Address, ChainError> {
        let request = TransactionRequest::default().with_deploy_code(artifact.bytecode.clone());
        let receipt = self.send("deploy", request).await?;
        let address = receipt.contract_address.ok_or_else(|| ChainError::Deployment(artifact.name.clone()))?;
        let code = with_retries(&self.config, "eth_getCode", "", || self.provider.get_code_at(address)).await?;
        if code.is_empty() {
            return Err(ChainError::Deployment(artifact.name.clone()));
        }
        Ok(address)
    }

    /// Sends a call of `function` (`input` on `to`, carrying `value`) and waits until it is
    /// confirmed. A revert, at estimation or on chain, is [`ChainError::Reverted`].
    pub async fn transact(
        &self,
        function: &'static str,
        to: Address,
        input: Bytes,
        value: U256,
    ) -> Result<TxReceipt, ChainError> {
        let request = TransactionRequest::default().with_to(to).with_input(input).with_value(value);
        self.send(function, request).await
    }

    async fn send(&self, function: &'static str, request: TransactionRequest) -> Result<TxReceipt, ChainError> {
        let config = &self.config;
        let provider = &self.provider;
        let _one_at_a_time = self.send_lock.lock().await;
        let request = request.with_from(self.address).with_chain_id(self.chain_id);

        // Estimation executes the call: a revert surfaces here, with its reason, before
        // anything is signed or sent.
        let gas = with_retries(config, "eth_estimateGas", function, || provider.estimate_gas(request.clone())).await?;
        let gas = gas.saturating_add(gas.saturating_mul(config.gas_margin_percent) / 100);
        let nonce = with_retries(config, "eth_getTransactionCount", function, || {
            provider.get_transaction_count(self.address).pending()
        })
        .await?;
        let fees = with_retries(config, "eth_feeHistory", function, || provider.estimate_eip1559_fees()).await?;
        let envelope = request
            .clone()
            .with_nonce(nonce)
            .with_gas_limit(gas)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
            .build(&self.wallet)
            .await
            .map_err(|e| ChainError::Signing(e.to_string()))?;
        let tx_hash = *envelope.tx_hash();
        let raw = envelope.encoded_2718();

        // The chain's height before sending: the transaction (or whatever takes its nonce) is
        // mined above it.
        let sent_above = self.block_number().await?;
        self.send_raw(function, &raw).await?;
        let receipt = self.wait_for_receipt(tx_hash, nonce, sent_above).await?;
        let block_number = receipt.block_number.ok_or(ChainError::Rpc {
            operation: "eth_getTransactionReceipt",
            message: "receipt without a block number".into(),
        })?;
        if !receipt.status() {
            // Estimation passed, so the state changed before the transaction ran (most often an
            // earlier transaction of the same block): replay on the block's state for the reason,
            // then on its parent's.
            let mut reason = None;
            for block in [block_number, block_number.saturating_sub(1)] {
                if let Err(ChainError::Reverted { reason: Some(r), .. }) =
                    with_retries(config, "eth_call", function, || {
                        provider.call(request.clone()).block(BlockId::number(block))
                    })
                    .await
                {
                    reason = Some(r);
                    break;
                }
            }
            return Err(ChainError::Reverted { function, reason, tx_hash: Some(tx_hash) });
        }
        self.wait_for_confirmations(block_number).await?;
        Ok(TxReceipt {
            tx_hash,
            block_number,
            gas_used: receipt.gas_used,
            effective_gas_price: receipt.effective_gas_price,
            contract_address: receipt.contract_address,
        })
    }

    /// `eth_sendRawTransaction` of `raw`, retried with the same bytes while the node is
    /// unreachable or slow. Once an attempt may have arrived (its answer was lost), the node's
    /// "already known" (it has these bytes) or "nonce too low" (they were mined, or another
    /// transaction took the nonce: [`EthClient::wait_for_receipt`] tells which) means *sent*.
    /// "Already known" means sent on any attempt.
    async fn send_raw(&self, function: &'static str, raw: &[u8]) -> Result<(), ChainError> {
        let config = &self.config;
        let operation = "eth_sendRawTransaction";
        let mut delay = config.initial_backoff;
        let mut attempt = 0;
        let mut may_have_arrived = false;
        loop {
            let error = match timeout(config.rpc_timeout, self.provider.send_raw_transaction(raw)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(e)) => ChainError::from_rpc(operation, function, e),
                Err(_) => {
                    ChainError::Timeout { what: format!("the node to answer {operation}"), after: config.rpc_timeout }
                }
            };
            if error.is_already_known() || (may_have_arrived && error.is_nonce_too_low()) {
                return Ok(());
            }
            if !error.is_transient() || attempt >= config.retries {
                return Err(error);
            }
            // A transport failure or a timeout: the request may have reached the node.
            may_have_arrived = true;
            attempt += 1;
            sleep(delay).await;
            delay = (delay * 2).min(config.max_backoff);
        }
    }

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
    async fn wait_for_receipt(
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
    async fn mined_at_nonce(&self, nonce: u64, sent_above: u64) -> Result<Option<B256>, ChainError> {
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

    async fn wait_for_confirmations(&self, block_number: u64) -> Result<(), ChainError> {
        let wanted = block_number.saturating_add(self.config.confirmations.saturating_sub(1));
        let deadline = Instant::now() + self.config.receipt_timeout;
        loop {
            if self.block_number().await? >= wanted {
                return Ok(());
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
}
