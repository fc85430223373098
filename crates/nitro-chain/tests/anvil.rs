//! The chain shell against the real `NitroAdjudicator` on a real anvil node.
//!
//! Every test starts its own anvil (`node_modules/.bin/anvil`, installed by `npm ci` at the
//! repository root) and deploys the contracts from the npm artifacts; without them the tests
//! fail with a message saying to run `npm ci`.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::providers::Provider;
use alloy_primitives::{aliases::U48, Address, Bytes, B256, U256};
use nitro_chain::{
    bindings, dev_key, Anvil, Artifacts, ChainConfig, ChainError, ChainService, Contracts, EthChainService, EthClient,
    EventWatcher,
};
use nitro_core::{
    chain::{ChainEvent, ChainTransaction, ChainTransactionError, ChannelMode},
    destination_of, Allocation, AllocationType, AssetMetadata, Exit, GuaranteeMetadata, SignedState, SigningKey,
    SingleAssetExit, State,
};
use tokio::{
    io::{copy_bidirectional, AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        tcp::{OwnedReadHalf, OwnedWriteHalf},
        TcpListener, TcpStream,
    },
    sync::watch,
};

const ETH: Address = Address::ZERO;
const CHALLENGE_DURATION: u64 = 60;

fn eth(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

fn key(i: usize) -> SigningKey {
    dev_key(i).unwrap()
}

/// A fresh anvil with the contracts deployed, and a chain service per account.
struct Chain {
    anvil: Anvil,
    contracts: Contracts,
}

impl Chain {
    async fn start() -> Self {
        let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
        let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
        let deployer = EthClient::connect(&anvil.endpoint(), &key(0), ChainConfig::default()).await.unwrap();
        let contracts = Contracts::deploy(&deployer, &artifacts).await.unwrap();
        Self { anvil, contracts }
    }

    async fn service(&self, account: usize) -> EthChainService {
        let client = EthClient::connect(&self.anvil.endpoint(), &key(account), ChainConfig::default()).await.unwrap();
        EthChainService::new(client, self.contracts.adjudicator)
    }
}

/// Leader = anvil account 1, follower = account 2.
fn leader() -> SigningKey {
    key(1)
}
fn follower() -> SigningKey {
    key(2)
}

/// A ledger state: `[leader, follower, guarantees ascending by target]`, one ETH exit.
fn ledger_state(
    app: Address,
    nonce: u64,
    turn: u64,
    is_final: bool,
    leader_amount: U256,
    follower_amount: U256,
    guarantees: &[(B256, U256)],
) -> State {
    let (l, f) = (destination_of(leader().address()), destination_of(follower().address()));
    let mut allocations = vec![Allocation::simple(l, leader_amount), Allocation::simple(f, follower_amount)];
    let mut sorted = guarantees.to_vec();
    sorted.sort();
    for (target, amount) in sorted {
        allocations.push(Allocation {
            destination: target,
            amount,
            allocation_type: AllocationType::GUARANTEE,
            metadata: GuaranteeMetadata { left: l, right: f }.encode(),
        });
    }
    State {
        participants: vec![leader().address(), follower().address()],
        channel_nonce: nonce,
        app_definition: app,
        challenge_duration: U48::from(CHALLENGE_DURATION),
        outcome: Exit(vec![SingleAssetExit { asset: ETH, asset_metadata: AssetMetadata::default(), allocations }]),
        app_data: Bytes::new(),
        turn_num: U48::from(turn),
        is_final,
    }
}

fn sign(state: State, keys: &[SigningKey]) -> SignedState {
    let mut signed = SignedState::new(state);
    for k in keys {
        signed.sign(k).unwrap();
    }
    signed
}

fn fully_signed(state: State) -> SignedState {
    sign(state, &[leader(), follower()])
}

/// Both parties fund the channel in order: the follower waits for the leader's deposit.
async fn fund(chain: &Chain, channel_id: B256, leader_amount: U256, follower_amount: U256) {
    let (l, f) = (chain.service(1).await, chain.service(2).await);
    let follower_deposit =
        tokio::spawn(async move { f.deposit(channel_id, ETH, leader_amount, follower_amount).await });
    l.deposit(channel_id, ETH, U256::ZERO, leader_amount).await.unwrap();
    follower_deposit.await.unwrap().unwrap();
}

/// Polls until the watcher has delivered an event matching `wanted`, returning all events seen.
async fn events_until(watcher: &mut EventWatcher, wanted: impl Fn(&ChainEvent) -> bool) -> Vec<ChainEvent> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        seen.extend(watcher.poll().await.unwrap());
        if seen.iter().any(&wanted) {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("event not seen; saw {seen:?}");
}

#[test]
fn artifact_abi_has_every_declared_selector_and_topic() {
    let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
    let adjudicator = artifacts.adjudicator().unwrap();
    bindings::verify_against_abi(&adjudicator.abi).unwrap();
    for name in ["ConsensusApp", "VirtualPaymentApp"] {
        let artifact = artifacts.load(name).unwrap();
        assert!(artifact.abi.functions().any(|f| f.name == "stateIsSupported"), "{name}");
        assert!(!artifact.bytecode.is_empty());
    }
    // The check has teeth: without `checkpoint`, the ABI no longer matches.
    let mut abi = adjudicator.abi.clone();
    abi.functions.remove("checkpoint");
    assert!(matches!(bindings::verify_against_abi(&abi), Err(bindings::AbiMismatch::Function(_))));
    let mut abi = adjudicator.abi.clone();
    abi.events.remove("ChallengeCleared");
    assert!(matches!(bindings::verify_against_abi(&abi), Err(bindings::AbiMismatch::Event(_))));
}

#[tokio::test]
async fn ledger_is_funded_checkpointed_and_paid_out() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    let (a, b) = (eth(5), eth(7));
    let prefund = fully_signed(ledger_state(app, 1, 0, false, a, b, &[]));
    let id = prefund.channel_id();
    let service = chain.service(3).await; // a third party submits, so balances move exactly
    let mut watcher = service.watcher(0).only_channels([id]);

    fund(&chain, id, a, b).await;
    assert_eq!(service.holdings(ETH, id).await.unwrap(), a + b);
    let events =
        events_until(&mut watcher, |e| matches!(e, ChainEvent::Deposited { now_held, .. } if *now_held == a + b)).await;
    assert_eq!(events.iter().filter(|e| matches!(e, ChainEvent::Deposited { .. })).count(), 2);

    // A ledger state with guarantees (allocation type 2) is supported and checkpoints.
    let (v1, v2) = (B256::repeat_byte(0x11), B256::repeat_byte(0x22));
    let with_guarantees = fully_signed(ledger_state(app, 1, 5, false, eth(4), eth(5), &[(v2, eth(2)), (v1, eth(1))]));
    assert_eq!(service.state_is_supported(&with_guarantees).await.unwrap(), (true, String::new()));
    service.submit(&ChainTransaction::checkpoint(with_guarantees.clone()).unwrap()).await.unwrap();
    let status = service.status_of(id).await.unwrap();
    assert_eq!(status.turn_num_record, U48::from(5));
    assert_eq!(status.mode(service.chain_time().await.unwrap()), ChannelMode::Open);
    assert_eq!(service.unpack_status(id).await.unwrap(), status);
    events_until(
        &mut watcher,
        |e| matches!(e, ChainEvent::Checkpointed { new_turn_num_record, .. } if *new_turn_num_record == U48::from(5)),
    )
    .await;

    // A state signed by the leader only: refused before sending, and by the contract.
    let half = sign(ledger_state(app, 1, 6, false, eth(4), eth(8), &[]), &[leader()]);
    assert!(matches!(
        ChainTransaction::checkpoint(half.clone()),
        Err(ChainTransactionError::NotFullySigned { ref missing, .. }) if *missing == vec![1]
    ));
    let unchecked = ChainTransaction::Checkpoint { state: half.clone() };
    assert!(matches!(service.submit(&unchecked).await, Err(ChainError::Invalid(_))));
    let (supported, reason) = service.state_is_supported(&half).await.unwrap();
    assert!(!supported && reason == "!unanimous", "{reason}");
    let sent_anyway = service
        .client()
        .transact("checkpoint", chain.contracts.adjudicator, bindings::calldata(&unchecked).into(), U256::ZERO)
        .await;
    match sent_anyway {
        Err(ChainError::Reverted { reason: Some(reason), .. }) => assert_eq!(reason, "!unanimous"),
        other => panic!("expected a revert, got {other:?}"),
    }

    // Defund: a final state signed by both, concluded and paid out in one transaction.
    let final_state = fully_signed(ledger_state(app, 1, 6, true, eth(3), eth(9), &[]));
    let before = (
        service.client().balance(leader().address()).await.unwrap(),
        service.client().balance(follower().address()).await.unwrap(),
    );
    service.submit(&ChainTransaction::conclude_and_transfer_all_assets(final_state).unwrap()).await.unwrap();
    let after = (
        service.client().balance(leader().address()).await.unwrap(),
        service.client().balance(follower().address()).await.unwrap(),
    );
    assert_eq!(after.0 - before.0, eth(3));
    assert_eq!(after.1 - before.1, eth(9));
    assert_eq!(service.holdings(ETH, id).await.unwrap(), U256::ZERO);
    let events = events_until(&mut watcher, |e| matches!(e, ChainEvent::AllocationUpdated { .. })).await;
    assert!(events.iter().any(|e| matches!(e, ChainEvent::Concluded { .. })));
    assert!(events
        .iter()
        .any(|e| matches!(e, ChainEvent::AllocationUpdated { final_holdings, .. } if final_holdings.is_zero())));
    assert_eq!(watcher.undecodable_logs(), 0);
}

