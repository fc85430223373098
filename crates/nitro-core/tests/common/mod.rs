//! The in-memory harness of the party tests: parties, a network that may lose messages, and
//! `nitro-testkit`'s in-memory adjudicator.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};

use nitro_core::{
    chain::{ChainEvent, ChainTransaction},
    party::{Clock, Effects, Envelope, ObjectiveId, Party, PartyConfig, PartyError},
    Address, ChannelId, LedgerOutcome, SigningKey, B256, U256, U48,
};
use nitro_testkit::MemoryAdjudicator;

pub fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b).unwrap()
}

pub fn config() -> PartyConfig {
    PartyConfig {
        consensus_app: Address::repeat_byte(0xca),
        virtual_payment_app: Address::repeat_byte(0xfa),
        challenge_duration: U48::from(60),
    }
}

pub struct World {
    pub parties: Vec<Party>,
    pub network: VecDeque<(Address, Envelope)>,
    pub chain: MemoryAdjudicator,
    /// Confirmed chain events not yet delivered to the parties.
    pub chain_events: VecDeque<ChainEvent>,
    /// Lose about one message in n (0: none).
    pub drop_every: u64,
    /// Random state of the message loss.
    pub sent: u64,
    /// Every state each party signed, checked on the fly: one state per (party, channel, turn).
    pub signed: HashMap<(Address, ChannelId, U48), B256>,
    /// Parties that are gone: they receive nothing, send nothing and never tick.
    pub gone: Vec<bool>,
    /// Transactions to lose (not executed, reported failed), counted down.
    pub lose_transactions: usize,
}

impl World {
    pub fn new() -> Self {
        Self::with_parties(3)
    }

    pub fn with_parties(n: u8) -> Self {
        let parties = (1..=n).map(|n| Party::new(key(n), config())).collect();
        Self {
            parties,
            network: VecDeque::new(),
            chain: MemoryAdjudicator::new(config().consensus_app, config().virtual_payment_app, 1_000_000),
            chain_events: VecDeque::new(),
            drop_every: 0,
            sent: 0x9e37_79b9_7f4a_7c15,
            signed: HashMap::new(),
            gone: vec![false; usize::from(n)],
            lose_transactions: 0,
        }
    }

    pub fn addr(&self, i: usize) -> Address {
        self.parties[i].address()
    }

    pub fn index_of(&self, a: Address) -> usize {
        self.parties.iter().position(|p| p.address() == a).unwrap()
    }

    pub fn absorb(&mut self, from: usize, effects: Effects) {
        let sender = self.addr(from);
        if self.gone[from] {
            return;
        }
        for s in &effects.signed {
            let previous = self.signed.insert((sender, s.channel_id, s.turn_num), s.state_hash);
            assert!(
                previous.is_none_or(|h| h == s.state_hash),
                "{sender} signed two different states of {} at turn {}",
                s.channel_id,
                s.turn_num
            );
        }
        for e in effects.messages {
            // xorshift: a deterministic, non-periodic choice of which messages to lose.
            self.sent ^= self.sent << 13;
            self.sent ^= self.sent >> 7;
            self.sent ^= self.sent << 17;
            if self.drop_every > 0 && self.sent % self.drop_every == 0 {
                continue;
            }
            self.network.push_back((sender, e));
        }
        for t in effects.transactions {
            if self.lose_transactions > 0 {
                self.lose_transactions -= 1;
                if let Some(id) = t.objective {
                    let fx = self.parties[from].transaction_failed(id);
                    self.absorb(from, fx);
                }
                continue;
            }
            let events = self.execute(sender, &t.transaction);
            match events {
                Ok(events) => self.chain_events.extend(events),
                Err(()) => {
                    if let Some(id) = t.objective {
                        let fx = self.parties[from].transaction_failed(id);
                        self.absorb(from, fx);
                    }
                }
            }
        }
    }

    pub fn execute(&mut self, sender: Address, tx: &ChainTransaction) -> Result<Vec<ChainEvent>, ()> {
        self.chain.execute(sender, tx).map_err(|_| ())
    }

    /// Moves chain time on by `secs` and ticks every party (its timer, with the chain's clock).
    pub fn tick(&mut self, secs: u64) {
        self.chain.advance(secs);
        let clock = Clock { unix_secs: self.chain.now, chain_time: Some(self.chain.now) };
        for i in (0..self.parties.len()).filter(|i| !self.gone[*i]).collect::<Vec<_>>() {
            let fx = self.parties[i].tick(clock);
            self.absorb(i, fx);
        }
    }

