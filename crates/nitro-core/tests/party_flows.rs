//! The four objectives end to end between Alice, a Hub and Bob, over an in-memory network and
//! an in-memory chain double (the anvil-backed version lives in the node crate's tests).

use std::collections::{HashMap, VecDeque};

use nitro_core::{
    address_of,
    chain::{ChainEvent, ChainTransaction},
    party::{Effects, Envelope, ObjectiveId, Party, PartyConfig, PartyError, Payload, WaitingFor},
    Address, ChannelId, ConsensusChannel, LedgerOutcome, SigningKey, B256, U256, U48,
};

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

/// What the chain double did.
#[derive(Default)]
struct Chain {
    holdings: HashMap<ChannelId, U256>,
    paid_out: HashMap<Address, U256>,
    deposited: HashMap<Address, U256>,
    block: u64,
    reverts: usize,
}

struct World {
    parties: Vec<Party>,
    network: VecDeque<(Address, Envelope)>,
    chain: Chain,
    /// Confirmed chain events not yet delivered to the parties.
    chain_events: VecDeque<ChainEvent>,
    /// Lose about one message in n (0: none).
    drop_every: u64,
    /// Random state of the message loss.
    sent: u64,
}

impl World {
    fn new() -> Self {
        Self::with_parties(3)
    }

    fn with_parties(n: u8) -> Self {
        let parties = (1..=n).map(|n| Party::new(key(n), config())).collect();
        Self {
            parties,
            network: VecDeque::new(),
            chain: Chain::default(),
            chain_events: VecDeque::new(),
            drop_every: 0,
            sent: 0x9e37_79b9_7f4a_7c15,
        }
    }

    fn addr(&self, i: usize) -> Address {
        self.parties[i].address()
    }

    fn index_of(&self, a: Address) -> usize {
        self.parties.iter().position(|p| p.address() == a).unwrap()
    }

