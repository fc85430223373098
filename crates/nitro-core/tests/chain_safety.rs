//! What the party does when the chain misbehaves, on the in-memory adjudicator: a failed
//! deposit is asked for again by the timer alone, a follower waits for the leader's
//! conclusion in chain time (not timer ticks), and a reorg that takes back reported events
//! (a [`ChainEvent::Retracted`]) undoes what they did — no postfund is signed on holdings that
//! went away, deposits are made again without double funding, and a stale challenge whose
//! answer was taken back is answered again.

mod common;

use common::World;
use nitro_core::{
    chain::{ChainEvent, ChainTransaction},
    party::{Objective, ObjectiveId},
    Address, ChannelId, U256, U48,
};
use nitro_testkit::Mode;

fn amount(n: u64) -> U256 {
    U256::from(n)
}

/// Delivers peer messages until none is left, leaving chain events undelivered.
fn deliver_messages(w: &mut World) {
    while let Some((from, e)) = w.network.pop_front() {
        let to = w.index_of(e.to);
        if w.gone[to] {
            continue;
        }
        if let Ok(fx) = w.parties[to].handle_message(from, e.payload) {
            w.absorb(to, fx);
        }
    }
}

/// Delivers `event` to every party present.
fn deliver(w: &mut World, event: &ChainEvent) {
    for i in 0..w.parties.len() {
        if !w.gone[i] {
            let fx = w.parties[i].handle_chain_event(event);
            w.absorb(i, fx);
        }
    }
}

