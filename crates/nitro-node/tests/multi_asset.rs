//! Ledgers holding ETH and an ERC-20 token at once (ADR-0022 §1–2) on a real anvil chain with
//! the real `NitroAdjudicator` and nitro-protocol's `Token`: L(hub, alice) and L(hub, bob)
//! funded in both assets, a virtual channel in ETH funded, paid and defunded through them,
//! then the ledgers closed cooperatively — or the hub vanishing and alice's force close
//! paying her both assets. Every balance is checked to the unit (ETH with the gas each party
//! paid added back), and the ledgers end holding nothing of either asset.

mod common;

use std::time::Duration;

use alloy_primitives::{Address, U256};
use nitro_chain::{
    deploy_token, token_balance, transfer_tokens, Anvil, ChainService, EthClient, TestToken, TokenArtifacts,
};
use nitro_core::{party::ObjectiveId, ChannelId};
use nitro_node::{engine::Request, LocalNetwork};

const CHALLENGE_DURATION: u64 = 60;
const TIMEOUT: Duration = Duration::from_secs(60);
const STEP: Duration = Duration::from_secs(3);
/// What each party starts with of the token (Token mints 10^10 units in all).
const START: u64 = 1_000_000_000;
const ETH: Address = Address::ZERO;

fn milli(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(15))
}

fn units(n: u64) -> U256 {
    U256::from(n)
}

struct Setup {
    anvil: Anvil,
    net: LocalNetwork,
    deployer: EthClient,
    token: Address,
    ledgers: Vec<ChannelId>,
}

impl Setup {
    /// Alice (0), the hub (1) and Bob (2) on a fresh chain, each with [`START`] of a new Token.
    async fn start() -> Self {
        let common::local_chain::LocalChain { anvil, net, deployer, .. } =
            common::local_chain::LocalChain::start(CHALLENGE_DURATION).await;
        let artifacts = TokenArtifacts::locate().unwrap_or_else(|e| panic!("{e}"));
        let artifact = artifacts.token(TestToken::Token).unwrap();
        let token = deploy_token(&deployer, &artifact, deployer.address()).await.unwrap();
        for i in 0..3 {
            transfer_tokens(&deployer, token, net.address(i), units(START)).await.unwrap();
        }
        Self { anvil, net, deployer, token, ledgers: Vec::new() }
    }

    /// L(hub, alice) and L(hub, bob): ETH 1000/1000 milli-ETH and 10 000/4 000 token units each
    /// (the hub's first), the token named first in the request.
    async fn open_ledgers(&mut self) -> (ChannelId, ChannelId) {
        let hub = self.net.address(1);
        let mut ids = Vec::new();
        for (peer, nonce) in [(0, 1), (2, 2)] {
            let request = Request::LedgerOpen {
                participants: [hub, self.net.address(peer)],
                asset: self.token,
                amounts: [units(10_000), units(4_000)],
                more_assets: vec![(ETH, [milli(1000), milli(1000)])],
                nonce,
            };
            ids.push(self.net.start(1, request).unwrap());
        }
        self.net.run_objectives(&ids, TIMEOUT).await.unwrap();
        self.ledgers = ids.iter().map(|id| id.channel_id()).collect();
        (ids[0].channel_id(), ids[1].channel_id())
    }

    async fn fund_virtual(&mut self, amount: U256) -> ChannelId {
        let (alice, hub, bob) = (self.net.address(0), self.net.address(1), self.net.address(2));
        let request = Request::VirtualFund {
            participants: vec![alice, hub, bob],
            asset: ETH,
            amounts: [amount, U256::ZERO],
            nonce: 7,
        };
        let id = self.net.start(0, request).unwrap();
        self.net.run_objectives(&[id], TIMEOUT).await.unwrap();
        id.channel_id()
    }

    async fn pay(&mut self, v: ChannelId, total: U256) {
        self.net.request(0, Request::Pay { channel_id: v, amount: total }).unwrap();
        self.net.run_until(TIMEOUT, |ps| ps[2].party().paid(&v) == total).await.unwrap();
    }

