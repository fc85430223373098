//! Reorgs on a real anvil (`anvil_reorg`, `evm_snapshot`/`evm_revert`) against the watcher
//! and the client: what a reorg takes back is retracted (with the holdings re-read at the last
//! shared block) and the new branch reported; a reorg shallower than the depth is never
//! reported at all; a receipt counts only if still canonical at the depth, and a transaction
//! taken out is sent again with the same bytes, landing once.

mod common;

use alloy::providers::Provider;
use alloy_primitives::{aliases::U48, Address, Bytes, U256};
use common::*;
use nitro_chain::{ChainConfig, ChainService, EthClient, EventWatcher, WatcherConfig};
use nitro_core::chain::ChainEvent;

fn watcher_at_depth(
    service: &nitro_chain::EthChainService,
    from: u64,
    channel: alloy_primitives::B256,
    depth: u64,
) -> EventWatcher {
    let config = WatcherConfig { confirmations: depth, ..WatcherConfig::default() };
    service.watcher(from).only_channels([channel]).with_config(config)
}

#[tokio::test]
async fn a_reorg_takes_back_a_reported_deposit_which_is_retracted_and_the_new_branch_reported() {
    let chain = Chain::start().await;
    let id = channel(chain.contracts.consensus_app, 1);
    let service = chain.service(1).await;
    // Depth 1: an automining anvil, where only the test makes reorgs (the point here is
    // the retraction of what was reported).
    let mut watcher = watcher_at_depth(&service, chain.block_number().await, id, 1);
    assert!(watcher.poll().await.unwrap().is_empty());
    service.deposit(id, ETH, U256::ZERO, milli(5)).await.unwrap();
    let events = loop_poll(&mut watcher, |e| matches!(e, ChainEvent::Deposited { .. })).await;
    let deposited_in = events[0].block_number();

    chain.anvil.reorg(1).await.unwrap(); // the deposit's block is replaced by an empty one
    assert_eq!(chain.holdings(id).await, U256::ZERO, "the deposit is gone");
    let events = watcher.poll().await.unwrap();
    assert_eq!(
        events,
        vec![ChainEvent::Retracted {
            channel_id: id,
            from_block: deposited_in,
            block_number: deposited_in - 1,
            asset: ETH,
            held: U256::ZERO,
            turn_num_record: U48::ZERO,
            finalizes_at: 0,
        }]
    );
    assert_eq!(watcher.reorgs(), 1);

    // The new branch is reported as usual.
    service.deposit(id, ETH, U256::ZERO, milli(7)).await.unwrap();
    let events = loop_poll(&mut watcher, |e| matches!(e, ChainEvent::Deposited { .. })).await;
    assert!(matches!(events[..], [ChainEvent::Deposited { now_held, .. }] if now_held == milli(7)), "{events:?}");
}

#[tokio::test]
async fn a_reorg_shallower_than_the_depth_is_never_reported() {
    let chain = Chain::start().await;
    let id = channel(chain.contracts.consensus_app, 2);
    let service = chain.service(1).await;
    let mut watcher = watcher_at_depth(&service, chain.block_number().await, id, 2);
    service.deposit(id, ETH, U256::ZERO, milli(5)).await.unwrap();
    assert!(watcher.poll().await.unwrap().is_empty(), "one block deep is not final at depth 2");
    chain.anvil.reorg(1).await.unwrap();
    chain.anvil.mine().await.unwrap();
    assert!(watcher.poll().await.unwrap().is_empty(), "the reorged deposit never shows");
    assert_eq!(watcher.reorgs(), 0, "nothing reported, nothing to retract");
    service.deposit(id, ETH, U256::ZERO, milli(7)).await.unwrap();
    chain.anvil.mine().await.unwrap();
    let events = loop_poll(&mut watcher, |e| matches!(e, ChainEvent::Deposited { .. })).await;
    assert!(matches!(events[..], [ChainEvent::Deposited { now_held, .. }] if now_held == milli(7)), "{events:?}");
}

