//! The top-up changes through the leader and follower channels: batched with other changes,
//! verified by the follower from the leader's signature on the resulting state, and — when a
//! batch does not apply or its signature does not verify — undone without a trace (a `Credit`
//! is undone back into the slot).

use nitro_core::{
    destination_of, Address, Balance, FixedPart, FollowerChannel, Guarantee, LeaderChannel, LedgerEvent, LedgerMessage,
    LedgerOutcome, Proposal, Side, SignedProposal, SignedState, SigningKey, Slot, B256, U256, U48,
};

fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b).unwrap()
}

fn pair() -> (LeaderChannel, FollowerChannel) {
    let (leader, follower) = (key(1), key(2));
    let fixed = FixedPart {
        participants: vec![leader.address(), follower.address()],
        channel_nonce: 1,
        app_definition: Address::repeat_byte(0xca),
        challenge_duration: U48::from(60),
    };
    let outcome = LedgerOutcome::new(
        Address::ZERO,
        Balance { destination: destination_of(leader.address()), amount: U256::from(100) },
        Balance { destination: destination_of(follower.address()), amount: U256::from(100) },
    )
    .unwrap();
    let mut initial = SignedState::new(outcome.to_state(&fixed, U48::from(1)));
    initial.sign(&leader).unwrap();
    initial.sign(&follower).unwrap();
    (LeaderChannel::new(leader, &initial).unwrap(), FollowerChannel::new(follower, &initial).unwrap())
}

fn reserve(amount: u64) -> Proposal {
    Proposal::Reserve { asset: Address::ZERO, side: Side::Follower, amount: U256::from(amount) }
}

fn credit(amount: u64) -> Proposal {
    Proposal::Credit { asset: Address::ZERO, side: Side::Follower, amount: U256::from(amount) }
}

fn proposal_of(messages: &[LedgerMessage]) -> SignedProposal {
    match messages {
        [LedgerMessage::Proposal(sp)] => sp.clone(),
        other => panic!("expected one proposal, got {other:?}"),
    }
}

#[test]
fn a_batch_that_fails_or_is_forged_after_a_credit_leaves_the_follower_unchanged() {
    let (mut leader, mut follower) = pair();
    let before = follower.latest_outcome().clone();
    // Reserve and Credit of the same slot in one batch: the leader signs the resulting state.
    let sp = proposal_of(&leader.propose_batch(vec![reserve(10), credit(10)]).unwrap().messages);
    // A copy with a third change that does not apply: refused, nothing applied.
    let mut failing = sp.clone();
    failing.proposals.push(credit(10));
    assert!(follower.receive_proposal(&failing).is_err());
    assert_eq!(follower.latest_outcome(), &before);
    // A copy whose last change differs from what the leader signed: the signature does not
    // verify on the state it produces, and the Reserve and Credit are undone.
    let mut forged = sp.clone();
    forged.proposals = vec![reserve(10), credit(10), reserve(3)];
    assert!(follower.receive_proposal(&forged).is_err());
    assert_eq!(follower.latest_outcome(), &before);
    // The real one goes through, and the two sides agree.
    let _ = follower.receive_proposal(&sp).unwrap();
    let step = follower.countersign_all().unwrap();
    let [LedgerMessage::Countersignature(c)] = step.messages.as_slice() else { panic!("{step:?}") };
    let step = leader.receive(&LedgerMessage::Countersignature(*c)).unwrap();
    assert!(step.events.iter().any(|e| matches!(e, LedgerEvent::TopUpAgreed { .. })));
    assert_eq!(leader.consensus_state(), follower.consensus_state());
    let o = leader.consensus_outcome();
    assert_eq!((o.follower().amount, o.slot(), o.total()), (U256::from(110), None, Some(U256::from(210))));
}

#[test]
fn top_up_changes_batch_with_guarantees_and_a_bad_one_is_left_out() {
    let (mut leader, mut follower) = pair();
    let (l, f) = (leader.consensus_outcome().leader().destination, leader.consensus_outcome().follower().destination);
    let add = Proposal::Add {
        guarantee: Guarantee::new(B256::repeat_byte(7), U256::from(30), l, f).unwrap(),
        left_deposit: U256::from(20),
        asset: nitro_core::Address::ZERO,
    };
    // A credit with no slot does not apply: dropped, the rest is one state.
    let step = leader.propose_batch(vec![credit(5), reserve(5), add]).unwrap();
    assert!(step
        .events
        .iter()
        .any(|e| matches!(e, LedgerEvent::ProposalDropped { proposal, .. } if *proposal == credit(5))));
    let sp = proposal_of(&step.messages);
    assert_eq!(sp.proposals, vec![reserve(5), add]);
    let _ = follower.receive_proposal(&sp).unwrap();
    assert_eq!(follower.latest_outcome().slot(), Some(Slot { side: Side::Follower, amount: U256::from(5) }));
    assert_eq!(follower.latest_outcome().total(), Some(U256::from(205)));
}
