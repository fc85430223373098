//! The consensus-channel layer: leader, follower, queue, guarantees, rejection, replay.

// The `Pair` helpers record every step's events themselves; tests that only need the side
// effect of a delivery ignore the returned `Step` on purpose.
#![allow(unused_must_use)]

use nitro_core::{
    destination_of, Address, Approval, Balance, Bytes, ChannelError, ConsensusChannel, Countersignature, Exit,
    FixedPart, FollowerChannel, Guarantee, GuaranteeStatus, LeaderChannel, LedgerEvent, LedgerMessage, LedgerOutcome,
    OutcomeError, Proposal, ProposalError, Rejection, Side, SignedProposal, SignedState, SigningKey, State, Step, B256,
    MAX_REASON_LEN, U256, U48,
};

fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b).unwrap()
}

fn leader_key() -> SigningKey {
    key(1)
}
fn follower_key() -> SigningKey {
    key(2)
}
fn stranger() -> SigningKey {
    key(3)
}

fn fixed() -> FixedPart {
    FixedPart {
        participants: vec![leader_key().address(), follower_key().address()],
        channel_nonce: 7,
        app_definition: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512".parse().unwrap(),
        challenge_duration: U48::from(3600),
    }
}

fn l() -> B256 {
    destination_of(leader_key().address())
}
fn f() -> B256 {
    destination_of(follower_key().address())
}
fn t(n: u8) -> B256 {
    B256::repeat_byte(n)
}
fn u(n: u64) -> U256 {
    U256::from(n)
}
fn turn(n: u64) -> U48 {
    U48::from(n)
}

fn outcome(leader: u64, follower: u64) -> LedgerOutcome {
    LedgerOutcome::new(
        Address::ZERO,
        Balance { destination: l(), amount: u(leader) },
        Balance { destination: f(), amount: u(follower) },
    )
    .unwrap()
}

fn signed_state(outcome: &LedgerOutcome, turn_num: u64) -> SignedState {
    let mut s = SignedState::new(outcome.to_state(&fixed(), turn(turn_num)));
    s.sign(&leader_key()).unwrap();
    s.sign(&follower_key()).unwrap();
    s
}

/// A leader and a follower of the same fresh ledger, with every event each produced.
struct Pair {
    leader: LeaderChannel,
    follower: FollowerChannel,
    initial: SignedState,
    leader_events: Vec<LedgerEvent>,
    follower_events: Vec<LedgerEvent>,
}

impl Pair {
    fn new(leader: u64, follower: u64) -> Self {
        let initial = signed_state(&outcome(leader, follower), 1);
        Self {
            leader: LeaderChannel::new(leader_key(), &initial).unwrap(),
            follower: FollowerChannel::new(follower_key(), &initial).unwrap(),
            initial,
            leader_events: vec![],
            follower_events: vec![],
        }
    }

    fn propose(&mut self, p: Proposal) -> SignedProposal {
        let step = self.leader.propose(p).unwrap();
        self.leader_events.extend(step.events);
        match step.messages.as_slice() {
            [LedgerMessage::Proposal(sp)] => sp.clone(),
            other => panic!("expected one proposal, got {other:?}"),
        }
    }

    fn add(&mut self, target: u8, amount: u64, left: B256, left_deposit: u64) -> SignedProposal {
        let right = if left == l() { f() } else { l() };
        self.propose(Proposal::Add {
            guarantee: Guarantee::new(t(target), u(amount), left, right).unwrap(),
            left_deposit: u(left_deposit),
            asset: nitro_core::Address::ZERO,
        })
    }

    fn remove(&mut self, target: u8, left_amount: u64) -> SignedProposal {
        self.propose(Proposal::Remove { target: t(target), left_amount: u(left_amount) })
    }

    fn follower_receives(&mut self, sp: &SignedProposal) -> Step {
        let step = self.follower.receive_proposal(sp).unwrap();
        self.follower_events.extend(step.events.clone());
        step
    }

    fn countersign_all(&mut self) -> Countersignature {
        let step = self.follower.countersign_all().unwrap();
        self.follower_events.extend(step.events);
        match step.messages.as_slice() {
            [LedgerMessage::Countersignature(c)] => *c,
            other => panic!("expected a countersignature, got {other:?}"),
        }
    }

    fn leader_receives(&mut self, m: &LedgerMessage) -> Step {
        let step = self.leader.receive(m).unwrap();
        self.leader_events.extend(step.events.clone());
        step
    }

    /// Delivers `sp`, countersigns everything pending and delivers the countersignature.
    fn round(&mut self, sp: &SignedProposal) {
        self.follower_receives(sp);
        let c = self.countersign_all();
        self.leader_receives(&LedgerMessage::Countersignature(c));
        self.assert_agree();
    }

    fn assert_agree(&self) {
        assert_eq!(self.leader.consensus_turn(), self.follower.consensus_turn());
        assert_eq!(self.leader.consensus_state(), self.follower.consensus_state());
        assert_eq!(self.leader.consensus_state().hash(), self.follower.consensus_state().hash());
        assert_conserved(self.leader.consensus_outcome(), self.total());
        assert_conserved(self.follower.latest_outcome(), self.total());
    }

    fn total(&self) -> U256 {
        LedgerOutcome::from_exit(&self.initial.state().outcome).unwrap().total().unwrap()
    }
}

fn assert_conserved(o: &LedgerOutcome, total: U256) {
    let sum = o.guarantees().fold(o.leader().amount + o.follower().amount, |acc, g| acc + g.amount());
    assert_eq!(sum, total, "money is conserved");
}

fn one_message(step: &Step) -> &LedgerMessage {
    assert_eq!(step.messages.len(), 1, "{step:?}");
    &step.messages[0]
}

// ---------------------------------------------------------------- construction

#[test]
fn both_roles_build_from_a_fully_signed_state() {
    let p = Pair::new(100, 100);
    assert_eq!(p.leader.channel_id(), fixed().channel_id());
    assert_eq!(p.follower.channel_id(), fixed().channel_id());
    assert_eq!(p.leader.consensus_turn(), turn(1));
    assert_eq!(p.leader.consensus_state(), p.initial);
    p.assert_agree();
}

#[test]
fn a_half_signed_state_is_refused() {
    let mut s = SignedState::new(outcome(1, 1).to_state(&fixed(), turn(1)));
    s.sign(&leader_key()).unwrap();
    assert_eq!(LeaderChannel::new(leader_key(), &s).unwrap_err(), ChannelError::NotFullySigned);
    assert_eq!(FollowerChannel::new(follower_key(), &s).unwrap_err(), ChannelError::NotFullySigned);
}

#[test]
fn keys_must_match_their_role() {
    let s = signed_state(&outcome(1, 1), 1);
    assert!(matches!(LeaderChannel::new(follower_key(), &s), Err(ChannelError::WrongRole { role: "leader", .. })));
    assert!(matches!(FollowerChannel::new(leader_key(), &s), Err(ChannelError::WrongRole { role: "follower", .. })));
    assert!(matches!(ConsensusChannel::new(stranger(), &s), Err(ChannelError::WrongRole { .. })));
}

