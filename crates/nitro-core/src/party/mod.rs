//! One participant's ledgers and objectives, as a sans-IO state machine.
//!
//! A [`Party`] takes inputs — API requests ([`Party::direct_fund`], [`Party::virtual_fund`],
//! …), messages from peers ([`Party::handle_message`]), adjudicator events
//! ([`Party::handle_chain_event`]), timer ticks ([`Party::tick`]) and peers reconnecting
//! ([`Party::resync`]) — and returns [`Effects`]: messages to send, transactions to submit,
//! events to persist. It owns the
//! party's [`ConsensusChannel`]s and runs the four objectives over them:
//! [`DirectFund`], [`DirectDefund`], [`VirtualFund`] and [`VirtualDefund`].

mod chain_view;
mod direct_defund;
mod direct_fund;
mod direct_fund_asset;
mod effects;
mod error;
mod exit;
mod force_close;
mod ids;
mod migrate;
mod objective;
mod payout_steps;
mod policy;
mod records;
mod round;
mod sync;
mod top_up;
mod virtual_defund;
mod virtual_fund;
mod waiting;
mod withdraw;

use std::collections::{BTreeMap, HashMap, HashSet};

pub use chain_view::{ChannelChain, RegisteredChallenge};
pub use direct_defund::DirectDefund;
pub use direct_fund::DirectFund;
pub use effects::{Effects, Envelope, PartyEvent, Payload, TransactionRequest};
pub use error::PartyError;
pub use exit::Clock;
pub use force_close::ForceClose;
pub use ids::ObjectiveId;
pub use objective::Objective;
pub use policy::{AssetLimits, PartyPolicy};
pub use records::{ChannelRecord, ObjectiveRecord, PartyRecord, StateKey, EVICT_AFTER_TICKS};
pub use top_up::TopUp;
pub use virtual_defund::{VirtualDefund, LEGACY_VIRTUAL_FINAL_TURN, REDEMPTION_TURN, VIRTUAL_FINAL_TURN};
pub use virtual_fund::{VirtualChannel, VirtualFund};
pub use waiting::WaitingFor;
pub use withdraw::Withdraw;

use chain_view::ChainView;
use objective::{Crank, Ctx, View};

use crate::{
    destination_of, Address, Allocation, Approval, AssetMetadata, ChannelId, ConsensusChannel, Exit, Proposal,
    SignedState, SigningKey, SingleAssetExit, State, Voucher, U256, U48,
};

/// Contract addresses and defaults a party works with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartyConfig {
    /// The deployed `ConsensusApp` (app of every ledger).
    pub consensus_app: Address,
    /// The deployed `VirtualPaymentApp` (app of every virtual channel).
    pub virtual_payment_app: Address,
    /// Challenge duration of the channels this party opens, in seconds.
    pub challenge_duration: U48,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    objective: Objective,
    done: bool,
}

/// One participant: its key, its ledgers and its objectives.
#[derive(Clone, Debug)]
pub struct Party {
    key: SigningKey,
    config: PartyConfig,
    ledgers: BTreeMap<ChannelId, ConsensusChannel>,
    ledger_with: HashMap<Address, ChannelId>,
    peers: HashMap<ChannelId, Address>,
    closing: HashSet<ChannelId>,
    chain: ChainView,
    objectives: BTreeMap<ObjectiveId, Entry>,
    /// Cumulative amount paid per virtual channel (as payer: issued; as payee: received).
    paid: HashMap<ChannelId, U256>,
    /// Per follower ledger: the pending head no objective expects, and for how many inputs.
    deferred: HashMap<ChannelId, (crate::TurnNum, u32)>,
    /// The latest voucher received per virtual channel (as payee): what a redemption carries.
    vouchers: HashMap<ChannelId, Voucher>,
    /// Answers to stale challenges, retried until on chain.
    defences: BTreeMap<ChannelId, exit::Defence>,
    policy: PartyPolicy,
    /// Wall clock of the latest tick (unix seconds; 0 before the first).
    wall_now: u64,
    /// Wall clock of the first tick: the silence of a peer never heard counts from here.
    started_at: u64,
    /// When each peer was last heard from (wall clock of the tick before its message).
    last_heard: HashMap<Address, u64>,
    /// Changes objectives asked of ledgers we lead, not proposed yet (ADR-0018).
    changes: BTreeMap<ChannelId, Vec<(ObjectiveId, Proposal)>>,
    /// Whether changes wait for [`Party::flush`] (a caller coalescing several inputs) instead
    /// of going out at the end of each input.
    hold_changes: bool,
    /// Replaying an input log of a release that closed virtual channels at
    /// [`LEGACY_VIRTUAL_FINAL_TURN`] ([`Party::replay_legacy`]).
    legacy: bool,
    /// Records changed since [`Party::take_touched`].
    touched: std::collections::BTreeSet<StateKey>,
    /// Timer ticks since each finished objective finished (not durable).
    finished_ticks: HashMap<ObjectiveId, u32>,
    /// Ledgers replaced by a withdrawal, each with its successor (ADR-0022 §5).
    successors: BTreeMap<ChannelId, ChannelId>,
}

