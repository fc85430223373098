//! The ledger's outcome and the one rule that changes it: applying a [`Proposal`].
//!
//! Every state of a ledger is `[leader, follower, guarantees ascending by target, top-up slot?]`
//! for a single asset (the slot is a simple allocation to one party, see [`Slot`] and ADR-0022
//! §4). [`LedgerOutcome::apply`] is the only code that computes the effect of a proposal:
//! the leader uses it to build what it signs, the follower to check what it countersigns, and
//! the tests to predict both.

use std::collections::BTreeMap;

use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

use crate::{
    abi, json, Allocation, AllocationType, AssetMetadata, ChannelId, Destination, Exit, FixedPart, GuaranteeMetadata,
    SingleAssetExit, State, TurnNum,
};

/// One party's balance in a ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Balance {
    /// Who is paid.
    #[serde(with = "json::bytes32")]
    pub destination: Destination,
    /// How much.
    #[serde(with = "json::uint256")]
    pub amount: U256,
}

/// Funds a ledger holds for a target (virtual) channel, on behalf of its two parties.
///
/// The amount is never zero: [`Guarantee::new`] refuses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "GuaranteeJson", into = "GuaranteeJson")]
pub struct Guarantee {
    target: ChannelId,
    amount: U256,
    left: Destination,
    right: Destination,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GuaranteeJson {
    #[serde(with = "json::bytes32")]
    target: ChannelId,
    #[serde(with = "json::uint256")]
    amount: U256,
    #[serde(with = "json::bytes32")]
    left: Destination,
    #[serde(with = "json::bytes32")]
    right: Destination,
}

impl TryFrom<GuaranteeJson> for Guarantee {
    type Error = ProposalError;
    fn try_from(g: GuaranteeJson) -> Result<Self, ProposalError> {
        Guarantee::new(g.target, g.amount, g.left, g.right)
    }
}

impl From<Guarantee> for GuaranteeJson {
    fn from(g: Guarantee) -> Self {
        Self { target: g.target, amount: g.amount, left: g.left, right: g.right }
    }
}

impl Guarantee {
    /// A guarantee of `amount` (> 0) for `target`, funded by `left` and `right` (distinct).
    pub fn new(target: ChannelId, amount: U256, left: Destination, right: Destination) -> Result<Self, ProposalError> {
        if amount.is_zero() {
            return Err(ProposalError::ZeroAmount(target));
        }
        if left == right {
            return Err(ProposalError::SameLeftAndRight(target));
        }
        Ok(Self { target, amount, left, right })
    }

    /// The channel the funds are held for.
    pub fn target(&self) -> ChannelId {
        self.target
    }

    /// The amount held.
    pub fn amount(&self) -> U256 {
        self.amount
    }

    /// The party to the left on the target's path (pays the `left_deposit`).
    pub fn left(&self) -> Destination {
        self.left
    }

    /// The party to the right.
    pub fn right(&self) -> Destination {
        self.right
    }

    fn metadata(&self) -> Bytes {
        GuaranteeMetadata { left: self.left, right: self.right }.encode()
    }
}

/// A change to a ledger's outcome that the leader proposes and the follower countersigns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Proposal {
    /// Lock `guarantee.amount` for `guarantee.target`: `left_deposit` from the left party,
    /// the rest from the right party.
    Add {
        /// The guarantee to add.
        guarantee: Guarantee,
        /// What the left party contributes (at most the amount).
        #[serde(with = "json::uint256")]
        left_deposit: U256,
    },
    /// Release the guarantee for `target`: `left_amount` to the left party, the rest to the right.
    Remove {
        /// The target whose guarantee is released.
        #[serde(with = "json::bytes32")]
        target: ChannelId,
        /// What the left party gets back (at most the guarantee's amount).
        #[serde(with = "json::uint256")]
        left_amount: U256,
    },
    /// Appends a top-up slot of `amount` for `side` as the asset's last allocation, before
    /// `side` deposits it (ADR-0022 §4): unfunded, it takes nothing from anyone.
    Reserve {
        /// The ledger's asset (checked equal to it).
        asset: Address,
        /// Who deposits, and whom the slot pays.
        side: Side,
        /// The amount to deposit (> 0).
        #[serde(with = "json::uint256")]
        amount: U256,
    },
    /// Folds the slot into `side`'s balance, once the deposit is on chain at depth.
    Credit {
        /// The ledger's asset (checked equal to it).
        asset: Address,
        /// The slot's owner (must be the side the slot names).
        side: Side,
        /// The slot's amount (must equal it).
        #[serde(with = "json::uint256")]
        amount: U256,
    },
    /// Drops an unfunded slot of `side` (its deposit will never come).
    CancelReserve {
        /// The ledger's asset (checked equal to it).
        asset: Address,
        /// The slot's owner.
        side: Side,
    },
}

impl Proposal {
    /// The target channel this proposal is about (`None` for the top-up proposals, which are
    /// about the ledger itself).
    pub fn target(&self) -> Option<ChannelId> {
        match self {
            Proposal::Add { guarantee, .. } => Some(guarantee.target),
            Proposal::Remove { target, .. } => Some(*target),
            Proposal::Reserve { .. } | Proposal::Credit { .. } | Proposal::CancelReserve { .. } => None,
        }
    }

    /// Whether this is one of the top-up proposals (`Reserve`, `Credit`, `CancelReserve`).
    pub fn is_top_up(&self) -> bool {
        self.target().is_none()
    }
}

/// Which of the two ledger parties.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// `participants[0]`, who proposes.
    Leader,
    /// `participants[1]`, who countersigns.
    Follower,
}

