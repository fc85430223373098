//! Unilateral exit on the in-memory adjudicator: a party whose counterparty is gone takes the
//! channel to chain alone and every honest party ends with exactly what the latest supported
//! states give it; stale challenges are answered, again until the answer lands.

mod common;

use common::{config, key, World};
use nitro_core::{
    chain::ChainTransaction,
    party::{ObjectiveId, Party, PartyError, PartyPolicy, Payload, WaitingFor},
    Address, LedgerMessage, U256,
};

const DURATION: u64 = 60; // the harness's challenge duration

fn amount(n: u64) -> U256 {
    U256::from(n)
}

/// Runs until `done`, ticking chain time 20 s at a time.
fn settle(w: &mut World, done: impl Fn(&World) -> bool) {
    w.run_until(20, 200, done);
}

fn paid(w: &World, who: usize) -> U256 {
    w.chain.paid_out.get(&w.addr(who)).copied().unwrap_or_default()
}

fn no_holdings(w: &World) -> bool {
    w.chain.all_holdings().all(|(_, h)| h.is_zero())
}

#[test]
fn a_funded_ledger_whose_counterparty_is_gone_pays_both_out() {
    let mut w = World::new();
    let (la, _) = w.open_ledgers(1000);
    w.gone[0] = true; // alice
    let id = w.call(1, |p| p.force_close(la));
    settle(&mut w, |w| w.parties[1].is_complete(&id));
    assert_eq!(paid(&w, 1), amount(1000));
    assert_eq!(paid(&w, 0), amount(1000), "the transfer pays the absent party too");
    assert!(w.chain.holdings(&la).is_zero());
    assert!(w.parties[1].ledger(&la).is_none(), "the ledger is gone from the party");
    // Nothing more can be opened through it, and a second exit is refused.
    assert!(matches!(w.parties[1].force_close(la), Err(PartyError::ObjectiveExists(_))));
}

#[test]
fn a_funding_with_one_deposit_made_returns_it() {
    let mut w = World::with_parties(2);
    let (alice, hub) = (w.addr(0), w.addr(1));
    let id = w.call(1, |p| p.direct_fund([hub, alice], Address::ZERO, [amount(700), amount(300)], 1));
    // Deliver the prefund round and the hub's deposit, then alice vanishes before hers.
    while let Some((from, e)) = w.network.pop_front() {
        let to = w.index_of(e.to);
        let fx = w.parties[to].handle_message(from, e.payload).unwrap();
        w.absorb(to, fx);
    }
    w.gone[0] = true;
    w.deliver_chain_events();
    let ledger = id.channel_id();
    assert_eq!(w.chain.holdings(&ledger), amount(700));
    let exit = w.call(1, |p| p.force_close(ledger));
    assert!(matches!(w.parties[1].waiting_for(&id), Some(WaitingFor::Failed(_))), "the funding stops");
    settle(&mut w, |w| w.parties[1].is_complete(&exit));
    assert_eq!(paid(&w, 1), amount(700));
    assert_eq!(paid(&w, 0), U256::ZERO);
    assert!(no_holdings(&w));
}

#[test]
fn when_the_hub_is_gone_the_payee_redeems_its_vouchers_and_everyone_gets_its_share() {
    let mut w = World::new();
    let (la, lb) = w.open_ledgers(1000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [amount(100), U256::ZERO], 7));
    w.run();
    assert!(w.parties[2].is_complete(&v));
    for _ in 0..3 {
        let fx = w.parties[0].pay(v.channel_id(), amount(10)).unwrap();
        w.absorb(0, fx);
    }
    w.run();
    assert_eq!(w.parties[2].paid(&v.channel_id()), amount(30));
    w.gone[1] = true; // the hub
    let bob_exit = w.call(2, |p| p.force_close(lb));
    let alice_exit = w.call(0, |p| p.force_close(la));
    settle(&mut w, |w| w.parties[2].is_complete(&bob_exit) && w.parties[0].is_complete(&alice_exit));
    // V finalized with the payee's redemption: alice 70, bob 30; the hub's shares mirror them.
    assert_eq!(paid(&w, 0), amount(1000 - 100 + 70));
    assert_eq!(paid(&w, 2), amount(1000 + 30));
    assert_eq!(paid(&w, 1), amount(1000 + 30 + 1000 - 30), "the absent hub is paid what the states give it");
    assert!(no_holdings(&w));
    assert!(w.parties[2].is_complete(&ObjectiveId::ForceClose(v.channel_id())));
}

#[test]
fn a_payer_challenging_with_the_postfund_meets_the_payees_redemption() {
    let mut w = World::new();
    let (la, lb) = w.open_ledgers(1000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [amount(50), U256::ZERO], 9));
    w.run();
    let fx = w.parties[0].pay(v.channel_id(), amount(20)).unwrap();
    w.absorb(0, fx);
    w.run();
    // Alice takes V to chain with the postfund (paying nothing); bob answers with his voucher.
    let exit = w.call(0, |p| p.force_close(v.channel_id()));
    settle(&mut w, |w| w.parties[0].is_complete(&exit));
    let c = w.parties[2].registered_challenge(&v.channel_id()).expect("bob's challenge");
    assert_eq!(c.turn, nitro_core::U48::from(nitro_core::party::REDEMPTION_TURN));
    assert_eq!(c.outcome.0[0].allocations[1].amount, amount(20), "V pays bob his voucher");
    let _ = (la, lb);
}

