//! A deterministic, seeded network simulation: Alice, a hub and Bob — each an [`Engine`] with
//! its own SQLite store, driven exactly as the node drives it — over a network whose
//! connections break (losing what was in flight) and come back, that duplicates, reorders and
//! delays messages, with parties restarted from their stores at random moments, on the
//! in-memory adjudicator of `nitro-testkit`. Every run is replayable from its seed.
//!
//! Nothing is sent again on a timer: when a connection comes back, both ends get
//! [`Input::PeerConnected`] and resync (ADR-0021), as with the real transport.
//!
//! Each phase (open ledgers, fund virtual channels, top up the ledgers if
//! [`SimConfig::top_ups`], pay, close them, close the ledgers) runs
//! under faults for a while, then the network heals; the phase must then complete. Checked
//! on every step: money is conserved in every ledger of every party; at the end: every party
//! was paid out exactly its final balance, nothing is left held on chain, and no party signed
//! two different states at one turn (the stores' signature audit).

mod network;
mod world;

use std::collections::{BTreeMap, HashMap};

use alloy_primitives::{Address, U256};
use nitro_core::{ChannelId, SigningKey};
use nitro_testkit::MemoryAdjudicator;
use thiserror::Error;

use crate::{
    engine::{Engine, Request},
    store::{Store, StoreError},
};
use world::{party_config, Sim, CHAIN_TIME};

/// What a simulation run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed: the same seed replays the same run.
    pub seed: u64,
    /// Virtual channels funded, paid and closed through the hub.
    pub virtual_channels: usize,
    /// Probability that a message is lost while faults are on (at most 0.5); a loss breaks the
    /// connection it was on, which comes back after a few steps.
    pub drop_rate: f64,
    /// Probability that a message is delivered twice.
    pub duplicate_rate: f64,
    /// Largest delay of a message, in steps (delays reorder messages).
    pub max_delay: u64,
    /// Probability, per step, that a party is killed and restarted from its store.
    pub restart_rate: f64,
    /// Steps each phase runs with faults on before the network heals.
    pub fault_steps: u64,
    /// Steps each phase may take after healing before the run counts as stalled.
    pub heal_steps: u64,
    /// Messages a connection holds while it is down; beyond it the oldest is dropped.
    pub queue_capacity: usize,
    /// Whether Alice and Bob each top up their ledger ([`TOP_UP`]) while the virtual channels
    /// are funded (ADR-0022 §4); off in [`SimConfig::harsh`], so that the published sweeps
    /// keep their scenario.
    pub top_ups: bool,
}

/// What Alice and Bob each deposit into their ledger when [`SimConfig::top_ups`] is on.
pub const TOP_UP: u64 = 40;

impl SimConfig {
    /// Harsh defaults for a seed: up to 50% loss, duplicates, delays, restarts.
    pub fn harsh(seed: u64, virtual_channels: usize) -> Self {
        let mut rng = Rng(seed ^ 0xa076_1d64_78bd_642f);
        Self {
            seed,
            virtual_channels,
            drop_rate: rng.unit() * 0.5,
            duplicate_rate: rng.unit() * 0.2,
            max_delay: 1 + rng.below(20),
            restart_rate: rng.unit() * 0.001,
            fault_steps: 2_000,
            heal_steps: 50_000,
            queue_capacity: 16 + rng.below(64) as usize,
            top_ups: false,
        }
    }
}

/// What a run saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Steps taken.
    pub steps: u64,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages lost (the one that broke a connection, those in flight on it, those dropped
    /// from a full queue while it was down, those a restarted party's transport held).
    pub dropped: u64,
    /// Of those, dropped from a full queue.
    pub overflowed: u64,
    /// Messages duplicated.
    pub duplicated: u64,
    /// Restarts from the store.
    pub restarts: u64,
    /// Connections that came back (each end resynced).
    pub reconnections: u64,
    /// Transactions executed by the adjudicator.
    pub transactions: u64,
    /// Transactions the adjudicator reverted.
    pub reverted: u64,
    /// States signed, over all parties.
    pub signed_states: u64,
    /// Once everything is closed and the archive grace has passed: each party's live state
    /// records (rows, body bytes).
    pub live_state: Vec<(u64, u64)>,
    /// Objectives each party archived.
    pub archived: Vec<u64>,
    /// Rows each party's store gained over a further idle stretch of ticks (must be 0).
    pub idle_growth: Vec<i64>,
}

/// Why a run failed; replay it with the same seed.
#[derive(Debug, Error)]
pub enum SimFailure {
    /// A phase did not complete after the network healed.
    #[error("seed {seed}: {phase} did not complete within {steps} steps after healing:\n{report}")]
    Stalled {
        /// The seed.
        seed: u64,
        /// Which phase.
        phase: &'static str,
        /// Steps allowed.
        steps: u64,
        /// What each unfinished objective waits for.
        report: String,
    },
    /// An invariant broke.
    #[error("seed {seed}: {what}")]
    Invariant {
        /// The seed.
        seed: u64,
        /// What broke.
        #[source]
        what: InvariantError,
    },
    /// The engine or the store failed.
    #[error("seed {seed}: {error}")]
    Engine {
        /// The seed.
        seed: u64,
        /// What failed.
        error: String,
    },
}

/// A broken invariant.
#[derive(Debug, Error)]
pub enum InvariantError {
    /// A ledger's total changed.
    #[error("money not conserved in ledger {0} at {1}")]
    Money(ChannelId, String),
    /// Two different states signed at one turn.
    #[error("{0} signed two different states at one turn: {1:?}")]
    DoubleSigned(String, Vec<(String, u64)>),
    /// The payouts do not match the final balances.
    #[error("payout mismatch: {0}")]
    Payout(String),
}

