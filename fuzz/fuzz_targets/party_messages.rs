//! Three parties (Alice, the Hub, Bob) with open ledgers, fed fuzzed payloads from fuzzed
//! senders: arbitrary JSON, byte mutations of the real messages of a virtual fund / pay /
//! defund run, and the parties' own messages delivered out of order, interleaved with chain
//! events, calls and reconnections (resyncs), on the in-memory adjudicator of
//! `nitro-testkit`. Nothing panics, and every ledger of every party keeps its total.
#![no_main]

use std::collections::HashMap;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nitro_core::{
    chain::ChainEvent,
    party::{Effects, Envelope, ObjectiveId, Party, PartyConfig, Payload},
    Address, ChannelId, ConsensusChannel, LedgerOutcome, U256, U48,
};
use nitro_fuzz::{key, sum, Reader};
use nitro_testkit::MemoryAdjudicator;

fn config() -> PartyConfig {
    PartyConfig {
        consensus_app: Address::repeat_byte(0xca),
        virtual_payment_app: Address::repeat_byte(0xfa),
        challenge_duration: U48::from(60),
    }
}

/// Three parties, their network and the in-memory adjudicator of `nitro-testkit`.
#[derive(Clone)]
struct World {
    parties: Vec<Party>,
    network: Vec<(Address, Envelope)>,
    chain_events: Vec<ChainEvent>,
    chain: MemoryAdjudicator,
    /// Every message ever sent (for the seed corpus of mutations).
    log: Vec<(Address, Envelope)>,
}

impl World {
    fn new() -> Self {
        Self {
            parties: (1..=3).map(|n| Party::new(key(n), config())).collect(),
            network: Vec::new(),
            chain_events: Vec::new(),
            chain: MemoryAdjudicator::new(config().consensus_app, config().virtual_payment_app, 1_000_000),
            log: Vec::new(),
        }
    }

    fn addr(&self, i: usize) -> Address {
        self.parties[i].address()
    }

    fn index_of(&self, a: Address) -> Option<usize> {
        self.parties.iter().position(|p| p.address() == a)
    }

    fn absorb(&mut self, from: usize, effects: Effects) {
        let sender = self.addr(from);
        for e in effects.messages {
            self.network.push((sender, e));
        }
        for t in effects.transactions {
            match self.chain.execute(sender, &t.transaction) {
                Ok(events) => self.chain_events.extend(events),
                Err(_) => {
                    if let Some(id) = t.objective {
                        let fx = self.parties[from].transaction_failed(id);
                        self.absorb(from, fx);
                    }
                }
            }
        }
    }

    fn deliver(&mut self, from: Address, to: usize, payload: Payload) {
        static TRACE: OnceLock<bool> = OnceLock::new();
        if *TRACE.get_or_init(|| std::env::var_os("NITRO_FUZZ_TRACE").is_some()) {
            eprintln!(
                "{from} -> {to}: {}",
                serde_json::to_string(&payload).unwrap().chars().take(300).collect::<String>()
            );
        }
        self.log.push((from, Envelope { to: self.addr(to), payload: payload.clone() }));
        if let Ok(fx) = self.parties[to].handle_message(from, payload) {
            self.absorb(to, fx);
        }
    }

    fn deliver_chain_event(&mut self, event: &ChainEvent) {
        for i in 0..self.parties.len() {
            let fx = self.parties[i].handle_chain_event(event);
            self.absorb(i, fx);
        }
    }

    /// Delivers everything in order until quiet. Parties that never fall quiet (two of them
    /// answering each other forever) are a livelock: a failure.
    fn run(&mut self) {
        for _ in 0..2_000 {
            if !self.network.is_empty() {
                let (from, e) = self.network.remove(0);
                if let Some(to) = self.index_of(e.to) {
                    self.deliver(from, to, e.payload);
                }
            } else if !self.chain_events.is_empty() {
                let ev = self.chain_events.remove(0);
                self.deliver_chain_event(&ev);
            } else {
                return;
            }
        }
        panic!("livelock: the parties still exchange messages after 2000 deliveries (NITRO_FUZZ_TRACE=1 shows them)");
    }