#[test]
fn consensus_channel_picks_the_role_of_the_key() {
    let s = signed_state(&outcome(1, 1), 1);
    assert!(matches!(ConsensusChannel::new(leader_key(), &s).unwrap(), ConsensusChannel::Leader(_)));
    let follower = ConsensusChannel::new(follower_key(), &s).unwrap();
    assert!(matches!(follower, ConsensusChannel::Follower(_)));
    assert_eq!(follower.consensus_turn(), turn(1));
    assert_eq!(follower.channel_id(), fixed().channel_id());
    assert_eq!(follower.consensus_state(), s);
    assert!(!follower.has_pending());
}

#[test]
fn three_participants_are_refused() {
    let mut fp = fixed();
    fp.participants.push(stranger().address());
    let mut s = SignedState::new(outcome(1, 1).to_state(&fp, turn(1)));
    for k in [leader_key(), follower_key(), stranger()] {
        s.sign(&k).unwrap();
    }
    assert_eq!(LeaderChannel::new(leader_key(), &s).unwrap_err(), ChannelError::ParticipantCount(3));
    assert_eq!(ConsensusChannel::new(stranger(), &s).unwrap_err(), ChannelError::ParticipantCount(3));
}

fn sign_both(state: State) -> SignedState {
    let mut s = SignedState::new(state);
    s.sign(&leader_key()).unwrap();
    s.sign(&follower_key()).unwrap();
    s
}

#[test]
fn a_final_state_is_refused() {
    let mut state = outcome(1, 1).to_state(&fixed(), turn(1));
    state.is_final = true;
    assert_eq!(LeaderChannel::new(leader_key(), &sign_both(state)).unwrap_err(), ChannelError::FinalState);
}

#[test]
fn app_data_is_refused() {
    let mut state = outcome(1, 1).to_state(&fixed(), turn(1));
    state.app_data = Bytes::from(vec![1]);
    assert_eq!(LeaderChannel::new(leader_key(), &sign_both(state)).unwrap_err(), ChannelError::AppData);
}

#[test]
fn a_non_ledger_outcome_is_refused() {
    let mut state = outcome(1, 1).to_state(&fixed(), turn(1));
    state.outcome = Exit(vec![state.outcome.0[0].clone(), state.outcome.0[0].clone()]);
    assert_eq!(
        LeaderChannel::new(leader_key(), &sign_both(state)).unwrap_err(),
        ChannelError::Outcome(OutcomeError::AssetOrder(1))
    );
}

#[test]
fn balances_must_pay_the_participants() {
    let swapped = LedgerOutcome::new(
        Address::ZERO,
        Balance { destination: f(), amount: u(1) },
        Balance { destination: l(), amount: u(1) },
    )
    .unwrap();
    let s = sign_both(swapped.to_state(&fixed(), turn(1)));
    assert_eq!(LeaderChannel::new(leader_key(), &s).unwrap_err(), ChannelError::BalanceDestination("leader"));
    let other = LedgerOutcome::new(
        Address::ZERO,
        Balance { destination: l(), amount: u(1) },
        Balance { destination: t(9), amount: u(1) },
    )
    .unwrap();
    let s = sign_both(other.to_state(&fixed(), turn(1)));
    assert_eq!(FollowerChannel::new(follower_key(), &s).unwrap_err(), ChannelError::BalanceDestination("follower"));
}

// ---------------------------------------------------------------- leader proposes

#[test]
fn leader_signs_the_whole_resulting_state_at_the_next_turn() {
    let mut p = Pair::new(100, 100);
    let sp = p.add(5, 30, l(), 10);
    assert_eq!(sp.turn_num, turn(2));
    assert_eq!(sp.channel_id, fixed().channel_id());
    let mut predicted = outcome(100, 100);
    predicted.apply(&sp.proposals[0]).unwrap();
    let state = predicted.to_state(&fixed(), turn(2));
    assert_eq!(nitro_core::recover_signer(&state.hash(), &sp.signature).unwrap(), leader_key().address());
    assert_eq!(p.leader.latest_outcome(), &predicted);
    assert_eq!(p.leader.latest_outcome().leader().amount, u(90));
    assert_eq!(p.leader.latest_outcome().follower().amount, u(80));
    assert_eq!(p.leader.consensus_turn(), turn(1), "nothing is in consensus before the countersignature");
}

#[test]
fn proposals_queue_at_consecutive_turns() {
    let mut p = Pair::new(100, 100);
    let turns: Vec<_> = (1..=5).map(|i| p.add(i, 1, l(), 1).turn_num).collect();
    assert_eq!(turns, (2..=6).map(turn).collect::<Vec<_>>());
    assert_eq!(p.leader.queue().len(), 5);
    assert_eq!(p.leader.latest_turn(), turn(6));
    assert_eq!(p.leader.queue().get(turn(4)).unwrap().signed.turn_num, turn(4));
    assert!(p.leader.queue().get(turn(7)).is_none());
    assert!(p.leader.queue().get(turn(1)).is_none());
}

fn assert_propose_refused(p: &mut Pair, proposal: Proposal, expected: ChannelError) {
    let before = p.leader.clone();
    assert_eq!(p.leader.propose(proposal).unwrap_err(), expected);
    assert_eq!(p.leader, before, "a refused proposal changes nothing");
}

fn add_p(target: u8, amount: u64, left: B256, left_deposit: u64) -> Proposal {
    let right = if left == l() { f() } else { l() };
    Proposal::Add {
        guarantee: Guarantee::new(t(target), u(amount), left, right).unwrap(),
        left_deposit: u(left_deposit),
        asset: nitro_core::Address::ZERO,
    }
}

#[test]
fn propose_refuses_a_duplicate_target() {
    let mut p = Pair::new(100, 100);
    p.add(5, 10, l(), 5);
    assert_propose_refused(&mut p, add_p(5, 1, l(), 1), ProposalError::DuplicateTarget(t(5)).into());
}

#[test]
fn propose_refuses_an_unknown_target() {
    let mut p = Pair::new(100, 100);
    assert_propose_refused(
        &mut p,
        Proposal::Remove { target: t(5), left_amount: u(0) },
        ProposalError::TargetNotFound(t(5)).into(),
    );
}

#[test]
fn propose_refuses_a_deposit_above_the_amount() {
    let mut p = Pair::new(100, 100);
    assert_propose_refused(
        &mut p,
        add_p(5, 10, l(), 11),
        ProposalError::DepositExceedsAmount { left_deposit: u(11), amount: u(10) }.into(),
    );
}

#[test]
fn propose_refuses_a_left_amount_above_the_amount() {
    let mut p = Pair::new(100, 100);
    p.add(5, 10, l(), 5);
    assert_propose_refused(
        &mut p,
        Proposal::Remove { target: t(5), left_amount: u(11) },
        ProposalError::LeftAmountExceedsAmount { left_amount: u(11), amount: u(10) }.into(),
    );
}

