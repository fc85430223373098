//! What `transfer` and `reclaim` do to a finalized channel's outcome, computed off chain
//! exactly as the `NitroAdjudicator` (2.0.1-alpha.6, `MultiAssetHolder`) computes it, so that
//! an objective paying a channel out knows the outcome the chain fingerprints after each step.

use alloy_primitives::U256;
use thiserror::Error;

use crate::{AllocationType, Exit, GuaranteeMetadata};

/// Why the adjudicator would refuse a payout step.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PayoutError {
    /// No asset at that index.
    #[error("no asset at index {0}")]
    NoAsset(usize),
    /// An allocation index past the end, or indices not strictly increasing.
    #[error("bad allocation indices {0:?}")]
    BadIndices(Vec<usize>),
    /// `transfer` reaches a guarantee (the contract's check: `cannot transfer a guarantee`).
    #[error("cannot transfer a guarantee")]
    TransfersGuarantee,
    /// `reclaim` names an allocation that is not a guarantee, or malformed metadata.
    #[error("allocation {0} is not a well-formed guarantee")]
    NotAGuarantee(usize),
    /// The target outcome does not have the guarantee's asset, or fewer than two allocations.
    #[error("the target outcome does not fit the guarantee")]
    TargetMismatch,
    /// The guarantee's left or right party has no allocation in the source.
    #[error("the source has no allocation for the guarantee's {0}")]
    PartyNotFound(&'static str),
    /// The target's first two allocations do not add up to the guarantee.
    #[error("the target pays {reclaimed}, the guarantee holds {amount}")]
    AmountMismatch {
        /// What the target's first two allocations add up to.
        reclaimed: U256,
        /// The guarantee's amount.
        amount: U256,
    },
    /// An amount overflows 256 bits.
    #[error("arithmetic overflow")]
    Overflow,
}

/// The outcome `transfer(asset_index, …, indices)` leaves, and what it pays out, when the
/// channel holds `holdings` of the asset. Allocations are paid in order while holdings last
/// (`min(amount, surplus)`), every allocation in order consuming surplus whether paid or not;
/// `indices` empty means all. Mirrors `compute_transfer_effects_and_interactions`, including
/// its guarantee check, which reads `allocations[k]` (k: the position in `indices`).
pub fn after_transfer(
    outcome: &Exit,
    asset_index: usize,
    holdings: U256,
    indices: &[usize],
) -> Result<(Exit, U256), PayoutError> {
    let asset = outcome.0.get(asset_index).ok_or(PayoutError::NoAsset(asset_index))?;
    let allocations = &asset.allocations;
    if indices.windows(2).any(|w| w[0] >= w[1]) || indices.iter().any(|i| *i >= allocations.len()) {
        return Err(PayoutError::BadIndices(indices.to_vec()));
    }
    let mut new = allocations.clone();
    let mut surplus = holdings;
    let mut paid = U256::ZERO;
    let mut k = 0;
    for (i, allocation) in allocations.iter().enumerate() {
        let affords = allocation.amount.min(surplus);
        if indices.is_empty() || indices.get(k) == Some(&i) {
            if allocations.get(k).is_some_and(|a| a.allocation_type == AllocationType::GUARANTEE) {
                return Err(PayoutError::TransfersGuarantee);
            }
            new[i].amount = allocation.amount - affords;
            paid = paid.checked_add(affords).ok_or(PayoutError::Overflow)?;
            k += 1;
        }
        surplus -= affords;
    }
    let mut exit = outcome.clone();
    exit.0[asset_index].allocations = new;
    Ok((exit, paid))
}