#[tokio::test]
async fn a_stale_challenge_is_cleared_by_a_newer_checkpoint() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    let old = fully_signed(ledger_state(app, 2, 2, false, eth(1), eth(1), &[]));
    let id = old.channel_id();
    fund(&chain, id, eth(1), eth(1)).await;
    let follower_service = chain.service(2).await;
    let mut watcher = follower_service.watcher(0).only_channels([id]);

    // The leader challenges with turn 2 ...
    let leader_service = chain.service(1).await;
    leader_service.submit(&ChainTransaction::challenge(old, &leader()).unwrap()).await.unwrap();
    let now = leader_service.chain_time().await.unwrap();
    let events = events_until(&mut watcher, |e| matches!(e, ChainEvent::ChallengeRegistered { .. })).await;
    let challenge = events.iter().find(|e| matches!(e, ChainEvent::ChallengeRegistered { .. })).unwrap();
    let ChainEvent::ChallengeRegistered { finalizes_at, candidate, proof, .. } = challenge else { unreachable!() };
    assert_eq!(*finalizes_at, now + CHALLENGE_DURATION);
    assert_eq!(candidate.turn_num(), U48::from(2));
    assert!(proof.is_empty());
    // ... the follower, who holds turn 3, sees it is stale ...
    assert_eq!(challenge.challenge_is_stale(U48::from(3)), Some(true));
    let status = follower_service.status_of(id).await.unwrap();
    assert_eq!((status.turn_num_record, status.finalizes_at), (U48::from(2), now + CHALLENGE_DURATION));
    assert_eq!(status.mode(now), ChannelMode::Challenge);

    // ... and clears it with its newer state.
    let newer = fully_signed(ledger_state(app, 2, 3, false, eth(2), eth(0), &[]));
    follower_service.submit(&ChainTransaction::checkpoint(newer).unwrap()).await.unwrap();
    events_until(&mut watcher, |e| matches!(e, ChainEvent::ChallengeCleared { new_turn_num_record, .. } if *new_turn_num_record == U48::from(3))).await;
    let status = follower_service.status_of(id).await.unwrap();
    assert_eq!((status.turn_num_record, status.finalizes_at), (U48::from(3), 0));
    assert_eq!(status.mode(now + CHALLENGE_DURATION + 1), ChannelMode::Open);
}