#[tokio::test]
async fn a_revert_to_a_snapshot_retracts_the_second_deposit_with_the_first_still_held() {
    let chain = Chain::start().await;
    let id = channel(chain.contracts.consensus_app, 3);
    let (leader, follower) = (chain.service(1).await, chain.service(2).await);
    let mut watcher = watcher_at_depth(&leader, chain.block_number().await, id, 1);
    leader.deposit(id, ETH, U256::ZERO, milli(5)).await.unwrap();
    let snapshot = chain.anvil.snapshot().await.unwrap();
    follower.deposit(id, ETH, milli(5), milli(7)).await.unwrap();
    let events =
        loop_poll(&mut watcher, |e| matches!(e, ChainEvent::Deposited { now_held, .. } if *now_held == milli(12)))
            .await;
    let second_in = events.last().unwrap().block_number();

    // The chain goes back to the snapshot, and a longer branch grows without the second deposit.
    assert!(chain.anvil.revert(&snapshot).await.unwrap());
    chain.anvil.mine().await.unwrap();
    chain.anvil.mine().await.unwrap();
    let events = watcher.poll().await.unwrap();
    assert!(
        matches!(events[..], [ChainEvent::Retracted { from_block, held, .. }] if from_block == second_in && held == milli(5)),
        "{events:?}"
    );
    // The follower deposits again, on the new branch: reported once.
    follower.deposit(id, ETH, milli(5), milli(7)).await.unwrap();
    let events = loop_poll(&mut watcher, |e| matches!(e, ChainEvent::Deposited { .. })).await;
    assert!(matches!(events[..], [ChainEvent::Deposited { now_held, .. }] if now_held == milli(12)), "{events:?}");
    assert_eq!(chain.holdings(id).await, milli(12));
}

#[tokio::test]
async fn a_receipt_counts_only_if_still_canonical_at_the_depth_and_a_transaction_taken_out_lands_once() {
    let chain = Chain::start().await;
    let config = ChainConfig { confirmations: 3, ..ChainConfig::default() };
    let client = EthClient::connect(&chain.anvil.endpoint(), &key(4), config).await.unwrap();
    let before = chain.nonce(4).await;
    let to = Address::repeat_byte(0x44);
    let direct = chain.service(0).await;
    let paid_before = direct.client().balance(to).await.unwrap();
    let sending = tokio::spawn(async move { client.transact("transfer", to, Bytes::new(), U256::from(1)).await });
    until("the transfer to be mined", || async { (chain.nonce(4).await == before + 1).then_some(()) }).await;
    let mined_in = chain.block_number().await;
    chain.anvil.reorg(1).await.unwrap(); // taken out, and out of the pool
    assert_eq!(chain.nonce(4).await, before, "the reorg took it back");
    // Blocks keep coming; the client notices at depth, sends the same bytes again, and counts
    // the new receipt only once it is 3 deep.
    until("the transfer to be confirmed", || async {
        if sending.is_finished() {
            return Some(());
        }
        chain.anvil.mine().await.unwrap();
        None
    })
    .await;
    let receipt = sending.await.unwrap().unwrap();
    assert!(receipt.block_number > mined_in, "confirmed in the new branch, not the block taken back");
    let head = chain.block_number().await;
    assert!(head >= receipt.block_number + 2, "3 deep");
    let canonical = direct.client().block_hash(receipt.block_number).await.unwrap();
    let on_chain = direct.client().provider().get_transaction_receipt(receipt.tx_hash).await.unwrap().unwrap();
    assert_eq!(on_chain.block_hash, canonical);
    assert_eq!(chain.nonce(4).await, before + 1, "one transaction");
    assert_eq!(direct.client().balance(to).await.unwrap() - paid_before, U256::from(1), "paid once");
}

/// Polls every 50 ms until one of the events seen matches `wanted`; returns those seen.
async fn loop_poll(watcher: &mut EventWatcher, wanted: impl Fn(&ChainEvent) -> bool) -> Vec<ChainEvent> {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        seen.extend(watcher.poll().await.unwrap());
        if seen.iter().any(&wanted) {
            return seen;
        }
        assert!(std::time::Instant::now() < deadline, "event not seen; saw {seen:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_node_lagging_behind_the_last_scanned_block_retracts_nothing() {
    let chain = Chain::start().await;
    let id = channel(chain.contracts.consensus_app, 4);
    let service = chain.service(1).await;
    let proxy = nitro_chain::proxy::RpcProxy::start(chain.anvil.port()).await.unwrap();
    let watched = chain.service_at(&proxy.url(), 1, ChainConfig::default()).await;
    let mut watcher = watcher_at_depth(&watched, chain.block_number().await, id, 1);
    service.deposit(id, ETH, U256::ZERO, milli(5)).await.unwrap();
    loop_poll(&mut watcher, |e| matches!(e, ChainEvent::Deposited { .. })).await;
    // A backend three blocks behind answers: it does not have the last block scanned.
    let head = chain.block_number().await;
    proxy.set_rule(move |call| match call.method {
        "eth_blockNumber" => nitro_chain::proxy::Fault::Answer(serde_json::json!(format!("{:#x}", head - 3))),
        "eth_getBlockByNumber" => nitro_chain::proxy::Fault::Answer(serde_json::Value::Null),
        _ => nitro_chain::proxy::Fault::Forward,
    });
    for _ in 0..3 {
        assert!(watcher.poll().await.unwrap().is_empty());
    }
    proxy.clear_rule();
    assert!(watcher.poll().await.unwrap().is_empty());
    assert_eq!(watcher.reorgs(), 0, "a lag is not a reorg");
}
