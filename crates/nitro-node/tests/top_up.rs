//! Top-up of an open ledger (ADR-0022 §4) on a real anvil chain with the real
//! `NitroAdjudicator`: alice deposits more into L(hub, alice) while a virtual channel
//! alice → hub → bob is funded and paying; then everything closes cooperatively, or the hub
//! vanishes and alice's force close pays her the topped-up balance. Each party's balance
//! change is what the states give it, less the gas it paid; holdings end at zero. A top-up in
//! an ERC-20 token (nitro-protocol's `Token`) goes through its approval like a funding.

mod common;

use std::time::Duration;

use alloy_primitives::{Address, U256};
use nitro_chain::{
    deploy_token, token_balance, transfer_tokens, Anvil, ChainService, EthClient, TestToken, TokenArtifacts,
};
use nitro_core::{
    party::{ObjectiveId, WaitingFor},
    ChannelId, LedgerOutcome, Side, Slot,
};
use nitro_node::{engine::Request, LocalNetwork, Participant};

const CHALLENGE_DURATION: u64 = 60;
const TIMEOUT: Duration = Duration::from_secs(90);
const STEP: Duration = Duration::from_secs(3);

fn milli(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000_000_000_000u64)
}

struct Setup {
    anvil: Anvil,
    net: LocalNetwork,
    deployer: EthClient,
}

impl Setup {
    /// Alice (0), the hub (1) and Bob (2) on a fresh chain, L(hub, alice) and L(hub, bob)
    /// open with 1000 (milli-ETH) from each side.
    async fn start() -> (Self, ChannelId, ChannelId) {
        let mut s = Self::empty().await;
        let ids = [s.open(Address::ZERO, 0, milli(1000), 1), s.open(Address::ZERO, 2, milli(1000), 2)];
        s.net.run_objectives(&ids, TIMEOUT).await.unwrap();
        (s, ids[0].channel_id(), ids[1].channel_id())
    }

    /// The hub opens a ledger with party `with` in `asset`, `amount` from each side.
    fn open(&mut self, asset: Address, with: usize, amount: U256, nonce: u64) -> ObjectiveId {
        let (hub, peer) = (self.net.address(1), self.net.address(with));
        let open = Request::LedgerOpen {
            participants: [hub, peer],
            asset,
            amounts: [amount, amount],
            nonce,
            more_assets: Vec::new(),
        };
        self.net.start(1, open).unwrap()
    }

    /// The three parties on a fresh chain, no ledger.
    async fn empty() -> Self {
        let common::local_chain::LocalChain { anvil, net, deployer, .. } =
            common::local_chain::LocalChain::start(CHALLENGE_DURATION).await;
        Self { anvil, net, deployer }
    }

    fn outcome(&self, party: usize, ledger: &ChannelId) -> LedgerOutcome {
        self.net.participants[party].party().ledger(ledger).unwrap().consensus_outcome().clone()
    }

