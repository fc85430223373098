//! Partial withdrawal (ADR-0022 §5) on the in-memory adjudicator: a ledger migrates to a
//! successor that carries its guarantees, the conclusion pays the withdrawal and funds the
//! successor, and a party vanishing at any step leaves the other with what the latest states
//! give it.

mod common;

use common::{outcome_of, World};
use nitro_core::{
    chain::ChainEvent,
    party::{ObjectiveId, PartyError, WaitingFor},
    Address, ChannelId, ConsensusChannel, U256,
};

fn amount(n: u64) -> U256 {
    U256::from(n)
}

fn paid(w: &World, who: usize) -> U256 {
    w.chain.paid_out.get(&w.addr(who)).copied().unwrap_or_default()
}

fn no_holdings(w: &World) -> bool {
    w.chain.all_holdings().all(|(_, h)| h.is_zero())
}

/// Nothing left in the old ledger between the hub and bob, nor in its successor (if any).
fn bobs_ledgers_empty(w: &World, old: ChannelId) -> bool {
    let successor = w.parties.iter().find_map(|p| p.successor(&old));
    w.chain.holdings(&old).is_zero() && successor.is_none_or(|s| w.chain.holdings(&s).is_zero())
}

/// Runs until `done`, ticking chain time 20 s at a time.
fn settle(w: &mut World, done: impl Fn(&World) -> bool) {
    w.run_until(20, 300, done);
}

/// Delivers the messages queued now that are addressed to party `to` (others stay queued).
fn deliver_to(w: &mut World, to: usize) {
    let queued: Vec<_> = std::mem::take(&mut w.network).into_iter().collect();
    for (from, e) in queued {
        if w.index_of(e.to) == to {
            let fx = w.parties[to].handle_message(from, e.payload).unwrap();
            w.absorb(to, fx);
        } else {
            w.network.push_back((from, e));
        }
    }
}

/// Alice funds V = [alice, hub, bob] with 100 and pays 30.
fn fund_and_pay(w: &mut World) -> ChannelId {
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [amount(100), U256::ZERO], 7));
    w.run();
    assert!(w.parties[2].is_complete(&v));
    let fx = w.parties[0].pay(v.channel_id(), amount(30)).unwrap();
    w.absorb(0, fx);
    w.run();
    v.channel_id()
}

#[test]
fn a_withdrawal_migrates_the_ledger_and_keeps_the_virtual_channel_funded() {
    let mut w = World::new();
    let (la, lb) = w.open_ledgers(1000);
    let v = fund_and_pay(&mut w);
    let before = outcome_of(&w.parties[2], &lb);

    let id = w.call(2, |p| p.withdraw(lb, amount(300)));
    assert_eq!(id, ObjectiveId::Withdraw(lb));
    w.run();
    for i in [1, 2] {
        assert!(w.parties[i].is_complete(&id), "{i}: {:?}", w.parties[i].waiting_for(&id));
    }
    let successor = w.parties[2].successor(&lb).expect("bob follows the successor");
    assert_eq!(w.parties[1].successor(&lb), Some(successor));
    assert_eq!(paid(&w, 2), amount(300), "the conclusion paid bob's withdrawal");
    assert!(w.chain.holdings(&lb).is_zero());
    assert_eq!(w.chain.holdings(&successor), amount(2000 - 300), "the rest credited to the successor");
    assert!(w.parties[2].ledger(&lb).is_none() && w.parties[1].ledger(&lb).is_none());
    assert_eq!(w.parties[2].ledger_with(&w.addr(1)).map(ConsensusChannel::channel_id), Some(successor));
    assert_eq!(w.parties[1].ledger_with(&w.addr(2)).map(ConsensusChannel::channel_id), Some(successor));
    let after = outcome_of(&w.parties[2], &successor);
    assert_eq!(after.follower().amount, before.follower().amount - amount(300));
    assert_eq!(after.leader().amount, before.leader().amount);
    assert_eq!(after.guarantee(&v), before.guarantee(&v), "the guarantee carried over");
    assert!(w.parties[1].ledger(&successor).unwrap().is_locked(&v));

    // V closes through the successor; then both ledgers close (the old id names the successor).
    let defund = w.call(2, |p| p.virtual_defund(v));
    w.run();
    for p in &w.parties {
        assert!(p.is_complete(&defund), "{:?}", p.waiting_for(&defund));
    }
    assert_eq!(outcome_of(&w.parties[2], &successor).guarantees().len(), 0);
    let d1 = w.call(1, |p| p.direct_defund(la));
    let d2 = w.call(1, |p| p.direct_defund(lb));
    assert_eq!(d2, ObjectiveId::DirectDefund(successor));
    w.run();
    assert!(w.parties[1].is_complete(&d1) && w.parties[1].is_complete(&d2));
    assert_eq!(paid(&w, 0), amount(1000 - 30));
    assert_eq!(paid(&w, 2), amount(1000 + 30), "withdrawal and close together");
    assert_eq!(paid(&w, 1), amount(2000));
    assert!(no_holdings(&w));
    assert!(w.parties.iter().all(|p| p.ledgers().count() == 0));
}

