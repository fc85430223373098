//! `nitro demo`: Alice and Bob open ledgers with a hub on a local chain, fund virtual
//! channels through it, pay, close everything, and get exactly what the states say.

use std::time::{Duration, Instant};

use alloy_primitives::{utils::format_ether, Address, U256};
use clap::Args;
use nitro_chain::{
    deploy_token, dev_key, token_balance, transfer_tokens, Anvil, Artifacts, ChainConfig, ChainService, Contracts,
    EthClient, TestToken, TokenArtifacts,
};
use nitro_core::{party::PartyConfig, U48};
use nitro_node::{engine::Request, store_path, LocalChainSettings, LocalNetwork, NetworkError, Stores};
use serde_json::{json, Value};

use crate::UsageError;

/// Options of `nitro demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Virtual channels to fund, use and close through the hub.
    #[arg(long, default_value_t = 10)]
    virtual_channels: usize,
    /// Payments from Alice to Bob in each virtual channel.
    #[arg(long, default_value_t = 3)]
    payments: usize,
    /// Print only one JSON object summarizing the run.
    #[arg(long)]
    json: bool,
    /// Keep each party's SQLite store in this directory (`alice.db`, `hub.db`, `bob.db`,
    /// durable: every step fsync'd) instead of in memory. The demo starts a fresh chain, so
    /// the directory must not hold stores of an earlier run.
    #[arg(long, value_name = "DIR")]
    store_dir: Option<std::path::PathBuf>,
}

fn fail(e: impl std::fmt::Display) -> UsageError {
    UsageError(e.to_string())
}

const WEI_PER_MILLI: u64 = 1_000_000_000_000_000;
/// Token units each party is given (the hub puts TOKEN_PER_LEDGER into each of its ledgers).
const TOKEN_START: u64 = 1_000_000;
/// Token units each side deposits into each ledger.
const TOKEN_PER_LEDGER: u64 = 400_000;