/// splitmix64: small, fast, and the same everywhere.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
}

fn key(n: u8) -> SigningKey {
    let mut b = [0x5eu8; 32];
    b[31] = n;
    // 0x5e…5e0n is far below the group order and non-zero.
    SigningKey::from_bytes(&b).unwrap_or_else(|_| unreachable!("fixed valid key"))
}

/// Runs one simulation.
pub fn simulate(config: SimConfig) -> Result<SimReport, SimFailure> {
    let keys: Vec<SigningKey> = (1..=3).map(key).collect();
    let mut engines = Vec::new();
    for k in &keys {
        let store = Store::in_memory()
            .map_err(|e: StoreError| SimFailure::Engine { seed: config.seed, error: e.to_string() })?;
        let (engine, _) = Engine::open(store, k.clone(), party_config())
            .map_err(|e| SimFailure::Engine { seed: config.seed, error: e.to_string() })?;
        engines.push(Some(engine));
    }
    let mut sim = Sim {
        rng: Rng(config.seed),
        config,
        keys,
        engines,
        network: network::Network::default(),
        chain_events: BTreeMap::new(),
        sequence: 0,
        step: 0,
        faults: false,
        chain: MemoryAdjudicator::new(party_config().consensus_app, party_config().virtual_payment_app, CHAIN_TIME),
        totals: HashMap::new(),
        report: SimReport::default(),
        signed: HashMap::new(),
    };
    sim.report.seed = sim.config.seed;
    let (alice, hub, bob) = (sim.address(0), sim.address(1), sim.address(2));
    let n = sim.config.virtual_channels as u64;
    let deposit = U256::from(1_000 * (n + 1));

    let mut ledgers = Vec::new();
    for (i, other) in [alice, bob].into_iter().enumerate() {
        let request = Request::LedgerOpen {
            participants: [hub, other],
            asset: Address::ZERO,
            amounts: [deposit, deposit],
            more_assets: Vec::new(),
            nonce: i as u64,
        };
        ledgers.extend(sim.request(1, request)?);
    }
    sim.phase("opening the ledgers", &ledgers)?;

    let mut funds = Vec::new();
    for k in 0..n {
        let request = Request::VirtualFund {
            participants: vec![alice, hub, bob],
            asset: Address::ZERO,
            amounts: [U256::from(100), U256::from(50)],
            nonce: 100 + k,
        };
        funds.extend(sim.request(0, request)?);
    }
    sim.phase("funding the virtual channels", &funds)?;

    // Top-ups while the guarantees are locked: Alice of L(hub, alice) (the follower asks the
    // hub), Bob of L(hub, bob).
    let topped = if sim.config.top_ups { U256::from(TOP_UP) } else { U256::ZERO };
    if sim.config.top_ups {
        let mut top_ups = Vec::new();
        for (party, ledger) in [0, 2].into_iter().zip(&ledgers) {
            top_ups.extend(sim.request(
                party,
                Request::LedgerTopUp { channel_id: ledger.channel_id(), amount: topped, asset: None },
            )?);
        }
        sim.phase("topping up the ledgers", &top_ups)?;
    }

    for id in &funds {
        sim.request(0, Request::Pay { channel_id: id.channel_id(), amount: U256::from(30) })?;
    }
    // Vouchers ride the same faulty network; let them arrive before closing. Every one does
    // (a lost voucher is sent again when its connection comes back): Bob closes each channel
    // with what he received, which must be all Alice paid.
    sim.phase("paying", &[])?;
    let received: U256 = funds
        .iter()
        .map(|id| sim.engines[2].as_ref().map_or(U256::ZERO, |e| e.party().paid(&id.channel_id())))
        .fold(U256::ZERO, |a, b| a + b);
    if received != U256::from(30 * n) {
        let what = InvariantError::Payout(format!("bob received {received} in vouchers, alice paid {}", 30 * n));
        return Err(SimFailure::Invariant { seed: sim.config.seed, what });
    }
    let mut defunds = Vec::new();
    for id in &funds {
        // Bob closes with what he received (the payer accepts anything up to what it paid).
        defunds.extend(sim.request(2, Request::VirtualDefund { channel_id: id.channel_id() })?);
    }
    sim.phase("closing the virtual channels", &defunds)?;

    let mut closes = Vec::new();
    for l in &ledgers {
        closes.extend(sim.request(1, Request::LedgerClose { channel_id: l.channel_id() })?);
    }
    sim.phase("closing the ledgers", &closes)?;

    // Everyone got exactly its final balance: the hub what it put in; Alice paid Bob what
    // Bob's vouchers say.
    let expect =
        [(alice, deposit - received + topped), (hub, deposit * U256::from(2)), (bob, deposit + received + topped)];
    for (who, amount) in expect {
        let got = sim.chain.paid_out.get(&who).copied().unwrap_or_default();
        if got != amount {
            let what = InvariantError::Payout(format!("{who} got {got}, expected {amount}"));
            return Err(SimFailure::Invariant { seed: sim.config.seed, what });
        }
    }
    if let Some((channel, held)) = sim.chain.all_holdings().find(|(_, held)| !held.is_zero()) {
        let what = InvariantError::Payout(format!("channel {channel} still holds {held}"));
        return Err(SimFailure::Invariant { seed: sim.config.seed, what });
    }
    sim.report.signed_states = sim.signed.len() as u64;
    sim.settle()?;
    Ok(sim.report)
}
