//! The top-up slot of a ledger outcome (ADR-0022 §4): how `Reserve`, `Credit` and
//! `CancelReserve` change it, and how it is read back from an exit.

use alloy_primitives::U256;

use super::{AssetOutcome, Balance, OutcomeError, ProposalError, Side, Slot};
use crate::{Allocation, AllocationType};

impl AssetOutcome {
    fn balance_of(&mut self, side: Side) -> &mut Balance {
        match side {
            Side::Leader => &mut self.leader,
            Side::Follower => &mut self.follower,
        }
    }

    /// `Reserve`: a slot of `amount` (> 0) for `side`, when none is pending.
    pub(super) fn reserve(&mut self, side: Side, amount: U256) -> Result<(), ProposalError> {
        if amount.is_zero() {
            return Err(ProposalError::ZeroTopUp);
        }
        if let Some(slot) = self.slot {
            return Err(ProposalError::SlotPending { side: slot.side, amount: slot.amount });
        }
        self.total().and_then(|t| t.checked_add(amount)).ok_or(ProposalError::Overflow)?;
        self.slot = Some(Slot { side, amount });
        Ok(())
    }

    /// The pending slot, if it is `side`'s (and of `amount`, when given).
    fn matching_slot(&self, side: Side, amount: Option<U256>) -> Result<Slot, ProposalError> {
        let slot = self.slot.ok_or(ProposalError::NoSlot)?;
        if slot.side != side || amount.is_some_and(|a| a != slot.amount) {
            return Err(ProposalError::SlotMismatch { slot, side, amount: amount.unwrap_or(slot.amount) });
        }
        Ok(slot)
    }

    /// `Credit`: the slot, which must be `side`'s and of `amount`, joins `side`'s balance.
    pub(super) fn credit(&mut self, side: Side, amount: U256) -> Result<(), ProposalError> {
        let slot = self.matching_slot(side, Some(amount))?;
        let credited = self.balance_of(side).amount.checked_add(slot.amount).ok_or(ProposalError::Overflow)?;
        self.balance_of(side).amount = credited;
        self.slot = None;
        Ok(())
    }

    /// `CancelReserve`: the slot, which must be `side`'s, is dropped.
    pub(super) fn cancel_reserve(&mut self, side: Side) -> Result<(), ProposalError> {
        self.matching_slot(side, None)?;
        self.slot = None;
        Ok(())
    }

    /// Undoes a `Credit` of `amount` to `side` that just applied: the amount leaves the balance
    /// and becomes the slot again. Used only to revert a batch; refuses (changing nothing)
    /// anything that is not such an undo.
    pub(super) fn uncredit(&mut self, side: Side, amount: U256) -> Result<(), ProposalError> {
        if let Some(slot) = self.slot {
            return Err(ProposalError::SlotPending { side: slot.side, amount: slot.amount });
        }
        let available = self.balance_of(side).amount;
        let rest = available.checked_sub(amount).ok_or(ProposalError::InsufficientFunds {
            side,
            needed: amount,
            available,
        })?;
        if amount.is_zero() {
            return Err(ProposalError::ZeroTopUp);
        }
        self.balance_of(side).amount = rest;
        self.slot = Some(Slot { side, amount });
        Ok(())
    }

    /// Reads allocation `index` (after the guarantees) as the slot: it must be the last
    /// allocation, a simple one without metadata, non-zero, paying one of the two parties.
    pub(super) fn parse_slot(
        allocations: &[Allocation],
        index: usize,
        leader: &Balance,
        follower: &Balance,
    ) -> Result<Slot, OutcomeError> {
        let a = &allocations[index];
        if index + 1 != allocations.len()
            || a.allocation_type != AllocationType::SIMPLE
            || !a.metadata.is_empty()
            || a.amount.is_zero()
        {
            return Err(OutcomeError::Slot(index));
        }
        let side = if a.destination == leader.destination {
            Side::Leader
        } else if a.destination == follower.destination {
            Side::Follower
        } else {
            return Err(OutcomeError::Slot(index));
        };
        Ok(Slot { side, amount: a.amount })
    }
}
