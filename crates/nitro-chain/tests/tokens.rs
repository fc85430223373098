//! The test ERC-20 tokens (`nitro_chain::tokens`) on a real anvil: deployment, transfers, the
//! misbehaviour of `FalseToken` and `FeeToken`, and a token deposit into the real
//! `NitroAdjudicator`.
//!
//! Needs anvil and the npm artifacts (`npm ci`) and the compiled tokens (`scripts/setup.sh`);
//! without them the tests fail with a message naming the command to run.

use alloy_primitives::{keccak256, Address, Bytes, U256};
use alloy_sol_types::SolCall;
use nitro_chain::{
    approve_tokens, bindings, bindings::IERC20, deploy_token, dev_key, token_balance, transfer_tokens, Anvil,
    ArtifactError, Artifacts, ChainConfig, ChainError, ChainService, Contracts, EthChainService, EthClient, TestToken,
    TokenArtifacts,
};
use nitro_core::chain::ChainTransaction;

async fn client(anvil: &Anvil, account: usize) -> EthClient {
    EthClient::connect(&anvil.endpoint(), &dev_key(account).unwrap(), ChainConfig::default()).await.unwrap()
}

/// A fresh anvil, the owner (account 0) and `token` deployed with the owner holding the supply.
async fn deployed(token: TestToken) -> (Anvil, EthClient, Address) {
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let artifacts = TokenArtifacts::locate().unwrap_or_else(|e| panic!("{e}"));
    let owner = client(&anvil, 0).await;
    let artifact = artifacts.token(token).unwrap_or_else(|e| panic!("{e}"));
    let address = deploy_token(&owner, &artifact, owner.address()).await.unwrap();
    (anvil, owner, address)
}

fn account(i: usize) -> Address {
    Address::from_slice(&keccak256(format!("tokens test account {i}"))[12..])
}

#[tokio::test]
async fn every_token_deploys_with_the_supply_minted_to_its_owner() {
    for token in TestToken::ALL {
        let (anvil, owner, address) = deployed(token).await;
        let supply = token.initial_supply();
        assert_eq!(token_balance(&owner, address, owner.address()).await.unwrap(), supply, "{token:?}");
        let total = owner.call("totalSupply", address, IERC20::totalSupplyCall {}.abi_encode().into()).await.unwrap();
        assert_eq!(IERC20::totalSupplyCall::abi_decode_returns(&total).unwrap(), supply, "{token:?}");
        // A token minted to someone else: the constructor argument is the owner, not the sender.
        let other = account(9);
        let artifact = TokenArtifacts::locate().unwrap().token(token).unwrap();
        let minted_elsewhere = deploy_token(&owner, &artifact, other).await.unwrap();
        assert_eq!(token_balance(&owner, minted_elsewhere, other).await.unwrap(), supply, "{token:?}");
        assert_eq!(token_balance(&owner, minted_elsewhere, owner.address()).await.unwrap(), U256::ZERO);
        drop(anvil);
    }
}

#[tokio::test]
async fn token_transfers_move_exactly_the_amount() {
    let (_anvil, owner, token) = deployed(TestToken::Token).await;
    let to = account(1);
    let amount = U256::from(1_234_567u64);
    transfer_tokens(&owner, token, to, amount).await.unwrap();
    assert_eq!(token_balance(&owner, token, to).await.unwrap(), amount);
    let left = TestToken::Token.initial_supply() - amount;
    assert_eq!(token_balance(&owner, token, owner.address()).await.unwrap(), left);
}

