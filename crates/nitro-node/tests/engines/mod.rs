//! Shared by the engine-level tests: keys, the party configuration, and a network of engines
//! over the in-memory adjudicator that delivers messages and chain events until all is quiet.
#![allow(dead_code)]

use std::collections::VecDeque;

use alloy_primitives::Address;
use nitro_core::{
    party::{Envelope, PartyConfig},
    SigningKey, U48,
};
use nitro_node::engine::{Engine, Input, Output};
use nitro_testkit::MemoryAdjudicator;

/// The test key `n` (1, 2, 3 …).
pub fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b).unwrap()
}

/// The party configuration every test party uses.
pub fn config() -> PartyConfig {
    PartyConfig {
        consensus_app: Address::repeat_byte(0xca),
        virtual_payment_app: Address::repeat_byte(0xfa),
        challenge_duration: U48::from(60),
    }
}

/// Engines that talk to each other in order, and the chain they share.
pub struct Network {
    /// The engines.
    pub engines: Vec<Engine>,
    /// The chain.
    pub chain: MemoryAdjudicator,
    /// Messages on their way: (sender index, envelope).
    pub queue: VecDeque<(usize, Envelope)>,
    /// Deliver everything queued for an engine as one group ([`Engine::step_group`]).
    pub grouped: bool,
    /// Ledger proposals sent (each a signed state).
    pub proposals: u64,
}

impl Network {
    /// A network of `engines` on a fresh chain.
    pub fn new(engines: Vec<Engine>) -> Self {
        let chain = MemoryAdjudicator::new(config().consensus_app, config().virtual_payment_app, 1_000);
        Self { engines, chain, queue: VecDeque::new(), grouped: false, proposals: 0 }
    }

    fn index_of(&self, address: Address) -> usize {
        self.engines.iter().position(|x| x.party().address() == address).unwrap()
    }

    /// Takes what engine `i` produced: messages queued, transactions executed (their events
    /// fed to everyone).
    pub fn absorb(&mut self, i: usize, out: Output) {
        for (_, m) in out.messages {
            if matches!(m.payload, nitro_core::party::Payload::Ledger(nitro_core::LedgerMessage::Proposal(_))) {
                self.proposals += 1;
            }
            self.queue.push_back((i, m));
        }
        let sender = self.engines[i].party().address();
        let mut events = Vec::new();
        for (id, t) in out.transactions {
            events.extend(self.chain.execute(sender, &t.transaction).unwrap());
            self.engines[i].store().transaction_done(id).unwrap();
        }
        for ev in events {
            for j in 0..self.engines.len() {
                let out = self.engines[j].step(Input::Chain(ev.clone())).unwrap();
                self.absorb(j, out);
            }
        }
    }

    /// Delivers until nothing is left to deliver.
    pub fn run(&mut self) {
        let mut rounds = 0;
        while !self.queue.is_empty() {
            rounds += 1;
            assert!(rounds < 100_000, "no quiet after 100,000 rounds");
            if self.grouped {
                // Everything queued for the first recipient, as one group.
                let to = self.index_of(self.queue[0].1.to);
                let mut inputs = Vec::new();
                let mut rest = VecDeque::new();
                for (from, e) in std::mem::take(&mut self.queue) {
                    if self.index_of(e.to) == to {
                        let from = self.engines[from].party().address();
                        inputs.push(Input::Message { from, payload: e.payload });
                    } else {
                        rest.push_back((from, e));
                    }
                }
                self.queue = rest;
                let group = self.engines[to].step_group(inputs).unwrap();
                self.absorb(to, group.output);
            } else {
                let (from, e) = self.queue.pop_front().unwrap();
                let sender = self.engines[from].party().address();
                let to = self.index_of(e.to);
                let out = self.engines[to].step(Input::Message { from: sender, payload: e.payload }).unwrap();
                self.absorb(to, out);
            }
        }
    }
}