#[test]
fn the_leader_withdraws_over_a_lossy_network() {
    let mut w = World::new();
    let (la, _) = w.open_ledgers(1000);
    w.drop_every = 3;
    let id = w.call(1, |p| p.withdraw(la, amount(400)));
    w.run_lossy(|w| w.parties[0].is_complete(&id) && w.parties[1].is_complete(&id));
    w.drop_every = 0;
    let successor = w.parties[0].successor(&la).unwrap();
    assert_eq!(paid(&w, 1), amount(400));
    assert_eq!(w.chain.holdings(&successor), amount(1600));
    // The successor works like any ledger: a second withdrawal from it.
    let again = w.call(0, |p| p.withdraw(la, amount(100)));
    assert_eq!(again, ObjectiveId::Withdraw(successor));
    w.run();
    assert!(w.parties[1].is_complete(&again));
    assert_eq!(paid(&w, 0), amount(100));
}

#[test]
fn bad_withdrawals_are_refused_and_change_nothing() {
    let mut w = World::new();
    let (la, lb) = w.open_ledgers(1000);
    let stranger = ChannelId::repeat_byte(7);
    let before = w.parties[2].clone();
    let p = &mut w.parties[2];
    assert!(matches!(p.withdraw(stranger, amount(1)), Err(PartyError::UnknownLedger(_))));
    assert!(matches!(p.withdraw(la, amount(1)), Err(PartyError::UnknownLedger(_))), "not bob's ledger");
    assert!(matches!(p.withdraw(lb, U256::ZERO), Err(PartyError::BadRequest(_))));
    assert!(matches!(p.withdraw(lb, amount(1001)), Err(PartyError::InsufficientFunds { .. })));
    assert_eq!(p.objectives().count(), before.objectives().count());
    assert_eq!(p.ledger_record(&lb), before.ledger_record(&lb));
    // While a guarantee is being added, the hub refuses to withdraw from that ledger.
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [amount(10), U256::ZERO], 9));
    deliver_to(&mut w, 1);
    deliver_to(&mut w, 2);
    deliver_to(&mut w, 1);
    assert!(w.parties[1].ledger(&lb).is_some_and(ConsensusChannel::has_pending), "the hub's Add waits for bob");
    let hub_before = w.parties[1].ledger_record(&lb);
    assert!(matches!(w.parties[1].withdraw(lb, amount(1)), Err(PartyError::ProposalsPending)));
    assert_eq!(w.parties[1].ledger_record(&lb), hub_before);
    w.run();
}

#[test]
fn the_asker_vanishing_after_m1_leaves_the_other_its_share_of_the_old_ledger() {
    let mut w = World::new();
    let (_, lb) = w.open_ledgers(1000);
    let id = w.call(2, |p| p.withdraw(lb, amount(300)));
    deliver_to(&mut w, 1); // M1 reaches the hub, which answers with M2 (F signed)
    w.gone[2] = true; // bob never reads M2
    let exit = w.call(1, |p| p.force_close(lb));
    settle(&mut w, |w| w.parties[1].is_complete(&exit));
    assert_eq!(paid(&w, 1), amount(1000));
    assert_eq!(paid(&w, 2), amount(1000), "the old ledger's consensus state pays bob in full");
    assert!(bobs_ledgers_empty(&w, lb));
    assert!(matches!(w.parties[1].waiting_for(&id), Some(WaitingFor::Failed(_))));
}

