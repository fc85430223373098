//! Fixed part, variable part and the full state of a channel.

use alloy_primitives::{aliases::U48, keccak256, Address, Bytes, B256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

use super::Exit;
use crate::json;

/// A channel's identifier: the hash of its fixed part.
pub type ChannelId = B256;

/// A turn number, a Solidity `uint48`.
pub type TurnNum = U48;

/// The part of a channel that never changes; it determines the channel id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FixedPart {
    /// Signers of the channel, in order (index 0 is the ledger leader).
    #[serde(with = "json::address_vec")]
    pub participants: Vec<Address>,
    /// Distinguishes channels between the same participants.
    #[serde(with = "json::uint64")]
    pub channel_nonce: u64,
    /// The app contract that judges state transitions (ConsensusApp for ledgers).
    #[serde(with = "json::address")]
    pub app_definition: Address,
    /// Seconds a challenge stays open before the channel finalizes.
    #[serde(with = "json::uint48")]
    pub challenge_duration: U48,
}

impl FixedPart {
    /// `abi.encode(address[] participants, uint64 channelNonce, address appDefinition, uint48 challengeDuration)`.
    pub fn encode(&self) -> Vec<u8> {
        (self.participants.clone(), self.channel_nonce, self.app_definition, self.challenge_duration)
            .abi_encode_params()
    }

    /// The channel id: keccak256 of [`FixedPart::encode`] (no chain id, as on chain).
    pub fn channel_id(&self) -> ChannelId {
        keccak256(self.encode())
    }
}

/// The part of a channel that changes from turn to turn.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VariablePart {
    /// Who gets what if the channel finalizes in this state.
    pub outcome: Exit,
    /// App-specific data (empty for ledgers).
    #[serde(with = "json::bytes")]
    pub app_data: Bytes,
    /// The turn this state is for.
    #[serde(with = "json::uint48")]
    pub turn_num: TurnNum,
    /// A final state lets the channel conclude at once.
    pub is_final: bool,
}

/// A full channel state, in the flat shape the Nitro packages use.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct State {
    /// Signers of the channel, in order.
    #[serde(with = "json::address_vec")]
    pub participants: Vec<Address>,
    /// Distinguishes channels between the same participants.
    #[serde(with = "json::uint64")]
    pub channel_nonce: u64,
    /// The app contract.
    #[serde(with = "json::address")]
    pub app_definition: Address,
    /// Seconds a challenge stays open.
    #[serde(with = "json::uint48")]
    pub challenge_duration: U48,
    /// Who gets what.
    pub outcome: Exit,
    /// App-specific data.
    #[serde(with = "json::bytes")]
    pub app_data: Bytes,
    /// The turn this state is for.
    #[serde(with = "json::uint48")]
    pub turn_num: TurnNum,
    /// Whether the state is final.
    pub is_final: bool,
}

impl State {
    /// Joins a fixed and a variable part.
    pub fn new(fixed: FixedPart, variable: VariablePart) -> Self {
        Self {
            participants: fixed.participants,
            channel_nonce: fixed.channel_nonce,
            app_definition: fixed.app_definition,
            challenge_duration: fixed.challenge_duration,
            outcome: variable.outcome,
            app_data: variable.app_data,
            turn_num: variable.turn_num,
            is_final: variable.is_final,
        }
    }

    /// The fixed part of this state.
    pub fn fixed_part(&self) -> FixedPart {
        FixedPart {
            participants: self.participants.clone(),
            channel_nonce: self.channel_nonce,
            app_definition: self.app_definition,
            challenge_duration: self.challenge_duration,
        }
    }

    /// The variable part of this state.
    pub fn variable_part(&self) -> VariablePart {
        VariablePart {
            outcome: self.outcome.clone(),
            app_data: self.app_data.clone(),
            turn_num: self.turn_num,
            is_final: self.is_final,
        }
    }

    /// The channel id (hash of the fixed part).
    pub fn channel_id(&self) -> ChannelId {
        keccak256(
            (self.participants.clone(), self.channel_nonce, self.app_definition, self.challenge_duration)
                .abi_encode_params(),
        )
    }

    /// `abi.encode(bytes32 channelId, bytes appData, SingleAssetExit[] outcome, uint48 turnNum, bool isFinal)`,
    /// given the channel id (callers that hash many states of one channel compute it once).
    pub fn encode_with_channel_id(&self, channel_id: ChannelId) -> Vec<u8> {
        (channel_id, self.app_data.clone(), self.outcome.to_abi(), self.turn_num, self.is_final).abi_encode_params()
    }

    /// The ABI encoding of the state, as the adjudicator hashes it.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_with_channel_id(self.channel_id())
    }

    /// The state hash every participant signs, given the channel id.
    pub fn hash_with_channel_id(&self, channel_id: ChannelId) -> B256 {
        keccak256(self.encode_with_channel_id(channel_id))
    }

    /// The state hash every participant signs.
    pub fn hash(&self) -> B256 {
        self.hash_with_channel_id(self.channel_id())
    }
}
