//! Why a proposal cannot be applied to a ledger outcome, and why an exit is not one.

use alloy_primitives::{Address, U256};
use thiserror::Error;

use super::{Side, Slot};
use crate::ChannelId;

/// Why a proposal cannot be applied to a ledger outcome.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProposalError {
    /// An `Add` for a target that already has a guarantee.
    #[error("a guarantee for target {0} already exists")]
    DuplicateTarget(ChannelId),
    /// A `Remove` for a target without a guarantee.
    #[error("no guarantee for target {0}")]
    TargetNotFound(ChannelId),
    /// `left_deposit` exceeds the guarantee's amount.
    #[error("left deposit {left_deposit} exceeds the guarantee amount {amount}")]
    DepositExceedsAmount {
        /// The left deposit asked for.
        left_deposit: U256,
        /// The guarantee's amount.
        amount: U256,
    },
    /// `left_amount` exceeds the guarantee's amount.
    #[error("left amount {left_amount} exceeds the guarantee amount {amount}")]
    LeftAmountExceedsAmount {
        /// The left amount asked for.
        left_amount: U256,
        /// The guarantee's amount.
        amount: U256,
    },
    /// A party cannot cover its share.
    #[error("{side:?} has {available}, needs {needed}")]
    InsufficientFunds {
        /// Who lacks funds.
        side: Side,
        /// Its share.
        needed: U256,
        /// Its balance.
        available: U256,
    },
    /// The guarantee's left and right are not the ledger's two parties.
    #[error("guarantee for {0}: left and right must be the ledger's leader and follower")]
    NotLedgerParties(ChannelId),
    /// Left and right are the same party.
    #[error("guarantee for {0}: left and right are the same party")]
    SameLeftAndRight(ChannelId),
    /// A guarantee of zero.
    #[error("guarantee for {0} has a zero amount")]
    ZeroAmount(ChannelId),
    /// An amount would overflow 256 bits.
    #[error("arithmetic overflow")]
    Overflow,
    /// An `Add` or a top-up proposal names an asset the ledger does not hold (its asset list
    /// is fixed at opening).
    #[error("the ledger holds no asset {0}")]
    UnknownAsset(Address),
    /// A `Reserve` of zero.
    #[error("a top-up slot of zero")]
    ZeroTopUp,
    /// A `Reserve` while a slot is pending (at most one at a time).
    #[error("a top-up slot of {amount} for {side:?} is already pending")]
    SlotPending {
        /// Whose slot.
        side: Side,
        /// Its amount.
        amount: U256,
    },
    /// A `Credit` or `CancelReserve` without a slot.
    #[error("no top-up slot is pending")]
    NoSlot,
    /// A `Credit` or `CancelReserve` that does not match the slot (another side or amount).
    #[error("the pending slot is {slot:?}, not {side:?} with {amount}")]
    SlotMismatch {
        /// The pending slot.
        slot: Slot,
        /// The side named.
        side: Side,
        /// The amount named (the slot's, for a `CancelReserve`).
        amount: U256,
    },
}

/// Why an exit is not a well-formed ledger outcome.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OutcomeError {
    /// A ledger holds at least one asset.
    #[error("a ledger outcome has at least one asset, got {0}")]
    AssetCount(usize),
    /// Assets not strictly ascending by address (a duplicate, or out of order), at this index.
    #[error("assets must be strictly ascending by address (asset {0})")]
    AssetOrder(usize),
    /// An asset whose leader or follower is not the first asset's.
    #[error("asset {0} pays other parties than the first asset")]
    PartiesDiffer(usize),
    /// A target guaranteed in two assets (a guarantee lives in its virtual channel's asset).
    #[error("target {0} is guaranteed in two assets")]
    TargetInTwoAssets(ChannelId),
    /// A malformed exit of the asset at `index` (≥ 1).
    #[error("asset {index}: {error}")]
    InAsset {
        /// The asset's index in the exit.
        index: usize,
        /// What is wrong with its exit.
        error: Box<OutcomeError>,
    },
    /// Non-default asset metadata.
    #[error("a ledger outcome's asset metadata must be the default (type 0, empty)")]
    AssetMetadata,
    /// Fewer than two allocations.
    #[error("a ledger outcome starts with the leader's and the follower's allocations")]
    MissingBalances,
    /// A balance allocation with a type other than simple, or with metadata.
    #[error("allocation {0} must be a simple allocation without metadata")]
    NotSimple(usize),
    /// A guarantee allocation with the wrong type.
    #[error("allocation {index} has type {found}, a guarantee has type {expected}")]
    GuaranteeType {
        /// Allocation index.
        index: usize,
        /// Its type.
        found: u8,
        /// The guarantee type expected.
        expected: u8,
    },
    /// Guarantee metadata that is not `left ‖ right`.
    #[error("allocation {0} has malformed guarantee metadata")]
    GuaranteeMetadata(usize),
    /// Guarantees not strictly ascending by target.
    #[error("guarantees must be strictly ascending by target (allocation {0})")]
    GuaranteeOrder(usize),
    /// A guarantee that breaks the guarantee rules (zero amount, parties).
    #[error("allocation {index}: {error}")]
    Guarantee {
        /// Allocation index.
        index: usize,
        /// The rule broken.
        error: ProposalError,
    },
    /// The two balances pay the same destination.
    #[error("the leader and the follower balances pay the same destination")]
    SameParties,
    /// The total exceeds 256 bits.
    #[error("the ledger's total overflows 256 bits")]
    Overflow,
    /// A simple allocation after the guarantees that is not a top-up slot: not last, not
    /// paying one of the two parties, or of zero.
    #[error("allocation {0} is not a valid top-up slot (last, non-zero, paying a party)")]
    Slot(usize),
}
