//! Unit tests of the ledger outcome and its proposals.

use super::*;

fn dest(n: u8) -> Destination {
    crate::destination_of(Address::repeat_byte(n))
}

fn outcome(leader: u64, follower: u64) -> LedgerOutcome {
    LedgerOutcome::new(
        Address::ZERO,
        Balance { destination: dest(1), amount: U256::from(leader) },
        Balance { destination: dest(2), amount: U256::from(follower) },
    )
    .unwrap()
}

fn add(target: u8, amount: u64, left: u8, left_deposit: u64) -> Proposal {
    let right = if left == 1 { 2 } else { 1 };
    Proposal::Add {
        guarantee: Guarantee::new(B256::repeat_byte(target), U256::from(amount), dest(left), dest(right)).unwrap(),
        left_deposit: U256::from(left_deposit),
        asset: Address::ZERO,
    }
}

#[test]
fn add_takes_left_deposit_from_left_and_rest_from_right() {
    let mut o = outcome(10, 10);
    o.apply(&add(7, 5, 2, 3)).unwrap();
    assert_eq!(o.follower().amount, U256::from(7));
    assert_eq!(o.leader().amount, U256::from(8));
    assert_eq!(o.total(), Some(U256::from(20)));
}

#[test]
fn remove_pays_left_amount_to_left() {
    let mut o = outcome(10, 10);
    o.apply(&add(7, 6, 1, 6)).unwrap();
    o.apply(&Proposal::Remove { target: B256::repeat_byte(7), left_amount: U256::from(1) }).unwrap();
    assert_eq!((o.leader().amount, o.follower().amount), (U256::from(5), U256::from(15)));
    assert_eq!(o.guarantees().len(), 0);
}

#[test]
fn refusals_leave_the_outcome_unchanged() {
    let mut o = outcome(10, 10);
    o.apply(&add(7, 6, 1, 6)).unwrap();
    let before = o.clone();
    let refusals = [
        (add(7, 1, 1, 1), ProposalError::DuplicateTarget(B256::repeat_byte(7))),
        (add(8, 5, 1, 6), ProposalError::DepositExceedsAmount { left_deposit: U256::from(6), amount: U256::from(5) }),
        (
            add(8, 5, 1, 5),
            ProposalError::InsufficientFunds { side: Side::Leader, needed: U256::from(5), available: U256::from(4) },
        ),
        (
            add(8, 11, 1, 0),
            ProposalError::InsufficientFunds {
                side: Side::Follower,
                needed: U256::from(11),
                available: U256::from(10),
            },
        ),
        (
            Proposal::Remove { target: B256::repeat_byte(9), left_amount: U256::ZERO },
            ProposalError::TargetNotFound(B256::repeat_byte(9)),
        ),
        (
            Proposal::Remove { target: B256::repeat_byte(7), left_amount: U256::from(7) },
            ProposalError::LeftAmountExceedsAmount { left_amount: U256::from(7), amount: U256::from(6) },
        ),
    ];
    for (p, e) in refusals {
        assert_eq!(o.apply(&p), Err(e));
        assert_eq!(o, before);
    }
    let stranger = Guarantee::new(B256::repeat_byte(8), U256::from(1), dest(1), dest(3)).unwrap();
    assert_eq!(
        o.apply(&Proposal::Add { guarantee: stranger, left_deposit: U256::ZERO, asset: Address::ZERO }),
        Err(ProposalError::NotLedgerParties(B256::repeat_byte(8)))
    );
    assert_eq!(o, before);
}

#[test]
fn guarantee_invariants() {
    assert_eq!(Guarantee::new(B256::ZERO, U256::ZERO, dest(1), dest(2)), Err(ProposalError::ZeroAmount(B256::ZERO)));
    assert_eq!(
        Guarantee::new(B256::ZERO, U256::from(1), dest(1), dest(1)),
        Err(ProposalError::SameLeftAndRight(B256::ZERO))
    );
    let json = serde_json::json!({"target": format!("0x{}", "00".repeat(32)), "amount": "0x0",
        "left": format!("0x{}", "00".repeat(32)), "right": format!("0x{}", "11".repeat(32))});
    assert!(serde_json::from_value::<Guarantee>(json).is_err());
}

