//! The payout of a finalized ledger, step by step and asset by asset (ADR-0017, ADR-0022 §1):
//! per asset, in the exit's order, a `reclaim` of the asset's first guarantee once its target
//! is finalized (`source_asset_index` = the asset's index, `target_asset_index` = 0: a
//! virtual channel has one exit), else a `transfer` of what is unpaid while the channel holds
//! some of the asset. Zero payouts are never sent.

use alloy_primitives::B256;

use crate::{chain::ChainTransaction, Address, AllocationType, ChannelId, Exit, U256};

/// The kind of payout step in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(super) enum PayoutStep {
    /// A `reclaim` of a guarantee.
    Reclaim,
    /// A `transfer` of balances.
    Transfer,
}

/// The guarantees' targets of an outcome, in allocation order (asset by asset).
pub(super) fn guarantee_targets(outcome: &Exit) -> Vec<ChannelId> {
    outcome
        .0
        .iter()
        .flat_map(|e| e.allocations.iter())
        .filter(|a| a.allocation_type == AllocationType::GUARANTEE)
        .map(|a| a.destination)
        .collect()
}

/// The first guarantee of the outcome's asset `asset_index`: its index and target.
pub(super) fn first_guarantee(outcome: &Exit, asset_index: usize) -> Option<(usize, ChannelId)> {
    let asset = outcome.0.get(asset_index)?;
    let index = asset.allocations.iter().position(|a| a.allocation_type == AllocationType::GUARANTEE)?;
    Some((index, asset.allocations[index].destination))
}

/// What a payout transfer of asset `asset_index` names: the non-zero allocations that are not
/// guarantees (a guarantee cannot be transferred; a zero payout is never sent, some tokens
/// revert on `transfer(_, 0)`). While guarantees remain, only the parties' balances (indices 0
/// and 1): the adjudicator checks `allocations[k]` for `k < len(indices)` against guarantees,
/// so a top-up slot (the last allocation) waits for the transfer after the reclaims. Empty:
/// nothing to transfer.
pub(super) fn transfer_indices(outcome: &Exit, asset_index: usize) -> Vec<usize> {
    let Some(asset) = outcome.0.get(asset_index) else { return Vec::new() };
    let guarantees_remain = asset.allocations.iter().any(|a| a.allocation_type == AllocationType::GUARANTEE);
    let limit = if guarantees_remain { 2 } else { asset.allocations.len() };
    let payable = |(i, a): (usize, &crate::Allocation)| {
        (a.allocation_type != AllocationType::GUARANTEE && !a.amount.is_zero()).then_some(i)
    };
    asset.allocations.iter().enumerate().take(limit).filter_map(payable).collect()
}

