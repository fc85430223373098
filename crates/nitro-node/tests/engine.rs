//! The engine's durability: every step is on disk before its messages leave, and reopening
//! the store rebuilds the same party (same consensus states, same signatures).

use std::collections::VecDeque;

use alloy_primitives::{Address, U256};
use nitro_core::{
    chain::{ChainEvent, ChainTransaction},
    party::{Envelope, PartyConfig},
    SigningKey, U48,
};
use nitro_node::{
    engine::{Engine, EngineError, Input, Request},
    store::Store,
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

/// Two engines on files, a chain double that executes deposits, and in-order delivery.
fn run(engines: &mut [Engine], mut queue: VecDeque<(usize, Envelope)>, held: &mut U256, block: &mut u64) {
    let mut events = VecDeque::new();
    loop {
        while let Some((from, e)) = queue.pop_front() {
            let sender = engines[from].party().address();
            let to = engines.iter().position(|x| x.party().address() == e.to).unwrap();
            let out = engines[to].step(Input::Message { from: sender, payload: e.payload }).unwrap();
            queue.extend(out.messages.into_iter().map(|(_, m)| (to, m)));
            for (_, t) in out.transactions {
                if let ChainTransaction::Deposit { channel_id, asset, expected_held, amount } = t.transaction {
                    assert_eq!(expected_held, *held);
                    *held += amount;
                    *block += 1;
                    events.push_back(ChainEvent::Deposited {
                        channel_id,
                        block_number: *block,
                        asset,
                        now_held: *held,
                    });
                }
            }
        }
        let Some(ev) = events.pop_front() else { break };
        for i in 0..engines.len() {
            let out = engines[i].step(Input::Chain(ev.clone())).unwrap();
            queue.extend(out.messages.into_iter().map(|(_, m)| (i, m)));
            for (_, t) in out.transactions {
                if let ChainTransaction::Deposit { channel_id, asset, expected_held, amount } = t.transaction {
                    assert_eq!(expected_held, *held);
                    *held += amount;
                    *block += 1;
                    events.push_back(ChainEvent::Deposited {
                        channel_id,
                        block_number: *block,
                        asset,
                        now_held: *held,
                    });
                }
            }
        }
    }
}

#[test]
fn reopening_the_store_rebuilds_the_same_party() {
    let dir = tempfile::tempdir().unwrap();
    let paths = [dir.path().join("hub.db"), dir.path().join("alice.db")];
    let keys = [key(1), key(2)];
    let mut engines: Vec<Engine> = paths
        .iter()
        .zip(&keys)
        .map(|(p, k)| Engine::open(Store::open(p).unwrap(), k.clone(), config()).unwrap().0)
        .collect();
    let (hub, alice) = (keys[0].address(), keys[1].address());
    let out = engines[0]
        .step(Input::Request(Request::LedgerOpen {
            participants: [hub, alice],
            asset: Address::ZERO,
            amounts: [U256::from(10), U256::from(20)],
            nonce: 7,
        }))
        .unwrap();
    let id = out.started.unwrap();
    let queue = out.messages.into_iter().map(|(_, m)| (0, m)).collect();
    let (mut held, mut block) = (U256::ZERO, 0);
    run(&mut engines, queue, &mut held, &mut block);
    assert_eq!(held, U256::from(30));
    let before: Vec<_> =
        engines.iter().map(|e| e.party().ledger(&id.channel_id()).unwrap().consensus_state()).collect();
    assert_eq!(before[0], before[1]);
    drop(engines);

    for ((path, k), state) in paths.iter().zip(&keys).zip(&before) {
        let (engine, recovery) = Engine::open(Store::open(path).unwrap(), k.clone(), config()).unwrap();
        assert!(recovery.replayed > 0);
        assert!(engine.party().is_complete(&id));
        assert_eq!(&engine.party().ledger(&id.channel_id()).unwrap().consensus_state(), state);
        assert!(!recovery.messages.is_empty(), "the outbox survives for resending");
    }
}

#[test]
fn a_refused_input_is_not_logged() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    let (mut engine, _) = Engine::open(Store::open(&path).unwrap(), key(1), config()).unwrap();
    let refused = engine.step(Input::Request(Request::LedgerClose { channel_id: Default::default() }));
    assert!(matches!(refused, Err(EngineError::Party(_))));
    drop(engine);
    let (_, recovery) = Engine::open(Store::open(&path).unwrap(), key(1), config()).unwrap();
    assert_eq!(recovery.replayed, 0);
}

#[test]
fn a_corrupt_store_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    {
        let mut store = Store::open(&path).unwrap();
        let record = nitro_node::store::StepRecord { input: Some("{not json".into()), ..Default::default() };
        store.commit_step(&record).unwrap();
    }
    let reopened = Engine::open(Store::open(&path).unwrap(), key(1), config());
    assert!(matches!(reopened, Err(EngineError::Store(_))));
}
