//! Upgrading a store written by an earlier release. `tests/data/v1` holds the stores (as SQL
//! text: `sqlite3 .dump` plus its `user_version`) of three parties — Alice, a hub and Bob — written by the release before the state
//! store (schema v1, an input log; the original release), `tests/data/v2` the same run
//! written by the release with the signature audit (schema v2). In both: two ledgers through
//! the hub, three virtual channels funded, each paid 7 wei, the first closed again.
//!
//! On first open each log is replayed once through today's party, the state is written, the
//! log dropped; later opens read the state only. The upgraded parties then carry on together.

mod engines;

use std::path::{Path, PathBuf};

use alloy_primitives::U256;
use engines::{config, key, Network};
use nitro_core::party::ObjectiveId;
use nitro_node::{
    engine::{Engine, Input, Request},
    store::Store,
};

const NAMES: [&str; 3] = ["alice", "hub", "bob"];

/// Writes the old release's stores from their SQL text into `dir`.
fn restore_old_stores(version: &str, dir: &Path) -> Vec<PathBuf> {
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(version);
    NAMES
        .iter()
        .map(|name| {
            let sql = std::fs::read_to_string(data.join(format!("{name}.sql"))).unwrap();
            let path = dir.join(format!("{name}.db"));
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(&sql).unwrap();
            path
        })
        .collect()
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path).unwrap().query_row("PRAGMA user_version", [], |r| r.get(0)).unwrap()
}

fn open(path: &Path, i: usize) -> (Engine, nitro_node::engine::Recovery) {
    Engine::open(Store::open(path).unwrap(), key(i as u8 + 1), config()).unwrap()
}

fn upgrades_and_carries_on(version: &str, old_user_version: i64) {
    let dir = tempfile::tempdir().unwrap();
    let paths = restore_old_stores(version, dir.path());
    for p in &paths {
        assert_eq!(user_version(p), old_user_version);
    }

    // First open: the log is replayed once.
    let mut engines = Vec::new();
    let mut states = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let (engine, recovery) = open(p, i);
        assert!(recovery.replayed > 20, "{}: {recovery:?}", NAMES[i]);
        states.push(engine.party().ledgers().map(|l| l.consensus_state()).collect::<Vec<_>>());
        engines.push(engine);
    }
    let (alice, hub, bob) = (&engines[0], &engines[1], &engines[2]);
    assert_eq!(alice.party().ledgers().count(), 1);
    assert_eq!(hub.party().ledgers().count(), 2);
    assert_eq!(bob.party().ledgers().count(), 1);
    // Alice funded three channels of 100 and got 93 back from the one closed; the hub earned 7.
    let alice_ledger = alice.party().ledgers().next().unwrap();
    let o = alice_ledger.consensus_outcome();
    assert_eq!(alice_ledger.consensus_turn().to::<u64>(), 5);
    assert_eq!((o.leader().amount, o.follower().amount), (U256::from(1007), U256::from(793)));
    assert_eq!(o.guarantees().count(), 2);
    let still_open: Vec<_> = o.guarantees().map(|g| g.target()).collect();
    for c in &still_open {
        assert_eq!(alice.party().paid(c), U256::from(7), "Alice's vouchers survive");
        assert!(alice.party().is_complete(&ObjectiveId::VirtualFund(*c)));
    }
    drop(engines);

    // Later opens read the state: nothing is replayed, the same ledgers come back.
    let mut engines = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        assert_eq!(user_version(p), 3, "{}", NAMES[i]);
        let (engine, recovery) = open(p, i);
        assert_eq!(recovery.replayed, 0);
        assert!(recovery.records > 0);
        let again: Vec<_> = engine.party().ledgers().map(|l| l.consensus_state()).collect();
        assert_eq!(again, states[i], "{}", NAMES[i]);
        assert_eq!(engine.store().row_counts().unwrap().iter().find(|(t, _)| *t == "inputs").unwrap().1, 0);
        engines.push(engine);
    }

    // The upgraded parties carry on: Bob closes one more channel with 7 wei, at fresh turns.
    let mut net = Network::new(engines);
    let out = net.engines[2].step(Input::Request(Request::VirtualDefund { channel_id: still_open[0] })).unwrap();
    let id = out.started.unwrap();
    net.absorb(2, out);
    net.run();
    let engines = net.engines;
    for e in &engines {
        assert!(e.party().is_complete(&id));
    }
    let ledger = engines[0].party().ledgers().next().unwrap();
    assert_eq!(ledger.consensus_turn().to::<u64>(), 6);
    assert_eq!(ledger.consensus_outcome().follower().amount, U256::from(793 + 93));
    assert_eq!(ledger.consensus_outcome().guarantees().count(), 1);
    let bob_ledger = engines[2].party().ledgers().next().unwrap();
    assert_eq!(bob_ledger.consensus_outcome().follower().amount, U256::from(1014));
}

#[test]
fn a_v1_input_log_of_the_original_release_upgrades_once_and_carries_on() {
    upgrades_and_carries_on("v1", 1);
}

#[test]
fn a_v2_input_log_upgrades_once_and_carries_on() {
    upgrades_and_carries_on("v2", 2);
}

/// A log that does not replay (here one input altered) stops the start with the input's
/// position, and leaves the file as the earlier release wrote it, for that release to finish.
#[test]
fn a_log_that_does_not_replay_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let paths = restore_old_stores("v1", dir.path());
    let conn = rusqlite::Connection::open(&paths[0]).unwrap();
    // Alice's first ledger state, countersigned by someone else.
    conn.execute("UPDATE inputs SET body = replace(body, '0x2b5ad5c4795c026514f8317c7a215e218dccd6cf', '0x00000000000000000000000000000000000000aa') WHERE seq = 1", []).unwrap();
    let before: i64 = conn.query_row("SELECT COUNT(*) FROM inputs", [], |r| r.get(0)).unwrap();
    drop(conn);
    let refused = Engine::open(Store::open(&paths[0]).unwrap(), key(1), config());
    match refused {
        Err(nitro_node::engine::EngineError::Load(why)) => assert!(why.contains("input 1 "), "{why}"),
        other => panic!("expected a load error, got {:?}", other.map(|_| ())),
    }
    assert_eq!(user_version(&paths[0]), 1);
    let conn = rusqlite::Connection::open(&paths[0]).unwrap();
    let after: i64 = conn.query_row("SELECT COUNT(*) FROM inputs", [], |r| r.get(0)).unwrap();
    assert_eq!(after, before);
    let tables: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE name IN ('state', 'archive', 'signed_states')", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(tables, 0, "no table of the new schema yet");
}
