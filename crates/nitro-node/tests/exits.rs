//! Unilateral exits on a real anvil chain with the real `NitroAdjudicator`: a counterparty
//! gone for good at each stage of a channel's life, and every honest party still leaves with
//! what the latest supported states give it (its balance change is exactly that, less the gas
//! it paid), holdings ending at zero. Chain time moves with `evm_increaseTime`.

mod common;

use std::time::Duration;

use alloy_primitives::{Address, U256};
use nitro_chain::{Anvil, ChainService};
use nitro_core::{
    party::{Objective, ObjectiveId, Payload},
    ChannelId, LedgerMessage,
};
use nitro_node::{engine::Request, LocalNetwork};

const CHALLENGE_DURATION: u64 = 60;
const STEP: Duration = Duration::from_secs(3);

fn milli(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000_000_000_000u64)
}

struct Setup {
    anvil: Anvil,
    net: LocalNetwork,
    ledgers: Vec<ChannelId>,
}

impl Setup {
    /// Alice (0), the hub (1) and Bob (2) on a fresh chain.
    async fn start() -> Self {
        let common::local_chain::LocalChain { anvil, net, .. } =
            common::local_chain::LocalChain::start(CHALLENGE_DURATION).await;
        Self { anvil, net, ledgers: Vec::new() }
    }

    fn addrs(&self) -> (Address, Address, Address) {
        (self.net.address(0), self.net.address(1), self.net.address(2))
    }

    async fn open_ledgers(&mut self) -> (ChannelId, ChannelId) {
        let (alice, hub, bob) = self.addrs();
        let amount = milli(1000);
        let a = self
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
        let b = self
            .net
            .start(
                1,
                Request::LedgerOpen {
                    participants: [hub, bob],
                    asset: Address::ZERO,
                    amounts: [amount, amount],
                    nonce: 2,
                    more_assets: Vec::new(),
                },
            )
            .unwrap();
        self.net.run_objectives(&[a, b], Duration::from_secs(60)).await.unwrap();
        self.ledgers = vec![a.channel_id(), b.channel_id()];
        (a.channel_id(), b.channel_id())
    }

    async fn fund_virtual(&mut self, a: U256) -> ChannelId {
        let (alice, hub, bob) = self.addrs();
        let id = self
            .net
            .start(
                0,
                Request::VirtualFund {
                    participants: vec![alice, hub, bob],
                    asset: Address::ZERO,
                    amounts: [a, U256::ZERO],
                    nonce: 7,
                },
            )
            .unwrap();
        self.net.run_objectives(&[id], Duration::from_secs(60)).await.unwrap();
        id.channel_id()
    }

    async fn balance(&self, i: usize) -> U256 {
        self.net.participants[i].chain.client().balance(self.net.address(i)).await.unwrap()
    }

    async fn balances(&self) -> Vec<U256> {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(self.balance(i).await);
        }
        out
    }

    fn fees(&self) -> Vec<U256> {
        self.net.participants.iter().map(|p| p.fees_paid).collect()
    }

    /// Runs until `done`, moving chain time on past challenges while nothing else happens.
    async fn settle(&mut self, done: impl Fn(&[nitro_node::Participant]) -> bool + Copy) {
        common::local_chain::settle(&mut self.net, &self.anvil, CHALLENGE_DURATION, STEP, 20, done).await
    }

    async fn holdings(&self, channel: ChannelId) -> U256 {
        self.net.participants[0].chain.holdings(Address::ZERO, channel).await.unwrap()
    }

    /// Every channel this test opened holds nothing any more.
    async fn assert_no_holdings(&self) {
        for l in &self.ledgers {
            assert_eq!(self.holdings(*l).await, U256::ZERO, "ledger {l} still holds funds");
        }
    }
}

/// Balance changes since `before`, with the gas each party paid since `fees_before` added back.
async fn gains(s: &Setup, before: &[U256], fees_before: &[U256]) -> Vec<U256> {
    let after = s.balances().await;
    let fees = s.fees();
    (0..3).map(|i| after[i] + (fees[i] - fees_before[i]) - before[i]).collect()
}