#[test]
fn the_responder_vanishing_before_m2_leaves_the_asker_its_share_of_the_old_ledger() {
    let mut w = World::new();
    let (_, lb) = w.open_ledgers(1000);
    let id = w.call(2, |p| p.withdraw(lb, amount(300)));
    w.gone[1] = true; // M1 is never read
                      // The hub may have signed F on bob's successor signatures: no cancel, only a force close.
    assert!(matches!(w.parties[2].cancel(id), Err(PartyError::NotCancellable(_))));
    let exit = w.call(2, |p| p.force_close(lb));
    assert!(matches!(w.parties[2].waiting_for(&id), Some(WaitingFor::Failed(_))), "nothing committed: it stops");
    settle(&mut w, |w| w.parties[2].is_complete(&exit));
    assert_eq!(paid(&w, 2), amount(1000));
    assert_eq!(paid(&w, 1), amount(1000));
    assert!(bobs_ledgers_empty(&w, lb));
}

#[test]
fn the_responder_vanishing_after_m2_leaves_the_asker_its_withdrawal_and_the_successor() {
    let mut w = World::new();
    let (_, lb) = w.open_ledgers(1000);
    let id = w.call(2, |p| p.withdraw(lb, amount(300)));
    deliver_to(&mut w, 1); // M1 → hub; M2 queued for bob
    w.gone[1] = true; // the hub is gone after sending M2
    settle(&mut w, |w| w.parties[2].is_complete(&id));
    assert_eq!(paid(&w, 2), amount(300));
    let successor = w.parties[2].successor(&lb).unwrap();
    assert_eq!(w.chain.holdings(&successor), amount(1700));
    let exit = w.call(2, |p| p.force_close(lb));
    assert_eq!(exit, ObjectiveId::ForceClose(successor), "the old ledger's id follows the successor");
    settle(&mut w, |w| w.parties[2].is_complete(&exit));
    assert_eq!(paid(&w, 2), amount(1000));
    assert_eq!(paid(&w, 1), amount(1000));
    assert!(bobs_ledgers_empty(&w, lb));
}

#[test]
fn the_asker_vanishing_after_concluding_without_m3_still_moves_the_other_into_the_successor() {
    let mut w = World::new();
    let (_, lb) = w.open_ledgers(1000);
    let id = w.call(2, |p| p.withdraw(lb, amount(300)));
    deliver_to(&mut w, 1); // M1 → hub, M2 → bob
                           // Bob reads M2, signs F and concludes, but M3 is lost and bob vanishes.
    let queued: Vec<_> = std::mem::take(&mut w.network).into_iter().collect();
    for (from, e) in queued {
        let mut fx = w.parties[2].handle_message(from, e.payload).unwrap();
        fx.messages.clear();
        w.absorb(2, fx);
    }
    w.gone[2] = true;
    settle(&mut w, |w| w.parties[1].is_complete(&id));
    let successor = w.parties[1].successor(&lb).unwrap();
    assert_eq!(w.chain.holdings(&successor), amount(1700));
    let exit = w.call(1, |p| p.force_close(successor));
    settle(&mut w, |w| w.parties[1].is_complete(&exit));
    assert_eq!(paid(&w, 1), amount(1000));
    assert_eq!(paid(&w, 2), amount(1000));
    assert!(bobs_ledgers_empty(&w, lb));
}

#[test]
fn after_a_withdrawal_the_payee_redeems_from_the_successor_when_the_hub_is_gone() {
    let mut w = World::new();
    let (la, lb) = w.open_ledgers(1000);
    let v = fund_and_pay(&mut w);
    let id = w.call(2, |p| p.withdraw(lb, amount(500)));
    w.run();
    assert!(w.parties[2].is_complete(&id));
    let successor = w.parties[2].successor(&lb).unwrap();
    w.gone[1] = true;
    let bob_exit = w.call(2, |p| p.force_close(lb));
    let alice_exit = w.call(0, |p| p.force_close(la));
    settle(&mut w, |w| w.parties[2].is_complete(&bob_exit) && w.parties[0].is_complete(&alice_exit));
    assert!(w.parties[2].is_complete(&ObjectiveId::ForceClose(v)));
    assert_eq!(paid(&w, 2), amount(1000 + 30), "withdrawal, balance and the redeemed payment");
    assert_eq!(paid(&w, 0), amount(1000 - 30));
    assert!(w.chain.holdings(&successor).is_zero());
    assert!(no_holdings(&w));
}

