//! The transaction manager on a real anvil, through the fault-injecting proxy: transactions
//! of one key in flight together, a flaky endpoint (lost answers, 5xx, delayed receipts, an
//! outage of seconds), a fee spike outbid at the same nonce, an answer with a deadline pushed
//! harder with an alarm, a cancellation taking the nonce back with a no-op, a reorg before the
//! depth, a revert at estimation. Each lands what it must exactly once.

mod common;

use std::time::Duration;

use alloy_primitives::{B256, U256};
use common::*;
use nitro_chain::{
    proxy::{Fault, RpcProxy},
    AnvilBuilder, ChainConfig, ChainError, ChainService, TxEvent, TxManager, TxManagerConfig, TxOutcome,
};
use nitro_core::chain::ChainTransaction;
use tokio::sync::mpsc::UnboundedReceiver;

const GWEI: u128 = 1_000_000_000;

/// Quick settings for tests: polls every 100 ms, re-prices after 2 blocks (or 20 s).
fn quick() -> TxManagerConfig {
    TxManagerConfig {
        poll_interval: Duration::from_millis(100),
        initial_backoff: Duration::from_millis(100),
        max_backoff: Duration::from_secs(1),
        bump_after_blocks: 2,
        bump_after: Duration::from_secs(20),
        ..TxManagerConfig::default()
    }
}

async fn manager(
    chain: &Chain,
    url: &str,
    account: usize,
    depth: u64,
    config: TxManagerConfig,
) -> (TxManager, UnboundedReceiver<TxEvent>) {
    let chain_config = ChainConfig {
        confirmations: depth,
        rpc_timeout: Duration::from_secs(5),
        initial_backoff: Duration::from_millis(50),
        ..ChainConfig::default()
    };
    TxManager::spawn(chain.service_at(url, account, chain_config).await, config)
}

async fn next(events: &mut UnboundedReceiver<TxEvent>) -> TxEvent {
    tokio::time::timeout(PATIENCE, events.recv()).await.expect("an outcome in time").expect("the manager runs")
}

fn deposit(channel_id: B256, expected: U256, amount: U256) -> ChainTransaction {
    ChainTransaction::Deposit { channel_id, asset: ETH, expected_held: expected, amount }
}

fn confirmed(event: &TxEvent) -> &nitro_chain::TxReceipt {
    match &event.outcome {
        TxOutcome::Confirmed(receipt) => receipt,
        other => panic!("expected a confirmation, got {other:?}"),
    }
}

#[tokio::test]
async fn transactions_of_one_key_in_flight_together_get_consecutive_nonces_and_each_lands_once() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    let before = chain.nonce(3).await;
    let (txm, mut events) = manager(&chain, &chain.anvil.endpoint(), 3, 1, quick()).await;
    for n in 0..5 {
        txm.submit(n, deposit(channel(app, 100 + n), U256::ZERO, milli(n + 1)), None).unwrap();
    }
    // The core asks again for the first one while it is in flight: it joins, nothing more is sent.
    txm.submit(99, deposit(channel(app, 100), U256::ZERO, milli(1)), None).unwrap();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let event = next(&mut events).await;
        confirmed(&event);
        ids.extend(event.ids);
    }
    ids.sort_unstable();
    assert_eq!(ids, vec![0, 1, 2, 3, 4, 99]);
    assert_eq!(chain.nonce(3).await, before + 5, "five transactions, one per deposit");
    for n in 0..5 {
        assert_eq!(chain.holdings(channel(app, 100 + n)).await, milli(n + 1));
    }
    let stats = txm.stats();
    assert_eq!((stats.sent, stats.confirmed, stats.joined, stats.failed), (5, 5, 1, 0), "{stats:?}");
}

