//! The engine: feeds inputs to the sans-IO [`Party`], makes each step durable in the
//! [`Store`] before anything leaves the process, and rebuilds the party from the store on
//! start.

use alloy_primitives::{Address, U256};
use nitro_core::{
    chain::ChainEvent,
    party::{
        Effects, Envelope, ObjectiveId, Party, PartyConfig, PartyError, PartyEvent, PartyPolicy, Payload,
        TransactionRequest,
    },
    ChannelId, SignedTurn, SigningKey,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::store::{StepRecord, Store, StoreError};

/// A request that changes the party (the API's write methods).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "request")]
pub enum Request {
    /// Open a ledger; `participants[0]` leads.
    LedgerOpen {
        /// Leader, follower.
        participants: [Address; 2],
        /// The asset (zero: ETH).
        asset: Address,
        /// Their deposits, in participant order.
        amounts: [U256; 2],
        /// Channel nonce.
        nonce: u64,
    },
    /// Close a ledger.
    LedgerClose {
        /// The ledger.
        channel_id: ChannelId,
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

/// Why a step failed; the party and the store are unchanged.
#[derive(Debug, Error)]
pub enum EngineError {
    /// The party refused the input.
    #[error(transparent)]
    Party(#[from] PartyError),
    /// The store failed (the step did not happen).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An earlier store failure left the party ahead of the store: restart the process.
    #[error("the store failed earlier; restart to recover from it")]
    Poisoned,
    /// A record could not be encoded.
    #[error("encoding: {0}")]
    Encode(#[from] serde_json::Error),
    /// The party refused a peer's objective; `output` holds the decline to send (the party
    /// is unchanged, the input is not logged).
    #[error("{error}")]
    Declined {
        /// Why.
        error: PartyError,
        /// The decline, made durable like any outgoing message.
        output: Box<Output>,
    },
}

/// What a durable step asks the shell to do.
#[derive(Debug, Default)]
pub struct Output {
    /// Messages to send, with their outbox ids.
    pub messages: Vec<(u64, Envelope)>,
    /// Transactions to submit, with their ids.
    pub transactions: Vec<(u64, TransactionRequest)>,
    /// What happened.
    pub events: Vec<PartyEvent>,
    /// Objectives completed.
    pub completed: Vec<ObjectiveId>,
    /// The objective a request started, if any.
    pub started: Option<ObjectiveId>,
    /// The states the party signed in the step (already recorded in the store).
    pub signed: Vec<SignedTurn>,
}

impl Output {
    /// Appends a later step's output.
    pub fn absorb(&mut self, other: Output) {
        self.messages.extend(other.messages);
        self.transactions.extend(other.transactions);
        self.events.extend(other.events);
        self.completed.extend(other.completed);
        self.signed.extend(other.signed);
    }
}

/// The party and its store.
pub struct Engine {
    party: Party,
    store: Store,
    poisoned: bool,
}

/// What a restarted engine must hand to the transport and the chain again.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Inputs replayed.
    pub replayed: usize,
    /// Recent outbox messages (the transport dedups what the peer already has).
    pub messages: Vec<(u64, Envelope)>,
    /// Transactions not known to be settled. Not to be resubmitted blindly: a deposit whose
    /// `expectedHeld` matches again (after the channel concluded) would be lost. The objectives
    /// resubmit what they still need on their timers.
    pub transactions: Vec<(u64, TransactionRequest)>,
}

/// How many recent messages per peer are kept and re-sent after a restart.
const OUTBOX_KEPT_PER_PEER: usize = 512;

fn apply(party: &mut Party, input: &Input) -> Result<(Effects, Option<ObjectiveId>), PartyError> {
    Ok(match input {
        Input::Request(r) => match r.clone() {
            Request::LedgerOpen { participants, asset, amounts, nonce } => {
                party.direct_fund(participants, asset, amounts, nonce).map(|(id, e)| (e, Some(id)))?
            }
            Request::LedgerClose { channel_id } => party.direct_defund(channel_id).map(|(id, e)| (e, Some(id)))?,
            Request::VirtualFund { participants, asset, amounts, nonce } => {
                party.virtual_fund(participants, asset, amounts, nonce).map(|(id, e)| (e, Some(id)))?
            }
            Request::Pay { channel_id, amount } => (party.pay(channel_id, amount)?, None),
            Request::VirtualDefund { channel_id } => party.virtual_defund(channel_id).map(|(id, e)| (e, Some(id)))?,
            Request::ForceClose { channel_id } => party.force_close(channel_id).map(|(id, e)| (e, Some(id)))?,
            Request::Cancel { objective } => (party.cancel(objective)?, None),
        },
        Input::Message { from, payload } => (party.handle_message(*from, payload.clone())?, None),
        Input::Chain(event) => (party.handle_chain_event(event), None),
        Input::TransactionFailed { objective } => (party.transaction_failed(*objective), None),
        Input::Tick { unix_secs, chain_time } => {
            (party.tick(nitro_core::party::Clock { unix_secs: *unix_secs, chain_time: *chain_time }), None)
        }
    })
}

impl Engine {
    /// Opens the engine on `store`, replaying every stored input into a fresh party (with
    /// the library's permissive policy; a node uses [`Engine::open_with`]).
    pub fn open(store: Store, key: SigningKey, config: PartyConfig) -> Result<(Self, Recovery), EngineError> {
        Self::open_with(store, key, config, PartyPolicy::default())
    }

    /// Opens the engine on `store` for a party with `policy`, replaying every stored input.
    pub fn open_with(
        store: Store,
        key: SigningKey,
        config: PartyConfig,
        policy: PartyPolicy,
    ) -> Result<(Self, Recovery), EngineError> {
        let mut party = Party::new(key, config).with_policy(policy);
        let mut recovery = Recovery::default();
        for (seq, body) in store.inputs()? {
            let input: Input = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                table: "inputs",
                seq,
                message: e.to_string(),
            })?;
            // A stored input applied before; it applies the same way again.
            if let Err(e) = apply(&mut party, &input) {
                tracing::warn!(seq, error = %e, "stored input no longer applies");
            }
            recovery.replayed += 1;
        }
        store.prune_outbox(OUTBOX_KEPT_PER_PEER)?;
        for (id, peer, body) in store.recent_outbox(OUTBOX_KEPT_PER_PEER)? {
            let to = peer.parse().map_err(|e: alloy_primitives::hex::FromHexError| StoreError::Corrupt {
                table: "outbox",
                seq: id as i64,
                message: e.to_string(),
            })?;
            let payload: Payload = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                table: "outbox",
                seq: id as i64,
                message: e.to_string(),
            })?;
            recovery.messages.push((id, Envelope { to, payload }));
        }
        for (id, body) in store.pending_transactions()? {
            let transaction = serde_json::from_str(&body).map_err(|e| StoreError::Corrupt {
                table: "transactions",
                seq: id as i64,
                message: e.to_string(),
            })?;
            recovery.transactions.push((id, StoredTransaction::into_request(transaction)));
        }
        Ok((Self { party, store, poisoned: false }, recovery))
    }

    /// Applies `input`; the input and everything it produced are committed durably before
    /// this returns. A refused input changes nothing. A store failure is fatal: the party in
    /// memory is then ahead of the store, so the engine refuses every later step and the
    /// process must restart (replaying the store, where the failed step never happened, and
    /// nothing of it was sent).
    pub fn step(&mut self, input: Input) -> Result<Output, EngineError> {
        if self.poisoned {
            return Err(EngineError::Poisoned);
        }
        let (effects, started) = match apply(&mut self.party, &input) {
            Ok(applied) => applied,
            Err(PartyError::Refused { error, answer }) => {
                // Nothing changed; the decline leaves like any message, durable first.
                let output = self.commit(None, *answer, None)?;
                return Err(EngineError::Declined { error: *error, output: Box::new(output) });
            }
            Err(e) => return Err(e.into()),
        };
        let logged = !matches!(input, Input::Tick { .. });
        let record_input = if logged { Some(&input) } else { None };
        let due = effects.force_close_due.clone();
        let mut output = self.commit(record_input, effects, started)?;
        // A counterparty silent past the patience: the force close is a logged request.
        for channel_id in due {
            match self.step(Input::Request(Request::ForceClose { channel_id })) {
                Ok(more) => output.absorb(more),
                Err(EngineError::Party(error)) => tracing::warn!(%channel_id, %error, "automatic force close refused"),
                Err(e) => return Err(e),
            }
        }
        Ok(output)
    }

    /// Makes a step durable: its input (if logged), messages, transactions and signatures in
    /// one transaction; refused as a whole if it would sign a second state at a turn.
    fn commit(
        &mut self,
        input: Option<&Input>,
        effects: Effects,
        started: Option<ObjectiveId>,
    ) -> Result<Output, EngineError> {
        let mut record = StepRecord { input: None, ..StepRecord::default() };
        if let Some(input) = input {
            record.input = Some(encode(input, &mut self.poisoned)?);
        }
        for m in &effects.messages {
            record.messages.push((m.to.to_string(), encode(&m.payload, &mut self.poisoned)?));
        }
        for t in &effects.transactions {
            record.transactions.push(encode(&StoredTransaction::from_request(t), &mut self.poisoned)?);
        }
        record.signed = effects
            .signed
            .iter()
            .map(|s| (s.channel_id.to_string(), s.turn_num.to::<u64>(), s.state_hash.to_string()))
            .collect();
        let ids = match self.store.commit_step(&record) {
            Ok(ids) => ids,
            Err(e) => {
                self.poisoned = true;
                return Err(e.into());
            }
        };
        Ok(Output {
            messages: ids.messages.into_iter().zip(effects.messages).collect(),
            transactions: ids.transactions.into_iter().zip(effects.transactions).collect(),
            events: effects.events,
            completed: effects.completed,
            started,
            signed: effects.signed,
        })
    }

    /// The party (read-only: every change goes through [`Engine::step`]).
    pub fn party(&self) -> &Party {
        &self.party
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Gives the store back (to reopen it: a simulated restart).
    pub fn into_store(self) -> Store {
        self.store
    }
}

/// Encodes a record; a failure after the party changed poisons the engine like a store failure.
fn encode(value: &impl Serialize, poisoned: &mut bool) -> Result<String, EngineError> {
    serde_json::to_string(value).map_err(|e| {
        *poisoned = true;
        EngineError::Encode(e)
    })
}

/// A transaction request as stored.
#[derive(Serialize, Deserialize)]
struct StoredTransaction {
    objective: Option<ObjectiveId>,
    transaction: nitro_core::chain::ChainTransaction,
    #[serde(default)]
    deadline: Option<u64>,
}

impl StoredTransaction {
    fn from_request(t: &TransactionRequest) -> Self {
        Self { objective: t.objective, transaction: t.transaction.clone(), deadline: t.deadline }
    }

    fn into_request(self) -> TransactionRequest {
        TransactionRequest { objective: self.objective, transaction: self.transaction, deadline: self.deadline }
    }
}
