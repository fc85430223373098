//! The engine: feeds inputs to the sans-IO [`Party`], makes each step durable in the
//! [`Store`] before anything leaves the process, and loads the party back on start.
//!
//! State, not history (ADR-0020): after each input the engine writes the party's records the
//! input changed ([`Party::take_touched`]) together with the messages and transactions it
//! produced and the states it signed, in one SQLite transaction; finished objectives move to
//! the archive. Start-up loads the records, verified ([`Party::restore`]): its cost follows the
//! live state. A timer tick that changes nothing durable writes nothing.

mod input;
mod migrate;

use nitro_core::{
    party::{
        ChannelRecord, Effects, Envelope, ObjectiveId, ObjectiveRecord, Party, PartyConfig, PartyError, PartyEvent,
        PartyPolicy, PartyRecord, Payload, StateKey, TransactionRequest,
    },
    ChannelId, LedgerRecord, SignedTurn, SigningKey,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use input::{Input, Request};

use crate::store::{StepRecord, Store, StoreError};

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
    /// A stored record does not load (a corrupt or foreign store), or a v1/v2 store cannot
    /// be migrated safely: nothing is built from it.
    #[error("store: {0}")]
    Load(String),
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
    /// Messages written to the outbox since it was last pruned.
    written: u64,
}

/// What a group of inputs produced ([`Engine::step_group`]).
#[derive(Debug, Default)]
pub struct GroupOutput {
    /// Everything the group produced, committed together.
    pub output: Output,
    /// Each input's own result, in order: the objective a request started, or why the input
    /// was refused (then it changed nothing) or declined (then the decline is in `output`).
    pub results: Vec<Result<Option<ObjectiveId>, EngineError>>,
}

/// What a restarted engine must hand to the transport and the chain again.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Inputs of a v1/v2 store replayed by its migration (0 for a v3 store).
    pub replayed: usize,
    /// State records loaded.
    pub records: usize,
    /// Recent outbox messages (the transport dedups what the peer already has).
    pub messages: Vec<(u64, Envelope)>,
    /// Transactions not known to be settled. Not to be resubmitted blindly: a deposit whose
    /// `expectedHeld` matches again (after the channel concluded) would be lost. The objectives
    /// resubmit what they still need on their timers.
    pub transactions: Vec<(u64, TransactionRequest)>,
}

/// How many recent messages per peer are kept and re-sent after a restart.
const OUTBOX_KEPT_PER_PEER: usize = 512;

/// Messages written between two prunings of the outbox to [`OUTBOX_KEPT_PER_PEER`] per peer
/// (counted in messages, not steps: one group commit can write hundreds).
const PRUNE_EVERY: u64 = 1_000;

const LEDGER: &str = "ledger";
const OBJECTIVE: &str = "objective";
const CHANNEL: &str = "channel";
const PARTY: &str = "party";

fn corrupt(table: &'static str, key: &str, e: impl std::fmt::Display) -> EngineError {
    EngineError::Load(format!("{table} record {key} does not load: {e}"))
}

impl Engine {
    /// Opens the engine on `store` (with the library's permissive policy; a node uses
    /// [`Engine::open_with`]).
    pub fn open(store: Store, key: SigningKey, config: PartyConfig) -> Result<(Self, Recovery), EngineError> {
        Self::open_with(store, key, config, PartyPolicy::default())
    }

    /// Opens the engine on `store` for a party with `policy`: loads its records, verified, or
    /// migrates a v1/v2 store (replaying its inputs once, then writing the state).
    pub fn open_with(
        mut store: Store,
        key: SigningKey,
        config: PartyConfig,
        policy: PartyPolicy,
    ) -> Result<(Self, Recovery), EngineError> {
        let mut recovery = Recovery::default();
        let rows = store.state()?;
        let party = if store.user_version()? < crate::store::SCHEMA_VERSION {
            let (party, replayed) = migrate::replay(&store, key, config, policy)?;
            migrate::upgrade_outbox(&mut store)?;
            recovery.replayed = replayed;
            let mut engine = Self { party, store, poisoned: false, written: 0 };
            let mut record = StepRecord { clear_inputs: true, ..StepRecord::default() };
            let keys = engine.party.all_keys();
            engine.write_records(&keys, &mut record)?;
            engine.store.commit_step(&record)?;
            recovery.records = keys.len();
            store = engine.store;
            engine.party
        } else {
            recovery.records = rows.len();
            load(rows, key, config, policy)?
        };
        store.prune_outbox(OUTBOX_KEPT_PER_PEER)?;
        for (id, peer, body) in store.recent_outbox(OUTBOX_KEPT_PER_PEER)? {
            let to = peer.parse().map_err(|e: alloy_primitives::hex::FromHexError| corrupt("outbox", &peer, e))?;
            let payload: Payload = serde_json::from_str(&body).map_err(|e| corrupt("outbox", &id.to_string(), e))?;
            recovery.messages.push((id, Envelope { to, payload }));
        }
        for (id, body) in store.pending_transactions()? {
            let transaction: StoredTransaction =
                serde_json::from_str(&body).map_err(|e| corrupt("transactions", &id.to_string(), e))?;
            recovery.transactions.push((id, transaction.into_request()));
        }
        let mut party = party;
        let _ = party.take_touched();
        Ok((Self { party, store, poisoned: false, written: 0 }, recovery))
    }