#[tokio::test]
async fn a_guarantee_is_reclaimed_and_paid_out_after_challenges_finalize() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    let service = chain.service(3).await;

    // The target channel V: allocations 0 and 1 are what the guarantee's left and right get.
    let target = fully_signed(ledger_state(app, 99, 4, false, eth(1), eth(2), &[]));
    let ledger = fully_signed(ledger_state(app, 3, 2, false, eth(4), eth(5), &[(target.channel_id(), eth(3))]));
    let id = ledger.channel_id();
    fund(&chain, id, eth(6), eth(6)).await;

    // Both are challenged and time out.
    service.submit(&ChainTransaction::challenge(ledger.clone(), &leader()).unwrap()).await.unwrap();
    service.submit(&ChainTransaction::challenge(target.clone(), &follower()).unwrap()).await.unwrap();
    chain.anvil.advance_time(CHALLENGE_DURATION + 1).await.unwrap();
    let now = service.chain_time().await.unwrap();
    assert_eq!(service.status_of(id).await.unwrap().mode(now), ChannelMode::Finalized);
    let status = service.status_of(id).await.unwrap();
    assert!(status.is_registered(ledger.hash(), &ledger.state().outcome));

    // The guarantee cannot be transferred; it is reclaimed into left and right.
    let transfer_guarantee = ChainTransaction::Transfer {
        channel_id: id,
        asset_index: 0,
        outcome: ledger.state().outcome.clone(),
        state_hash: ledger.hash(),
        indices: vec![],
    };
    assert!(matches!(service.submit(&transfer_guarantee).await, Err(ChainError::Invalid(_))));
    let mut watcher = service.watcher(0).only_channels([id]);
    service
        .submit(&ChainTransaction::Reclaim {
            source_channel_id: id,
            source_state_hash: ledger.hash(),
            source_outcome: ledger.state().outcome.clone(),
            source_asset_index: 0,
            index_of_target_in_source: 2,
            target_state_hash: target.hash(),
            target_outcome: target.state().outcome.clone(),
            target_asset_index: 0,
        })
        .await
        .unwrap();
    events_until(&mut watcher, |e| matches!(e, ChainEvent::Reclaimed { .. })).await;
    let reclaimed = ledger_state(app, 3, 2, false, eth(5), eth(7), &[]).outcome;
    assert!(service.status_of(id).await.unwrap().is_registered(ledger.hash(), &reclaimed));

    // Now the ledger pays out exactly its balances.
    let before = (
        service.client().balance(leader().address()).await.unwrap(),
        service.client().balance(follower().address()).await.unwrap(),
    );
    service
        .submit(&ChainTransaction::Transfer {
            channel_id: id,
            asset_index: 0,
            outcome: reclaimed,
            state_hash: ledger.hash(),
            indices: vec![],
        })
        .await
        .unwrap();
    assert_eq!(service.client().balance(leader().address()).await.unwrap() - before.0, eth(5));
    assert_eq!(service.client().balance(follower().address()).await.unwrap() - before.1, eth(7));
    assert_eq!(service.holdings(ETH, id).await.unwrap(), U256::ZERO);
    events_until(&mut watcher, |e| matches!(e, ChainEvent::AllocationUpdated { .. })).await;
}

