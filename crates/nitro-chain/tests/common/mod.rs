//! What the chain tests share: an anvil with the contracts deployed, accounts, ledger states,
//! and waiting for conditions with generous deadlines (never fixed sleeps).
#![allow(dead_code)]

use std::{
    future::Future,
    time::{Duration, Instant},
};

use alloy_primitives::{aliases::U48, Address, Bytes, B256, U256};
use nitro_chain::{
    dev_key, Anvil, AnvilBuilder, Artifacts, ChainConfig, ChainService, Contracts, EthChainService, EthClient,
};
use nitro_core::{destination_of, Allocation, AssetMetadata, Exit, SignedState, SigningKey, SingleAssetExit, State};

pub const ETH: Address = Address::ZERO;
pub const CHALLENGE_DURATION: u64 = 60;
/// How long a test waits for anything before failing (a loaded 2-core machine is slow).
pub const PATIENCE: Duration = Duration::from_secs(90);

pub fn milli(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000_000_000_000u64)
}

pub fn key(i: usize) -> SigningKey {
    dev_key(i).unwrap()
}

/// A fresh anvil (with `args`) and the contracts deployed.
pub struct Chain {
    pub anvil: Anvil,
    pub contracts: Contracts,
}

impl Chain {
    pub async fn start() -> Self {
        Self::start_with(Anvil::builder()).await
    }

    pub async fn start_with(builder: AnvilBuilder) -> Self {
        let anvil = builder.spawn().unwrap_or_else(|e| panic!("{e}"));
        let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
        let deployer = EthClient::connect(&anvil.endpoint(), &key(0), ChainConfig::default()).await.unwrap();
        let contracts = Contracts::deploy(&deployer, &artifacts).await.unwrap();
        Self { anvil, contracts }
    }

    /// The chain service of dev account `account` at `url`, with `config`.
    pub async fn service_at(&self, url: &str, account: usize, config: ChainConfig) -> EthChainService {
        let client = EthClient::connect(url, &key(account), config).await.unwrap();
        EthChainService::new(client, self.contracts.adjudicator)
    }

    /// The chain service of dev account `account`, straight to anvil, default settings.
    pub async fn service(&self, account: usize) -> EthChainService {
        self.service_at(&self.anvil.endpoint(), account, ChainConfig::default()).await
    }

    pub async fn nonce(&self, account: usize) -> u64 {
        self.service(account).await.client().nonce(false).await.unwrap()
    }

    pub async fn holdings(&self, channel: B256) -> U256 {
        self.service(0).await.holdings(ETH, channel).await.unwrap()
    }

    pub async fn block_number(&self) -> u64 {
        self.service(0).await.client().block_number().await.unwrap()
    }

    /// Raw JSON-RPC to anvil.
    pub async fn rpc(&self, method: &str, params: serde_json::Value) -> serde_json::Value {
        use alloy::providers::Provider;
        let service = self.service(0).await;
        service.client().provider().raw_request::<_, serde_json::Value>(method.to_owned().into(), params).await.unwrap()
    }

    /// The timestamp of block `number`.
    pub async fn block_timestamp(&self, number: u64) -> u64 {
        let block = self.rpc("eth_getBlockByNumber", serde_json::json!([format!("{number:#x}"), false])).await;
        block["timestamp"].as_str().and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()).unwrap()
    }

    /// Pending transactions in anvil's pool.
    pub async fn pool_pending(&self) -> u64 {
        let status = self.rpc("txpool_status", serde_json::json!([])).await;
        status["pending"].as_str().and_then(|s| u64::from_str_radix(s.trim_start_matches("0x"), 16).ok()).unwrap_or(0)
    }
}

/// A ledger state of accounts 1 (leader) and 2 (follower): one ETH exit, no guarantees.
pub fn ledger_state(app: Address, nonce: u64, turn: u64, leader_amount: U256, follower_amount: U256) -> State {
    let (l, f) = (destination_of(key(1).address()), destination_of(key(2).address()));
    let allocations = vec![Allocation::simple(l, leader_amount), Allocation::simple(f, follower_amount)];
    State {
        participants: vec![key(1).address(), key(2).address()],
        channel_nonce: nonce,
        app_definition: app,
        challenge_duration: U48::from(CHALLENGE_DURATION),
        outcome: Exit(vec![SingleAssetExit { asset: ETH, asset_metadata: AssetMetadata::default(), allocations }]),
        app_data: Bytes::new(),
        turn_num: U48::from(turn),
        is_final: false,
    }
}

pub fn fully_signed(state: State) -> SignedState {
    let mut signed = SignedState::new(state);
    for k in [key(1), key(2)] {
        signed.sign(&k).unwrap();
    }
    signed
}

/// A channel id no one uses yet (nonce `n`).
pub fn channel(app: Address, n: u64) -> B256 {
    ledger_state(app, n, 0, milli(1), milli(1)).channel_id()
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after [`PATIENCE`] naming
/// `what`.
pub async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
