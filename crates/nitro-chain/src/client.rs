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
    /// How long to wait for a sent transaction to be mined and confirmed.
    pub receipt_timeout: Duration,
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

        match with_retries(config, "eth_sendRawTransaction", function, || async {
            provider.send_raw_transaction(&raw).await.map(|_| ())
        })
        .await
        {
            Ok(()) => {}
            // A retry of bytes that did arrive the first time: the receipt tells.
            Err(ChainError::Rpc { message, .. })
                if message.contains("already known") || message.contains("nonce too low") => {}
            Err(e) => return Err(e),
        }

        let receipt = self.wait_for_receipt(tx_hash, nonce).await?;
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

    async fn wait_for_receipt(
        &self,
        tx_hash: B256,
        nonce: u64,
    ) -> Result<alloy::rpc::types::TransactionReceipt, ChainError> {
        let deadline = Instant::now() + self.config.receipt_timeout;
        loop {
            match with_retries(&self.config, "eth_getTransactionReceipt", "", || {
                self.provider.get_transaction_receipt(tx_hash)
            })
            .await
            {
                Ok(Some(receipt)) => return Ok(receipt),
                Ok(None) => {
                    // No receipt although the nonce is used: another transaction took it.
                    let mined = with_retries(&self.config, "eth_getTransactionCount", "", || {
                        self.provider.get_transaction_count(self.address).latest()
                    })
                    .await?;
                    if mined > nonce {
                        let again = with_retries(&self.config, "eth_getTransactionReceipt", "", || {
                            self.provider.get_transaction_receipt(tx_hash)
                        })
                        .await?;
                        return again.ok_or(ChainError::Dropped(tx_hash));
                    }
                }
                Err(e) if e.is_transient() => {}
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                return Err(ChainError::Timeout {
                    what: format!("transaction {tx_hash} to be mined"),
                    after: self.config.receipt_timeout,
                });
            }
            sleep(self.config.poll_interval).await;
        }
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
