//! The simulated world: the parties' engines, the network between them and the chain.

use std::collections::{HashMap, VecDeque};

use alloy_primitives::{Address, U256};
use nitro_core::{
    chain::ChainEvent,
    party::{Envelope, ObjectiveId, PartyConfig, TransactionRequest},
    ChannelId, SigningKey, B256,
};
use nitro_testkit::MemoryAdjudicator;

use super::{
    network::{pair, Network, Pair},
    InvariantError, Rng, SimConfig, SimFailure, SimReport,
};
use crate::{
    engine::{Engine, EngineError, Input, Output, Request},
    store::StoreError,
};

/// Chain time of the simulated chain (nothing in the simulation waits for it to move).
pub(super) const CHAIN_TIME: u64 = 1_000_000;

/// Steps between two timer ticks of every party.
const TICK_EVERY: u64 = 25;

pub(super) struct Sim {
    pub(super) config: SimConfig,
    pub(super) rng: Rng,
    pub(super) keys: Vec<SigningKey>,
    pub(super) engines: Vec<Option<Engine>>,
    pub(super) network: Network,
    /// Confirmed events the watcher has not reported yet: (step, sequence) → event.
    pub(super) chain_events: std::collections::BTreeMap<(u64, u64), ChainEvent>,
    pub(super) sequence: u64,
    pub(super) step: u64,
    pub(super) faults: bool,
    pub(super) chain: MemoryAdjudicator,
    pub(super) totals: HashMap<ChannelId, U256>,
    pub(super) report: SimReport,
    /// Every state each party signed, from the engines' outputs (independent of the stores,
    /// which refuse a second state at one turn on their own).
    pub(super) signed: HashMap<(usize, ChannelId, u64), B256>,
}

pub(super) fn party_config() -> PartyConfig {
    PartyConfig {
        consensus_app: Address::repeat_byte(0xca),
        virtual_payment_app: Address::repeat_byte(0xfa),
        challenge_duration: nitro_core::U48::from(3600),
    }
}

impl Sim {
    pub(super) fn fail(&self, error: impl ToString) -> SimFailure {
        SimFailure::Engine { seed: self.config.seed, error: error.to_string() }
    }

    fn engine(&mut self, i: usize) -> Result<&mut Engine, SimFailure> {
        let seed = self.config.seed;
        self.engines[i].as_mut().ok_or(SimFailure::Engine { seed, error: "engine missing".into() })
    }

    pub(super) fn address(&self, i: usize) -> Address {
        self.keys[i].address()
    }

    fn index_of(&self, a: Address) -> Option<usize> {
        self.keys.iter().position(|k| k.address() == a)
    }

    /// How long a broken connection stays down.
    fn downtime(&mut self) -> u64 {
        1 + self.rng.below(2 * self.config.max_delay + 1)
    }