#[tokio::test]
async fn a_flaky_endpoint_delays_but_never_loses_or_duplicates_a_transaction() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    let proxy = RpcProxy::start(chain.anvil.port()).await.unwrap();
    let (txm, mut events) = manager(&chain, &proxy.url(), 3, 1, quick()).await;
    let before = chain.nonce(3).await;
    // The first send's answer is lost after it took effect; the first receipts come late, then
    // as gateway errors.
    let sends = std::sync::atomic::AtomicU32::new(0);
    let receipts = std::sync::atomic::AtomicU32::new(0);
    proxy.set_rule(move |call| match call.method {
        "eth_sendRawTransaction" if sends.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 => Fault::LoseAnswer,
        "eth_getTransactionReceipt" => match receipts.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0..=2 => Fault::Delay(Duration::from_millis(400)),
            3..=5 => Fault::Http(503),
            _ => Fault::Forward,
        },
        _ => Fault::Forward,
    });
    let id = channel(app, 7);
    txm.submit(1, deposit(id, U256::ZERO, milli(3)), None).unwrap();
    // Then the node is unreachable for three seconds.
    until("the deposit to be sent", || async { (proxy.count("eth_sendRawTransaction") > 0).then_some(()) }).await;
    proxy.outage(Duration::from_secs(3));
    let event = next(&mut events).await;
    confirmed(&event);
    assert_eq!(event.ids, vec![1]);
    assert_eq!(chain.nonce(3).await, before + 1, "sent once");
    assert_eq!(chain.holdings(id).await, milli(3), "deposited once");

    // A deposit sent while the outage runs waits it out and lands once too.
    proxy.clear_rule();
    proxy.outage(Duration::from_secs(3));
    txm.submit(2, deposit(id, milli(3), milli(4)), None).unwrap();
    let event = next(&mut events).await;
    confirmed(&event);
    assert_eq!(chain.nonce(3).await, before + 2);
    assert_eq!(chain.holdings(id).await, milli(7));
}

#[tokio::test]
async fn a_transaction_priced_before_a_fee_spike_is_re_priced_at_the_same_nonce() {
    // No automining: blocks come when the test says, then every second.
    let chain = Chain::start_with(AnvilBuilder::default()).await;
    let app = chain.contracts.consensus_app;
    chain.anvil.set_automine(false).await.unwrap();
    let (txm, mut events) = manager(&chain, &chain.anvil.endpoint(), 3, 1, quick()).await;
    let before = chain.nonce(3).await;
    let id = channel(app, 8);
    txm.submit(1, deposit(id, U256::ZERO, milli(2)), None).unwrap();
    until("the deposit in the pool", || async { (chain.pool_pending().await == 1).then_some(()) }).await;
    // The base fee jumps 200-fold before the next block: the pooled price is stale.
    chain.anvil.set_next_block_base_fee(200 * GWEI).await.unwrap();
    chain.anvil.set_interval_mining(1).await.unwrap();
    let event = next(&mut events).await;
    let receipt = *confirmed(&event);
    assert!(receipt.effective_gas_price >= 150 * GWEI, "paid the spiked base fee: {}", receipt.effective_gas_price);
    let stats = txm.stats();
    assert!(stats.replaced >= 1, "re-priced: {stats:?}");
    assert_eq!(chain.nonce(3).await, before + 1, "at the same nonce: one transaction");
    assert_eq!(chain.holdings(id).await, milli(2));
}

#[tokio::test]
async fn an_answer_with_a_deadline_lands_before_it_through_a_spike_and_the_shrinking_margin_raises_alarms() {
    let chain = Chain::start_with(AnvilBuilder::default()).await;
    let app = chain.contracts.consensus_app;
    let checkpoint = ChainTransaction::checkpoint(fully_signed(ledger_state(app, 9, 5, milli(1), milli(1)))).unwrap();
    chain.anvil.set_automine(false).await.unwrap();
    // An alarm margin as long as the window: the answer is critical (priced hardest, with an
    // alarm) as long as it is unmined.
    let config = TxManagerConfig { alarm_margin_secs: 30, alarm_every: Duration::from_millis(200), ..quick() };
    let (txm, mut events) = manager(&chain, &chain.anvil.endpoint(), 3, 1, config).await;
    let service = chain.service(0).await;
    let deadline = service.chain_time().await.unwrap() + 30;
    txm.submit(1, checkpoint, Some(deadline)).unwrap();
    until("the answer in the pool", || async { (chain.pool_pending().await == 1).then_some(()) }).await;
    // A sustained spike: every block is priced 300 gwei, until the answer is in.
    chain.anvil.set_interval_mining(1).await.unwrap();
    let started = std::time::Instant::now();
    let event = loop {
        chain.anvil.set_next_block_base_fee(300 * GWEI).await.unwrap();
        if let Ok(event) = events.try_recv() {
            break event;
        }
        assert!(started.elapsed() < PATIENCE, "no outcome");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let receipt = *confirmed(&event);
    let mined_at = chain.block_timestamp(receipt.block_number).await;
    assert!(mined_at < deadline, "mined at chain time {mined_at}, before the deadline {deadline}");
    let stats = txm.stats();
    assert!(stats.deadline_alarms >= 1, "{stats:?}");
    assert!(stats.lowest_deadline_margin_secs.is_some_and(|m| m < 30), "{stats:?}");
    assert!(receipt.effective_gas_price >= 250 * GWEI, "through the spike: {}", receipt.effective_gas_price);
}

#[tokio::test]
async fn a_cancelled_transaction_already_sent_is_replaced_by_a_no_op_at_its_nonce() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    chain.anvil.set_automine(false).await.unwrap();
    let (txm, mut events) = manager(&chain, &chain.anvil.endpoint(), 3, 1, quick()).await;
    let before = chain.nonce(3).await;
    let id = channel(app, 10);
    txm.submit(1, deposit(id, U256::ZERO, milli(2)), None).unwrap();
    until("the deposit in the pool", || async { (chain.pool_pending().await == 1).then_some(()) }).await;
    txm.cancel(1).unwrap();
    until("the no-op to replace it", || async { (txm.stats().sent >= 2).then_some(()) }).await;
    chain.anvil.mine().await.unwrap();
    let event = next(&mut events).await;
    assert!(event.ids.is_empty(), "the cancelled request is not told again");
    assert!(matches!(event.outcome, TxOutcome::Cancelled(Some(_))), "{:?}", event.outcome);
    assert_eq!(chain.holdings(id).await, U256::ZERO, "the deposit never happened");
    assert_eq!(chain.nonce(3).await, before + 1, "the nonce was used by the no-op");
    // Cancelling what was never sent sends nothing.
    txm.submit(2, deposit(id, milli(9), milli(2)), None).unwrap(); // not ready: waits for holdings
    txm.cancel(2).unwrap();
    let event = next(&mut events).await;
    assert!(matches!(event.outcome, TxOutcome::Cancelled(None)), "{:?}", event.outcome);
    assert_eq!(chain.nonce(3).await, before + 1);
}

