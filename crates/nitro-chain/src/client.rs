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
use tokio::time::{sleep, timeout};

use crate::{contracts::Artifact, ChainError};

mod receipts;
pub(crate) use receipts::{mined_in, Depth};

/// Timing and retry settings of an [`EthClient`].
#[derive(Clone, Debug)]
pub struct ChainConfig {
    /// The confirmation depth: a receipt counts once its block has `confirmations - 1` blocks
    /// on top and is still canonical then (1 = as soon as mined). Defaults per chain:
    /// [`default_confirmations`](crate::default_confirmations); this struct's default, 1, is
    /// anvil's.
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

    /// The same account with other settings (one send lock for both).
    pub fn with_config(mut self, config: ChainConfig) -> Self {
        self.config = config;
        self
    }

    /// The account's nonce: the count of its mined transactions, or with `pending`, of those
    /// the node also holds ready in its pool.
    pub async fn nonce(&self, pending: bool) -> Result<u64, ChainError> {
        with_retries(&self.config, "eth_getTransactionCount", "", || {
            let count = self.provider.get_transaction_count(self.address);
            if pending {
                count.pending()
            } else {
                count.latest()
            }
        })
        .await
    }

    /// `eth_call` of `input` on `to` on the state after block `block`.
    pub async fn call_at(
        &self,
        function: &'static str,
        to: Address,
        input: Bytes,
        block: u64,
    ) -> Result<Bytes, ChainError> {
        let request = TransactionRequest::default().with_from(self.address).with_to(to).with_input(input);
        with_retries(&self.config, "eth_call", function, || {
            self.provider.call(request.clone()).block(BlockId::number(block))
        })
        .await
    }

    /// Why a call mined in `block` reverted: replayed on that block's state, then on its
    /// parent's (an earlier transaction of the block may have changed what it saw).
    pub(crate) async fn revert_reason(
        &self,
        function: &'static str,
        request: &TransactionRequest,
        block: u64,
    ) -> Option<String> {
        let request = request.clone().with_from(self.address);
        for at in [block, block.saturating_sub(1)] {
            if let Err(ChainError::Reverted { reason: Some(r), .. }) =
                with_retries(&self.config, "eth_call", function, || {
                    self.provider.call(request.clone()).block(BlockId::number(at))
                })
                .await
            {
                return Some(r);
            }
        }
        None
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
        self.deploy_with_args(artifact, &[]).await
    }

    /// Deploys `artifact` with `args`, the ABI-encoded constructor arguments appended to the
    /// creation code (as the EVM expects them), and returns the contract's address. The
    /// arguments are not checked against the ABI: callers encode them for the constructor.
    pub async fn deploy_with_args(&self, artifact: &Artifact, args: &[u8]) -> Result<Address, ChainError> {
        let mut code = Vec::with_capacity(artifact.bytecode.len() + args.len());
        code.extend_from_slice(&artifact.bytecode);
        code.extend_from_slice(args);
        let request = TransactionRequest::default().with_deploy_code(Bytes::from(code));
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

    /// The gas a call needs, as the node estimates it plus [`ChainConfig::gas_margin_percent`].
    /// Estimation executes the call: a revert surfaces here, with its reason.
    pub(crate) async fn estimate_gas(
        &self,
        function: &'static str,
        request: &TransactionRequest,
    ) -> Result<u64, ChainError> {
        let request = request.clone().with_from(self.address).with_chain_id(self.chain_id);
        let gas =
            with_retries(&self.config, "eth_estimateGas", function, || self.provider.estimate_gas(request.clone()))
                .await?;
        Ok(gas.saturating_add(gas.saturating_mul(self.config.gas_margin_percent) / 100))
    }

    /// Signs `request` from this account with `nonce`, `gas` and the EIP-1559 fees
    /// `(max_fee_per_gas, max_priority_fee_per_gas)`: its hash and raw bytes.
    pub(crate) async fn sign(
        &self,
        request: &TransactionRequest,
        nonce: u64,
        gas: u64,
        (max_fee_per_gas, max_priority_fee_per_gas): (u128, u128),
    ) -> Result<(B256, Bytes), ChainError> {
        let envelope = request
            .clone()
            .with_from(self.address)
            .with_chain_id(self.chain_id)
            .with_nonce(nonce)
            .with_gas_limit(gas)
            .with_max_fee_per_gas(max_fee_per_gas)
            .with_max_priority_fee_per_gas(max_priority_fee_per_gas)
            .build(&self.wallet)
            .await
            .map_err(|e| ChainError::Signing(e.to_string()))?;
        Ok((*envelope.tx_hash(), Bytes::from(envelope.encoded_2718())))
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
        let mut reorgs = 0;
        let (receipt, block_number) = loop {
            let receipt = self.wait_for_receipt(tx_hash, nonce, sent_above).await?;
            let (block_number, block_hash) = mined_in(&receipt)?;
            if self.wait_for_confirmations(tx_hash, block_number, block_hash).await? {
                break (receipt, block_number);
            }
            // A reorg took it out of the chain (and, on many nodes, out of the pool): the same
            // signed bytes again, at the same nonce, so that it cannot land twice.
            reorgs += 1;
            if reorgs > MAX_REORGS {
                return Err(ChainError::Timeout {
                    what: format!("transaction {tx_hash} to stay in the chain ({reorgs} reorgs took it out)"),
                    after: self.config.receipt_timeout,
                });
            }
            self.send_raw(function, &raw).await?;
        };
        if !receipt.status() {
            // Estimation passed, so the state changed before the transaction ran (most often an
            // earlier transaction of the same block).
            let reason = self.revert_reason(function, &request, block_number).await;
            return Err(ChainError::Reverted { function, reason, tx_hash: Some(tx_hash) });
        }
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
}

/// How many times a reorg may take one transaction out of the chain before
/// [`EthClient::transact`] gives up waiting for it.
const MAX_REORGS: u32 = 8;
