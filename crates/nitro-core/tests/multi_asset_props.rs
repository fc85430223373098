//! Conservation per asset (ADR-0022 §1): for random sequences of every proposal kind over a
//! ledger of three assets (and proposals naming a fourth it does not hold), each asset's
//! leader + follower + Σ guarantees + slot is unchanged by `Add`, `Remove` and `Credit`, changes
//! by exactly the slot on `Reserve` and `CancelReserve` of that asset only, a refused proposal
//! changes nothing, a target is guaranteed in at most one asset, and every outcome survives its
//! exit encoding and hashes as its state.

use nitro_core::{
    destination_of, Address, AssetOutcome, Balance, FixedPart, Guarantee, LedgerOutcome, Proposal, Side, B256, U256,
    U48,
};
use proptest::prelude::*;

const ASSETS: [Address; 4] =
    [Address::ZERO, Address::repeat_byte(0x10), Address::repeat_byte(0x20), Address::repeat_byte(0x30)];

fn side(leader: bool) -> Side {
    if leader {
        Side::Leader
    } else {
        Side::Follower
    }
}

/// Any proposal, in any of the four assets (the ledger holds the first three).
fn proposal() -> impl Strategy<Value = Proposal> {
    let l = destination_of(Address::repeat_byte(1));
    let f = destination_of(Address::repeat_byte(2));
    let asset = (0usize..4).prop_map(|i| ASSETS[i]);
    prop_oneof![
        3 => (asset.clone(), 1u8..8, 1u64..40, any::<bool>(), 0u64..40).prop_map(move |(asset, t, amount, ll, d)| {
            let (left, right) = if ll { (l, f) } else { (f, l) };
            let guarantee = Guarantee::new(B256::repeat_byte(t), U256::from(amount), left, right).unwrap();
            Proposal::Add { guarantee, left_deposit: U256::from(d), asset }
        }),
        2 => (1u8..8, 0u64..40)
            .prop_map(|(t, a)| Proposal::Remove { target: B256::repeat_byte(t), left_amount: U256::from(a) }),
        1 => (asset.clone(), any::<bool>(), 0u64..30)
            .prop_map(|(asset, s, a)| Proposal::Reserve { asset, side: side(s), amount: U256::from(a) }),
        1 => (asset.clone(), any::<bool>(), 0u64..30)
            .prop_map(|(asset, s, a)| Proposal::Credit { asset, side: side(s), amount: U256::from(a) }),
        1 => (asset, any::<bool>()).prop_map(|(asset, s)| Proposal::CancelReserve { asset, side: side(s) }),
    ]
}

fn totals(o: &LedgerOutcome) -> Vec<U256> {
    o.assets().iter().map(|a| a.total().unwrap()).collect()
}

fn slot_of(o: &LedgerOutcome, asset: Address) -> U256 {
    o.exit(asset).and_then(|e| e.slot()).map_or(U256::ZERO, |s| s.amount)
}

proptest! {
    #[test]
    fn every_asset_conserves_its_money(balances in prop::collection::vec((0u64..100, 0u64..100), 3),
                                       proposals in prop::collection::vec(proposal(), 1..80)) {
        let (l, f) = (destination_of(Address::repeat_byte(1)), destination_of(Address::repeat_byte(2)));
        let assets = ASSETS[..3].iter().zip(&balances).map(|(asset, (a, b))| {
            AssetOutcome::new(*asset, Balance { destination: l, amount: U256::from(*a) },
                Balance { destination: f, amount: U256::from(*b) }).unwrap()
        }).collect();
        let mut o = LedgerOutcome::from_assets(assets).unwrap();
        let fixed = FixedPart {
            participants: vec![Address::repeat_byte(1), Address::repeat_byte(2)],
            channel_nonce: 9,
            app_definition: Address::repeat_byte(3),
            challenge_duration: U48::from(60),
        };
        for p in proposals {
            let before = o.clone();
            let before_totals = totals(&o);
            let touched = match p {
                Proposal::Add { asset, .. } | Proposal::Reserve { asset, .. }
                | Proposal::Credit { asset, .. } | Proposal::CancelReserve { asset, .. } => Some(asset),
                Proposal::Remove { target, .. } => o.asset_of(&target),
            };
            let slot_before = touched.map_or(U256::ZERO, |a| slot_of(&o, a));
            match o.apply(&p) {
                Err(_) => prop_assert_eq!(&o, &before),
                Ok(()) => {
                    let after = totals(&o);
                    for (i, a) in o.assets().iter().enumerate() {
                        let expected = match p {
                            Proposal::Reserve { asset, amount, .. } if asset == a.asset() => before_totals[i] + amount,
                            Proposal::CancelReserve { asset, .. } if asset == a.asset() => before_totals[i] - slot_before,
                            _ => before_totals[i],
                        };
                        prop_assert_eq!(after[i], expected, "asset {}", a.asset());
                        let sum = a.guarantees().fold(a.leader().amount + a.follower().amount, |s, g| s + g.amount())
                            + a.slot().map_or(U256::ZERO, |s| s.amount);
                        prop_assert_eq!(sum, after[i]);
                    }
                    prop_assert!(o.exit(ASSETS[3]).is_none(), "the asset list is fixed");
                }
            }
            let targets: Vec<B256> = o.guarantees().map(|g| g.target()).collect();
            let mut unique = targets.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), targets.len(), "a target in at most one asset");
            prop_assert_eq!(LedgerOutcome::from_exit(&o.to_exit()).unwrap(), o.clone());
            let state = o.to_state(&fixed, U48::from(5));
            prop_assert_eq!(o.state_hash(state.channel_id(), U48::from(5)), state.hash());
        }
    }
}
