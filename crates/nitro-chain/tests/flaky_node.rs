//! The chain shell against a node that misbehaves: unreachable, going away and coming back,
//! losing the answer to a send, lagging receipts, another transaction taking a nonce, a
//! transaction reverting on chain after its estimation passed. Through a TCP proxy that can be
//! switched off and the fault-injecting JSON-RPC proxy ([`nitro_chain::proxy`]).

mod common;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::providers::Provider;
use alloy_primitives::{aliases::U48, Address, Bytes, B256, U256};
use common::{Chain, CHALLENGE_DURATION, ETH};
use nitro_chain::{
    proxy::{Fault, RpcProxy},
    ChainConfig, ChainError, ChainService, EthChainService, EthClient, EventWatcher,
};
use nitro_core::{
    chain::{ChainEvent, ChainTransaction, ChannelMode},
    SignedState, SigningKey, State,
};
use tokio::{
    io::copy_bidirectional,
    net::{TcpListener, TcpStream},
    sync::watch,
};

fn eth(n: u64) -> U256 {
    common::milli(n * 1000)
}

fn key(i: usize) -> SigningKey {
    common::key(i)
}

fn leader() -> SigningKey {
    key(1)
}

fn follower() -> SigningKey {
    key(2)
}

fn ledger_state(app: Address, nonce: u64, turn: u64, _final: bool, a: U256, b: U256, _g: &[(B256, U256)]) -> State {
    common::ledger_state(app, nonce, turn, a, b)
}

fn fully_signed(state: State) -> SignedState {
    common::fully_signed(state)
}

fn quick_retries() -> ChainConfig {
    ChainConfig {
        retries: 2,
        initial_backoff: Duration::from_millis(20),
        // Generous: a loaded machine may answer slowly; refusals come at once anyway.
        rpc_timeout: Duration::from_secs(30),
        ..ChainConfig::default()
    }
}

#[tokio::test]
async fn a_closed_port_is_a_typed_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    match EthClient::connect(&url, &key(1), quick_retries()).await {
        Err(e @ ChainError::Unreachable { .. }) => assert!(e.is_transient()),
        other => panic!("{other:?}"),
    }
    let mut watcher = EventWatcher::connect(&url, Address::repeat_byte(1), 0).unwrap();
    assert!(matches!(watcher.poll().await, Err(ChainError::Unreachable { .. })));
    assert_eq!(watcher.cursor(), 0);
    assert!(matches!(EthClient::connect("not a url", &key(1), quick_retries()).await, Err(ChainError::Rpc { .. })));
}

/// A TCP proxy in front of anvil that can be switched off (dropping every connection) and on.
struct Proxy {
    port: u16,
    up: Arc<watch::Sender<bool>>,
    /// While down: come back up after refusing this many more connections (0: stay down).
    up_after_refusals: Arc<std::sync::atomic::AtomicU32>,
}