#[tokio::test]
async fn deposits_with_wrong_expected_holdings_are_typed_errors() {
    let chain = Chain::start().await;
    let id = fully_signed(ledger_state(chain.contracts.consensus_app, 4, 0, false, eth(1), eth(1), &[])).channel_id();
    let service = chain.service(1).await;

    // Expecting more than is held: submit refuses at once ...
    let early = ChainTransaction::Deposit { channel_id: id, asset: ETH, expected_held: eth(1), amount: eth(1) };
    match service.submit(&early).await {
        Err(ChainError::UnexpectedHoldings { expected, actual, .. }) => {
            assert_eq!((expected, actual), (eth(1), U256::ZERO))
        }
        other => panic!("{other:?}"),
    }
    // ... and the contract itself reverts, with its reason decoded.
    let sent_anyway = service
        .client()
        .transact("deposit", chain.contracts.adjudicator, bindings::calldata(&early).into(), eth(1))
        .await;
    match sent_anyway {
        Err(ChainError::Reverted { reason: Some(reason), function, .. }) => {
            assert_eq!((function, reason.as_str()), ("deposit", "held != expectedHeld"))
        }
        other => panic!("{other:?}"),
    }
    // Waiting for holdings that never come times out.
    let impatient = EthChainService::new(
        EthClient::connect(
            &chain.anvil.endpoint(),
            &key(1),
            ChainConfig { deposit_timeout: Duration::from_millis(300), ..ChainConfig::default() },
        )
        .await
        .unwrap(),
        chain.contracts.adjudicator,
    );
    assert!(matches!(impatient.deposit(id, ETH, eth(1), eth(1)).await, Err(ChainError::Timeout { .. })));

    // Expecting less than is held: refused at once.
    service.deposit(id, ETH, U256::ZERO, eth(1)).await.unwrap();
    assert!(matches!(
        service.deposit(id, ETH, U256::ZERO, eth(1)).await,
        Err(ChainError::UnexpectedHoldings { actual, .. }) if actual == eth(1)
    ));
    // Depositing into an external address is refused before sending.
    let to_address = ChainTransaction::Deposit {
        channel_id: destination_of(leader().address()),
        asset: ETH,
        expected_held: U256::ZERO,
        amount: eth(1),
    };
    assert!(matches!(service.submit(&to_address).await, Err(ChainError::Invalid(_))));
    assert_eq!(service.holdings(ETH, id).await.unwrap(), eth(1));
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

/// What [`RpcProxy`] does with one JSON-RPC request.
enum Action {
    /// Pass it to anvil and its answer back.
    Forward,
    /// Pass it to anvil, then close the connection instead of answering (a lost answer).
    LoseAnswer,
    /// Answer with this result without asking anvil.
    Answer(serde_json::Value),
    /// Answer with this JSON-RPC error without asking anvil.
    Fail(&'static str),
}

type Rule = Arc<dyn Fn(&str, &serde_json::Value) -> Action + Send + Sync>;

/// An HTTP JSON-RPC proxy in front of anvil that decides, per request (method, params), what
/// the client gets: a node behind a flaky network or a load balancer whose backends disagree.
struct RpcProxy {
    port: u16,
}

impl RpcProxy {
    async fn start(upstream: u16, rule: impl Fn(&str, &serde_json::Value) -> Action + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let rule: Rule = Arc::new(rule);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                tokio::spawn(Self::serve(inbound, upstream, rule.clone()));
            }
        });
        Self { port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn serve(inbound: TcpStream, upstream: u16, rule: Rule) {
        let (read, mut write) = inbound.into_split();
        let mut read = BufReader::new(read);
        let mut anvil: Option<(BufReader<OwnedReadHalf>, OwnedWriteHalf)> = None;
        while let Some((head, body)) = read_http(&mut read).await {
            let request: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let method = request["method"].as_str().unwrap_or_default();
            let answer = |payload: serde_json::Value| {
                let mut object = serde_json::json!({ "jsonrpc": "2.0", "id": request["id"] });
                object.as_object_mut().unwrap().extend(payload.as_object().unwrap().clone());
                let body = object.to_string();
                format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                )
                .into_bytes()
            };
            let response = match rule(method, &request["params"]) {
                Action::Answer(result) => answer(serde_json::json!({ "result": result })),
                Action::Fail(message) => answer(serde_json::json!({ "error": { "code": -32000, "message": message } })),
                action @ (Action::Forward | Action::LoseAnswer) => {
                    if anvil.is_none() {
                        let (r, w) = TcpStream::connect(("127.0.0.1", upstream)).await.unwrap().into_split();
                        anvil = Some((BufReader::new(r), w));
                    }
                    let (anvil_read, anvil_write) = anvil.as_mut().unwrap();
                    anvil_write.write_all(head.as_bytes()).await.unwrap();
                    anvil_write.write_all(&body).await.unwrap();
                    let (head, body) = read_http(anvil_read).await.expect("anvil answers");
                    if matches!(action, Action::LoseAnswer) {
                        return; // the request took effect; the answer never arrives
                    }
                    [head.into_bytes(), body].concat()
                }
            };
            if write.write_all(&response).await.is_err() {
                return;
            }
        }
    }
}