/// Inputs a ledger's head proposal may stay unexpected before the follower rejects it.
const UNEXPECTED_PROPOSAL_PATIENCE: u32 = 200;

/// The objective that would expect `proposal` (`None` for the top-up proposals, which the
/// party decides by its own rule: [`Party::decide_top_up`]).
fn expecting(proposal: &Proposal) -> Option<ObjectiveId> {
    match *proposal {
        Proposal::Add { guarantee, .. } => Some(ObjectiveId::VirtualFund(guarantee.target())),
        Proposal::Remove { target, .. } => Some(ObjectiveId::VirtualDefund(target)),
        Proposal::Reserve { .. } | Proposal::Credit { .. } | Proposal::CancelReserve { .. } => None,
    }
}

impl Party {
    /// A party with no channels.
    pub fn new(key: SigningKey, config: PartyConfig) -> Self {
        Self {
            key,
            config,
            ledgers: BTreeMap::new(),
            ledger_with: HashMap::new(),
            peers: HashMap::new(),
            closing: HashSet::new(),
            chain: ChainView::default(),
            objectives: BTreeMap::new(),
            paid: HashMap::new(),
            deferred: HashMap::new(),
            vouchers: HashMap::new(),
            defences: BTreeMap::new(),
            policy: PartyPolicy::default(),
            wall_now: 0,
            started_at: 0,
            last_heard: HashMap::new(),
            changes: BTreeMap::new(),
            hold_changes: false,
            legacy: false,
            touched: Default::default(),
            finished_ticks: HashMap::new(),
            successors: BTreeMap::new(),
        }
    }

    /// With `hold` on, the changes objectives ask of our ledgers wait for [`Party::flush`]
    /// (a caller applying a group of inputs before one durable commit coalesces them into
    /// one proposal per ledger); with it off (the default) they go out at the end of each
    /// input, still one proposal per ledger.
    pub fn hold_proposals(&mut self, hold: bool) {
        self.hold_changes = hold;
    }

    /// While `on`, the party replays the input log of a release from before the redemption
    /// turn (store schema v1): virtual channels close with final states at
    /// [`LEGACY_VIRTUAL_FINAL_TURN`], as that release signed them. Only a store migration sets
    /// it, and clears it once the log is replayed; objectives begun meanwhile keep their states.
    pub fn replay_legacy(&mut self, on: bool) {
        self.legacy = on;
    }

    fn virtual_final_turn(&self) -> u64 {
        if self.legacy {
            LEGACY_VIRTUAL_FINAL_TURN
        } else {
            VIRTUAL_FINAL_TURN
        }
    }

    /// Proposes every change waiting, one batch per ledger: one signature and one
    /// countersignature for all of them. A change that does not apply fails its objective
    /// with the reason.
    pub fn flush(&mut self) -> Effects {
        let mut effects = Effects::default();
        if !self.changes.is_empty() {
            self.touch(StateKey::Party);
        }
        let (waiting, ready): (BTreeMap<_, _>, BTreeMap<_, _>) =
            std::mem::take(&mut self.changes).into_iter().partition(|(ledger, _)| self.migrating(ledger));
        self.changes = waiting;
        for (ledger, changes) in ready {
            let proposals: Vec<Proposal> = changes.iter().map(|(_, p)| *p).collect();
            let peer = self.peers.get(&ledger).copied();
            let result = match self.ledgers.get_mut(&ledger) {
                Some(ConsensusChannel::Leader(leader)) => leader.propose_batch(proposals),
                _ => Err(crate::ChannelError::UnexpectedMessage("not a ledger this party leads")),
            };
            let mut failed: Vec<(ObjectiveId, String)> = Vec::new();
            match result {
                Ok(step) => {
                    for event in &step.events {
                        if let crate::LedgerEvent::ProposalDropped { proposal, reason } = event {
                            if let Some((id, _)) = changes.iter().find(|(_, p)| p == proposal) {
                                failed.push((*id, reason.clone()));
                            }
                        }
                    }
                    effects.absorb_ledger_step(ledger, step, peer);
                }
                Err(e) => failed.extend(changes.iter().map(|(id, _)| (*id, e.to_string()))),
            }
            for (id, reason) in failed {
                let why = format!("ledger {ledger}: {reason}");
                if let Some(entry) = self.objectives.get_mut(&id) {
                    entry.objective.fail_with(&why);
                    effects.events.push(PartyEvent::ObjectiveFailed { id, reason: why });
                }
            }
        }
        self.note(&effects);
        effects
    }