#[test]
fn propose_refuses_when_the_leader_lacks_funds() {
    let mut p = Pair::new(10, 100);
    assert_propose_refused(
        &mut p,
        add_p(5, 20, l(), 11),
        ProposalError::InsufficientFunds { side: Side::Leader, needed: u(11), available: u(10) }.into(),
    );
}

#[test]
fn propose_refuses_when_the_follower_lacks_funds() {
    let mut p = Pair::new(100, 3);
    assert_propose_refused(
        &mut p,
        add_p(5, 20, l(), 10),
        ProposalError::InsufficientFunds { side: Side::Follower, needed: u(10), available: u(3) }.into(),
    );
}

#[test]
fn propose_counts_queued_proposals_when_checking_funds() {
    let mut p = Pair::new(10, 10);
    p.add(1, 8, l(), 8);
    assert_propose_refused(
        &mut p,
        add_p(2, 3, l(), 3),
        ProposalError::InsufficientFunds { side: Side::Leader, needed: u(3), available: u(2) }.into(),
    );
}

#[test]
fn propose_refuses_parties_other_than_the_ledgers() {
    let mut p = Pair::new(100, 100);
    let g = Guarantee::new(t(5), u(1), l(), t(77)).unwrap();
    assert_propose_refused(
        &mut p,
        Proposal::Add { guarantee: g, left_deposit: u(0), asset: nitro_core::Address::ZERO },
        ProposalError::NotLedgerParties(t(5)).into(),
    );
}

#[test]
fn add_guarantee_refuses_zero_and_same_party() {
    let mut p = Pair::new(100, 100);
    let before = p.leader.clone();
    assert_eq!(p.leader.add_guarantee(t(5), u(0), l(), f(), u(0)).unwrap_err(), ProposalError::ZeroAmount(t(5)).into());
    assert_eq!(
        p.leader.add_guarantee(t(5), u(1), l(), l(), u(0)).unwrap_err(),
        ProposalError::SameLeftAndRight(t(5)).into()
    );
    assert_eq!(p.leader, before);
}

#[test]
fn add_and_remove_guarantee_helpers_propose() {
    let mut p = Pair::new(100, 100);
    let step = p.leader.add_guarantee(t(5), u(10), f(), l(), u(4)).unwrap();
    assert!(matches!(one_message(&step), LedgerMessage::Proposal(sp) if sp.turn_num == turn(2)));
    let step = p.leader.remove_guarantee(t(5), u(4)).unwrap();
    assert!(matches!(one_message(&step), LedgerMessage::Proposal(sp) if sp.turn_num == turn(3)));
    assert_eq!(p.leader.latest_outcome(), &outcome(100, 100));
}

#[test]
fn re_adding_a_target_whose_removal_is_pending_is_refused() {
    let mut p = Pair::new(100, 100);
    let sp = p.add(5, 10, l(), 5);
    p.round(&sp);
    p.remove(5, 5);
    assert_propose_refused(&mut p, add_p(5, 10, l(), 5), ProposalError::DuplicateTarget(t(5)).into());
}

#[test]
fn the_turn_number_cannot_overflow() {
    let max = (1u64 << 48) - 1;
    let s = signed_state(&outcome(10, 10), max);
    let mut leader = LeaderChannel::new(leader_key(), &s).unwrap();
    let before = leader.clone();
    assert_eq!(leader.propose(add_p(1, 1, l(), 1)).unwrap_err(), ChannelError::TurnOverflow);
    assert_eq!(leader, before);
}

// ---------------------------------------------------------------- follower receives

#[test]
fn follower_countersigns_and_both_agree() {
    let mut p = Pair::new(100, 100);
    let sp = p.add(5, 30, l(), 10);
    let step = p.follower_receives(&sp);
    assert!(step.messages.is_empty(), "nothing is countersigned before approval");
    assert_eq!(p.follower.pending().len(), 1);
    let c = p.countersign_all();
    assert_eq!(c.turn_num, turn(2));
    let step = p.leader_receives(&LedgerMessage::Countersignature(c));
    assert!(step.events.iter().any(|e| matches!(e, LedgerEvent::ConsensusAdvanced { turn: t2, .. } if *t2 == turn(2))));
    p.assert_agree();
    assert!(p.leader.queue().is_empty() && p.follower.queue().is_empty());
    assert!(p.leader.is_locked(&t(5)) && p.follower.is_locked(&t(5)));
}

#[test]
fn follower_refuses_another_ledgers_proposal() {
    let mut p = Pair::new(100, 100);
    let mut sp = p.add(5, 30, l(), 10);
    sp.channel_id = t(42);
    let before = p.follower.clone();
    assert_eq!(
        p.follower.receive_proposal(&sp).unwrap_err(),
        ChannelError::WrongChannel { expected: fixed().channel_id(), got: t(42) }
    );
    assert_eq!(p.follower, before);
}

#[test]
fn follower_refuses_a_proposal_not_signed_by_the_leader() {
    let mut p = Pair::new(100, 100);
    let mut sp = p.add(5, 30, l(), 10);
    let mut predicted = outcome(100, 100);
    predicted.apply(&sp.proposals[0]).unwrap();
    sp.signature = stranger().sign(&predicted.to_state(&fixed(), turn(2)).hash());
    let before = p.follower.clone();
    assert_eq!(
        p.follower.receive_proposal(&sp).unwrap_err(),
        ChannelError::WrongSigner { expected: leader_key().address(), got: stranger().address() }
    );
    assert_eq!(p.follower, before, "a refused proposal changes nothing");
}

#[test]
fn follower_refuses_a_tampered_proposal() {
    let mut p = Pair::new(100, 100);
    let mut sp = p.add(5, 30, l(), 10);
    sp.proposals[0] = add_p(5, 31, l(), 10);
    let before = p.follower.clone();
    assert!(matches!(p.follower.receive_proposal(&sp).unwrap_err(), ChannelError::WrongSigner { .. }));
    assert_eq!(p.follower, before);
}

#[test]
fn follower_refuses_a_proposal_it_cannot_apply() {
    // A (buggy or malicious) leader signs an overspending state; the follower checks funds itself.
    let mut p = Pair::new(100, 5);
    let proposal = add_p(5, 30, l(), 10);
    let mut forged = LedgerOutcome::with_guarantees(
        Address::ZERO,
        Balance { destination: l(), amount: u(90) },
        Balance { destination: f(), amount: u(0) },
        [],
    )
    .unwrap();
    forged.apply(&add_p(9, 1, l(), 1)).unwrap();
    let sp = SignedProposal {
        channel_id: fixed().channel_id(),
        proposals: vec![proposal],
        previous_turn: turn(1),
        turn_num: turn(2),
        signature: leader_key().sign(&forged.to_state(&fixed(), turn(2)).hash()),
    };
    let before = p.follower.clone();
    assert_eq!(
        p.follower.receive_proposal(&sp).unwrap_err(),
        ProposalError::InsufficientFunds { side: Side::Follower, needed: u(20), available: u(5) }.into()
    );
    assert_eq!(p.follower, before);
}

