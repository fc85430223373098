//! Ledgers on a chain that behaves like one: blocks that take their time, reorgs at each
//! funding and closing step, a flaky endpoint (lost answers, 5xx, late receipts, an outage of
//! seconds, a refusal), fee spikes, a stale challenge during an outage and a spike. Each ends
//! with every objective complete, no money lost (each balance changes by exactly what the
//! signed states give, less the gas paid), no transaction sent twice where once was enough
//! (nonces counted), and the stale challenge answered before its deadline.
//!
//! Each test starts its own anvil (`npm ci` at the repository root installs it). Where blocks
//! must come at chosen moments, the test mines them itself (`--no-mining`), a block every few
//! hundred milliseconds; elsewhere anvil mines with `--block-time`.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use nitro_chain::{
    dev_key,
    proxy::{Fault, RpcProxy},
    Anvil, AnvilBuilder, Artifacts, ChainConfig, ChainService, Contracts, EthChainService, EthClient, EventWatcher,
    WatcherConfig,
};
use nitro_core::{
    chain::{ChainEvent, ChainTransaction},
    party::{Objective, ObjectiveId, PartyConfig},
    ChannelId, U48,
};
use nitro_node::{engine::Request, LocalChainSettings, LocalNetwork, Stores};

const ETH: Address = Address::ZERO;
const PATIENCE: Duration = Duration::from_secs(120);
const GWEI: u128 = 1_000_000_000;

fn milli(n: u64) -> U256 {
    U256::from(n) * U256::from(1_000_000_000_000_000u64)
}

struct World {
    anvil: Anvil,
    proxy: RpcProxy,
    net: LocalNetwork,
    /// The test's own view of the chain (straight to anvil, depth 1).
    observer: EventWatcher,
    direct: EthChainService,
    contracts: Contracts,
}

impl World {
    /// Parties `names` (dev accounts 1, 2, …) talking to anvil (started with `args`) through a
    /// fault-injecting proxy, acting at confirmation depth `depth`.
    async fn start(names: &[&str], args: &[&str], depth: u64, challenge_duration: u64) -> Self {
        let builder = args.iter().fold(AnvilBuilder::default(), |b, a| b.arg(*a));
        let anvil = builder.spawn().unwrap_or_else(|e| panic!("{e}"));
        let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
        let deployer =
            EthClient::connect(&anvil.endpoint(), &dev_key(0).unwrap(), ChainConfig::default()).await.unwrap();
        if args.contains(&"--no-mining") {
            anvil.set_automine(true).await.unwrap(); // deploy, then back to mining by hand
        }
        let contracts = Contracts::deploy(&deployer, &artifacts).await.unwrap();
        if args.contains(&"--no-mining") {
            anvil.set_automine(false).await.unwrap();
        }
        let proxy = RpcProxy::start(anvil.port()).await.unwrap();
        let config = PartyConfig {
            consensus_app: contracts.consensus_app,
            virtual_payment_app: contracts.virtual_payment_app,
            challenge_duration: U48::from(challenge_duration),
        };
        let parties = names.iter().zip(1..).map(|(n, i)| (n.to_string(), dev_key(i).unwrap())).collect();
        let settings = LocalChainSettings {
            confirmations: Some(depth),
            client: ChainConfig { rpc_timeout: Duration::from_secs(5), ..ChainConfig::default() },
            ..LocalChainSettings::default()
        };
        let net = LocalNetwork::connect_with(&proxy.url(), &contracts, parties, config, &Stores::InMemory, settings)
            .await
            .unwrap();
        let direct = EthChainService::new(deployer, contracts.adjudicator);
        let from = direct.client().block_number().await.unwrap();
        let observer = direct.watcher(from).with_config(WatcherConfig { confirmations: 1, ..WatcherConfig::default() });
        Self { anvil, proxy, net, observer, direct, contracts }
    }

    async fn nonce(&self, i: usize) -> u64 {
        let key = dev_key(i + 1).unwrap();
        let client = EthClient::connect(&self.anvil.endpoint(), &key, ChainConfig::default()).await.unwrap();
        client.nonce(false).await.unwrap()
    }

    async fn balance(&self, i: usize) -> U256 {
        self.direct.client().balance(self.net.address(i)).await.unwrap()
    }

    async fn holdings(&self, channel: ChannelId) -> U256 {
        self.direct.holdings(ETH, channel).await.unwrap()
    }