#[test]
fn a_stale_challenge_is_answered_even_when_the_first_answer_is_lost() {
    let mut w = World::new();
    let (la, _) = w.open_ledgers(1000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let postfund = w.parties[1].ledger(&la).unwrap().consensus_state();
    // A newer consensus state: a guarantee locks.
    w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [amount(5), U256::ZERO], 3));
    w.run();
    assert!(w.parties[1].ledger(&la).unwrap().consensus_turn() > postfund.state().turn_num);
    // Alice (malicious from now on) challenges with the old postfund; the hub's first
    // checkpoint is lost.
    w.gone[0] = true;
    let stale = ChainTransaction::challenge(postfund, &key(1)).unwrap();
    let events = w.chain.execute(alice, &stale).unwrap();
    w.chain_events.extend(events);
    w.lose_transactions = 1;
    w.deliver_chain_events();
    assert_eq!(w.parties[1].registered_challenge(&la).map(|c| c.turn), Some(nitro_core::U48::from(1)));
    // The hub answers again on its timer, before the challenge expires.
    w.run_until(5, 10, |w| w.chain.mode(&la) == nitro_testkit::Mode::Open);
    assert!(w.chain.now < 1_000_000 + DURATION);
    assert!(w.parties[1].registered_challenge(&la).is_none(), "cleared");
}