/// One HTTP/1.1 message with a `content-length` body: (head with its blank line, body).
async fn read_http(reader: &mut (impl AsyncBufRead + Unpin)) -> Option<(String, Vec<u8>)> {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" {
            break;
        }
    }
    let length = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .map(|(_, value)| value.trim().parse::<usize>().unwrap())
        .expect("a content-length");
    let mut body = vec![0; length];
    reader.read_exact(&mut body).await.ok()?;
    Some((head, body))
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
    let proxy = RpcProxy::start(chain.anvil.port(), move |method, _| {
        if method == "eth_sendRawTransaction" && !once.swap(true, std::sync::atomic::Ordering::SeqCst) {
            Action::LoseAnswer
        } else {
            Action::Forward
        }
    })
    .await;
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
    let proxy = RpcProxy::start(chain.anvil.port(), move |method, _| {
        if method == "eth_getTransactionReceipt" && count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 10 {
            Action::Answer(serde_json::Value::Null)
        } else {
            Action::Forward
        }
    })
    .await;
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
    let no_receipts = RpcProxy::start(chain.anvil.port(), |method, _| match method {
        "eth_getTransactionReceipt" => Action::Answer(serde_json::Value::Null),
        _ => Action::Forward,
    })
    .await;
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
    let no_history = RpcProxy::start(chain.anvil.port(), |method, params| match method {
        "eth_getTransactionReceipt" => Action::Answer(serde_json::Value::Null),
        "eth_getTransactionCount" if params[1].as_str().is_some_and(|b| b.starts_with("0x")) => {
            Action::Fail("missing trie node")
        }
        _ => Action::Forward,
    })
    .await;
    let client = EthClient::connect(&no_history.url(), &key(5), config).await.unwrap();
    let before = nonce_of(&chain, 5).await;
    assert!(matches!(transfer(&client).await, Err(ChainError::Dropped { replaced_by: None, .. })));
    assert_eq!(nonce_of(&chain, 5).await, before + 1, "it was sent");
}