    /// The same party with `policy`.
    pub fn with_policy(mut self, policy: PartyPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The party's policy.
    pub fn policy(&self) -> &PartyPolicy {
        &self.policy
    }

    /// This party's address.
    pub fn address(&self) -> Address {
        self.key.address()
    }

    /// Opens a one-asset ledger: `participants[0]` leads. Both parties' deposits (`amounts`,
    /// in that order) go to chain; the counterparty joins when our prefund signature reaches
    /// it. See [`Party::direct_fund_assets`] for several assets.
    pub fn direct_fund(
        &mut self,
        participants: [Address; 2],
        asset: Address,
        amounts: [U256; 2],
        channel_nonce: u64,
    ) -> Result<(ObjectiveId, Effects), PartyError> {
        self.direct_fund_assets(participants, &[(asset, amounts)], channel_nonce)
    }

    fn funding_with(&self, peer: Address) -> bool {
        self.objectives
            .values()
            .any(|e| matches!(&e.objective, Objective::DirectFund(d) if !e.done && d.failure().is_none() && d.participants().contains(&peer)))
    }

    /// The turn-0 state of a channel this party opens: one asset, the given allocations.
    fn prefund(
        &self,
        participants: Vec<Address>,
        app_definition: Address,
        asset: Address,
        allocations: Vec<Allocation>,
        channel_nonce: u64,
    ) -> State {
        State {
            participants,
            channel_nonce,
            app_definition,
            challenge_duration: self.config.challenge_duration,
            outcome: Exit(vec![SingleAssetExit { asset, asset_metadata: AssetMetadata::default(), allocations }]),
            app_data: Default::default(),
            turn_num: U48::ZERO,
            is_final: false,
        }
    }

    /// Closes a ledger (refused while it holds guarantees, proposals wait, or a withdrawal is
    /// under way); a ledger replaced by a withdrawal is closed through its successor.
    pub fn direct_defund(&mut self, ledger: ChannelId) -> Result<(ObjectiveId, Effects), PartyError> {
        let ledger = self.current_ledger(ledger);
        if self.migrating(&ledger) {
            return Err(PartyError::ProposalsPending);
        }
        let channel = self.ledgers.get(&ledger).ok_or(PartyError::UnknownLedger(ledger))?;
        let objective = DirectDefund::new(channel, None)?;
        self.closing.insert(ledger);
        self.touch(StateKey::Party);
        self.start(Objective::DirectDefund(objective))
    }

    /// Funds a virtual channel between `participants[0]` (payer, puts in `amounts[0]`) and the
    /// last participant (payee, `amounts[1]`), through the intermediaries between them.
    pub fn virtual_fund(
        &mut self,
        participants: Vec<Address>,
        asset: Address,
        amounts: [U256; 2],
        channel_nonce: u64,
    ) -> Result<(ObjectiveId, Effects), PartyError> {
        let (Some(first), Some(last)) = (participants.first(), participants.last()) else {
            return Err(PartyError::BadRequest("no participants".into()));
        };
        let allocations = vec![
            Allocation::simple(destination_of(*first), amounts[0]),
            Allocation::simple(destination_of(*last), amounts[1]),
        ];
        let state =
            self.prefund(participants.clone(), self.config.virtual_payment_app, asset, allocations, channel_nonce);
        let me = self.address();
        let mut seen = std::collections::HashSet::new();
        if participants.iter().any(|p| !seen.insert(*p)) {
            return Err(PartyError::BadRequest("a participant appears twice on the path".into()));
        }
        if participants.first() != Some(&me) {
            return Err(PartyError::BadRequest(
                "this party funds virtual channels it pays from (the first participant)".into(),
            ));
        }
        amounts[0].checked_add(amounts[1]).ok_or_else(|| PartyError::BadRequest("amounts overflow 256 bits".into()))?;
        let objective = VirtualFund::new(&state, self)?;
        self.check_open(&objective)?;
        self.check_capacity(&objective)?;
        self.start(Objective::VirtualFund(objective))
    }

    fn check_open(&self, v: &VirtualFund) -> Result<(), PartyError> {
        match v.ledgers.iter().find(|l| self.closing.contains(&l.channel_id)) {
            Some(l) => Err(PartyError::LedgerClosing(l.channel_id)),
            None => Ok(()),
        }
    }

    /// Pays `amount` more to the payee of virtual channel `channel` (we must be its payer).
    pub fn pay(&mut self, channel: ChannelId, amount: U256) -> Result<Effects, PartyError> {
        let v = self.funded(channel)?.channel().clone();
        if v.prefund.participants.first() != Some(&self.address()) {
            return Err(PartyError::BadRequest("only the first participant pays".into()));
        }
        let total = self.paid.get(&channel).copied().unwrap_or_default().saturating_add(amount);
        if total > v.amounts[0] {
            return Err(PartyError::Overpaid { paid: total, available: v.amounts[0] });
        }
        self.paid.insert(channel, total);
        self.touch(StateKey::Channel(channel));
        let voucher = Voucher::sign(channel, total, &self.key);
        let payee = *v.prefund.participants.last().ok_or(PartyError::NotAParticipant)?;
        Ok(Effects { messages: vec![Envelope { to: payee, payload: Payload::Voucher(voucher) }], ..Effects::default() })
    }

    /// What has been paid so far in `channel` (as payer: issued; as payee: received).
    pub fn paid(&self, channel: &ChannelId) -> U256 {
        self.paid.get(channel).copied().unwrap_or_default()
    }

    fn funded(&self, channel: ChannelId) -> Result<&VirtualFund, PartyError> {
        match self.objectives.get(&ObjectiveId::VirtualFund(channel)) {
            Some(Entry { objective: Objective::VirtualFund(v), done: true }) => Ok(v),
            _ => Err(PartyError::NotFunded(channel)),
        }
    }

    /// Closes virtual channel `channel`, paying the payee what the vouchers say.
    pub fn virtual_defund(&mut self, channel: ChannelId) -> Result<(ObjectiveId, Effects), PartyError> {
        let v = self.funded(channel)?;
        let final_state = v.channel().final_state_at(self.paid(&channel), self.virtual_final_turn())?;
        let objective = VirtualDefund::new(final_state, &v.ledgers);
        self.start(Objective::VirtualDefund(objective))
    }

    fn start(&mut self, objective: Objective) -> Result<(ObjectiveId, Effects), PartyError> {
        let id = objective.id();
        if self.objectives.contains_key(&id) {
            return Err(PartyError::ObjectiveExists(id));
        }
        self.objectives.insert(id, Entry { objective, done: false });
        self.touch(StateKey::Objective(id));
        self.touch(StateKey::Party);
        let mut effects = Effects { events: vec![PartyEvent::ObjectiveStarted { id }], ..Effects::default() };
        effects.extend(self.crank_all());
        self.note(&effects);
        Ok((id, effects))
    }

    /// Takes a message from peer `from`.
    pub fn handle_message(&mut self, from: Address, payload: Payload) -> Result<Effects, PartyError> {
        let mut effects = Effects::default();
        self.last_heard.insert(from, self.wall_now);
        match &payload {
            Payload::State { objective, .. } | Payload::Decline { objective, .. } => {
                self.touch(StateKey::Objective(*objective))
            }
            Payload::Ledger(m) => self.touch(StateKey::Ledger(m.channel_id())),
            Payload::Voucher(v) => self.touch(StateKey::Channel(v.channel_id)),
            Payload::TopUpRequest { channel_id, .. } => {
                self.touch(StateKey::Objective(ObjectiveId::TopUp(*channel_id)))
            }
        }
        match payload {
            Payload::State { objective, state } => {
                let channel_ok =
                    objective.channel_id() == state.channel_id() || matches!(objective, ObjectiveId::Withdraw(_));
                if !state.state().participants.contains(&from) || !channel_ok {
                    return Err(PartyError::UnexpectedSender(from));
                }
                // A refused state changes nothing: a new objective is kept only once the
                // state merged into it.
                self.forget_failed_withdrawal(objective, Some(state.channel_id()));
                let mut created = match self.objectives.contains_key(&objective) {
                    true => None,
                    false => match self.objective_from_state(objective, state.state()) {
                        Ok(o) => Some(Entry { objective: o, done: false }),
                        Err(e) => {
                            // Tell the sender at once, so that it does not wait forever.
                            let declined = self.decline_to(objective, vec![from], &e.to_string());
                            return Err(PartyError::Refused { error: Box::new(e), answer: Box::new(declined) });
                        }
                    },
                };
                let entry = match created.as_mut() {
                    Some(entry) => entry,
                    None => self.objectives.get_mut(&objective).ok_or(PartyError::UnknownObjective(objective))?,
                };
                let ours = match entry.objective.receive_state(&state, self.ledgers.get(&objective.channel_id())) {
                    Ok(ours) => ours,
                    // Both parties asked for a withdrawal at once (each signs only its own
                    // successor): each declines the other's, both fail, and either may ask again.
                    Err(e)
                        if matches!(objective, ObjectiveId::Withdraw(_))
                            && state.channel_id() != objective.channel_id() =>
                    {
                        let declined =
                            self.decline_to(objective, vec![from], &format!("a withdrawal of ours is under way: {e}"));
                        return Err(PartyError::Refused { error: Box::new(e), answer: Box::new(declined) });
                    }
                    Err(e) => return Err(e),
                };
                if let Some(entry) = created {
                    if let ObjectiveId::DirectDefund(ledger) = objective {
                        self.closing.insert(ledger);
                    }
                    self.objectives.insert(objective, entry);
                    effects.events.push(PartyEvent::ObjectiveStarted { id: objective });
                }
                // The sender lacks signatures we hold (its copy of ours was lost, or we finished
                // first), or holds a state we will not sign (a final state at a turn that is not
                // fresh for us): answer with our copy, so the last message of a round is never
                // lost for good.
                let count = |s: &SignedState| s.signatures().iter().flatten().count();
                let different = ours.state() != state.state() && count(&ours) > 0;
                if different || count(&ours) > count(&state) {
                    effects.messages.push(Envelope { to: from, payload: Payload::State { objective, state: ours } });
                }
            }
            Payload::Ledger(message) => {
                let channel_id = message.channel_id();
                if self.peers.get(&channel_id) != Some(&from) {
                    return Err(PartyError::UnexpectedSender(from));
                }
                let ledger = self.ledgers.get_mut(&channel_id).ok_or(PartyError::UnknownLedger(channel_id))?;
                let step = ledger.receive(&message)?;
                effects.absorb_ledger_step(channel_id, step, Some(from));
            }
            Payload::Decline { objective, reason } => {
                effects.extend(self.receive_decline(from, objective, &reason));
            }
            Payload::TopUpRequest { channel_id, asset, amount } => {
                effects.extend(self.receive_top_up_request(from, channel_id, asset, amount)?);
            }
            Payload::Voucher(voucher) => {
                self.receive_voucher(from, &voucher)?;
                effects
                    .events
                    .push(PartyEvent::PaymentReceived { channel_id: voucher.channel_id, total: voucher.amount });
            }
        }
        effects.extend(self.crank_all());
        self.note(&effects);
        Ok(effects)
    }

    /// Marks the records an input's effects show changed (see [`Party::take_touched`]).
    pub(crate) fn note(&mut self, effects: &Effects) {
        for e in &effects.events {
            let key = match e {
                PartyEvent::Ledger { channel_id, .. } => StateKey::Ledger(*channel_id),
                PartyEvent::LedgerOpened { state } => {
                    self.touch(StateKey::Channel(state.channel_id()));
                    StateKey::Ledger(state.channel_id())
                }
                PartyEvent::LedgerClosed { channel_id } => {
                    self.touch(StateKey::Channel(*channel_id));
                    StateKey::Ledger(*channel_id)
                }
                PartyEvent::ObjectiveStarted { id }
                | PartyEvent::ObjectiveCompleted { id }
                | PartyEvent::ObjectiveFailed { id, .. } => StateKey::Objective(*id),
                PartyEvent::PaymentReceived { channel_id, .. } | PartyEvent::ChainReorg { channel_id, .. } => {
                    StateKey::Channel(*channel_id)
                }
                PartyEvent::LedgerMigrated { .. } => StateKey::Party,
                PartyEvent::ChallengeAnswered { .. }
                | PartyEvent::ChallengeExpired { .. }
                | PartyEvent::ExitRefused { .. } => StateKey::Party,
            };
            self.touch(key);
        }
        if !effects.transactions.is_empty() {
            self.touch(StateKey::Party);
        }
    }

    fn receive_voucher(&mut self, from: Address, voucher: &Voucher) -> Result<(), PartyError> {
        let v = self.funded(voucher.channel_id)?.channel();
        let p = &v.prefund.participants;
        if p.last() != Some(&self.address()) || p.first() != Some(&from) {
            return Err(PartyError::Voucher("vouchers go from the first to the last participant".into()));
        }
        let signer = voucher.signer().map_err(|e| PartyError::Voucher(e.to_string()))?;
        if signer != from {
            return Err(PartyError::Voucher(format!("signed by {signer}, not by the payer")));
        }
        if voucher.amount > v.amounts[0] {
            return Err(PartyError::Overpaid { paid: voucher.amount, available: v.amounts[0] });
        }
        if voucher.amount <= self.paid(&voucher.channel_id) {
            return Err(PartyError::Voucher("not more than the voucher held".into()));
        }
        self.paid.insert(voucher.channel_id, voucher.amount);
        self.vouchers.insert(voucher.channel_id, *voucher);
        Ok(())
    }

    /// Builds the objective a peer's first message of `id` asks us to join.
    fn objective_from_state(&self, id: ObjectiveId, state: &State) -> Result<Objective, PartyError> {
        match id {
            ObjectiveId::DirectFund(_) => {
                let peer = state.participants.iter().find(|p| **p != self.address()).copied();
                if let Some(peer) = peer.filter(|p| self.ledger_with.contains_key(p) || self.funding_with(*p)) {
                    return Err(PartyError::LedgerExists(peer));
                }
                let funding = DirectFund::new(state, self)?;
                self.admit_ledger(state, &funding)?;
                Ok(Objective::DirectFund(funding))
            }
            ObjectiveId::DirectDefund(ledger) => {
                let channel = self.ledgers.get(&ledger).ok_or(PartyError::UnknownLedger(ledger))?;
                // At the peer's turn if it is fresh for us, else above it (and we answer with
                // ours); `receive_state` checks that the peer's state is our final state.
                Ok(Objective::DirectDefund(DirectDefund::new(channel, Some(state.turn_num))?))
            }
            ObjectiveId::VirtualFund(_) => {
                let o = VirtualFund::new(state, self)?;
                self.check_open(&o)?;
                self.admit_virtual(&o)?;
                Ok(Objective::VirtualFund(o))
            }
            ObjectiveId::VirtualDefund(channel) => {
                let v = self.funded(channel)?;
                let paid = v.channel().paid_in(state, self.virtual_final_turn()).ok_or(PartyError::UnexpectedState)?;
                let known = self.paid(&channel);
                let p = &v.channel().prefund.participants;
                let me = self.address();
                let payer_ok = p.first() != Some(&me) || paid <= known;
                let payee_ok = p.last() != Some(&me) || paid >= known;
                if !(payer_ok && payee_ok) {
                    return Err(PartyError::WrongPayment { proposed: paid, known });
                }
                Ok(Objective::VirtualDefund(VirtualDefund::new(state.clone(), &v.ledgers)))
            }
            ObjectiveId::ForceClose(_) | ObjectiveId::TopUp(_) => Err(PartyError::UnexpectedState),
            ObjectiveId::Withdraw(ledger) => {
                let channel = self.ledgers.get(&ledger).ok_or(PartyError::UnknownLedger(ledger))?;
                if self.closing.contains(&ledger) {
                    return Err(PartyError::LedgerClosing(ledger));
                }
                if self.topping_up(&ledger) {
                    return Err(PartyError::TopUpPending);
                }
                if self.changes.get(&ledger).is_some_and(|c| !c.is_empty()) {
                    return Err(PartyError::ProposalsPending);
                }
                Ok(Objective::Withdraw(Withdraw::join(channel, self.address(), state)?))
            }
        }
    }

    /// Sets what the chain holds of `asset` for a channel as of `block` (read at start-up,
    /// before events arrive).
    pub fn set_holdings(&mut self, channel_id: ChannelId, asset: Address, block: u64, held: U256) -> Effects {
        self.chain.observe_holdings(channel_id, asset, block, held, false);
        self.touch(StateKey::Channel(channel_id));
        let effects = self.crank_all();
        self.note(&effects);
        effects
    }

    /// A transaction an objective asked for failed (reverted or not sent): it is asked for
    /// again after the next [`Party::tick`] if still needed.
    pub fn transaction_failed(&mut self, id: ObjectiveId) -> Effects {
        if let Some(entry) = self.objectives.get_mut(&id) {
            entry.objective.transaction_failed();
            self.touch(StateKey::Objective(id));
        }
        let effects = self.crank_all();
        self.note(&effects);
        effects
    }

    /// A transaction objective `id` asked for was refused for good before anything was sent
    /// (a token that takes a fee on transfer, or whose `transfer` returns `false`): the
    /// objective fails with `why` instead of asking again. Nothing of ours was spent; a
    /// counterparty's deposit made before stays recoverable on chain (ADR-0017).
    pub fn transaction_refused(&mut self, id: ObjectiveId, why: &str) -> Effects {
        let mut declines = Effects::default();
        if let Some(entry) = self.objectives.get_mut(&id) {
            entry.objective.transaction_refused(why);
            let peers = self.objectives.get(&id).map(|e| self.participants_of(&e.objective)).unwrap_or_default();
            // The other participants stop waiting for a deposit that will not come.
            declines = self.decline_to(id, peers, why);
            declines.events.push(PartyEvent::ObjectiveFailed { id, reason: why.to_owned() });
            self.touch(StateKey::Objective(id));
        }
        let mut effects = self.crank_all();
        effects.messages.splice(0..0, declines.messages);
        effects.events.splice(0..0, declines.events);
        self.note(&effects);
        effects
    }

    /// Cranks every unfinished objective, then lets the follower side of each ledger decide on
    /// its pending proposals, until nothing more happens.
    pub(crate) fn crank_all(&mut self) -> Effects {
        let mut effects = Effects::default();
        for _ in 0..4 {
            let before = (effects.messages.len(), effects.completed.len(), effects.events.len());
            let needed = self.crank_objectives(&mut effects);
            self.decide_pending(&mut effects);
            for channel in needed {
                if let Ok((_, started)) = self.force_close(channel) {
                    effects.extend(started);
                }
            }
            if before == (effects.messages.len(), effects.completed.len(), effects.events.len()) {
                break;
            }
        }
        self.crank_defences(&mut effects);
        if !self.hold_changes && !self.changes.is_empty() {
            effects.extend(self.flush());
        }
        self.note(&effects);
        effects
    }

    /// Cranks every unfinished objective; returns the channels they need force-closed.
    fn crank_objectives(&mut self, effects: &mut Effects) -> Vec<ChannelId> {
        let me = self.address();
        let mut cranked = Vec::new();
        let Self { key, ledgers, ledger_with, peers, chain, objectives, closing, changes, .. } = self;
        let (opened, closed, mut needed, migrated) = {
            let mut ctx = Ctx {
                key,
                me,
                ledgers,
                chain,
                effects,
                opened: Vec::new(),
                closed: Vec::new(),
                force_close: Vec::new(),
                changes,
                migrated: Vec::new(),
            };
            for (id, entry) in objectives.iter_mut().filter(|(_, e)| !e.done) {
                let before = ctx.footprint();
                if entry.objective.crank(&mut ctx).unwrap_or(false) {
                    entry.done = true;
                    ctx.effects.completed.push(*id);
                    ctx.effects.events.push(PartyEvent::ObjectiveCompleted { id: *id });
                }
                if ctx.footprint() != before {
                    cranked.push(*id);
                }
            }
            (ctx.opened, ctx.closed, ctx.force_close, ctx.migrated)
        };
        for channel in opened {
            let id = channel.channel_id();
            let state = channel.consensus_state();
            if let Some(peer) = state.state().participants.iter().find(|p| **p != me).copied() {
                ledger_with.insert(peer, id);
                peers.insert(id, peer);
            }
            ledgers.insert(id, channel);
            effects.events.push(PartyEvent::LedgerOpened { state });
        }
        for id in closed {
            chain.forget(&id);
            ledgers.remove(&id);
            closing.remove(&id);
            if let Some(peer) = peers.remove(&id) {
                if ledger_with.get(&peer) == Some(&id) {
                    ledger_with.remove(&peer);
                }
            }
            effects.events.push(PartyEvent::LedgerClosed { channel_id: id });
        }

        needed.sort();
        needed.dedup();
        needed.retain(|c| !objectives.contains_key(&ObjectiveId::ForceClose(*c)));
        for id in cranked {
            self.touch(StateKey::Objective(id));
        }
        for (from, to) in migrated {
            // We were taking the old ledger to chain: the exit continues in the successor.
            if self.follow_successor(from, to, effects) {
                needed.push(to);
            }
        }
        needed
    }

    fn decide_pending(&mut self, effects: &mut Effects) {
        let migrating: HashSet<ChannelId> = self.ledgers.keys().filter(|l| self.migrating(l)).copied().collect();
        let Self { ledgers, objectives, closing, peers, deferred, chain, policy, .. } = self;
        for (channel_id, ledger) in ledgers.iter_mut() {
            let ConsensusChannel::Follower(follower) = ledger else { continue };
            if follower.pending().len() == 0 || migrating.contains(channel_id) {
                continue;
            }
            let totals = top_up::Totals::of(follower);
            let asset_accepted = |asset: &Address| policy.assets.as_ref().is_none_or(|a| a.contains(asset));
            let mut policy = |p: &Proposal| -> Approval {
                if closing.contains(channel_id) {
                    return Approval::Reject("the ledger is closing".into());
                }
                if p.is_top_up() {
                    let ours = match objectives.get(&ObjectiveId::TopUp(*channel_id)) {
                        Some(Entry { objective: Objective::TopUp(t), done: false }) => Some(t),
                        _ => None,
                    };
                    let decided = top_up::decide_top_up(&totals, p, chain, ours, &asset_accepted);
                    return decided.unwrap_or(Approval::Defer);
                }
                let decision =
                    expecting(p).and_then(|id| objectives.get(&id)).and_then(|e| e.objective.decide(*channel_id, p));
                decision.unwrap_or(Approval::Defer)
            };
            let mut step = follower.decide(&mut policy);
            // A proposal no objective of ours expects (not even one still waiting for its
            // prefund) cannot block the ledger forever: after enough inputs it is rejected.
            // Nor can a top-up change we keep deferring (a credit the chain never covers).
            // Counted per input, not per timer tick, so that a replay of the store decides
            // exactly the same way.
            let totals = top_up::Totals::of(follower);
            let ours = match objectives.get(&ObjectiveId::TopUp(*channel_id)) {
                Some(Entry { objective: Objective::TopUp(t), done: false }) => Some(t),
                _ => None,
            };
            let head = follower.pending().next().map(|p| {
                let unexpected: Vec<u16> = p
                    .proposals
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| match expecting(c) {
                        Some(id) => !objectives.contains_key(&id),
                        None => {
                            let decided = top_up::decide_top_up(&totals, c, chain, ours, &asset_accepted);
                            matches!(decided, Some(Approval::Defer))
                        }
                    })
                    .map(|(i, _)| i as u16)
                    .collect();
                (p.turn_num, unexpected)
            });
            match head {
                Some((turn, unexpected)) if !unexpected.is_empty() => {
                    let seen = deferred.entry(*channel_id).or_insert((turn, 0));
                    if seen.0 != turn {
                        *seen = (turn, 0);
                    }
                    seen.1 += 1;
                    if seen.1 > UNEXPECTED_PROPOSAL_PATIENCE {
                        if let Ok(rejected) = follower.reject_changes(&unexpected, "no objective expects this change") {
                            step.extend(rejected);
                        }
                        deferred.remove(channel_id);
                    }
                }
                _ => {
                    deferred.remove(channel_id);
                }
            }
            effects.absorb_ledger_step(*channel_id, step, peers.get(channel_id).copied());
        }
    }

