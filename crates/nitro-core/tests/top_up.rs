//! Top-up of an open ledger (ADR-0022 §4) on the in-memory adjudicator: reserve, deposit,
//! credit — and never a credit before the deposit is on chain in the crediting party's view.

mod common;

use common::{outcome_of, World};
use nitro_core::{
    party::{ObjectiveId, PartyError, WaitingFor},
    Side, Slot, U256,
};

/// Delivers messages only (no chain events), until quiet.
fn deliver_messages(w: &mut World) {
    while let Some((from, e)) = w.network.pop_front() {
        let to = w.index_of(e.to);
        let fx = w.parties[to].handle_message(from, e.payload).unwrap();
        w.absorb(to, fx);
    }
}

#[test]
fn follower_countersigns_the_credit_only_once_it_sees_the_deposit() {
    let mut w = World::new();
    let (ledger, _) = w.open_ledgers(100);
    let (alice, hub) = (0, 1);
    // The hub (leader of L(hub, alice)) tops up 40.
    let id = w.call(hub, |p| p.top_up(ledger, U256::from(40)));
    assert_eq!(id, ObjectiveId::TopUp(ledger));
    deliver_messages(&mut w);
    let slot = Slot { side: Side::Leader, amount: U256::from(40) };
    // Reserve countersigned: the slot is in both consensus states; the hub deposited.
    assert_eq!(outcome_of(&w.parties[alice], &ledger).slot(), Some(slot));
    assert_eq!(outcome_of(&w.parties[hub], &ledger).slot(), Some(slot));
    deliver_messages(&mut w);
    assert_eq!(w.chain.holdings(&ledger), U256::from(240));
    // Only the hub sees the deposit: it proposes the credit, alice defers it.
    let events: Vec<_> = w.chain_events.drain(..).collect();
    for ev in &events {
        let fx = w.parties[hub].handle_chain_event(ev);
        w.absorb(hub, fx);
    }
    deliver_messages(&mut w);
    assert_eq!(outcome_of(&w.parties[alice], &ledger).slot(), Some(slot), "credited before alice saw the deposit");
    assert_eq!(outcome_of(&w.parties[hub], &ledger).leader().amount, U256::from(100));
    assert!(!w.parties[hub].is_complete(&id));
    assert_eq!(w.parties[hub].waiting_for(&id), Some(WaitingFor::Agreement { what: "credit" }));
    // Alice sees it: she countersigns.
    for ev in &events {
        let fx = w.parties[alice].handle_chain_event(ev);
        w.absorb(alice, fx);
    }
    w.run();
    for p in [alice, hub] {
        let o = outcome_of(&w.parties[p], &ledger);
        assert_eq!((o.slot(), o.leader().amount, o.total()), (None, U256::from(140), Some(U256::from(240))));
    }
    assert!(w.parties[hub].is_complete(&id));
}

#[test]
fn follower_top_up_is_credited_and_paid_out_at_close() {
    let mut w = World::new();
    let (ledger, _) = w.open_ledgers(100);
    let (alice, hub) = (0, 1);
    let id = w.call(alice, |p| p.top_up(ledger, U256::from(25)));
    // A second top-up while one runs is refused, leaving everything as it was.
    assert!(w.parties[alice].top_up(ledger, U256::from(1)).is_err());
    assert!(w.parties[alice].top_up(ledger, U256::ZERO).is_err());
    w.run();
    assert!(w.parties[alice].is_complete(&id), "{:?}", w.parties[alice].waiting_for(&id));
    assert!(w.parties[hub].is_complete(&id), "{:?}", w.parties[hub].waiting_for(&id));
    for p in [alice, hub] {
        let o = outcome_of(&w.parties[p], &ledger);
        assert_eq!((o.slot(), o.follower().amount, o.total()), (None, U256::from(125), Some(U256::from(225))));
    }
    assert_eq!(w.chain.holdings(&ledger), U256::from(225));
    // A second top-up after the first completed.
    let again = w.call(alice, |p| p.top_up(ledger, U256::from(5)));
    w.run();
    assert!(w.parties[alice].is_complete(&again));
    assert_eq!(outcome_of(&w.parties[hub], &ledger).follower().amount, U256::from(130));
    // Close: each party is paid its balance, the ledger ends empty.
    let close = w.call(hub, |p| p.direct_defund(ledger));
    w.run_until(1, 50, |w| w.parties[0].is_complete(&close) && w.parties[1].is_complete(&close));
    assert_eq!(w.chain.holdings(&ledger), U256::ZERO);
    assert_eq!(w.chain.paid_out.get(&w.addr(alice)).copied(), Some(U256::from(130)));
    assert_eq!(w.chain.paid_out.get(&w.addr(hub)).copied(), Some(U256::from(100)));
}