fn done(id: ObjectiveId, who: usize) -> impl Fn(&[nitro_node::Participant]) -> bool + Copy {
    move |ps| ps[who].party().is_complete(&id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefund_signed_counterparty_gone_costs_only_gas() {
    let mut s = Setup::start().await;
    let (alice, hub, _) = s.addrs();
    s.net.vanish(0);
    let id = s
        .net
        .start(
            1,
            Request::LedgerOpen {
                participants: [hub, alice],
                asset: Address::ZERO,
                amounts: [milli(10), milli(10)],
                nonce: 1,
                more_assets: Vec::new(),
            },
        )
        .unwrap();
    // Alice is gone before signing: nothing is supported, nothing was deposited.
    s.net.run_until(STEP, |_| false).await.unwrap_err();
    let err = s.net.start(1, Request::ForceClose { channel_id: id.channel_id() }).unwrap_err();
    assert!(err.to_string().contains("nothing to take to chain"), "{err}");
    s.net.request(1, Request::Cancel { objective: id }).unwrap();
    assert!(s.net.participants[1].party().waiting_for(&id).unwrap().to_string().contains("cancelled"));
    assert_eq!(s.holdings(id.channel_id()).await, U256::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deposit_made_counterparty_gone_returns_it() {
    let mut s = Setup::start().await;
    let (alice, hub, _) = s.addrs();
    // Alice signs the prefund, then vanishes before her deposit.
    let id = s
        .net
        .start(
            1,
            Request::LedgerOpen {
                participants: [hub, alice],
                asset: Address::ZERO,
                amounts: [milli(300), milli(700)],
                nonce: 1,
                more_assets: Vec::new(),
            },
        )
        .unwrap();
    let ledger = id.channel_id();
    s.ledgers.push(ledger);
    s.net
        .run_until(
            Duration::from_secs(60),
            |ps| matches!(ps[1].party().objective(&id), Some(Objective::DirectFund(d)) if d.prefund().is_fully_signed()),
        )
        .await
        .unwrap();
    s.net.vanish(0);
    s.net.run_until(Duration::from_secs(30), |_| false).await.unwrap_err();
    assert_eq!(s.holdings(ledger).await, milli(300), "the hub deposited");
    let (before, fees) = (s.balances().await, s.fees());
    let exit = s.net.start(1, Request::ForceClose { channel_id: ledger }).unwrap();
    s.settle(done(exit, 1)).await;
    let g = gains(&s, &before, &fees).await;
    assert_eq!(g[1], milli(300), "the hub got its deposit back, less gas");
    assert_eq!(g[0], U256::ZERO);
    s.assert_no_holdings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn funded_counterparty_gone_pays_both() {
    let mut s = Setup::start().await;
    let (la, _) = s.open_ledgers().await;
    s.ledgers = vec![la];
    s.net.vanish(0);
    let (before, fees) = (s.balances().await, s.fees());
    let exit = s.net.start(1, Request::ForceClose { channel_id: la }).unwrap();
    s.settle(done(exit, 1)).await;
    let g = gains(&s, &before, &fees).await;
    assert_eq!(g[1], milli(1000));
    assert_eq!(g[0], milli(1000), "the absent party is paid what the state gives it");
    s.assert_no_holdings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarantees_locked_hub_gone_both_ends_leave_with_their_shares() {
    let mut s = Setup::start().await;
    let (la, lb) = s.open_ledgers().await;
    let _v = s.fund_virtual(milli(100)).await;
    s.net.vanish(1);
    let (before, fees) = (s.balances().await, s.fees());
    let a = s.net.start(0, Request::ForceClose { channel_id: la }).unwrap();
    let b = s.net.start(2, Request::ForceClose { channel_id: lb }).unwrap();
    s.settle(|ps| ps[0].party().is_complete(&a) && ps[2].party().is_complete(&b)).await;
    let g = gains(&s, &before, &fees).await;
    // V finalized at its postfund: alice's 100 come back to her, the hub's share of L(hub, bob)
    // too; nobody paid anyone.
    assert_eq!(g[0], milli(1000));
    assert_eq!(g[2], milli(1000));
    assert_eq!(g[1], milli(2000), "the absent hub is paid what the states give it");
    s.assert_no_holdings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_queued_counterparty_gone_the_leader_exits_with_the_consensus_state() {
    let mut s = Setup::start().await;
    let (_, lb) = s.open_ledgers().await;
    s.ledgers = vec![lb];
    let (alice, hub, bob) = s.addrs();
    // Bob vanishes on receiving the hub's proposal in L(hub, bob).
    s.net.set_filter(Some(Box::new(|_, e| !matches!(e.payload, Payload::Ledger(LedgerMessage::Proposal(_))))));
    let v = s
        .net
        .start(
            0,
            Request::VirtualFund {
                participants: vec![alice, hub, bob],
                asset: Address::ZERO,
                amounts: [milli(50), U256::ZERO],
                nonce: 3,
            },
        )
        .unwrap();
    s.net
        .run_until(Duration::from_secs(60), move |ps| {
            matches!(ps[1].party().ledger_with(&bob), Some(nitro_core::ConsensusChannel::Leader(x)) if !x.queue().is_empty())
        })
        .await
        .unwrap();
    s.net.vanish(2);
    s.net.set_filter(None);
    let (before, fees) = (s.balances().await, s.fees());
    let exit = s.net.start(1, Request::ForceClose { channel_id: lb }).unwrap();
    s.settle(done(exit, 1)).await;
    let g = gains(&s, &before, &fees).await;
    assert_eq!(g[1], milli(1000), "the queued guarantee was never agreed: the hub's full balance");
    assert_eq!(g[2], milli(1000));
    s.assert_no_holdings().await;
    assert!(!s.net.participants[1].party().is_complete(&v));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_defund_half_signed_counterparty_gone() {
    let mut s = Setup::start().await;
    let (la, _) = s.open_ledgers().await;
    s.ledgers = vec![la];
    // The hub asks to close; alice vanishes before signing the final state.
    s.net.vanish(0);
    let close = s.net.start(1, Request::LedgerClose { channel_id: la }).unwrap();
    s.net.run_until(STEP, |_| false).await.unwrap_err();
    assert!(!s.net.participants[1].party().is_complete(&close));
    let (before, fees) = (s.balances().await, s.fees());
    let exit = s.net.start(1, Request::ForceClose { channel_id: la }).unwrap();
    s.settle(done(exit, 1)).await;
    let g = gains(&s, &before, &fees).await;
    assert_eq!((g[0], g[1]), (milli(1000), milli(1000)));
    s.assert_no_holdings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtual_defund_unfinished_payee_gone_the_payer_and_hub_leave() {
    let mut s = Setup::start().await;
    let (la, lb) = s.open_ledgers().await;
    let v = s.fund_virtual(milli(100)).await;
    s.net.request(0, Request::Pay { channel_id: v, amount: milli(40) }).unwrap();
    s.net.run_until(Duration::from_secs(30), |ps| ps[2].party().paid(&v) == milli(40)).await.unwrap();
    // Alice starts closing V; bob vanishes before signing its final state.
    s.net.vanish(2);
    let _defund = s.net.start(0, Request::VirtualDefund { channel_id: v }).unwrap();
    s.net.run_until(STEP, |_| false).await.unwrap_err();
    let (before, fees) = (s.balances().await, s.fees());
    // The hub takes L(hub, bob) to chain (which takes V there); alice and the hub settle
    // L(hub, alice) on chain too, with V's on-chain outcome.
    let hb = s.net.start(1, Request::ForceClose { channel_id: lb }).unwrap();
    let ha = s.net.start(0, Request::ForceClose { channel_id: la }).unwrap();
    s.settle(|ps| ps[1].party().is_complete(&hb) && ps[0].party().is_complete(&ha)).await;
    let g = gains(&s, &before, &fees).await;
    // Bob never signed V's final state and is gone with his vouchers: V finalizes at its
    // postfund (alice keeps her 100).
    assert_eq!(g[0], milli(1000));
    assert_eq!(g[2], milli(1000));
    assert_eq!(g[1], milli(2000));
    s.assert_no_holdings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payer_gone_the_payee_redeems_its_vouchers() {
    let mut s = Setup::start().await;
    let (la, lb) = s.open_ledgers().await;
    let v = s.fund_virtual(milli(100)).await;
    s.net.request(0, Request::Pay { channel_id: v, amount: milli(35) }).unwrap();
    s.net.run_until(Duration::from_secs(30), |ps| ps[2].party().paid(&v) == milli(35)).await.unwrap();
    s.net.vanish(0);
    let (before, fees) = (s.balances().await, s.fees());
    // Bob takes his ledger to chain: V goes with it, redeemed with alice's voucher; the hub
    // follows the challenge and also leaves alice's ledger.
    let b = s.net.start(2, Request::ForceClose { channel_id: lb }).unwrap();
    let h = s.net.start(1, Request::ForceClose { channel_id: la }).unwrap();
    s.settle(|ps| ps[2].party().is_complete(&b) && ps[1].party().is_complete(&h)).await;
    let g = gains(&s, &before, &fees).await;
    assert_eq!(g[2], milli(1000 + 35), "bob: his balance plus what the vouchers promised");
    assert_eq!(g[0], milli(1000 - 35), "alice (absent): what she did not pay");
    assert_eq!(g[1], milli(2000), "the hub: what it put in");
    s.assert_no_holdings().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_gone_with_payments_made_alice_and_bob_leave_with_their_shares() {
    let mut s = Setup::start().await;
    let (la, lb) = s.open_ledgers().await;
    let v = s.fund_virtual(milli(100)).await;
    s.net.request(0, Request::Pay { channel_id: v, amount: milli(30) }).unwrap();
    s.net.run_until(Duration::from_secs(30), |ps| ps[2].party().paid(&v) == milli(30)).await.unwrap();
    s.net.vanish(1);
    let (before, fees) = (s.balances().await, s.fees());
    let a = s.net.start(0, Request::ForceClose { channel_id: la }).unwrap();
    let b = s.net.start(2, Request::ForceClose { channel_id: lb }).unwrap();
    s.settle(|ps| ps[0].party().is_complete(&a) && ps[2].party().is_complete(&b)).await;
    let g = gains(&s, &before, &fees).await;
    assert_eq!(g[0], milli(1000 - 30));
    assert_eq!(g[2], milli(1000 + 30));
    assert_eq!(g[1], milli(2000), "the absent hub: what it put in");
    s.assert_no_holdings().await;
}