    /// The party's ledgers.
    pub fn ledgers(&self) -> impl Iterator<Item = &ConsensusChannel> {
        self.ledgers.values()
    }

    /// One ledger.
    pub fn ledger(&self, id: &ChannelId) -> Option<&ConsensusChannel> {
        self.ledgers.get(id)
    }

    /// The ledger with `peer`, if open.
    pub fn ledger_with(&self, peer: &Address) -> Option<&ConsensusChannel> {
        self.ledger_with.get(peer).and_then(|id| self.ledgers.get(id))
    }

    /// An objective.
    pub fn objective(&self, id: &ObjectiveId) -> Option<&Objective> {
        self.objectives.get(id).map(|e| &e.objective)
    }

    /// Whether an objective completed.
    pub fn is_complete(&self, id: &ObjectiveId) -> bool {
        self.objectives.get(id).is_some_and(|e| e.done)
    }

    /// What an objective waits for.
    pub fn waiting_for(&self, id: &ObjectiveId) -> Option<WaitingFor> {
        let e = self.objectives.get(id)?;
        if e.done {
            return Some(WaitingFor::Nothing);
        }
        Some(e.objective.waiting_for(&self.view()))
    }

    fn view(&self) -> View<'_> {
        View { ledgers: &self.ledgers, chain: &self.chain, me: self.address() }
    }

    /// The challenge registered on chain for `channel`, if any (finalization time included).
    pub fn registered_challenge(&self, channel: &ChannelId) -> Option<&RegisteredChallenge> {
        self.chain.challenge(channel)
    }

    /// The latest chain time the party has seen.
    pub fn chain_time(&self) -> u64 {
        self.chain.now()
    }

    /// Every objective and whether it completed.
    pub fn objectives(&self) -> impl Iterator<Item = (ObjectiveId, bool)> + '_ {
        self.objectives.iter().map(|(id, e)| (*id, e.done))
    }
}