    fn absorb(&mut self, from: usize, effects: Effects) {
        let sender = self.addr(from);
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
            let events = self.execute(sender, &t.transaction);
            match events {
                Ok(events) => self.chain_events.extend(events),
                Err(()) => {
                    self.chain.reverts += 1;
                    if let Some(id) = t.objective {
                        let fx = self.parties[from].transaction_failed(id);
                        self.absorb(from, fx);
                    }
                }
            }
        }
    }

    fn execute(&mut self, sender: Address, tx: &ChainTransaction) -> Result<Vec<ChainEvent>, ()> {
        tx.validate().map_err(|_| ())?;
        self.chain.block += 1;
        let block_number = self.chain.block;
        match tx {
            ChainTransaction::Deposit { channel_id, asset, expected_held, amount } => {
                let held = self.chain.holdings.entry(*channel_id).or_default();
                if held != expected_held {
                    return Err(());
                }
                *held += *amount;
                *self.chain.deposited.entry(sender).or_default() += *amount;
                Ok(vec![ChainEvent::Deposited {
                    channel_id: *channel_id,
                    block_number,
                    asset: *asset,
                    now_held: *held,
                }])
            }
            ChainTransaction::ConcludeAndTransferAllAssets { state } => {
                let channel_id = state.channel_id();
                let held = self.chain.holdings.get(&channel_id).copied().unwrap_or_default();
                if held.is_zero() {
                    return Err(()); // already concluded and paid out
                }
                for a in &state.state().outcome.0[0].allocations {
                    *self.chain.paid_out.entry(address_of(&a.destination).unwrap()).or_default() += a.amount;
                }
                self.chain.holdings.insert(channel_id, U256::ZERO);
                Ok(vec![
                    ChainEvent::Concluded { channel_id, block_number, finalizes_at: 0 },
                    ChainEvent::AllocationUpdated {
                        channel_id,
                        block_number,
                        asset_index: U256::ZERO,
                        initial_holdings: held,
                        final_holdings: U256::ZERO,
                    },
                ])
            }
            other => panic!("unexpected transaction {other:?}"),
        }
    }

    /// Delivers every confirmed chain event to every party ("the watcher").
    fn deliver_chain_events(&mut self) -> bool {
        let mut any = false;
        while let Some(ev) = self.chain_events.pop_front() {
            any = true;
            for i in 0..self.parties.len() {
                let fx = self.parties[i].handle_chain_event(&ev);
                self.absorb(i, fx);
            }
        }
        any
    }

    /// Delivers messages (in order) and chain events until everything is quiet.
    fn run(&mut self) {
        let mut steps = 0;
        loop {
            while let Some((from, e)) = self.network.pop_front() {
                steps += 1;
                assert!(steps < 1_000_000, "livelock");
                let to = self.index_of(e.to);
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

    /// Delivers with drops, ticking every party's resend timer until `done` holds.
    fn run_lossy(&mut self, done: impl Fn(&World) -> bool) {
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
            for i in 0..self.parties.len() {
                let fx = self.parties[i].resend();
                self.absorb(i, fx);
            }
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

    fn call(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Party) -> Result<(ObjectiveId, Effects), PartyError>,
    ) -> ObjectiveId {
        let (id, fx) = f(&mut self.parties[i]).unwrap();
        self.absorb(i, fx);
        id
    }

    fn open_ledgers(&mut self, amount: u64) -> (ChannelId, ChannelId) {
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

fn outcome_of(p: &Party, ledger: &ChannelId) -> LedgerOutcome {
    p.ledger(ledger).unwrap().consensus_outcome().clone()
}

#[test]
fn direct_fund_opens_a_ledger_with_both_deposits() {
    let mut w = World::new();
    let (la, lb) = w.open_ledgers(1000);
    assert_eq!(w.chain.holdings[&la], U256::from(2000));
    assert_eq!(w.chain.holdings[&lb], U256::from(2000));
    assert_eq!(w.chain.deposited[&w.addr(1)], U256::from(2000));
    let hub_view = w.parties[1].ledger(&la).unwrap();
    assert!(matches!(hub_view, ConsensusChannel::Leader(_)));
    assert_eq!(hub_view.consensus_turn(), U48::from(1));
    assert_eq!(hub_view.consensus_state(), w.parties[0].ledger(&la).unwrap().consensus_state());
    assert_eq!(w.chain.reverts, 0);
}

#[test]
fn virtual_channels_fund_pay_and_defund_through_the_hub() {
    let mut w = World::new();
    let (la, lb) = w.open_ledgers(10_000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let mut ids = Vec::new();
    for n in 0..10u64 {
        ids.push(
            w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [U256::from(100), U256::from(20)], n)),
        );
    }
    w.run();
    for id in &ids {
        for p in &w.parties {
            assert!(p.is_complete(id), "{id}: {:?}", p.waiting_for(id));
        }
        for (i, l) in [(0, la), (1, la), (1, lb), (2, lb)] {
            let g = *outcome_of(&w.parties[i], &l).guarantee(&id.channel_id()).expect("guarantee locked");
            assert_eq!(g.amount(), U256::from(120));
        }
    }
    assert_eq!(outcome_of(&w.parties[0], &la).leader().amount, U256::from(10_000 - 200), "hub put in b for each");
    assert_eq!(outcome_of(&w.parties[0], &la).follower().amount, U256::from(10_000 - 1000), "alice put in a for each");
    assert_eq!(outcome_of(&w.parties[2], &lb).leader().amount, U256::from(10_000 - 1000), "hub put in a for each");

    // Alice pays 30 in every channel, then Bob closes each.
    for id in &ids {
        let fx = w.parties[0].pay(id.channel_id(), U256::from(25)).unwrap();
        w.absorb(0, fx);
        let fx = w.parties[0].pay(id.channel_id(), U256::from(5)).unwrap();
        w.absorb(0, fx);
    }
    w.run();
    assert_eq!(w.parties[2].paid(&ids[0].channel_id()), U256::from(30));
    assert!(matches!(w.parties[0].pay(ids[0].channel_id(), U256::from(71)), Err(PartyError::Overpaid { .. })));
    let defunds: Vec<_> = ids.iter().map(|id| w.call(2, |p| p.virtual_defund(id.channel_id()))).collect();
    w.run();
    for id in &defunds {
        for p in &w.parties {
            assert!(p.is_complete(id), "{id}: {:?}", p.waiting_for(id));
        }
    }
    let a = outcome_of(&w.parties[0], &la);
    assert_eq!(a.guarantees().len(), 0);
    assert_eq!(a.follower().amount, U256::from(10_000 - 300), "alice paid 30 ten times");
    assert_eq!(a.leader().amount, U256::from(10_000 + 300));
    let b = outcome_of(&w.parties[2], &lb);
    assert_eq!(b.follower().amount, U256::from(10_000 + 300), "bob received 30 ten times");
    assert_eq!(b.leader().amount, U256::from(10_000 - 300));

    // Close both ledgers: each party receives exactly its final balance.
    let d1 = w.call(1, |p| p.direct_defund(la));
    let d2 = w.call(1, |p| p.direct_defund(lb));
    w.run();
    for (id, parties) in [(d1, [0, 1]), (d2, [1, 2])] {
        for i in parties {
            assert!(w.parties[i].is_complete(&id), "{id}: {}", w.parties[i].waiting_for(&id).unwrap());
        }
    }
    assert_eq!(w.chain.paid_out[&alice], U256::from(10_000 - 300));
    assert_eq!(w.chain.paid_out[&bob], U256::from(10_000 + 300));
    assert_eq!(w.chain.paid_out[&hub], U256::from(20_000));
    assert!(w.chain.holdings.values().all(|h| h.is_zero()));
    assert!(w.parties.iter().all(|p| p.ledgers().count() == 0));
}

#[test]
fn a_ledger_with_guarantees_cannot_be_defunded() {
    let mut w = World::new();
    let (la, _) = w.open_ledgers(1000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [U256::from(1), U256::from(1)], 9));
    w.run();
    assert_eq!(w.parties[1].direct_defund(la).unwrap_err(), PartyError::GuaranteesRemain(1));
    assert!(matches!(w.parties[0].direct_defund(B256::ZERO), Err(PartyError::UnknownLedger(_))));
}

#[test]
fn everything_completes_over_a_lossy_network() {
    let mut w = World::new();
    w.drop_every = 3;
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let a = w.call(1, |p| p.direct_fund([hub, alice], Address::ZERO, [U256::from(500), U256::from(500)], 1));
    let b = w.call(1, |p| p.direct_fund([hub, bob], Address::ZERO, [U256::from(500), U256::from(500)], 2));
    w.run_lossy(|w| {
        w.parties.iter().all(|p| p.ledgers().count() == 2 || (p.ledgers().count() == 1 && p.address() != w.addr(1)))
    });
    let mut ids = Vec::new();
    for n in 0..5u64 {
        ids.push(
            w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [U256::from(10), U256::from(10)], n)),
        );
    }
    w.run_lossy(|w| ids.iter().all(|id| w.parties.iter().all(|p| p.is_complete(id))));
    let defunds: Vec<_> = ids.iter().map(|id| w.call(0, |p| p.virtual_defund(id.channel_id()))).collect();
    w.run_lossy(|w| defunds.iter().all(|id| w.parties.iter().all(|p| p.is_complete(id))));
    let closes = [w.call(1, |p| p.direct_defund(a.channel_id())), w.call(1, |p| p.direct_defund(b.channel_id()))];
    w.run_lossy(|w| {
        w.chain.holdings.values().all(|h| h.is_zero()) && w.parties.iter().all(|p| p.ledgers().count() == 0)
    });
    assert_eq!(w.chain.paid_out[&alice], U256::from(500));
    assert_eq!(w.chain.paid_out[&hub], U256::from(1000));
    assert!(w.parties[1].is_complete(&closes[0]) && w.parties[1].is_complete(&closes[1]));
}