impl Proxy {
    async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(watch::channel(true).0);
        let up_after_refusals = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let (switch, countdown) = (up.clone(), up_after_refusals.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*switch.borrow() {
                    // Down: refuse by closing at once.
                    drop(inbound);
                    let left = countdown.load(std::sync::atomic::Ordering::SeqCst);
                    if left > 0 {
                        countdown.store(left - 1, std::sync::atomic::Ordering::SeqCst);
                        if left == 1 {
                            switch.send_replace(true);
                        }
                    }
                    continue;
                }
                let mut state = switch.subscribe();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", upstream_port)).await else { return };
                    tokio::select! {
                        _ = copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = state.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { port, up, up_after_refusals }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn set_up(&self, up: bool) {
        self.up.send_replace(up);
    }

    /// While down, comes back up once it has refused `count` more connections.
    fn come_back_after_refusing(&self, count: u32) {
        self.up_after_refusals.store(count, std::sync::atomic::Ordering::SeqCst);
    }
}

#[tokio::test]
async fn the_watcher_and_reads_survive_the_node_going_away() {
    let chain = Chain::start().await;
    let proxy = Proxy::start(chain.anvil.port()).await;
    let id = fully_signed(ledger_state(chain.contracts.consensus_app, 5, 0, false, eth(1), eth(1), &[])).channel_id();
    let direct = chain.service(1).await;
    let via_proxy = EthChainService::new(
        EthClient::connect(&proxy.url(), &key(2), quick_retries()).await.unwrap(),
        chain.contracts.adjudicator,
    );
    let mut watcher = via_proxy.watcher(direct.client().block_number().await.unwrap()).only_channels([id]);
    assert!(watcher.poll().await.unwrap().is_empty());

    // The node becomes unreachable: reads fail with a typed error, the watcher keeps its cursor.
    proxy.set_up(false);
    direct.deposit(id, ETH, U256::ZERO, eth(1)).await.unwrap();
    let cursor = watcher.cursor();
    assert!(matches!(watcher.poll().await, Err(ChainError::Unreachable { .. })));
    assert!(matches!(via_proxy.holdings(ETH, id).await, Err(ChainError::Unreachable { .. })));
    assert_eq!(watcher.cursor(), cursor);
    direct.deposit(id, ETH, eth(1), eth(2)).await.unwrap();

    // It comes back while a read is retrying (after refusing its first attempt): the read
    // succeeds.
    proxy.come_back_after_refusing(1);
    assert_eq!(via_proxy.holdings(ETH, id).await.unwrap(), eth(3));
    assert!(*proxy.up.borrow(), "the first attempt was refused, a retry got through");
    // The watcher resumes from its cursor: both deposits made while it was cut off arrive.
    let events = watcher.poll().await.unwrap();
    let held: Vec<U256> = events
        .iter()
        .filter_map(|e| match e {
            ChainEvent::Deposited { now_held, .. } => Some(*now_held),
            _ => None,
        })
        .collect();
    assert_eq!(held, vec![eth(1), eth(3)]);
    assert!(watcher.cursor() > cursor);
}

/// Waits (up to a minute) until anvil's pool holds `count` pending transactions.
async fn until_pending(service: &EthChainService, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: serde_json::Value =
            service.client().provider().raw_request("txpool_status".into(), ()).await.unwrap();
        if status["pending"].as_str() == Some(format!("{count:#x}").as_str()) {
            return;
        }
        assert!(Instant::now() < deadline, "the pool never held {count} pending transactions: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_transaction_reverting_on_chain_is_a_typed_error_with_its_hash() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    let old = fully_signed(ledger_state(app, 6, 2, false, eth(1), eth(1), &[]));
    let id = old.channel_id();
    let service = chain.service(1).await;
    service.submit(&ChainTransaction::challenge(old, &leader()).unwrap()).await.unwrap();

    // A checkpoint is valid while the challenge runs, so its estimation passes (anvil estimates
    // on the pending block, before any clock change); it is mined only after the challenge
    // finalized, and reverts on chain.
    chain.anvil.set_automine(false).await.unwrap();
    let newer = fully_signed(ledger_state(app, 6, 3, false, eth(2), eth(0), &[]));
    let follower_service = chain.service(2).await;
    let checkpoint =
        tokio::spawn(async move { follower_service.submit(&ChainTransaction::checkpoint(newer).unwrap()).await });
    until_pending(&service, 1).await;
    chain.anvil.advance_time(CHALLENGE_DURATION + 1).await.unwrap();
    let tx_hash = match checkpoint.await.unwrap() {
        Err(ChainError::Reverted { function, reason, tx_hash: Some(tx_hash) }) => {
            assert_eq!((function, reason.as_deref()), ("checkpoint", Some("Channel finalized.")));
            tx_hash
        }
        other => panic!("expected an on-chain revert, got {other:?}"),
    };
    chain.anvil.set_automine(true).await.unwrap();
    // The hash is that of the mined, failed transaction; the challenge's state stands.
    let receipt = service.client().provider().get_transaction_receipt(tx_hash).await.unwrap().unwrap();
    assert!(!receipt.status());
    let status = service.status_of(id).await.unwrap();
    assert_eq!(status.turn_num_record, U48::from(2));
    assert_eq!(status.mode(service.chain_time().await.unwrap()), ChannelMode::Finalized);

    // The same checkpoint now reverts at estimation: nothing is sent, so there is no hash.
    let newer = fully_signed(ledger_state(app, 6, 3, false, eth(2), eth(0), &[]));
    let nonce = service.client().provider().get_transaction_count(follower().address()).await.unwrap();
    match chain.service(2).await.submit(&ChainTransaction::checkpoint(newer).unwrap()).await {
        Err(ChainError::Reverted { reason: Some(reason), tx_hash: None, .. }) => {
            assert_eq!(reason, "Channel finalized.")
        }
        other => panic!("expected a revert at estimation, got {other:?}"),
    }
    assert_eq!(service.client().provider().get_transaction_count(follower().address()).await.unwrap(), nonce);
}

/// A plain transfer of 1 wei from `client`'s account.
async fn transfer(client: &EthClient) -> Result<nitro_chain::TxReceipt, ChainError> {
    client.transact("transfer", Address::repeat_byte(0x77), Bytes::new(), U256::from(1)).await
}

async fn nonce_of(chain: &Chain, account: usize) -> u64 {
    chain.service(account).await.client().provider().get_transaction_count(key(account).address()).await.unwrap()
}

#[tokio::test]
async fn a_send_whose_answer_was_lost_is_sent_once() {
    let chain = Chain::start().await;
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let once = lost.clone();
    let proxy = RpcProxy::start(chain.anvil.port()).await.unwrap();
    proxy.set_rule(move |call| {
        if call.method == "eth_sendRawTransaction" && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Fault::LoseAnswer
        } else {
            Fault::Forward
        }
    });
    let client = EthClient::connect(&proxy.url(), &key(4), quick_retries()).await.unwrap();

    // Automining: the first attempt is mined at once, the retry hears "nonce too low".
    let before = nonce_of(&chain, 4).await;
    let receipt = transfer(&client).await.unwrap();
    assert!(lost.load(std::sync::atomic::Ordering::SeqCst), "the first answer was lost");
    assert_eq!(nonce_of(&chain, 4).await, before + 1, "one transaction, not two");
    let direct = chain.service(4).await;
    let mined = direct.client().provider().get_transaction_receipt(receipt.tx_hash).await.unwrap().unwrap();
    assert_eq!(mined.block_number, Some(receipt.block_number));

    // Without automining, the retry finds the bytes in the pool ("transaction already
    // imported" from anvil, "already known" from geth): sent, not failed.
    lost.store(false, std::sync::atomic::Ordering::SeqCst);
    chain.anvil.set_automine(false).await.unwrap();
    let pending = tokio::spawn(async move { transfer(&client).await });
    until_pending(&direct, 1).await;
    // Let the retry meet the pooled transaction before it is mined.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !lost.load(std::sync::atomic::Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the send never happened");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    chain.anvil.mine().await.unwrap();
    let receipt = pending.await.unwrap().unwrap();
    chain.anvil.set_automine(true).await.unwrap();
    assert_eq!(nonce_of(&chain, 4).await, before + 2);
    let mined = direct.client().provider().get_transaction_receipt(receipt.tx_hash).await.unwrap().unwrap();
    assert!(mined.status());
}

#[tokio::test]
async fn a_receipt_that_lags_behind_the_nonce_is_waited_for() {
    let chain = Chain::start().await;
    // Like a load balancer whose receipt backend is behind its state backend: the first ten
    // receipt requests see nothing although the nonce has moved.
    let hidden = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let count = hidden.clone();
    let proxy = RpcProxy::start(chain.anvil.port()).await.unwrap();
    proxy.set_rule(move |call| {
        if call.method == "eth_getTransactionReceipt" && count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 10 {
            Fault::Answer(serde_json::Value::Null)
        } else {
            Fault::Forward
        }
    });
    let client = EthClient::connect(&proxy.url(), &key(4), ChainConfig::default()).await.unwrap();
    let before = nonce_of(&chain, 4).await;
    let receipt = transfer(&client).await.unwrap();
    assert!(hidden.load(std::sync::atomic::Ordering::SeqCst) > 10, "the receipt was hidden at first");
    assert_eq!(nonce_of(&chain, 4).await, before + 1);
    assert_eq!(receipt.gas_used, 21_000);
}

#[tokio::test]
async fn a_transaction_replaced_at_its_nonce_is_dropped_naming_the_other() {
    use alloy::{
        eips::Encodable2718,
        network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder},
        rpc::types::TransactionRequest,
    };
    let chain = Chain::start().await;
    // A generous bound: only finding the other transaction can make this quick.
    let config = ChainConfig { dropped_after: Duration::from_secs(600), ..ChainConfig::default() };
    let client = EthClient::connect(&chain.anvil.endpoint(), &key(4), config).await.unwrap();
    let direct = chain.service(4).await;
    chain.anvil.set_automine(false).await.unwrap();
    let ours = tokio::spawn(async move { transfer(&client).await });
    until_pending(&direct, 1).await;

    // Another sender of the same key outbids it at the same nonce.
    let content: serde_json::Value = direct.client().provider().raw_request("txpool_content".into(), ()).await.unwrap();
    let ours_by_nonce = content["pending"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(sender, _)| sender.parse::<Address>().unwrap() == key(4).address())
        .unwrap_or_else(|| panic!("our transaction is pending: {content}"))
        .1;
    let (nonce, pooled) = ours_by_nonce.as_object().unwrap().iter().next().unwrap();
    let our_hash: B256 = pooled["hash"].as_str().unwrap().parse().unwrap();
    let fee = u128::from_str_radix(pooled["maxFeePerGas"].as_str().unwrap().trim_start_matches("0x"), 16).unwrap();
    let wallet = EthereumWallet::from(
        alloy::signers::local::PrivateKeySigner::from_bytes(&B256::from(key(4).to_bytes())).unwrap(),
    );
    let replacement = TransactionRequest::default()
        .with_to(Address::repeat_byte(0x78))
        .with_value(U256::from(2))
        .with_nonce(nonce.parse().unwrap())
        .with_chain_id(nitro_chain::ANVIL_CHAIN_ID)
        .with_gas_limit(21_000)
        .with_max_fee_per_gas(fee * 2)
        .with_max_priority_fee_per_gas(fee)
        .build(&wallet)
        .await
        .unwrap();
    let other = *replacement.tx_hash();
    let sent = direct.client().provider().send_raw_transaction(&replacement.encoded_2718()).await.unwrap();
    assert_eq!(*sent.tx_hash(), other);
    chain.anvil.mine().await.unwrap();
    chain.anvil.set_automine(true).await.unwrap();

    match ours.await.unwrap() {
        Err(ChainError::Dropped { tx_hash, replaced_by }) => {
            assert_eq!((tx_hash, replaced_by), (our_hash, Some(other)));
        }
        other => panic!("expected a drop, got {other:?}"),
    }
    assert!(direct.client().provider().get_transaction_receipt(other).await.unwrap().unwrap().status());
}

#[tokio::test]
async fn a_receipt_never_seen_after_the_nonce_moved_ends_after_the_dropped_after_bound() {
    let chain = Chain::start().await;
    let config = ChainConfig { dropped_after: Duration::from_millis(500), ..ChainConfig::default() };

    // The node never shows the receipt, but its blocks show our transaction mined at our
    // nonce: not a drop, a receipt that never came.
    let no_receipts = RpcProxy::start(chain.anvil.port()).await.unwrap();
    no_receipts.set_rule(|call| match call.method {
        "eth_getTransactionReceipt" => Fault::Answer(serde_json::Value::Null),
        _ => Fault::Forward,
    });
    let client = EthClient::connect(&no_receipts.url(), &key(4), config.clone()).await.unwrap();
    match transfer(&client).await {
        Err(ChainError::Timeout { what, after }) => {
            assert!(what.contains("which is mined"), "{what}");
            assert_eq!(after, config.dropped_after);
        }
        other => panic!("expected a timeout, got {other:?}"),
    }

    // Without history either (a pruned node), nothing proves what happened: after the bound,
    // it is reported dropped, without a replacement.
    let no_history = RpcProxy::start(chain.anvil.port()).await.unwrap();
    no_history.set_rule(|call| match call.method {
        "eth_getTransactionReceipt" => Fault::Answer(serde_json::Value::Null),
        "eth_getTransactionCount" if call.params[1].as_str().is_some_and(|b| b.starts_with("0x")) => {
            Fault::Error(-32000, "missing trie node".into())
        }
        _ => Fault::Forward,
    });
    let client = EthClient::connect(&no_history.url(), &key(5), config).await.unwrap();
    let before = nonce_of(&chain, 5).await;
    assert!(matches!(transfer(&client).await, Err(ChainError::Dropped { replaced_by: None, .. })));
    assert_eq!(nonce_of(&chain, 5).await, before + 1, "it was sent");
}
