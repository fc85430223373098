//! One asset's part of a ledger outcome (ADR-0022 §1): `[leader, follower, guarantees
//! ascending by target, top-up slot?]`, and how a proposal routed to this asset changes it.

use std::collections::BTreeMap;

use alloy_primitives::{Address, Bytes, U256};

use super::{Balance, Guarantee, OutcomeError, Proposal, ProposalError, Side, Slot};
use crate::{
    abi, Allocation, AllocationType, AssetMetadata, ChannelId, Destination, GuaranteeMetadata, SingleAssetExit,
};

/// One asset's part of a ledger outcome (ADR-0022 §1): the two parties' balances, the
/// guarantees held in this asset and at most one top-up slot.
///
/// Always well formed: balances first, guarantees keyed (so sorted) by target, every guarantee
/// between the two parties with a non-zero amount, a slot (if any) of a non-zero amount, and a
/// total that fits in 256 bits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AssetOutcome {
    pub(super) asset: Address,
    pub(super) leader: Balance,
    pub(super) follower: Balance,
    pub(super) guarantees: BTreeMap<ChannelId, Guarantee>,
    pub(super) slot: Option<Slot>,
}

impl AssetOutcome {
    /// One asset's outcome with no guarantees.
    pub fn new(asset: Address, leader: Balance, follower: Balance) -> Result<Self, OutcomeError> {
        Self::with_guarantees(asset, leader, follower, [])
    }

    /// One asset's outcome with guarantees (in any order; duplicates refused).
    pub fn with_guarantees(
        asset: Address,
        leader: Balance,
        follower: Balance,
        guarantees: impl IntoIterator<Item = Guarantee>,
    ) -> Result<Self, OutcomeError> {
        if leader.destination == follower.destination {
            return Err(OutcomeError::SameParties);
        }
        let mut outcome = Self { asset, leader, follower, guarantees: BTreeMap::new(), slot: None };
        for (i, g) in guarantees.into_iter().enumerate() {
            let index = i + 2;
            if !outcome.is_party_pair(&g) {
                return Err(OutcomeError::Guarantee { index, error: ProposalError::NotLedgerParties(g.target) });
            }
            if outcome.guarantees.insert(g.target, g).is_some() {
                return Err(OutcomeError::Guarantee { index, error: ProposalError::DuplicateTarget(g.target) });
            }
        }
        outcome.total().ok_or(OutcomeError::Overflow)?;
        Ok(outcome)
    }

    /// Parses one asset's exit (default metadata, `[leader, follower, guarantees, slot?]`)
    /// whose guarantees have `guarantee_type`.
    pub fn from_single(single: &SingleAssetExit, guarantee_type: AllocationType) -> Result<Self, OutcomeError> {
        if single.asset_metadata != AssetMetadata::default() {
            return Err(OutcomeError::AssetMetadata);
        }
        let allocations = &single.allocations;
        if allocations.len() < 2 {
            return Err(OutcomeError::MissingBalances);
        }
        let balance = |index: usize| -> Result<Balance, OutcomeError> {
            let a = &allocations[index];
            if a.allocation_type != AllocationType::SIMPLE || !a.metadata.is_empty() {
                return Err(OutcomeError::NotSimple(index));
            }
            Ok(Balance { destination: a.destination, amount: a.amount })
        };
        let (leader, follower) = (balance(0)?, balance(1)?);
        let mut guarantees = Vec::with_capacity(allocations.len() - 2);
        let mut slot = None;
        for (index, a) in allocations.iter().enumerate().skip(2) {
            if a.allocation_type == AllocationType::SIMPLE && guarantee_type != AllocationType::SIMPLE {
                slot = Some(Self::parse_slot(allocations, index, &leader, &follower)?);
                continue;
            }
            if a.allocation_type != guarantee_type {
                return Err(OutcomeError::GuaranteeType {
                    index,
                    found: a.allocation_type.0,
                    expected: guarantee_type.0,
                });
            }
            let meta = GuaranteeMetadata::decode(&a.metadata).ok_or(OutcomeError::GuaranteeMetadata(index))?;
            if index > 2 && allocations[index - 1].destination >= a.destination {
                return Err(OutcomeError::GuaranteeOrder(index));
            }
            let g = Guarantee::new(a.destination, a.amount, meta.left, meta.right)
                .map_err(|error| OutcomeError::Guarantee { index, error })?;
            guarantees.push(g);
        }
        let mut outcome = Self::with_guarantees(single.asset, leader, follower, guarantees)?;
        outcome.slot = slot;
        outcome.total().ok_or(OutcomeError::Overflow)?;
        Ok(outcome)
    }

    /// This asset's exit, writing guarantees with `guarantee_type`.
    pub fn to_single(&self, guarantee_type: AllocationType) -> SingleAssetExit {
        let mut allocations = Vec::with_capacity(3 + self.guarantees.len());
        allocations.push(Allocation::simple(self.leader.destination, self.leader.amount));
        allocations.push(Allocation::simple(self.follower.destination, self.follower.amount));
        allocations.extend(self.guarantees.values().map(|g| Allocation {
            destination: g.target,
            amount: g.amount,
            allocation_type: guarantee_type,
            metadata: g.metadata(),
        }));
        if let Some(slot) = self.slot {
            allocations.push(Allocation::simple(self.destination(slot.side), slot.amount));
        }
        SingleAssetExit { asset: self.asset, asset_metadata: AssetMetadata::default(), allocations }
    }

