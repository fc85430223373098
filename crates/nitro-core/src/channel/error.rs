//! Why a ledger channel refused an input. Every refusal leaves the channel unchanged.

use alloy_primitives::Address;
use thiserror::Error;

use super::{OutcomeError, ProposalError};
use crate::{ChannelId, SignatureError, TurnNum};

/// A refusal by a ledger channel.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChannelError {
    /// The message is for another ledger.
    #[error("message for ledger {got}, this is ledger {expected}")]
    WrongChannel {
        /// This ledger.
        expected: ChannelId,
        /// The message's.
        got: ChannelId,
    },
    /// The proposal does not apply to the latest state.
    #[error(transparent)]
    Proposal(#[from] ProposalError),
    /// The signed state's outcome is not a ledger outcome.
    #[error("not a ledger outcome: {0}")]
    Outcome(#[from] OutcomeError),
    /// A malformed or unrecoverable signature.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// A signature by someone other than the expected party.
    #[error("signed by {got}, expected {expected}")]
    WrongSigner {
        /// Who should have signed.
        expected: Address,
        /// Who did.
        got: Address,
    },
    /// A ledger has exactly two participants.
    #[error("a ledger has two participants, got {0}")]
    ParticipantCount(usize),
    /// The key is not the participant the role requires.
    #[error("key {key} is not the ledger's {role}")]
    WrongRole {
        /// The key's address.
        key: Address,
        /// `"leader"` or `"follower"`.
        role: &'static str,
    },
    /// The initial state lacks a signature.
    #[error("the state is not signed by both participants")]
    NotFullySigned,
    /// The initial state is final.
    #[error("a ledger cannot be built from a final state")]
    FinalState,
    /// A balance does not pay its participant.
    #[error("the {0} balance must pay the {0} participant's address")]
    BalanceDestination(&'static str),
    /// The state's app data is not empty.
    #[error("a ledger state has empty app data")]
    AppData,
    /// A turn beyond the latest proposed one.
    #[error("turn {turn} is beyond the latest proposed turn {latest}")]
    UnknownTurn {
        /// The turn in the message.
        turn: TurnNum,
        /// The latest proposed turn.
        latest: TurnNum,
    },
    /// A proposal too far ahead of the follower to be buffered.
    #[error("turn {turn} is too far ahead (latest {latest}, the buffer holds {capacity})")]
    TooFarAhead {
        /// The proposal's turn.
        turn: TurnNum,
        /// The follower's latest turn.
        latest: TurnNum,
        /// Reorder buffer capacity.
        capacity: usize,
    },
    /// A proposal that does not extend the latest state: its `previous_turn` is not the
    /// latest turn, or its turn is not above it.
    #[error("proposal for turn {turn} on turn {previous} does not extend the latest turn {latest}")]
    NotNext {
        /// The state the proposal says it applies to.
        previous: TurnNum,
        /// The proposal's turn.
        turn: TurnNum,
        /// The latest turn here.
        latest: TurnNum,
    },
    /// The ledger is being closed: no more proposals.
    #[error("the ledger is closing (final state at turn {0})")]
    Closing(TurnNum),
    /// A turn at or below one this party already signed, refused or saw: signing there could
    /// make two different states at one turn.
    #[error("turn {turn} is not fresh: turns up to {highest} are taken")]
    TurnNotFresh {
        /// The turn asked for.
        turn: TurnNum,
        /// The highest turn taken.
        highest: TurnNum,
    },
    /// A proposal for a turn already taken by a different proposal (a stale branch).
    #[error("turn {0} already holds a different proposal")]
    ConflictingProposal(TurnNum),
    /// A rejection that does not match the queued proposal at its turn.
    #[error("rejection for turn {0} does not match the proposal queued there")]
    StaleRejection(TurnNum),
    /// A proposal with no change, or more than [`MAX_BATCH`](super::MAX_BATCH).
    #[error("a proposal carries 1 to 256 changes, got {0}")]
    BatchSize(usize),
    /// A rejection naming changes the proposal does not have (or not in increasing order).
    #[error("rejection for turn {0} names changes the proposal does not have")]
    BadRefusal(TurnNum),
    /// A rejection reason longer than allowed.
    #[error("rejection reason of {0} bytes is too long")]
    ReasonTooLong(usize),
    /// The follower has nothing pending to decide on.
    #[error("no proposal is waiting for a decision")]
    NothingPending,
    /// The next pending proposal is not the one the caller expected.
    #[error("the next pending proposal is not the expected one")]
    UnexpectedProposal,
    /// A message this role never receives.
    #[error("unexpected message: {0}")]
    UnexpectedMessage(&'static str),
    /// The turn number would pass 2^48 - 1.
    #[error("turn number overflow")]
    TurnOverflow,
    /// A replayed event does not fit the channel (a corrupt or foreign log).
    #[error("event does not apply: {0}")]
    Replay(String),
}