#[test]
fn a_deposit_refused_for_good_cancels_the_slot_and_frees_the_ledger() {
    let mut w = World::new();
    let (ledger, _) = w.open_ledgers(100);
    let (alice, hub) = (0, 1);
    w.lose_transactions = 1; // alice's deposit never reaches the chain
    let id = w.call(alice, |p| p.top_up(ledger, U256::from(25)));
    w.run();
    let slot = Slot { side: Side::Follower, amount: U256::from(25) };
    assert_eq!(outcome_of(&w.parties[hub], &ledger).slot(), Some(slot));
    assert_eq!(w.chain.holdings(&ledger), U256::from(200));
    // While her deposit may still land, the slot stays and the ledger cannot close.
    assert!(w.parties[hub].direct_defund(ledger).is_err());
    // Her deposit is refused for good (say, a token that charges a fee): she declines, the
    // hub cancels the slot, and she agrees since nothing of hers is on its way.
    let fx = w.parties[alice].transaction_refused(id, "refused for good");
    w.absorb(alice, fx);
    w.run();
    for p in [alice, hub] {
        let o = outcome_of(&w.parties[p], &ledger);
        assert_eq!((o.slot(), o.total()), (None, Some(U256::from(200))));
        assert!(matches!(w.parties[p].waiting_for(&id), Some(WaitingFor::Failed(_))));
    }
    // The ledger is free again: another top-up goes through, then it closes.
    let again = w.call(alice, |p| p.top_up(ledger, U256::from(10)));
    w.run();
    assert!(w.parties[alice].is_complete(&again) && w.parties[hub].is_complete(&again));
    assert_eq!(outcome_of(&w.parties[hub], &ledger).follower().amount, U256::from(110));
    let close = w.call(hub, |p| p.direct_defund(ledger));
    w.run_until(1, 50, |w| w.parties[0].is_complete(&close) && w.parties[1].is_complete(&close));
    assert_eq!(w.chain.paid_out.get(&w.addr(alice)).copied(), Some(U256::from(110)));
}

#[test]
fn a_credit_the_follower_cannot_see_covered_is_refused_in_time_and_asked_again() {
    let mut w = World::new();
    let (ledger, _) = w.open_ledgers(100);
    let (alice, hub) = (0, 1);
    let id = w.call(hub, |p| p.top_up(ledger, U256::from(40)));
    deliver_messages(&mut w);
    deliver_messages(&mut w);
    // Only the hub ever sees the deposit (alice's chain view is stuck).
    let events: Vec<_> = w.chain_events.drain(..).collect();
    for ev in &events {
        let fx = w.parties[hub].handle_chain_event(ev);
        w.absorb(hub, fx);
    }
    deliver_messages(&mut w);
    let pending = |w: &World| usize::from(w.parties[alice].ledger(&ledger).is_some_and(|l| l.has_pending()));
    assert_eq!(pending(&w), 1, "alice holds the credit, deferred");
    // The deferred credit does not block the ledger forever: alice refuses it after her
    // patience, and the hub asks again after a tick.
    let mut refused = false;
    for _ in 0..400 {
        w.tick(1);
        deliver_messages(&mut w);
        w.chain_events.clear();
        if pending(&w) == 0 {
            refused = true;
        }
        if refused && pending(&w) == 1 {
            break;
        }
    }
    assert!(refused, "the credit was never refused");
    assert_eq!(pending(&w), 1, "the hub asked for the credit again");
    assert_eq!(
        outcome_of(&w.parties[alice], &ledger).slot(),
        Some(Slot { side: Side::Leader, amount: U256::from(40) })
    );
    // Once alice sees the deposit she countersigns.
    for ev in &events {
        let fx = w.parties[alice].handle_chain_event(ev);
        w.absorb(alice, fx);
    }
    w.run();
    assert_eq!(outcome_of(&w.parties[alice], &ledger).leader().amount, U256::from(140));
    assert!(w.parties[hub].is_complete(&id));
}

#[test]
fn a_top_up_and_a_withdrawal_of_one_ledger_exclude_each_other() {
    let mut w = World::new();
    let (ledger, _) = w.open_ledgers(100);
    let (alice, hub) = (0, 1);
    // A slot pending (alice's deposit lost): no withdrawal, by either party.
    w.lose_transactions = 1;
    let id = w.call(alice, |p| p.top_up(ledger, U256::from(25)));
    w.run();
    assert!(outcome_of(&w.parties[hub], &ledger).slot().is_some());
    for p in [alice, hub] {
        assert_eq!(w.parties[p].withdraw(ledger, U256::from(1)).map(|(id, _)| id), Err(PartyError::TopUpPending));
    }
    // Once it is settled (here: the deposit refused for good, the slot cancelled), a
    // withdrawal may start; while it runs, no top-up.
    let fx = w.parties[alice].transaction_refused(id, "refused for good");
    w.absorb(alice, fx);
    w.run();
    assert!(outcome_of(&w.parties[hub], &ledger).slot().is_none());
    let withdraw = w.call(hub, |p| p.withdraw(ledger, U256::from(10)));
    assert!(matches!(w.parties[hub].top_up(ledger, U256::from(1)), Err(PartyError::ObjectiveExists(_))));
    w.run_until(1, 50, |w| w.parties[hub].is_complete(&withdraw) && w.parties[alice].is_complete(&withdraw));
    // The successor takes top-ups, also named by the old ledger's id.
    let again = w.call(alice, |p| p.top_up(ledger, U256::from(5)));
    w.run();
    assert!(w.parties[alice].is_complete(&again) && w.parties[hub].is_complete(&again), "{again}");
    assert_ne!(again.channel_id(), ledger, "the top-up ran in the successor");
    assert_eq!(outcome_of(&w.parties[hub], &again.channel_id()).follower().amount, U256::from(105));
}
