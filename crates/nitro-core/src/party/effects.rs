//! What a party sends, submits and reports: messages between parties, transactions for the
//! chain, events for the store and for people, and the [`Effects`] of one input.

use serde::{Deserialize, Serialize};

use super::ObjectiveId;
use crate::{
    chain::ChainTransaction, json, Address, ChannelId, LedgerEvent, LedgerMessage, SignedState, SignedTurn, Step,
    Voucher, U256,
};

/// What a message between parties carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Payload {
    /// A state of an objective's signature round, with the sender's signatures.
    State {
        /// The objective.
        objective: ObjectiveId,
        /// The state and every signature the sender holds on it.
        state: SignedState,
    },
    /// A ledger message (proposal, countersignature, rejection).
    Ledger(LedgerMessage),
    /// A payment in a virtual channel, payer to payee.
    Voucher(Voucher),
    /// A ledger's follower asks its leader to reserve a top-up slot of `amount` for the
    /// follower, which it will deposit (ADR-0022 §4). Authenticated by the transport: only the
    /// ledger's follower is heard.
    TopUpRequest {
        /// The ledger.
        #[serde(with = "json::bytes32")]
        channel_id: ChannelId,
        /// The asset of the slot (`None`, as in requests from before multi-asset ledgers: the
        /// ledger's first asset, its only one for a one-asset ledger).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asset: Option<Address>,
        /// The amount the follower will deposit.
        #[serde(with = "json::uint256")]
        amount: U256,
    },
    /// The sender will not take part in an objective (its policy refuses it, the state is not
    /// one it can join, or its operator cancelled it): the objective fails with the reason
    /// instead of waiting forever. Authenticated by the transport; at most
    /// [`MAX_REASON_LEN`](crate::MAX_REASON_LEN) bytes of reason.
    Decline {
        /// The objective.
        objective: ObjectiveId,
        /// Why.
        reason: String,
    },
}

/// A message to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The recipient.
    pub to: Address,
    /// What to send.
    pub payload: Payload,
}

/// A transaction to submit, and the objective that wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransactionRequest {
    /// The objective to tell if it fails (none for chain defence).
    pub objective: Option<ObjectiveId>,
    /// The call.
    pub transaction: ChainTransaction,
    /// Chain time (unix seconds) by which it must be mined to be of use (the answer to a
    /// challenge before the challenge expires); a transaction manager prices it up as the
    /// deadline nears. `None`: no deadline.
    pub deadline: Option<u64>,
}

/// What happened, for the store and for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum PartyEvent {
    /// An event of one of the party's ledgers.
    Ledger {
        /// The ledger.
        #[serde(with = "json::bytes32")]
        channel_id: ChannelId,
        /// The event.
        event: LedgerEvent,
    },
    /// A ledger is funded: its postfund state, signed by both.
    LedgerOpened {
        /// The postfund state.
        state: SignedState,
    },
    /// A ledger was replaced by its successor after a withdrawal (ADR-0022 §5): objectives
    /// and requests that name `from` now act on `to`.
    LedgerMigrated {
        /// The old ledger, concluded.
        #[serde(with = "json::bytes32")]
        from: ChannelId,
        /// The successor, funded by the conclusion.
        #[serde(with = "json::bytes32")]
        to: ChannelId,
    },
    /// A ledger was concluded and paid out.
    LedgerClosed {
        /// The ledger.
        #[serde(with = "json::bytes32")]
        channel_id: ChannelId,
    },
    /// An objective started.
    ObjectiveStarted {
        /// Which.
        id: ObjectiveId,
    },
    /// An objective completed.
    ObjectiveCompleted {
        /// Which.
        id: ObjectiveId,
    },
    /// A voucher arrived; `total` is the cumulative amount paid.
    PaymentReceived {
        /// The virtual channel.
        #[serde(with = "json::bytes32")]
        channel_id: ChannelId,
        /// Cumulative amount.
        #[serde(with = "json::uint256")]
        total: U256,
    },
    /// A stale challenge against a ledger was answered with a checkpoint.
    ChallengeAnswered {
        /// The ledger.
        #[serde(with = "json::bytes32")]
        channel_id: ChannelId,
    },
    /// A challenge against a ledger expired before our answer was on chain.
    ChallengeExpired {
        /// The ledger.
        #[serde(with = "json::bytes32")]
        channel_id: ChannelId,
    },
    /// A reorg deeper than the configured depth took back blocks with events of this channel:
    /// what they did is undone (holdings re-read), the new chain's events follow.
    ChainReorg {
        /// The channel.
        #[serde(with = "json::bytes32")]
        channel_id: ChannelId,
        /// The first block taken back.
        from_block: u64,
    },
    /// A channel is going to chain but this party cannot follow it there.
    ExitRefused {
        /// The channel.
        #[serde(with = "json::bytes32")]
        channel_id: ChannelId,
        /// Why.
        reason: String,
    },
    /// An objective stopped for good.
    ObjectiveFailed {
        /// Which.
        id: ObjectiveId,
        /// Why.
        reason: String,
    },
}

/// What an input produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[must_use = "messages must be sent, transactions submitted and events persisted"]
pub struct Effects {
    /// Messages to send.
    pub messages: Vec<Envelope>,
    /// Transactions to submit.
    pub transactions: Vec<TransactionRequest>,
    /// Events to persist (before sending the messages).
    pub events: Vec<PartyEvent>,
    /// Objectives completed by this input.
    pub completed: Vec<ObjectiveId>,
    /// Every state this party signed for this input (ledger proposals and countersignatures,
    /// objective rounds): what a store checks "one state per turn" against before anything
    /// is sent.
    pub signed: Vec<SignedTurn>,
    /// Ledgers whose counterparty has been silent past the configured patience while we wait
    /// on it: the caller should start a force close of each (as a durable request).
    pub force_close_due: Vec<ChannelId>,
}

impl Effects {
    /// Appends another input's effects.
    pub fn extend(&mut self, other: Effects) {
        self.messages.extend(other.messages);
        self.transactions.extend(other.transactions);
        self.events.extend(other.events);
        self.completed.extend(other.completed);
        self.signed.extend(other.signed);
        self.force_close_due.extend(other.force_close_due);
    }

    pub(crate) fn absorb_ledger_step(&mut self, channel_id: ChannelId, step: Step, peer: Option<Address>) {
        self.signed.extend(step.signed);
        self.events.extend(step.events.into_iter().map(|event| PartyEvent::Ledger { channel_id, event }));
        if let Some(to) = peer {
            self.messages.extend(step.messages.into_iter().map(|m| Envelope { to, payload: Payload::Ledger(m) }));
        }
    }
}