/// The source (ledger) outcome `reclaim` leaves: the guarantee at `index` removed, its left
/// party credited with the target's first allocation and its right party with the second.
/// Mirrors `compute_reclaim_effects`.
pub fn after_reclaim(
    source: &Exit,
    source_asset_index: usize,
    index: usize,
    target: &Exit,
    target_asset_index: usize,
) -> Result<Exit, PayoutError> {
    let asset = source.0.get(source_asset_index).ok_or(PayoutError::NoAsset(source_asset_index))?;
    let target_asset = target.0.get(target_asset_index).ok_or(PayoutError::NoAsset(target_asset_index))?;
    let allocations = &asset.allocations;
    let guarantee = allocations.get(index).ok_or(PayoutError::BadIndices(vec![index]))?;
    if guarantee.allocation_type != AllocationType::GUARANTEE {
        return Err(PayoutError::NotAGuarantee(index));
    }
    let meta = GuaranteeMetadata::decode(&guarantee.metadata).ok_or(PayoutError::NotAGuarantee(index))?;
    let [to_left, to_right, ..] = target_asset.allocations.as_slice() else {
        return Err(PayoutError::TargetMismatch);
    };
    if target_asset.asset != asset.asset {
        return Err(PayoutError::TargetMismatch);
    }
    let (mut found_left, mut found_right) = (false, false);
    let mut reclaimed = U256::ZERO;
    let mut new = Vec::with_capacity(allocations.len() - 1);
    for (i, allocation) in allocations.iter().enumerate() {
        if i == index {
            continue;
        }
        let mut a = allocation.clone();
        if !found_left && a.destination == meta.left {
            a.amount = a.amount.checked_add(to_left.amount).ok_or(PayoutError::Overflow)?;
            reclaimed = reclaimed.checked_add(to_left.amount).ok_or(PayoutError::Overflow)?;
            found_left = true;
        }
        if !found_right && a.destination == meta.right {
            a.amount = a.amount.checked_add(to_right.amount).ok_or(PayoutError::Overflow)?;
            reclaimed = reclaimed.checked_add(to_right.amount).ok_or(PayoutError::Overflow)?;
            found_right = true;
        }
        new.push(a);
    }
    if !found_left {
        return Err(PayoutError::PartyNotFound("left"));
    }
    if !found_right {
        return Err(PayoutError::PartyNotFound("right"));
    }
    if reclaimed != guarantee.amount {
        return Err(PayoutError::AmountMismatch { reclaimed, amount: guarantee.amount });
    }
    let mut exit = source.clone();
    exit.0[source_asset_index].allocations = new;
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::{destination_of, Allocation};

    #[test]
    fn transfer_pays_in_order_while_holdings_last() {
        let outcome = ledger_state(1, false, false).outcome; // [5, 7]
        let (after, paid) = after_transfer(&outcome, 0, U256::from(100), &[]).unwrap();
        assert_eq!(paid, U256::from(12));
        assert!(after.0[0].allocations.iter().all(|a| a.amount.is_zero()));
        // Holdings of 6: the first is paid in full, the second gets 1 of its 7.
        let (after, paid) = after_transfer(&outcome, 0, U256::from(6), &[]).unwrap();
        assert_eq!(paid, U256::from(6));
        assert_eq!(after.0[0].allocations[1].amount, U256::from(6));
        // Only index 1: the first still consumes surplus.
        let (after, paid) = after_transfer(&outcome, 0, U256::from(9), &[1]).unwrap();
        assert_eq!(paid, U256::from(4));
        assert_eq!(after.0[0].allocations[0].amount, U256::from(5));
        assert_eq!(after.0[0].allocations[1].amount, U256::from(3));
        assert!(matches!(after_transfer(&outcome, 0, U256::ZERO, &[1, 0]), Err(PayoutError::BadIndices(_))));
        assert!(matches!(after_transfer(&outcome, 1, U256::ZERO, &[]), Err(PayoutError::NoAsset(1))));
    }

    #[test]
    fn a_guarantee_is_reclaimed_into_its_parties_and_never_transferred() {
        let outcome = ledger_state(1, false, true).outcome; // [5, 7, g 3 (left a, right b)]
        assert_eq!(after_transfer(&outcome, 0, U256::from(15), &[]), Err(PayoutError::TransfersGuarantee));
        let (balances_paid, paid) = after_transfer(&outcome, 0, U256::from(15), &[0, 1]).unwrap();
        assert_eq!(paid, U256::from(12));
        let (a, b) = (key(1).address(), key(2).address());
        let target = exit(vec![
            Allocation::simple(destination_of(a), U256::from(1)),
            Allocation::simple(destination_of(b), U256::from(2)),
        ]);
        let reclaimed = after_reclaim(&balances_paid, 0, 2, &target, 0).unwrap();
        let amounts: Vec<U256> = reclaimed.0[0].allocations.iter().map(|a| a.amount).collect();
        assert_eq!(amounts, vec![U256::from(1), U256::from(2)]);
        let (done, paid) = after_transfer(&reclaimed, 0, U256::from(3), &[]).unwrap();
        assert_eq!(paid, U256::from(3));
        assert!(done.0[0].allocations.iter().all(|a| a.amount.is_zero()));
        let short = exit(vec![Allocation::simple(destination_of(a), U256::from(3))]);
        assert_eq!(after_reclaim(&outcome, 0, 2, &short, 0), Err(PayoutError::TargetMismatch));
        let wrong = exit(vec![
            Allocation::simple(destination_of(a), U256::from(1)),
            Allocation::simple(destination_of(b), U256::from(1)),
        ]);
        assert!(matches!(after_reclaim(&outcome, 0, 2, &wrong, 0), Err(PayoutError::AmountMismatch { .. })));
        assert_eq!(after_reclaim(&outcome, 0, 0, &target, 0), Err(PayoutError::NotAGuarantee(0)));
    }
}
