//! What the adjudicator reports: its events, as the core reacts to them.

use alloy_primitives::{Address, U256};

use crate::{ChannelId, FixedPart, Signature, SignedState, SignedStateError, State, TurnNum, VariablePart};

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
    /// Not an adjudicator event: a reorg took back blocks from which events of this channel
    /// were reported. Every event of the channel reported from `from_block` on is void (the
    /// new chain's events follow, reported again); the channel's holdings, turn number record
    /// and finalization time were re-read at `block_number`, the last block both chains share
    /// (`from_block - 1`), and replace what the void events had set.
    Retracted {
        /// The channel.
        #[serde(with = "crate::json::bytes32")]
        channel_id: ChannelId,
        /// The first block taken back.
        from_block: u64,
        /// The block the values below were read at (`from_block - 1`).
        block_number: u64,
        /// The asset of `held`.
        #[serde(with = "crate::json::address")]
        asset: Address,
        /// What the channel held of `asset` at `block_number`.
        #[serde(with = "crate::json::uint256")]
        held: U256,
        /// The turn number the adjudicator recorded at `block_number`.
        #[serde(with = "crate::json::uint48")]
        turn_num_record: TurnNum,
        /// The channel's finalization time at `block_number` (0: open, no challenge).
        finalizes_at: u64,
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
            | Self::Reclaimed { channel_id, .. }
            | Self::Retracted { channel_id, .. } => *channel_id,
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
            | Self::Reclaimed { block_number, .. }
            | Self::Retracted { block_number, .. } => *block_number,
        }
    }

    /// For a `Retracted`: the first block taken back. `None` for every other event.
    pub fn retracted_from(&self) -> Option<u64> {
        match self {
            Self::Retracted { from_block, .. } => Some(*from_block),
            _ => None,
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

#[cfg(test)]
mod tests {
    use super::super::fixtures::*;
    use super::*;
    use alloy_primitives::aliases::U48;
    use alloy_primitives::B256;

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
    fn a_retraction_is_serializable_and_names_its_channel_and_blocks() {
        let event = ChainEvent::Retracted {
            channel_id: B256::repeat_byte(7),
            from_block: 12,
            block_number: 11,
            asset: Address::ZERO,
            held: U256::from(5),
            turn_num_record: U48::from(3),
            finalizes_at: 0,
        };
        let json = serde_json::to_string(&event).unwrap();
        assert!(json.contains(r#""kind":"retracted""#), "{json}");
        assert_eq!(serde_json::from_str::<ChainEvent>(&json).unwrap(), event);
        assert_eq!(
            (event.channel_id(), event.block_number(), event.retracted_from()),
            (B256::repeat_byte(7), 11, Some(12))
        );
        assert_eq!(event.challenge_is_stale(U48::from(9)), None);
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
