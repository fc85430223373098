//! Ledgers in an ERC-20 token on a real anvil chain with the real
//! `NitroAdjudicator`: the nitro-protocol package's own `Token.sol` (compiled at setup), and
//! two tokens that would lose money in the adjudicator (`FeeToken`: 1 % fee on transfer;
//! `FalseToken`: `transfer` returns `false`), which are refused before any deposit.

mod common;

use std::time::Duration;

use alloy_primitives::{Address, U256};
use nitro_chain::{
    approve_tokens, deploy_token, token_balance, transfer_tokens, Anvil, ChainService, Contracts, EthClient, TestToken,
    TokenArtifacts,
};
use nitro_core::{
    chain::ChainTransaction,
    party::{ObjectiveId, WaitingFor},
    ChannelId,
};
use nitro_node::{engine::Request, LocalNetwork};

const CHALLENGE_DURATION: u64 = 60;
const TIMEOUT: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(3);
/// What each party starts with, of each token (Token mints 10^10 units in all).
const START: u64 = 1_000_000_000;

struct Setup {
    anvil: Anvil,
    net: LocalNetwork,
    deployer: EthClient,
    contracts: Contracts,
}

impl Setup {
    /// Alice (0), the hub (1) and Bob (2) on a fresh chain.
    async fn start() -> Self {
        let common::local_chain::LocalChain { anvil, net, deployer, contracts } =
            common::local_chain::LocalChain::start(CHALLENGE_DURATION).await;
        Self { anvil, net, deployer, contracts }
    }

    /// Deploys `kind` (owned by the deployer) and gives each party [`START`] of it.
    async fn token(&self, kind: TestToken) -> Address {
        let artifacts = TokenArtifacts::locate().unwrap_or_else(|e| panic!("{e}"));
        let artifact = artifacts.token(kind).unwrap();
        let token = deploy_token(&self.deployer, &artifact, self.deployer.address()).await.unwrap();
        if kind == TestToken::Token {
            for i in 0..3 {
                transfer_tokens(&self.deployer, token, self.net.address(i), U256::from(START)).await.unwrap();
            }
        }
        token
    }

    fn addrs(&self) -> (Address, Address, Address) {
        (self.net.address(0), self.net.address(1), self.net.address(2))
    }

    fn open(&mut self, token: Address, with: usize, amount: u64, nonce: u64) -> ObjectiveId {
        let (hub, peer) = (self.net.address(1), self.net.address(with));
        let amounts = [U256::from(amount), U256::from(amount)];
        self.net
            .start(
                1,
                Request::LedgerOpen {
                    participants: [hub, peer],
                    asset: token,
                    amounts,
                    nonce,
                    more_assets: Vec::new(),
                },
            )
            .unwrap()
    }

    async fn open_ledgers(&mut self, token: Address, amount: u64) -> (ChannelId, ChannelId) {
        let (a, b) = (self.open(token, 0, amount, 1), self.open(token, 2, amount, 2));
        self.net.run_objectives(&[a, b], TIMEOUT).await.unwrap();
        (a.channel_id(), b.channel_id())
    }

    async fn tokens_of(&self, token: Address) -> Vec<U256> {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(token_balance(&self.deployer, token, self.net.address(i)).await.unwrap());
        }
        out
    }

    async fn holdings(&self, asset: Address, channel: ChannelId) -> U256 {
        self.net.participants[0].chain.holdings(asset, channel).await.unwrap()
    }

    /// Runs until `done`, moving chain time on past challenges while nothing else happens.
    async fn settle(&mut self, done: impl Fn(&[nitro_node::Participant]) -> bool + Copy) {
        common::local_chain::settle(&mut self.net, &self.anvil, CHALLENGE_DURATION, STEP, 20, done).await
    }
}

