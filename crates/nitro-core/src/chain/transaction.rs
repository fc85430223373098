//! The transactions objectives ask for: one variant per `NitroAdjudicator` function, checked
//! off chain before anything is sent.

use alloy_primitives::{Address, B256, U256};
use thiserror::Error;

use crate::{
    address_of, challenge_hash, recover_signer, AllocationType, ChannelId, Exit, GuaranteeMetadata, Signature,
    SignatureError, SignedState, SigningKey, TurnNum,
};

/// A call to the `NitroAdjudicator`, with exactly the data the contract function takes.
///
/// States are carried as [`SignedState`]s: the fixed part, the variable part and the held
/// signatures (in participant order) make the contract's `FixedPart` and `SignedVariablePart`.
/// The support proof is always empty: ledger channels run the `ConsensusApp`, whose states are
/// supported only by the signatures of every participant on the candidate itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ChainTransaction {
    /// `deposit(asset, channelId, expectedHeld, amount)`: add `amount` to the channel's holdings
    /// of `asset`, provided they are exactly `expected_held` when the transaction executes.
    Deposit {
        /// The channel credited (never an external address).
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// The asset: the zero address for ETH (sent as the transaction's value).
        #[serde(with = "crate::json::address")]
        asset: Address,
        /// What the channel must hold before this deposit (the sum of the allocations before
        /// the depositor's own in the funding order).
        #[serde(with = "crate::json::uint256")]
        expected_held: U256,
        /// How much to deposit.
        #[serde(with = "crate::json::uint256")]
        amount: U256,
    },
    /// `approve(spender, amount)` on an ERC-20 `token` (the spender: the adjudicator): lets the adjudicator pull `amount`
    /// with the deposit into `channel_id` that follows (`deposit` uses `transferFrom`).
    ///
    /// Asked for by the chain shell before a token deposit, never by an objective: the
    /// objective asks for the [`ChainTransaction::Deposit`], and the shell lands the approval
    /// it needs first, through the same transaction manager.
    Approve {
        /// The deposit the approval is for.
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// The ERC-20 contract called (never the zero address).
        #[serde(with = "crate::json::address")]
        token: Address,
        /// Who may pull the tokens: the adjudicator.
        #[serde(with = "crate::json::address")]
        spender: Address,
        /// The allowance set, in the token's smallest unit.
        #[serde(with = "crate::json::uint256")]
        amount: U256,
    },
    /// `checkpoint(fixedPart, [], candidate)`: register a supported state with a higher turn
    /// number than the chain's record, clearing any challenge.
    Checkpoint {
        /// The candidate; must be signed by every participant.
        state: SignedState,
    },
    /// `challenge(fixedPart, proof, candidate, challengerSig)`: force the channel to finalize
    /// with `state` after its challenge duration, unless a newer supported state is
    /// checkpointed or challenged with.
    Challenge {
        /// The support proof: empty for ledgers (the `ConsensusApp` needs every signature on
        /// the candidate); a virtual channel's payee proves its redemption state with the fully
        /// signed postfund state.
        #[serde(default)]
        proof: Vec<SignedState>,
        /// The candidate: signed by every participant when the proof is empty; with a proof,
        /// by whoever the channel's app requires (the payee, for a redemption).
        state: SignedState,
        /// A participant's signature on `challenge_hash(state.hash())` (see
        /// [`challenger_signature`]).
        challenger_signature: Signature,
    },
    /// `conclude(fixedPart, candidate)`: finalize the channel at once with a final state.
    Conclude {
        /// The candidate: final and signed by every participant.
        state: SignedState,
    },
    /// `concludeAndTransferAllAssets(fixedPart, candidate)`: conclude, then pay out every
    /// allocation of every asset. The contract refuses outcomes that still hold a guarantee.
    ConcludeAndTransferAllAssets {
        /// The candidate: final and signed by every participant.
        state: SignedState,
    },
    /// `transfer(assetIndex, fromChannelId, outcomeBytes, stateHash, indices)`: pay out some
    /// allocations of a finalized channel.
    Transfer {
        /// The finalized channel paying out.
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// Which asset of `outcome`.
        asset_index: usize,
        /// The outcome the chain has fingerprinted for the channel (sent ABI-encoded).
        outcome: Exit,
        /// The state hash the chain has fingerprinted: zero after `conclude`, the challenged
        /// state's hash after a challenge timed out.
        #[serde(with = "crate::json::bytes32")]
        state_hash: B256,
        /// Indices of the allocations to pay, strictly increasing; empty means all.
        indices: Vec<usize>,
    },
    /// `reclaim(ReclaimArgs)`: fold a guarantee of a finalized ledger (the source) back into
    /// its left and right allocations, according to the finalized target channel's outcome.
    Reclaim {
        /// The ledger channel holding the guarantee.
        #[serde(with = "crate::json::bytes32")]
        source_channel_id: ChannelId,
        /// The ledger's fingerprinted state hash (zero after `conclude`).
        #[serde(with = "crate::json::bytes32")]
        source_state_hash: B256,
        /// The ledger's fingerprinted outcome.
        source_outcome: Exit,
        /// Which asset of `source_outcome`.
        source_asset_index: usize,
        /// Index of the guarantee among that asset's allocations (its destination is the target).
        index_of_target_in_source: usize,
        /// The target channel's fingerprinted state hash.
        #[serde(with = "crate::json::bytes32")]
        target_state_hash: B256,
        /// The target channel's fingerprinted outcome; allocations 0 and 1 go to the guarantee's
        /// left and right.
        target_outcome: Exit,
        /// Which asset of `target_outcome` (must be the same asset).
        target_asset_index: usize,
    },
}