    /// Applies `input`; what it changed and everything it produced are committed durably
    /// before this returns. A refused input changes nothing. A store failure is fatal: the
    /// party in memory is then ahead of the store, so the engine refuses every later step and
    /// the process must restart (loading the store, where the failed step never happened, and
    /// nothing of it was sent).
    pub fn step(&mut self, input: Input) -> Result<Output, EngineError> {
        let mut group = self.step_group(vec![input])?;
        let mut output = group.output;
        match group.results.pop() {
            Some(Ok(started)) => {
                output.started = started;
                Ok(output)
            }
            Some(Err(EngineError::Declined { error, .. })) => {
                Err(EngineError::Declined { error, output: Box::new(output) })
            }
            Some(Err(e)) => Err(e),
            None => Ok(output),
        }
    }

    /// Applies `inputs` that arrived together as one group (group commit): the ledger changes
    /// their objectives ask for are proposed together, one batch per ledger; everything they
    /// changed and produced is committed in one transaction (one fsync) before this returns,
    /// so nothing of the group leaves before the commit. Each input's own result (the
    /// objective a request started, or why it was refused or declined) is in
    /// [`GroupOutput::results`], in order. A store failure refuses the whole group and is
    /// fatal, as for [`Engine::step`].
    pub fn step_group(&mut self, inputs: Vec<Input>) -> Result<GroupOutput, EngineError> {
        if self.poisoned {
            return Err(EngineError::Poisoned);
        }
        let mut effects = Effects::default();
        let mut results = Vec::with_capacity(inputs.len());
        self.party.hold_proposals(true);
        for input in &inputs {
            let result = self.apply(input, &mut effects);
            results.push(result);
        }
        // A counterparty silent past the patience: the force close is a request.
        while !effects.force_close_due.is_empty() {
            for channel_id in std::mem::take(&mut effects.force_close_due) {
                let request = Input::Request(Request::ForceClose { channel_id });
                if let Err(error) = self.apply(&request, &mut effects) {
                    tracing::warn!(%channel_id, %error, "automatic force close refused");
                }
            }
        }
        self.party.hold_proposals(false);
        effects.extend(self.party.flush());
        let output = match self.commit(effects, None) {
            Ok(output) => output,
            Err(e) => {
                let _ = self.party.take_touched();
                return Err(e);
            }
        };
        Ok(GroupOutput { output, results })
    }

    /// Applies one input of a group, adding what it produced to `effects`.
    fn apply(&mut self, input: &Input, effects: &mut Effects) -> Result<Option<ObjectiveId>, EngineError> {
        // A peer's late copy of a round of an objective we finished and archived: nothing to do.
        if let Input::Message {
            payload: Payload::State { objective, .. } | Payload::Decline { objective, .. }, ..
        } = input
        {
            if self.party.objective(objective).is_none() && self.store.archived(&objective.to_string())?.is_some() {
                return Ok(None);
            }
        }
        match input::apply(&mut self.party, input) {
            Ok((more, started)) => {
                effects.extend(more);
                Ok(started)
            }
            Err(PartyError::Refused { error, answer }) => {
                // Nothing changed; the decline leaves like any message, durable first.
                effects.extend(*answer);
                Err(EngineError::Declined { error: *error, output: Box::default() })
            }
            // A refused input changes nothing the store holds.
            Err(e) => Err(e.into()),
        }
    }

