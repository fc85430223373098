//! Partial withdrawal on a real anvil chain with the real `NitroAdjudicator` (issue 16,
//! ADR-0022 §5): Bob withdraws part of L(hub, bob) while a virtual channel alice → hub → bob
//! stays funded; the conclusion of L pays Bob and funds the successor L′ without a deposit.
//! Then either the hub vanishes and Bob leaves alone through L′ (redeeming his payment from V
//! with a `reclaim` from L′), or everything closes cooperatively through L′. Balances are
//! checked to the wei (gas added back), holdings end at zero.

mod common;

use std::time::Duration;

use alloy_primitives::{Address, U256};
use nitro_chain::{Anvil, ChainService};
use nitro_core::{party::ObjectiveId, ChannelId};
use nitro_node::{
    api::{ApiRequest, RpcError},
    engine::Request,
    LocalNetwork, Participant,
};
use serde_json::json;

const CHALLENGE_DURATION: u64 = 60;
const STEP: Duration = Duration::from_secs(3);
const DEADLINE: Duration = Duration::from_secs(90);

fn milli(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000_000_000_000u64)
}

struct Setup {
    anvil: Anvil,
    net: LocalNetwork,
}

impl Setup {
    /// Alice (0), the hub (1) and Bob (2) on a fresh chain, with L(hub, alice) and
    /// L(hub, bob) of 1000 each side, and V = [alice, hub, bob] of 100 (alice's) in which
    /// alice paid bob 30.
    async fn start() -> (Self, [ChannelId; 3]) {
        let common::local_chain::LocalChain { anvil, net, .. } =
            common::local_chain::LocalChain::start(CHALLENGE_DURATION).await;
        let mut s = Self { anvil, net };
        let (alice, hub, bob) = (s.net.address(0), s.net.address(1), s.net.address(2));
        let open = |nonce, peer| Request::LedgerOpen {
            participants: [hub, peer],
            asset: Address::ZERO,
            amounts: [milli(1000), milli(1000)],
            nonce,
            more_assets: Vec::new(),
        };
        let a = s.net.start(1, open(1, alice)).unwrap();
        let b = s.net.start(1, open(2, bob)).unwrap();
        s.net.run_objectives(&[a, b], DEADLINE).await.unwrap();
        let fund = Request::VirtualFund {
            participants: vec![alice, hub, bob],
            asset: Address::ZERO,
            amounts: [milli(100), U256::ZERO],
            nonce: 7,
        };
        let v = s.net.start(0, fund).unwrap();
        s.net.run_objectives(&[v], DEADLINE).await.unwrap();
        let v = v.channel_id();
        s.net.request(0, Request::Pay { channel_id: v, amount: milli(30) }).unwrap();
        s.net.run_until(DEADLINE, move |ps| ps[2].party().paid(&v) == milli(30)).await.unwrap();
        (s, [a.channel_id(), b.channel_id(), v])
    }

    async fn balances(&self) -> Vec<U256> {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(self.net.participants[i].chain.client().balance(self.net.address(i)).await.unwrap());
        }
        out
    }

    fn fees(&self) -> Vec<U256> {
        self.net.participants.iter().map(|p| p.fees_paid).collect()
    }

    async fn holdings(&self, channel: ChannelId) -> U256 {
        self.net.participants[2].chain.holdings(Address::ZERO, channel).await.unwrap()
    }

    /// Runs until `done`, moving chain time on past challenges while nothing else happens.
    async fn settle(&mut self, done: impl Fn(&[Participant]) -> bool + Copy) {
        common::local_chain::settle(&mut self.net, &self.anvil, CHALLENGE_DURATION, STEP, 30, done).await
    }

    /// Bob withdraws 300 from L(hub, bob): returns the successor, after checking that the
    /// conclusion paid Bob exactly that (gas added back) and credited L′ with the rest.
    async fn bob_withdraws(&mut self, lb: ChannelId) -> ChannelId {
        let (before, fees) = (self.balances().await, self.fees());
        let w = self.net.start(2, Request::LedgerWithdraw { channel_id: lb, amount: milli(300), asset: None }).unwrap();
        assert_eq!(w, ObjectiveId::Withdraw(lb));
        self.settle(move |ps| ps[1].party().is_complete(&w) && ps[2].party().is_complete(&w)).await;
        let g = gains(self, &before, &fees).await;
        assert_eq!(g[2], milli(300), "bob's balance grew by the withdrawal, less gas");
        assert_eq!(g[1], U256::ZERO, "the hub withdrew nothing");
        let successor = self.net.participants[2].party().successor(&lb).expect("bob follows the successor");
        assert_eq!(self.net.participants[1].party().successor(&lb), Some(successor));
        assert_eq!(self.holdings(lb).await, U256::ZERO);
        assert_eq!(self.holdings(successor).await, milli(2000 - 300), "L′ holds the rest, funded by the conclusion");
        assert_eq!(self.net.stats.resized_ledgers, 1);
        successor
    }
}

