//! The engine's durability: every step is on disk before its messages leave, and reopening
//! the store rebuilds the same party (same consensus states, same signatures).

use std::collections::VecDeque;

use alloy_primitives::{Address, U256};
use nitro_core::{
    chain::ChainEvent,
    party::{Envelope, PartyConfig, TransactionRequest},
    SigningKey, U48,
};
use nitro_node::{
    engine::{Engine, EngineError, Input, Request},
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

/// The in-memory adjudicator, with the confirmed events not yet delivered.
struct Chain {
    adjudicator: MemoryAdjudicator,
    events: VecDeque<ChainEvent>,
}

impl Chain {
    fn new() -> Self {
        let config = config();
        Self {
            adjudicator: MemoryAdjudicator::new(config.consensus_app, config.virtual_payment_app, 1_000_000),
            events: VecDeque::new(),
        }
    }

    /// Executes `transactions` as `sender`; a revert goes back to `engine` as a failed
    /// transaction (its output executed in turn).
    fn execute(&mut self, engine: &mut Engine, transactions: Vec<(u64, TransactionRequest)>, out: &mut Vec<Envelope>) {
        let sender = engine.party().address();
        for (id, t) in transactions {
            engine.store().transaction_done(id).unwrap();
            match self.adjudicator.execute(sender, &t.transaction) {
                Ok(events) => self.events.extend(events),
                Err(revert) => {
                    let objective = t.objective.unwrap_or_else(|| panic!("{revert}"));
                    let more = engine.step(Input::TransactionFailed { objective, refused: None }).unwrap();
                    out.extend(more.messages.into_iter().map(|(_, m)| m));
                    self.execute(engine, more.transactions, out);
                }
            }
        }
    }
}

/// Delivers messages in order and chain events to every engine until all is quiet.
fn run(engines: &mut [Engine], mut queue: VecDeque<(usize, Envelope)>, chain: &mut Chain) {
    loop {
        while let Some((from, e)) = queue.pop_front() {
            let sender = engines[from].party().address();
            let to = engines.iter().position(|x| x.party().address() == e.to).unwrap();
            let out = engines[to].step(Input::Message { from: sender, payload: e.payload }).unwrap();
            let mut sent: Vec<Envelope> = out.messages.into_iter().map(|(_, m)| m).collect();
            chain.execute(&mut engines[to], out.transactions, &mut sent);
            queue.extend(sent.into_iter().map(|m| (to, m)));
        }
        let Some(ev) = chain.events.pop_front() else { break };
        for (i, engine) in engines.iter_mut().enumerate() {
            let out = engine.step(Input::Chain(ev.clone())).unwrap();
            let mut sent: Vec<Envelope> = out.messages.into_iter().map(|(_, m)| m).collect();
            chain.execute(engine, out.transactions, &mut sent);
            queue.extend(sent.into_iter().map(|m| (i, m)));
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
            more_assets: Vec::new(),
        }))
        .unwrap();
    let id = out.started.unwrap();
    let queue = out.messages.into_iter().map(|(_, m)| (0, m)).collect();
    let mut chain = Chain::new();
    run(&mut engines, queue, &mut chain);
    assert_eq!(chain.adjudicator.holdings(&id.channel_id()), U256::from(30));
    assert_eq!(chain.adjudicator.reverts, 0);
    let before: Vec<_> =
        engines.iter().map(|e| e.party().ledger(&id.channel_id()).unwrap().consensus_state()).collect();
    assert_eq!(before[0], before[1]);
    drop(engines);

    for ((path, k), state) in paths.iter().zip(&keys).zip(&before) {
        let (engine, recovery) = Engine::open(Store::open(path).unwrap(), k.clone(), config()).unwrap();
        assert!(recovery.records > 0);
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
    assert_eq!(recovery.records, 0);
}

#[test]
fn a_corrupt_store_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.db");
    {
        let mut store = Store::open(&path).unwrap();
        let record = nitro_node::store::StepRecord {
            state: vec![("ledger", "0x01".into(), Some("{not json".into()))],
            ..Default::default()
        };
        store.commit_step(&record).unwrap();
    }
    let reopened = Engine::open(Store::open(&path).unwrap(), key(1), config());
    assert!(matches!(reopened, Err(EngineError::Load(_))));
}