    async fn eth(&self) -> Vec<U256> {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(self.net.participants[i].chain.client().balance(self.net.address(i)).await.unwrap());
        }
        out
    }

    /// ETH balances with the gas each party paid (since the start) added back.
    async fn eth_before_gas(&self) -> Vec<U256> {
        let eth = self.eth().await;
        (0..3).map(|i| eth[i] + self.net.participants[i].fees_paid).collect()
    }

    async fn tokens(&self) -> Vec<U256> {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(token_balance(&self.deployer, self.token, self.net.address(i)).await.unwrap());
        }
        out
    }

    async fn holdings(&self, asset: Address, channel: ChannelId) -> U256 {
        self.net.participants[0].chain.holdings(asset, channel).await.unwrap()
    }

    async fn assert_no_holdings(&self) {
        for l in &self.ledgers {
            for asset in [ETH, self.token] {
                assert_eq!(self.holdings(asset, *l).await, U256::ZERO, "ledger {l} still holds {asset}");
            }
        }
    }

    /// Runs until `done`, moving chain time on past challenges while nothing else happens.
    async fn settle(&mut self, done: impl Fn(&[nitro_node::Participant]) -> bool + Copy) {
        common::local_chain::settle(&mut self.net, &self.anvil, CHALLENGE_DURATION, STEP, 20, done).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eth_and_token_ledgers_carry_a_virtual_channel_in_eth_and_close_paying_every_asset() {
    let mut s = Setup::start().await;
    let start_eth = s.eth_before_gas().await;
    let (la, lb) = s.open_ledgers().await;
    for l in [la, lb] {
        assert_eq!(s.holdings(ETH, l).await, milli(2000));
        assert_eq!(s.holdings(s.token, l).await, units(14_000));
        let o = s.net.participants[1].party().ledger(&l).unwrap().consensus_outcome().clone();
        let assets: Vec<Address> = o.assets().iter().map(|a| a.asset()).collect();
        assert_eq!(assets, vec![ETH, s.token], "ascending by address, ETH first");
    }
    assert_eq!(s.tokens().await, vec![units(START - 4_000), units(START - 20_000), units(START - 4_000)]);

    let v = s.fund_virtual(milli(100)).await;
    let o = s.net.participants[0].party().ledger(&la).unwrap().consensus_outcome().clone();
    assert_eq!(o.asset_of(&v), Some(ETH), "the guarantee is in the ETH exit");
    s.pay(v, milli(30)).await;
    let defund = s.net.start(2, Request::VirtualDefund { channel_id: v }).unwrap();
    s.net.run_objectives(&[defund], TIMEOUT).await.unwrap();
    let closes = [la, lb].map(|l| s.net.start(1, Request::LedgerClose { channel_id: l }).unwrap());
    s.net.run_objectives(&closes, TIMEOUT).await.unwrap();
    s.net.run_until(TIMEOUT, |ps| ps.iter().all(|p| p.transactions.stats().tracked == 0)).await.unwrap();

    let end_eth = s.eth_before_gas().await;
    assert_eq!(end_eth[0] + milli(30), start_eth[0], "alice paid bob 30 through the hub");
    assert_eq!(end_eth[2], start_eth[2] + milli(30));
    assert_eq!(end_eth[1], start_eth[1], "the hub is where it started, gas aside");
    assert_eq!(s.tokens().await, vec![units(START); 3], "every token unit came back");
    s.assert_no_holdings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_vanishing_alices_force_close_pays_her_both_assets() {
    let mut s = Setup::start().await;
    let (la, lb) = s.open_ledgers().await;
    let v = s.fund_virtual(milli(100)).await;
    s.pay(v, milli(40)).await;
    s.net.vanish(1);
    let (eth_before, tokens_before) = (s.eth_before_gas().await, s.tokens().await);
    let a = s.net.start(0, Request::ForceClose { channel_id: la }).unwrap();
    let b = s.net.start(2, Request::ForceClose { channel_id: lb }).unwrap();
    s.settle(|ps| ps[0].party().is_complete(&a) && ps[2].party().is_complete(&b)).await;
    assert!(s.net.participants[0].party().is_complete(&ObjectiveId::ForceClose(v)));
    let (eth_after, tokens_after) = (s.eth_before_gas().await, s.tokens().await);
    // V finalized with bob's redemption (alice 60, bob 40): alice's ledger pays her 900 + 60
    // milli-ETH and her 4 000 token units; bob 1000 + 40 and his 4 000; the absent hub the rest.
    assert_eq!(eth_after[0] - eth_before[0], milli(960));
    assert_eq!(tokens_after[0] - tokens_before[0], units(4_000));
    assert_eq!(eth_after[2] - eth_before[2], milli(1040));
    assert_eq!(tokens_after[2] - tokens_before[2], units(4_000));
    assert_eq!(eth_after[1] - eth_before[1], milli(2000), "the absent hub: what the states give it");
    assert_eq!(tokens_after[1] - tokens_before[1], units(20_000));
    s.assert_no_holdings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_withdrawal_from_a_two_asset_ledger_carries_the_eth_whole() {
    let mut s = Setup::start().await;
    let start_eth = s.eth_before_gas().await;
    let (la, lb) = s.open_ledgers().await;
    let v = s.fund_virtual(milli(100)).await;
    s.pay(v, milli(30)).await;
    let token = s.token;
    let id =
        s.net.start(2, Request::LedgerWithdraw { channel_id: lb, amount: units(3_000), asset: Some(token) }).unwrap();
    s.net.run_objectives(&[id], TIMEOUT).await.unwrap();
    let successor = s.net.participants[2].party().successor(&lb).expect("bob follows the successor");
    s.ledgers.push(successor);
    assert_eq!(s.tokens().await[2], units(START - 4_000 + 3_000), "bob's withdrawal paid in the token");
    assert_eq!(s.holdings(ETH, successor).await, milli(2000), "ETH carried whole");
    assert_eq!(s.holdings(token, successor).await, units(14_000 - 3_000));
    let defund = s.net.start(2, Request::VirtualDefund { channel_id: v }).unwrap();
    s.net.run_objectives(&[defund], TIMEOUT).await.unwrap();
    let closes = [la, lb].map(|l| s.net.start(1, Request::LedgerClose { channel_id: l }).unwrap());
    s.net.run_objectives(&closes, TIMEOUT).await.unwrap();
    s.net.run_until(TIMEOUT, |ps| ps.iter().all(|p| p.transactions.stats().tracked == 0)).await.unwrap();
    let end_eth = s.eth_before_gas().await;
    assert_eq!(end_eth[0] + milli(30), start_eth[0]);
    assert_eq!(end_eth[2], start_eth[2] + milli(30));
    assert_eq!(end_eth[1], start_eth[1]);
    assert_eq!(s.tokens().await, vec![units(START); 3]);
    s.assert_no_holdings().await;
}