    async fn holdings(&self, channel: ChannelId) -> U256 {
        self.net.participants[0].chain.holdings(Address::ZERO, channel).await.unwrap()
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

    /// Balance changes since `before`, with the gas paid since `fees_before` added back (a
    /// party that deposited more than it got back shows up as a wrapped negative, which the
    /// tests never expect).
    async fn gains(&self, before: &[U256], fees_before: &[U256]) -> Vec<U256> {
        let after = self.balances().await;
        let fees = self.fees();
        (0..3).map(|i| after[i] + (fees[i] - fees_before[i]) - before[i]).collect()
    }

    /// Alice tops up L(hub, alice) by `amount` and waits until both sides completed it.
    async fn top_up(&mut self, ledger: ChannelId, amount: U256) -> ObjectiveId {
        let id = self.net.start(0, Request::LedgerTopUp { channel_id: ledger, amount, asset: None }).unwrap();
        assert_eq!(id, ObjectiveId::TopUp(ledger));
        self.net
            .run_until(TIMEOUT, |ps| ps[0].party().is_complete(&id) && ps[1].party().is_complete(&id))
            .await
            .unwrap_or_else(|e| panic!("{e}\n{}", self.net.report()));
        id
    }

    /// Runs until `done`, moving chain time on past challenges while nothing else happens.
    async fn settle(&mut self, done: impl Fn(&[Participant]) -> bool + Copy) {
        common::local_chain::settle(&mut self.net, &self.anvil, CHALLENGE_DURATION, STEP, 20, done).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_top_up_while_a_virtual_channel_pays_then_everything_closes_paying_what_the_states_say() {
    let (mut s, la, lb) = Setup::start().await;
    let (alice, hub, bob) = (s.net.address(0), s.net.address(1), s.net.address(2));
    let (before, fees) = (s.balances().await, s.fees());

    // V = [alice, hub, bob], 100 from alice, paying.
    let fund = Request::VirtualFund {
        participants: vec![alice, hub, bob],
        asset: Address::ZERO,
        amounts: [milli(100), U256::ZERO],
        nonce: 7,
    };
    let v = s.net.start(0, fund).unwrap();
    s.net.run_objectives(&[v], TIMEOUT).await.unwrap();
    let vc = v.channel_id();
    s.net.request(0, Request::Pay { channel_id: vc, amount: milli(30) }).unwrap();

    // Alice tops up 500 while the guarantee is locked; she pays on meanwhile.
    let top_up = s.net.start(0, Request::LedgerTopUp { channel_id: la, amount: milli(500), asset: None }).unwrap();
    s.net.request(0, Request::Pay { channel_id: vc, amount: milli(20) }).unwrap();
    s.net
        .run_until(TIMEOUT, |ps| {
            ps[0].party().is_complete(&top_up)
                && ps[1].party().is_complete(&top_up)
                && ps[2].party().paid(&vc) == milli(50)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", s.net.report()));
    for p in [0, 1] {
        let o = s.outcome(p, &la);
        assert_eq!(o.slot(), None);
        assert_eq!(o.follower().amount, milli(1000 - 100 + 500), "alice is credited her top-up");
        assert_eq!(o.guarantee(&vc).map(|g| g.amount()), Some(milli(100)), "V stays funded");
        assert_eq!(o.total(), Some(milli(2500)));
    }
    assert_eq!(s.holdings(la).await, milli(2500));

    // Another top-up is allowed once the first is done.
    let again = s.top_up(la, milli(5)).await;
    assert!(s.net.participants[0].party().is_complete(&again));
    assert_eq!(s.outcome(1, &la).follower().amount, milli(1405));

    // Close V, then both ledgers.
    let defund = s.net.start(2, Request::VirtualDefund { channel_id: vc }).unwrap();
    s.net.run_objectives(&[defund], TIMEOUT).await.unwrap();
    let closes: Vec<_> =
        [la, lb].into_iter().map(|l| s.net.start(1, Request::LedgerClose { channel_id: l }).unwrap()).collect();
    s.net.run_objectives(&closes, TIMEOUT).await.unwrap();
    let g = s.gains(&before, &fees).await;
    // Alice: 1000 - 50 paid + 505 topped up, less the 505 she deposited.
    assert_eq!(g[0], milli(950));
    assert_eq!(g[1], milli(2000), "the hub: +50 in L(hub, alice), -50 in L(hub, bob)");
    assert_eq!(g[2], milli(1050));
    for l in [la, lb] {
        assert_eq!(s.holdings(l).await, U256::ZERO);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_gone_after_a_top_up_alice_force_closes_and_is_paid_the_topped_up_balance() {
    let (mut s, la, _) = Setup::start().await;
    s.top_up(la, milli(300)).await;
    let o = s.outcome(0, &la);
    assert_eq!((o.follower().amount, o.slot()), (milli(1300), None));
    s.net.vanish(1);
    let (before, fees) = (s.balances().await, s.fees());
    let exit = s.net.start(0, Request::ForceClose { channel_id: la }).unwrap();
    s.settle(|ps| ps[0].party().is_complete(&exit)).await;
    let g = s.gains(&before, &fees).await;
    assert_eq!(g[0], milli(1300), "alice leaves with her balance and her top-up");
    assert_eq!(g[1], milli(1000), "the absent hub is paid what the state gives it");
    assert_eq!(s.holdings(la).await, U256::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_gone_with_a_slot_reserved_the_hub_force_closes_and_the_slot_pays_only_what_was_deposited() {
    // The slot for alice is in the consensus state when she vanishes (her deposit may or may
    // not have landed): the hub's force close pays the hub its balance in full, alice her
    // balance, and the slot exactly what the chain holds beyond the rest.
    let (mut s, la, _) = Setup::start().await;
    let slot = Slot { side: Side::Follower, amount: milli(200) };
    s.net.start(0, Request::LedgerTopUp { channel_id: la, amount: milli(200), asset: None }).unwrap();
    s.net
        .run_until(TIMEOUT, |ps| ps[1].party().ledger(&la).is_some_and(|l| l.consensus_outcome().slot() == Some(slot)))
        .await
        .unwrap();
    s.net.vanish(0);
    let held = s.holdings(la).await;
    assert!(held == milli(2000) || held == milli(2200), "held {held}");
    let (before, fees) = (s.balances().await, s.fees());
    let exit = s.net.start(1, Request::ForceClose { channel_id: la }).unwrap();
    s.settle(|ps| ps[1].party().is_complete(&exit)).await;
    let g = s.gains(&before, &fees).await;
    assert_eq!(g[1], milli(1000), "the hub is paid its balance in full");
    assert_eq!(g[0], held - milli(1000), "alice: her balance, and the slot if she deposited it");
    assert_eq!(s.holdings(la).await, U256::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_top_up_is_approved_deposited_credited_and_paid_out_in_the_token() {
    let mut s = Setup::empty().await;
    let artifacts = TokenArtifacts::locate().unwrap_or_else(|e| panic!("{e}"));
    let artifact = artifacts.token(TestToken::Token).unwrap();
    let token = deploy_token(&s.deployer, &artifact, s.deployer.address()).await.unwrap();
    let start = U256::from(1_000_000_000u64);
    for i in 0..2 {
        transfer_tokens(&s.deployer, token, s.net.address(i), start).await.unwrap();
    }
    let open = s.open(token, 0, U256::from(10_000), 1);
    s.net.run_objectives(&[open], TIMEOUT).await.unwrap();
    let la = open.channel_id();
    s.top_up(la, U256::from(5_000)).await;
    for p in [0, 1] {
        let o = s.outcome(p, &la);
        assert_eq!((o.asset(), o.follower().amount, o.slot()), (token, U256::from(15_000), None));
    }
    let held = s.net.participants[0].chain.holdings(token, la).await.unwrap();
    assert_eq!(held, U256::from(25_000));
    let close = s.net.start(1, Request::LedgerClose { channel_id: la }).unwrap();
    s.net.run_objectives(&[close], TIMEOUT).await.unwrap();
    for i in 0..2 {
        let balance = token_balance(&s.deployer, token, s.net.address(i)).await.unwrap();
        assert_eq!(balance, start, "party {i} got back exactly what it put in, in the token");
    }
    assert_eq!(s.net.participants[0].chain.holdings(token, la).await.unwrap(), U256::ZERO);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hub_gone_with_a_slot_and_a_guarantee_alice_exits_with_both_and_no_wasted_transfers() {
    // V = [alice, hub, bob] funded (100 from alice); alice's top-up slot is in the consensus
    // state of L(hub, alice) when the hub vanishes, before any credit, and her deposit lands.
    // Alice's force close must pay her balance, her share of V (reclaimed) and the funded
    // slot; while V's guarantee remains, the transfer names only the two balances, once.
    let (mut s, la, lb) = Setup::start().await;
    let (alice, hub, bob) = (s.net.address(0), s.net.address(1), s.net.address(2));
    let fund = Request::VirtualFund {
        participants: vec![alice, hub, bob],
        asset: Address::ZERO,
        amounts: [milli(100), U256::ZERO],
        nonce: 7,
    };
    let v = s.net.start(0, fund).unwrap();
    s.net.run_objectives(&[v], TIMEOUT).await.unwrap();
    let slot = Slot { side: Side::Follower, amount: milli(200) };
    s.net.start(0, Request::LedgerTopUp { channel_id: la, amount: milli(200), asset: None }).unwrap();
    s.net
        .run_until(TIMEOUT, |ps| ps[0].party().ledger(&la).is_some_and(|l| l.consensus_outcome().slot() == Some(slot)))
        .await
        .unwrap();
    s.net.vanish(1);
    // Alice's deposit lands anyway: the slot is funded, never credited.
    let top_up = ObjectiveId::TopUp(la);
    let funded = WaitingFor::Agreement { what: "credit" };
    s.net.run_until(TIMEOUT, |ps| ps[0].party().waiting_for(&top_up) == Some(funded.clone())).await.unwrap();
    let held = s.holdings(la).await;
    assert_eq!(held, milli(2200));
    let (before, fees, sent) = (s.balances().await, s.fees(), s.net.stats.transactions);
    let a = s.net.start(0, Request::ForceClose { channel_id: la }).unwrap();
    let b = s.net.start(2, Request::ForceClose { channel_id: lb }).unwrap();
    s.settle(|ps| ps[0].party().is_complete(&a) && ps[2].party().is_complete(&b)).await;
    let g = s.gains(&before, &fees).await;
    assert_eq!(g[0], milli(1200), "alice: 900 + her 100 in V + the 200 of her slot");
    assert_eq!(g[2], milli(1000));
    assert_eq!(g[1], milli(2000), "the absent hub is paid what the states give it");
    for l in [la, lb] {
        assert_eq!(s.holdings(l).await, U256::ZERO);
    }
    // Per ledger: a challenge, a transfer of the balances, a reclaim, the last transfer; and
    // V's challenge (or two, one per end).
    let used = s.net.stats.transactions - sent;
    assert!(used <= 12, "{used} transactions for two exits");
}