#[test]
fn objectives_say_what_they_wait_for() {
    let mut w = World::new();
    let (alice, hub) = (w.addr(0), w.addr(1));
    let id = w.call(1, |p| p.direct_fund([hub, alice], Address::ZERO, [U256::from(5), U256::from(5)], 1));
    let text = w.parties[1].waiting_for(&id).unwrap().to_string();
    assert!(text.contains("prefund signatures") && text.contains(&alice.to_string()), "{text}");
    w.run();
    assert_eq!(w.parties[1].waiting_for(&id), Some(WaitingFor::Nothing));
    assert!(w.parties[1].waiting_for(&ObjectiveId::VirtualFund(B256::ZERO)).is_none());
    let parsed: ObjectiveId = id.to_string().parse().unwrap();
    assert_eq!(parsed, id);
    assert_eq!(serde_json::from_str::<ObjectiveId>(&serde_json::to_string(&id).unwrap()).unwrap(), id);
    assert!("Nope-0x00".parse::<ObjectiveId>().is_err());
}

#[test]
fn messages_from_strangers_are_refused() {
    let mut w = World::new();
    let (la, _) = w.open_ledgers(100);
    let bob = w.addr(2);
    let resend = w.parties[0].resend();
    let countersignature = resend.messages.into_iter().find(|m| m.to == w.addr(1)).unwrap();
    assert!(matches!(&countersignature.payload, Payload::Ledger(m) if m.channel_id() == la));
    // Bob is not in L(Alice, Hub): the hub refuses his copy of Alice's message.
    assert!(matches!(
        w.parties[1].handle_message(bob, countersignature.payload.clone()),
        Err(PartyError::UnexpectedSender(_))
    ));
    // From Alice it is a harmless duplicate.
    let alice = w.addr(0);
    assert!(w.parties[1].handle_message(alice, countersignature.payload).is_ok());
    assert!(matches!(
        w.parties[0]
            .handle_message(bob, Payload::Voucher(nitro_core::Voucher::sign(B256::ZERO, U256::from(1), &key(3)))),
        Err(PartyError::NotFunded(_))
    ));
}

