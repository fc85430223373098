//! A withdrawal survives restarts: both nodes stop in the middle of it (the responder's
//! answer, with its signature on the old ledger's final state, still in its outbox), reopen
//! their SQLite stores, and finish it from what was stored; the successor link is stored too.

use std::collections::VecDeque;

use alloy_primitives::{Address, U256};
use nitro_core::{
    chain::ChainEvent,
    party::{Envelope, ObjectiveId, PartyConfig},
    SigningKey, U48,
};
use nitro_node::{
    engine::{Engine, Input, Output, Request},
    store::Store,
};
use nitro_testkit::MemoryAdjudicator;

fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b).unwrap()
}

fn config() -> PartyConfig {
    PartyConfig {
        consensus_app: Address::repeat_byte(0xca),
        virtual_payment_app: Address::repeat_byte(0xfa),
        challenge_duration: U48::from(60),
    }
}

/// Two engines over the in-memory adjudicator; messages wait in `queue` until delivered.
struct Pair {
    engines: Vec<Engine>,
    chain: MemoryAdjudicator,
    events: VecDeque<ChainEvent>,
    queue: VecDeque<(usize, Envelope)>,
}

impl Pair {
    fn absorb(&mut self, i: usize, out: Output) {
        let sender = self.engines[i].party().address();
        for (id, t) in out.transactions {
            self.engines[i].store().transaction_done(id).unwrap();
            let events = self.chain.execute(sender, &t.transaction).unwrap_or_else(|e| panic!("{e}"));
            self.events.extend(events);
        }
        self.queue.extend(out.messages.into_iter().map(|(_, m)| (i, m)));
    }

    /// Delivers the messages queued now to their recipients (not what they answer).
    fn deliver_queued(&mut self) {
        for (from, e) in std::mem::take(&mut self.queue) {
            let sender = self.engines[from].party().address();
            let to = self.engines.iter().position(|x| x.party().address() == e.to).unwrap();
            let out = self.engines[to].step(Input::Message { from: sender, payload: e.payload }).unwrap();
            self.absorb(to, out);
        }
    }

    /// Delivers messages and chain events until all is quiet.
    fn run(&mut self) {
        while !self.queue.is_empty() || !self.events.is_empty() {
            self.deliver_queued();
            while let Some(ev) = self.events.pop_front() {
                for i in 0..self.engines.len() {
                    let out = self.engines[i].step(Input::Chain(ev.clone())).unwrap();
                    self.absorb(i, out);
                }
            }
        }
    }
}

#[test]
fn a_withdrawal_interrupted_by_restarts_finishes_from_the_stores() {
    let dir = tempfile::tempdir().unwrap();
    let paths = [dir.path().join("hub.db"), dir.path().join("bob.db")];
    let keys = [key(1), key(2)];
    let open = |i: usize| Engine::open(Store::open(&paths[i]).unwrap(), keys[i].clone(), config()).unwrap();
    let engines = vec![open(0).0, open(1).0];
    let c = config();
    let chain = MemoryAdjudicator::new(c.consensus_app, c.virtual_payment_app, 1_000_000);
    let mut pair = Pair { engines, chain, events: VecDeque::new(), queue: VecDeque::new() };
    let (hub, bob) = (keys[0].address(), keys[1].address());
    let out = pair.engines[0]
        .step(Input::Request(Request::LedgerOpen {
            participants: [hub, bob],
            asset: Address::ZERO,
            amounts: [U256::from(1000), U256::from(1000)],
            nonce: 7,
            more_assets: Vec::new(),
        }))
        .unwrap();
    let ledger = out.started.unwrap().channel_id();
    pair.absorb(0, out);
    pair.run();
    assert!(pair.engines[1].party().ledger(&ledger).is_some());

    // Bob asks; the hub answers (M2), then both stop before M2 is delivered.
    let out = pair.engines[1]
        .step(Input::Request(Request::LedgerWithdraw { channel_id: ledger, amount: U256::from(300), asset: None }))
        .unwrap();
    let id = out.started.unwrap();
    assert_eq!(id, ObjectiveId::Withdraw(ledger));
    pair.absorb(1, out);
    pair.deliver_queued();
    assert!(!pair.queue.is_empty(), "M2 waits");
    pair.queue.clear(); // lost with the connection
    let Pair { engines, chain, events, .. } = pair;
    drop(engines);

    let (hub_engine, hub_recovery) = open(0);
    let (bob_engine, _) = open(1);
    let mut pair = Pair { engines: vec![hub_engine, bob_engine], chain, events, queue: VecDeque::new() };
    assert!(!hub_recovery.messages.is_empty(), "the hub's answer survives in its outbox");
    pair.queue.extend(hub_recovery.messages.into_iter().filter(|(_, m)| m.to == bob).map(|(_, m)| (0, m)));
    pair.run();
    for e in &pair.engines {
        assert!(e.party().is_complete(&id), "{:?}", e.party().waiting_for(&id));
    }
    assert_eq!(pair.chain.paid_out.get(&bob).copied(), Some(U256::from(300)));
    let successor = pair.engines[1].party().successor(&ledger).unwrap();
    assert_eq!(pair.chain.holdings(&successor), U256::from(1700));
    let Pair { engines, .. } = pair;
    drop(engines);

    // Reopened once more: the successor replaced the ledger, and the link is kept.
    for i in 0..2 {
        let (engine, _) = open(i);
        let party = engine.party();
        assert!(party.ledger(&ledger).is_none());
        assert_eq!(party.successor(&ledger), Some(successor));
        assert_eq!(party.current_ledger(ledger), successor);
        let l = party.ledger(&successor).unwrap();
        assert_eq!(l.consensus_outcome().follower().amount, U256::from(700));
    }
}
