//! What the node's store costs as history grows: Alice, a hub and Bob as engines on SQLite
//! files (the node's store, fsync and all) and the in-memory adjudicator, running real
//! virtual-channel lifecycles through the hub (funded, paid once, closed), in rounds of
//! `ROUND` at once. After each stage: the hub's restart time (opening its store and loading
//! the party), its store's rows and bytes, and the rows the hub gained over an idle stretch
//! of ticks. Every engine ticks once per round, as a node's timer would. Then the archive alone is grown to 100,000 and 1,000,000 finished objectives by
//! copying the real archive rows under new ids (the live state unchanged), and the restart
//! timed again: restart cost follows the live state, not history.
//!
//! `cargo bench -p nitro-node --bench store [-- LIFECYCLES]` (default 10,000). The last line
//! of stdout is a JSON object.

#[path = "../tests/engines/mod.rs"]
mod engines;

use std::path::Path;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use engines::{config, key, Network};
use nitro_core::party::{ObjectiveId, EVICT_AFTER_TICKS};
use nitro_node::{
    engine::{Engine, Input, Request},
    store::Store,
};
use serde_json::json;

/// Lifecycles started together.
const ROUND: u64 = 50;
/// Restarts timed per measurement (the median is reported).
const RESTARTS: usize = 5;

fn main() {
    let lifecycles: u64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let paths: Vec<_> = ["alice", "hub", "bob"].iter().map(|n| dir.path().join(format!("{n}.db"))).collect();
    let engines = paths
        .iter()
        .zip(1..)
        .map(|(p, n)| Engine::open(Store::open(p).unwrap(), key(n), config()).unwrap().0)
        .collect();
    let mut net = Network::new(engines);
    net.grouped = true;
    let [alice, hub, bob] = [0, 1, 2].map(|i| net.engines[i].party().address());
    for (n, other) in [alice, bob].into_iter().enumerate() {
        let deposit = U256::from(10u64.pow(18));
        let request = Request::LedgerOpen {
            participants: [hub, other],
            asset: Address::ZERO,
            amounts: [deposit, deposit],
            nonce: n as u64,
            more_assets: Vec::new(),
        };
        let out = net.engines[1].step(Input::Request(request)).unwrap();
        net.absorb(1, out);
        net.run();
    }
    let (ledger_rows, ledger_bytes) = net.engines[1].store().state_size().unwrap();

    let mut stages = Vec::new();
    let mut done = 0u64;
    let mut nonce = 100u64;
    let started = Instant::now();
    let mut checkpoints = vec![0u64, 1_000, lifecycles];
    checkpoints.retain(|c| *c <= lifecycles);
    checkpoints.dedup();
    let mut open_vc = None;
    for checkpoint in checkpoints {
        while done < checkpoint {
            let n = ROUND.min(checkpoint - done);
            run_round(&mut net, [alice, hub, bob], &mut nonce, n);
            tick_all(&mut net); // a node's timer runs meanwhile
            done += n;
        }
        settle(&mut net);
        if open_vc.is_none() {
            open_vc = Some(one_open_virtual_channel(&mut net, [alice, hub, bob], &mut nonce));
        }
        let idle = idle_growth(&mut net);
        let restart = restart_ms(&net, &paths[1]);
        stages.push(stage(&net, &paths[1], "real", done, restart, idle));
    }
    let elapsed = started.elapsed();

    // The archive alone, grown by copies of its real rows.
    for target in [100_000u64, 1_000_000] {
        if target <= done {
            continue;
        }
        grow_archive(&paths[1], target);
        let restart = restart_ms(&net, &paths[1]);
        stages.push(stage(&net, &paths[1], "archive_synthesized", target, restart, None));
    }

    let (vc_rows, vc_bytes) = open_vc.unwrap_or((0, 0));
    println!("stage                history  restart ms  state rows  archive rows  signed rows  file KiB  idle growth");
    for s in &stages {
        println!(
            "{:<20} {:>8} {:>11.2} {:>11} {:>13} {:>12} {:>9} {:>12}",
            s["kind"].as_str().unwrap_or(""),
            s["history"],
            s["restart_ms"].as_f64().unwrap_or(0.0),
            s["state_rows"],
            s["archive_rows"],
            s["signed_rows"],
            s["file_kib"],
            s["idle_growth_rows"]
        );
    }
    println!(
        "{}",
        json!({
            "lifecycles": done,
            "lifecycles_per_s": done as f64 / elapsed.as_secs_f64(),
            "hub_state_bytes_two_ledgers": ledger_bytes,
            "hub_state_rows_two_ledgers": ledger_rows,
            "hub_state_bytes_per_open_virtual_channel": vc_bytes,
            "hub_state_rows_per_open_virtual_channel": vc_rows,
            "stages": stages,
        })
    );
}

