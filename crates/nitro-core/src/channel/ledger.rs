//! The ledger's outcome and the one rule that changes it: applying a [`Proposal`].
//!
//! Every state of a ledger is `[leader, follower, guarantees ascending by target]` for a single
//! asset. [`LedgerOutcome::apply`] is the only code that computes the effect of a proposal:
//! the leader uses it to build what it signs, the follower to check what it countersigns, and
//! the tests to predict both.

use std::collections::BTreeMap;

use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};
use thiserror::Error;

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
}

impl Proposal {
    /// The target channel this proposal is about.
    pub fn target(&self) -> ChannelId {
        match self {
            Proposal::Add { guarantee, .. } => guarantee.target,
            Proposal::Remove { target, .. } => *target,
        }
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
}

/// Why an exit is not a well-formed ledger outcome.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OutcomeError {
    /// A ledger holds exactly one asset.
    #[error("a ledger outcome has exactly one asset, got {0}")]
    AssetCount(usize),
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
}

/// The outcome of a ledger: the two parties' balances and the guarantees, for one asset.
///
/// Always well formed: balances first, guarantees keyed (so sorted) by target, every guarantee
/// between the two parties with a non-zero amount, and a total that fits in 256 bits.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LedgerOutcome {
    asset: Address,
    leader: Balance,
    follower: Balance,
    guarantees: BTreeMap<ChannelId, Guarantee>,
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
        let mut outcome = Self { asset, leader, follower, guarantees: BTreeMap::new() };
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
        for (index, a) in allocations.iter().enumerate().skip(2) {
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
        Self::with_guarantees(single.asset, leader, follower, guarantees)
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

    /// Leader + follower + Σ guarantees; `None` on overflow (never, for a built outcome).
    pub fn total(&self) -> Option<U256> {
        self.guarantees
            .values()
            .try_fold(self.leader.amount.checked_add(self.follower.amount)?, |acc, g| acc.checked_add(g.amount))
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
    /// Money is conserved: the total is the same before and after.
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
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dest(n: u8) -> Destination {
        crate::destination_of(Address::repeat_byte(n))
    }

    fn outcome(leader: u64, follower: u64) -> LedgerOutcome {
        LedgerOutcome::new(
            Address::ZERO,
            Balance { destination: dest(1), amount: U256::from(leader) },
            Balance { destination: dest(2), amount: U256::from(follower) },
        )
        .unwrap()
    }

    fn add(target: u8, amount: u64, left: u8, left_deposit: u64) -> Proposal {
        let right = if left == 1 { 2 } else { 1 };
        Proposal::Add {
            guarantee: Guarantee::new(B256::repeat_byte(target), U256::from(amount), dest(left), dest(right)).unwrap(),
            left_deposit: U256::from(left_deposit),
        }
    }

    #[test]
    fn add_takes_left_deposit_from_left_and_rest_from_right() {
        let mut o = outcome(10, 10);
        o.apply(&add(7, 5, 2, 3)).unwrap();
        assert_eq!(o.follower().amount, U256::from(7));
        assert_eq!(o.leader().amount, U256::from(8));
        assert_eq!(o.total(), Some(U256::from(20)));
    }

    #[test]
    fn remove_pays_left_amount_to_left() {
        let mut o = outcome(10, 10);
        o.apply(&add(7, 6, 1, 6)).unwrap();
        o.apply(&Proposal::Remove { target: B256::repeat_byte(7), left_amount: U256::from(1) }).unwrap();
        assert_eq!((o.leader().amount, o.follower().amount), (U256::from(5), U256::from(15)));
        assert_eq!(o.guarantees().len(), 0);
    }

    #[test]
    fn refusals_leave_the_outcome_unchanged() {
        let mut o = outcome(10, 10);
        o.apply(&add(7, 6, 1, 6)).unwrap();
        let before = o.clone();
        let refusals = [
            (add(7, 1, 1, 1), ProposalError::DuplicateTarget(B256::repeat_byte(7))),
            (
                add(8, 5, 1, 6),
                ProposalError::DepositExceedsAmount { left_deposit: U256::from(6), amount: U256::from(5) },
            ),
            (
                add(8, 5, 1, 5),
                ProposalError::InsufficientFunds {
                    side: Side::Leader,
                    needed: U256::from(5),
                    available: U256::from(4),
                },
            ),
            (
                add(8, 11, 1, 0),
                ProposalError::InsufficientFunds {
                    side: Side::Follower,
                    needed: U256::from(11),
                    available: U256::from(10),
                },
            ),
            (
                Proposal::Remove { target: B256::repeat_byte(9), left_amount: U256::ZERO },
                ProposalError::TargetNotFound(B256::repeat_byte(9)),
            ),
            (
                Proposal::Remove { target: B256::repeat_byte(7), left_amount: U256::from(7) },
                ProposalError::LeftAmountExceedsAmount { left_amount: U256::from(7), amount: U256::from(6) },
            ),
        ];
        for (p, e) in refusals {
            assert_eq!(o.apply(&p), Err(e));
            assert_eq!(o, before);
        }
        let stranger = Guarantee::new(B256::repeat_byte(8), U256::from(1), dest(1), dest(3)).unwrap();
        assert_eq!(
            o.apply(&Proposal::Add { guarantee: stranger, left_deposit: U256::ZERO }),
            Err(ProposalError::NotLedgerParties(B256::repeat_byte(8)))
        );
        assert_eq!(o, before);
    }

    #[test]
    fn guarantee_invariants() {
        assert_eq!(
            Guarantee::new(B256::ZERO, U256::ZERO, dest(1), dest(2)),
            Err(ProposalError::ZeroAmount(B256::ZERO))
        );
        assert_eq!(
            Guarantee::new(B256::ZERO, U256::from(1), dest(1), dest(1)),
            Err(ProposalError::SameLeftAndRight(B256::ZERO))
        );
        let json = serde_json::json!({"target": format!("0x{}", "00".repeat(32)), "amount": "0x0",
            "left": format!("0x{}", "00".repeat(32)), "right": format!("0x{}", "11".repeat(32))});
        assert!(serde_json::from_value::<Guarantee>(json).is_err());
    }

    #[test]
    fn exit_round_trip_and_state_hash_shortcut() {
        let mut o = outcome(100, 100);
        for t in [9u8, 3, 5] {
            o.apply(&add(t, 10, 1 + t % 2, 4)).unwrap();
        }
        let exit = o.to_exit();
        let targets: Vec<_> = exit.0[0].allocations[2..].iter().map(|a| a.destination).collect();
        assert!(targets.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(LedgerOutcome::from_exit(&exit).unwrap(), o);
        let fixed = FixedPart {
            participants: vec![Address::repeat_byte(1), Address::repeat_byte(2)],
            channel_nonce: 3,
            app_definition: Address::repeat_byte(4),
            challenge_duration: crate::U48::from(60),
        };
        let turn = crate::U48::from(7);
        assert_eq!(o.state_hash(fixed.channel_id(), turn), o.to_state(&fixed, turn).hash());
    }

    #[test]
    fn malformed_exits_are_refused() {
        let mut o = outcome(100, 100);
        o.apply(&add(9, 10, 1, 4)).unwrap();
        o.apply(&add(3, 10, 2, 4)).unwrap();
        let good = o.to_exit();
        let check = |f: &dyn Fn(&mut Exit), expect: &dyn Fn(&OutcomeError) -> bool| {
            let mut e = good.clone();
            f(&mut e);
            let err = LedgerOutcome::from_exit(&e).unwrap_err();
            assert!(expect(&err), "unexpected {err:?}");
        };
        check(&|e| e.0.push(e.0[0].clone()), &|e| matches!(e, OutcomeError::AssetCount(2)));
        check(&|e| e.0.clear(), &|e| matches!(e, OutcomeError::AssetCount(0)));
        check(&|e| e.0[0].asset_metadata.asset_type = 1, &|e| matches!(e, OutcomeError::AssetMetadata));
        check(&|e| e.0[0].allocations.truncate(1), &|e| matches!(e, OutcomeError::MissingBalances));
        check(&|e| e.0[0].allocations[1].allocation_type = AllocationType(2), &|e| {
            matches!(e, OutcomeError::NotSimple(1))
        });
        check(&|e| e.0[0].allocations[2].allocation_type = AllocationType(1), &|e| {
            matches!(e, OutcomeError::GuaranteeType { index: 2, .. })
        });
        check(&|e| e.0[0].allocations[2].metadata = Bytes::from(vec![0u8; 63]), &|e| {
            matches!(e, OutcomeError::GuaranteeMetadata(2))
        });
        check(&|e| e.0[0].allocations.swap(2, 3), &|e| matches!(e, OutcomeError::GuaranteeOrder(3)));
        check(&|e| e.0[0].allocations[3].destination = e.0[0].allocations[2].destination, &|e| {
            matches!(e, OutcomeError::GuaranteeOrder(3))
        });
        check(&|e| e.0[0].allocations[2].amount = U256::ZERO, &|e| matches!(e, OutcomeError::Guarantee { .. }));
        check(&|e| e.0[0].allocations[1].destination = e.0[0].allocations[0].destination, &|e| {
            matches!(e, OutcomeError::SameParties)
        });
        check(&|e| e.0[0].allocations[0].amount = U256::MAX, &|e| matches!(e, OutcomeError::Overflow));
        check(
            &|e| e.0[0].allocations[2].metadata = GuaranteeMetadata { left: dest(1), right: dest(5) }.encode(),
            &|e| matches!(e, OutcomeError::Guarantee { error: ProposalError::NotLedgerParties(_), .. }),
        );
    }
}