/// Balance changes since `before`, with the gas each party paid since `fees_before` added back.
async fn gains(s: &Setup, before: &[U256], fees_before: &[U256]) -> Vec<U256> {
    let after = s.balances().await;
    let fees = s.fees();
    (0..3).map(|i| after[i] + (fees[i] - fees_before[i]) - before[i]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bob_withdraws_then_the_hub_vanishes_and_bob_leaves_through_the_successor() {
    let (mut s, [_, lb, v]) = Setup::start().await;
    let successor = s.bob_withdraws(lb).await;
    assert!(s.net.participants[2].party().ledger(&successor).is_some_and(|l| l.is_locked(&v)), "V is still funded");

    s.net.vanish(1);
    let (before, fees) = (s.balances().await, s.fees());
    // Bob names the old ledger: the request follows the successor.
    let exit = s.net.start(2, Request::ForceClose { channel_id: lb }).unwrap();
    assert_eq!(exit, ObjectiveId::ForceClose(successor));
    s.settle(move |ps| ps[2].party().is_complete(&exit)).await;
    let g = gains(&s, &before, &fees).await;
    // L′@1 gives bob 700 and the hub 900 plus V's guarantee of 100, which the reclaim splits
    // as V's redemption says: 30 to bob, 70 to the hub.
    assert_eq!(g[2], milli(700 + 30), "bob is paid his balance and the payment redeemed from V");
    assert_eq!(g[1], milli(900 + 70), "the absent hub is paid what the states give it");
    assert_eq!(s.holdings(successor).await, U256::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_withdrawal_the_virtual_channel_and_the_successor_close_cooperatively() {
    let (mut s, [la, lb, v]) = Setup::start().await;
    // Refused at once, with the reason, changing nothing: another's ledger, nothing, too much.
    for (channel_id, amount, why) in
        [(la, milli(1), "unknown ledger"), (lb, U256::ZERO, "zero"), (lb, milli(1001), "available")]
    {
        let err = s.net.start(2, Request::LedgerWithdraw { channel_id, amount, asset: None }).unwrap_err();
        assert!(err.to_string().contains(why), "{err}");
    }
    assert!(s.net.participants[2].party().objective(&ObjectiveId::Withdraw(lb)).is_none());
    let (before, fees) = (s.balances().await, s.fees());
    let successor = s.bob_withdraws(lb).await;

    let defund = s.net.start(2, Request::VirtualDefund { channel_id: v }).unwrap();
    s.net.run_objectives(&[defund], DEADLINE).await.unwrap();
    let hub = s.net.participants[1].party();
    assert!(hub.ledger(&successor).is_some_and(|l| l.consensus_outcome().guarantees().len() == 0), "removed in L′");
    let ca = s.net.start(1, Request::LedgerClose { channel_id: la }).unwrap();
    let cb = s.net.start(1, Request::LedgerClose { channel_id: lb }).unwrap();
    assert_eq!(cb, ObjectiveId::DirectDefund(successor));
    s.settle(move |ps| [ca, cb].iter().all(|id| ps[1].party().is_complete(id))).await;
    let g = gains(&s, &before, &fees).await;
    assert_eq!(g[0], milli(1000 - 30));
    assert_eq!(g[2], milli(300 + 700 + 30), "the withdrawal, then the rest and the payment");
    assert_eq!(g[1], milli(2000));
    for c in [la, lb, successor] {
        assert_eq!(s.holdings(c).await, U256::ZERO);
    }
}

#[test]
fn ledger_withdraw_parses_and_round_trips() {
    let channel = format!("0x{}", "ab".repeat(32));
    let params = json!({ "channel_id": channel, "amount": "0x3e8" });
    let request = ApiRequest::parse("ledger_withdraw", &params).unwrap();
    let ApiRequest::LedgerWithdraw { channel_id, amount, .. } = &request else { panic!("{request:?}") };
    assert_eq!((*channel_id, *amount), (ChannelId::repeat_byte(0xab), U256::from(1000)));
    assert_eq!(request.method(), "ledger_withdraw");
    assert_eq!(ApiRequest::parse("ledger_withdraw", &request.to_params()).unwrap(), request);
    for bad in
        [json!({ "channel_id": channel }), json!({ "amount": "1" }), json!({ "channel_id": channel, "amount": "-1" })]
    {
        let e = ApiRequest::parse("ledger_withdraw", &bad).unwrap_err();
        assert_eq!(e.code, RpcError::INVALID_PARAMS, "{bad}");
    }
}