#[test]
fn follower_refuses_a_malformed_signature_without_panicking() {
    let mut p = Pair::new(100, 100);
    let sp = p.add(5, 30, l(), 10);
    // A malformed signature (r = 0) cannot even be held: the decoder refuses it.
    let mut json = serde_json::to_value(&sp).unwrap();
    let flat = json["signature"].as_str().unwrap().to_owned();
    json["signature"] = format!("0x{}{}", "00".repeat(32), &flat[66..]).into();
    assert!(serde_json::from_value::<SignedProposal>(json).unwrap_err().to_string().contains("group order"));
    // A well-formed signature by someone else is refused and changes nothing.
    let mut other = sp;
    other.signature = follower_key().sign(&B256::ZERO);
    let before = p.follower.clone();
    assert!(matches!(p.follower.receive_proposal(&other).unwrap_err(), ChannelError::WrongSigner { .. }));
    assert_eq!(p.follower, before);
}

#[test]
fn a_pending_duplicate_is_idempotent() {
    let mut p = Pair::new(100, 100);
    let sp = p.add(5, 30, l(), 10);
    p.follower_receives(&sp);
    let before = p.follower.clone();
    assert!(p.follower.receive_proposal(&sp).unwrap().is_empty());
    assert_eq!(p.follower, before);
}

#[test]
fn a_settled_duplicate_is_answered_with_the_latest_countersignature() {
    let mut p = Pair::new(100, 100);
    let a = p.add(5, 30, l(), 10);
    let b = p.add(6, 30, l(), 10);
    p.follower_receives(&a);
    p.follower_receives(&b);
    let c = p.countersign_all();
    let step = p.follower.receive_proposal(&a).unwrap();
    assert_eq!(one_message(&step), &LedgerMessage::Countersignature(c));
    assert!(step.events.is_empty());
}

#[test]
fn a_conflicting_proposal_at_a_pending_turn_is_refused() {
    let mut p = Pair::new(100, 100);
    let sp = p.add(5, 30, l(), 10);
    p.follower_receives(&sp);
    let mut other = sp;
    other.proposals[0] = add_p(6, 1, l(), 1);
    let before = p.follower.clone();
    assert_eq!(p.follower.receive_proposal(&other).unwrap_err(), ChannelError::ConflictingProposal(turn(2)));
    assert_eq!(p.follower, before);
}

#[test]
fn future_turns_are_buffered_then_applied_in_order() {
    let mut p = Pair::new(100, 100);
    let sps: Vec<_> = (1..=3).map(|i| p.add(i, 1, l(), 1)).collect();
    assert!(p.follower.receive_proposal(&sps[2]).unwrap().is_empty());
    assert!(p.follower.receive_proposal(&sps[1]).unwrap().is_empty());
    assert_eq!(p.follower.buffered(), 2);
    assert_eq!(p.follower.pending().len(), 0);
    let step = p.follower_receives(&sps[0]);
    let queued: Vec<_> = step
        .events
        .iter()
        .filter_map(|e| match e {
            LedgerEvent::ProposalQueued { signed, .. } => Some(signed.turn_num),
            _ => None,
        })
        .collect();
    assert_eq!(queued, vec![turn(2), turn(3), turn(4)]);
    assert_eq!(p.follower.buffered(), 0);
    assert_eq!(p.follower.latest_outcome(), p.leader.latest_outcome());
}

#[test]
fn a_reversed_stream_of_fifty_proposals_converges() {
    let mut p = Pair::new(1000, 1000);
    let sps: Vec<_> = (1..=50).map(|i| p.add(i, 3, if i % 2 == 0 { l() } else { f() }, 1)).collect();
    for sp in sps.iter().rev() {
        p.follower_receives(sp);
    }
    assert_eq!(p.follower.pending().len(), 50);
    let c = p.countersign_all();
    p.leader_receives(&LedgerMessage::Countersignature(c));
    p.assert_agree();
    assert_eq!(p.leader.consensus_outcome().guarantees().len(), 50);
}

#[test]
fn proposals_too_far_ahead_are_refused() {
    let mut p = Pair::new(100, 100);
    p.follower = p.follower.clone().with_reorder_capacity(2);
    let sps: Vec<_> = (1..=5).map(|i| p.add(i, 1, l(), 1)).collect();
    p.follower.receive_proposal(&sps[2]).unwrap();
    p.follower.receive_proposal(&sps[3]).unwrap();
    assert_eq!(p.follower.buffered(), 2);
    let before = p.follower.clone();
    assert_eq!(
        p.follower.receive_proposal(&sps[4]).unwrap_err(),
        ChannelError::TooFarAhead { turn: turn(6), latest: turn(1), capacity: 2 }
    );
    assert_eq!(p.follower, before);
    assert_eq!(p.follower.buffered(), 2);
}

#[test]
fn a_bad_buffered_proposal_is_discarded_and_the_good_one_accepted_later() {
    let mut p = Pair::new(100, 100);
    let a = p.add(1, 1, l(), 1);
    let b = p.add(2, 1, l(), 1);
    let mut bad_b = b.clone();
    bad_b.signature = stranger().sign(&B256::ZERO);
    p.follower.receive_proposal(&bad_b).unwrap();
    let step = p.follower_receives(&a);
    assert_eq!(step.events.iter().filter(|e| matches!(e, LedgerEvent::ProposalQueued { .. })).count(), 1);
    assert_eq!(p.follower.buffered(), 0);
    p.follower_receives(&b);
    assert_eq!(p.follower.latest_outcome(), p.leader.latest_outcome());
}

#[test]
fn a_follower_receives_no_countersignatures() {
    let mut p = Pair::new(100, 100);
    let c = p.follower.countersignature();
    assert!(matches!(
        p.follower.receive(&LedgerMessage::Countersignature(c)).unwrap_err(),
        ChannelError::UnexpectedMessage(_)
    ));
}

#[test]
fn countersign_next_checks_the_expected_proposal() {
    let mut p = Pair::new(100, 100);
    let sp = p.add(5, 30, l(), 10);
    assert_eq!(p.follower.countersign_next(&sp.proposals[0]).unwrap_err(), ChannelError::NothingPending);
    p.follower_receives(&sp);
    let before = p.follower.clone();
    assert_eq!(p.follower.countersign_next(&add_p(5, 31, l(), 10)).unwrap_err(), ChannelError::UnexpectedProposal);
    assert_eq!(p.follower, before);
    let step = p.follower.countersign_next(&sp.proposals[0]).unwrap();
    assert!(matches!(one_message(&step), LedgerMessage::Countersignature(c) if c.turn_num == turn(2)));
}