#[tokio::test]
async fn after_conclude_the_fingerprint_has_a_zero_state_hash_and_transfers_pay_by_index() {
    let chain = Chain::start().await;
    let app = chain.contracts.consensus_app;
    let final_state = fully_signed(ledger_state(app, 7, 4, true, eth(2), eth(3), &[]));
    let id = final_state.channel_id();
    fund(&chain, id, eth(2), eth(3)).await;
    let service = chain.service(3).await;
    service.submit(&ChainTransaction::conclude(final_state.clone()).unwrap()).await.unwrap();
    let status = service.status_of(id).await.unwrap();
    let outcome = final_state.state().outcome.clone();
    assert!(status.is_registered(B256::ZERO, &outcome));
    assert!(!status.is_registered(final_state.hash(), &outcome));
    assert_eq!(status.turn_num_record, U48::ZERO);
    assert_eq!(status.mode(service.chain_time().await.unwrap()), ChannelMode::Finalized);

    // Pay the follower only; the leader's allocation stays, and the fingerprint follows.
    let before = service.client().balance(follower().address()).await.unwrap();
    let transfer = |outcome: Exit, indices: Vec<usize>| ChainTransaction::Transfer {
        channel_id: id,
        asset_index: 0,
        outcome,
        state_hash: B256::ZERO,
        indices,
    };
    service.submit(&transfer(outcome.clone(), vec![1])).await.unwrap();
    assert_eq!(service.client().balance(follower().address()).await.unwrap() - before, eth(3));
    assert_eq!(service.holdings(ETH, id).await.unwrap(), eth(2));
    let remaining = ledger_state(app, 7, 4, true, eth(2), U256::ZERO, &[]).outcome;
    assert!(service.status_of(id).await.unwrap().is_registered(B256::ZERO, &remaining));
    // The old outcome no longer matches the fingerprint.
    assert!(matches!(
        service.submit(&transfer(outcome, vec![0])).await,
        Err(ChainError::Reverted { reason: Some(ref r), .. }) if r == "incorrect fingerprint"
    ));
    service.submit(&transfer(remaining, vec![0])).await.unwrap();
    assert_eq!(service.holdings(ETH, id).await.unwrap(), U256::ZERO);
}
