//! Group commit: inputs that arrive together are applied as one group — the ledger changes
//! their objectives ask for go out as one batch per ledger, and everything is committed in
//! one transaction before anything of the group is sent.

mod engines;

use alloy_primitives::{Address, U256};
use engines::{config, key, Network};
use nitro_core::party::ObjectiveId;
use nitro_node::{
    engine::{Engine, EngineError, Input, Request},
    store::Store,
};

const FUNDINGS: u64 = 20;

/// Alice, the hub and Bob with a ledger each side of the hub; then Alice asks for `FUNDINGS`
/// virtual channels at once. Returns the ledger proposals and the hub's commits the fundings
/// took, and checks every party funded every channel.
fn fund_many(grouped: bool) -> (u64, u64) {
    let engines: Vec<Engine> =
        (1..=3).map(|n| Engine::open(Store::in_memory().unwrap(), key(n), config()).unwrap().0).collect();
    let mut net = Network::new(engines);
    let [alice, hub, bob] = [0, 1, 2].map(|i| net.engines[i].party().address());
    for (n, other) in [alice, bob].into_iter().enumerate() {
        let out = net.engines[1]
            .step(Input::Request(Request::LedgerOpen {
                participants: [hub, other],
                asset: Address::ZERO,
                amounts: [U256::from(10_000), U256::from(10_000)],
                nonce: n as u64,
                more_assets: Vec::new(),
            }))
            .unwrap();
        net.absorb(1, out);
        net.run();
    }
    assert_eq!(net.engines[1].party().ledgers().count(), 2);

    net.grouped = grouped;
    net.proposals = 0;
    let hub_commits = net.engines[1].store().commits();
    let mut ids: Vec<ObjectiveId> = Vec::new();
    for k in 0..FUNDINGS {
        let out = net.engines[0]
            .step(Input::Request(Request::VirtualFund {
                participants: vec![alice, hub, bob],
                asset: Address::ZERO,
                amounts: [U256::from(10), U256::ZERO],
                nonce: 100 + k,
            }))
            .unwrap();
        ids.push(out.started.unwrap());
        net.absorb(0, out);
    }
    net.run();
    for e in &net.engines {
        for id in &ids {
            assert!(e.party().is_complete(id), "{id} at {}", e.party().address());
        }
    }
    let ledger = net.engines[1].party().ledgers().next().unwrap();
    assert_eq!(ledger.consensus_outcome().guarantees().count() as u64, FUNDINGS);
    (net.proposals, net.engines[1].store().commits() - hub_commits)
}

#[test]
fn fundings_that_arrive_together_share_one_state_per_ledger_and_one_commit() {
    let (grouped_proposals, grouped_commits) = fund_many(true);
    let (single_proposals, single_commits) = fund_many(false);
    // One guarantee state per ledger for all twenty (two ledgers), instead of one each.
    assert_eq!(grouped_proposals, 2, "grouped");
    assert_eq!(single_proposals, 2 * FUNDINGS, "one by one");
    assert!(
        grouped_commits * 5 <= single_commits,
        "hub commits: {grouped_commits} grouped, {single_commits} one by one"
    );
}

#[test]
fn each_input_of_a_group_keeps_its_own_result() {
    let (mut engine, _) = Engine::open(Store::in_memory().unwrap(), key(1), config()).unwrap();
    let me = key(1).address();
    let (peer, other) = (key(2).address(), key(3).address());
    let group = engine
        .step_group(vec![
            Input::Request(Request::LedgerOpen {
                participants: [me, peer],
                asset: Address::ZERO,
                amounts: [U256::from(1), U256::from(2)],
                nonce: 1,
                more_assets: Vec::new(),
            }),
            // Refused: no such ledger. Changes nothing, does not spoil the others.
            Input::Request(Request::LedgerClose { channel_id: Default::default() }),
            Input::Request(Request::LedgerOpen {
                participants: [me, other],
                asset: Address::ZERO,
                amounts: [U256::from(1), U256::from(2)],
                nonce: 2,
                more_assets: Vec::new(),
            }),
        ])
        .unwrap();
    assert_eq!(group.results.len(), 3);
    assert!(matches!(group.results[0], Ok(Some(ObjectiveId::DirectFund(_)))));
    assert!(matches!(group.results[1], Err(EngineError::Party(_))));
    assert!(matches!(group.results[2], Ok(Some(ObjectiveId::DirectFund(_)))));
    // Both openings' prefund states, committed before being handed out.
    assert_eq!(group.output.messages.len(), 2);
    assert_eq!(engine.store().commits(), 1);
    assert_eq!(engine.store().row_counts().unwrap().iter().find(|(t, _)| *t == "outbox").unwrap().1, 2);
}