#[test]
fn countersign_with_nothing_pending_is_refused() {
    let mut p = Pair::new(100, 100);
    assert_eq!(p.follower.countersign_all().unwrap_err(), ChannelError::NothingPending);
    assert_eq!(p.follower.countersign_through(turn(2)).unwrap_err(), ChannelError::NothingPending);
    assert_eq!(p.follower.reject_next("no").unwrap_err(), ChannelError::NothingPending);
}

// ---------------------------------------------------------------- leader receives countersignatures

#[test]
fn one_countersignature_acknowledges_every_earlier_proposal() {
    let mut p = Pair::new(100, 100);
    let sps: Vec<_> = (1..=5).map(|i| p.add(i, 1, l(), 1)).collect();
    for sp in &sps {
        p.follower_receives(sp);
    }
    let c = p.countersign_all();
    assert_eq!(c.turn_num, turn(6));
    let step = p.leader_receives(&LedgerMessage::Countersignature(c));
    assert_eq!(step.events.iter().filter(|e| matches!(e, LedgerEvent::GuaranteeLocked { .. })).count(), 5);
    assert!(p.leader.queue().is_empty());
    p.assert_agree();
}

#[test]
fn a_partial_countersignature_leaves_the_rest_queued() {
    let mut p = Pair::new(100, 100);
    let sps: Vec<_> = (1..=4).map(|i| p.add(i, 1, l(), 1)).collect();
    for sp in &sps {
        p.follower_receives(sp);
    }
    let step = p.follower.countersign_through(turn(3)).unwrap();
    p.leader_receives(one_message(&step));
    assert_eq!(p.leader.consensus_turn(), turn(3));
    assert_eq!(p.leader.queue().len(), 2);
    assert_eq!(p.leader.resend().len(), 2);
    p.assert_agree();
}

#[test]
fn a_stale_countersignature_is_ignored() {
    let mut p = Pair::new(100, 100);
    let a = p.add(1, 1, l(), 1);
    p.follower_receives(&a);
    let c = p.countersign_all();
    p.leader_receives(&LedgerMessage::Countersignature(c));
    let before = p.leader.clone();
    assert!(p.leader.receive_countersignature(&c).unwrap().is_empty());
    assert_eq!(p.leader, before);
}

#[test]
fn a_countersignature_by_anyone_else_is_refused() {
    let mut p = Pair::new(100, 100);
    let a = p.add(1, 1, l(), 1);
    let hash = p.leader.queue().get(turn(2)).unwrap().state_hash;
    let before = p.leader.clone();
    for signer in [stranger(), leader_key()] {
        let c = Countersignature { channel_id: a.channel_id, turn_num: turn(2), signature: signer.sign(&hash) };
        assert_eq!(
            p.leader.receive_countersignature(&c).unwrap_err(),
            ChannelError::WrongSigner { expected: follower_key().address(), got: signer.address() }
        );
    }
    assert_eq!(p.leader, before);
}

#[test]
fn a_countersignature_on_another_state_is_refused() {
    let mut p = Pair::new(100, 100);
    p.add(1, 1, l(), 1);
    let c = Countersignature {
        channel_id: fixed().channel_id(),
        turn_num: turn(2),
        signature: follower_key().sign(&B256::repeat_byte(1)),
    };
    let before = p.leader.clone();
    assert!(matches!(p.leader.receive_countersignature(&c).unwrap_err(), ChannelError::WrongSigner { .. }));
    assert_eq!(p.leader, before);
}

#[test]
fn a_countersignature_for_an_unknown_turn_is_refused() {
    let mut p = Pair::new(100, 100);
    p.add(1, 1, l(), 1);
    let c = Countersignature {
        channel_id: fixed().channel_id(),
        turn_num: turn(9),
        signature: follower_key().sign(&B256::ZERO),
    };
    assert_eq!(
        p.leader.receive_countersignature(&c).unwrap_err(),
        ChannelError::UnknownTurn { turn: turn(9), latest: turn(2) }
    );
}

#[test]
fn a_countersignature_for_another_ledger_is_refused() {
    let mut p = Pair::new(100, 100);
    p.add(1, 1, l(), 1);
    let c = Countersignature { channel_id: t(1), turn_num: turn(2), signature: follower_key().sign(&B256::ZERO) };
    assert!(matches!(p.leader.receive_countersignature(&c).unwrap_err(), ChannelError::WrongChannel { .. }));
}

#[test]
fn a_leader_receives_no_proposals() {
    let mut p = Pair::new(100, 100);
    let sp = p.add(1, 1, l(), 1);
    assert!(matches!(p.leader.receive(&LedgerMessage::Proposal(sp)).unwrap_err(), ChannelError::UnexpectedMessage(_)));
}

// ---------------------------------------------------------------- loss and retransmission

#[test]
fn a_lost_proposal_is_recovered_by_resending() {
    let mut p = Pair::new(100, 100);
    let _lost = p.add(1, 1, l(), 1);
    let b = p.add(2, 1, l(), 1);
    p.follower_receives(&b); // buffered: turn 2 never arrived
    assert_eq!(p.follower.pending().len(), 0);
    for m in p.leader.resend() {
        let LedgerMessage::Proposal(sp) = m else { panic!() };
        p.follower_receives(&sp);
    }
    let c = p.countersign_all();
    p.leader_receives(&LedgerMessage::Countersignature(c));
    p.assert_agree();
    assert_eq!(p.leader.consensus_turn(), turn(3));
}

#[test]
fn a_lost_countersignature_is_recovered_by_resending_the_proposal() {
    let mut p = Pair::new(100, 100);
    let a = p.add(1, 1, l(), 1);
    p.follower_receives(&a);
    let _lost = p.countersign_all();
    assert_eq!(p.leader.consensus_turn(), turn(1));
    let resent = p.leader.resend();
    let reply = p.follower.receive(&resent[0]).unwrap();
    p.leader_receives(one_message(&reply));
    p.assert_agree();
    assert_eq!(p.leader.consensus_turn(), turn(2));
}

// ---------------------------------------------------------------- rejection

fn rejection_of(step: &Step) -> Rejection {
    match one_message(step) {
        LedgerMessage::Rejection(r) => r.clone(),
        other => panic!("expected a rejection, got {other:?}"),
    }
}

