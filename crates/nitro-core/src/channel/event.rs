//! What happened to a ledger: returned from every operation, persisted by the caller, and
//! replayed to rebuild the channel.

use alloy_primitives::{B256, U256};
use serde::{Deserialize, Serialize};

use super::{Guarantee, LedgerMessage, Proposal, Rejection, SignedProposal};
use crate::{json, ChannelId, Signature, SignedTurn, TurnNum};

/// An event of a ledger channel.
///
/// `ProposalQueued`, `ConsensusAdvanced` and `ProposalRejected` change the channel and are what
/// [`replay`](super::LeaderChannel::replay) applies; the others describe those changes for
/// whoever watches (objectives, logs, APIs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum LedgerEvent {
    /// A proposal was signed (leader) or verified (follower) and queued after the consensus turn.
    ProposalQueued {
        /// The proposal and the leader's signature.
        signed: SignedProposal,
        /// Hash of the state it produces.
        #[serde(with = "json::bytes32")]
        state_hash: B256,
    },
    /// Both signatures are now on the state at `turn`; every proposal up to it is settled.
    ConsensusAdvanced {
        /// The new consensus turn.
        #[serde(with = "json::uint48")]
        turn: TurnNum,
        /// Hash of the consensus state.
        #[serde(with = "json::bytes32")]
        state_hash: B256,
        /// The follower's signature on it.
        countersignature: Signature,
    },
    /// The follower refused changes of the proposal at `rejection.turn_num`; that proposal and
    /// everything queued after it left the queue (the changes not refused are queued again by
    /// the leader at fresh turns).
    ProposalRejected {
        /// The refusal.
        rejection: Rejection,
        /// The changes refused.
        refused: Vec<Proposal>,
    },
    /// The ledger is closing with a final state at `turn`, which this party will sign: no
    /// more proposals, and no other state at or below that turn is signed from now on.
    Closing {
        /// The final state's turn.
        #[serde(with = "json::uint48")]
        turn: TurnNum,
    },
    /// After a rejection, a later proposal no longer applied and was dropped.
    ProposalDropped {
        /// The proposal.
        proposal: Proposal,
        /// Why it no longer applies.
        reason: String,
    },
    /// An `Add` for `guarantee.target()` is queued (nothing locked yet).
    GuaranteeProposed {
        /// The guarantee.
        guarantee: Guarantee,
        /// The left party's share.
        #[serde(with = "json::uint256")]
        left_deposit: U256,
    },
    /// The guarantee for `target` is in the consensus state: its funds are locked.
    GuaranteeLocked {
        /// The target channel.
        #[serde(with = "json::bytes32")]
        target: ChannelId,
    },
    /// A `Remove` for `target` is queued (the funds stay locked until consensus).
    GuaranteeRemovalProposed {
        /// The target channel.
        #[serde(with = "json::bytes32")]
        target: ChannelId,
        /// What the left party gets back.
        #[serde(with = "json::uint256")]
        left_amount: U256,
    },
    /// A top-up proposal (`Reserve`, `Credit`, `CancelReserve`) is queued.
    TopUpProposed {
        /// The proposal.
        proposal: Proposal,
    },
    /// A top-up proposal is in the consensus state.
    TopUpAgreed {
        /// The proposal.
        proposal: Proposal,
    },
    /// The guarantee for `target` left the consensus state: its funds went back to the parties.
    GuaranteeReleased {
        /// The target channel.
        #[serde(with = "json::bytes32")]
        target: ChannelId,
        /// What the left party got back.
        #[serde(with = "json::uint256")]
        left_amount: U256,
    },
}

/// What one operation on a ledger channel produced: messages to send to the counterparty,
/// events to persist (before sending) and the states this party signed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "the messages must be sent and the events persisted"]
pub struct Step {
    /// Messages for the counterparty.
    pub messages: Vec<LedgerMessage>,
    /// Events to persist.
    pub events: Vec<LedgerEvent>,
    /// States signed by this party in the operation (a leader's proposals, a follower's
    /// countersignature), for a store that enforces "one state per turn" on its own.
    pub signed: Vec<SignedTurn>,
}

impl Step {
    /// Whether the operation changed nothing and has nothing to send.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.events.is_empty() && self.signed.is_empty()
    }

    /// Appends another step's messages, events and signatures.
    pub fn extend(&mut self, other: Step) {
        self.messages.extend(other.messages);
        self.events.extend(other.events);
        self.signed.extend(other.signed);
    }
}
