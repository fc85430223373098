//! Ledgers holding ETH and a token (ADR-0022 §1–2) on the in-memory adjudicator: funded per
//! asset in order, a virtual channel in ETH funded, paid and defunded through them, then closed
//! cooperatively or left alone by force — every party paid exactly, per asset.

mod common;

use common::{outcome_of, World};
use nitro_core::{
    chain::{ChainEvent, ChainTransaction},
    party::{Objective, ObjectiveId, PartyError, Payload},
    Address, ChannelId, SignedState, U256,
};

const TOKEN: Address = Address::repeat_byte(0x70);
const ETH: Address = Address::ZERO;

fn n(x: u64) -> U256 {
    U256::from(x)
}

fn paid(w: &World, asset: Address, who: usize) -> U256 {
    w.chain.paid_out_of.get(&(asset, w.addr(who))).copied().unwrap_or_default()
}

fn deposited(w: &World, asset: Address, who: usize) -> U256 {
    w.chain.deposited_of.get(&(asset, w.addr(who))).copied().unwrap_or_default()
}

fn no_holdings(w: &World) -> bool {
    w.chain.all_holdings().all(|(_, h)| h.is_zero())
}

/// L(hub, alice) and L(hub, bob), each ETH 1000/1000 and TOKEN 500/200 (hub's first), the
/// token given first to show the order is the ledger's, not the caller's.
fn open_two_asset_ledgers(w: &mut World) -> (ChannelId, ChannelId) {
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let assets = [(TOKEN, [n(500), n(200)]), (ETH, [n(1000), n(1000)])];
    let a = w.call(1, |p| p.direct_fund_assets([hub, alice], &assets, 1));
    let b = w.call(1, |p| p.direct_fund_assets([hub, bob], &assets, 2));
    w.run();
    for (id, other) in [(a, 0), (b, 2)] {
        assert!(w.parties[1].is_complete(&id), "{id}: {:?}", w.parties[1].waiting_for(&id));
        assert!(w.parties[other].is_complete(&id), "{id}: {:?}", w.parties[other].waiting_for(&id));
    }
    (a.channel_id(), b.channel_id())
}

#[test]
fn a_ledger_of_eth_and_a_token_is_funded_per_asset() {
    let mut w = World::new();
    let (la, lb) = open_two_asset_ledgers(&mut w);
    for l in [la, lb] {
        assert_eq!(w.chain.holdings_of(&l, ETH), n(2000));
        assert_eq!(w.chain.holdings_of(&l, TOKEN), n(700));
        let o = outcome_of(&w.parties[1], &l);
        let assets: Vec<Address> = o.assets().iter().map(|a| a.asset()).collect();
        assert_eq!(assets, vec![ETH, TOKEN], "ETH first, ascending");
        let token = o.exit(TOKEN).unwrap();
        assert_eq!((token.leader().amount, token.follower().amount), (n(500), n(200)));
    }
    assert_eq!(deposited(&w, ETH, 1), n(2000));
    assert_eq!(deposited(&w, TOKEN, 1), n(1000));
    assert_eq!((deposited(&w, ETH, 0), deposited(&w, TOKEN, 0)), (n(1000), n(200)));
    assert_eq!(w.chain.reverts, 0, "every deposit's expectedHeld was right, per asset");
}

#[test]
fn an_opening_naming_an_asset_twice_or_none_is_refused() {
    let mut w = World::new();
    let (alice, hub) = (w.addr(0), w.addr(1));
    let twice = [(ETH, [n(1), n(1)]), (ETH, [n(2), n(2)])];
    assert!(matches!(w.parties[1].direct_fund_assets([hub, alice], &twice, 1), Err(PartyError::BadRequest(_))));
    assert!(matches!(w.parties[1].direct_fund_assets([hub, alice], &[], 1), Err(PartyError::BadRequest(_))));
    assert!(w.parties[1].objectives().next().is_none(), "nothing started");
}

#[test]
fn a_deposit_of_an_asset_the_ledger_does_not_hold_never_counts() {
    let mut w = World::with_parties(2);
    let (alice, hub) = (w.addr(0), w.addr(1));
    let id = w.call(1, |p| p.direct_fund_assets([hub, alice], &[(ETH, [n(10), n(10)]), (TOKEN, [n(5), n(0)])], 1));
    // A stranger deposits a lot of another token into the ledger before anyone else.
    let junk = Address::repeat_byte(0x99);
    let tx = ChainTransaction::Deposit { channel_id: id.channel_id(), asset: junk, expected_held: n(0), amount: n(99) };
    let events = w.execute(Address::repeat_byte(0x55), &tx).unwrap();
    w.chain_events.extend(events);
    w.run();
    assert!(w.parties[1].is_complete(&id));
    assert_eq!(w.chain.holdings_of(&id.channel_id(), ETH), n(20), "funded in full despite the junk");
    assert_eq!(w.chain.holdings_of(&id.channel_id(), TOKEN), n(5));
}

