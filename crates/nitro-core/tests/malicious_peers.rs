//! A counterparty that misbehaves — wrong key, skipped turns, replays, overspending, duplicate
//! guarantees, countersigning another state, floods, proposals nobody expects — gets a typed
//! refusal; the honest side keeps its funds and can always go to chain with its latest
//! consensus state.

mod common;

use common::{key, World};
use nitro_core::{
    chain::ChainTransaction,
    party::{Party, PartyError, Payload},
    Address, ChannelError, ChannelId, ConsensusChannel, Countersignature, Guarantee, LedgerMessage, LedgerOutcome,
    Proposal, ProposalError, SignedProposal, SigningKey, B256, U256, U48,
};

/// Alice (0, follower) and a hub (1, leader) with an open ledger of 1000 each.
fn open() -> (World, ChannelId) {
    let mut w = World::with_parties(2);
    let (alice, hub) = (w.addr(0), w.addr(1));
    let id = w.call(1, |p| p.direct_fund([hub, alice], Address::ZERO, [U256::from(1000), U256::from(1000)], 1));
    w.run();
    (w, id.channel_id())
}

fn ledger(p: &Party, l: &ChannelId) -> ConsensusChannel {
    p.ledger(l).unwrap().clone()
}

/// A proposal as the (possibly dishonest) hub would build it on Alice's latest state.
fn forge(alice: &Party, l: &ChannelId, proposal: Proposal, turn: u64, signer: &SigningKey) -> SignedProposal {
    let ConsensusChannel::Follower(f) = alice.ledger(l).unwrap() else { panic!() };
    let mut outcome: LedgerOutcome = f.latest_outcome().clone();
    let _ = outcome.apply(&proposal);
    let hash = outcome.state_hash(*l, U48::from(turn));
    SignedProposal {
        channel_id: *l,
        proposals: vec![proposal],
        previous_turn: f.latest_turn(),
        turn_num: U48::from(turn),
        signature: signer.sign(&hash),
    }
}

fn add(target: u8, amount: u64, w: &World) -> Proposal {
    let (a, h) = (nitro_core::destination_of(w.addr(0)), nitro_core::destination_of(w.addr(1)));
    Proposal::Add {
        guarantee: Guarantee::new(B256::repeat_byte(target), U256::from(amount), a, h).unwrap(),
        left_deposit: U256::from(amount),
        asset: nitro_core::Address::ZERO,
    }
}

/// Alice still holds a fully signed consensus state the adjudicator accepts.
fn alice_can_go_to_chain(w: &World, l: &ChannelId) {
    let state = w.parties[0].ledger(l).unwrap().consensus_state();
    assert!(state.is_fully_signed());
    ChainTransaction::checkpoint(state.clone()).expect("a checkpoint of the latest consensus state");
    let outcome = LedgerOutcome::from_exit(&state.state().outcome).unwrap();
    assert_eq!(outcome.total(), Some(U256::from(2000)), "and all the money is in it");
}

fn deliver(w: &mut World, sp: SignedProposal) -> Result<(), PartyError> {
    let hub = w.addr(1);
    let fx = w.parties[0].handle_message(hub, Payload::Ledger(LedgerMessage::Proposal(sp)))?;
    w.absorb(0, fx);
    Ok(())
}

#[test]
fn a_proposal_signed_with_the_wrong_key_is_refused() {
    let (mut w, l) = open();
    let before = ledger(&w.parties[0], &l);
    let sp = forge(&w.parties[0], &l, add(7, 10, &w), 2, &key(9));
    let err = deliver(&mut w, sp).unwrap_err();
    assert!(matches!(err, PartyError::Channel(ChannelError::WrongSigner { .. })), "{err}");
    assert_eq!(ledger(&w.parties[0], &l), before);
    alice_can_go_to_chain(&w, &l);
}

#[test]
fn proposals_built_on_missing_states_are_buffered_never_applied() {
    let (mut w, l) = open();
    let before = ledger(&w.parties[0], &l);
    let hub_key = key(2);
    let mut sp = forge(&w.parties[0], &l, add(7, 10, &w), 6, &hub_key);
    sp.previous_turn = U48::from(5);
    deliver(&mut w, sp).unwrap();
    let after = ledger(&w.parties[0], &l);
    assert_eq!(after.consensus_state(), before.consensus_state());
    assert!(!after.has_pending(), "nothing applied while the state at turn 5 is missing");
    alice_can_go_to_chain(&w, &l);
}

#[test]
fn replayed_old_proposals_change_nothing() {
    let mut w = World::with_parties(3);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let la = w.call(1, |p| p.direct_fund([hub, alice], Address::ZERO, [U256::from(1000), U256::from(1000)], 1));
    w.call(1, |p| p.direct_fund([hub, bob], Address::ZERO, [U256::from(1000), U256::from(1000)], 2));
    w.run();
    let l = la.channel_id();
    // Record the hub's proposals on the way to Alice, then let a virtual channel settle.
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [U256::from(10), U256::ZERO], 5));
    let mut seen = Vec::new();
    while let Some((from, e)) = w.network.pop_front() {
        if let Payload::Ledger(LedgerMessage::Proposal(sp)) = &e.payload {
            if e.to == alice {
                seen.push(sp.clone());
            }
        }
        let to = w.parties.iter().position(|p| p.address() == e.to).unwrap();
        let fx = w.parties[to].handle_message(from, e.payload).unwrap();
        w.absorb(to, fx);
    }
    w.run();
    assert!(w.parties[0].is_complete(&v));
    assert!(!seen.is_empty());
    let before = ledger(&w.parties[0], &l);
    for sp in seen {
        deliver(&mut w, sp).unwrap(); // answered with the latest countersignature
    }
    assert_eq!(ledger(&w.parties[0], &l), before);
}