/// `n` lifecycles at once: funded, paid once, closed.
fn run_round(net: &mut Network, [alice, hub, bob]: [Address; 3], nonce: &mut u64, n: u64) {
    let mut ids = Vec::new();
    for _ in 0..n {
        *nonce += 1;
        let request = Request::VirtualFund {
            participants: vec![alice, hub, bob],
            asset: Address::ZERO,
            amounts: [U256::from(10), U256::ZERO],
            nonce: *nonce,
        };
        let out = net.engines[0].step(Input::Request(request)).unwrap();
        ids.push(out.started.unwrap());
        net.absorb(0, out);
    }
    net.run();
    for id in &ids {
        let out = net.engines[0]
            .step(Input::Request(Request::Pay { channel_id: id.channel_id(), amount: U256::from(1) }))
            .unwrap();
        net.absorb(0, out);
    }
    net.run();
    let mut closes: Vec<ObjectiveId> = Vec::new();
    for id in &ids {
        let out = net.engines[0].step(Input::Request(Request::VirtualDefund { channel_id: id.channel_id() })).unwrap();
        closes.push(out.started.unwrap());
        net.absorb(0, out);
    }
    net.run();
    for e in &net.engines {
        for id in ids.iter().chain(&closes) {
            assert!(e.party().objective(id).is_none() || e.party().is_complete(id), "{id} unfinished");
        }
    }
}

/// Ticks every engine past the archive grace.
fn settle(net: &mut Network) {
    for _ in 0..=EVICT_AFTER_TICKS {
        tick_all(net);
    }
}

fn tick_all(net: &mut Network) {
    for i in 0..net.engines.len() {
        let out = net.engines[i].step(Input::Tick { unix_secs: 0, chain_time: Some(1_000) }).unwrap();
        net.absorb(i, out);
    }
    net.run();
}

/// One virtual channel funded and left open: what it adds to the hub's live state.
fn one_open_virtual_channel(net: &mut Network, [alice, hub, bob]: [Address; 3], nonce: &mut u64) -> (u64, u64) {
    settle(net);
    let before = net.engines[1].store().state_size().unwrap();
    *nonce += 1;
    let request = Request::VirtualFund {
        participants: vec![alice, hub, bob],
        asset: Address::ZERO,
        amounts: [U256::from(10), U256::ZERO],
        nonce: *nonce,
    };
    let out = net.engines[0].step(Input::Request(request)).unwrap();
    net.absorb(0, out);
    net.run();
    settle(net);
    let after = net.engines[1].store().state_size().unwrap();
    (after.0 - before.0, after.1 - before.1)
}

/// Rows the hub's store gains over 1,000 idle ticks (must be 0).
fn idle_growth(net: &mut Network) -> Option<i64> {
    let rows =
        |net: &Network| -> i64 { net.engines[1].store().row_counts().unwrap().iter().map(|(_, n)| *n as i64).sum() };
    let before = rows(net);
    for _ in 0..1_000 {
        tick_all(net);
    }
    Some(rows(net) - before)
}

/// The median time to open the hub's store and load its party, over [`RESTARTS`] opens.
fn restart_ms(net: &Network, path: &Path) -> f64 {
    let mut times: Vec<Duration> = (0..RESTARTS)
        .map(|_| {
            let start = Instant::now();
            let (engine, _) = Engine::open(Store::open(path).unwrap(), key(2), config()).unwrap();
            let took = start.elapsed();
            assert_eq!(engine.party().ledgers().count(), net.engines[1].party().ledgers().count());
            took
        })
        .collect();
    times.sort();
    times[RESTARTS / 2].as_secs_f64() * 1e3
}

fn stage(
    net: &Network,
    path: &Path,
    kind: &str,
    history: u64,
    restart_ms: f64,
    idle: Option<i64>,
) -> serde_json::Value {
    let counts = net.engines[1].store().row_counts().unwrap();
    let count = |t: &str| counts.iter().find(|(n, _)| *n == t).map_or(0, |(_, c)| *c);
    let file_kib = std::fs::metadata(path).map_or(0, |m| m.len() / 1024);
    let wal = path.with_extension("db-wal");
    let wal_kib = std::fs::metadata(wal).map_or(0, |m| m.len() / 1024);
    json!({
        "kind": kind,
        "history": history,
        "restart_ms": restart_ms,
        "state_rows": count("state"),
        "archive_rows": count("archive"),
        "signed_rows": count("signed_states"),
        "file_kib": file_kib,
        "wal_kib": wal_kib,
        "outbox_rows": count("outbox"),
        "transaction_rows": count("transactions"),
        "idle_growth_rows": idle,
    })
}

/// Copies the archive's rows under new ids until it holds `target` rows.
fn grow_archive(path: &Path, target: u64) {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut have: u64 = conn.query_row("SELECT COUNT(*) FROM archive", [], |r| r.get::<_, i64>(0)).unwrap() as u64;
    assert!(have > 0, "no archived objectives to copy");
    while have < target {
        // `have` grows with every pass: each pass's suffix is new.
        let generation = have as i64;
        let take = (target - have).min(have);
        conn.execute(
            "INSERT INTO archive (id, status, detail)
             SELECT id || '-copy' || ?1, status, detail FROM archive WHERE id NOT LIKE '%-copy%' LIMIT ?2",
            rusqlite::params![generation, take as i64],
        )
        .unwrap();
        have = conn.query_row("SELECT COUNT(*) FROM archive", [], |r| r.get::<_, i64>(0)).unwrap() as u64;
    }
}