#[tokio::test]
async fn a_transaction_a_reorg_takes_out_before_the_depth_is_sent_again_and_confirmed_once() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    let (txm, mut events) = manager(&chain, &chain.anvil.endpoint(), 3, 3, quick()).await;
    let before = chain.nonce(3).await;
    let id = channel(app, 11);
    txm.submit(1, deposit(id, U256::ZERO, milli(2)), None).unwrap();
    until("the manager to see the deposit mined", || async { (txm.stats().mined == 1).then_some(()) }).await;
    let mined_in = chain.block_number().await;
    chain.anvil.reorg(1).await.unwrap();
    assert_eq!(chain.holdings(id).await, U256::ZERO, "taken out");
    let receipt = loop {
        if let Ok(event) = events.try_recv() {
            break *confirmed(&event);
        }
        chain.anvil.mine().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_ne!(receipt.block_number, mined_in);
    assert_eq!(chain.holdings(id).await, milli(2), "deposited once");
    assert_eq!(chain.nonce(3).await, before + 1);
    assert!(txm.stats().reorged >= 1);
}

#[tokio::test]
async fn a_call_reverting_at_estimation_fails_with_its_reason_and_sends_nothing() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    let (txm, mut events) = manager(&chain, &chain.anvil.endpoint(), 3, 1, quick()).await;
    let checkpoint = ChainTransaction::checkpoint(fully_signed(ledger_state(app, 12, 5, milli(1), milli(1)))).unwrap();
    txm.submit(1, checkpoint.clone(), None).unwrap();
    confirmed(&next(&mut events).await);
    let before = chain.nonce(3).await;
    txm.submit(2, checkpoint, None).unwrap();
    let event = next(&mut events).await;
    match event.outcome {
        TxOutcome::Failed(ChainError::Reverted { tx_hash: None, reason: Some(reason), .. }) => {
            assert!(reason.contains("turnNumRecord"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(chain.nonce(3).await, before, "nothing sent");
}

#[tokio::test]
async fn a_mined_transaction_whose_receipt_lags_the_nonce_is_never_reported_dropped() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    // Like a load balancer whose receipt backend lags its state backend: for 3 s no receipt is
    // visible although the account's nonce has moved past the transaction.
    let proxy = RpcProxy::start(chain.anvil.port()).await.unwrap();
    let hidden_until = std::time::Instant::now() + Duration::from_secs(3);
    proxy.set_rule(move |call| match call.method {
        "eth_getTransactionReceipt" if std::time::Instant::now() < hidden_until => {
            Fault::Answer(serde_json::Value::Null)
        }
        _ => Fault::Forward,
    });
    let (txm, mut events) = manager(&chain, &proxy.url(), 3, 1, quick()).await;
    let before = chain.nonce(3).await;
    let id = channel(app, 14);
    txm.submit(1, deposit(id, U256::ZERO, milli(2)), None).unwrap();
    let event = next(&mut events).await;
    confirmed(&event);
    assert!(std::time::Instant::now() >= hidden_until, "confirmed only once the receipt showed");
    assert_eq!(chain.nonce(3).await, before + 1);
    assert_eq!(chain.holdings(id).await, milli(2));
}