fn postfund_signatures(w: &World, party: usize, id: &ObjectiveId) -> usize {
    match w.parties[party].objective(id) {
        Some(Objective::DirectFund(d)) => d.postfund().signatures().iter().flatten().count(),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_failed_deposit_is_asked_for_again_by_the_next_tick_with_nothing_else_happening() {
    let mut w = World::with_parties(2);
    let (a, b) = (w.addr(0), w.addr(1));
    w.lose_transactions = 1; // the leader's deposit fails (an outage, a refusal, a fee spike)
    let id = w.call(0, |p| p.direct_fund([a, b], Address::ZERO, [amount(100), amount(50)], 1));
    w.run();
    let ledger = id.channel_id();
    assert_eq!(w.chain.holdings(&ledger), U256::ZERO, "the deposit failed");
    assert!(!w.parties[0].is_complete(&id));
    // No message, no chain event: one tick alone asks for the deposit again.
    w.tick(1);
    w.run();
    assert!(w.parties[0].is_complete(&id) && w.parties[1].is_complete(&id));
    assert_eq!(w.chain.holdings(&ledger), amount(150));
}

#[test]
fn the_follower_waits_for_the_leaders_conclusion_in_chain_time_not_in_ticks() {
    let mut w = World::with_parties(2);
    let (a, b) = (w.addr(0), w.addr(1));
    let id = w.call(0, |p| p.direct_fund([a, b], Address::ZERO, [amount(100), amount(50)], 1));
    w.run();
    let ledger = id.channel_id();
    let close = w.call(0, |p| p.direct_defund(ledger));
    // The leader's proposal of the final state reaches the follower; then the leader goes quiet
    // (its conclusion is pending somewhere, or it is gone).
    let (from, e) = w.network.pop_front().expect("the leader's final state");
    w.gone[0] = true;
    let fx = w.parties[1].handle_message(from, e.payload).unwrap();
    w.absorb(1, fx);
    w.run();
    let final_complete = |w: &World| match w.parties[1].objective(&close) {
        Some(Objective::DirectDefund(d)) => d.final_state().is_fully_signed(),
        _ => false,
    };
    assert!(final_complete(&w), "the follower holds the final state signed by both");
    // A hundred ticks, a second of chain time each: far more ticks than the old patience (10),
    // less chain time than the leader is given.
    for _ in 0..100 {
        w.tick(1);
        w.run();
    }
    assert_eq!(w.chain.holdings(&ledger), amount(150), "no conclusion of the follower's yet");
    // Chain time moves on past the patience: the follower concludes on its own.
    w.tick(30);
    w.run();
    w.tick(1);
    w.run();
    assert_eq!(w.chain.holdings(&ledger), U256::ZERO, "the follower concluded and paid both out");
    assert!(w.parties[1].is_complete(&close));
}

#[test]
fn a_reorg_that_takes_back_deposits_makes_them_again_before_any_postfund_is_signed() {
    let mut w = World::with_parties(2);
    let (a, b) = (w.addr(0), w.addr(1));
    let fork = w.chain.clone(); // the chain as both branches share it
    let id = w.call(0, |p| p.direct_fund([a, b], Address::ZERO, [amount(100), amount(50)], 1));
    let ledger = id.channel_id();
    deliver_messages(&mut w);
    // The leader's deposit is mined; its event reaches both, and the follower deposits too.
    let first = w.chain_events.pop_front().expect("the leader's deposit");
    deliver(&mut w, &first);
    assert_eq!(w.chain.holdings(&ledger), amount(150), "both deposits are mined");
    assert_eq!(postfund_signatures(&w, 0, &id), 0, "the follower's deposit is not reported yet");

    // A reorg takes both blocks back: the chain is the shared one again, the follower's event
    // never arrives, and the watcher retracts what it reported (re-reading the holdings).
    w.chain = fork.clone();
    w.chain_events.clear();
    let retraction = ChainEvent::Retracted {
        channel_id: ledger,
        from_block: first.block_number(),
        block_number: first.block_number() - 1,
        asset: Address::ZERO,
        held: fork.holdings(&ledger),
        turn_num_record: U48::ZERO,
        finalizes_at: 0,
    };
    deliver(&mut w, &retraction);
    deliver_messages(&mut w);
    assert_eq!((postfund_signatures(&w, 0, &id), postfund_signatures(&w, 1, &id)), (0, 0));

    // Both deposit again, in order, each exactly once, and only then is the postfund signed.
    w.run();
    assert!(w.parties[0].is_complete(&id) && w.parties[1].is_complete(&id));
    assert_eq!(w.chain.holdings(&ledger), amount(150));
    assert_eq!(w.chain.deposited.get(&a), Some(&amount(100)));
    assert_eq!(w.chain.deposited.get(&b), Some(&amount(50)));
}

#[test]
fn a_stale_challenge_whose_answer_a_reorg_took_back_is_answered_again() {
    let mut w = World::new();
    let (la, _) = w.open_ledgers(1000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let postfund = w.parties[1].ledger(&la).unwrap().consensus_state();
    w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [amount(5), U256::ZERO], 3));
    w.run();
    let latest = w.parties[1].ledger(&la).unwrap().consensus_turn();
    // Alice (malicious from now on) challenges with the old postfund.
    w.gone[0] = true;
    let stale = ChainTransaction::challenge(postfund, &common::key(1)).unwrap();
    let events = w.chain.execute(alice, &stale).unwrap();
    let fork = w.chain.clone();
    w.chain_events.extend(events);
    w.run();
    assert_eq!(w.chain.mode(&la), Mode::Open, "the hub answered");
    assert!(w.parties[1].registered_challenge(&la).is_none());

    // A reorg takes the answer's block back.
    let answered_in = fork.block;
    w.chain = fork.clone();
    w.chain_events.clear();
    let status = fork.status(&la);
    let retraction = ChainEvent::Retracted {
        channel_id: la,
        from_block: answered_in,
        block_number: answered_in - 1,
        asset: Address::ZERO,
        held: fork.holdings(&la),
        turn_num_record: status.turn_num_record,
        finalizes_at: status.finalizes_at,
    };
    assert_eq!(w.chain.mode(&la), Mode::Challenge);
    deliver(&mut w, &retraction);
    assert_eq!(w.parties[1].registered_challenge(&la).map(|c| c.turn), Some(U48::from(1)), "it runs again");
    w.run();
    assert_eq!(w.chain.mode(&la), Mode::Open, "answered again, before the deadline");
    assert_eq!(w.chain.status(&la).turn_num_record, latest);
    let _: ChannelId = la;
}

#[test]
fn deposits_and_retractions_of_another_asset_never_count_as_the_ledgers_funding() {
    let mut w = World::with_parties(2);
    let (a, b) = (w.addr(0), w.addr(1));
    let id = w.call(0, |p| p.direct_fund([a, b], Address::ZERO, [amount(100), amount(50)], 1));
    let ledger = id.channel_id();
    deliver_messages(&mut w);
    // Before any ETH deposit, anyone can deposit a worthless token into the ledger's id: an
    // event claiming far more than the ledger's total, then a retraction re-reading as much.
    let junk = Address::repeat_byte(0x66);
    let forged = [
        ChainEvent::Deposited { channel_id: ledger, block_number: 1, asset: junk, now_held: U256::MAX },
        ChainEvent::Retracted {
            channel_id: ledger,
            from_block: 2,
            block_number: 1,
            asset: junk,
            held: U256::MAX,
            turn_num_record: U48::ZERO,
            finalizes_at: 0,
        },
    ];
    for event in &forged {
        deliver(&mut w, event);
        deliver_messages(&mut w);
        for party in 0..2 {
            assert_eq!(postfund_signatures(&w, party, &id), 0, "party {party} signed a postfund on junk holdings");
        }
    }
    // The real deposits still happen, in order, and only then is the postfund signed.
    w.run();
    assert!(w.parties[0].is_complete(&id) && w.parties[1].is_complete(&id));
    assert_eq!(w.chain.deposited.get(&a), Some(&amount(100)));
    assert_eq!(w.chain.deposited.get(&b), Some(&amount(50)));
}