/// A top-up slot (ADR-0022 §4): an allocation of `amount` to `side`, the asset's last item,
/// agreed before `side` deposits it. Last in priority order, it is paid only from what the
/// holdings hold beyond every other allocation, so it costs the other side nothing while
/// unfunded, and it pays the deposit back on any exit once funded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slot {
    /// Who deposits it, and whom it pays.
    pub side: Side,
    /// The amount (never zero in an outcome).
    #[serde(with = "json::uint256")]
    pub amount: U256,
}

/// The outcome of a ledger: the two parties' balances, the guarantees and at most one top-up
/// slot, for one asset.
///
/// Always well formed: balances first, guarantees keyed (so sorted) by target, every guarantee
/// between the two parties with a non-zero amount, a slot (if any) of a non-zero amount, and a
/// total that fits in 256 bits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LedgerOutcome {
    asset: Address,
    leader: Balance,
    follower: Balance,
    guarantees: BTreeMap<ChannelId, Guarantee>,
    slot: Option<Slot>,
}

impl LedgerOutcome {
    /// A ledger outcome with no guarantees.
    pub fn new(asset: Address, leader: Balance, follower: Balance) -> Result<Self, OutcomeError> {
        Self::with_guarantees(asset, leader, follower, [])
    }

    /// A ledger outcome with guarantees (in any order; duplicates refused).
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

    /// Parses an on-chain exit as a ledger outcome whose guarantees have `guarantee_type`.
    pub fn from_exit_with(exit: &Exit, guarantee_type: AllocationType) -> Result<Self, OutcomeError> {
        let [single] = exit.0.as_slice() else {
            return Err(OutcomeError::AssetCount(exit.0.len()));
        };
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

    /// Parses an on-chain exit as a ledger outcome (guarantees of type 2).
    pub fn from_exit(exit: &Exit) -> Result<Self, OutcomeError> {
        Self::from_exit_with(exit, AllocationType::GUARANTEE)
    }

    /// The exit the adjudicator sees, writing guarantees with `guarantee_type`
    /// (type 1 reproduces go-nitro's encoding; only type 2 is redeemable on chain).
    pub fn to_exit_with(&self, guarantee_type: AllocationType) -> Exit {
        let mut allocations = Vec::with_capacity(2 + self.guarantees.len());
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
        Exit(vec![SingleAssetExit { asset: self.asset, asset_metadata: AssetMetadata::default(), allocations }])
    }

    /// The exit the adjudicator sees (guarantees of type 2).
    pub fn to_exit(&self) -> Exit {
        self.to_exit_with(AllocationType::GUARANTEE)
    }

    /// The ledger state at `turn` (app data empty, not final).
    pub fn to_state(&self, fixed: &FixedPart, turn: TurnNum) -> State {
        State {
            participants: fixed.participants.clone(),
            channel_nonce: fixed.channel_nonce,
            app_definition: fixed.app_definition,
            challenge_duration: fixed.challenge_duration,
            outcome: self.to_exit(),
            app_data: Bytes::new(),
            turn_num: turn,
            is_final: false,
        }
    }

    /// The hash of the (non-final) ledger state at `turn`, encoded straight from this outcome.
    ///
    /// Equal to `self.to_state(fixed, turn).hash()`, without building the intermediate state.
    pub fn state_hash(&self, channel_id: ChannelId, turn: TurnNum) -> B256 {
        let mut allocations = Vec::with_capacity(2 + self.guarantees.len());
        for b in [&self.leader, &self.follower] {
            allocations.push(abi::Allocation {
                destination: b.destination,
                amount: b.amount,
                allocationType: AllocationType::SIMPLE.0,
                metadata: Bytes::new(),
            });
        }
        allocations.extend(self.guarantees.values().map(|g| abi::Allocation {
            destination: g.target,
            amount: g.amount,
            allocationType: AllocationType::GUARANTEE.0,
            metadata: g.metadata(),
        }));
        if let Some(slot) = self.slot {
            allocations.push(abi::Allocation {
                destination: self.destination(slot.side),
                amount: slot.amount,
                allocationType: AllocationType::SIMPLE.0,
                metadata: Bytes::new(),
            });
        }
        let outcome = vec![abi::SingleAssetExit {
            asset: self.asset,
            assetMetadata: abi::AssetMetadata { assetType: 0, metadata: Bytes::new() },
            allocations,
        }];
        alloy_primitives::keccak256((channel_id, Bytes::new(), outcome, turn, false).abi_encode_params())
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

    fn is_party_pair(&self, g: &Guarantee) -> bool {
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

    /// Checks `proposal` against this outcome and applies it; on error nothing changes.
    ///
    /// Money is conserved: `Add`, `Remove` and `Credit` leave the total (slot included)
    /// unchanged; only `Reserve` and `CancelReserve` change it, by the slot's amount.
    pub fn apply(&mut self, proposal: &Proposal) -> Result<(), ProposalError> {
        match *proposal {
            Proposal::Add { guarantee, left_deposit } => {
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
            Proposal::Reserve { asset, side, amount } => self.reserve(asset, side, amount)?,
            Proposal::Credit { asset, side, amount } => self.credit(asset, side, amount)?,
            Proposal::CancelReserve { asset, side } => self.cancel_reserve(asset, side)?,
        }
        Ok(())
    }
}

#[path = "ledger_error.rs"]
mod error;
#[path = "ledger_slot.rs"]
mod slot;

pub use error::{OutcomeError, ProposalError};

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;