    /// This asset's exit in the ABI types, for hashing (guarantees of type 2).
    pub(super) fn to_abi(&self) -> abi::SingleAssetExit {
        let simple = |destination, amount| abi::Allocation {
            destination,
            amount,
            allocationType: AllocationType::SIMPLE.0,
            metadata: Bytes::new(),
        };
        let mut allocations = Vec::with_capacity(3 + self.guarantees.len());
        allocations.push(simple(self.leader.destination, self.leader.amount));
        allocations.push(simple(self.follower.destination, self.follower.amount));
        allocations.extend(self.guarantees.values().map(|g| abi::Allocation {
            destination: g.target,
            amount: g.amount,
            allocationType: AllocationType::GUARANTEE.0,
            metadata: g.metadata(),
        }));
        if let Some(slot) = self.slot {
            allocations.push(simple(self.destination(slot.side), slot.amount));
        }
        abi::SingleAssetExit {
            asset: self.asset,
            assetMetadata: abi::AssetMetadata { assetType: 0, metadata: Bytes::new() },
            allocations,
        }
    }

    /// The asset held.
    pub fn asset(&self) -> Address {
        self.asset
    }

    /// The leader's balance.
    pub fn leader(&self) -> &Balance {
        &self.leader
    }

    /// The follower's balance.
    pub fn follower(&self) -> &Balance {
        &self.follower
    }

    /// The guarantees, ascending by target.
    pub fn guarantees(&self) -> impl ExactSizeIterator<Item = &Guarantee> {
        self.guarantees.values()
    }

    /// The guarantee for `target`, if any.
    pub fn guarantee(&self, target: &ChannelId) -> Option<&Guarantee> {
        self.guarantees.get(target)
    }

    /// The pending top-up slot, if any.
    pub fn slot(&self) -> Option<Slot> {
        self.slot
    }

    /// Leader + follower + Σ guarantees + slot; `None` on overflow (never, for a built outcome).
    pub fn total(&self) -> Option<U256> {
        let slot = self.slot.map_or(U256::ZERO, |s| s.amount);
        self.guarantees
            .values()
            .try_fold(self.leader.amount.checked_add(self.follower.amount)?, |acc, g| acc.checked_add(g.amount))?
            .checked_add(slot)
    }

    /// The total without the slot: what the holdings cover before a top-up deposit.
    pub fn total_without_slot(&self) -> Option<U256> {
        let slot = self.slot.map_or(U256::ZERO, |s| s.amount);
        self.total()?.checked_sub(slot)
    }

    /// The destination of `side`'s balance.
    pub fn destination(&self, side: Side) -> Destination {
        match side {
            Side::Leader => self.leader.destination,
            Side::Follower => self.follower.destination,
        }
    }

    pub(super) fn is_party_pair(&self, g: &Guarantee) -> bool {
        let (l, f) = (self.leader.destination, self.follower.destination);
        (g.left == l && g.right == f) || (g.left == f && g.right == l)
    }

    fn balance_mut(&mut self, destination: Destination) -> &mut Balance {
        if destination == self.leader.destination {
            &mut self.leader
        } else {
            &mut self.follower
        }
    }

    fn side_of(&self, destination: Destination) -> Side {
        if destination == self.leader.destination {
            Side::Leader
        } else {
            Side::Follower
        }
    }

    /// Checks `proposal` against this asset's outcome and applies it; on error nothing changes.
    /// The caller has routed the proposal here (its asset, its target's asset).
    ///
    /// Money is conserved: `Add`, `Remove` and `Credit` leave the total (slot included)
    /// unchanged; only `Reserve` and `CancelReserve` change it, by the slot's amount.
    pub(super) fn apply(&mut self, proposal: &Proposal) -> Result<(), ProposalError> {
        match *proposal {
            Proposal::Add { guarantee, left_deposit, .. } => {
                let target = guarantee.target;
                if self.guarantees.contains_key(&target) {
                    return Err(ProposalError::DuplicateTarget(target));
                }
                if !self.is_party_pair(&guarantee) {
                    return Err(ProposalError::NotLedgerParties(target));
                }
                let amount = guarantee.amount;
                let right_deposit = amount
                    .checked_sub(left_deposit)
                    .ok_or(ProposalError::DepositExceedsAmount { left_deposit, amount })?;
                for (who, needed) in [(guarantee.left, left_deposit), (guarantee.right, right_deposit)] {
                    let available = self.balance_mut(who).amount;
                    if available < needed {
                        let side = self.side_of(who);
                        return Err(ProposalError::InsufficientFunds { side, needed, available });
                    }
                }
                self.balance_mut(guarantee.left).amount -= left_deposit;
                self.balance_mut(guarantee.right).amount -= right_deposit;
                self.guarantees.insert(target, guarantee);
            }
            Proposal::Remove { target, left_amount } => {
                let guarantee = *self.guarantees.get(&target).ok_or(ProposalError::TargetNotFound(target))?;
                let amount = guarantee.amount;
                let right_amount = amount
                    .checked_sub(left_amount)
                    .ok_or(ProposalError::LeftAmountExceedsAmount { left_amount, amount })?;
                let left_new =
                    self.balance_mut(guarantee.left).amount.checked_add(left_amount).ok_or(ProposalError::Overflow)?;
                let right_new = self
                    .balance_mut(guarantee.right)
                    .amount
                    .checked_add(right_amount)
                    .ok_or(ProposalError::Overflow)?;
                self.balance_mut(guarantee.left).amount = left_new;
                self.balance_mut(guarantee.right).amount = right_new;
                self.guarantees.remove(&target);
            }
            Proposal::Reserve { side, amount, .. } => self.reserve(side, amount)?,
            Proposal::Credit { side, amount, .. } => self.credit(side, amount)?,
            Proposal::CancelReserve { side, .. } => self.cancel_reserve(side)?,
        }
        Ok(())
    }
}
