//! A deterministic, seeded network simulation: Alice, a hub and Bob — each an [`Engine`] with
//! its own SQLite store — over a network that drops, duplicates, reorders and delays
//! messages, with parties restarted from their stores at random moments, and an in-memory
//! chain. Every run is replayable from its seed.
//!
//! Each phase (open ledgers, fund virtual channels, pay, close them, close the ledgers) runs
//! under faults for a while, then the network heals; the phase must then complete. Checked
//! on every step: money is conserved in every ledger of every party; at the end: no party
//! signed two different states at one turn (the stores' signature audit).

use std::collections::{BTreeMap, HashMap};

use alloy_primitives::{Address, U256};
use nitro_core::{
    address_of,
    chain::{ChainEvent, ChainTransaction},
    party::{Envelope, ObjectiveId, PartyConfig, TransactionRequest},
    ChannelId, SigningKey, U48,
};
use thiserror::Error;

use crate::{
    engine::{Engine, EngineError, Input, Output, Request},
    store::{Store, StoreError},
};

/// What a simulation run does.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// The seed: the same seed replays the same run.
    pub seed: u64,
    /// Virtual channels funded, paid and closed through the hub.
    pub virtual_channels: usize,
    /// Probability that a message is lost while faults are on (at most 0.5).
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
}

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
    /// Messages lost.
    pub dropped: u64,
    /// Messages duplicated.
    pub duplicated: u64,
    /// Restarts from the store.
    pub restarts: u64,
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

struct Sim {
    config: SimConfig,
    rng: Rng,
    keys: Vec<SigningKey>,
    engines: Vec<Option<Engine>>,
    /// (deliver at step, sequence) → (from, envelope)
    network: BTreeMap<(u64, u64), (usize, Envelope)>,
    chain_events: BTreeMap<(u64, u64), ChainEvent>,
    sequence: u64,
    step: u64,
    faults: bool,
    holdings: HashMap<ChannelId, U256>,
    totals: HashMap<ChannelId, U256>,
    paid_out: HashMap<Address, U256>,
    block: u64,
    report: SimReport,
    /// Every state each party signed, from the engines' outputs (independent of the stores,
    /// which refuse a second state at one turn on their own).
    signed: HashMap<(usize, ChannelId, u64), nitro_core::B256>,
}

fn party_config() -> PartyConfig {
    PartyConfig {
        consensus_app: Address::repeat_byte(0xca),
        virtual_payment_app: Address::repeat_byte(0xfa),
        challenge_duration: U48::from(3600),
    }
}

impl Sim {
    fn fail(&self, error: impl ToString) -> SimFailure {
        SimFailure::Engine { seed: self.config.seed, error: error.to_string() }
    }

    fn engine(&mut self, i: usize) -> Result<&mut Engine, SimFailure> {
        let seed = self.config.seed;
        self.engines[i].as_mut().ok_or(SimFailure::Engine { seed, error: "engine missing".into() })
    }

    fn address(&self, i: usize) -> Address {
        self.keys[i].address()
    }

    fn index_of(&self, a: Address) -> Option<usize> {
        self.keys.iter().position(|k| k.address() == a)
    }

    fn send(&mut self, from: usize, envelope: Envelope) {
        if self.faults && self.rng.chance(self.config.drop_rate) {
            self.report.dropped += 1;
            return;
        }
        let copies = if self.faults && self.rng.chance(self.config.duplicate_rate) { 2 } else { 1 };
        self.report.duplicated += copies - 1;
        for _ in 0..copies {
            let delay = if self.faults { self.rng.below(self.config.max_delay + 1) } else { 0 };
            self.sequence += 1;
            self.network.insert((self.step + 1 + delay, self.sequence), (from, envelope.clone()));
        }
    }

    fn absorb(&mut self, i: usize, output: Output) -> Result<(), SimFailure> {
        for s in &output.signed {
            let key = (i, s.channel_id, s.turn_num.to::<u64>());
            if self.signed.insert(key, s.state_hash).is_some_and(|h| h != s.state_hash) {
                let what = InvariantError::DoubleSigned(format!("party {i}"), vec![(s.channel_id.to_string(), key.2)]);
                return Err(SimFailure::Invariant { seed: self.config.seed, what });
            }
        }
        for (_, envelope) in output.messages {
            self.send(i, envelope);
        }
        for (_, request) in output.transactions {
            self.execute(i, request)?;
        }
        Ok(())
    }

