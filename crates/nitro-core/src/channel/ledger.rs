//! The ledger's outcome and the one rule that changes it: applying a [`Proposal`].
//!
//! Every state of a ledger is `[leader, follower, guarantees ascending by target, top-up slot?]`
//! per asset (ADR-0022 §1–2; the slot is a simple allocation to one party, see [`Slot`] and ADR-0022
//! §4). [`LedgerOutcome::apply`] is the only code that computes the effect of a proposal:
//! the leader uses it to build what it signs, the follower to check what it countersigns, and
//! the tests to predict both.

use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

use crate::{abi, json, AllocationType, ChannelId, Destination, Exit, FixedPart, GuaranteeMetadata, State, TurnNum};

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
        /// The asset whose exit holds the guarantee (the virtual channel's asset). Records and
        /// messages from before multi-asset ledgers have none: ETH.
        #[serde(default)]
        asset: Address,
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
        /// The asset whose exit holds the slot (the ledger must hold it).
        asset: Address,
        /// Who deposits, and whom the slot pays.
        side: Side,
        /// The amount to deposit (> 0).
        #[serde(with = "json::uint256")]
        amount: U256,
    },
    /// Folds the slot into `side`'s balance, once the deposit is on chain at depth.
    Credit {
        /// The asset whose exit holds the slot (the ledger must hold it).
        asset: Address,
        /// The slot's owner (must be the side the slot names).
        side: Side,
        /// The slot's amount (must equal it).
        #[serde(with = "json::uint256")]
        amount: U256,
    },
    /// Drops an unfunded slot of `side` (its deposit will never come).
    CancelReserve {
        /// The asset whose exit holds the slot (the ledger must hold it).
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

/// The outcome of a ledger: one [`AssetOutcome`] per asset (ADR-0022 §1).
///
/// Always well formed: at least one asset, assets strictly ascending by address (ETH, the zero
/// address, first), the same two parties in every asset, and a target guaranteed in at most one
/// asset (so `Remove`, the `GuaranteeManager` and `DuplicateTarget` stay keyed by target). The
/// asset list is fixed for the ledger's life: proposals change amounts, never the assets.
/// A one-asset ledger encodes exactly as a single-asset ledger always has.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LedgerOutcome {
    assets: Vec<AssetOutcome>,
}

impl LedgerOutcome {
    /// A one-asset ledger outcome with no guarantees.
    pub fn new(asset: Address, leader: Balance, follower: Balance) -> Result<Self, OutcomeError> {
        Self::with_guarantees(asset, leader, follower, [])
    }

    /// A one-asset ledger outcome with guarantees (in any order; duplicates refused).
    pub fn with_guarantees(
        asset: Address,
        leader: Balance,
        follower: Balance,
        guarantees: impl IntoIterator<Item = Guarantee>,
    ) -> Result<Self, OutcomeError> {
        Ok(Self { assets: vec![AssetOutcome::with_guarantees(asset, leader, follower, guarantees)?] })
    }

    /// A ledger outcome of several assets: strictly ascending by asset, the same two parties in
    /// each, every target in at most one asset.
    pub fn from_assets(assets: Vec<AssetOutcome>) -> Result<Self, OutcomeError> {
        let Some(first) = assets.first() else {
            return Err(OutcomeError::AssetCount(0));
        };
        let parties = (first.leader.destination, first.follower.destination);
        let mut targets = std::collections::BTreeSet::new();
        for (index, a) in assets.iter().enumerate() {
            if index > 0 && assets[index - 1].asset >= a.asset {
                return Err(OutcomeError::AssetOrder(index));
            }
            if (a.leader.destination, a.follower.destination) != parties {
                return Err(OutcomeError::PartiesDiffer(index));
            }
            if let Some(g) = a.guarantees().find(|g| !targets.insert(g.target)) {
                return Err(OutcomeError::TargetInTwoAssets(g.target));
            }
        }
        Ok(Self { assets })
    }