/// Why a [`ChainTransaction`] is refused before it is sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChainTransactionError {
    /// An `approve` of the zero address: ETH is sent as value, never approved.
    #[error("ETH (the zero address) is not approved: a deposit of ETH carries its value")]
    ApproveEth,
    /// The candidate state lacks some participants' signatures.
    #[error("state {turn_num} of channel {channel_id} is not signed by participants {missing:?}")]
    NotFullySigned {
        /// The channel.
        channel_id: ChannelId,
        /// The state's turn number.
        turn_num: TurnNum,
        /// Indices of the participants whose signature is missing.
        missing: Vec<usize>,
    },
    /// `conclude` needs a final state.
    #[error("state {turn_num} of channel {channel_id} is not final")]
    NotFinal {
        /// The channel.
        channel_id: ChannelId,
        /// The state's turn number.
        turn_num: TurnNum,
    },
    /// The challenger's signature is malformed.
    #[error("challenger signature: {0}")]
    ChallengerSignature(#[from] SignatureError),
    /// The challenger's signature recovers to someone who is not a participant.
    #[error("challenger {0} is not a participant of the channel")]
    ChallengerNotParticipant(Address),
    /// A deposit into an external address (a channel id whose top 12 bytes are zero).
    #[error("cannot deposit into external destination {0}")]
    ExternalDestination(ChannelId),
    /// An asset index past the end of the outcome.
    #[error("asset index {index} out of range ({assets} assets)")]
    AssetIndexOutOfRange {
        /// The index given.
        index: usize,
        /// Assets in the outcome.
        assets: usize,
    },
    /// An allocation index past the end of the allocations.
    #[error("allocation index {index} out of range ({allocations} allocations)")]
    AllocationIndexOutOfRange {
        /// The index given.
        index: usize,
        /// Allocations of the asset.
        allocations: usize,
    },
    /// `transfer` indices must be strictly increasing.
    #[error("transfer indices must be strictly increasing")]
    IndicesNotIncreasing,
    /// A guarantee cannot be paid out by `transfer`; it is redeemed with `reclaim`.
    #[error("allocation {index} is a guarantee: reclaim it instead of transferring it")]
    TransfersGuarantee {
        /// Index of the guarantee.
        index: usize,
    },
    /// `reclaim` names an allocation that is not a guarantee.
    #[error("allocation {index} is not a guarantee")]
    NotAGuarantee {
        /// Index of the allocation.
        index: usize,
    },
    /// The guarantee's metadata is not `left ‖ right` (64 bytes).
    #[error("guarantee {index} has malformed metadata")]
    BadGuaranteeMetadata {
        /// Index of the guarantee.
        index: usize,
    },
    /// Source and target assets differ.
    #[error("guarantee asset {source_asset} differs from target asset {target_asset}")]
    AssetMismatch {
        /// Asset of the guarantee in the ledger.
        source_asset: Address,
        /// Asset of the target's outcome.
        target_asset: Address,
    },
    /// The target outcome must have (at least) a left and a right allocation.
    #[error("target outcome has {0} allocations, needs at least 2")]
    TargetTooShort(usize),
}