    /// Serializes the records named by `keys` into `record` (deleting those gone).
    fn write_records(&mut self, keys: &[StateKey], record: &mut StepRecord) -> Result<(), EngineError> {
        for key in keys {
            let (kind, id, body) = match key {
                StateKey::Ledger(c) => (
                    LEDGER,
                    c.to_string(),
                    self.party.ledger_record(c).map(|r| encode(&r, &mut self.poisoned)).transpose()?,
                ),
                StateKey::Objective(o) => (
                    OBJECTIVE,
                    o.to_string(),
                    self.party.objective_record(o).map(|r| encode(&r, &mut self.poisoned)).transpose()?,
                ),
                StateKey::Channel(c) => (
                    CHANNEL,
                    c.to_string(),
                    self.party.channel_record(c).map(|r| encode(&r, &mut self.poisoned)).transpose()?,
                ),
                StateKey::Party => {
                    (PARTY, String::new(), Some(encode(&self.party.party_record(), &mut self.poisoned)?))
                }
            };
            if let (StateKey::Ledger(c), None) = (key, &body) {
                record.retired.push(c.to_string());
            }
            record.state.push((kind, id, body));
        }
        Ok(())
    }

    /// Makes a step durable: the records it changed, finished objectives archived, its
    /// messages, transactions and signatures, in one transaction; refused as a whole if it
    /// would sign a second state at a turn.
    fn commit(&mut self, effects: Effects, started: Option<ObjectiveId>) -> Result<Output, EngineError> {
        let mut record = StepRecord::default();
        for (id, status, detail) in self.party.evict_finished() {
            record.archived.push((id.to_string(), status.to_owned(), detail));
            if let ObjectiveId::VirtualFund(v) | ObjectiveId::VirtualDefund(v) = id {
                record.retired.push(v.to_string());
            }
        }
        let keys = self.party.take_touched();
        self.write_records(&keys, &mut record)?;
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
        let ids = if record.state.is_empty()
            && record.archived.is_empty()
            && record.messages.is_empty()
            && record.transactions.is_empty()
            && record.signed.is_empty()
        {
            crate::store::StepIds::default() // nothing durable: no write, no fsync
        } else {
            match self.store.commit_step(&record) {
                Ok(ids) => ids,
                Err(e) => {
                    self.poisoned = true;
                    return Err(e.into());
                }
            }
        };
        self.written += ids.messages.len() as u64;
        if self.written >= PRUNE_EVERY {
            self.written = 0;
            self.store.prune_outbox(OUTBOX_KEPT_PER_PEER)?;
        }
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

    /// What the archive holds of an objective the party has finished and let go of.
    pub fn archived(&self, id: &ObjectiveId) -> Result<Option<Archived>, EngineError> {
        Ok(self.store.archived(&id.to_string())?.map(|(status, detail)| Archived { done: status == "done", detail }))
    }

    /// Archived objectives about `channel` (all with `None`), at most `limit`, in id order.
    pub fn archived_list(
        &self,
        channel: Option<ChannelId>,
        limit: usize,
    ) -> Result<Vec<(ObjectiveId, Archived)>, EngineError> {
        let needle = channel.map(|c| c.to_string()).unwrap_or_default();
        Ok(self
            .store
            .archive(&needle, limit)?
            .into_iter()
            .filter_map(|(id, status, detail)| Some((id.parse().ok()?, Archived { done: status == "done", detail })))
            .collect())
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

/// The compact record a finished objective leaves once the party lets go of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archived {
    /// It completed (else it failed).
    pub done: bool,
    /// `"done"`, or why it failed.
    pub detail: String,
}

/// Builds the party from its records, every ledger verified.
fn load(
    rows: Vec<(String, String, String)>,
    key: SigningKey,
    config: PartyConfig,
    policy: PartyPolicy,
) -> Result<Party, EngineError> {
    let mut ledgers = Vec::new();
    let mut objectives = Vec::new();
    let mut channels = Vec::new();
    let mut party = PartyRecord::default();
    for (kind, id, body) in rows {
        match kind.as_str() {
            LEDGER => ledgers.push(serde_json::from_str::<LedgerRecord>(&body).map_err(|e| corrupt("ledger", &id, e))?),
            OBJECTIVE => objectives
                .push(serde_json::from_str::<ObjectiveRecord>(&body).map_err(|e| corrupt("objective", &id, e))?),
            CHANNEL => {
                let channel = id.parse().map_err(|e| corrupt("channel", &id, e))?;
                let record: ChannelRecord = serde_json::from_str(&body).map_err(|e| corrupt("channel", &id, e))?;
                channels.push((channel, record));
            }
            PARTY => party = serde_json::from_str(&body).map_err(|e| corrupt("party", &id, e))?,
            other => return Err(EngineError::Load(format!("unknown record kind {other:?}"))),
        }
    }
    Party::restore(key, config, policy, party, ledgers, objectives, channels)
        .map_err(|e| EngineError::Load(format!("the stored state does not verify: {e}")))
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