    /// Balances, fees paid and nonces of every party now.
    async fn books(&self) -> Vec<(U256, U256, u64)> {
        let mut out = Vec::new();
        for i in 0..self.net.participants.len() {
            out.push((self.balance(i).await, self.net.participants[i].fees_paid, self.nonce(i).await));
        }
        out
    }

    /// What each party gained since `before` with the gas it paid added back, and how many
    /// transactions it sent.
    async fn since(&self, before: &[(U256, U256, u64)]) -> Vec<(i128, u64)> {
        let now = self.books().await;
        let wei = |u: U256| i128::try_from(u).unwrap();
        now.iter().zip(before).map(|((b, f, n), (b0, f0, n0))| (wei(*b) + wei(*f - *f0) - wei(*b0), n - n0)).collect()
    }

    /// Runs the parties and mines a block by hand, until an event matching `wanted` is in the
    /// block just mined (it is then at the tip: one block deep).
    async fn mine_until(&mut self, wanted: impl Fn(&ChainEvent) -> bool) -> ChainEvent {
        let deadline = Instant::now() + PATIENCE;
        loop {
            self.net.run_for(Duration::from_millis(350)).await.unwrap();
            self.anvil.mine().await.unwrap();
            for event in self.observer.poll().await.unwrap() {
                if wanted(&event) {
                    return event;
                }
            }
            assert!(Instant::now() < deadline, "not mined in time:\n{}", self.net.report());
        }
    }

    /// Runs the parties (mining by hand if `mine`) until `done`.
    async fn run_until(&mut self, mine: bool, done: impl Fn(&LocalNetwork) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        while !done(&self.net) {
            assert!(Instant::now() < deadline, "not done in time:\n{}", self.net.report());
            self.net.run_for(Duration::from_millis(350)).await.unwrap();
            if mine {
                self.anvil.mine().await.unwrap();
            }
        }
    }

    /// Waits until every transaction in flight is reported (fees and deposits counted),
    /// mining by hand if `mine`.
    async fn settle(&mut self, mine: bool) {
        let deadline = Instant::now() + PATIENCE;
        while !self.net.settle_in_flight_within(Duration::from_millis(300)).await.unwrap() {
            let stats: Vec<_> = self.net.participants.iter().map(|p| p.transactions.stats()).collect();
            assert!(Instant::now() < deadline, "transactions still in flight: {stats:?}\n{}", self.net.report());
            if mine {
                self.anvil.mine().await.unwrap();
            }
        }
    }
}

fn complete(id: ObjectiveId) -> impl Fn(&LocalNetwork) -> bool {
    move |net| net.participants.iter().all(|p| p.party().objective(&id).is_none() || p.party().is_complete(&id))
}