    /// Parses an on-chain exit as a ledger outcome whose guarantees have `guarantee_type`.
    ///
    /// An error in the first asset's exit is reported as is (as for a one-asset ledger); one in
    /// a later asset's exit is wrapped in [`OutcomeError::InAsset`].
    pub fn from_exit_with(exit: &Exit, guarantee_type: AllocationType) -> Result<Self, OutcomeError> {
        let assets = exit
            .0
            .iter()
            .enumerate()
            .map(|(index, single)| {
                AssetOutcome::from_single(single, guarantee_type).map_err(|error| match index {
                    0 => error,
                    _ => OutcomeError::InAsset { index, error: Box::new(error) },
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_assets(assets)
    }

    /// Parses an on-chain exit as a ledger outcome (guarantees of type 2).
    pub fn from_exit(exit: &Exit) -> Result<Self, OutcomeError> {
        Self::from_exit_with(exit, AllocationType::GUARANTEE)
    }

    /// The exit the adjudicator sees, writing guarantees with `guarantee_type`
    /// (type 1 reproduces go-nitro's encoding; only type 2 is redeemable on chain).
    pub fn to_exit_with(&self, guarantee_type: AllocationType) -> Exit {
        Exit(self.assets.iter().map(|a| a.to_single(guarantee_type)).collect())
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
        let outcome: Vec<abi::SingleAssetExit> = self.assets.iter().map(AssetOutcome::to_abi).collect();
        alloy_primitives::keccak256((channel_id, Bytes::new(), outcome, turn, false).abi_encode_params())
    }

    /// Every asset's outcome, ascending by asset.
    pub fn assets(&self) -> &[AssetOutcome] {
        &self.assets
    }

    /// The outcome of `asset`, if the ledger holds it.
    pub fn exit(&self, asset: Address) -> Option<&AssetOutcome> {
        self.assets.iter().find(|a| a.asset == asset)
    }

    /// The index of `asset` in the exit (what `transfer` and `reclaim` name), if held.
    pub fn asset_index(&self, asset: Address) -> Option<usize> {
        self.assets.iter().position(|a| a.asset == asset)
    }

    /// The asset whose exit holds the guarantee for `target`, if any.
    pub fn asset_of(&self, target: &ChannelId) -> Option<Address> {
        self.assets.iter().find(|a| a.guarantees.contains_key(target)).map(|a| a.asset)
    }

    /// Whether the ledger holds more than one asset.
    pub fn is_multi_asset(&self) -> bool {
        self.assets.len() > 1
    }

    /// The first asset's outcome (ETH when the ledger holds it; the only one of a one-asset
    /// ledger). The single-asset accessors below read it.
    pub fn primary(&self) -> &AssetOutcome {
        // `from_assets` refuses an empty list, and nothing removes an asset.
        &self.assets[0]
    }

    /// The first asset (the only one of a one-asset ledger).
    pub fn asset(&self) -> Address {
        self.primary().asset
    }

    /// The leader's balance in the first asset.
    pub fn leader(&self) -> &Balance {
        &self.primary().leader
    }

    /// The follower's balance in the first asset.
    pub fn follower(&self) -> &Balance {
        &self.primary().follower
    }

    /// Every guarantee, asset by asset, each asset's ascending by target.
    pub fn guarantees(&self) -> impl ExactSizeIterator<Item = &Guarantee> {
        Counted { inner: self.assets.iter().flat_map(|a| a.guarantees.values()), left: self.guarantee_count() }
    }

    /// The number of guarantees over all assets.
    pub fn guarantee_count(&self) -> usize {
        self.assets.iter().map(|a| a.guarantees.len()).sum()
    }

    /// The guarantee for `target`, in whichever asset holds it.
    pub fn guarantee(&self, target: &ChannelId) -> Option<&Guarantee> {
        self.assets.iter().find_map(|a| a.guarantees.get(target))
    }

    /// The first asset's pending top-up slot, if any.
    pub fn slot(&self) -> Option<Slot> {
        self.primary().slot
    }

    /// Whether any asset has a pending top-up slot.
    pub fn has_slot(&self) -> bool {
        self.assets.iter().any(|a| a.slot.is_some())
    }

    /// The first asset's total (leader + follower + Σ guarantees + slot).
    pub fn total(&self) -> Option<U256> {
        self.primary().total()
    }

    /// The first asset's total without its slot.
    pub fn total_without_slot(&self) -> Option<U256> {
        self.primary().total_without_slot()
    }

    /// The destination of `side`'s balance (the same in every asset).
    pub fn destination(&self, side: Side) -> Destination {
        self.primary().destination(side)
    }

    fn exit_mut(&mut self, asset: Address) -> Result<&mut AssetOutcome, ProposalError> {
        self.assets.iter_mut().find(|a| a.asset == asset).ok_or(ProposalError::UnknownAsset(asset))
    }

    /// Checks `proposal` against this outcome and applies it; on error nothing changes.
    ///
    /// An `Add` and the top-up proposals act on the asset they name (refused if the ledger
    /// does not hold it; an `Add` also if its target is guaranteed in any asset); a `Remove` on
    /// the asset holding its target. Money is conserved per asset: `Add`, `Remove` and
    /// `Credit` leave each asset's total (slot included) unchanged; only `Reserve` and
    /// `CancelReserve` change their asset's total, by the slot's amount.
    pub fn apply(&mut self, proposal: &Proposal) -> Result<(), ProposalError> {
        let asset = match *proposal {
            Proposal::Add { guarantee, asset, .. } => {
                if self.guarantee(&guarantee.target).is_some() {
                    return Err(ProposalError::DuplicateTarget(guarantee.target));
                }
                asset
            }
            Proposal::Remove { target, .. } => self.asset_of(&target).ok_or(ProposalError::TargetNotFound(target))?,
            Proposal::Reserve { asset, .. }
            | Proposal::Credit { asset, .. }
            | Proposal::CancelReserve { asset, .. } => asset,
        };
        self.exit_mut(asset)?.apply(proposal)
    }

    /// Undoes a `Credit` of `amount` to `side` in `asset` that just applied (see
    /// [`AssetOutcome`]'s `uncredit`); refuses, changing nothing, anything else.
    pub(crate) fn uncredit(&mut self, asset: Address, side: Side, amount: U256) -> Result<(), ProposalError> {
        self.exit_mut(asset)?.uncredit(side, amount)
    }
}

/// An iterator that knows how many items it has left (a flattening of per-asset maps).
struct Counted<I> {
    inner: I,
    left: usize,
}

impl<I: Iterator> Iterator for Counted<I> {
    type Item = I::Item;
    fn next(&mut self) -> Option<I::Item> {
        let item = self.inner.next()?;
        self.left = self.left.saturating_sub(1);
        Some(item)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<I: Iterator> ExactSizeIterator for Counted<I> {}

#[path = "ledger_asset.rs"]
mod asset;
#[path = "ledger_error.rs"]
mod error;
#[path = "ledger_slot.rs"]
mod slot;

pub use asset::AssetOutcome;
pub use error::{OutcomeError, ProposalError};

#[cfg(test)]
#[path = "ledger_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "ledger_multi_tests.rs"]
mod multi_tests;
