//! What the core asks of the chain and hears from it, as plain data (sans-IO): the
//! transactions objectives want submitted and the adjudicator events they react to.
//! The `nitro-chain` crate carries these out against a real `NitroAdjudicator`.
//!
//! Every transaction names exactly the arguments of one `NitroAdjudicator` function, and
//! [`ChainTransaction::validate`] refuses, before anything is sent, what the contract would
//! revert for reasons visible off chain (a state not signed by everyone, a conclude with a
//! non-final state, a challenger who is not a participant, out-of-range indices, ...).
//!
//! The adjudicator records, per channel, a packed [`ChannelStatus`]; its fingerprint commits to
//! the registered state hash and outcome hash. Two facts about the deployed contract matter for
//! `transfer` and `reclaim`: after `conclude` the registered state hash is **zero** (only the
//! outcome is fingerprinted), while after a challenge times out it is the challenged state's
//! hash; and both functions take the outcome as ABI-encoded bytes ([`Exit::encode`]).

use alloy_primitives::{keccak256, Address, B256, U256};
use alloy_sol_types::SolValue;
use thiserror::Error;

use crate::{
    address_of, challenge_hash, recover_signer, AllocationType, ChannelId, Exit, FixedPart, GuaranteeMetadata,
    Signature, SignatureError, SignedState, SignedStateError, SigningKey, State, TurnNum, VariablePart,
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
    /// `checkpoint(fixedPart, [], candidate)`: register a supported state with a higher turn
    /// number than the chain's record, clearing any challenge.
    Checkpoint {
        /// The candidate; must be signed by every participant.
        state: SignedState,
    },
    /// `challenge(fixedPart, [], candidate, challengerSig)`: force the channel to finalize with
    /// `state` after its challenge duration, unless a newer supported state is checkpointed.
    Challenge {
        /// The candidate; must be signed by every participant.
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

    /// A challenge with `state`, signed as challenger by `challenger` (a participant).
    pub fn challenge(state: SignedState, challenger: &SigningKey) -> Result<Self, ChainTransactionError> {
        let challenger_signature = challenger_signature(&state, challenger);
        let tx = Self::Challenge { state, challenger_signature };
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
            Self::Deposit { channel_id, .. } | Self::Transfer { channel_id, .. } => *channel_id,
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

    /// Checks everything the contract would check that can be known off chain.
    pub fn validate(&self) -> Result<(), ChainTransactionError> {
        match self {
            Self::Deposit { channel_id, .. } => {
                if address_of(channel_id).is_some() {
                    return Err(ChainTransactionError::ExternalDestination(*channel_id));
                }
                Ok(())
            }
            Self::Checkpoint { state } => require_fully_signed(state),
            Self::Challenge { state, challenger_signature } => {
                require_fully_signed(state)?;
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

/// A state as the adjudicator emitted it in a `ChallengeRegistered` event: a variable part and
/// the signatures submitted with it (unverified: they are what the challenger sent).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SubmittedState {
    /// The variable part.
    pub variable_part: VariablePart,
    /// The signatures, in the order submitted.
    pub signatures: Vec<Signature>,
}

impl SubmittedState {
    /// Its turn number.
    pub fn turn_num(&self) -> TurnNum {
        self.variable_part.turn_num
    }

    /// The full state, given the channel's fixed part.
    pub fn state(&self, fixed: &FixedPart) -> State {
        State::new(fixed.clone(), self.variable_part.clone())
    }

    /// The state with its signatures verified against the participants of `fixed`.
    pub fn signed_state(&self, fixed: &FixedPart) -> Result<SignedState, SignedStateError> {
        let mut signed = SignedState::new(self.state(fixed));
        for signature in &self.signatures {
            signed.add_signature(*signature)?;
        }
        Ok(signed)
    }
}

/// An event of the `NitroAdjudicator` that concerns a channel, with the block it is in.
///
/// Events are delivered in chain order (block, then log index).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum ChainEvent {
    /// `Deposited(destination, asset, destinationHoldings)`: the channel now holds `now_held`.
    Deposited {
        /// The channel credited.
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// Block of the event.
        block_number: u64,
        /// The asset deposited.
        #[serde(with = "crate::json::address")]
        asset: Address,
        /// The channel's holdings of `asset` after the deposit.
        #[serde(with = "crate::json::uint256")]
        now_held: U256,
    },
    /// `AllocationUpdated(channelId, assetIndex, initialHoldings, finalHoldings)`: a payout
    /// (`transfer`, `transferAllAssets`, `concludeAndTransferAllAssets`) left the channel
    /// holding `final_holdings` of the outcome's asset `asset_index`.
    AllocationUpdated {
        /// The channel paying out.
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// Block of the event.
        block_number: u64,
        /// Index of the asset in the channel's outcome.
        #[serde(with = "crate::json::uint256")]
        asset_index: U256,
        /// Holdings before the payout.
        #[serde(with = "crate::json::uint256")]
        initial_holdings: U256,
        /// Holdings after the payout.
        #[serde(with = "crate::json::uint256")]
        final_holdings: U256,
    },
    /// `Concluded(channelId, finalizesAt)`: the channel was concluded with a final state.
    Concluded {
        /// The channel.
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// Block of the event.
        block_number: u64,
        /// When it finalized (the block's timestamp).
        finalizes_at: u64,
    },
    /// `ChallengeRegistered(channelId, finalizesAt, proof, candidate)`: someone challenged
    /// with `candidate`; the channel finalizes with it at `finalizes_at` unless a state with a
    /// higher turn number is checkpointed (or challenged with) before.
    ChallengeRegistered {
        /// The channel.
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// Block of the event.
        block_number: u64,
        /// Unix time at which the channel finalizes with the candidate.
        finalizes_at: u64,
        /// The support proof submitted (empty for ledger channels).
        proof: Vec<SubmittedState>,
        /// The challenged state.
        candidate: SubmittedState,
    },
    /// `ChallengeCleared(channelId, newTurnNumRecord)`: a checkpoint cleared a challenge.
    ChallengeCleared {
        /// The channel.
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// Block of the event.
        block_number: u64,
        /// The turn number now recorded.
        #[serde(with = "crate::json::uint48")]
        new_turn_num_record: TurnNum,
    },
    /// `Checkpointed(channelId, newTurnNumRecord)`: a checkpoint on a channel with no challenge.
    Checkpointed {
        /// The channel.
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// Block of the event.
        block_number: u64,
        /// The turn number now recorded.
        #[serde(with = "crate::json::uint48")]
        new_turn_num_record: TurnNum,
    },
    /// `Reclaimed(channelId, assetIndex)`: a guarantee of this (source) ledger was reclaimed.
    Reclaimed {
        /// The source ledger.
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// Block of the event.
        block_number: u64,
        /// Index of the asset in the ledger's outcome.
        #[serde(with = "crate::json::uint256")]
        asset_index: U256,
    },
}

impl ChainEvent {
    /// The channel the event concerns.
    pub fn channel_id(&self) -> ChannelId {
        match self {
            Self::Deposited { channel_id, .. }
            | Self::AllocationUpdated { channel_id, .. }
            | Self::Concluded { channel_id, .. }
            | Self::ChallengeRegistered { channel_id, .. }
            | Self::ChallengeCleared { channel_id, .. }
            | Self::Checkpointed { channel_id, .. }
            | Self::Reclaimed { channel_id, .. } => *channel_id,
        }
    }

    /// The block the event is in.
    pub fn block_number(&self) -> u64 {
        match self {
            Self::Deposited { block_number, .. }
            | Self::AllocationUpdated { block_number, .. }
            | Self::Concluded { block_number, .. }
            | Self::ChallengeRegistered { block_number, .. }
            | Self::ChallengeCleared { block_number, .. }
            | Self::Checkpointed { block_number, .. }
            | Self::Reclaimed { block_number, .. } => *block_number,
        }
    }

    /// For a `ChallengeRegistered`: whether the challenged state is older than our latest
    /// supported state (turn `our_latest_turn`), so that checkpointing ours clears it.
    /// `None` for every other event.
    pub fn challenge_is_stale(&self, our_latest_turn: TurnNum) -> Option<bool> {
        match self {
            Self::ChallengeRegistered { candidate, .. } => Some(candidate.turn_num() < our_latest_turn),
            _ => None,
        }
    }
}

/// Where a channel stands on chain, at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelMode {
    /// No challenge and not finalized.
    Open,
    /// A challenge is running.
    Challenge,
    /// Finalized: funds can be paid out.
    Finalized,
}

/// The adjudicator's `statusOf[channelId]`: `turnNumRecord (48 bits) ‖ finalizesAt (48 bits) ‖
/// fingerprint (160 bits)`, where the fingerprint is the low 160 bits of
/// `keccak256(abi.encode(stateHash, outcomeHash))`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChannelStatus {
    /// The highest turn number the chain knows to be supported (zero after `conclude`).
    pub turn_num_record: TurnNum,
    /// When the channel finalizes (unix seconds); zero when open.
    pub finalizes_at: u64,
    /// Commitment to the registered state hash and outcome hash (zero when none).
    pub fingerprint: [u8; 20],
}

impl ChannelStatus {
    /// Unpacks the stored 32-byte word.
    pub fn from_word(word: B256) -> Self {
        let mut turn = [0u8; 8];
        turn[2..].copy_from_slice(&word[..6]);
        let mut finalizes = [0u8; 8];
        finalizes[2..].copy_from_slice(&word[6..12]);
        let mut fingerprint = [0u8; 20];
        fingerprint.copy_from_slice(&word[12..]);
        Self {
            turn_num_record: TurnNum::from(u64::from_be_bytes(turn)),
            finalizes_at: u64::from_be_bytes(finalizes),
            fingerprint,
        }
    }

    /// The fingerprint the adjudicator stores for a registered state hash and outcome hash.
    pub fn fingerprint_of(state_hash: B256, outcome_hash: B256) -> [u8; 20] {
        let digest = keccak256((state_hash, outcome_hash).abi_encode_params());
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest[12..]);
        out
    }

    /// Whether the chain has registered exactly this state hash and outcome.
    pub fn is_registered(&self, state_hash: B256, outcome: &Exit) -> bool {
        self.fingerprint == Self::fingerprint_of(state_hash, outcome.hash())
    }

    /// The channel's mode at unix time `now` (the latest block's timestamp).
    pub fn mode(&self, now: u64) -> ChannelMode {
        if self.finalizes_at == 0 {
            ChannelMode::Open
        } else if self.finalizes_at <= now {
            ChannelMode::Finalized
        } else {
            ChannelMode::Challenge
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{destination_of, Allocation, AssetMetadata, Bytes, SingleAssetExit};
    use alloy_primitives::aliases::U48;

    fn key(n: u8) -> SigningKey {
        let mut b = [0u8; 32];
        b[31] = n;
        SigningKey::from_bytes(&b).unwrap()
    }

    fn exit(allocations: Vec<Allocation>) -> Exit {
        Exit(vec![SingleAssetExit { asset: Address::ZERO, asset_metadata: AssetMetadata::default(), allocations }])
    }

    fn ledger_state(turn: u64, is_final: bool, with_guarantee: bool) -> State {
        let (a, b) = (key(1), key(2));
        let mut allocations = vec![
            Allocation::simple(destination_of(a.address()), U256::from(5)),
            Allocation::simple(destination_of(b.address()), U256::from(7)),
        ];
        if with_guarantee {
            allocations.push(Allocation {
                destination: B256::repeat_byte(0xcc),
                amount: U256::from(3),
                allocation_type: AllocationType::GUARANTEE,
                metadata: GuaranteeMetadata { left: destination_of(a.address()), right: destination_of(b.address()) }
                    .encode(),
            });
        }
        State {
            participants: vec![a.address(), b.address()],
            channel_nonce: 9,
            app_definition: Address::repeat_byte(0xaa),
            challenge_duration: U48::from(60),
            outcome: exit(allocations),
            app_data: Bytes::new(),
            turn_num: U48::from(turn),
            is_final,
        }
    }

    fn signed(state: State, keys: &[u8]) -> SignedState {
        let mut s = SignedState::new(state);
        for k in keys {
            s.sign(&key(*k)).unwrap();
        }
        s
    }

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
            state: state.clone(),
            challenger_signature: challenger_signature(&state, &key(3)),
        };
        assert_eq!(outsider.validate(), Err(ChainTransactionError::ChallengerNotParticipant(key(3).address())));
        // A signature on the bare state hash is not a challenger signature.
        let wrong_digest =
            ChainTransaction::Challenge { state: state.clone(), challenger_signature: key(1).sign(&state.hash()) };
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

    #[test]
    fn status_word_unpacks() {
        let mut word = [0u8; 32];
        word[5] = 7; // turnNumRecord = 7
        word[10] = 1;
        word[11] = 2; // finalizesAt = 258
        word[31] = 0xee;
        let status = ChannelStatus::from_word(B256::from(word));
        assert_eq!(status.turn_num_record, U48::from(7));
        assert_eq!(status.finalizes_at, 258);
        assert_eq!(status.fingerprint[19], 0xee);
        assert_eq!(status.mode(257), ChannelMode::Challenge);
        assert_eq!(status.mode(258), ChannelMode::Finalized);
        assert_eq!(ChannelStatus::default().mode(1), ChannelMode::Open);
    }

    #[test]
    fn stale_challenges_are_recognised() {
        let event = ChainEvent::ChallengeRegistered {
            channel_id: B256::ZERO,
            block_number: 3,
            finalizes_at: 100,
            proof: vec![],
            candidate: SubmittedState {
                variable_part: ledger_state(4, false, false).variable_part(),
                signatures: vec![],
            },
        };
        assert_eq!(event.challenge_is_stale(U48::from(5)), Some(true));
        assert_eq!(event.challenge_is_stale(U48::from(4)), Some(false));
        assert_eq!(event.block_number(), 3);
    }

    #[test]
    fn submitted_states_verify_their_signatures() {
        let state = signed(ledger_state(4, false, false), &[1, 2]);
        let submitted = SubmittedState {
            variable_part: state.state().variable_part(),
            signatures: state.signatures().iter().flatten().copied().collect(),
        };
        let back = submitted.signed_state(&state.state().fixed_part()).unwrap();
        assert_eq!(back, state);
    }
}