#[tokio::test]
async fn false_token_transfer_returns_false_and_moves_nothing_while_transfer_from_works() {
    let (anvil, owner, token) = deployed(TestToken::FalseToken).await;
    let to = account(1);
    let amount = U256::from(1_000u64);
    let supply = TestToken::FalseToken.initial_supply();

    let input = Bytes::from(IERC20::transferCall { to, amount }.abi_encode());
    let answer = owner.call("transfer", token, input.clone()).await.unwrap();
    assert!(!IERC20::transferCall::abi_decode_returns(&answer).unwrap(), "transfer must answer false");
    // Mined, it succeeds (no revert) and moves nothing: the silent loss.
    owner.transact("transfer", token, input, U256::ZERO).await.unwrap();
    assert_eq!(token_balance(&owner, token, to).await.unwrap(), U256::ZERO);
    assert_eq!(token_balance(&owner, token, owner.address()).await.unwrap(), supply);
    // The helper checks the answer and sends nothing.
    match transfer_tokens(&owner, token, to, amount).await {
        Err(ChainError::TokenRefused { token: refused, function: "transfer" }) => assert_eq!(refused, token),
        other => panic!("expected TokenRefused, got {other:?}"),
    }

    let spender = client(&anvil, 1).await;
    approve_tokens(&owner, token, spender.address(), amount).await.unwrap();
    let pull = IERC20::transferFromCall { from: owner.address(), to, amount }.abi_encode();
    spender.transact("transferFrom", token, pull.into(), U256::ZERO).await.unwrap();
    assert_eq!(token_balance(&owner, token, to).await.unwrap(), amount);
    assert_eq!(token_balance(&owner, token, owner.address()).await.unwrap(), supply - amount);
}

#[tokio::test]
async fn fee_token_delivers_the_amount_less_one_percent() {
    let (anvil, owner, token) = deployed(TestToken::FeeToken).await;
    let supply = TestToken::FeeToken.initial_supply();
    let to = account(1);
    let amount = U256::from(10_000u64);
    transfer_tokens(&owner, token, to, amount).await.unwrap();
    assert_eq!(token_balance(&owner, token, to).await.unwrap(), U256::from(9_900u64));
    assert_eq!(token_balance(&owner, token, owner.address()).await.unwrap(), supply - amount);

    // transferFrom takes the fee too.
    let spender = client(&anvil, 1).await;
    approve_tokens(&owner, token, spender.address(), amount).await.unwrap();
    let pull = IERC20::transferFromCall { from: owner.address(), to, amount }.abi_encode();
    spender.transact("transferFrom", token, pull.into(), U256::ZERO).await.unwrap();
    assert_eq!(token_balance(&owner, token, to).await.unwrap(), U256::from(19_800u64));
    let total = owner.call("totalSupply", token, IERC20::totalSupplyCall {}.abi_encode().into()).await.unwrap();
    assert_eq!(IERC20::totalSupplyCall::abi_decode_returns(&total).unwrap(), supply - U256::from(200u64));
}

/// Deposits `amount` of `token` into a channel of a fresh adjudicator; returns what the
/// adjudicator credits the channel with and the tokens it actually holds.
async fn deposit_into_adjudicator(token: TestToken, amount: U256) -> (U256, U256) {
    let (anvil, owner, address) = deployed(token).await;
    let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
    let contracts = Contracts::deploy(&owner, &artifacts).await.unwrap();
    let channel_id = keccak256("tokens test channel");
    approve_tokens(&owner, address, contracts.adjudicator, amount).await.unwrap();
    let deposit = ChainTransaction::Deposit { channel_id, asset: address, expected_held: U256::ZERO, amount };
    owner.transact("deposit", contracts.adjudicator, bindings::calldata(&deposit).into(), U256::ZERO).await.unwrap();
    let service = EthChainService::new(client(&anvil, 0).await, contracts.adjudicator);
    let credited = service.holdings(address, channel_id).await.unwrap();
    let held = token_balance(&owner, address, contracts.adjudicator).await.unwrap();
    (credited, held)
}

#[tokio::test]
async fn the_adjudicator_takes_a_token_deposit() {
    let amount = U256::from(5_000u64);
    assert_eq!(deposit_into_adjudicator(TestToken::Token, amount).await, (amount, amount));
}

#[tokio::test]
async fn the_adjudicator_credits_a_fee_token_deposit_with_more_than_it_receives() {
    let amount = U256::from(5_000u64);
    assert_eq!(deposit_into_adjudicator(TestToken::FeeToken, amount).await, (amount, U256::from(4_950u64)));
}