    /// Sends a message: held (in a bounded queue) while its connection is down; while faults
    /// are on, maybe lost (breaking the connection), duplicated or delayed (which reorders).
    fn send(&mut self, from: usize, envelope: Envelope) {
        let Some(to) = self.index_of(envelope.to) else { return };
        let link = pair(from, to);
        if !self.network.is_up(link) {
            let dropped = self.network.hold(link, from, envelope, self.config.queue_capacity);
            self.report.dropped += dropped;
            self.report.overflowed += dropped;
            return;
        }
        if self.faults && self.rng.chance(self.config.drop_rate) {
            self.report.dropped += 1;
            let until = self.step + self.downtime();
            self.network.break_link(link, until);
            return;
        }
        let copies = if self.faults && self.rng.chance(self.config.duplicate_rate) { 2 } else { 1 };
        self.report.duplicated += copies - 1;
        for _ in 0..copies {
            let delay = if self.faults { self.rng.below(self.config.max_delay + 1) } else { 0 };
            self.network.schedule(self.step + 1 + delay, from, to, envelope.clone());
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

    pub(super) fn step_engine(&mut self, i: usize, input: Input) -> Result<(), SimFailure> {
        match self.engine(i)?.step(input) {
            Ok(output) => self.absorb(i, output),
            Err(EngineError::Party(_)) => Ok(()), // refused: changes nothing
            Err(EngineError::Declined { output, .. }) => self.absorb(i, *output),
            Err(EngineError::Store(StoreError::ConflictingSignature { channel, turn, .. })) => {
                let what = InvariantError::DoubleSigned(format!("party {i}"), vec![(channel, turn)]);
                Err(SimFailure::Invariant { seed: self.config.seed, what })
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// Executes a transaction on the in-memory adjudicator as party `i`; a revert is reported
    /// to the objective that asked for it.
    fn execute(&mut self, i: usize, request: TransactionRequest) -> Result<(), SimFailure> {
        let sender = self.address(i);
        match self.chain.execute(sender, &request.transaction) {
            Ok(events) => {
                self.report.transactions += 1;
                for event in events {
                    self.emit(event);
                }
            }
            Err(_) => {
                self.report.reverted += 1;
                if let Some(objective) = request.objective {
                    self.step_engine(i, Input::TransactionFailed { objective, refused: None })?;
                }
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

    /// Kills party `i` and opens its store again: its connections break (what was in flight
    /// to or from it is lost, and so is what its transport held), and it hands its recent
    /// outbox to its new transport, which sends it once each connection is back.
    fn restart(&mut self, i: usize) -> Result<(), SimFailure> {
        let Some(engine) = self.engines[i].take() else { return Ok(()) };
        let store = engine.into_store();
        let (engine, recovery) = Engine::open(store, self.keys[i].clone(), party_config()).map_err(|e| self.fail(e))?;
        self.engines[i] = Some(engine);
        self.report.restarts += 1;
        for j in (0..self.engines.len()).filter(|j| *j != i) {
            let until = self.step + self.downtime();
            self.network.break_link(pair(i, j), until);
            let (mine, theirs): (VecDeque<_>, VecDeque<_>) =
                self.network.take_held(pair(i, j)).into_iter().partition(|(from, _)| *from == i);
            self.report.dropped += mine.len() as u64;
            for (from, envelope) in theirs {
                self.send(from, envelope);
            }
        }
        for (_, envelope) in recovery.messages {
            self.send(i, envelope);
        }
        // Stored transactions are not resubmitted blindly (a deposit of a channel concluded
        // since would be lost): the objectives resubmit what they still need on their timers.
        Ok(())
    }

    /// A connection is back: what each end's transport still held goes out, then both ends
    /// resync.
    fn reconnected(&mut self, link: Pair) -> Result<(), SimFailure> {
        let (a, b) = link;
        for (from, envelope) in self.network.take_held(link) {
            self.send(from, envelope);
        }
        self.report.reconnections += 1;
        let (address_a, address_b) = (self.address(a), self.address(b));
        self.step_engine(a, Input::PeerConnected { peer: address_b })?;
        self.step_engine(b, Input::PeerConnected { peer: address_a })
    }

    /// One step: connections come back, messages and chain events that are due arrive, maybe
    /// someone restarts, and every party ticks every 25 steps.
    pub(super) fn tick(&mut self) -> Result<(), SimFailure> {
        self.step += 1;
        self.report.steps += 1;
        for link in self.network.reconnect(self.step, !self.faults) {
            self.reconnected(link)?;
        }
        for (flight, held) in self.network.due(self.step) {
            if !held {
                self.report.dropped += 1;
                continue;
            }
            self.report.delivered += 1;
            let from = self.address(flight.from);
            self.step_engine(flight.to, Input::Message { from, payload: flight.envelope.payload })?;
        }
        let rest = self.chain_events.split_off(&(self.step + 1, 0));
        for event in std::mem::replace(&mut self.chain_events, rest).into_values() {
            for i in 0..self.engines.len() {
                self.step_engine(i, Input::Chain(event.clone()))?;
            }
        }
        if self.faults && self.rng.chance(self.config.restart_rate) {
            let i = self.rng.below(self.engines.len() as u64) as usize;
            self.restart(i)?;
        }
        if self.step.is_multiple_of(TICK_EVERY) {
            self.tick_all()?;
        }
        self.check_money()
    }

    pub(super) fn tick_all(&mut self) -> Result<(), SimFailure> {
        for i in 0..self.engines.len() {
            self.step_engine(i, Input::Tick { unix_secs: 0, chain_time: Some(CHAIN_TIME) })?;
        }
        Ok(())
    }

    /// Every pair of parties reconnects (both ends resync).
    pub(super) fn reconnect_all(&mut self) -> Result<(), SimFailure> {
        let n = self.engines.len();
        for a in 0..n {
            for b in a + 1..n {
                self.reconnected((a, b))?;
            }
        }
        Ok(())
    }

    fn check_money(&mut self) -> Result<(), SimFailure> {
        for engine in self.engines.iter().flatten() {
            for ledger in engine.party().ledgers() {
                let outcome = ledger.consensus_outcome();
                let (total, before_slot) = (outcome.total(), outcome.total_without_slot());
                let slot = outcome.slot().map(|s| s.amount);
                let base = *self.totals.entry(ledger.channel_id()).or_insert(total.unwrap_or_default());
                // Constant, but for the one top-up of each ledger when they are on: reserved
                // (the slot on top of the base), then credited (into the base).
                let top_up = U256::from(super::TOP_UP);
                let conserved = match (self.config.top_ups, before_slot, slot) {
                    (_, Some(b), None) if b == base => true,
                    (true, Some(b), Some(s)) => b == base && s == top_up,
                    (true, Some(b), None) => Some(b) == base.checked_add(top_up),
                    _ => false,
                };
                if !conserved {
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
    pub(super) fn phase(&mut self, name: &'static str, ids: &[ObjectiveId]) -> Result<(), SimFailure> {
        self.faults = true;
        for _ in 0..self.config.fault_steps {
            self.tick()?;
        }
        self.faults = false;
        for _ in 0..self.config.heal_steps {
            if self.all_done(ids) && self.network.is_empty() && self.network.all_up() {
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

    /// Each party's store rows, in all.
    fn rows(&self) -> Result<Vec<i64>, SimFailure> {
        let mut out = Vec::new();
        for e in self.engines.iter().flatten() {
            let counts = e.store().row_counts().map_err(|e| self.fail(EngineError::Store(e)))?;
            out.push(counts.iter().map(|(_, n)| *n as i64).sum());
        }
        Ok(out)
    }

    /// Ticks every party past the archive grace, records what each store keeps, then ticks
    /// an idle while longer (with every connection coming back once) and records what that
    /// added.
    pub(super) fn settle(&mut self) -> Result<(), SimFailure> {
        for _ in 0..=nitro_core::party::EVICT_AFTER_TICKS {
            self.tick_all()?;
        }
        for e in self.engines.iter().flatten() {
            self.report.live_state.push(e.store().state_size().map_err(|e| self.fail(EngineError::Store(e)))?);
            let archived = e.store().row_counts().map_err(|e| self.fail(EngineError::Store(e)))?;
            self.report.archived.extend(archived.iter().filter(|(t, _)| *t == "archive").map(|(_, n)| *n));
        }
        let before = self.rows()?;
        for _ in 0..100 {
            self.tick_all()?;
        }
        self.reconnect_all()?;
        for _ in 0..100 {
            self.tick_all()?;
        }
        let after = self.rows()?;
        self.report.idle_growth = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        Ok(())
    }

    pub(super) fn request(&mut self, i: usize, request: Request) -> Result<Option<ObjectiveId>, SimFailure> {
        let output = self.engine(i)?.step(Input::Request(request)).map_err(|e| self.fail(e))?;
        let started = output.started;
        self.absorb(i, output)?;
        Ok(started)
    }
}