#[test]
fn a_virtual_channel_in_eth_over_two_asset_ledgers_then_cooperative_closes_pay_every_asset() {
    let mut w = World::new();
    let (la, lb) = open_two_asset_ledgers(&mut w);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], ETH, [n(100), n(0)], 7));
    w.run();
    assert!(w.parties[2].is_complete(&v), "{:?}", w.parties[2].waiting_for(&v));
    let o = outcome_of(&w.parties[0], &la);
    assert_eq!(o.asset_of(&v.channel_id()), Some(ETH), "the guarantee lives in the ETH exit");
    assert_eq!(o.exit(TOKEN).unwrap().guarantees().len(), 0);
    for _ in 0..3 {
        let fx = w.parties[0].pay(v.channel_id(), n(10)).unwrap();
        w.absorb(0, fx);
    }
    w.run();
    let d = w.call(2, |p| p.virtual_defund(v.channel_id()));
    w.run();
    assert!(w.parties.iter().all(|p| p.is_complete(&d)));
    let closes = [w.call(1, |p| p.direct_defund(la)), w.call(1, |p| p.direct_defund(lb))];
    w.run();
    for id in closes {
        assert!(w.parties[1].is_complete(&id), "{id}: {:?}", w.parties[1].waiting_for(&id));
    }
    // ETH: alice paid bob 30 through the hub; the token did not move.
    assert_eq!(paid(&w, ETH, 0), n(1000 - 30));
    assert_eq!(paid(&w, ETH, 2), n(1000 + 30));
    assert_eq!(paid(&w, ETH, 1), n(2000));
    assert_eq!((paid(&w, TOKEN, 0), paid(&w, TOKEN, 2), paid(&w, TOKEN, 1)), (n(200), n(200), n(1000)));
    assert!(no_holdings(&w));
}

#[test]
fn when_the_hub_is_gone_alices_force_close_pays_her_both_assets() {
    let mut w = World::new();
    let (la, lb) = open_two_asset_ledgers(&mut w);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], ETH, [n(100), n(0)], 7));
    w.run();
    assert!(w.parties[2].is_complete(&v));
    let fx = w.parties[0].pay(v.channel_id(), n(40)).unwrap();
    w.absorb(0, fx);
    w.run();
    w.gone[1] = true; // the hub
    let alice_exit = w.call(0, |p| p.force_close(la));
    let bob_exit = w.call(2, |p| p.force_close(lb));
    w.run_until(20, 300, |w| w.parties[0].is_complete(&alice_exit) && w.parties[2].is_complete(&bob_exit));
    // V finalized with bob's redemption (alice 60, bob 40): alice gets 900 + 60 ETH and her
    // 200 tokens; bob 1000 + 40 ETH and his 200 tokens; the absent hub the rest.
    assert_eq!((paid(&w, ETH, 0), paid(&w, TOKEN, 0)), (n(960), n(200)));
    assert_eq!((paid(&w, ETH, 2), paid(&w, TOKEN, 2)), (n(1040), n(200)));
    assert_eq!((paid(&w, ETH, 1), paid(&w, TOKEN, 1)), (n(2000), n(1000)));
    assert!(no_holdings(&w));
    assert!(w.parties[0].is_complete(&ObjectiveId::ForceClose(v.channel_id())));
}

#[test]
fn a_final_state_of_two_assets_is_paid_out_in_one_conclusion() {
    let mut w = World::with_parties(2);
    let (alice, hub) = (w.addr(0), w.addr(1));
    let id = w.call(1, |p| p.direct_fund_assets([hub, alice], &[(ETH, [n(10), n(4)]), (TOKEN, [n(3), n(7)])], 1));
    w.run();
    let close = w.call(1, |p| p.direct_defund(id.channel_id()));
    w.run();
    assert!(w.parties[1].is_complete(&close) && w.parties[0].is_complete(&close));
    assert_eq!((paid(&w, ETH, 1), paid(&w, TOKEN, 1)), (n(10), n(3)));
    assert_eq!((paid(&w, ETH, 0), paid(&w, TOKEN, 0)), (n(4), n(7)));
    assert!(no_holdings(&w));
}

