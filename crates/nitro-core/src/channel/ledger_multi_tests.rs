//! Unit tests of multi-asset ledger outcomes (ADR-0022 §1): per-asset routing of proposals,
//! the exit encoding, and strict parsing.

use super::*;

fn dest(n: u8) -> Destination {
    crate::destination_of(Address::repeat_byte(n))
}

const TOKEN: Address = Address::repeat_byte(0x70);

fn asset(asset: Address, leader: u64, follower: u64) -> AssetOutcome {
    AssetOutcome::new(
        asset,
        Balance { destination: dest(1), amount: U256::from(leader) },
        Balance { destination: dest(2), amount: U256::from(follower) },
    )
    .unwrap()
}

/// ETH 10/10, TOKEN 100/50.
fn two_assets() -> LedgerOutcome {
    LedgerOutcome::from_assets(vec![asset(Address::ZERO, 10, 10), asset(TOKEN, 100, 50)]).unwrap()
}

fn add_in(asset: Address, target: u8, amount: u64, left_deposit: u64) -> Proposal {
    Proposal::Add {
        guarantee: Guarantee::new(B256::repeat_byte(target), U256::from(amount), dest(1), dest(2)).unwrap(),
        left_deposit: U256::from(left_deposit),
        asset,
    }
}

fn totals(o: &LedgerOutcome) -> Vec<U256> {
    o.assets().iter().map(|a| a.total().unwrap()).collect()
}

#[test]
fn proposals_act_on_their_asset_only() {
    let mut o = two_assets();
    o.apply(&add_in(TOKEN, 7, 30, 20)).unwrap();
    let token = o.exit(TOKEN).unwrap();
    assert_eq!((token.leader().amount, token.follower().amount), (U256::from(80), U256::from(40)));
    assert_eq!(o.exit(Address::ZERO).unwrap().leader().amount, U256::from(10), "ETH untouched");
    assert_eq!(o.asset_of(&B256::repeat_byte(7)), Some(TOKEN));
    assert_eq!(totals(&o), vec![U256::from(20), U256::from(150)], "conserved per asset");

    o.apply(&Proposal::Remove { target: B256::repeat_byte(7), left_amount: U256::from(5) }).unwrap();
    let token = o.exit(TOKEN).unwrap();
    assert_eq!((token.leader().amount, token.follower().amount), (U256::from(85), U256::from(65)));
    assert_eq!(o.guarantee_count(), 0);

    o.apply(&Proposal::Reserve { asset: TOKEN, side: Side::Follower, amount: U256::from(5) }).unwrap();
    assert_eq!(o.exit(TOKEN).unwrap().slot(), Some(Slot { side: Side::Follower, amount: U256::from(5) }));
    assert_eq!(o.slot(), None, "the first asset (ETH) has no slot");
    assert!(o.has_slot());
    // One slot per asset: ETH may have its own.
    o.apply(&Proposal::Reserve { asset: Address::ZERO, side: Side::Leader, amount: U256::from(1) }).unwrap();
    o.apply(&Proposal::Credit { asset: TOKEN, side: Side::Follower, amount: U256::from(5) }).unwrap();
    assert_eq!(o.exit(TOKEN).unwrap().follower().amount, U256::from(70));
}

#[test]
fn refusals_across_assets_leave_the_outcome_unchanged() {
    let mut o = two_assets();
    o.apply(&add_in(Address::ZERO, 7, 4, 2)).unwrap();
    let before = o.clone();
    let other = Address::repeat_byte(0x99);
    let refusals = [
        // A target lives in one asset: no second guarantee for it in another.
        (add_in(TOKEN, 7, 1, 1), ProposalError::DuplicateTarget(B256::repeat_byte(7))),
        (add_in(other, 8, 1, 1), ProposalError::UnknownAsset(other)),
        (
            Proposal::Reserve { asset: other, side: Side::Leader, amount: U256::from(1) },
            ProposalError::UnknownAsset(other),
        ),
        // ETH balances do not cover what only the token could.
        (
            add_in(Address::ZERO, 9, 50, 50),
            ProposalError::InsufficientFunds { side: Side::Leader, needed: U256::from(50), available: U256::from(8) },
        ),
    ];
    for (p, e) in refusals {
        assert_eq!(o.apply(&p), Err(e));
        assert_eq!(o, before);
    }
}