#[test]
fn a_rejected_proposal_does_not_block_the_ones_after_it() {
    let mut p = Pair::new(100, 100);
    let sps: Vec<_> = (1..=3).map(|i| p.add(i, 10, l(), 5)).collect();
    for sp in &sps {
        p.follower_receives(sp);
    }
    let step = p.follower.reject_next("unknown virtual channel").unwrap();
    let rejection = rejection_of(&step);
    assert_eq!(rejection.turn_num, turn(2));
    assert_eq!(p.follower.pending().len(), 0);
    let step = p.leader_receives(&LedgerMessage::Rejection(rejection));
    assert!(
        matches!(&step.events[0], LedgerEvent::ProposalRejected { refused, .. } if refused[0].target() == Some(t(1)))
    );
    assert_eq!(step.messages.len(), 1, "the two later changes are proposed again, together");
    let resent: Vec<_> = step
        .messages
        .iter()
        .map(|m| match m {
            LedgerMessage::Proposal(sp) => sp.clone(),
            _ => panic!(),
        })
        .collect();
    // A fresh turn, above every turn the leader signed (2, 3 and 4): never 2 or 3 again.
    assert_eq!((resent[0].turn_num, resent[0].previous_turn), (turn(5), turn(1)));
    assert_eq!(resent[0].proposals.iter().map(|p| p.target()).collect::<Vec<_>>(), vec![Some(t(2)), Some(t(3))]);
    for sp in &resent {
        p.follower_receives(sp);
    }
    let c = p.countersign_all();
    p.leader_receives(&LedgerMessage::Countersignature(c));
    p.assert_agree();
    assert!(!p.leader.is_locked(&t(1)));
    assert!(p.leader.is_locked(&t(2)) && p.leader.is_locked(&t(3)));
    assert_eq!(p.leader.guarantees().status(&t(1)), None);
}

#[test]
fn later_proposals_that_no_longer_apply_are_dropped() {
    let mut p = Pair::new(100, 100);
    let a = p.add(1, 10, l(), 5);
    let b = p.remove(1, 5);
    let c = p.add(2, 10, l(), 5);
    for sp in [&a, &b, &c] {
        p.follower_receives(sp);
    }
    let r = rejection_of(&p.follower.reject_next("no").unwrap());
    let step = p.leader_receives(&LedgerMessage::Rejection(r));
    assert!(step
        .events
        .iter()
        .any(|e| matches!(e, LedgerEvent::ProposalDropped { proposal, .. } if *proposal == b.proposals[0])));
    assert_eq!(step.messages.len(), 1);
    assert_eq!(p.leader.latest_turn(), turn(5), "re-proposed above turns 2..=4");
    assert_eq!(p.leader.guarantees().status(&t(2)), Some(GuaranteeStatus::Proposed));
}

#[test]
fn a_rejection_after_partial_countersigning_keeps_the_settled_part() {
    let mut p = Pair::new(100, 100);
    let sps: Vec<_> = (1..=3).map(|i| p.add(i, 10, l(), 5)).collect();
    for sp in &sps {
        p.follower_receives(sp);
    }
    let mut policy =
        |prop: &Proposal| if prop.target() == Some(t(2)) { Approval::Reject("t2".into()) } else { Approval::Approve };
    let step = p.follower.decide(&mut policy);
    assert_eq!(step.messages.len(), 2, "countersignature for turn 2, then a rejection of turn 3");
    for m in &step.messages {
        let s = p.leader_receives(m);
        for m in s.messages {
            let LedgerMessage::Proposal(sp) = m else { panic!() };
            p.follower_receives(&sp);
        }
    }
    let c = p.countersign_all();
    p.leader_receives(&LedgerMessage::Countersignature(c));
    p.assert_agree();
    let locked: Vec<_> = p.leader.consensus_outcome().guarantees().map(|g| g.target()).collect();
    assert_eq!(locked, vec![t(1), t(3)]);
}

#[test]
fn decide_defers_without_signing() {
    let mut p = Pair::new(100, 100);
    let sp = p.add(1, 10, l(), 5);
    p.follower_receives(&sp);
    let before = p.follower.clone();
    assert!(p.follower.decide(&mut |_: &Proposal| Approval::Defer).is_empty());
    assert_eq!(p.follower, before);
}

#[test]
fn a_stale_rejection_is_refused() {
    let mut p = Pair::new(100, 100);
    let a = p.add(1, 10, l(), 5);
    p.follower_receives(&a);
    let mut r = rejection_of(&p.follower.reject_next("no").unwrap());
    r.state_hash = B256::repeat_byte(3);
    let before = p.leader.clone();
    assert_eq!(p.leader.receive_rejection(&r).unwrap_err(), ChannelError::StaleRejection(turn(2)));
    r.turn_num = turn(1);
    assert_eq!(p.leader.receive_rejection(&r).unwrap_err(), ChannelError::StaleRejection(turn(1)));
    r.turn_num = turn(5);
    assert!(matches!(p.leader.receive_rejection(&r).unwrap_err(), ChannelError::UnknownTurn { .. }));
    assert_eq!(p.leader, before);
}

#[test]
fn a_rejection_not_signed_by_the_follower_is_refused() {
    let mut p = Pair::new(100, 100);
    let a = p.add(1, 10, l(), 5);
    p.follower_receives(&a);
    let mut r = rejection_of(&p.follower.reject_next("no").unwrap());
    r.signature = stranger().sign(&Rejection::signing_hash(r.channel_id, r.turn_num, r.state_hash, &r.refused));
    let before = p.leader.clone();
    assert!(matches!(p.leader.receive_rejection(&r).unwrap_err(), ChannelError::WrongSigner { .. }));
    // A follower's *state* signature cannot be passed off as a rejection.
    r.signature = follower_key().sign(&r.state_hash);
    assert!(matches!(p.leader.receive_rejection(&r).unwrap_err(), ChannelError::WrongSigner { .. }));
    assert_eq!(p.leader, before);
}

#[test]
fn rejection_reasons_are_bounded() {
    let mut p = Pair::new(100, 100);
    let a = p.add(1, 10, l(), 5);
    p.follower_receives(&a);
    let mut r = rejection_of(&p.follower.reject_next(&"é".repeat(500)).unwrap());
    assert!(r.reason.len() <= MAX_REASON_LEN);
    r.reason = "x".repeat(MAX_REASON_LEN + 1);
    assert_eq!(p.leader.receive_rejection(&r).unwrap_err(), ChannelError::ReasonTooLong(MAX_REASON_LEN + 1));
    r.channel_id = t(9);
    assert!(matches!(p.leader.receive_rejection(&r).unwrap_err(), ChannelError::WrongChannel { .. }));
}

#[test]
fn a_retransmitted_rejected_proposal_gets_the_rejection_again() {
    let mut p = Pair::new(100, 100);
    let a = p.add(1, 10, l(), 5);
    p.follower_receives(&a);
    let r = rejection_of(&p.follower.reject_next("no").unwrap());
    let before = p.follower.clone();
    let step = p.follower.receive_proposal(&a).unwrap();
    assert_eq!(rejection_of(&step), r);
    assert!(step.events.is_empty());
    assert_eq!(p.follower, before);
}

#[test]
fn an_old_branch_proposal_after_a_rejection_cannot_sneak_in() {
    let mut p = Pair::new(100, 100);
    let a = p.add(1, 10, l(), 5);
    let b = p.add(2, 10, l(), 5);
    p.follower_receives(&a);
    let r = rejection_of(&p.follower.reject_next("no").unwrap());
    let step = p.leader_receives(&LedgerMessage::Rejection(r));
    let LedgerMessage::Proposal(b2) = one_message(&step) else { panic!() };
    p.follower_receives(b2);
    // The old-branch proposal for turn 3 arrives late: it conflicts with nothing pending but
    // is built on the rejected state, so it cannot verify.
    assert_eq!(b.turn_num, turn(3));
    let before = p.follower.clone();
    assert!(p.follower.receive_proposal(&b).is_err());
    assert_eq!(p.follower, before);
    let c = p.countersign_all();
    p.leader_receives(&LedgerMessage::Countersignature(c));
    p.assert_agree();
}

