//! Why a party refused a request or a message.

use thiserror::Error;

use super::ObjectiveId;
use crate::{Address, ChannelError, ChannelId, U256};

/// Why a request or message was refused. Nothing changes when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PartyError {
    /// This party is not a participant of the channel.
    #[error("this party is not a participant of the channel")]
    NotAParticipant,
    /// No ledger with that id.
    #[error("unknown ledger {0}")]
    UnknownLedger(ChannelId),
    /// No ledger with that counterparty.
    #[error("no ledger with {0}")]
    NoLedgerWith(Address),
    /// A ledger (or its funding) with that counterparty exists already.
    #[error("a ledger with {0} exists or is being funded")]
    LedgerExists(Address),
    /// That objective exists already.
    #[error("objective {0} exists already")]
    ObjectiveExists(ObjectiveId),
    /// No such objective.
    #[error("unknown objective {0}")]
    UnknownObjective(ObjectiveId),
    /// A state that is not the one the objective signs.
    #[error("a state that does not belong to the objective")]
    UnexpectedState,
    /// A state that does not describe a valid channel for the objective.
    #[error("invalid state: {0}")]
    InvalidState(String),
    /// A message from someone who may not send it.
    #[error("message from {0}, who is not the counterparty for it")]
    UnexpectedSender(Address),
    /// The ledger refused.
    #[error(transparent)]
    Channel(#[from] ChannelError),
    /// A ledger with guarantees cannot be closed.
    #[error("{0} guarantee(s) remain in the ledger")]
    GuaranteesRemain(usize),
    /// A ledger with a top-up slot pending cannot be closed, nor topped up again.
    #[error("a top-up slot is pending in the ledger")]
    TopUpPending,
    /// A ledger with unsettled proposals cannot be closed.
    #[error("proposals are still waiting for the follower")]
    ProposalsPending,
    /// The ledger is being closed.
    #[error("ledger {0} is closing")]
    LedgerClosing(ChannelId),
    /// The channel is not (yet) funded.
    #[error("virtual channel {0} is not funded")]
    NotFunded(ChannelId),
    /// More paid than deposited.
    #[error("payment of {paid} exceeds the {available} available")]
    Overpaid {
        /// Paid in total.
        paid: U256,
        /// The payer's deposit.
        available: U256,
    },
    /// A voucher that is not better than the one held, or not the payer's.
    #[error("invalid voucher: {0}")]
    Voucher(String),
    /// A final state that pays the wrong amount.
    #[error("the final state pays {proposed}, the vouchers say {known}")]
    WrongPayment {
        /// What the proposed final state pays.
        proposed: U256,
        /// What this party's vouchers say.
        known: U256,
    },
    /// The turn number would overflow.
    #[error("turn number overflow")]
    TurnOverflow,
    /// No channel (ledger, funding or virtual channel) with that id.
    #[error("unknown channel {0}")]
    UnknownChannel(ChannelId),
    /// The channel has no state the chain would support (nothing signed by everyone yet).
    #[error("channel {0} has no state signed by every participant: nothing to take to chain")]
    NothingSupported(ChannelId),
    /// A peer declined the objective.
    #[error("{by} declined: {reason}")]
    Declined {
        /// Who declined.
        by: Address,
        /// Why.
        reason: String,
    },
    /// The counterparty policy refuses it.
    #[error("refused by policy: {0}")]
    Policy(String),
    /// A party cannot cover its share of a guarantee in a ledger.
    #[error("ledger {ledger}: {needed} needed, {available} available")]
    InsufficientFunds {
        /// The ledger.
        ledger: ChannelId,
        /// Our share.
        needed: U256,
        /// Our balance there.
        available: U256,
    },
    /// A peer's objective was refused; `answer` tells the peer (a decline) and should be
    /// sent like any effects.
    #[error("{error}")]
    Refused {
        /// Why.
        error: Box<PartyError>,
        /// The decline to send.
        answer: Box<super::Effects>,
    },
    /// The objective cannot be cancelled any more.
    #[error("objective {0} has committed funds or signatures and cannot be cancelled")]
    NotCancellable(ObjectiveId),
    /// The request itself is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
}