#[test]
fn exit_round_trip_and_state_hash_of_several_assets() {
    let mut o = two_assets();
    o.apply(&add_in(Address::ZERO, 7, 4, 2)).unwrap();
    o.apply(&add_in(TOKEN, 3, 30, 10)).unwrap();
    o.apply(&Proposal::Reserve { asset: TOKEN, side: Side::Leader, amount: U256::from(9) }).unwrap();
    let exit = o.to_exit();
    assert_eq!(exit.0.len(), 2);
    assert_eq!((exit.0[0].asset, exit.0[1].asset), (Address::ZERO, TOKEN));
    assert_eq!(exit.0[1].allocations.len(), 4, "leader, follower, guarantee, slot");
    assert_eq!(LedgerOutcome::from_exit(&exit).unwrap(), o);
    let fixed = FixedPart {
        participants: vec![Address::repeat_byte(1), Address::repeat_byte(2)],
        channel_nonce: 5,
        app_definition: Address::repeat_byte(3),
        challenge_duration: alloy_primitives::aliases::U48::from(60),
    };
    let state = o.to_state(&fixed, TurnNum::from(4));
    assert_eq!(o.state_hash(state.channel_id(), TurnNum::from(4)), state.hash());
}

#[test]
fn malformed_multi_asset_exits_are_refused() {
    let mut o = two_assets();
    o.apply(&add_in(TOKEN, 3, 30, 10)).unwrap();
    let good = o.to_exit();
    let check = |f: &dyn Fn(&mut Exit), expect: &dyn Fn(&OutcomeError) -> bool| {
        let mut e = good.clone();
        f(&mut e);
        let err = LedgerOutcome::from_exit(&e).unwrap_err();
        assert!(expect(&err), "unexpected {err:?}");
    };
    check(&|e| e.0.swap(0, 1), &|e| matches!(e, OutcomeError::AssetOrder(1)));
    check(&|e| e.0[1].asset = Address::ZERO, &|e| matches!(e, OutcomeError::AssetOrder(1)));
    check(
        &|e| e.0[1].asset_metadata.asset_type = 1,
        &|e| matches!(e, OutcomeError::InAsset { index: 1, error } if **error == OutcomeError::AssetMetadata),
    );
    check(
        &|e| e.0[1].asset_metadata.metadata = Bytes::from(vec![1]),
        &|e| matches!(e, OutcomeError::InAsset { index: 1, error } if **error == OutcomeError::AssetMetadata),
    );
    // The token's guarantee copied into the ETH exit: one target in two assets.
    check(
        &|e| {
            let g = e.0[1].allocations[2].clone();
            e.0[0].allocations.push(g);
        },
        &|e| matches!(e, OutcomeError::TargetInTwoAssets(t) if *t == B256::repeat_byte(3)),
    );
    assert!(LedgerOutcome::from_assets(vec![]).is_err());
    let mut other_parties = two_assets().to_exit();
    other_parties.0[1].allocations[0].destination = dest(7);
    assert_eq!(LedgerOutcome::from_exit(&other_parties), Err(OutcomeError::PartiesDiffer(1)));
}

#[test]
fn a_one_asset_ledger_encodes_as_before() {
    let one = LedgerOutcome::new(
        Address::ZERO,
        Balance { destination: dest(1), amount: U256::from(3) },
        Balance { destination: dest(2), amount: U256::from(4) },
    )
    .unwrap();
    assert_eq!(one.to_exit().0.len(), 1);
    assert!(!one.is_multi_asset());
    assert_eq!(LedgerOutcome::from_assets(vec![asset(Address::ZERO, 3, 4)]).unwrap().to_exit(), one.to_exit());
}

#[test]
fn an_add_recorded_before_multi_asset_ledgers_is_in_eth() {
    let add = add_in(TOKEN, 4, 2, 1);
    let mut json = serde_json::to_value(add).unwrap();
    assert_eq!(serde_json::from_value::<Proposal>(json.clone()).unwrap(), add, "round trip");
    json["add"].as_object_mut().unwrap().remove("asset");
    let old = serde_json::from_value::<Proposal>(json).unwrap();
    assert!(matches!(old, Proposal::Add { asset, .. } if asset == Address::ZERO));
}
