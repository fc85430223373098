//! A batched ledger state on the real `NitroAdjudicator` (anvil): the `ConsensusApp` supports
//! it like any other state, it can be checkpointed, and once the ledger finalizes each
//! guarantee it holds is redeemed on its own (ADR-0018).

use alloy_primitives::{Address, B256, U256};
use nitro_chain::{dev_key, Anvil, Artifacts, ChainConfig, ChainService, Contracts, EthChainService, EthClient};
use nitro_core::{
    chain::ChainTransaction, destination_of, Allocation, Balance, Exit, FixedPart, FollowerChannel, Guarantee,
    LeaderChannel, LedgerMessage, LedgerOutcome, Proposal, SignedState, SigningKey, SingleAssetExit, State, U48,
};

const CHALLENGE_DURATION: u64 = 600;

fn wei(n: u64) -> U256 {
    U256::from(n)
}

/// V's state at `turn` (Alice pays Bob through the hub; V holds `deposit` of Alice's).
fn virtual_state(contracts: &Contracts, keys: &[SigningKey; 3], nonce: u64, deposit: u64, paid: u64) -> State {
    State {
        participants: keys.iter().map(SigningKey::address).collect(),
        channel_nonce: nonce,
        app_definition: contracts.virtual_payment_app,
        challenge_duration: U48::from(CHALLENGE_DURATION),
        outcome: Exit(vec![SingleAssetExit {
            asset: Address::ZERO,
            asset_metadata: Default::default(),
            allocations: vec![
                Allocation::simple(destination_of(keys[0].address()), wei(deposit - paid)),
                Allocation::simple(destination_of(keys[2].address()), wei(paid)),
            ],
        }]),
        app_data: Default::default(),
        turn_num: U48::from(3),
        is_final: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_state_is_checkpointed_and_each_of_its_guarantees_redeems_alone() {
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
    let deployer = EthClient::connect(&anvil.endpoint(), &dev_key(0).unwrap(), ChainConfig::default()).await.unwrap();
    let contracts = Contracts::deploy(&deployer, &artifacts).await.unwrap();
    let chain = EthChainService::new(deployer, contracts.adjudicator);
    let (hub, alice, bob) = (dev_key(1).unwrap(), dev_key(2).unwrap(), dev_key(3).unwrap());

    // L(hub, alice), 1000 each, funded on chain.
    let ledger_fixed = FixedPart {
        participants: vec![hub.address(), alice.address()],
        channel_nonce: 9,
        app_definition: contracts.consensus_app,
        challenge_duration: U48::from(CHALLENGE_DURATION),
    };
    let (h, a) = (destination_of(hub.address()), destination_of(alice.address()));
    let start = LedgerOutcome::new(
        Address::ZERO,
        Balance { destination: h, amount: wei(1000) },
        Balance { destination: a, amount: wei(1000) },
    )
    .unwrap();
    let mut postfund = SignedState::new(start.to_state(&ledger_fixed, U48::from(1)));
    postfund.sign(&hub).unwrap();
    postfund.sign(&alice).unwrap();
    let ledger = postfund.channel_id();
    chain
        .submit(&ChainTransaction::Deposit {
            channel_id: ledger,
            asset: Address::ZERO,
            expected_held: U256::ZERO,
            amount: wei(2000),
        })
        .await
        .unwrap();

    // Three virtual channels' guarantees (10 of Alice's each) in one state: one signature,
    // one countersignature.
    let keys = [alice.clone(), hub.clone(), bob.clone()];
    let targets: Vec<B256> = (0..3).map(|k| virtual_state(&contracts, &keys, 100 + k, 10, 0).channel_id()).collect();
    let batch: Vec<Proposal> = targets
        .iter()
        .map(|t| Proposal::Add {
            guarantee: Guarantee::new(*t, wei(10), a, h).unwrap(),
            left_deposit: wei(10),
            asset: nitro_core::Address::ZERO,
        })
        .collect();
    let mut leader = LeaderChannel::new(hub.clone(), &postfund).unwrap();
    let mut follower = FollowerChannel::new(alice.clone(), &postfund).unwrap();
    let step = leader.propose_batch(batch).unwrap();
    let [LedgerMessage::Proposal(proposal)] = step.messages.as_slice() else { panic!("one proposal: {step:?}") };
    assert_eq!(proposal.proposals.len(), 3);
    let received = follower.receive_proposal(proposal).unwrap();
    assert!(received.messages.is_empty(), "nothing to send before deciding");
    let step = follower.countersign_all().unwrap();
    let [countersignature] = step.messages.as_slice() else { panic!("one countersignature") };
    let _ = leader.receive(countersignature).unwrap();
    let batched = leader.consensus_state();
    assert_eq!(batched, follower.consensus_state());
    assert_eq!(batched.state().turn_num, U48::from(2));

    // The ConsensusApp supports it; it checkpoints.
    let (supported, why) = chain.state_is_supported(&batched).await.unwrap();
    assert!(supported, "{why}");
    chain.submit(&ChainTransaction::checkpoint(batched.clone()).unwrap()).await.unwrap();
    assert_eq!(chain.unpack_status(ledger).await.unwrap().turn_num_record, U48::from(2));

    // V2 closes with Bob paid 4: its final state, signed by all three, concludes on chain.
    let mut v_final = SignedState::new(virtual_state(&contracts, &keys, 101, 10, 4));
    for k in &keys {
        v_final.sign(k).unwrap();
    }
    assert_eq!(v_final.channel_id(), targets[1]);
    chain.submit(&ChainTransaction::conclude(v_final.clone()).unwrap()).await.unwrap();

    // The ledger goes to chain with the batched state and finalizes.
    chain.submit(&ChainTransaction::challenge(batched.clone(), &alice).unwrap()).await.unwrap();
    anvil.advance_time(CHALLENGE_DURATION + 1).await.unwrap();

    // V2's guarantee alone: reclaim moves V2's split into the ledger's balances.
    let outcome = LedgerOutcome::from_exit(&batched.state().outcome).unwrap();
    let index = 2 + outcome.guarantees().position(|g| g.target() == targets[1]).unwrap();
    chain
        .submit(&ChainTransaction::Reclaim {
            source_channel_id: ledger,
            source_state_hash: batched.hash(),
            source_outcome: batched.state().outcome.clone(),
            source_asset_index: 0,
            index_of_target_in_source: index,
            target_state_hash: B256::ZERO, // V2 was concluded
            target_outcome: v_final.state().outcome.clone(),
            target_asset_index: 0,
        })
        .await
        .unwrap();
    let mut reclaimed = outcome.clone();
    reclaimed.apply(&Proposal::Remove { target: targets[1], left_amount: wei(6) }).unwrap();
    assert_eq!(reclaimed.follower().amount, wei(1000 - 30 + 6));
    assert_eq!(reclaimed.leader().amount, wei(1000 + 4));

    // The two balances pay out as the reclaimed outcome says; the other two guarantees stay
    // in the ledger, untouched by V2's redemption, each for its own channel's conclusion.
    let before =
        (chain.client().balance(hub.address()).await.unwrap(), chain.client().balance(alice.address()).await.unwrap());
    chain
        .submit(&ChainTransaction::Transfer {
            channel_id: ledger,
            asset_index: 0,
            outcome: reclaimed.to_exit(),
            state_hash: batched.hash(),
            indices: vec![0, 1],
        })
        .await
        .unwrap();
    assert_eq!(chain.holdings(Address::ZERO, ledger).await.unwrap(), wei(20));
    let after =
        (chain.client().balance(hub.address()).await.unwrap(), chain.client().balance(alice.address()).await.unwrap());
    assert_eq!(after.0 - before.0, wei(1004));
    assert_eq!(after.1 - before.1, wei(976));
}