    fn call(&mut self, i: usize, f: impl FnOnce(&mut Party) -> Option<Effects>) {
        if let Some(fx) = f(&mut self.parties[i]) {
            self.absorb(i, fx);
        }
    }
}

struct Fixture {
    /// Ledgers Hub–Alice and Hub–Bob open, nothing else.
    opened: World,
    /// Every message of a virtual fund, two payments and a virtual defund from there.
    messages: Vec<(Address, Envelope)>,
    ledgers: Vec<ChannelId>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let mut w = World::new();
        let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
        let amounts = [U256::from(1000), U256::from(1000)];
        w.call(1, |p| p.direct_fund([hub, alice], Address::ZERO, amounts, 1).ok().map(|x| x.1));
        w.call(1, |p| p.direct_fund([hub, bob], Address::ZERO, amounts, 2).ok().map(|x| x.1));
        w.run();
        let ledgers: Vec<ChannelId> = w.parties[1].ledgers().map(|l| l.channel_id()).collect();
        assert_eq!(ledgers.len(), 2, "the fixture opens two ledgers");
        w.log.clear();
        let opened = w.clone();
        let mut ids = Vec::new();
        for n in 0..2u64 {
            let amounts = [U256::from(100), U256::from(20)];
            w.call(0, |p| {
                p.virtual_fund(vec![alice, hub, bob], Address::ZERO, amounts, n).ok().map(|(id, fx)| {
                    ids.push(id);
                    fx
                })
            });
        }
        w.run();
        for id in &ids {
            w.call(0, |p| p.pay(id.channel_id(), U256::from(7)).ok());
        }
        w.run();
        w.call(2, |p| p.virtual_defund(ids[0].channel_id()).ok().map(|x| x.1));
        w.run();
        // The hub's connections come back: it resyncs both peers.
        w.call(1, |p| Some(p.resync(alice)));
        w.call(1, |p| Some(p.resync(bob)));
        w.run();
        Fixture { opened, messages: w.log, ledgers }
    })
}

/// Every ledger of every party keeps the total it had when first seen.
fn check_conservation(w: &World, totals: &mut HashMap<(usize, ChannelId), U256>) {
    for (i, p) in w.parties.iter().enumerate() {
        for l in p.ledgers() {
            let latest: &LedgerOutcome = match l {
                ConsensusChannel::Leader(c) => c.latest_outcome(),
                ConsensusChannel::Follower(c) => c.latest_outcome(),
            };
            let consensus = sum(l.consensus_outcome());
            let total = *totals.entry((i, l.channel_id())).or_insert(consensus);
            assert_eq!(consensus, total, "party {i}: ledger {} keeps its total (consensus)", l.channel_id());
            assert_eq!(sum(latest), total, "party {i}: ledger {} keeps its total (latest)", l.channel_id());
        }
    }
}

/// Replaces a few bytes of `json` with fuzzed ones (hex digits mostly: new amounts, turns,
/// signatures, ids).
fn mutate(r: &mut Reader, mut json: Vec<u8>) -> Vec<u8> {
    const HEX: &[u8] = b"0123456789abcdef";
    for _ in 0..(1 + r.u8() % 4) {
        if json.is_empty() {
            break;
        }
        let at = usize::from(u16::from_be_bytes([r.u8(), r.u8()])) % json.len();
        let b = r.u8();
        json[at] = if b < 0xc0 { HEX[usize::from(b) % 16] } else { b };
    }
    json
}

fn party_index(r: &mut Reader) -> usize {
    usize::from(r.u8() % 3)
}

