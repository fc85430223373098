//! What the leader and the follower of a ledger send each other.

use alloy_primitives::{keccak256, B256};
use alloy_sol_types::SolValue;
use serde::{Deserialize, Serialize};

use super::Proposal;
use crate::{json, ChannelId, Signature, TurnNum};

/// Longest rejection reason carried on the wire, in bytes.
pub const MAX_REASON_LEN: usize = 256;

/// Most changes one proposal (one new state) carries.
pub const MAX_BATCH: usize = 256;

/// A proposal: one or more changes (a batch), the turn of the state they produce together and
/// the leader's signature on that whole state (never on the changes alone).
///
/// Turns of a ledger's states strictly increase but need not be consecutive: after a
/// rejection the leader re-proposes at fresh turns, above every turn it ever signed
/// (ADR-0013), so `previous_turn` names the state the proposal applies to. A batch costs one
/// signature, one verification and one countersignature however many changes it carries
/// (ADR-0018).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedProposal {
    /// The ledger this proposal is for.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// The changes, applied in order (1 to [`MAX_BATCH`]).
    pub proposals: Vec<Proposal>,
    /// The turn of the state the proposal is applied to (the consensus state or an earlier
    /// proposal); always below `turn_num`.
    #[serde(with = "json::uint48")]
    pub previous_turn: TurnNum,
    /// The turn of the resulting state.
    #[serde(with = "json::uint48")]
    pub turn_num: TurnNum,
    /// The leader's signature on the resulting state.
    pub signature: Signature,
}

/// The follower's signature on the ledger state at `turn_num`; it acknowledges every proposal
/// up to that turn (cumulative).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Countersignature {
    /// The ledger.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// The turn countersigned.
    #[serde(with = "json::uint48")]
    pub turn_num: TurnNum,
    /// The follower's signature on the state at that turn.
    pub signature: Signature,
}

/// The follower's refusal of the proposal at `turn_num`: of the changes at `refused` (indices
/// into the proposal's batch), or of all of them when `refused` is empty. The leader drops the
/// refused changes and proposes the others, and every later proposal, again at fresh turns,
/// so one refusal never blocks the ledger.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rejection {
    /// The ledger.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// The turn refused.
    #[serde(with = "json::uint48")]
    pub turn_num: TurnNum,
    /// The hash of the refused state (so a stale rejection cannot hit a newer proposal).
    #[serde(with = "json::bytes32")]
    pub state_hash: B256,
    /// Indices of the changes objected to (strictly increasing); empty: every change.
    #[serde(default)]
    pub refused: Vec<u16>,
    /// Why, for people (at most [`MAX_REASON_LEN`] bytes).
    pub reason: String,
    /// The follower's signature over [`Rejection::signing_hash`].
    pub signature: Signature,
}

impl Rejection {
    /// What the follower signs: `keccak256(abi.encode("nitro-ledger-rejection", channelId,
    /// uint48 turn, stateHash, uint16[] refused))`, a preimage no state hash can have.
    pub fn signing_hash(channel_id: ChannelId, turn_num: TurnNum, state_hash: B256, refused: &[u16]) -> B256 {
        let refused: Vec<u16> = refused.to_vec();
        keccak256(
            (String::from("nitro-ledger-rejection"), channel_id, turn_num, state_hash, refused).abi_encode_params(),
        )
    }

    /// Whether the change at `index` of the refused proposal is refused.
    pub fn refuses(&self, index: usize) -> bool {
        self.refused.is_empty() || self.refused.iter().any(|r| usize::from(*r) == index)
    }
}

/// A message between the two parties of a ledger.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum LedgerMessage {
    /// Leader → follower.
    Proposal(SignedProposal),
    /// Follower → leader.
    Countersignature(Countersignature),
    /// Follower → leader.
    Rejection(Rejection),
}

impl LedgerMessage {
    /// The ledger the message is about.
    pub fn channel_id(&self) -> ChannelId {
        match self {
            LedgerMessage::Proposal(p) => p.channel_id,
            LedgerMessage::Countersignature(c) => c.channel_id,
            LedgerMessage::Rejection(r) => r.channel_id,
        }
    }
}

/// Truncates a reason to [`MAX_REASON_LEN`] bytes on a character boundary.
pub(crate) fn bounded_reason(reason: &str) -> String {
    let mut end = reason.len().min(MAX_REASON_LEN);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_owned()
}