fn postfund_signatures(net: &LocalNetwork, id: &ObjectiveId) -> usize {
    let count = |p: &nitro_node::Participant| match p.party().objective(id) {
        Some(Objective::DirectFund(d)) => d.postfund().signatures().iter().flatten().count(),
        _ => 0,
    };
    net.participants.iter().map(count).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reorgs_below_the_depth_at_each_funding_and_closing_step_are_never_acted_on() {
    // Depth 2: a reorg of one block must never be acted on. The test mines each block, so that
    // each reorg takes back exactly the block of the step.
    let mut w = World::start(&["hub", "bob"], &["--no-mining"], 2, 600).await;
    let (hub, bob) = (w.net.address(0), w.net.address(1));
    let before = w.books().await;
    let open = w
        .net
        .start(
            0,
            Request::LedgerOpen {
                participants: [hub, bob],
                asset: ETH,
                amounts: [milli(400), milli(600)],
                nonce: 1,
                more_assets: Vec::new(),
            },
        )
        .unwrap();
    let ledger = open.channel_id();

    // The hub's deposit is mined, and taken back by a reorg before it is two deep.
    w.mine_until(|e| matches!(e, ChainEvent::Deposited { now_held, .. } if *now_held == milli(400))).await;
    w.anvil.reorg(1).await.unwrap();
    assert_eq!(w.holdings(ledger).await, U256::ZERO);
    // It is made again; bob's deposit follows, and is taken back in turn: nobody signed a
    // postfund on it.
    w.mine_until(|e| matches!(e, ChainEvent::Deposited { now_held, .. } if *now_held == milli(1000))).await;
    assert_eq!(postfund_signatures(&w.net, &open), 0, "no postfund on holdings one block deep");
    w.anvil.reorg(1).await.unwrap();
    assert_eq!(w.holdings(ledger).await, milli(400));
    w.run_until(true, complete(open)).await;
    assert_eq!(w.holdings(ledger).await, milli(1000), "funded exactly once by each");

    // The conclusion is mined and taken back before it is final: the ledger stays open until
    // the conclusion that lands again is two deep.
    let close = w.net.start(0, Request::LedgerClose { channel_id: ledger }).unwrap();
    w.mine_until(|e| matches!(e, ChainEvent::Concluded { .. })).await;
    assert!(w.net.participants.iter().all(|p| p.party().ledger(&ledger).is_some()), "not closed at one block deep");
    w.anvil.reorg(1).await.unwrap();
    assert_eq!(w.holdings(ledger).await, milli(1000));
    w.run_until(true, complete(close)).await;
    assert_eq!(w.holdings(ledger).await, U256::ZERO);

    w.settle(true).await;
    let changes = w.since(&before).await;
    assert_eq!(
        changes,
        vec![(0, 2), (0, 1)],
        "each got its deposit back, less gas; hub: deposit and conclusion, bob: deposit"
    );
    assert_eq!(w.net.stats.retractions, 0, "nothing below the depth was ever reported");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_depth_one_a_reorg_of_a_reported_deposit_is_retracted_and_the_deposit_made_again_once() {
    // Depth 1, as this test says: the deposit is reported as soon as it is mined, so the reorg
    // reaches what the parties saw. Bob signs the prefund, then is gone.
    let mut w = World::start(&["hub", "bob"], &["--no-mining"], 1, 60).await;
    let (hub, bob) = (w.net.address(0), w.net.address(1));
    let nonce_before = w.nonce(0).await;
    let open = w
        .net
        .start(
            0,
            Request::LedgerOpen {
                participants: [hub, bob],
                asset: ETH,
                amounts: [milli(400), milli(600)],
                nonce: 1,
                more_assets: Vec::new(),
            },
        )
        .unwrap();
    let ledger = open.channel_id();
    w.run_until(false, |net| matches!(net.participants[0].party().objective(&open), Some(Objective::DirectFund(d)) if d.prefund().is_fully_signed())).await;
    w.net.vanish(1);
    w.mine_until(|e| matches!(e, ChainEvent::Deposited { .. })).await;
    w.net.run_for(Duration::from_millis(300)).await.unwrap(); // reported to the hub
    w.anvil.reorg(1).await.unwrap();
    assert_eq!(w.holdings(ledger).await, U256::ZERO, "taken back");
    // Retracted, made again: exactly the deposit on chain, one transaction.
    let deadline = Instant::now() + PATIENCE;
    loop {
        w.net.run_for(Duration::from_millis(350)).await.unwrap();
        w.anvil.mine().await.unwrap();
        let settled = w.net.stats.retractions >= 1 && w.net.transactions_in_flight() == 0;
        if settled && w.holdings(ledger).await == milli(400) {
            break;
        }
        assert!(Instant::now() < deadline, "{:?}\n{}", w.net.stats, w.net.report());
    }
    w.settle(true).await;
    assert_eq!(w.holdings(ledger).await, milli(400), "made again, once");
    assert_eq!(w.nonce(0).await, nonce_before + 1, "at the nonce the reorg freed: one deposit transaction");

    // Bob never comes back: the hub leaves with its deposit, on chain.
    let before = w.books().await;
    let exit = w.net.start(0, Request::ForceClose { channel_id: ledger }).unwrap();
    while !w.net.participants[0].party().is_complete(&exit) {
        assert!(Instant::now() < deadline, "{}", w.net.report());
        w.net.run_for(Duration::from_millis(350)).await.unwrap();
        w.anvil.advance_time(20).await.unwrap(); // mines a block, 20 s later
    }
    w.settle(true).await;
    assert_eq!(w.holdings(ledger).await, U256::ZERO);
    let changes = w.since(&before).await;
    assert_eq!(changes[0].0, i128::try_from(milli(400)).unwrap(), "the hub got its deposit back, less gas");
    assert_eq!(changes[1], (0, 0), "bob: nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_endpoint_never_hangs_or_duplicates_a_ledgers_funding_and_closing() {
    // Automining anvil behind a proxy that loses the first send's answer, answers the first
    // receipts late and then with 503s, refuses one estimation as a revert (which reaches the
    // objective: it asks again on its timer, nothing else happening), and goes away for 3 s.
    let mut w = World::start(&["hub", "bob"], &[], 1, 600).await;
    let (hub, bob) = (w.net.address(0), w.net.address(1));
    let counter = |n: u32| std::sync::Arc::new(std::sync::atomic::AtomicU32::new(n));
    let (sends, receipts, estimates) = (counter(0), counter(0), counter(0));
    w.proxy.set_rule(move |call| {
        let next = |c: &std::sync::atomic::AtomicU32| c.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        match call.method {
            "eth_sendRawTransaction" if next(&sends) == 0 => Fault::LoseAnswer,
            "eth_getTransactionReceipt" => match next(&receipts) {
                0..=3 => Fault::Delay(Duration::from_millis(300)),
                4..=7 => Fault::Http(503),
                _ => Fault::Forward,
            },
            "eth_estimateGas" if next(&estimates) == 1 => {
                Fault::Error(3, "execution reverted: held != expectedHeld".into())
            }
            _ => Fault::Forward,
        }
    });
    let before = w.books().await;
    let open = w
        .net
        .start(
            0,
            Request::LedgerOpen {
                participants: [hub, bob],
                asset: ETH,
                amounts: [milli(300), milli(700)],
                nonce: 1,
                more_assets: Vec::new(),
            },
        )
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while w.proxy.count("eth_sendRawTransaction") == 0 {
        assert!(Instant::now() < deadline);
        w.net.run_for(Duration::from_millis(100)).await.unwrap();
    }
    w.proxy.outage(Duration::from_secs(3));
    w.run_until(false, complete(open)).await;
    let close = w.net.start(0, Request::LedgerClose { channel_id: open.channel_id() }).unwrap();
    w.run_until(false, complete(close)).await;
    assert_eq!(w.holdings(open.channel_id()).await, U256::ZERO);
    w.settle(false).await;
    assert_eq!(w.since(&before).await, vec![(0, 2), (0, 1)], "exact balances; one transaction per need");
    assert!(w.net.stats.failed_transactions >= 1, "the refused estimation reached the objective");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_challenge_is_answered_before_its_deadline_through_an_outage_and_a_fee_spike() {
    // Blocks every second; depth 2; a 30 s challenge window.
    let mut w = World::start(&["alice", "hub", "bob"], &["--block-time", "1"], 2, 30).await;
    let (alice, hub, bob) = (w.net.address(0), w.net.address(1), w.net.address(2));
    let a = w
        .net
        .start(
            1,
            Request::LedgerOpen {
                participants: [hub, alice],
                asset: ETH,
                amounts: [milli(100), milli(100)],
                nonce: 1,
                more_assets: Vec::new(),
            },
        )
        .unwrap();
    let b = w
        .net
        .start(
            1,
            Request::LedgerOpen {
                participants: [hub, bob],
                asset: ETH,
                amounts: [milli(100), milli(100)],
                nonce: 2,
                more_assets: Vec::new(),
            },
        )
        .unwrap();
    w.net.run_objectives(&[a, b], PATIENCE).await.unwrap();
    let v = w
        .net
        .start(
            0,
            Request::VirtualFund {
                participants: vec![alice, hub, bob],
                asset: ETH,
                amounts: [milli(10), U256::ZERO],
                nonce: 3,
            },
        )
        .unwrap();
    w.net.run_objectives(&[v], PATIENCE).await.unwrap();
    let la = a.channel_id();
    let latest = w.net.participants[1].party().ledger(&la).unwrap().consensus_turn();
    let stale = match w.net.participants[0].party().objective(&a) {
        Some(Objective::DirectFund(d)) => d.postfund().clone(),
        _ => panic!("alice funded L(hub, alice)"),
    };

    // Alice (gone from now on) challenges with the old postfund, straight to the chain. The
    // hub's first send of its answer meets an endpoint gone for 5 s; as it comes back, the
    // base fee has jumped 100-fold (for 10 s): the answer's price is stale.
    w.net.vanish(0);
    let before = w.nonce(1).await;
    let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (proxy, went_down) = (w.proxy.clone(), down.clone());
    w.proxy.set_rule(move |call| {
        if call.method == "eth_sendRawTransaction" && !went_down.swap(true, std::sync::atomic::Ordering::SeqCst) {
            proxy.outage(Duration::from_secs(5));
            return Fault::Drop;
        }
        Fault::Forward
    });
    let alice_chain = EthChainService::new(
        EthClient::connect(&w.anvil.endpoint(), &dev_key(1).unwrap(), ChainConfig::default()).await.unwrap(),
        w.contracts.adjudicator,
    );
    alice_chain.submit(&ChainTransaction::challenge(stale, &dev_key(1).unwrap()).unwrap()).await.unwrap();
    let finalizes_at = w.direct.status_of(la).await.unwrap().finalizes_at;
    let mut spike_until = None;
    let deadline = Instant::now() + PATIENCE;
    loop {
        if down.load(std::sync::atomic::Ordering::SeqCst) {
            let until = *spike_until.get_or_insert_with(|| Instant::now() + Duration::from_secs(10));
            if Instant::now() < until {
                w.anvil.set_next_block_base_fee(100 * GWEI).await.unwrap();
            }
        }
        w.net.run_for(Duration::from_millis(250)).await.unwrap();
        let status = w.direct.status_of(la).await.unwrap();
        if status.finalizes_at == 0 {
            assert_eq!(status.turn_num_record, latest, "our latest consensus state is on chain");
            break;
        }
        let now = w.direct.chain_time().await.unwrap();
        let stats = w.net.participants[1].transactions.stats();
        assert!(
            now < finalizes_at,
            "the challenge finalized unanswered: {stats:?}\n{:?}\n{}",
            w.net.stats,
            w.net.report()
        );
        assert!(Instant::now() < deadline, "{}", w.net.report());
    }
    let cleared_at = w.direct.chain_time().await.unwrap();
    w.settle(false).await;
    let stats = w.net.participants[1].transactions.stats();
    eprintln!("hub's manager: {stats:?}; net: {:?}", w.net.stats);
    assert!(cleared_at < finalizes_at, "answered at chain time {cleared_at}, before {finalizes_at}");
    assert_eq!(w.nonce(1).await, before + 1, "one answer (re-priced at its nonce, not sent twice)");
    assert!(stats.lowest_deadline_margin_secs.is_some(), "{stats:?}");
    eprintln!("answered with {} s to spare; manager: {stats:?}", finalizes_at - cleared_at);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_waits_in_chain_time_while_the_leaders_conclusion_is_re_priced_through_a_fee_spike() {
    // Blocks every 2 s; depth 1 (this test is about patience, not reorgs).
    let mut w = World::start(&["hub", "bob"], &["--block-time", "2"], 1, 600).await;
    let (hub, bob) = (w.net.address(0), w.net.address(1));
    let open = w
        .net
        .start(
            0,
            Request::LedgerOpen {
                participants: [hub, bob],
                asset: ETH,
                amounts: [milli(250), milli(750)],
                nonce: 1,
                more_assets: Vec::new(),
            },
        )
        .unwrap();
    w.net.run_objectives(&[open], PATIENCE).await.unwrap();
    let before = w.books().await;
    let sent = w.net.participants[0].transactions.stats().sent;
    let close = w.net.start(0, Request::LedgerClose { channel_id: open.channel_id() }).unwrap();
    // As soon as the hub's conclusion is sent, the next blocks' base fee jumps 300-fold for 8 s:
    // its price is stale; the hub's manager re-prices it; bob waits.
    let deadline = Instant::now() + PATIENCE;
    while w.net.participants[0].transactions.stats().sent == sent {
        assert!(Instant::now() < deadline);
        w.net.run_for(Duration::from_millis(20)).await.unwrap();
    }
    let spike_until = Instant::now() + Duration::from_secs(8);
    while !complete(close)(&w.net) {
        assert!(Instant::now() < deadline, "{}", w.net.report());
        if Instant::now() < spike_until {
            w.anvil.set_next_block_base_fee(300 * GWEI).await.unwrap();
        }
        w.net.run_for(Duration::from_millis(200)).await.unwrap();
    }
    w.settle(false).await;
    let changes = w.since(&before).await;
    assert_eq!(changes[1], (i128::try_from(milli(750)).unwrap(), 0), "bob: his balance, and no conclusion of his");
    assert_eq!(changes[0], (i128::try_from(milli(250)).unwrap(), 1), "the hub: its balance, one conclusion");
    assert_eq!(w.holdings(open.channel_id()).await, U256::ZERO);
}