fn sender(r: &mut Reader, w: &World) -> Address {
    match r.u8() % 8 {
        7 => key(4).address(),
        n => w.addr(usize::from(n % 3)),
    }
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let mut w = fx.opened.clone();
    let mut totals = HashMap::new();
    check_conservation(&w, &mut totals);
    let mut r = Reader::new(data);
    let mut virtual_ids: Vec<ObjectiveId> = Vec::new();
    for _ in 0..48 {
        if r.is_empty() {
            break;
        }
        match r.u8() % 12 {
            0..=2 => {
                // A real message, maybe mutated, maybe from someone else, to its recipient.
                let (from, e) = &fx.messages[usize::from(u16::from_be_bytes([r.u8(), r.u8()])) % fx.messages.len()];
                let mut from = *from;
                let mut payload = e.payload.clone();
                if r.u8() % 2 == 0 {
                    let json = mutate(&mut r, serde_json::to_vec(&payload).unwrap());
                    match serde_json::from_slice(&json) {
                        Ok(p) => payload = p,
                        Err(_) => continue,
                    }
                }
                if r.u8() % 8 == 0 {
                    from = sender(&mut r, &w);
                }
                if let Some(to) = w.index_of(e.to) {
                    w.deliver(from, to, payload);
                }
            }
            3 => {
                // Arbitrary JSON.
                let Ok(payload) = serde_json::from_slice::<Payload>(r.chunk()) else { continue };
                let from = sender(&mut r, &w);
                let to = party_index(&mut r);
                w.deliver(from, to, payload);
            }
            4..=6 => {
                // One of the parties' own messages, in any order; sometimes duplicated.
                if w.network.is_empty() {
                    continue;
                }
                let i = usize::from(r.u8()) % w.network.len();
                let (from, e) = if r.u8() % 8 == 0 { w.network[i].clone() } else { w.network.remove(i) };
                if let Some(to) = w.index_of(e.to) {
                    w.deliver(from, to, e.payload);
                }
            }
            7 => {
                // A chain event: the pending real ones, or a fuzzed one.
                let event = if !w.chain_events.is_empty() && r.u8() % 2 == 0 {
                    w.chain_events.remove(0)
                } else {
                    let channel_id = match r.u8() % 3 {
                        0 => r.b256(),
                        n => fx.ledgers[usize::from(n - 1)],
                    };
                    let block_number = r.u64() % 64;
                    match r.u8() % 4 {
                        0 => ChainEvent::Deposited {
                            channel_id,
                            block_number,
                            asset: Address::ZERO,
                            now_held: r.amount(),
                        },
                        1 => ChainEvent::Concluded { channel_id, block_number, finalizes_at: r.u64() },
                        2 => ChainEvent::AllocationUpdated {
                            channel_id,
                            block_number,
                            asset_index: U256::from(r.u8() % 2),
                            initial_holdings: r.amount(),
                            final_holdings: r.amount(),
                        },
                        _ => match serde_json::from_slice::<ChainEvent>(r.chunk()) {
                            Ok(e) => e,
                            Err(_) => continue,
                        },
                    }
                };
                w.deliver_chain_event(&event);
            }
            8 => {
                // Alice opens a virtual channel to Bob through the Hub.
                let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
                let amounts = [r.amount(), r.amount()];
                let nonce = u64::from(r.u8());
                w.call(0, |p| {
                    p.virtual_fund(vec![alice, hub, bob], Address::ZERO, amounts, nonce).ok().map(|(id, fx)| {
                        virtual_ids.push(id);
                        fx
                    })
                });
            }
            9 => {
                // Pay or defund a virtual channel (ours, or one of the recorded run's).
                let id = match virtual_ids.get(usize::from(r.u8()) % virtual_ids.len().max(1)) {
                    Some(id) if r.u8() % 2 == 0 => id.channel_id(),
                    _ => fx
                        .messages
                        .iter()
                        .find_map(|(_, e)| match &e.payload {
                            Payload::Voucher(v) => Some(v.channel_id),
                            _ => None,
                        })
                        .unwrap_or_default(),
                };
                let amount = r.amount();
                match r.u8() % 3 {
                    0 => w.call(0, |p| p.pay(id, amount).ok()),
                    1 => w.call(2, |p| p.virtual_defund(id).ok().map(|x| x.1)),
                    _ => w.call(0, |p| p.virtual_defund(id).ok().map(|x| x.1)),
                }
            }
            10 => {
                let i = party_index(&mut r);
                let ledger = fx.ledgers[usize::from(r.u8() % 2)];
                match r.u8() % 2 {
                    0 => w.call(i, |p| p.direct_defund(ledger).ok().map(|x| x.1)),
                    _ => {
                        // A connection comes back: party i resyncs one of the others.
                        let peer = w.addr((i + 1 + usize::from(r.u8() % 2)) % 3);
                        w.call(i, |p| Some(p.resync(peer)))
                    }
                }
            }
            _ => w.run(),
        }
        check_conservation(&w, &mut totals);
    }
});