// ---------------------------------------------------------------- guarantee lifecycle (ADR-0014)

#[test]
fn a_guarantee_is_locked_only_in_the_consensus_state() {
    let mut p = Pair::new(100, 100);
    let a = p.add(5, 10, l(), 5);
    assert_eq!(p.leader.guarantees().status(&t(5)), Some(GuaranteeStatus::Proposed));
    assert!(!p.leader.is_locked(&t(5)));
    p.follower_receives(&a);
    assert!(!p.follower.is_locked(&t(5)), "pending is not locked");
    p.round(&a);
    assert_eq!(p.leader.guarantees().status(&t(5)), Some(GuaranteeStatus::Locked));
    assert!(p.leader.is_locked(&t(5)) && p.follower.is_locked(&t(5)));
    let r = p.remove(5, 2);
    assert_eq!(p.leader.guarantees().status(&t(5)), Some(GuaranteeStatus::RemovalProposed));
    assert!(p.leader.is_locked(&t(5)), "still locked while the removal is only proposed");
    p.round(&r);
    assert_eq!(p.leader.guarantees().status(&t(5)), None);
    assert!(!p.leader.is_locked(&t(5)));
    assert!(p.leader.guarantees().is_empty());
    assert_eq!(p.leader.consensus_outcome(), &outcome(97, 103));
}

#[test]
fn guarantee_events_follow_the_lifecycle() {
    let mut p = Pair::new(100, 100);
    let a = p.add(5, 10, l(), 5);
    p.round(&a);
    let r = p.remove(5, 2);
    p.round(&r);
    let names: Vec<_> = p
        .leader_events
        .iter()
        .map(|e| match e {
            LedgerEvent::ProposalQueued { .. } => "queued",
            LedgerEvent::GuaranteeProposed { .. } => "proposed",
            LedgerEvent::GuaranteeLocked { .. } => "locked",
            LedgerEvent::ConsensusAdvanced { .. } => "consensus",
            LedgerEvent::GuaranteeRemovalProposed { .. } => "removal",
            LedgerEvent::GuaranteeReleased { .. } => "released",
            _ => "other",
        })
        .collect();
    assert_eq!(names, ["queued", "proposed", "locked", "consensus", "queued", "removal", "released", "consensus"]);
    assert!(p
        .follower_events
        .iter()
        .any(|e| matches!(e, LedgerEvent::GuaranteeReleased { left_amount, .. } if *left_amount == u(2))));
}

#[test]
fn interleaved_adds_and_removes_on_many_targets_converge() {
    let mut p = Pair::new(10_000, 10_000);
    for round in 0..4u8 {
        let mut batch = Vec::new();
        for i in 1..=20u8 {
            let target = round * 20 + i;
            batch.push(p.add(target, 7, if i % 3 == 0 { f() } else { l() }, 3));
            if round > 0 {
                let old = (round - 1) * 20 + i;
                batch.push(p.remove(old, u64::from(i % 8)));
            }
        }
        for sp in batch.iter().rev() {
            p.follower_receives(sp);
            assert_conserved(p.follower.latest_outcome(), p.total());
        }
        let c = p.countersign_all();
        p.leader_receives(&LedgerMessage::Countersignature(c));
        p.assert_agree();
        assert_eq!(p.leader.consensus_outcome().guarantees().len(), 20);
    }
}

// ---------------------------------------------------------------- consensus state, events, replay

#[test]
fn the_consensus_state_is_fully_signed_and_a_ledger_again() {
    let mut p = Pair::new(100, 100);
    let a = p.add(5, 10, l(), 5);
    p.round(&a);
    let s = p.leader.consensus_state();
    assert!(s.is_fully_signed());
    assert_eq!(s.state().turn_num, turn(2));
    let mut fresh = SignedState::new(s.state().clone());
    for sig in s.signatures().iter().flatten() {
        fresh.add_signature(*sig).unwrap();
    }
    assert!(fresh.is_fully_signed());
    assert_eq!(&LedgerOutcome::from_exit(&s.state().outcome).unwrap(), p.leader.consensus_outcome());
    let again = LeaderChannel::new(leader_key(), &s).unwrap();
    assert_eq!(again.consensus_state(), s);
}

fn busy_pair() -> Pair {
    let mut p = Pair::new(1000, 1000);
    let sps: Vec<_> = (1..=6).map(|i| p.add(i, 10, l(), 4)).collect();
    for sp in &sps[..4] {
        p.follower_receives(sp);
    }
    let step = p.follower.countersign_through(turn(3)).unwrap();
    p.follower_events.extend(step.events);
    p.leader_receives(&step.messages[0]);
    let step = p.follower.reject_next("no").unwrap();
    p.follower_events.extend(step.events);
    let again = p.leader_receives(&step.messages[0]);
    for m in again.messages {
        let LedgerMessage::Proposal(sp) = m else { panic!() };
        p.follower_receives(&sp);
    }
    let r = p.remove(1, 2);
    p.follower_receives(&r);
    let c = p.countersign_all();
    p.leader_receives(&LedgerMessage::Countersignature(c));
    p.add(40, 1, f(), 1);
    p
}

#[test]
fn replaying_the_leaders_events_rebuilds_the_leader() {
    let p = busy_pair();
    let replayed = LeaderChannel::replay(leader_key(), &p.initial, &p.leader_events).unwrap();
    assert_eq!(replayed, p.leader);
    assert_eq!(replayed.consensus_state(), p.leader.consensus_state());
    assert_eq!(replayed.resend(), p.leader.resend());
}

#[test]
fn replaying_the_followers_events_rebuilds_the_follower() {
    let p = busy_pair();
    let replayed = FollowerChannel::replay(follower_key(), &p.initial, &p.follower_events).unwrap();
    assert_eq!(replayed, p.follower);
    assert_eq!(replayed.countersignature(), p.follower.countersignature());
}

#[test]
fn replay_refuses_events_out_of_order() {
    let p = busy_pair();
    let mut events = p.leader_events.clone();
    let first = events.iter().position(|e| matches!(e, LedgerEvent::ProposalQueued { .. })).unwrap();
    events.remove(first);
    assert!(LeaderChannel::replay(leader_key(), &p.initial, &events).is_err());
    let consensus_only: Vec<_> =
        p.leader_events.iter().filter(|e| matches!(e, LedgerEvent::ConsensusAdvanced { .. })).cloned().collect();
    assert!(matches!(
        FollowerChannel::replay(follower_key(), &p.initial, &consensus_only),
        Err(ChannelError::Replay(_))
    ));
}

