//! Conservation under the top-up proposals (ADR-0022 §4): for random sequences of `Add`,
//! `Remove`, `Reserve`, `Credit` and `CancelReserve`, leader + follower + Σ guarantees + slot is
//! unchanged by every `Add`, `Remove` and `Credit`, changes by exactly the slot on `Reserve` and
//! `CancelReserve`, a refused proposal changes nothing, and every outcome survives its exit
//! encoding.

use nitro_core::{destination_of, Address, Balance, Guarantee, LedgerOutcome, Proposal, Side, B256, U256};
use proptest::prelude::*;

fn side(leader: bool) -> Side {
    if leader {
        Side::Leader
    } else {
        Side::Follower
    }
}

fn proposal() -> impl Strategy<Value = Proposal> {
    let l = destination_of(Address::repeat_byte(1));
    let f = destination_of(Address::repeat_byte(2));
    prop_oneof![
        (1u8..6, 1u64..40, any::<bool>(), 0u64..40).prop_map(move |(t, amount, leader_left, d)| {
            let (left, right) = if leader_left { (l, f) } else { (f, l) };
            let guarantee = Guarantee::new(B256::repeat_byte(t), U256::from(amount), left, right).unwrap();
            Proposal::Add { guarantee, left_deposit: U256::from(d), asset: nitro_core::Address::ZERO }
        }),
        (1u8..6, 0u64..40)
            .prop_map(|(t, a)| Proposal::Remove { target: B256::repeat_byte(t), left_amount: U256::from(a) }),
        (any::<bool>(), 0u64..30).prop_map(|(s, a)| Proposal::Reserve {
            asset: Address::ZERO,
            side: side(s),
            amount: U256::from(a)
        }),
        (any::<bool>(), 0u64..30).prop_map(|(s, a)| Proposal::Credit {
            asset: Address::ZERO,
            side: side(s),
            amount: U256::from(a)
        }),
        any::<bool>().prop_map(|s| Proposal::CancelReserve { asset: Address::ZERO, side: side(s) }),
    ]
}

proptest! {
    #[test]
    fn top_up_conserves_money(leader in 0u64..100, follower in 0u64..100,
                              proposals in prop::collection::vec(proposal(), 1..60)) {
        let mut o = LedgerOutcome::new(
            Address::ZERO,
            Balance { destination: destination_of(Address::repeat_byte(1)), amount: U256::from(leader) },
            Balance { destination: destination_of(Address::repeat_byte(2)), amount: U256::from(follower) },
        ).unwrap();
        for p in proposals {
            let before = o.clone();
            let total = o.total().unwrap();
            let slot_before = o.slot().map_or(U256::ZERO, |s| s.amount);
            match o.apply(&p) {
                Err(_) => prop_assert_eq!(&o, &before),
                Ok(()) => {
                    let after = o.total().unwrap();
                    match p {
                        Proposal::Reserve { amount, .. } => prop_assert_eq!(after, total + amount),
                        Proposal::CancelReserve { .. } => prop_assert_eq!(after, total - slot_before),
                        _ => prop_assert_eq!(after, total),
                    }
                    let sum = o.guarantees().fold(o.leader().amount + o.follower().amount, |a, g| a + g.amount())
                        + o.slot().map_or(U256::ZERO, |s| s.amount);
                    prop_assert_eq!(sum, after);
                }
            }
            prop_assert_eq!(LedgerOutcome::from_exit(&o.to_exit()).unwrap(), o.clone());
        }
    }
}