/// The signature a challenger submits with `challenge`: `key` signs
/// `challenge_hash(state.hash())` (with the Ethereum prefix, as every Nitro signature).
pub fn challenger_signature(state: &SignedState, key: &SigningKey) -> Signature {
    key.sign(&challenge_hash(&state.hash()))
}

fn require_fully_signed(state: &SignedState) -> Result<(), ChainTransactionError> {
    let missing: Vec<usize> =
        state.signatures().iter().enumerate().filter_map(|(i, s)| s.is_none().then_some(i)).collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ChainTransactionError::NotFullySigned {
            channel_id: state.channel_id(),
            turn_num: state.state().turn_num,
            missing,
        })
    }
}

fn require_final(state: &SignedState) -> Result<(), ChainTransactionError> {
    if state.state().is_final {
        Ok(())
    } else {
        Err(ChainTransactionError::NotFinal { channel_id: state.channel_id(), turn_num: state.state().turn_num })
    }
}

fn asset_of(outcome: &Exit, index: usize) -> Result<&crate::SingleAssetExit, ChainTransactionError> {
    outcome.0.get(index).ok_or(ChainTransactionError::AssetIndexOutOfRange { index, assets: outcome.0.len() })
}

impl ChainTransaction {
    /// A checkpoint of `state`, refused unless every participant signed it.
    pub fn checkpoint(state: SignedState) -> Result<Self, ChainTransactionError> {
        let tx = Self::Checkpoint { state };
        tx.validate()?;
        Ok(tx)
    }

    /// A challenge with `state` (signed by every participant), signed as challenger by
    /// `challenger` (a participant).
    pub fn challenge(state: SignedState, challenger: &SigningKey) -> Result<Self, ChainTransactionError> {
        Self::challenge_with_proof(Vec::new(), state, challenger)
    }

    /// A challenge with `state` supported by `proof` (fully signed states), signed as
    /// challenger by `challenger` (a participant).
    pub fn challenge_with_proof(
        proof: Vec<SignedState>,
        state: SignedState,
        challenger: &SigningKey,
    ) -> Result<Self, ChainTransactionError> {
        let challenger_signature = challenger_signature(&state, challenger);
        let tx = Self::Challenge { proof, state, challenger_signature };
        tx.validate()?;
        Ok(tx)
    }

    /// A conclude with `state`, refused unless it is final and signed by everyone.
    pub fn conclude(state: SignedState) -> Result<Self, ChainTransactionError> {
        let tx = Self::Conclude { state };
        tx.validate()?;
        Ok(tx)
    }

    /// A conclude-and-pay-out with `state`, refused unless it is final and signed by everyone.
    pub fn conclude_and_transfer_all_assets(state: SignedState) -> Result<Self, ChainTransactionError> {
        let tx = Self::ConcludeAndTransferAllAssets { state };
        tx.validate()?;
        Ok(tx)
    }

    /// The channel the transaction acts on (the source ledger for `reclaim`).
    pub fn channel_id(&self) -> ChannelId {
        match self {
            Self::Deposit { channel_id, .. } | Self::Approve { channel_id, .. } | Self::Transfer { channel_id, .. } => {
                *channel_id
            }
            Self::Checkpoint { state }
            | Self::Challenge { state, .. }
            | Self::Conclude { state }
            | Self::ConcludeAndTransferAllAssets { state } => state.channel_id(),
            Self::Reclaim { source_channel_id, .. } => *source_channel_id,
        }
    }