#[test]
fn a_virtual_channel_routes_through_two_intermediaries() {
    // Alice — I1 — I2 — Bob: three ledgers, each guarantee {left, right} along the path.
    let mut w = World::with_parties(4);
    let p: Vec<Address> = (0..4).map(|i| w.addr(i)).collect();
    let amount = U256::from(1000);
    let ledgers = [
        w.call(1, |x| x.direct_fund([p[1], p[0]], Address::ZERO, [amount, amount], 1)),
        w.call(1, |x| x.direct_fund([p[1], p[2]], Address::ZERO, [amount, amount], 2)),
        w.call(2, |x| x.direct_fund([p[2], p[3]], Address::ZERO, [amount, amount], 3)),
    ];
    w.run();
    let v = w.call(0, |x| x.virtual_fund(p.clone(), Address::ZERO, [U256::from(60), U256::from(40)], 9));
    w.run();
    for i in 0..4 {
        assert!(w.parties[i].is_complete(&v), "{i}: {:?}", w.parties[i].waiting_for(&v));
    }
    for (j, l) in ledgers.iter().enumerate() {
        let g = *outcome_of(&w.parties[j + 1], &l.channel_id()).guarantee(&v.channel_id()).unwrap();
        assert_eq!(g.amount(), U256::from(100));
        assert_eq!(g.left(), nitro_core::destination_of(p[j]), "ledger {j}: left is the party nearer Alice");
        assert_eq!(g.right(), nitro_core::destination_of(p[j + 1]));
    }
    let fx = w.parties[0].pay(v.channel_id(), U256::from(15)).unwrap();
    w.absorb(0, fx);
    w.run();
    let d = w.call(3, |x| x.virtual_defund(v.channel_id()));
    w.run();
    for i in 0..4 {
        assert!(w.parties[i].is_complete(&d), "{i}: {:?}", w.parties[i].waiting_for(&d));
    }
    // Each intermediary gets back what it put in; Alice paid 15 to Bob.
    let balance = |party: usize, ledger: usize, me: usize| {
        let o = outcome_of(&w.parties[party], &ledgers[ledger].channel_id());
        let dest = nitro_core::destination_of(p[me]);
        if o.leader().destination == dest {
            o.leader().amount
        } else {
            o.follower().amount
        }
    };
    assert_eq!(balance(0, 0, 0), U256::from(1000 - 15));
    assert_eq!(balance(1, 0, 1) + balance(1, 1, 1), U256::from(2000));
    assert_eq!(balance(2, 1, 2) + balance(2, 2, 2), U256::from(2000));
    assert_eq!(balance(3, 2, 3), U256::from(1000 + 15));
}