#[test]
fn withdrawals_asked_by_both_at_once_both_fail_and_the_ledger_stays_usable() {
    let mut w = World::new();
    let (_, lb) = w.open_ledgers(1000);
    let id = w.call(1, |p| p.withdraw(lb, amount(100)));
    w.call(2, |p| p.withdraw(lb, amount(200)));
    settle(&mut w, |w| [1, 2].iter().all(|i| matches!(w.parties[*i].waiting_for(&id), Some(WaitingFor::Failed(_)))));
    assert!(w.chain.paid_out.is_empty(), "nothing concluded");
    // Asked again, one at a time, it goes through.
    let again = w.call(2, |p| p.withdraw(lb, amount(200)));
    w.run();
    assert!(w.parties[1].is_complete(&again) && w.parties[2].is_complete(&again));
    assert_eq!(paid(&w, 2), amount(200));
}

#[test]
fn a_challenge_of_the_old_ledger_meeting_the_conclusion_of_f_ends_in_the_successor() {
    let mut w = World::new();
    let (_, lb) = w.open_ledgers(1000);
    let id = w.call(2, |p| p.withdraw(lb, amount(300)));
    deliver_to(&mut w, 1); // M1 → hub, M2 queued for bob
                           // The hub, tired of waiting, challenges L with its consensus state...
    let hub_exit = w.call(1, |p| p.force_close(lb));
    assert!(w.chain_events.iter().any(|e| matches!(e, ChainEvent::ChallengeRegistered { .. })));
    // ...and bob, reading M2 before he hears of the challenge, completes F and concludes L
    // during it (M3 is lost), then vanishes.
    let queued: Vec<_> = std::mem::take(&mut w.network).into_iter().collect();
    for (from, e) in queued {
        if w.index_of(e.to) == 2 {
            let mut fx = w.parties[2].handle_message(from, e.payload).unwrap();
            fx.messages.clear();
            w.absorb(2, fx);
        }
    }
    w.gone[2] = true;
    assert!(w.chain.holdings(&lb).is_zero(), "F concluded during the challenge");
    settle(&mut w, |w| w.parties[1].is_complete(&id));
    let successor = w.parties[1].successor(&lb).unwrap();
    assert_eq!(paid(&w, 2), amount(300));
    // The hub's exit continues into the successor by itself.
    let exit = ObjectiveId::ForceClose(successor);
    settle(&mut w, |w| w.parties[1].is_complete(&exit));
    assert!(w.parties[1].objective(&hub_exit).is_some());
    assert_eq!(paid(&w, 1), amount(1000));
    assert_eq!(paid(&w, 2), amount(1000));
    assert!(bobs_ledgers_empty(&w, lb));
}

#[test]
fn a_virtual_channel_funded_during_a_withdrawal_gets_its_guarantee_in_the_successor() {
    let mut w = World::new();
    let (_, lb) = w.open_ledgers(1000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let id = w.call(2, |p| p.withdraw(lb, amount(300)));
    // Alice funds V while bob's withdrawal is in flight: its guarantee waits for L′.
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [amount(50), U256::ZERO], 11));
    w.run();
    for i in [1, 2] {
        assert!(w.parties[i].is_complete(&id), "{:?}", w.parties[i].waiting_for(&id));
    }
    for p in &w.parties {
        assert!(p.is_complete(&v), "{:?}", p.waiting_for(&v));
    }
    let successor = w.parties[1].successor(&lb).unwrap();
    assert!(w.parties[1].ledger(&successor).unwrap().is_locked(&v.channel_id()));
    assert!(w.parties[2].ledger(&successor).unwrap().is_locked(&v.channel_id()));
    let after = outcome_of(&w.parties[2], &successor);
    assert_eq!(after.follower().amount, amount(700));
    assert_eq!(after.leader().amount, amount(1000 - 50), "the hub's side of V");
    assert_eq!(w.chain.holdings(&successor), amount(1700));
}