    fn step_engine(&mut self, i: usize, input: Input) -> Result<(), SimFailure> {
        match self.engine(i)?.step(input) {
            Ok(output) => self.absorb(i, output),
            Err(EngineError::Party(_)) => Ok(()), // refused: changes nothing
            Err(EngineError::Store(StoreError::ConflictingSignature { channel, turn, .. })) => {
                let what = InvariantError::DoubleSigned(format!("party {i}"), vec![(channel, turn)]);
                Err(SimFailure::Invariant { seed: self.config.seed, what })
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The chain double: deposits must see exactly their expected holdings; a conclusion pays
    /// every allocation of the final state once.
    fn execute(&mut self, i: usize, request: TransactionRequest) -> Result<(), SimFailure> {
        let ok = match &request.transaction {
            ChainTransaction::Deposit { channel_id, asset, expected_held, amount } => {
                let held = self.holdings.entry(*channel_id).or_default();
                if held == expected_held {
                    *held += *amount;
                    self.block += 1;
                    let event = ChainEvent::Deposited {
                        channel_id: *channel_id,
                        block_number: self.block,
                        asset: *asset,
                        now_held: *held,
                    };
                    self.emit(event);
                    true
                } else {
                    false
                }
            }
            ChainTransaction::ConcludeAndTransferAllAssets { state } => {
                let channel_id = state.channel_id();
                let held = self.holdings.get(&channel_id).copied().unwrap_or_default();
                if held.is_zero() || request.transaction.validate().is_err() {
                    false
                } else {
                    for a in &state.state().outcome.0[0].allocations {
                        if let Some(who) = address_of(&a.destination) {
                            *self.paid_out.entry(who).or_default() += a.amount;
                        }
                    }
                    self.holdings.insert(channel_id, U256::ZERO);
                    self.block += 1;
                    let block_number = self.block;
                    self.emit(ChainEvent::Concluded { channel_id, block_number, finalizes_at: 0 });
                    self.emit(ChainEvent::AllocationUpdated {
                        channel_id,
                        block_number,
                        asset_index: U256::ZERO,
                        initial_holdings: held,
                        final_holdings: U256::ZERO,
                    });
                    true
                }
            }
            _ => false,
        };
        if !ok {
            if let Some(objective) = request.objective {
                self.step_engine(i, Input::TransactionFailed { objective })?;
            }
        }
        Ok(())
    }

    fn emit(&mut self, event: ChainEvent) {
        // The chain is reliable but the watcher may report late.
        let delay = if self.faults { self.rng.below(self.config.max_delay + 1) } else { 0 };
        self.sequence += 1;
        self.chain_events.insert((self.step + 1 + delay, self.sequence), event);
    }

    fn restart(&mut self, i: usize) -> Result<(), SimFailure> {
        let Some(engine) = self.engines[i].take() else { return Ok(()) };
        let store = engine.into_store();
        let (engine, recovery) = Engine::open(store, self.keys[i].clone(), party_config()).map_err(|e| self.fail(e))?;
        self.engines[i] = Some(engine);
        self.report.restarts += 1;
        for (_, envelope) in recovery.messages {
            self.send(i, envelope);
        }
        // Stored transactions are not resubmitted blindly (a deposit of a channel concluded
        // since would be lost): the objectives resubmit what they still need on their timers.
        Ok(())
    }

    /// One step: deliver what is due, maybe restart someone, tick every 25 steps.
    fn tick(&mut self) -> Result<(), SimFailure> {
        self.step += 1;
        self.report.steps += 1;
        let due: Vec<(u64, u64)> = self.network.range(..=(self.step, u64::MAX)).map(|(k, _)| *k).collect();
        for k in due {
            if let Some((from, envelope)) = self.network.remove(&k) {
                let Some(to) = self.index_of(envelope.to) else { continue };
                self.report.delivered += 1;
                let sender = self.address(from);
                self.step_engine(to, Input::Message { from: sender, payload: envelope.payload })?;
            }
        }
        let due: Vec<(u64, u64)> = self.chain_events.range(..=(self.step, u64::MAX)).map(|(k, _)| *k).collect();
        for k in due {
            if let Some(event) = self.chain_events.remove(&k) {
                for i in 0..self.engines.len() {
                    self.step_engine(i, Input::Chain(event.clone()))?;
                }
            }
        }
        if self.faults && self.rng.chance(self.config.restart_rate) {
            let i = self.rng.below(self.engines.len() as u64) as usize;
            self.restart(i)?;
        }
        if self.step.is_multiple_of(25) {
            for i in 0..self.engines.len() {
                self.step_engine(i, Input::tick())?;
            }
        }
        self.check_money()
    }

    fn check_money(&mut self) -> Result<(), SimFailure> {
        for engine in self.engines.iter().flatten() {
            for ledger in engine.party().ledgers() {
                let total = ledger.consensus_outcome().total();
                let expected = *self.totals.entry(ledger.channel_id()).or_insert(total.unwrap_or_default());
                if total != Some(expected) {
                    let what = InvariantError::Money(ledger.channel_id(), format!("step {}", self.step));
                    return Err(SimFailure::Invariant { seed: self.config.seed, what });
                }
            }
        }
        Ok(())
    }

    fn all_done(&self, ids: &[ObjectiveId]) -> bool {
        ids.iter().all(|id| {
            self.engines.iter().flatten().all(|e| e.party().objective(id).is_none() || e.party().is_complete(id))
        })
    }

    /// Runs with faults for a while, then heals the network until `ids` are done everywhere.
    fn phase(&mut self, name: &'static str, ids: &[ObjectiveId]) -> Result<(), SimFailure> {
        self.faults = true;
        for _ in 0..self.config.fault_steps {
            self.tick()?;
        }
        self.faults = false;
        for _ in 0..self.config.heal_steps {
            if self.all_done(ids) && self.network.is_empty() {
                return Ok(());
            }
            self.tick()?;
        }
        if self.all_done(ids) {
            return Ok(());
        }
        let mut report = String::new();
        for (i, engine) in self.engines.iter().flatten().enumerate() {
            for (id, done) in engine.party().objectives() {
                if !done {
                    let w = engine.party().waiting_for(&id).map(|w| w.to_string()).unwrap_or_default();
                    report.push_str(&format!("  party {i}: {id}: {w}\n"));
                }
            }
        }
        Err(SimFailure::Stalled { seed: self.config.seed, phase: name, steps: self.config.heal_steps, report })
    }

    /// Ticks every party past the archive grace, records what each store keeps, then ticks
    /// an idle while longer and records what that added.
    fn settle(&mut self) -> Result<(), SimFailure> {
        let rows = |sim: &Self| -> Result<Vec<i64>, SimFailure> {
            let mut out = Vec::new();
            for e in sim.engines.iter().flatten() {
                let counts = e.store().row_counts().map_err(|e| sim.fail(EngineError::Store(e)))?;
                out.push(counts.iter().map(|(_, n)| *n as i64).sum());
            }
            Ok(out)
        };
        let tick_all = |sim: &mut Self, n: u32| -> Result<(), SimFailure> {
            for _ in 0..n {
                for i in 0..sim.engines.len() {
                    sim.step_engine(i, Input::tick())?;
                }
            }
            Ok(())
        };
        tick_all(self, nitro_core::party::EVICT_AFTER_TICKS + 1)?;
        for e in self.engines.iter().flatten() {
            self.report.live_state.push(e.store().state_size().map_err(|e| self.fail(EngineError::Store(e)))?);
            let archived = e.store().row_counts().map_err(|e| self.fail(EngineError::Store(e)))?;
            self.report.archived.extend(archived.iter().filter(|(t, _)| *t == "archive").map(|(_, n)| *n));
        }
        let before = rows(self)?;
        tick_all(self, 200)?;
        let after = rows(self)?;
        self.report.idle_growth = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        Ok(())
    }

    fn request(&mut self, i: usize, request: Request) -> Result<Option<ObjectiveId>, SimFailure> {
        let output = self.engine(i)?.step(Input::Request(request)).map_err(|e| self.fail(e))?;
        let started = output.started;
        self.absorb(i, output)?;
        Ok(started)
    }
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
        network: BTreeMap::new(),
        chain_events: BTreeMap::new(),
        sequence: 0,
        step: 0,
        faults: false,
        holdings: HashMap::new(),
        totals: HashMap::new(),
        paid_out: HashMap::new(),
        block: 0,
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

    for id in &funds {
        sim.request(0, Request::Pay { channel_id: id.channel_id(), amount: U256::from(30) })?;
    }
    // Vouchers ride the same faulty network; let them arrive before closing.
    sim.phase("paying", &[])?;
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
    let received: U256 = funds
        .iter()
        .map(|id| sim.engines[2].as_ref().map_or(U256::ZERO, |e| e.party().paid(&id.channel_id())))
        .fold(U256::ZERO, |a, b| a + b);
    let expect = [(alice, deposit - received), (hub, deposit * U256::from(2)), (bob, deposit + received)];
    for (who, amount) in expect {
        let got = sim.paid_out.get(&who).copied().unwrap_or_default();
        if got != amount {
            let what = InvariantError::Payout(format!("{who} got {got}, expected {amount}"));
            return Err(SimFailure::Invariant { seed: sim.config.seed, what });
        }
    }
    sim.report.signed_states = sim.signed.len() as u64;
    sim.settle()?;
    Ok(sim.report)
}