#[test]
fn exit_round_trip_and_state_hash_shortcut() {
    let mut o = outcome(100, 100);
    for t in [9u8, 3, 5] {
        o.apply(&add(t, 10, 1 + t % 2, 4)).unwrap();
    }
    let exit = o.to_exit();
    let targets: Vec<_> = exit.0[0].allocations[2..].iter().map(|a| a.destination).collect();
    assert!(targets.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(LedgerOutcome::from_exit(&exit).unwrap(), o);
    let fixed = FixedPart {
        participants: vec![Address::repeat_byte(1), Address::repeat_byte(2)],
        channel_nonce: 3,
        app_definition: Address::repeat_byte(4),
        challenge_duration: crate::U48::from(60),
    };
    let turn = crate::U48::from(7);
    assert_eq!(o.state_hash(fixed.channel_id(), turn), o.to_state(&fixed, turn).hash());
}

#[test]
fn malformed_exits_are_refused() {
    let mut o = outcome(100, 100);
    o.apply(&add(9, 10, 1, 4)).unwrap();
    o.apply(&add(3, 10, 2, 4)).unwrap();
    let good = o.to_exit();
    let check = |f: &dyn Fn(&mut Exit), expect: &dyn Fn(&OutcomeError) -> bool| {
        let mut e = good.clone();
        f(&mut e);
        let err = LedgerOutcome::from_exit(&e).unwrap_err();
        assert!(expect(&err), "unexpected {err:?}");
    };
    check(&|e| e.0.push(e.0[0].clone()), &|e| matches!(e, OutcomeError::AssetOrder(1)));
    check(&|e| e.0.clear(), &|e| matches!(e, OutcomeError::AssetCount(0)));
    check(&|e| e.0[0].asset_metadata.asset_type = 1, &|e| matches!(e, OutcomeError::AssetMetadata));
    check(&|e| e.0[0].allocations.truncate(1), &|e| matches!(e, OutcomeError::MissingBalances));
    check(&|e| e.0[0].allocations[1].allocation_type = AllocationType(2), &|e| matches!(e, OutcomeError::NotSimple(1)));
    check(&|e| e.0[0].allocations[2].allocation_type = AllocationType(1), &|e| {
        matches!(e, OutcomeError::GuaranteeType { index: 2, .. })
    });
    check(&|e| e.0[0].allocations[2].metadata = Bytes::from(vec![0u8; 63]), &|e| {
        matches!(e, OutcomeError::GuaranteeMetadata(2))
    });
    check(&|e| e.0[0].allocations.swap(2, 3), &|e| matches!(e, OutcomeError::GuaranteeOrder(3)));
    check(&|e| e.0[0].allocations[3].destination = e.0[0].allocations[2].destination, &|e| {
        matches!(e, OutcomeError::GuaranteeOrder(3))
    });
    check(&|e| e.0[0].allocations[2].amount = U256::ZERO, &|e| matches!(e, OutcomeError::Guarantee { .. }));
    check(&|e| e.0[0].allocations[1].destination = e.0[0].allocations[0].destination, &|e| {
        matches!(e, OutcomeError::SameParties)
    });
    check(&|e| e.0[0].allocations[0].amount = U256::MAX, &|e| matches!(e, OutcomeError::Overflow));
    check(&|e| e.0[0].allocations[2].metadata = GuaranteeMetadata { left: dest(1), right: dest(5) }.encode(), &|e| {
        matches!(e, OutcomeError::Guarantee { error: ProposalError::NotLedgerParties(_), .. })
    });
}

fn reserve(side: Side, amount: u64) -> Proposal {
    Proposal::Reserve { asset: Address::ZERO, side, amount: U256::from(amount) }
}

fn credit(side: Side, amount: u64) -> Proposal {
    Proposal::Credit { asset: Address::ZERO, side, amount: U256::from(amount) }
}

#[test]
fn reserve_appends_a_slot_and_credit_folds_it_into_the_balance() {
    let mut o = outcome(10, 10);
    o.apply(&add(7, 6, 1, 6)).unwrap();
    o.apply(&reserve(Side::Follower, 5)).unwrap();
    assert_eq!(o.slot(), Some(Slot { side: Side::Follower, amount: U256::from(5) }));
    assert_eq!(o.total(), Some(U256::from(25)));
    assert_eq!(o.total_without_slot(), Some(U256::from(20)));
    // Add and Remove leave the slot (and the total) alone.
    o.apply(&add(8, 2, 2, 1)).unwrap();
    assert_eq!(o.total(), Some(U256::from(25)));
    o.apply(&credit(Side::Follower, 5)).unwrap();
    assert_eq!(o.slot(), None);
    assert_eq!((o.leader().amount, o.follower().amount), (U256::from(3), U256::from(14)));
    assert_eq!(o.total(), Some(U256::from(25)));
    o.apply(&reserve(Side::Leader, 1)).unwrap();
    o.apply(&Proposal::CancelReserve { asset: Address::ZERO, side: Side::Leader }).unwrap();
    assert_eq!(o.total(), Some(U256::from(25)));
}

#[test]
fn top_up_refusals_leave_the_outcome_unchanged() {
    let mut o = outcome(10, 10);
    let five = U256::from(5);
    let token = Address::repeat_byte(9);
    let refused_without_slot = [
        (reserve(Side::Leader, 0), ProposalError::ZeroTopUp),
        (Proposal::Reserve { asset: token, side: Side::Leader, amount: five }, ProposalError::UnknownAsset(token)),
        (credit(Side::Leader, 5), ProposalError::NoSlot),
        (Proposal::CancelReserve { asset: Address::ZERO, side: Side::Leader }, ProposalError::NoSlot),
        (Proposal::Reserve { asset: Address::ZERO, side: Side::Leader, amount: U256::MAX }, ProposalError::Overflow),
    ];
    let before = o.clone();
    for (p, e) in refused_without_slot {
        assert_eq!(o.apply(&p), Err(e));
        assert_eq!(o, before);
    }
    o.apply(&reserve(Side::Follower, 5)).unwrap();
    let slot = Slot { side: Side::Follower, amount: five };
    let before = o.clone();
    let refused_with_slot = [
        (reserve(Side::Leader, 1), ProposalError::SlotPending { side: Side::Follower, amount: five }),
        (credit(Side::Leader, 5), ProposalError::SlotMismatch { slot, side: Side::Leader, amount: five }),
        (credit(Side::Follower, 4), ProposalError::SlotMismatch { slot, side: Side::Follower, amount: U256::from(4) }),
        (Proposal::Credit { asset: token, side: Side::Follower, amount: five }, ProposalError::UnknownAsset(token)),
        (
            Proposal::CancelReserve { asset: Address::ZERO, side: Side::Leader },
            ProposalError::SlotMismatch { slot, side: Side::Leader, amount: five },
        ),
    ];
    for (p, e) in refused_with_slot {
        assert_eq!(o.apply(&p), Err(e));
        assert_eq!(o, before);
    }
}

#[test]
fn slot_is_the_last_allocation_of_the_exit_and_parses_back() {
    let mut o = outcome(100, 100);
    for t in [9u8, 3] {
        o.apply(&add(t, 10, 1 + t % 2, 4)).unwrap();
    }
    o.apply(&reserve(Side::Leader, 7)).unwrap();
    let exit = o.to_exit();
    let allocations = &exit.0[0].allocations;
    assert_eq!(allocations.len(), 5);
    let last = &allocations[4];
    assert_eq!((last.destination, last.amount), (dest(1), U256::from(7)));
    assert_eq!((last.allocation_type, last.metadata.is_empty()), (AllocationType::SIMPLE, true));
    assert_eq!(LedgerOutcome::from_exit(&exit).unwrap(), o);
    let fixed = FixedPart {
        participants: vec![Address::repeat_byte(1), Address::repeat_byte(2)],
        channel_nonce: 3,
        app_definition: Address::repeat_byte(4),
        challenge_duration: crate::U48::from(60),
    };
    let turn = crate::U48::from(7);
    assert_eq!(o.state_hash(fixed.channel_id(), turn), o.to_state(&fixed, turn).hash());
    // Strict parsing: a slot that is not last, of zero, to a stranger, or with metadata.
    let refused = |f: &dyn Fn(&mut Exit)| {
        let mut e = exit.clone();
        f(&mut e);
        LedgerOutcome::from_exit(&e).unwrap_err()
    };
    assert_eq!(refused(&|e| e.0[0].allocations.swap(3, 4)), OutcomeError::Slot(3));
    assert_eq!(refused(&|e| e.0[0].allocations[4].amount = U256::ZERO), OutcomeError::Slot(4));
    assert_eq!(refused(&|e| e.0[0].allocations[4].destination = dest(3)), OutcomeError::Slot(4));
    assert_eq!(refused(&|e| e.0[0].allocations[4].metadata = Bytes::from(vec![1u8])), OutcomeError::Slot(4));
    assert_eq!(
        refused(&|e| {
            let extra = e.0[0].allocations[4].clone();
            e.0[0].allocations.push(extra);
        }),
        OutcomeError::Slot(4)
    );
    assert_eq!(refused(&|e| e.0[0].allocations[4].amount = U256::MAX), OutcomeError::Overflow);
}
