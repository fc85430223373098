//! The chain shell against the real `NitroAdjudicator` on a real anvil node.
//!
//! Every test starts its own anvil (`node_modules/.bin/anvil`, installed by `npm ci` at the
//! repository root) and deploys the contracts from the npm artifacts; without them the tests
//! fail with a message saying to run `npm ci`. A node that misbehaves: `flaky_node.rs`;
//! reorgs: `reorgs.rs`; the transaction manager: `manager.rs`.

use std::time::{Duration, Instant};

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
