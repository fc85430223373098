//! The four objectives end to end between Alice, a Hub and Bob, over an in-memory network and
//! the in-memory adjudicator of `nitro-testkit` (the anvil-backed version lives in the node crate's tests).

mod common;

use common::{key, outcome_of, World};
use nitro_core::{
    party::{ObjectiveId, PartyError, Payload, WaitingFor},
    Address, ConsensusChannel, B256, U256, U48,
};

#[test]
fn direct_fund_opens_a_ledger_with_both_deposits() {
    let mut w = World::new();
    let (la, lb) = w.open_ledgers(1000);
    assert_eq!(w.chain.holdings(&la), U256::from(2000));
    assert_eq!(w.chain.holdings(&lb), U256::from(2000));
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
    assert!(w.chain.all_holdings().all(|(_, h)| h.is_zero()));
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
        w.chain.all_holdings().all(|(_, h)| h.is_zero()) && w.parties.iter().all(|p| p.ledgers().count() == 0)
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
    let resync = w.parties[0].resync(w.addr(1));
    let countersignature = resync.messages.into_iter().find(|m| m.to == w.addr(1)).unwrap();
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

/// Alice closes L(hub, alice) while the hub's proposal at the next turn is on its way: her
/// final state takes that turn. The hub, which signed its proposal there, must not sign
/// Alice's final state at the same turn; it answers with a final state at a fresh turn,
/// Alice refuses the late proposal (the ledger is closing) and adopts the higher final
/// state, and the ledger closes with every party having signed one state per turn (the
/// harness checks every signature).
#[test]
fn a_close_racing_a_proposal_signs_the_final_state_at_a_fresh_turn() {
    let mut w = World::new();
    let (la, _) = w.open_ledgers(1000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [U256::from(5), U256::ZERO], 3));
    // Deliver until the hub's proposal for V in L(hub, alice) is on the wire; hold it back.
    let mut held = None;
    let mut steps = 0;
    while held.is_none() {
        steps += 1;
        assert!(steps < 10_000, "the hub never proposed");
        let Some((from, e)) = w.network.pop_front() else { panic!("quiet before the hub proposed") };
        if e.to == alice && matches!(&e.payload, Payload::Ledger(nitro_core::LedgerMessage::Proposal(_))) {
            held = Some((from, e));
            continue;
        }
        let to = w.index_of(e.to);
        if let Ok(fx) = w.parties[to].handle_message(from, e.payload) {
            w.absorb(to, fx);
        }
    }
    let hub_turn = w.parties[1].ledger(&la).unwrap().highest_turn();
    assert_eq!(hub_turn, U48::from(2), "the hub signed its proposal at turn 2");
    let close = w.call(0, |p| p.direct_defund(la));
    w.network.push_back(held.unwrap());
    // Deliver everything, tolerating the refusals a race produces, until quiet.
    for _ in 0..100 {
        while let Some((from, e)) = w.network.pop_front() {
            let to = w.index_of(e.to);
            if let Ok(fx) = w.parties[to].handle_message(from, e.payload) {
                w.absorb(to, fx);
            }
        }
        w.deliver_chain_events();
        if w.parties[0].is_complete(&close) {
            break;
        }
        w.reconnect_all();
    }
    assert!(w.parties[0].is_complete(&close), "{:?}", w.parties[0].waiting_for(&close));
    assert!(w.parties[1].is_complete(&ObjectiveId::DirectDefund(la)));
    let turns = |who: Address| -> Vec<U48> {
        let mut t: Vec<U48> = w.signed.keys().filter(|(p, c, _)| *p == who && *c == la).map(|(_, _, t)| *t).collect();
        t.sort();
        t
    };
    // Alice signed a final state at turn 2 — the turn of the hub's proposal — and later the
    // one both signed; the hub never signed at turn 2 again.
    let (hub_turns, alice_turns) = (turns(hub), turns(alice));
    let last = *hub_turns.last().unwrap();
    assert!(
        last > hub_turn && alice_turns.contains(&U48::from(2)) && alice_turns.contains(&last),
        "{hub_turns:?} {alice_turns:?}"
    );
    assert_eq!(w.chain.paid_out[&alice], U256::from(1000));
    assert_eq!(w.chain.paid_out[&hub], U256::from(1000));
    assert!(!w.parties[0].is_complete(&v), "V could not be funded through a closing ledger");
}

/// Concurrent virtual fundings through a hub that holds its proposals for a moment (as a
/// node does for a group of inputs) go out as one proposal per ledger: one signature and one
/// countersignature for all of them.
#[test]
fn concurrent_virtual_fundings_coalesce_into_one_proposal_per_ledger() {
    let mut w = World::new();
    let (la, lb) = w.open_ledgers(10_000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    w.parties[1].hold_proposals(true);
    let ids: Vec<_> = (0..10u64)
        .map(|n| w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [U256::from(10), U256::ZERO], n)))
        .collect();
    let mut proposals = Vec::new();
    for _ in 0..10 {
        w.run();
        let fx = w.parties[1].flush();
        for m in &fx.messages {
            if let Payload::Ledger(nitro_core::LedgerMessage::Proposal(sp)) = &m.payload {
                proposals.push(sp.proposals.len());
            }
        }
        if fx.messages.is_empty() {
            break;
        }
        w.absorb(1, fx);
    }
    for id in &ids {
        assert!(w.parties.iter().all(|p| p.is_complete(id)), "{id}");
    }
    assert_eq!(proposals, vec![10, 10], "one proposal of ten changes in each ledger");
    assert_eq!(outcome_of(&w.parties[1], &la).guarantees().len(), 10);
    assert_eq!(outcome_of(&w.parties[1], &lb).guarantees().len(), 10);
}