#[test]
fn missing_token_artifacts_say_to_run_setup() {
    let dir = std::env::temp_dir().join("nitro-no-such-token-dir");
    match TokenArtifacts::at(&dir).load("Token") {
        Err(e @ ArtifactError::Read { .. }) => assert!(e.to_string().contains("scripts/setup.sh"), "{e}"),
        other => panic!("expected Read, got {other:?}"),
    }
    let not_built = ArtifactError::TokensNotBuilt { searched: vec![dir] };
    assert!(not_built.to_string().contains("scripts/setup.sh"), "{not_built}");
}

#[test]
fn the_built_artifacts_take_an_owner_and_need_no_links() {
    let artifacts = TokenArtifacts::locate().unwrap_or_else(|e| panic!("{e}"));
    for token in TestToken::ALL {
        let artifact = artifacts.token(token).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(artifact.name, token.name());
        let constructor = artifact.abi.constructor.as_ref().unwrap();
        assert_eq!(constructor.inputs.len(), 1);
        assert_eq!(constructor.inputs[0].ty, "address");
    }
}

/// The check before a token deposit (`EthChainService::check_token`, one `eth_simulateV1`,
/// nothing sent): `Token` passes; each token that would lose money in the adjudicator is
/// refused with what the check found; nothing moved on chain.
#[tokio::test]
async fn the_deposit_check_refuses_every_token_that_would_lose_money() {
    let cases = [
        (TestToken::Token, None),
        (
            TestToken::FeeToken,
            Some("takes a fee on transfer: a deposit of 5000 is credited in full but the adjudicator receives 4950"),
        ),
        (TestToken::FalseToken, Some("its transfer returns false")),
        (TestToken::NoReturnToken, Some("its transfer returns no value")),
    ];
    for (kind, refusal) in cases {
        let (anvil, owner, token) = deployed(kind).await;
        let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
        let contracts = Contracts::deploy(&owner, &artifacts).await.unwrap();
        let service = EthChainService::new(client(&anvil, 0).await, contracts.adjudicator);
        let amount = U256::from(5_000u64);
        let deposit = ChainTransaction::Deposit {
            channel_id: keccak256("check"),
            asset: token,
            expected_held: U256::ZERO,
            amount,
        };
        let held_before = token_balance(&owner, token, owner.address()).await.unwrap();
        match (service.check_token(&deposit).await, refusal) {
            (Ok(()), None) => {}
            (Err(ChainError::UnsafeToken { token: t, reason }), Some(expected)) => {
                assert_eq!(t, token);
                assert!(reason.contains(expected), "{kind:?}: {reason}");
            }
            (other, _) => panic!("{kind:?}: {other:?}"),
        }
        assert_eq!(token_balance(&owner, token, owner.address()).await.unwrap(), held_before, "nothing moved");
        assert_eq!(service.allowance(token).await.unwrap(), U256::ZERO, "nothing approved");
    }
}

/// A token deposit through `ChainService::submit` lands its `approve` first; the gas of each,
/// against an ETH deposit's (figures for docs/node.md).
#[tokio::test]
async fn a_token_deposit_is_approved_then_deposited() {
    let (anvil, owner, token) = deployed(TestToken::Token).await;
    let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
    let contracts = Contracts::deploy(&owner, &artifacts).await.unwrap();
    let service = EthChainService::new(client(&anvil, 0).await, contracts.adjudicator);
    let amount = U256::from(5_000u64);
    let channel_id = keccak256("submit");
    let deposit = ChainTransaction::Deposit { channel_id, asset: token, expected_held: U256::ZERO, amount };
    let receipt = service.submit(&deposit).await.unwrap();
    assert_eq!(service.holdings(token, channel_id).await.unwrap(), amount);
    assert_eq!(service.allowance(token).await.unwrap(), U256::ZERO, "the approval was exactly the amount");
    let eth = ChainTransaction::Deposit { channel_id, asset: Address::ZERO, expected_held: U256::ZERO, amount };
    let eth_receipt = service.submit(&eth).await.unwrap();
    eprintln!("gas: token deposit {} (after its approve), ETH deposit {}", receipt.gas_used, eth_receipt.gas_used);
    assert!(receipt.gas_used > eth_receipt.gas_used, "a token deposit costs more than an ETH one");
}
