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
    /// The request itself is malformed.
    #[error("bad request: {0}")]
    BadRequest(String),
}
