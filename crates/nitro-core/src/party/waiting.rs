//! What an objective waits for, in words a person can read.

use std::fmt;

use super::round::SignatureRound;
use crate::{Address, ChannelId, U256};

/// What an objective waits for, in words a person can read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WaitingFor {
    /// Signatures of a round.
    Signatures {
        /// Which round ("prefund", "postfund", "final").
        round: &'static str,
        /// Who has not signed.
        missing: Vec<Address>,
    },
    /// Deposits by the parties before us (or our turn has not come).
    Deposits {
        /// Held now.
        held: U256,
        /// Fully funded at.
        target: U256,
    },
    /// Our deposit, submitted, to be confirmed on chain.
    DepositConfirmation {
        /// Held now.
        held: U256,
        /// Fully funded at.
        target: U256,
    },
    /// The guarantee to be in the consensus state of these ledgers.
    GuaranteesLocked {
        /// Ledgers where it is not locked yet.
        ledgers: Vec<ChannelId>,
    },
    /// The guarantee to be released in these ledgers.
    GuaranteesReleased {
        /// Ledgers where it is still held.
        ledgers: Vec<ChannelId>,
    },
    /// The conclusion and payout on chain.
    Payout {
        /// Still held by the channel.
        held: U256,
    },
    /// Our transaction finalizing the channel on chain (a conclusion or a challenge) to be
    /// registered.
    Registration {
        /// `"conclusion"` or `"challenge"`.
        what: &'static str,
    },
    /// A registered challenge to expire (chain time).
    Finalization {
        /// Chain time (unix seconds) at which the channel finalizes.
        finalizes_at: u64,
        /// The latest chain time seen.
        now: u64,
    },
    /// The virtual channels guaranteed by a finalized ledger to finalize, so that their
    /// guarantees can be reclaimed.
    TargetsFinalized {
        /// The virtual channels not finalized yet.
        channels: Vec<ChannelId>,
    },
    /// The counterparty's signature on a change of a ledger (a top-up's reserve or credit).
    Agreement {
        /// Which change (`"reserve"`, `"credit"`).
        what: &'static str,
    },
    /// Nothing: done.
    Nothing,
    /// The objective cannot go on.
    Failed(String),
}

impl WaitingFor {
    pub(crate) fn signatures(round: &'static str, r: &SignatureRound) -> Self {
        let s = &r.state;
        let missing = s.state().participants.iter().enumerate().filter(|(i, _)| !r.signed_by(*i)).map(|(_, p)| *p);
        Self::Signatures { round, missing: missing.collect() }
    }
}

impl fmt::Display for WaitingFor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Signatures { round, missing } => {
                write!(f, "waiting for {round} signatures from ")?;
                let names: Vec<String> = missing.iter().map(|a| a.to_string()).collect();
                write!(f, "{}", names.join(", "))
            }
            Self::Deposits { held, target } => write!(f, "waiting for deposits: {held} of {target} held"),
            Self::DepositConfirmation { held, target } => {
                write!(f, "waiting for our deposit to confirm: {held} of {target} held")
            }
            Self::GuaranteesLocked { ledgers } => {
                write!(f, "waiting for the guarantee to lock in {} ledger(s)", ledgers.len())
            }
            Self::GuaranteesReleased { ledgers } => {
                write!(f, "waiting for the guarantee to be released in {} ledger(s)", ledgers.len())
            }
            Self::Payout { held } => write!(f, "waiting for the conclusion and payout on chain: {held} still held"),
            Self::Registration { what } => write!(f, "waiting for our {what} to be registered on chain"),
            Self::Finalization { finalizes_at, now } => write!(
                f,
                "waiting for the challenge to expire at chain time {finalizes_at} ({} s from chain time {now})",
                finalizes_at.saturating_sub(*now)
            ),
            Self::TargetsFinalized { channels } => {
                write!(f, "waiting for {} guaranteed virtual channel(s) to finalize on chain", channels.len())
            }
            Self::Agreement { what } => write!(f, "waiting for the counterparty to agree to the top-up {what}"),
            Self::Nothing => write!(f, "done"),
            Self::Failed(why) => write!(f, "failed: {why}"),
        }
    }
}