#[test]
fn a_top_up_of_the_token_fills_that_assets_slot_only() {
    let mut w = World::new();
    let (la, _) = open_two_asset_ledgers(&mut w);
    let (alice, hub) = (0, 1);
    // Alice (the follower) tops up 25 tokens; the hub (the leader) 7 ETH afterwards.
    let other = Address::repeat_byte(0x99);
    assert!(matches!(w.parties[alice].top_up_in(la, other, n(1)), Err(PartyError::BadRequest(_))));
    let id = w.call(alice, |p| p.top_up_in(la, TOKEN, n(25)));
    w.run();
    assert!(w.parties[alice].is_complete(&id), "{:?}", w.parties[alice].waiting_for(&id));
    assert!(w.parties[hub].is_complete(&id), "{:?}", w.parties[hub].waiting_for(&id));
    for p in [alice, hub] {
        let o = outcome_of(&w.parties[p], &la);
        let (eth, token) = (o.exit(ETH).unwrap(), o.exit(TOKEN).unwrap());
        assert_eq!((token.slot(), token.follower().amount, token.total()), (None, n(225), Some(n(725))));
        assert_eq!((eth.follower().amount, eth.total()), (n(1000), Some(n(2000))), "ETH untouched");
    }
    assert_eq!((w.chain.holdings_of(&la, TOKEN), w.chain.holdings_of(&la, ETH)), (n(725), n(2000)));
    let again = w.call(hub, |p| p.top_up_in(la, ETH, n(7)));
    w.run();
    assert!(w.parties[hub].is_complete(&again));
    assert_eq!(outcome_of(&w.parties[alice], &la).exit(ETH).unwrap().leader().amount, n(1007));
    // Closing pays both assets, top-ups included.
    let close = w.call(hub, |p| p.direct_defund(la));
    w.run_until(1, 50, |w| w.parties[0].is_complete(&close) && w.parties[1].is_complete(&close));
    assert_eq!((paid(&w, TOKEN, alice), paid(&w, ETH, alice)), (n(225), n(1000)));
    assert_eq!((paid(&w, TOKEN, hub), paid(&w, ETH, hub)), (n(500), n(1007)));
}

#[test]
fn a_token_withdrawal_carries_eth_and_the_guarantee_whole_into_the_successor() {
    let mut w = World::new();
    let (la, lb) = open_two_asset_ledgers(&mut w);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], ETH, [n(100), n(0)], 7));
    w.run();
    let fx = w.parties[0].pay(v.channel_id(), n(30)).unwrap();
    w.absorb(0, fx);
    w.run();
    let before = outcome_of(&w.parties[2], &lb);
    // Refused, changing nothing: an asset the ledger does not hold, more than bob's balance.
    let other = Address::repeat_byte(0x99);
    assert!(matches!(w.parties[2].withdraw_in(lb, other, n(1)), Err(PartyError::BadRequest(_))));
    assert!(matches!(w.parties[2].withdraw_in(lb, TOKEN, n(201)), Err(PartyError::InsufficientFunds { .. })));
    // Bob withdraws 150 of his 200 tokens.
    let id = w.call(2, |p| p.withdraw_in(lb, TOKEN, n(150)));
    w.run();
    for i in [1, 2] {
        assert!(w.parties[i].is_complete(&id), "{i}: {:?}", w.parties[i].waiting_for(&id));
    }
    let successor = w.parties[2].successor(&lb).expect("bob follows the successor");
    assert_eq!(paid(&w, TOKEN, 2), n(150), "the conclusion paid bob's token withdrawal");
    assert_eq!(paid(&w, ETH, 2), n(0), "and no ETH");
    assert_eq!((w.chain.holdings_of(&lb, ETH), w.chain.holdings_of(&lb, TOKEN)), (n(0), n(0)));
    assert_eq!((w.chain.holdings_of(&successor, ETH), w.chain.holdings_of(&successor, TOKEN)), (n(2000), n(550)));
    let after = outcome_of(&w.parties[1], &successor);
    assert_eq!(after.exit(ETH), before.exit(ETH), "ETH, with V's guarantee, carried whole");
    let token = after.exit(TOKEN).unwrap();
    assert_eq!((token.leader().amount, token.follower().amount), (n(500), n(50)));
    // V closes through the successor, then every ledger closes: each paid exactly, per asset.
    let d = w.call(2, |p| p.virtual_defund(v.channel_id()));
    w.run();
    assert!(w.parties.iter().all(|p| p.is_complete(&d)));
    let closes = [w.call(1, |p| p.direct_defund(la)), w.call(1, |p| p.direct_defund(lb))];
    w.run();
    assert!(closes.iter().all(|c| w.parties[1].is_complete(c)));
    assert_eq!((paid(&w, ETH, 2), paid(&w, TOKEN, 2)), (n(1030), n(200)));
    assert_eq!((paid(&w, ETH, 0), paid(&w, TOKEN, 0)), (n(970), n(200)));
    assert_eq!((paid(&w, ETH, 1), paid(&w, TOKEN, 1)), (n(2000), n(1000)));
    assert!(no_holdings(&w));
}