#[test]
fn overspending_and_duplicate_guarantees_are_refused() {
    let (mut w, l) = open();
    let hub_key = key(2);
    let before = ledger(&w.parties[0], &l);
    // Alice (left) would have to put in 5000 of her 1000.
    let sp = forge(&w.parties[0], &l, add(7, 5000, &w), 2, &hub_key);
    let err = deliver(&mut w, sp).unwrap_err();
    assert!(matches!(err, PartyError::Channel(ChannelError::Proposal(ProposalError::InsufficientFunds { .. }))));
    assert_eq!(ledger(&w.parties[0], &l), before);
    // A guarantee, then the same target again at the next turn.
    let first = forge(&w.parties[0], &l, add(7, 10, &w), 2, &hub_key);
    deliver(&mut w, first).unwrap();
    let second = forge(&w.parties[0], &l, add(7, 10, &w), 3, &hub_key);
    let err = deliver(&mut w, second).unwrap_err();
    assert!(matches!(err, PartyError::Channel(ChannelError::Proposal(ProposalError::DuplicateTarget(_)))), "{err}");
    alice_can_go_to_chain(&w, &l);
}

#[test]
fn a_countersignature_on_another_state_is_refused_by_the_leader() {
    let mut w = World::with_parties(3);
    let (la, _) = w.open_ledgers(1000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [U256::from(10), U256::ZERO], 5));
    // Deliver until the hub has proposed the guarantee to Alice.
    while !w.parties[1].ledger(&la).unwrap().has_pending() {
        let (from, e) = w.network.pop_front().expect("the hub proposes");
        let to = w.index_of(e.to);
        let fx = w.parties[to].handle_message(from, e.payload).unwrap();
        w.absorb(to, fx);
    }
    // A dishonest Alice countersigns a state of her own invention at that turn.
    let turn = w.parties[1].ledger(&la).unwrap().consensus_turn() + U48::from(1);
    let forged = Countersignature { channel_id: la, turn_num: turn, signature: key(1).sign(&B256::repeat_byte(3)) };
    let before = ledger(&w.parties[1], &la);
    let err = w.parties[1].handle_message(alice, Payload::Ledger(LedgerMessage::Countersignature(forged))).unwrap_err();
    assert!(matches!(err, PartyError::Channel(ChannelError::WrongSigner { .. })), "{err}");
    assert_eq!(ledger(&w.parties[1], &la), before, "the hub's ledger is unchanged");
}

#[test]
fn a_flood_costs_bounded_memory_and_changes_nothing() {
    let (mut w, l) = open();
    let hub_key = key(2);
    let before = ledger(&w.parties[0], &l);
    let mut refused = 0;
    for turn in 3..5_000u64 {
        let sp = forge(&w.parties[0], &l, add((turn % 200) as u8, 1, &w), turn, &hub_key);
        if deliver(&mut w, sp).is_err() {
            refused += 1;
        }
    }
    assert!(refused > 4_000, "beyond the reorder buffer everything is refused: {refused}");
    let ConsensusChannel::Follower(f) = w.parties[0].ledger(&l).unwrap() else { panic!() };
    assert!(f.buffered() <= nitro_core::DEFAULT_REORDER_CAPACITY);
    assert_eq!(f.consensus_state(), before.consensus_state());
    // Garbage from a stranger is refused outright.
    let stranger = key(9).address();
    let sp = forge(&w.parties[0], &l, add(1, 1, &w), 2, &hub_key);
    assert!(matches!(
        w.parties[0].handle_message(stranger, Payload::Ledger(LedgerMessage::Proposal(sp))),
        Err(PartyError::UnexpectedSender(_))
    ));
    alice_can_go_to_chain(&w, &l);
}

#[test]
fn a_proposal_nobody_expects_cannot_block_the_ledger() {
    let (mut w, l) = open();
    // The hub proposes a guarantee for a "virtual channel" Alice has never heard of, and keeps
    // resending it.
    let ConsensusChannel::Leader(_) = w.parties[1].ledger(&l).unwrap() else { panic!() };
    let hub_key = key(2);
    let sp = forge(&w.parties[0], &l, add(7, 10, &w), 2, &hub_key);
    let mut rejected = None;
    for _ in 0..300 {
        let hub = w.addr(1);
        let fx = w.parties[0].handle_message(hub, Payload::Ledger(LedgerMessage::Proposal(sp.clone()))).unwrap();
        if let Some(r) = fx.messages.iter().find_map(|m| match &m.payload {
            Payload::Ledger(LedgerMessage::Rejection(r)) => Some(r.clone()),
            _ => None,
        }) {
            rejected = Some(r);
            break;
        }
    }
    let rejection = rejected.expect("the unexpected proposal is rejected after a while");
    assert_eq!(rejection.turn_num, U48::from(2));
    let ConsensusChannel::Follower(f) = w.parties[0].ledger(&l).unwrap() else { panic!() };
    assert_eq!(f.pending().len(), 0, "the ledger is free again");
    alice_can_go_to_chain(&w, &l);
}