fn units(n: u64) -> U256 {
    U256::from(n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_ledgers_are_funded_and_pay_out_in_the_token() {
    let mut s = Setup::start().await;
    let token = s.token(TestToken::Token).await;
    let (la, lb) = s.open_ledgers(token, 10_000).await;
    for l in [la, lb] {
        assert_eq!(s.holdings(token, l).await, units(20_000), "both deposits are held, in the token");
        assert_eq!(s.holdings(Address::ZERO, l).await, U256::ZERO, "no ETH went in");
    }
    assert_eq!(s.tokens_of(token).await, vec![units(START - 10_000), units(START - 20_000), units(START - 10_000)]);
    let confirmed = s.net.participants[1].transactions.stats().confirmed;
    assert!(confirmed >= 4, "the hub's two approvals and two deposits landed through its manager ({confirmed})");

    // The deployed VirtualPaymentApp redeems vouchers only in ETH: a virtual channel in the
    // token is refused at once, with the reason, and nothing is locked.
    let (alice, hub, bob) = s.addrs();
    let refused = s.net.start(
        0,
        Request::VirtualFund {
            participants: vec![alice, hub, bob],
            asset: token,
            amounts: [units(1_000), U256::ZERO],
            nonce: 1,
        },
    );
    let why = refused.expect_err("a virtual channel in a token is refused").to_string();
    assert!(why.contains("only in the native asset"), "{why}");

    let closes = [la, lb].map(|l| s.net.start(1, Request::LedgerClose { channel_id: l }).unwrap());
    s.net.run_objectives(&closes, TIMEOUT).await.unwrap();
    s.net.run_until(TIMEOUT, |ps| ps.iter().all(|p| p.transactions.stats().tracked == 0)).await.unwrap();
    assert_eq!(s.tokens_of(token).await, vec![units(START); 3], "each party is paid its balance in the token");
    for l in [la, lb] {
        assert_eq!(s.holdings(token, l).await, U256::ZERO, "ledger {l} still holds tokens");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_counterparty_gone_a_force_close_pays_out_the_token() {
    let mut s = Setup::start().await;
    let token = s.token(TestToken::Token).await;
    let (la, _) = s.open_ledgers(token, 10_000).await;
    s.net.vanish(0);
    let exit = s.net.start(1, Request::ForceClose { channel_id: la }).unwrap();
    s.settle(|ps| ps[1].party().is_complete(&exit)).await;
    let after = s.tokens_of(token).await;
    assert_eq!(after[0], units(START), "the absent alice is paid her balance in the token");
    assert_eq!(after[1], units(START - 10_000), "the hub has its deposit in la back (lb is still open)");
    assert_eq!(s.holdings(token, la).await, U256::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_that_would_lose_money_are_refused_before_any_deposit() {
    let mut s = Setup::start().await;
    for (kind, why) in [(TestToken::FeeToken, "fee on transfer"), (TestToken::FalseToken, "transfer returns false")] {
        let token = s.token(kind).await;
        // The deployer holds the supply; the hub gets some to deposit.
        let hub = s.net.address(1);
        match kind {
            TestToken::FeeToken => {
                transfer_tokens(&s.deployer, token, hub, units(1_000_000)).await.unwrap();
            }
            _ => {
                // FalseToken's transfer moves nothing: fund the hub by transferFrom.
                approve_tokens(&s.deployer, token, s.deployer.address(), units(1_000_000)).await.unwrap();
                let input = nitro_chain::bindings::IERC20::transferFromCall {
                    from: s.deployer.address(),
                    to: hub,
                    amount: units(1_000_000),
                };
                let input = alloy::sol_types::SolCall::abi_encode(&input);
                s.deployer.transact("transferFrom", token, input.into(), U256::ZERO).await.unwrap();
            }
        }
        let held_before = token_balance(&s.deployer, token, hub).await.unwrap();
        let id = s.open(token, 0, 10_000, 10 + kind as u64);
        s.net
            .run_until(TIMEOUT, |ps| matches!(ps[1].party().waiting_for(&id), Some(WaitingFor::Failed(_))))
            .await
            .unwrap();
        let Some(WaitingFor::Failed(reason)) = s.net.participants[1].party().waiting_for(&id) else { unreachable!() };
        assert!(reason.contains(why) && reason.contains(&token.to_string()), "{kind:?}: {reason}");
        assert_eq!(token_balance(&s.deployer, token, hub).await.unwrap(), held_before, "no token left the hub");
        assert_eq!(s.holdings(token, id.channel_id()).await, U256::ZERO);
        let deposits = s.net.participants[1].deposited;
        assert_eq!(deposits, U256::ZERO, "no deposit was sent");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposit_of_another_asset_never_counts_as_funding() {
    let mut s = Setup::start().await;
    let junk = s.token(TestToken::Token).await;
    let amount = U256::from(10u64).pow(U256::from(15u64));
    let (hub, alice) = (s.net.address(1), s.net.address(0));
    let id = s
        .net
        .start(
            1,
            Request::LedgerOpen {
                participants: [hub, alice],
                asset: Address::ZERO,
                amounts: [amount, amount],
                nonce: 1,
                more_assets: Vec::new(),
            },
        )
        .unwrap();
    // A stranger deposits a worthless token into the ledger's channel id, more than the ledger
    // will hold, before anyone's ETH deposit.
    approve_tokens(&s.deployer, junk, s.contracts.adjudicator, units(START)).await.unwrap();
    let deposit = ChainTransaction::Deposit {
        channel_id: id.channel_id(),
        asset: junk,
        expected_held: U256::ZERO,
        amount: units(START),
    };
    let calldata = nitro_chain::bindings::calldata(&deposit);
    s.deployer.transact("deposit", s.contracts.adjudicator, calldata.into(), U256::ZERO).await.unwrap();
    s.net.run_objectives(&[id], TIMEOUT).await.unwrap();
    assert_eq!(
        s.holdings(Address::ZERO, id.channel_id()).await,
        amount * U256::from(2),
        "the ledger was funded by both ETH deposits, not by the junk token"
    );
    assert_eq!(s.net.participants[1].deposited, amount);
    assert_eq!(s.net.participants[0].deposited, amount);
}