/// Runs the demo on a fresh anvil chain.
pub fn run(args: DemoArgs) -> Result<Value, UsageError> {
    if args.virtual_channels == 0 || args.virtual_channels > 1000 {
        return Err(UsageError("--virtual-channels must be between 1 and 1000".into()));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().map_err(fail)?;
    runtime.block_on(demo(args))
}

struct Say {
    quiet: bool,
    start: Instant,
}

impl Say {
    fn line(&self, text: impl AsRef<str>) {
        if !self.quiet {
            println!("[{:>6.2}s] {}", self.start.elapsed().as_secs_f64(), text.as_ref());
        }
    }
}

fn eth(wei: U256) -> String {
    format!("{} ETH", format_ether(wei))
}

async fn demo(args: DemoArgs) -> Result<Value, UsageError> {
    let say = Say { quiet: args.json, start: Instant::now() };
    let n = args.virtual_channels;
    let anvil = Anvil::spawn().map_err(fail)?;
    say.line(format!("anvil started at {} (chain id 31337)", anvil.endpoint()));
    let artifacts = Artifacts::locate().map_err(fail)?;
    let deployer_key = dev_key(0).ok_or_else(|| fail("no dev key 0"))?;
    let deployer = EthClient::connect(&anvil.endpoint(), &deployer_key, ChainConfig::default()).await.map_err(fail)?;
    let contracts = Contracts::deploy(&deployer, &artifacts).await.map_err(fail)?;
    say.line(format!(
        "deployed NitroAdjudicator {} · ConsensusApp {} · VirtualPaymentApp {}",
        contracts.adjudicator, contracts.consensus_app, contracts.virtual_payment_app
    ));

    let names = ["alice", "hub", "bob"];
    let keys = (1..=3).map(|i| dev_key(i).ok_or_else(|| fail("no dev key"))).collect::<Result<Vec<_>, _>>()?;
    let config = PartyConfig {
        consensus_app: contracts.consensus_app,
        virtual_payment_app: contracts.virtual_payment_app,
        challenge_duration: U48::from(86_400),
    };
    let parties = names.iter().map(|n| n.to_string()).zip(keys).collect();
    let stores = match &args.store_dir {
        Some(dir) => {
            if let Some(old) = names.iter().map(|n| store_path(dir, n)).find(|p| p.exists()) {
                return Err(fail(format!(
                    "{} exists: the demo starts a fresh chain; remove the stores of the earlier run or pick another --store-dir",
                    old.display()
                )));
            }
            say.line(format!("stores on disk in {}", dir.display()));
            Stores::Directory(dir.clone())
        }
        None => Stores::InMemory,
    };
    let mut net = LocalNetwork::connect_with(
        &anvil.endpoint(),
        &contracts,
        parties,
        config,
        &stores,
        LocalChainSettings::default(),
    )
    .await
    .map_err(fail)?;
    let (alice, hub, bob) = (net.address(0), net.address(1), net.address(2));
    let mut before = Vec::new();
    for i in 0..3 {
        before.push(net.participants[i].chain.client().balance(net.address(i)).await.map_err(fail)?);
        say.line(format!("{:<5} {}  balance {}", names[i], net.address(i), eth(before[i])));
    }

    // The ERC-20 the ledgers hold besides ETH: nitro-protocol's own Token.sol (compiled at
    // setup), TOKEN_START units to each party.
    let artifact = TokenArtifacts::locate().and_then(|a| a.token(TestToken::Token)).map_err(fail)?;
    let token = deploy_token(&deployer, &artifact, deployer.address()).await.map_err(fail)?;
    let mut tokens_before = Vec::new();
    for i in 0..3 {
        transfer_tokens(&deployer, token, net.address(i), U256::from(TOKEN_START)).await.map_err(fail)?;
        tokens_before.push(token_balance(&deployer, token, net.address(i)).await.map_err(fail)?);
    }
    say.line(format!("deployed ERC-20 Token {token}; {TOKEN_START} units to each party"));

    // 1. Ledgers, led by the hub, each holding ETH and the token: each side deposits 1 ETH per
    // virtual channel (+1 spare) and TOKEN_PER_LEDGER units (approve + deposit).
    let per_ledger = U256::from(WEI_PER_MILLI) * U256::from(1000 * (n as u64 + 1));
    let tokens = U256::from(TOKEN_PER_LEDGER);
    let more_assets = vec![(token, [tokens, tokens])];
    say.line(format!(
        "opening L(hub, alice) and L(hub, bob): {} and {tokens} token units from each side",
        eth(per_ledger)
    ));
    let la = net
        .start(
            1,
            Request::LedgerOpen {
                participants: [hub, alice],
                asset: Address::ZERO,
                amounts: [per_ledger, per_ledger],
                nonce: 1,
                more_assets: more_assets.clone(),
            },
        )
        .map_err(fail)?;
    let lb = net
        .start(
            1,
            Request::LedgerOpen {
                participants: [hub, bob],
                asset: Address::ZERO,
                amounts: [per_ledger, per_ledger],
                nonce: 2,
                more_assets,
            },
        )
        .map_err(fail)?;
    let timeout = Duration::from_secs(120);
    net.run_objectives(&[la, lb], timeout).await.map_err(fail_net)?;
    for (name, id) in [("L(hub, alice)", la), ("L(hub, bob)", lb)] {
        let held = net.participants[1].chain.holdings(Address::ZERO, id.channel_id()).await.map_err(fail)?;
        let held_tokens = net.participants[1].chain.holdings(token, id.channel_id()).await.map_err(fail)?;
        say.line(format!(
            "{name} {} funded: on-chain holdings {} and {held_tokens} token units",
            id.channel_id(),
            eth(held)
        ));
    }

    // 2. Virtual channels Alice → Bob through the hub, all at once.
    let a = U256::from(WEI_PER_MILLI) * U256::from(100u64);
    say.line(format!("funding {n} virtual channels alice → hub → bob, {} each from alice", eth(a)));
    let started = Instant::now();
    let mut funds = Vec::new();
    for k in 0..n {
        funds.push(
            net.start(
                0,
                Request::VirtualFund {
                    participants: vec![alice, hub, bob],
                    asset: Address::ZERO,
                    amounts: [a, U256::ZERO],
                    nonce: k as u64,
                },
            )
            .map_err(fail)?,
        );
    }
    net.run_objectives(&funds, timeout).await.map_err(fail_net)?;
    say.line(format!(
        "{n} virtual channels funded in {:.0} ms: {} guarantees locked in the two ledgers",
        started.elapsed().as_secs_f64() * 1e3,
        net.stats.guarantees_locked
    ));
    ledger_line(&net, &say, 1, la.channel_id(), "L(hub, alice)");
    ledger_line(&net, &say, 1, lb.channel_id(), "L(hub, bob)");

    // 3. Payments: vouchers from Alice to Bob.
    let payment = U256::from(WEI_PER_MILLI) * U256::from(7u64);
    for id in &funds {
        for _ in 0..args.payments {
            net.request(0, Request::Pay { channel_id: id.channel_id(), amount: payment }).map_err(fail)?;
        }
    }
    net.run_until(timeout, |ps| {
        funds.iter().all(|id| ps[2].party().paid(&id.channel_id()) == payment * U256::from(args.payments))
    })
    .await
    .map_err(fail_net)?;
    say.line(format!("alice paid bob {} × {} in each channel (signed vouchers)", args.payments, eth(payment)));

    // 3a. While the virtual channels are open, Alice tops up L(hub, alice) in the token: a slot for her is
    // agreed, she deposits into it, and once the chain shows it the slot is credited to her
    // balance (ADR-0022) — nothing closes.
    let top_up = tokens / U256::from(2u64);
    let t = net
        .start(0, Request::LedgerTopUp { channel_id: la.channel_id(), amount: top_up, asset: Some(token) })
        .map_err(fail)?;
    net.run_until(timeout, |ps| ps[0].party().is_complete(&t) && ps[1].party().is_complete(&t))
        .await
        .map_err(fail_net)?;
    say.line(format!("alice topped up L(hub, alice) by {top_up} token units with {n} virtual channels open"));
    ledger_line(&net, &say, 1, la.channel_id(), "L(hub, alice)");

    // 3b. While the virtual channels are open, Bob withdraws half of his ETH balance in
    // L(hub, bob): the ledger migrates to a successor carrying every guarantee, funded by the
    // old one's conclusion (one transaction) — no virtual channel closes (ADR-0022).
    let withdrawal = per_ledger / U256::from(2u64);
    let w = net
        .start(2, Request::LedgerWithdraw { channel_id: lb.channel_id(), amount: withdrawal, asset: None })
        .map_err(fail)?;
    net.run_objectives(&[w], timeout).await.map_err(fail_net)?;
    let lb_now = net.participants[1].party().current_ledger(lb.channel_id());
    say.line(format!(
        "bob withdrew {} from L(hub, bob) with {n} virtual channels open: it continues as {lb_now}, every guarantee carried",
        eth(withdrawal)
    ));
    ledger_line(&net, &say, 1, lb_now, "L'(hub, bob)");

    // 4. Bob closes the virtual channels; the guarantees go back into the ledgers.
    let mut defunds = Vec::new();
    for id in &funds {
        defunds.push(net.start(2, Request::VirtualDefund { channel_id: id.channel_id() }).map_err(fail)?);
    }
    net.run_objectives(&defunds, timeout).await.map_err(fail_net)?;
    say.line(format!("{n} virtual channels closed: {} guarantees released", net.stats.guarantees_released));
    ledger_line(&net, &say, 1, la.channel_id(), "L(hub, alice)");
    ledger_line(&net, &say, 1, lb_now, "L'(hub, bob)");

    // 5. Close the ledgers on chain.
    let da = net.start(1, Request::LedgerClose { channel_id: la.channel_id() }).map_err(fail)?;
    let db = net.start(1, Request::LedgerClose { channel_id: lb_now }).map_err(fail)?;
    net.run_objectives(&[da, db], timeout).await.map_err(fail_net)?;
    let (mut leftover, mut leftover_tokens) = (U256::ZERO, U256::ZERO);
    for (name, id) in [("L(hub, alice)", la.channel_id()), ("L(hub, bob)", lb.channel_id()), ("L'(hub, bob)", lb_now)] {
        let held = net.participants[1].chain.holdings(Address::ZERO, id).await.map_err(fail)?;
        let held_tokens = net.participants[1].chain.holdings(token, id).await.map_err(fail)?;
        leftover += held;
        leftover_tokens += held_tokens;
        say.line(format!(
            "{name} concluded and paid out: on-chain holdings {} and {held_tokens} token units",
            eth(held)
        ));
    }
    let (mut token_deposited, mut token_withdrawn) = (serde_json::Map::new(), serde_json::Map::new());
    for (p, held_before) in net.participants.iter().zip(&tokens_before) {
        let put = p.deposits.get(&token).copied().unwrap_or_default();
        let after = token_balance(&deployer, token, p.chain.client().address()).await.map_err(fail)?;
        let got = (after + put).saturating_sub(*held_before);
        say.line(format!("{:<5} deposited {put} token units, withdrew {got}", p.name));
        token_deposited.insert(p.name.clone(), json!(put.to_string()));
        token_withdrawn.insert(p.name.clone(), json!(got.to_string()));
    }

    let mut deposited = serde_json::Map::new();
    let mut withdrawn = serde_json::Map::new();
    for i in 0..3 {
        let p = &net.participants[i];
        let after = p.chain.client().balance(net.address(i)).await.map_err(fail)?;
        // after = before - deposits - fees + withdrawals
        let got = (after + p.deposited + p.fees_paid).saturating_sub(before[i]);
        say.line(format!(
            "{:<5} deposited {}, withdrew {}, fees {}: net {}{}",
            names[i],
            eth(p.deposited),
            eth(got),
            eth(p.fees_paid),
            if got >= p.deposited { "+" } else { "-" },
            eth(if got >= p.deposited { got - p.deposited } else { p.deposited - got })
        ));
        deposited.insert(names[i].into(), json!(p.deposited.to_string()));
        withdrawn.insert(names[i].into(), json!(got.to_string()));
    }
    say.line(format!(
        "{} messages, {} transactions, {} adjudicator events",
        net.stats.messages, net.stats.transactions, net.stats.chain_events
    ));
    let defunded = [da, db].iter().filter(|id| net.participants[1].party().is_complete(id)).count();
    let summary = json!({
        "ledgers_funded": 2,
        "virtual_channels": n,
        "guarantees_added": net.stats.guarantees_locked,
        "guarantees_removed": net.stats.guarantees_released,
        "ledgers_defunded": defunded,
        "deposited_wei": deposited,
        "withdrawn_wei": withdrawn,
        "leftover_holdings_wei": leftover.to_string(),
        "assets": {
            Address::ZERO.to_string(): {
                "deposited_wei": deposited,
                "withdrawn_wei": withdrawn,
                "leftover_holdings_wei": leftover.to_string(),
            },
            token.to_string(): {
                "deposited_wei": token_deposited,
                "withdrawn_wei": token_withdrawn,
                "leftover_holdings_wei": leftover_tokens.to_string(),
            },
        },
        "resized_ledgers": net.stats.resized_ledgers,
    });
    drop(anvil);
    if args.json {
        Ok(summary)
    } else {
        Ok(Value::String(format!("done: every state above was signed by its parties and settled on chain\n{summary}")))
    }
}

fn fail_net(e: NetworkError) -> UsageError {
    UsageError(e.to_string())
}

fn ledger_line(net: &LocalNetwork, say: &Say, party: usize, ledger: nitro_core::ChannelId, name: &str) {
    if let Some(l) = net.participants[party].party().ledger(&ledger) {
        let o = l.consensus_outcome();
        say.line(format!(
            "{name} turn {}: hub {} · other {} · {} guarantee(s) {}",
            l.consensus_turn(),
            eth(o.leader().amount),
            eth(o.follower().amount),
            o.guarantees().len(),
            eth(o.guarantees().fold(U256::ZERO, |s, g| s + g.amount()))
        ));
    }
}