#[test]
fn a_strangers_ledger_is_declined_and_its_opener_fails_at_once() {
    let mut w = World::with_parties(2);
    let strict = PartyPolicy { ledger_peers: Some(Default::default()), ..PartyPolicy::default() };
    w.parties[0] = Party::new(key(1), config()).with_policy(strict);
    let (alice, stranger) = (w.addr(0), w.addr(1));
    let id = w.call(1, |p| p.direct_fund([stranger, alice], Address::ZERO, [U256::ZERO, amount(1000)], 1));
    let (from, e) = w.network.pop_front().unwrap();
    let refused = w.parties[0].handle_message(from, e.payload).unwrap_err();
    let PartyError::Refused { error, answer } = refused else { panic!("{refused:?}") };
    assert!(matches!(*error, PartyError::Policy(_)), "{error}");
    assert!(matches!(&answer.messages[0].payload, Payload::Decline { objective, .. } if *objective == id));
    assert!(w.parties[0].objective(&id).is_none(), "nothing kept, nothing signed");
    w.absorb(0, *answer);
    w.run();
    match w.parties[1].waiting_for(&id) {
        Some(WaitingFor::Failed(why)) => assert!(why.contains("declined"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(w.chain.deposited.get(&alice), None, "alice deposited nothing");
}

#[test]
fn a_hub_deposits_only_after_a_strangers_deposit_and_within_its_limits() {
    let hub_policy = PartyPolicy {
        max_deposit_per_ledger: Some(amount(500)),
        challenge_duration: Some((30, 3600)),
        ..PartyPolicy::default()
    };
    let mut w = World::with_parties(2);
    w.parties[1] = Party::new(key(2), config()).with_policy(hub_policy);
    let (stranger, hub) = (w.addr(0), w.addr(1));
    // The stranger asks the hub to deposit first: refused.
    let first = w.call(0, |p| p.direct_fund([hub, stranger], Address::ZERO, [amount(100), amount(100)], 1));
    w.run_until(1, 5, |w| matches!(w.parties[0].waiting_for(&first), Some(WaitingFor::Failed(_))));
    // Too much for the hub: refused.
    let big = w.call(0, |p| p.direct_fund([stranger, hub], Address::ZERO, [amount(100), amount(600)], 2));
    w.run_until(1, 5, |w| matches!(w.parties[0].waiting_for(&big), Some(WaitingFor::Failed(_))));
    assert_eq!(w.chain.deposited.get(&hub), None);
    // Within limits, the stranger first: accepted, and the hub's deposit follows the stranger's.
    let ok = w.call(0, |p| p.direct_fund([stranger, hub], Address::ZERO, [amount(100), amount(400)], 3));
    w.run();
    assert!(w.parties[1].is_complete(&ok));
    assert_eq!(w.chain.deposited[&hub], amount(400));
}

#[test]
fn an_objective_that_committed_nothing_can_be_cancelled_and_the_peer_is_told() {
    let mut w = World::with_parties(2);
    w.gone[1] = true; // the counterparty never answers
    let (alice, hub) = (w.addr(0), w.addr(1));
    let id = w.call(0, |p| p.direct_fund([alice, hub], Address::ZERO, [amount(10), amount(10)], 1));
    let fx = w.parties[0].cancel(id).unwrap();
    assert!(fx.messages.iter().any(|m| matches!(m.payload, Payload::Decline { .. })));
    assert!(matches!(w.parties[0].waiting_for(&id), Some(WaitingFor::Failed(_))));
    // A funded ledger cannot be cancelled: its exit is a force close.
    let mut w = World::new();
    let (la, _) = w.open_ledgers(10);
    let funded = ObjectiveId::DirectFund(la);
    assert!(matches!(w.parties[1].cancel(funded), Err(PartyError::NotCancellable(_))));
}

#[test]
fn a_silent_counterparty_is_reported_for_a_force_close_after_the_patience() {
    let mut w = World::new();
    let patient = PartyPolicy { auto_force_close_after: Some(100), ..PartyPolicy::default() };
    let (la, _) = w.open_ledgers(1000);
    w.parties[1] = w.parties[1].clone().with_policy(patient);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    // The hub proposes a guarantee alice never countersigns: she vanishes on receiving it.
    w.call(2, |p| p.virtual_fund(vec![bob, hub, alice], Address::ZERO, [amount(1), U256::ZERO], 5));
    while let Some((from, e)) = w.network.pop_front() {
        let to = w.index_of(e.to);
        if to == 0 && matches!(e.payload, Payload::Ledger(LedgerMessage::Proposal(_))) {
            w.gone[0] = true;
        }
        if w.gone[to] {
            continue;
        }
        if let Ok(fx) = w.parties[to].handle_message(from, e.payload) {
            w.absorb(to, fx);
        }
    }
    assert!(w.gone[0], "the hub proposed in L(hub, alice)");
    let clock = |t| nitro_core::party::Clock { unix_secs: t, chain_time: Some(t) };
    assert!(w.parties[1].tick(clock(1_000)).force_close_due.is_empty());
    assert!(w.parties[1].tick(clock(1_050)).force_close_due.is_empty());
    // Bob answered everything: only alice's ledger is due.
    assert_eq!(w.parties[1].tick(clock(1_200)).force_close_due, vec![la], "silent past the patience");
}

/// Runs until objective `id` of party `i` fails; the reason.
fn failure(w: &mut World, i: usize, id: ObjectiveId) -> String {
    w.run_until(1, 10, |w| matches!(w.parties[i].waiting_for(&id), Some(WaitingFor::Failed(_))));
    match w.parties[i].waiting_for(&id) {
        Some(WaitingFor::Failed(why)) => why,
        other => panic!("{id} did not fail: {other:?}"),
    }
}

#[test]
fn a_ledger_outside_the_peers_policy_is_declined_with_the_reason() {
    let token = Address::repeat_byte(9);
    let cases = [
        (
            PartyPolicy { assets: Some([Address::ZERO].into()), ..PartyPolicy::default() },
            token,
            [100, 100],
            format!("asset {token} is not accepted"),
        ),
        (
            PartyPolicy { challenge_duration: Some((3600, 7200)), ..PartyPolicy::default() },
            Address::ZERO,
            [100, 100],
            format!("challenge duration {DURATION} s is outside [3600, 7200] s"),
        ),
        (
            PartyPolicy { max_total_deposit: Some(amount(50)), ..PartyPolicy::default() },
            Address::ZERO,
            [100, 60],
            "our deposits would pass the total limit 50".to_owned(),
        ),
    ];
    for (policy, asset, [theirs, ours], reason) in cases {
        let mut w = World::with_parties(2);
        w.parties[1] = Party::new(key(2), config()).with_policy(policy);
        let (opener, hub) = (w.addr(0), w.addr(1));
        let id = w.call(0, |p| p.direct_fund([opener, hub], asset, [amount(theirs), amount(ours)], 1));
        let why = failure(&mut w, 0, id);
        assert!(why.contains(&format!("{hub} declined")) && why.contains(&reason), "{reason}: {why}");
        assert_eq!(w.chain.deposited.get(&hub), None, "{reason}: the hub deposited nothing");
        assert!(w.parties[1].objective(&id).is_none(), "{reason}: the hub kept nothing");
    }
}

#[test]
fn a_virtual_channel_outside_the_hubs_policy_is_declined_with_the_reason() {
    let cases = [
        (
            PartyPolicy { max_virtual_amount: Some(amount(10)), ..PartyPolicy::default() },
            "virtual channel of 50 is above the limit",
        ),
        (
            PartyPolicy { max_locked_per_counterparty: Some(amount(40)), ..PartyPolicy::default() },
            "locked funds would pass the per-counterparty limit",
        ),
    ];
    for (policy, reason) in cases {
        let mut w = World::new();
        w.open_ledgers(1000);
        let hub = std::mem::replace(&mut w.parties[1], Party::new(key(2), config()));
        w.parties[1] = hub.with_policy(policy);
        let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
        let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [amount(50), U256::ZERO], 1));
        let why = failure(&mut w, 0, v);
        assert!(why.contains(&format!("{hub} declined")) && why.contains(reason), "{reason}: {why}");
    }
}