    /// Delivers every confirmed chain event to every party ("the watcher").
    pub fn deliver_chain_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.chain_events.pop_front() {
            any = true;
            for i in (0..self.parties.len()).filter(|i| !self.gone[*i]).collect::<Vec<_>>() {
                let fx = self.parties[i].handle_chain_event(&ev);
                self.absorb(i, fx);
            }
        }
        any
    }

    /// Delivers messages (in order) and chain events until everything is quiet.
    pub fn run(&mut self) {
        let mut steps = 0;
        loop {
            while let Some((from, e)) = self.network.pop_front() {
                steps += 1;
                assert!(steps < 1_000_000, "livelock");
                let to = self.index_of(e.to);
                if self.gone[to] {
                    continue;
                }
                match self.parties[to].handle_message(from, e.payload) {
                    Ok(fx) => self.absorb(to, fx),
                    Err(e) => panic!("message refused: {e}"),
                }
            }
            if !self.deliver_chain_events() {
                break;
            }
        }
    }

    /// Delivers messages and chain events, ticking every party `secs` of chain time at a
    /// time, until `done` holds (panics after `rounds`). Refused messages are dropped.
    pub fn run_until(&mut self, secs: u64, rounds: usize, done: impl Fn(&World) -> bool) {
        for _ in 0..rounds {
            loop {
                while let Some((from, e)) = self.network.pop_front() {
                    let to = self.index_of(e.to);
                    if self.gone[to] {
                        continue;
                    }
                    match self.parties[to].handle_message(from, e.payload) {
                        Ok(fx) => self.absorb(to, fx),
                        Err(PartyError::Refused { answer, .. }) => self.absorb(to, *answer),
                        Err(_) => {}
                    }
                }
                if !self.deliver_chain_events() {
                    break;
                }
            }
            if done(self) {
                return;
            }
            self.tick(secs);
        }
        panic!("did not get there in {rounds} rounds");
    }

    /// Every pair of parties that are not gone reconnects: each resyncs the other (what a
    /// lost message may have withheld; a drop counts as a broken connection).
    pub fn reconnect_all(&mut self) {
        let here: Vec<usize> = (0..self.parties.len()).filter(|i| !self.gone[*i]).collect();
        for &i in &here {
            for &j in here.iter().filter(|j| **j != i) {
                let fx = self.parties[i].resync(self.addr(j));
                self.absorb(i, fx);
            }
        }
    }

    /// Delivers with drops, reconnecting every pair of parties (a drop breaks the
    /// connection; both ends resync when it comes back) until `done` holds.
    pub fn run_lossy(&mut self, done: impl Fn(&World) -> bool) {
        for _ in 0..200 {
            while let Some((from, e)) = self.network.pop_front() {
                let to = self.index_of(e.to);
                if let Ok(fx) = self.parties[to].handle_message(from, e.payload) {
                    self.absorb(to, fx);
                }
            }
            self.deliver_chain_events();
            if done(self) {
                return;
            }
            self.reconnect_all();
        }
        let report: Vec<String> = self
            .parties
            .iter()
            .flat_map(|p| {
                p.objectives()
                    .filter(|(_, done)| !done)
                    .map(move |(id, _)| format!("{}: {id}: {}", p.address(), p.waiting_for(&id).unwrap()))
            })
            .collect();
        panic!("did not complete: {report:#?}");
    }

    pub fn call(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Party) -> Result<(ObjectiveId, Effects), PartyError>,
    ) -> ObjectiveId {
        let (id, fx) = f(&mut self.parties[i]).unwrap();
        self.absorb(i, fx);
        id
    }

    pub fn open_ledgers(&mut self, amount: u64) -> (ChannelId, ChannelId) {
        let (alice, hub, bob) = (self.addr(0), self.addr(1), self.addr(2));
        let a =
            self.call(1, |p| p.direct_fund([hub, alice], Address::ZERO, [U256::from(amount), U256::from(amount)], 1));
        let b = self.call(1, |p| p.direct_fund([hub, bob], Address::ZERO, [U256::from(amount), U256::from(amount)], 2));
        self.run();
        for id in [a, b] {
            assert!(self.parties[1].is_complete(&id), "{id}: {:?}", self.parties[1].waiting_for(&id));
        }
        assert!(self.parties[0].is_complete(&a) && self.parties[2].is_complete(&b));
        (a.channel_id(), b.channel_id())
    }
}

pub fn outcome_of(p: &Party, ledger: &ChannelId) -> LedgerOutcome {
    p.ledger(ledger).unwrap().consensus_outcome().clone()
}