    /// The contract function's name, for logs and errors.
    pub fn function_name(&self) -> &'static str {
        match self {
            Self::Deposit { .. } => "deposit",
            Self::Approve { .. } => "approve",
            Self::Checkpoint { .. } => "checkpoint",
            Self::Challenge { .. } => "challenge",
            Self::Conclude { .. } => "conclude",
            Self::ConcludeAndTransferAllAssets { .. } => "concludeAndTransferAllAssets",
            Self::Transfer { .. } => "transfer",
            Self::Reclaim { .. } => "reclaim",
        }
    }

    /// The ETH value the transaction must carry (a deposit of ETH sends its amount).
    pub fn value(&self) -> U256 {
        match self {
            Self::Deposit { asset, amount, .. } if asset.is_zero() => *amount,
            _ => U256::ZERO,
        }
    }

    /// For a deposit of an ERC-20 token: the token and the amount (`None` for ETH and for
    /// every other transaction).
    pub fn token_deposit(&self) -> Option<(Address, U256)> {
        match self {
            Self::Deposit { asset, amount, .. } if !asset.is_zero() => Some((*asset, *amount)),
            _ => None,
        }
    }

    /// Checks everything the contract would check that can be known off chain.
    pub fn validate(&self) -> Result<(), ChainTransactionError> {
        match self {
            Self::Deposit { channel_id, .. } => {
                if address_of(channel_id).is_some() {
                    return Err(ChainTransactionError::ExternalDestination(*channel_id));
                }
                Ok(())
            }
            Self::Approve { token, .. } => {
                if token.is_zero() {
                    return Err(ChainTransactionError::ApproveEth);
                }
                Ok(())
            }
            Self::Checkpoint { state } => require_fully_signed(state),
            Self::Challenge { proof, state, challenger_signature } => {
                if proof.is_empty() {
                    require_fully_signed(state)?;
                } else {
                    for p in proof {
                        require_fully_signed(p)?;
                    }
                    if state.signatures().iter().all(Option::is_none) {
                        return Err(ChainTransactionError::NotFullySigned {
                            channel_id: state.channel_id(),
                            turn_num: state.state().turn_num,
                            missing: (0..state.signatures().len()).collect(),
                        });
                    }
                }
                let challenger = recover_signer(&challenge_hash(&state.hash()), challenger_signature)?;
                if state.state().participants.contains(&challenger) {
                    Ok(())
                } else {
                    Err(ChainTransactionError::ChallengerNotParticipant(challenger))
                }
            }
            Self::Conclude { state } => {
                require_final(state)?;
                require_fully_signed(state)
            }
            Self::ConcludeAndTransferAllAssets { state } => {
                require_final(state)?;
                require_fully_signed(state)?;
                for exit in &state.state().outcome.0 {
                    if let Some(index) =
                        exit.allocations.iter().position(|a| a.allocation_type == AllocationType::GUARANTEE)
                    {
                        return Err(ChainTransactionError::TransfersGuarantee { index });
                    }
                }
                Ok(())
            }
            Self::Transfer { asset_index, outcome, indices, .. } => {
                let allocations = &asset_of(outcome, *asset_index)?.allocations;
                if indices.windows(2).any(|w| w[0] >= w[1]) {
                    return Err(ChainTransactionError::IndicesNotIncreasing);
                }
                if let Some(&index) = indices.iter().find(|&&i| i >= allocations.len()) {
                    return Err(ChainTransactionError::AllocationIndexOutOfRange {
                        index,
                        allocations: allocations.len(),
                    });
                }
                let paid: Vec<usize> =
                    if indices.is_empty() { (0..allocations.len()).collect() } else { indices.clone() };
                if let Some(index) =
                    paid.into_iter().find(|&i| allocations[i].allocation_type == AllocationType::GUARANTEE)
                {
                    return Err(ChainTransactionError::TransfersGuarantee { index });
                }
                Ok(())
            }
            Self::Reclaim {
                source_outcome,
                source_asset_index,
                index_of_target_in_source,
                target_outcome,
                target_asset_index,
                ..
            } => {
                let source = asset_of(source_outcome, *source_asset_index)?;
                let index = *index_of_target_in_source;
                let guarantee =
                    source.allocations.get(index).ok_or(ChainTransactionError::AllocationIndexOutOfRange {
                        index,
                        allocations: source.allocations.len(),
                    })?;
                if guarantee.allocation_type != AllocationType::GUARANTEE {
                    return Err(ChainTransactionError::NotAGuarantee { index });
                }
                if GuaranteeMetadata::decode(&guarantee.metadata).is_none() {
                    return Err(ChainTransactionError::BadGuaranteeMetadata { index });
                }
                let target = asset_of(target_outcome, *target_asset_index)?;
                if target.asset != source.asset {
                    return Err(ChainTransactionError::AssetMismatch {
                        source_asset: source.asset,
                        target_asset: target.asset,
                    });
                }
                if target.allocations.len() < 2 {
                    return Err(ChainTransactionError::TargetTooShort(target.allocations.len()));
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use crate::{destination_of, Allocation};

    #[test]
    fn checkpoint_and_conclude_need_every_signature() {
        let half = signed(ledger_state(3, true, false), &[1]);
        assert!(matches!(
            ChainTransaction::checkpoint(half.clone()),
            Err(ChainTransactionError::NotFullySigned { missing, .. }) if missing == vec![1]
        ));
        assert!(matches!(ChainTransaction::conclude(half), Err(ChainTransactionError::NotFullySigned { .. })));
        let full = signed(ledger_state(3, true, false), &[1, 2]);
        assert!(ChainTransaction::checkpoint(full.clone()).is_ok());
        assert!(ChainTransaction::conclude_and_transfer_all_assets(full).is_ok());
    }

    #[test]
    fn conclude_needs_a_final_state_and_no_guarantee_to_pay_out() {
        let not_final = signed(ledger_state(3, false, false), &[1, 2]);
        assert!(matches!(ChainTransaction::conclude(not_final), Err(ChainTransactionError::NotFinal { .. })));
        let with_guarantee = signed(ledger_state(3, true, true), &[1, 2]);
        assert!(ChainTransaction::conclude(with_guarantee.clone()).is_ok());
        assert_eq!(
            ChainTransaction::conclude_and_transfer_all_assets(with_guarantee),
            Err(ChainTransactionError::TransfersGuarantee { index: 2 })
        );
    }

    #[test]
    fn challenger_must_be_a_participant() {
        let state = signed(ledger_state(2, false, false), &[1, 2]);
        let tx = ChainTransaction::challenge(state.clone(), &key(2)).unwrap();
        assert_eq!(tx.channel_id(), state.channel_id());
        let outsider = ChainTransaction::Challenge {
            proof: vec![],
            state: state.clone(),
            challenger_signature: challenger_signature(&state, &key(3)),
        };
        assert_eq!(outsider.validate(), Err(ChainTransactionError::ChallengerNotParticipant(key(3).address())));
        // A signature on the bare state hash is not a challenger signature.
        let wrong_digest = ChainTransaction::Challenge {
            proof: vec![],
            state: state.clone(),
            challenger_signature: key(1).sign(&state.hash()),
        };
        assert!(wrong_digest.validate().is_err());
    }

    #[test]
    fn deposits_into_addresses_are_refused_and_eth_deposits_carry_value() {
        let to_address = ChainTransaction::Deposit {
            channel_id: destination_of(key(1).address()),
            asset: Address::ZERO,
            expected_held: U256::ZERO,
            amount: U256::from(1),
        };
        assert!(matches!(to_address.validate(), Err(ChainTransactionError::ExternalDestination(_))));
        let ok = ChainTransaction::Deposit {
            channel_id: B256::repeat_byte(1),
            asset: Address::ZERO,
            expected_held: U256::ZERO,
            amount: U256::from(4),
        };
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.value(), U256::from(4));
    }

    #[test]
    fn transfer_and_reclaim_arguments_are_checked() {
        let outcome = ledger_state(1, false, true).outcome;
        let transfer = |indices: Vec<usize>, asset_index| ChainTransaction::Transfer {
            channel_id: B256::repeat_byte(1),
            asset_index,
            outcome: outcome.clone(),
            state_hash: B256::ZERO,
            indices,
        };
        assert_eq!(transfer(vec![0, 1], 0).validate(), Ok(()));
        assert_eq!(transfer(vec![1, 0], 0).validate(), Err(ChainTransactionError::IndicesNotIncreasing));
        assert_eq!(transfer(vec![], 0).validate(), Err(ChainTransactionError::TransfersGuarantee { index: 2 }));
        assert!(matches!(
            transfer(vec![5], 0).validate(),
            Err(ChainTransactionError::AllocationIndexOutOfRange { .. })
        ));
        assert!(matches!(transfer(vec![0], 1).validate(), Err(ChainTransactionError::AssetIndexOutOfRange { .. })));

        let target = exit(vec![
            Allocation::simple(B256::repeat_byte(1), U256::from(1)),
            Allocation::simple(B256::repeat_byte(2), U256::from(2)),
        ]);
        let reclaim = |index| ChainTransaction::Reclaim {
            source_channel_id: B256::repeat_byte(1),
            source_state_hash: B256::ZERO,
            source_outcome: outcome.clone(),
            source_asset_index: 0,
            index_of_target_in_source: index,
            target_state_hash: B256::ZERO,
            target_outcome: target.clone(),
            target_asset_index: 0,
        };
        assert_eq!(reclaim(2).validate(), Ok(()));
        assert_eq!(reclaim(0).validate(), Err(ChainTransactionError::NotAGuarantee { index: 0 }));
        assert!(matches!(reclaim(3).validate(), Err(ChainTransactionError::AllocationIndexOutOfRange { .. })));
    }
}