#[test]
fn events_and_messages_survive_json() {
    let p = busy_pair();
    let text = serde_json::to_string(&p.leader_events).unwrap();
    let back: Vec<LedgerEvent> = serde_json::from_str(&text).unwrap();
    assert_eq!(back, p.leader_events);
    for m in p.leader.resend() {
        let text = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<LedgerMessage>(&text).unwrap(), m);
    }
    let c = LedgerMessage::Countersignature(p.follower.countersignature());
    let mut v = serde_json::to_value(&c).unwrap();
    v["countersignature"]["extra"] = 1.into();
    assert!(serde_json::from_value::<LedgerMessage>(v).is_err(), "unknown fields are refused");
}

#[test]
fn the_consensus_channel_enum_dispatches_to_its_role() {
    let s = signed_state(&outcome(100, 100), 1);
    let mut leader = ConsensusChannel::new(leader_key(), &s).unwrap();
    let mut follower = ConsensusChannel::new(follower_key(), &s).unwrap();
    let ConsensusChannel::Leader(l) = &mut leader else { panic!() };
    let step = l.add_guarantee(t(1), u(10), f(), l_dest(), u(3)).unwrap();
    assert!(leader.has_pending());
    assert_eq!(step.messages[0].channel_id(), fixed().channel_id());
    follower.receive(&step.messages[0]).unwrap();
    assert!(follower.has_pending());
    let ConsensusChannel::Follower(fc) = &mut follower else { panic!() };
    let reply = fc.countersign_all().unwrap();
    assert_eq!(reply.messages[0].channel_id(), fixed().channel_id());
    leader.receive(&reply.messages[0]).unwrap();
    for c in [&leader, &follower] {
        assert!(!c.has_pending());
        assert!(c.is_locked(&t(1)));
        assert_eq!(c.guarantees().status(&t(1)), Some(GuaranteeStatus::Locked));
        assert_eq!(c.consensus_outcome().guarantees().len(), 1);
        assert_eq!(c.consensus_turn(), turn(2));
    }
    assert_eq!(leader.consensus_state(), follower.consensus_state());
    assert!(leader.receive(&step.messages[0]).is_err(), "a leader refuses proposals");
    let r = LedgerMessage::Rejection(Rejection {
        channel_id: t(1),
        turn_num: turn(2),
        state_hash: B256::ZERO,
        refused: vec![],
        reason: String::new(),
        signature: follower_key().sign(&B256::ZERO),
    });
    assert_eq!(r.channel_id(), t(1));
}

fn l_dest() -> B256 {
    l()
}

#[test]
fn the_benchmark_workload_runs_real_rounds() {
    let w = nitro_core::bench::LedgerWorkload::new(4, 3);
    assert_eq!(w.rounds(), 8);
    assert_eq!(w.standing_guarantees(), 3);
    let (_, leader) = w.run_channels();
    assert_eq!(leader.consensus_turn(), turn(9), "8 rounds after turn 1");
    assert_eq!(leader.consensus_outcome().guarantees().len(), 3, "adds and removes cancel out");
    let states = w.states();
    assert_eq!(states.len(), 8);
    assert_eq!(states.last().unwrap().hash(), leader.consensus_state().hash(), "the floor uses the same states");
    assert!(w.run_floor(&states) > std::time::Duration::ZERO);
}

/// One state for many changes: one signature, one countersignature. A change that does not
/// apply is left out (and reported); one the follower refuses is named in its rejection and
/// the rest go out again together at a fresh turn.
#[test]
fn a_batch_is_one_state_and_one_refused_change_does_not_block_the_others() {
    let mut p = Pair::new(100, 100);
    let too_big = add_p(9, 500, l(), 1);
    let step = p
        .leader
        .propose_batch(vec![add_p(1, 10, l(), 5), too_big, add_p(2, 10, l(), 5), add_p(3, 10, l(), 5)])
        .unwrap();
    assert_eq!(step.messages.len(), 1, "one proposal");
    assert_eq!(step.signed.len(), 1, "one signature for three changes");
    assert!(step
        .events
        .iter()
        .any(|e| matches!(e, LedgerEvent::ProposalDropped { proposal, .. } if *proposal == too_big)));
    let LedgerMessage::Proposal(sp) = step.messages[0].clone() else { panic!() };
    assert_eq!(sp.proposals.len(), 3);
    p.follower_receives(&sp);
    // The follower objects to the change for target 2 only.
    let mut policy =
        |prop: &Proposal| if prop.target() == Some(t(2)) { Approval::Reject("t2".into()) } else { Approval::Approve };
    let step = p.follower.decide(&mut policy);
    let LedgerMessage::Rejection(r) = one_message(&step).clone() else { panic!("{step:?}") };
    assert_eq!(r.refused, vec![1]);
    let again = p.leader_receives(&LedgerMessage::Rejection(r));
    let LedgerMessage::Proposal(sp) = one_message(&again).clone() else { panic!() };
    assert_eq!(sp.proposals.iter().map(|c| c.target()).collect::<Vec<_>>(), vec![Some(t(1)), Some(t(3))]);
    assert!(sp.turn_num > turn(2), "a fresh turn");
    p.round(&sp);
    p.assert_agree();
    assert!(p.leader.is_locked(&t(1)) && p.leader.is_locked(&t(3)) && !p.leader.is_locked(&t(2)));
    assert_eq!(p.total(), u(200));
    // Empty and oversized batches are refused; a follower refuses one too.
    assert_eq!(p.leader.propose_batch(vec![]).unwrap_err(), ChannelError::BatchSize(0));
    let mut huge = sp.clone();
    huge.proposals = vec![add_p(7, 1, l(), 1); nitro_core::MAX_BATCH + 1];
    huge.previous_turn = p.follower.latest_turn();
    huge.turn_num = huge.previous_turn + turn(1);
    assert_eq!(p.follower.receive_proposal(&huge).unwrap_err(), ChannelError::BatchSize(nitro_core::MAX_BATCH + 1));
}

/// More than a batch's worth of changes go out as consecutive proposals.
#[test]
fn a_large_batch_is_split_into_proposals_of_at_most_max_batch_changes() {
    let mut p = Pair::new(10_000, 10_000);
    let changes: Vec<Proposal> = (0..300u32)
        .map(|i| {
            let g = Guarantee::new(B256::from(U256::from(i + 1)), u(1), l(), f()).unwrap();
            Proposal::Add { guarantee: g, left_deposit: u(1), asset: nitro_core::Address::ZERO }
        })
        .collect();
    let step = p.leader.propose_batch(changes).unwrap();
    assert_eq!(step.messages.len(), 2);
    for m in &step.messages {
        let LedgerMessage::Proposal(sp) = m else { panic!() };
        assert!(sp.proposals.len() <= nitro_core::MAX_BATCH);
        p.follower_receives(sp);
    }
    let c = p.countersign_all();
    p.leader_receives(&LedgerMessage::Countersignature(c));
    p.assert_agree();
    assert_eq!(p.leader.consensus_outcome().guarantees().len(), 300);
}