/// The next payout transaction of `channel`, finalized with `outcome` (fingerprinted by
/// `state_hash`): the first asset, in exit order, with a reclaim possible (its first
/// guarantee's target is finalized, `finalized` giving the target's fingerprint) or an unpaid
/// non-zero allocation that a transfer would pay while `holdings` of the asset are non-zero.
/// `None` when nothing can be paid now.
pub(super) fn next_step(
    channel: ChannelId,
    state_hash: B256,
    outcome: &Exit,
    finalized: impl Fn(&ChannelId) -> Option<(B256, Exit)>,
    holdings: impl Fn(Address) -> U256,
) -> Option<(ChainTransaction, PayoutStep)> {
    for (asset_index, asset) in outcome.0.iter().enumerate() {
        if let Some((index, target)) = first_guarantee(outcome, asset_index) {
            if let Some((target_state_hash, target_outcome)) = finalized(&target) {
                let transaction = ChainTransaction::Reclaim {
                    source_channel_id: channel,
                    source_state_hash: state_hash,
                    source_outcome: outcome.clone(),
                    source_asset_index: asset_index,
                    index_of_target_in_source: index,
                    target_state_hash,
                    target_outcome,
                    target_asset_index: 0,
                };
                return Some((transaction, PayoutStep::Reclaim));
            }
        }
        // What the next transfer would pay: the non-zero allocations it names.
        let indices = transfer_indices(outcome, asset_index);
        if !indices.is_empty() && !holdings(asset.asset).is_zero() {
            let transaction = ChainTransaction::Transfer {
                channel_id: channel,
                asset_index,
                outcome: outcome.clone(),
                state_hash,
                indices,
            };
            return Some((transaction, PayoutStep::Transfer));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Allocation, AssetMetadata, SingleAssetExit};

    fn exit(allocations: Vec<Allocation>) -> Exit {
        let eth = SingleAssetExit { asset: Address::ZERO, asset_metadata: AssetMetadata::default(), allocations };
        let token = SingleAssetExit { asset: Address::repeat_byte(7), ..eth.clone() };
        Exit(vec![eth, token])
    }

    fn guarantee(target: u8, amount: u64) -> Allocation {
        Allocation {
            destination: ChannelId::repeat_byte(target),
            amount: U256::from(amount),
            allocation_type: AllocationType::GUARANTEE,
            metadata: Default::default(),
        }
    }

    #[test]
    fn transfers_name_only_non_zero_balances_and_the_slot_only_after_the_guarantees() {
        let (l, f) = (ChannelId::repeat_byte(1), ChannelId::repeat_byte(2));
        let simple = |d, n: u64| Allocation::simple(d, U256::from(n));
        let with_guarantee = exit(vec![simple(l, 0), simple(f, 5), guarantee(9, 3), simple(f, 4)]);
        assert_eq!(transfer_indices(&with_guarantee, 0), vec![1], "no zero payout, no slot yet");
        assert_eq!(transfer_indices(&with_guarantee, 1), vec![1], "the second asset likewise");
        assert_eq!(transfer_indices(&with_guarantee, 2), Vec::<usize>::new(), "no such asset");
        assert_eq!(first_guarantee(&with_guarantee, 1), Some((2, ChannelId::repeat_byte(9))));
        let settled = exit(vec![simple(l, 0), simple(f, 5), simple(f, 4)]);
        assert_eq!(transfer_indices(&settled, 0), vec![1, 2]);
        assert!(transfer_indices(&exit(vec![simple(l, 0), simple(f, 0)]), 0).is_empty(), "nothing to send");
    }

    #[test]
    fn the_next_step_goes_asset_by_asset_reclaiming_before_transferring() {
        let (l, f) = (ChannelId::repeat_byte(1), ChannelId::repeat_byte(2));
        let simple = |d, n: u64| Allocation::simple(d, U256::from(n));
        let outcome = exit(vec![simple(l, 0), simple(f, 0), guarantee(9, 3)]);
        let channel = ChannelId::repeat_byte(5);
        let none = |_: &ChannelId| None;
        let held = |_: Address| U256::from(3);
        assert!(next_step(channel, B256::ZERO, &outcome, none, held).is_none(), "waits for the target");
        let target = |_: &ChannelId| Some((B256::ZERO, Exit(vec![])));
        let step = next_step(channel, B256::ZERO, &outcome, target, held);
        assert!(matches!(
            step,
            Some((
                ChainTransaction::Reclaim { source_asset_index: 0, index_of_target_in_source: 2, .. },
                PayoutStep::Reclaim
            ))
        ));
        let paid_eth = exit(vec![simple(l, 0), simple(f, 0)]);
        let mut second = paid_eth.clone();
        second.0[1].allocations = vec![simple(l, 2), simple(f, 0)];
        let step = next_step(channel, B256::ZERO, &second, none, held);
        assert!(matches!(
            step,
            Some((ChainTransaction::Transfer { asset_index: 1, ref indices, .. }, PayoutStep::Transfer)) if *indices == vec![0]
        ));
        assert!(next_step(channel, B256::ZERO, &second, none, |_| U256::ZERO).is_none(), "nothing held");
    }
}