#[test]
fn a_reorg_taking_back_the_token_deposit_makes_only_that_one_again() {
    let mut w = World::with_parties(2);
    let (a, b) = (w.addr(0), w.addr(1));
    let fork = w.chain.clone(); // the chain both branches share
    let assets = [(ETH, [n(100), n(50)]), (TOKEN, [n(30), n(0)])];
    let id = w.call(0, |p| p.direct_fund_assets([a, b], &assets, 1));
    let ledger = id.channel_id();
    // The prefund round; the leader's two deposits go out together, one block each.
    while let Some((from, e)) = w.network.pop_front() {
        let to = w.index_of(e.to);
        let fx = w.parties[to].handle_message(from, e.payload).unwrap();
        w.absorb(to, fx);
    }
    let events: Vec<ChainEvent> = w.chain_events.drain(..).collect();
    let asset_of = |e: &ChainEvent| match e {
        ChainEvent::Deposited { asset, .. } => *asset,
        other => panic!("{other:?}"),
    };
    let (eth, token) = match events.as_slice() {
        [x, y] if asset_of(x) == ETH && asset_of(y) == TOKEN => (x.clone(), y.clone()),
        other => panic!("two deposits, ETH then the token: {other:?}"),
    };
    // The new branch keeps the ETH deposit only; both events were reported before the reorg.
    let mut branch = fork;
    let redo = ChainTransaction::Deposit { channel_id: ledger, asset: ETH, expected_held: n(0), amount: n(100) };
    branch.execute(a, &redo).unwrap();
    w.chain = branch;
    for e in [&eth, &token] {
        for i in 0..2 {
            let fx = w.parties[i].handle_chain_event(e);
            w.absorb(i, fx);
        }
    }
    let retraction = ChainEvent::Retracted {
        channel_id: ledger,
        from_block: token.block_number(),
        block_number: token.block_number() - 1,
        asset: TOKEN,
        held: n(0),
        turn_num_record: nitro_core::U48::ZERO,
        finalizes_at: 0,
    };
    for i in 0..2 {
        let fx = w.parties[i].handle_chain_event(&retraction);
        w.absorb(i, fx);
    }
    w.run();
    assert!(w.parties[0].is_complete(&id) && w.parties[1].is_complete(&id));
    assert_eq!((w.chain.holdings_of(&ledger, ETH), w.chain.holdings_of(&ledger, TOKEN)), (n(150), n(30)));
    assert_eq!(deposited(&w, ETH, 0), n(100), "the ETH deposit stood: not made twice");
    assert_eq!(deposited(&w, TOKEN, 0), n(30), "the token deposit made again, once");
    assert_eq!(w.chain.reverts, 0);
}

#[test]
fn a_top_up_request_naming_no_asset_is_for_the_ledgers_first_asset() {
    let mut w = World::with_parties(2);
    let (alice, hub) = (w.addr(0), w.addr(1));
    let id = w.call(1, |p| p.direct_fund([hub, alice], TOKEN, [n(10), n(10)], 1));
    w.run();
    let ledger = id.channel_id();
    // As a follower from before multi-asset ledgers sends it: no asset.
    let old = Payload::TopUpRequest { channel_id: ledger, asset: None, amount: n(5) };
    let json = serde_json::to_value(&old).unwrap();
    assert!(!json.to_string().contains("asset"), "{json}");
    let fx = w.parties[1].handle_message(alice, serde_json::from_value(json).unwrap()).unwrap();
    w.absorb(1, fx);
    match w.parties[1].objective(&ObjectiveId::TopUp(ledger)) {
        Some(Objective::TopUp(t)) => assert_eq!((t.asset(), t.slot().amount), (TOKEN, n(5)), "the ledger's only asset"),
        other => panic!("the hub started no top-up: {other:?}"),
    }
}

#[test]
fn a_successor_withdrawing_two_assets_at_once_is_refused_and_nothing_starts() {
    let mut w = World::new();
    let (la, _) = open_two_asset_ledgers(&mut w);
    let (alice, hub) = (0, 1);
    // Alice (the follower) signs an L′@0 taking 1 of each asset from her balances.
    let mut state = w.parties[alice].ledger(&la).unwrap().consensus_state().state().clone();
    state.turn_num = nitro_core::U48::ZERO;
    state.channel_nonce = 77;
    for exit in &mut state.outcome.0 {
        exit.allocations[1].amount -= n(1);
    }
    let mut signed = SignedState::new(state);
    signed.sign(&common::key(1)).unwrap();
    let payload = Payload::State { objective: ObjectiveId::Withdraw(la), state: signed };
    let from = w.addr(alice);
    let refused = w.parties[hub].handle_message(from, payload);
    let why = match refused {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted"),
    };
    assert!(why.contains("a withdrawal is of one asset"), "{why}");
    assert!(w.parties[hub].objective(&ObjectiveId::Withdraw(la)).is_none(), "nothing started");
    assert_eq!(outcome_of(&w.parties[hub], &la).exit(TOKEN).unwrap().follower().amount, n(200));
}
