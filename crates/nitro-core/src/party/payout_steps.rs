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

/// What a payout transfer of asset `asset_index` names: every allocation once the asset has no
/// guarantee left (`[]`), else the parties' balances (a guarantee cannot be transferred). At
/// most two indices while guarantees remain: the adjudicator checks `allocations[k]` for
/// `k < len(indices)` against guarantees, so a top-up slot (the last allocation) waits for the
/// transfer after the reclaims.
pub(super) fn transfer_indices(outcome: &Exit, asset_index: usize) -> Vec<usize> {
    let Some(asset) = outcome.0.get(asset_index) else { return Vec::new() };
    if asset.allocations.iter().all(|a| a.allocation_type != AllocationType::GUARANTEE) {
        return Vec::new();
    }
    let simple = |(i, a): (usize, &crate::Allocation)| (a.allocation_type != AllocationType::GUARANTEE).then_some(i);
    asset.allocations.iter().enumerate().filter_map(simple).take(2).collect()
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
        // What the next transfer would pay: the named allocations, or all of them (`[]`).
        let indices = transfer_indices(outcome, asset_index);
        let unpaid = match indices.is_empty() {
            true => {
                asset.allocations.iter().any(|a| a.allocation_type != AllocationType::GUARANTEE && !a.amount.is_zero())
            }
            false => indices.iter().any(|i| asset.allocations.get(*i).is_some_and(|a| !a.amount.is_zero())),
        };
        if unpaid && !holdings(asset.asset).is_zero() {
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
