//! A ledger channel in either role.

use super::{ChannelError, FollowerChannel, LeaderChannel, LedgerMessage, LedgerOutcome, Step};
use crate::{ChannelId, GuaranteeManager, SignedState, SigningKey, TurnNum};

/// A consensus (ledger) channel: the leader's or the follower's view.
///
/// Role-specific operations live on the variants, so a follower cannot propose and a leader
/// cannot countersign, by construction; what both can do is here.
#[derive(Clone, Debug, PartialEq)]
pub enum ConsensusChannel {
    /// `participants[0]`: proposes.
    Leader(LeaderChannel),
    /// `participants[1]`: countersigns.
    Follower(FollowerChannel),
}

impl ConsensusChannel {
    /// The channel for whichever participant `key` is.
    pub fn new(key: SigningKey, signed: &SignedState) -> Result<Self, ChannelError> {
        let participants = &signed.state().participants;
        match participants.iter().position(|p| *p == key.address()) {
            Some(0) => LeaderChannel::new(key, signed).map(Self::Leader),
            Some(1) => FollowerChannel::new(key, signed).map(Self::Follower),
            _ if participants.len() != 2 => Err(ChannelError::ParticipantCount(participants.len())),
            _ => Err(ChannelError::WrongRole { key: key.address(), role: "leader or follower" }),
        }
    }

    /// Dispatches a message from the counterparty.
    pub fn receive(&mut self, message: &LedgerMessage) -> Result<Step, ChannelError> {
        match self {
            Self::Leader(l) => l.receive(message),
            Self::Follower(f) => f.receive(message),
        }
    }

    /// The ledger's channel id.
    pub fn channel_id(&self) -> ChannelId {
        match self {
            Self::Leader(l) => l.channel_id(),
            Self::Follower(f) => f.channel_id(),
        }
    }

    /// The latest state signed by both.
    pub fn consensus_state(&self) -> SignedState {
        match self {
            Self::Leader(l) => l.consensus_state(),
            Self::Follower(f) => f.consensus_state(),
        }
    }

    /// The consensus turn.
    pub fn consensus_turn(&self) -> TurnNum {
        match self {
            Self::Leader(l) => l.consensus_turn(),
            Self::Follower(f) => f.consensus_turn(),
        }
    }

    /// The consensus outcome.
    pub fn consensus_outcome(&self) -> &LedgerOutcome {
        match self {
            Self::Leader(l) => l.consensus_outcome(),
            Self::Follower(f) => f.consensus_outcome(),
        }
    }

    /// The outcome with every queued (leader) or pending (follower) proposal applied.
    pub fn latest_outcome(&self) -> &LedgerOutcome {
        match self {
            Self::Leader(l) => l.latest_outcome(),
            Self::Follower(f) => f.latest_outcome(),
        }
    }

    /// Where each guarantee stands.
    pub fn guarantees(&self) -> &GuaranteeManager {
        match self {
            Self::Leader(l) => l.guarantees(),
            Self::Follower(f) => f.guarantees(),
        }
    }

    /// Whether the guarantee for `target` is in the consensus state.
    pub fn is_locked(&self, target: &ChannelId) -> bool {
        self.guarantees().is_locked(target)
    }

    /// The highest turn this party has taken part in (leader: signed; follower: settled,
    /// pending, refused or reserved): a final state it signs must go above it.
    pub fn highest_turn(&self) -> TurnNum {
        match self {
            Self::Leader(l) => l.highest_signed(),
            Self::Follower(f) => f.highest_turn(),
        }
    }

    /// Reserves `turn` for the ledger's final state, which the caller is about to sign (see
    /// [`LeaderChannel::reserve_final_turn`] and [`FollowerChannel::reserve_final_turn`]).
    pub fn reserve_final_turn(&mut self, turn: TurnNum) -> Result<Step, ChannelError> {
        match self {
            Self::Leader(l) => l.reserve_final_turn(turn),
            Self::Follower(f) => f.reserve_final_turn(turn),
        }
    }

    /// The final state's turn, once the ledger is closing.
    pub fn closing(&self) -> Option<TurnNum> {
        match self {
            Self::Leader(l) => l.closing(),
            Self::Follower(f) => f.closing(),
        }
    }

    /// Whether proposals wait for the follower.
    pub fn has_pending(&self) -> bool {
        match self {
            Self::Leader(l) => !l.queue().is_empty(),
            Self::Follower(f) => !f.queue().is_empty(),
        }
    }
}
