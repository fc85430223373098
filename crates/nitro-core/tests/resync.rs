//! Delivery is the transport's business: the timer sends nothing again, and a peer whose
//! connection is (re)established gets from [`Party::resync`] exactly what it may lack from us.

mod common;

use common::World;
use nitro_core::{
    party::{Clock, Payload},
    Address, LedgerMessage, U256,
};

fn clock() -> Clock {
    Clock { unix_secs: 1_000, chain_time: Some(1_000_000) }
}

#[test]
fn the_timer_sends_nothing_again_and_a_reconnection_recovers_what_was_lost() {
    let mut w = World::new();
    w.open_ledgers(1_000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [U256::from(10), U256::ZERO], 1));
    // The first messages of the funding arrive, but every answer is lost for a while.
    for _ in 0..5 {
        while let Some((from, e)) = w.network.pop_front() {
            let to = w.index_of(e.to);
            let _answers_lost = w.parties[to].handle_message(from, e.payload);
        }
        for i in 0..3 {
            let fx = w.parties[i].tick(clock());
            assert!(fx.messages.is_empty(), "party {i} re-sent {:?} on its timer", fx.messages);
        }
    }
    assert!(!w.parties[0].is_complete(&v));
    // The connections come back: each end resyncs the other, and the funding completes.
    w.reconnect_all();
    w.run();
    for _ in 0..4 {
        if w.parties.iter().all(|p| p.is_complete(&v)) {
            break;
        }
        w.reconnect_all();
        w.run();
    }
    for p in &w.parties {
        assert!(p.is_complete(&v), "{:?}", p.waiting_for(&v));
    }
}

#[test]
fn resync_is_addressed_to_the_peer_and_holds_the_unacknowledged_proposals() {
    let mut w = World::new();
    let (_, lb) = w.open_ledgers(1_000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [U256::from(10), U256::ZERO], 1));
    // Deliver until the hub has proposed the guarantee to Bob, then lose that proposal.
    let mut lost = None;
    while let Some((from, e)) = w.network.pop_front() {
        if matches!(&e.payload, Payload::Ledger(LedgerMessage::Proposal(p)) if p.channel_id == lb) {
            lost = Some(e.clone());
            continue;
        }
        let to = w.index_of(e.to);
        if let Ok(fx) = w.parties[to].handle_message(from, e.payload) {
            w.absorb(to, fx);
        }
    }
    let lost = lost.expect("the hub proposed a guarantee to bob");
    let to_bob = w.parties[1].resync(bob);
    assert!(to_bob.messages.iter().all(|m| m.to == bob), "{:?}", to_bob.messages);
    assert!(to_bob.messages.contains(&lost), "the lost proposal is in the resync");
    assert!(to_bob.transactions.is_empty() && to_bob.signed.is_empty() && to_bob.events.is_empty());
    let to_alice = w.parties[1].resync(alice);
    assert!(to_alice.messages.iter().all(|m| m.to == alice));
    assert!(!to_alice.messages.iter().any(|m| matches!(&m.payload, Payload::Ledger(l) if l.channel_id() == lb)));
    // A resync to a stranger is empty.
    assert!(w.parties[1].resync(Address::repeat_byte(7)).messages.is_empty());
}

#[test]
fn a_lost_voucher_is_sent_again_until_the_channel_closes() {
    let mut w = World::new();
    w.open_ledgers(1_000);
    let (alice, hub, bob) = (w.addr(0), w.addr(1), w.addr(2));
    let v = w.call(0, |p| p.virtual_fund(vec![alice, hub, bob], Address::ZERO, [U256::from(10), U256::ZERO], 1));
    w.run();
    assert!(w.parties[2].is_complete(&v));
    let channel = v.channel_id();
    let fx = w.parties[0].pay(channel, U256::from(3)).unwrap();
    assert_eq!(fx.messages.len(), 1, "one voucher, lost");
    assert_eq!(w.parties[2].paid(&channel), U256::ZERO);
    assert!(w.parties[0].resync(hub).messages.iter().all(|m| !matches!(m.payload, Payload::Voucher(_))));
    let again = w.parties[0].resync(bob);
    assert!(again.messages.iter().any(|m| matches!(&m.payload, Payload::Voucher(x) if x.amount == U256::from(3))));
    w.absorb(0, again);
    w.run();
    assert_eq!(w.parties[2].paid(&channel), U256::from(3));
    // Once the channel is closing, its final state carries the payment: no voucher any more.
    w.call(2, |p| p.virtual_defund(channel));
    w.run();
    assert!(w.parties[0].resync(bob).messages.iter().all(|m| !matches!(m.payload, Payload::Voucher(_))));
}
