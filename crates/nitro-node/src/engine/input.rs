//! What changes a party: requests from the API, messages from peers, chain events, failed
//! transactions, peers reconnecting and the timer; and how each is applied to the sans-IO
//! party.

use alloy_primitives::{Address, U256};
use nitro_core::{
    chain::ChainEvent,
    party::{Clock, Effects, ObjectiveId, Party, PartyError, Payload},
    ChannelId,
};
use serde::{Deserialize, Serialize};

/// A request that changes the party (the API's write methods).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "request")]
pub enum Request {
    /// Open a ledger; `participants[0]` leads.
    LedgerOpen {
        /// Leader, follower.
        participants: [Address; 2],
        /// The (first) asset (zero: ETH).
        asset: Address,
        /// Their deposits of it, in participant order.
        amounts: [U256; 2],
        /// Further assets of a multi-asset ledger, each with the deposits in participant order
        /// (absent from requests logged before multi-asset ledgers).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        more_assets: Vec<(Address, [U256; 2])>,
        /// Channel nonce.
        nonce: u64,
    },
    /// Close a ledger.
    LedgerClose {
        /// The ledger.
        channel_id: ChannelId,
    },
    /// Withdraw part of our own funds from a ledger, migrating it to a successor.
    LedgerWithdraw {
        /// The ledger (or one it replaced).
        channel_id: ChannelId,
        /// How much of our balance.
        amount: U256,
        /// Of which asset (`None`, and in requests logged before: the ledger's first asset).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asset: Option<Address>,
    },
    /// Fund a virtual channel.
    VirtualFund {
        /// Payer, intermediaries, payee.
        participants: Vec<Address>,
        /// The asset.
        asset: Address,
        /// Payer's and payee's deposits.
        amounts: [U256; 2],
        /// Channel nonce.
        nonce: u64,
    },
    /// Deposit more into an open ledger of ours (a top-up).
    LedgerTopUp {
        /// The ledger.
        channel_id: ChannelId,
        /// How much more.
        amount: U256,
        /// Of which asset (`None`, and in requests logged before: the ledger's first asset).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        asset: Option<Address>,
    },
    /// Pay in a virtual channel.
    Pay {
        /// The virtual channel.
        channel_id: ChannelId,
        /// How much more.
        amount: U256,
    },
    /// Close a virtual channel.
    VirtualDefund {
        /// The virtual channel.
        channel_id: ChannelId,
    },
    /// Take a ledger or a virtual channel to chain alone.
    ForceClose {
        /// The channel.
        channel_id: ChannelId,
    },
    /// Stop an objective that has committed nothing yet.
    Cancel {
        /// The objective.
        objective: ObjectiveId,
    },
}

/// Everything that can change a party; what the store logs and replays.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "input")]
pub enum Input {
    /// A request from the API.
    Request(Request),
    /// A message from a peer (already bound to its address by the transport handshake).
    Message {
        /// The authenticated sender.
        from: Address,
        /// What it sent.
        payload: Payload,
    },
    /// A confirmed adjudicator event.
    Chain(ChainEvent),
    /// A transaction an objective asked for failed.
    TransactionFailed {
        /// The objective that asked for it.
        objective: ObjectiveId,
        /// `Some(why)`: refused for good by the chain shell (a token that would lose money in
        /// the adjudicator); the objective fails with the reason instead of asking again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    /// The transport (re)established an authenticated session with `peer`: the party sends
    /// what the peer may lack from us ([`Party::resync`]; a peer that acknowledged a message
    /// and crashed before storing it, or messages a full transport queue gave up). Changes
    /// nothing in the party; its messages are made durable like any others.
    PeerConnected {
        /// The peer.
        peer: Address,
    },
    /// The timer, with the wall clock and the chain's clock (not logged: it signs nothing
    /// new; an automatic force close it calls for is stepped, and logged, as a request).
    Tick {
        /// Wall clock, unix seconds (0: unknown).
        #[serde(default)]
        unix_secs: u64,
        /// The latest block's timestamp, if known.
        #[serde(default)]
        chain_time: Option<u64>,
    },
}

impl Input {
    /// A tick with no clock (tests and simulations that do not model time).
    pub fn tick() -> Self {
        Input::Tick { unix_secs: 0, chain_time: None }
    }
}

pub(crate) fn apply(party: &mut Party, input: &Input) -> Result<(Effects, Option<ObjectiveId>), PartyError> {
    Ok(match input {
        Input::Request(r) => match r.clone() {
            Request::LedgerOpen { participants, asset, amounts, more_assets, nonce } => {
                let mut assets = vec![(asset, amounts)];
                assets.extend(more_assets);
                party.direct_fund_assets(participants, &assets, nonce).map(|(id, e)| (e, Some(id)))?
            }
            Request::LedgerClose { channel_id } => party.direct_defund(channel_id).map(|(id, e)| (e, Some(id)))?,
            Request::LedgerWithdraw { channel_id, amount, asset: None } => {
                party.withdraw(channel_id, amount).map(|(id, e)| (e, Some(id)))?
            }
            Request::LedgerWithdraw { channel_id, amount, asset: Some(asset) } => {
                party.withdraw_in(channel_id, asset, amount).map(|(id, e)| (e, Some(id)))?
            }
            Request::VirtualFund { participants, asset, amounts, nonce } => {
                party.virtual_fund(participants, asset, amounts, nonce).map(|(id, e)| (e, Some(id)))?
            }
            Request::LedgerTopUp { channel_id, amount, asset: None } => {
                party.top_up(channel_id, amount).map(|(id, e)| (e, Some(id)))?
            }
            Request::LedgerTopUp { channel_id, amount, asset: Some(asset) } => {
                party.top_up_in(channel_id, asset, amount).map(|(id, e)| (e, Some(id)))?
            }
            Request::Pay { channel_id, amount } => (party.pay(channel_id, amount)?, None),
            Request::VirtualDefund { channel_id } => party.virtual_defund(channel_id).map(|(id, e)| (e, Some(id)))?,
            Request::ForceClose { channel_id } => party.force_close(channel_id).map(|(id, e)| (e, Some(id)))?,
            Request::Cancel { objective } => (party.cancel(objective)?, None),
        },
        Input::Message { from, payload } => (party.handle_message(*from, payload.clone())?, None),
        Input::Chain(event) => (party.handle_chain_event(event), None),
        Input::TransactionFailed { objective, refused: None } => (party.transaction_failed(*objective), None),
        Input::TransactionFailed { objective, refused: Some(why) } => {
            (party.transaction_refused(*objective, why), None)
        }
        Input::PeerConnected { peer } => (party.resync(*peer), None),
        Input::Tick { unix_secs, chain_time } => {
            (party.tick(Clock { unix_secs: *unix_secs, chain_time: *chain_time }), None)
        }
    })
}