#[test]
fn every_kind_of_input_survives_the_log() {
    use nitro_core::party::ObjectiveId;
    let inputs = vec![
        Input::Request(Request::LedgerOpen {
            participants: [key(1).address(), key(2).address()],
            asset: Address::ZERO,
            amounts: [U256::from(1), U256::from(2)],
            nonce: 3,
            more_assets: Vec::new(),
        }),
        Input::Request(Request::LedgerClose { channel_id: Default::default() }),
        Input::Request(Request::VirtualFund {
            participants: vec![key(1).address(), key(2).address(), key(3).address()],
            asset: Address::ZERO,
            amounts: [U256::from(1), U256::ZERO],
            nonce: 4,
        }),
        Input::Request(Request::Pay { channel_id: Default::default(), amount: U256::from(5) }),
        Input::Request(Request::VirtualDefund { channel_id: Default::default() }),
        Input::Message {
            from: key(2).address(),
            payload: nitro_core::party::Payload::Voucher(nitro_core::Voucher::sign(
                Default::default(),
                U256::from(1),
                &key(1),
            )),
        },
        Input::Chain(ChainEvent::Concluded { channel_id: Default::default(), block_number: 9, finalizes_at: 10 }),
        Input::TransactionFailed { objective: ObjectiveId::DirectFund(Default::default()), refused: None },
        Input::tick(),
        Input::PeerConnected { peer: key(3).address() },
        Input::Request(Request::ForceClose { channel_id: Default::default() }),
        Input::Request(Request::Cancel { objective: ObjectiveId::VirtualFund(Default::default()) }),
    ];
    for input in inputs {
        let text = serde_json::to_string(&input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
        assert_eq!(serde_json::from_str::<Input>(&text).unwrap(), input);
    }
}

/// The store is the last line of "one state per turn": a step whose signature conflicts with
/// one already recorded (here planted, as if by an earlier, buggy release) is refused as a
/// whole, returns nothing to send, and poisons the engine until a restart.
#[test]
fn a_step_signing_a_second_state_at_a_recorded_turn_is_refused_and_sends_nothing() {
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
            more_assets: Vec::new(),
        }))
        .unwrap();
    let ledger = out.started.unwrap().channel_id();
    let queue = out.messages.into_iter().map(|(_, m)| (0, m)).collect();
    let mut chain = Chain::new();
    run(&mut engines, queue, &mut chain);
    drop(engines);
    // Plant a different state at turn 2, the turn the hub's final state would take.
    {
        let mut store = Store::open(&paths[0]).unwrap();
        let planted = nitro_node::store::StepRecord {
            signed: vec![(ledger.to_string(), 2, format!("{:#x}", alloy_primitives::B256::repeat_byte(0xee)))],
            ..Default::default()
        };
        store.commit_step(&planted).unwrap();
    }
    let (mut engine, _) = Engine::open(Store::open(&paths[0]).unwrap(), keys[0].clone(), config()).unwrap();
    let refused = engine.step(Input::Request(Request::LedgerClose { channel_id: ledger }));
    assert!(
        matches!(refused, Err(EngineError::Store(nitro_node::store::StoreError::ConflictingSignature { turn: 2, .. }))),
        "{refused:?}"
    );
    assert!(matches!(engine.step(Input::tick()), Err(EngineError::Poisoned)));
    drop(engine);
    // After a restart the refused step never happened.
    let (engine, recovery) = Engine::open(Store::open(&paths[0]).unwrap(), keys[0].clone(), config()).unwrap();
    assert!(engine.party().objective(&nitro_core::party::ObjectiveId::DirectDefund(ledger)).is_none());
    assert!(recovery.messages.iter().all(|(_, m)| !matches!(
        &m.payload,
        nitro_core::party::Payload::State { objective: nitro_core::party::ObjectiveId::DirectDefund(_), .. }
    )));
}

#[test]
fn a_top_up_resumes_after_both_stores_are_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let paths = [dir.path().join("hub.db"), dir.path().join("alice.db")];
    let keys = [key(1), key(2)];
    let open = |paths: &[std::path::PathBuf; 2]| -> Vec<Engine> {
        paths
            .iter()
            .zip(&keys)
            .map(|(p, k)| Engine::open(Store::open(p).unwrap(), k.clone(), config()).unwrap().0)
            .collect()
    };
    let mut engines = open(&paths);
    let (hub, alice) = (keys[0].address(), keys[1].address());
    let request = Request::LedgerOpen {
        participants: [hub, alice],
        asset: Address::ZERO,
        amounts: [U256::from(10), U256::from(20)],
        nonce: 7,
        more_assets: Vec::new(),
    };
    let out = engines[0].step(Input::Request(request)).unwrap();
    let ledger = out.started.unwrap().channel_id();
    let mut chain = Chain::new();
    run(&mut engines, out.messages.into_iter().map(|(_, m)| (0, m)).collect(), &mut chain);

    // Alice (the follower) tops up 5: the slot is reserved and her deposit is on chain, but no
    // one has seen the chain's event yet.
    let out = engines[1]
        .step(Input::Request(Request::LedgerTopUp { channel_id: ledger, amount: U256::from(5), asset: None }))
        .unwrap();
    let id = out.started.unwrap();
    let mut queue: VecDeque<(usize, Envelope)> = out.messages.into_iter().map(|(_, m)| (1, m)).collect();
    while let Some((from, e)) = queue.pop_front() {
        let sender = engines[from].party().address();
        let to = usize::from(e.to == alice);
        let out = engines[to].step(Input::Message { from: sender, payload: e.payload }).unwrap();
        let mut sent: Vec<Envelope> = out.messages.into_iter().map(|(_, m)| m).collect();
        chain.execute(&mut engines[to], out.transactions, &mut sent);
        queue.extend(sent.into_iter().map(|m| (to, m)));
    }
    assert_eq!(chain.adjudicator.holdings(&ledger), U256::from(35));
    let slot = |e: &Engine| e.party().ledger(&ledger).unwrap().consensus_outcome().slot();
    assert!(engines.iter().all(|e| slot(e).is_some() && !e.party().is_complete(&id)));
    drop(engines);

    // Both restart from their stores and finish it once the deposit's event arrives.
    let mut engines = open(&paths);
    assert!(engines.iter().all(|e| slot(e).is_some() && !e.party().is_complete(&id)));
    run(&mut engines, VecDeque::new(), &mut chain);
    for e in &engines {
        assert!(e.party().is_complete(&id), "{:?}", e.party().waiting_for(&id));
        let o = e.party().ledger(&ledger).unwrap().consensus_outcome().clone();
        assert_eq!((o.slot(), o.follower().amount, o.total()), (None, U256::from(25), Some(U256::from(35))));
    }
}
