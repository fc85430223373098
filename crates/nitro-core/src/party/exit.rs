//! How a party goes to chain: a [`ForceClose`] by request, automatically when a ledger's
//! counterparty has left it waiting too long, or to follow a challenge someone else
//! registered; and the defence of its channels against stale challenges, retried until the
//! answer is on chain or the challenge expired.

use super::{
    chain_view::ReRead, force_close::Plan, objective::Crank, Effects, Entry, ForceClose, Objective, ObjectiveId, Party,
    PartyError, PartyEvent, TransactionRequest,
};
use crate::{
    chain::{ChainEvent, ChainTransaction},
    party::virtual_fund::VirtualFund,
    Address, ChannelId, ConsensusChannel, FixedPart, SignedState, SignedTurn, TurnNum, U256,
};

/// Timer ticks between two submissions of an unanswered defence.
const DEFENCE_PATIENCE: u32 = 4;

/// An answer to a stale challenge against one of our ledgers: a checkpoint of our consensus
/// state, submitted again until the chain records it or the challenge expires.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Defence {
    transaction: ChainTransaction,
    /// The turn our answer carries.
    turn: TurnNum,
    finalizes_at: u64,
    submitted: bool,
    waited: u32,
}

/// The time a timer tick carries: the wall clock, for patience with silent peers, and the
/// chain's clock (the latest block's timestamp), which decides when challenges expire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    /// Wall-clock time, unix seconds (0: unknown).
    pub unix_secs: u64,
    /// The latest block's timestamp, unix seconds, if known.
    pub chain_time: Option<u64>,
}

impl Party {
    /// Takes `channel` — a ledger, a ledger being funded, or a virtual channel — to chain
    /// without the other parties: finalizes it with the latest state the chain supports and
    /// pays out what that state gives (see [`ForceClose`]). Other objectives on the channel
    /// stop.
    pub fn force_close(&mut self, channel: ChannelId) -> Result<(ObjectiveId, Effects), PartyError> {
        // A ledger replaced by a withdrawal: its successor holds what it held.
        let channel = if self.ledgers.contains_key(&channel) { channel } else { self.current_ledger(channel) };
        let id = ObjectiveId::ForceClose(channel);
        if self.objectives.contains_key(&id) {
            return Err(PartyError::ObjectiveExists(id));
        }
        let objective = self.exit_plan(channel)?;
        self.abandon_for_exit(channel);
        self.start(Objective::ForceClose(objective))
    }

    fn exit_plan(&self, channel: ChannelId) -> Result<ForceClose, PartyError> {
        if let Some(ledger) = self.ledgers.get(&channel) {
            if let Some(Entry { objective: Objective::DirectDefund(d), .. }) =
                self.objectives.get(&ObjectiveId::DirectDefund(channel))
            {
                if d.final_state().is_fully_signed() {
                    return Ok(ForceClose::new(channel, true, Plan::Conclude(d.final_state().clone()), None));
                }
            }
            if let Some(Entry { objective: Objective::Withdraw(w), .. }) =
                self.objectives.get(&ObjectiveId::Withdraw(channel))
            {
                if w.final_state().is_fully_signed() {
                    return Ok(ForceClose::new(channel, true, Plan::Conclude(w.final_state().clone()), None));
                }
            }
            let candidate = ledger.consensus_state();
            return Ok(ForceClose::new(channel, true, Plan::Challenge { proof: Vec::new(), candidate }, None));
        }
        if let Some(Entry { objective: Objective::DirectFund(d), done: false }) =
            self.objectives.get(&ObjectiveId::DirectFund(channel))
        {
            let candidate = [d.postfund(), d.prefund()].into_iter().find(|s| s.is_fully_signed()).cloned();
            let candidate = candidate.ok_or(PartyError::NothingSupported(channel))?;
            return Ok(ForceClose::new(channel, true, Plan::Challenge { proof: Vec::new(), candidate }, None));
        }
        if let Some(Entry { objective: Objective::VirtualFund(v), .. }) =
            self.objectives.get(&ObjectiveId::VirtualFund(channel))
        {
            return self.virtual_exit_plan(channel, v);
        }
        Err(PartyError::UnknownChannel(channel))
    }

    /// A virtual channel's best state on chain: its final state if everyone signed it; for
    /// its payee holding a voucher, a redemption state (the `VirtualPaymentApp` pays the
    /// payee the voucher's amount; only when the payee put nothing in, as the app requires);
    /// else its postfund, else its prefund.
    fn virtual_exit_plan(&self, channel: ChannelId, v: &VirtualFund) -> Result<ForceClose, PartyError> {
        if let Some(Entry { objective: Objective::VirtualDefund(d), .. }) =
            self.objectives.get(&ObjectiveId::VirtualDefund(channel))
        {
            if d.final_state().is_fully_signed() {
                return Ok(ForceClose::new(channel, false, Plan::Conclude(d.final_state().clone()), None));
            }
        }
        let postfund = v.postfund();
        if let Some(voucher) = self.redeemable_voucher(channel, v) {
            let mut redemption = SignedState::new(v.channel().redemption_state(&voucher)?);
            redemption.sign(&self.key).map_err(|_| PartyError::NotAParticipant)?;
            let signed = SignedTurn {
                channel_id: channel,
                turn_num: redemption.state().turn_num,
                state_hash: redemption.hash(),
            };
            let plan = Plan::Challenge { proof: vec![postfund.clone()], candidate: redemption };
            return Ok(ForceClose::new(channel, false, plan, Some(signed)));
        }
        let candidate = [postfund, v.prefund()].into_iter().find(|s| s.is_fully_signed()).cloned();
        let candidate = candidate.ok_or(PartyError::NothingSupported(channel))?;
        Ok(ForceClose::new(channel, false, Plan::Challenge { proof: Vec::new(), candidate }, None))
    }

    /// The voucher a payee can redeem on chain in `channel`, if any.
    fn redeemable_voucher(&self, channel: ChannelId, v: &VirtualFund) -> Option<crate::Voucher> {
        let c = v.channel();
        let payee = c.prefund.participants.last() == Some(&self.address());
        let voucher = self.vouchers.get(&channel)?;
        (payee
            && v.postfund().is_fully_signed()
            && c.amounts[1].is_zero()
            && c.asset.is_zero()
            && !voucher.amount.is_zero())
        .then_some(*voucher)
    }

    /// Stops what would keep working on a channel that goes to chain: its funding, virtual
    /// channels funded or defunded through it (a ledger), or its own funding and defunding
    /// (a virtual channel). New virtual channels are refused through a ledger going to chain.
    fn abandon_for_exit(&mut self, channel: ChannelId) {
        let ledger = self.ledgers.contains_key(&channel) || self.funding(channel);
        if ledger {
            self.closing.insert(channel);
        }
        let why = format!("{channel} is being taken to chain (force close)");
        self.touched.insert(super::StateKey::Party);
        for (id, entry) in self.objectives.iter_mut().filter(|(_, e)| !e.done) {
            let affected = match (&entry.objective, *id) {
                (_, ObjectiveId::DirectFund(c)) | (_, ObjectiveId::Withdraw(c)) => c == channel,
                (Objective::VirtualFund(v), ObjectiveId::VirtualFund(c)) => {
                    c == channel || (ledger && v.ledgers.iter().any(|l| l.channel_id == channel))
                }
                (Objective::VirtualDefund(v), ObjectiveId::VirtualDefund(c)) => {
                    c == channel || (ledger && v.ledgers.iter().any(|l| l.channel_id == channel))
                }
                (Objective::TopUp(_), ObjectiveId::TopUp(c)) => c == channel,
                _ => false,
            };
            if affected {
                entry.objective.fail_with(&why);
                self.touched.insert(super::StateKey::Objective(*id));
            }
        }
    }

    fn funding(&self, channel: ChannelId) -> bool {
        matches!(self.objectives.get(&ObjectiveId::DirectFund(channel)), Some(Entry { done: false, .. }))
    }

    /// The fixed part of a channel this party takes part in (a ledger, one being funded, or a
    /// virtual channel), to read the chain's events about it.
    fn fixed_part(&self, channel: &ChannelId) -> Option<FixedPart> {
        if let Some(l) = self.ledgers.get(channel) {
            return Some(l.consensus_state().state().fixed_part());
        }
        if let Some(Objective::DirectFund(d)) =
            self.objectives.get(&ObjectiveId::DirectFund(*channel)).map(|e| &e.objective)
        {
            return Some(d.prefund().state().fixed_part());
        }
        match self.objectives.get(&ObjectiveId::VirtualFund(*channel)).map(|e| &e.objective) {
            Some(Objective::VirtualFund(v)) => Some(v.channel().prefund.fixed_part()),
            _ => None,
        }
    }

    /// The assets a channel of ours holds, in its outcome's order (`None`: not a channel we
    /// know).
    pub(crate) fn channel_assets(&self, channel: &ChannelId) -> Option<Vec<crate::Address>> {
        if let Some(l) = self.ledgers.get(channel) {
            return Some(l.consensus_outcome().assets().iter().map(|a| a.asset()).collect());
        }
        if let Some(Objective::DirectFund(d)) =
            self.objectives.get(&ObjectiveId::DirectFund(*channel)).map(|e| &e.objective)
        {
            return Some(d.assets().collect());
        }
        match self.objectives.get(&ObjectiveId::VirtualFund(*channel)).map(|e| &e.objective) {
            Some(Objective::VirtualFund(v)) => Some(vec![v.channel().asset]),
            _ => None,
        }
    }

    /// Whether an event about `asset` in `channel` concerns what the channel holds: anyone can
    /// deposit any token into any channel id, and a deposit of another asset (a worthless
    /// token with huge holdings) must never count as funding.
    fn is_channel_asset(&self, channel: &ChannelId, asset: crate::Address) -> bool {
        self.channel_assets(channel).is_none_or(|a| a.contains(&asset))
    }

    /// The asset at `index` of the outcome a payout of `channel` used: the finalized outcome
    /// the chain view knows, else the channel's own asset list.
    fn payout_asset(&self, channel: &ChannelId, index: U256) -> Option<crate::Address> {
        let index = usize::try_from(index).ok()?;
        if let Some((_, outcome)) = self.chain.finalized(channel) {
            return outcome.0.get(index).map(|e| e.asset);
        }
        self.channel_assets(channel)?.get(index).copied()
    }

    /// Takes an adjudicator event (from a watcher that only reports blocks final at its
    /// configured depth), or a retraction of earlier events (a deeper reorg took their blocks
    /// back: what they did is undone, see [`ChainEvent::Retracted`]).
    ///
    /// A challenge against one of our ledgers with a state older than our consensus state is
    /// answered with a checkpoint, again and again until the chain records it or the challenge
    /// expires. A challenge with a state as new as ours, or against a virtual channel, starts
    /// a ForceClose that follows the channel to its payout (and answers with a better state
    /// of ours where we have one: a payee's redemption).
    pub fn handle_chain_event(&mut self, event: &ChainEvent) -> Effects {
        let mut effects = Effects::default();
        let channel = event.channel_id();
        match event {
            ChainEvent::Deposited { now_held, block_number, asset, .. } => {
                if self.is_channel_asset(&channel, *asset) {
                    self.chain.observe_holdings(channel, *asset, *block_number, *now_held, true);
                }
            }
            ChainEvent::AllocationUpdated { final_holdings, block_number, asset_index, initial_holdings, .. } => {
                if let Some(asset) = self.payout_asset(&channel, *asset_index) {
                    self.chain.observe_holdings(channel, asset, *block_number, *final_holdings, false);
                }
                self.credit_successor(channel, *asset_index, *initial_holdings, *block_number);
            }
            ChainEvent::Concluded { finalizes_at, block_number, .. } => {
                self.chain.conclude(channel, *block_number, *finalizes_at)
            }
            ChainEvent::ChallengeRegistered { candidate, finalizes_at, block_number, .. } => {
                if let Some(fixed) = self.fixed_part(&channel) {
                    self.chain.register_challenge(channel, &fixed, candidate, *finalizes_at, *block_number);
                    self.respond_to_challenge(channel, candidate.turn_num(), *finalizes_at, &mut effects);
                }
            }
            ChainEvent::ChallengeCleared { new_turn_num_record, block_number, .. }
            | ChainEvent::Checkpointed { new_turn_num_record, block_number, .. } => {
                self.chain.checkpointed(channel, *new_turn_num_record, *block_number);
            }
            ChainEvent::Reclaimed { .. } => {}
            ChainEvent::Retracted { from_block, block_number, held, turn_num_record, finalizes_at, asset, .. } => {
                // Holdings re-read of another asset leave ours as they are.
                let held = self.is_channel_asset(&channel, *asset).then_some((*asset, *held));
                let re_read = ReRead { held, turn_num_record: *turn_num_record, finalizes_at: *finalizes_at };
                self.chain.retract(channel, *from_block, *block_number, re_read);
                if self.fixed_part(&channel).is_none() {
                    return effects; // not a channel of ours
                }
                effects.events.push(PartyEvent::ChainReorg { channel_id: channel, from_block: *from_block });
                // A challenge that runs again after its clearing was taken back is answered
                // again, as when it was first registered.
                if let Some(c) = self.chain.challenge(&channel).cloned() {
                    if !self.defences.contains_key(&channel) {
                        self.respond_to_challenge(channel, c.turn, c.finalizes_at, &mut effects);
                    }
                }
            }
        }
        let mut seen = Vec::new();
        for (id, entry) in self.objectives.iter_mut().filter(|(_, e)| !e.done) {
            entry.objective.on_chain_event(event, &self.chain);
            seen.push(*id);
        }
        for id in seen {
            self.touch(super::StateKey::Objective(id));
        }
        self.touch(super::StateKey::Channel(channel));
        self.touch(super::StateKey::Party);
        effects.extend(self.crank_all());
        self.note(&effects);
        effects
    }

    fn respond_to_challenge(&mut self, channel: ChannelId, turn: TurnNum, finalizes_at: u64, effects: &mut Effects) {
        if self.objectives.contains_key(&ObjectiveId::ForceClose(channel)) {
            return; // our own exit, or one we follow already
        }
        if let Some(ledger) = self.ledgers.get(&channel) {
            let ours = ledger.consensus_turn();
            if turn < ours {
                if let Ok(transaction) = ChainTransaction::checkpoint(ledger.consensus_state()) {
                    let defence = Defence { transaction, turn: ours, finalizes_at, submitted: false, waited: 0 };
                    self.defences.insert(channel, defence);
                    effects.events.push(PartyEvent::ChallengeAnswered { channel_id: channel });
                }
                return;
            }
        }
        // The channel is on its way to finalizing: follow it to the payout.
        match self.force_close(channel) {
            Ok((_, started)) => effects.extend(started),
            Err(e) => effects.events.push(PartyEvent::ExitRefused { channel_id: channel, reason: e.to_string() }),
        }
    }

    /// Submits every defence not yet answered, and drops those answered or expired.
    pub(crate) fn crank_defences(&mut self, effects: &mut Effects) {
        let chain = &self.chain;
        self.defences.retain(|channel, d| {
            let answered = chain.challenge(channel).is_none_or(|c| c.turn >= d.turn) || chain.record(channel) >= d.turn;
            if answered {
                return false;
            }
            if chain.now() >= d.finalizes_at {
                effects.events.push(PartyEvent::ChallengeExpired { channel_id: *channel });
                return false;
            }
            if !d.submitted {
                effects.transactions.push(TransactionRequest {
                    objective: None,
                    transaction: d.transaction.clone(),
                    deadline: Some(d.finalizes_at),
                });
                d.submitted = true;
                d.waited = 0;
            }
            true
        });
    }

    /// On the timer: defences not answered yet are submitted again after a while.
    pub(crate) fn tick_defences(&mut self) {
        for d in self.defences.values_mut() {
            d.waited = d.waited.saturating_add(1);
            if d.waited > DEFENCE_PATIENCE {
                d.submitted = false;
            }
        }
    }

    /// Whether a transaction this party asked for is still needed: its objective still runs
    /// (not complete, not failed), or — for an answer to a stale challenge — the challenge
    /// still waits for exactly this answer before it expires. A transaction manager stops
    /// landing what is no longer needed (and takes its nonce back with a no-op if it was sent).
    pub fn needs(&self, request: &TransactionRequest) -> bool {
        match request.objective {
            Some(id) => self.objectives.get(&id).is_some_and(|e| !e.done && e.objective.failure().is_none()),
            None => self
                .defences
                .get(&request.transaction.channel_id())
                .is_some_and(|d| d.transaction == request.transaction),
        }
    }

    /// Ledgers whose counterparty has left us waiting longer than the configured patience
    /// (proposals unanswered, a round unsigned, a funding unfinished after our deposit):
    /// what to force-close. Empty when automatic force close is off.
    pub(crate) fn silent_counterparties(&self) -> Vec<ChannelId> {
        let Some(patience) = self.policy.auto_force_close_after else { return Vec::new() };
        if self.wall_now == 0 {
            return Vec::new();
        }
        let silent = |peer: &Address| {
            let heard = self.last_heard.get(peer).copied().filter(|t| *t > 0).unwrap_or(self.started_at);
            self.wall_now.saturating_sub(heard) > patience
        };
        let mut due = Vec::new();
        for (id, ledger) in &self.ledgers {
            let Some(peer) = self.peers.get(id) else { continue };
            if self.objectives.contains_key(&ObjectiveId::ForceClose(*id)) || !silent(peer) {
                continue;
            }
            let waiting = matches!(ledger, ConsensusChannel::Leader(l) if !l.queue().is_empty())
                || self.objectives.iter().any(|(oid, e)| !e.done && self.objective_waits_on(*oid, &e.objective, *id));
            if waiting {
                due.push(*id);
            }
        }
        for (oid, e) in &self.objectives {
            let ObjectiveId::DirectFund(channel) = *oid else { continue };
            let Objective::DirectFund(d) = &e.objective else { continue };
            let peer = d.participants().iter().find(|p| **p != self.address());
            let committed = d.assets().any(|asset| !self.chain.holdings(&channel, asset).is_zero());
            if !e.done
                && committed
                && peer.is_some_and(silent)
                && !self.objectives.contains_key(&ObjectiveId::ForceClose(channel))
            {
                due.push(channel);
            }
        }
        due
    }

    /// Whether an objective waits on `ledger`'s counterparty: a guarantee it funds is not
    /// locked there although every participant signed the prefund, a release it closes with
    /// is not done there although every participant signed the final state, or the ledger's
    /// final state lacks the counterparty's signature.
    fn objective_waits_on(&self, id: ObjectiveId, objective: &Objective, ledger: ChannelId) -> bool {
        let on_path = |ledgers: &[super::virtual_fund::PathLedger]| ledgers.iter().any(|l| l.channel_id == ledger);
        let Some(channel) = self.ledgers.get(&ledger) else { return false };
        match (id, objective) {
            (ObjectiveId::DirectDefund(c), Objective::DirectDefund(d)) => {
                c == ledger && !d.final_state().is_fully_signed()
            }
            (ObjectiveId::Withdraw(c), Objective::Withdraw(w)) => {
                c == ledger && w.failure().is_none() && !w.final_state().is_fully_signed()
            }
            (_, Objective::VirtualFund(v)) => {
                on_path(&v.ledgers) && v.prefund().is_fully_signed() && !channel.is_locked(&id.channel_id())
            }
            (_, Objective::VirtualDefund(v)) => {
                on_path(&v.ledgers)
                    && v.final_state().is_fully_signed()
                    && channel.guarantees().status(&id.channel_id()).is_some()
            }
            _ => false,
        }
    }

    /// What a ledger's or a funding's payout gives this party, for the API: the amount the
    /// state an exit finalizes with allocates to us.
    pub fn exit_amount(&self, channel: &ChannelId) -> Option<U256> {
        let Some(Entry { objective: Objective::ForceClose(f), .. }) =
            self.objectives.get(&ObjectiveId::ForceClose(*channel))
        else {
            return None;
        };
        let me = crate::destination_of(self.address());
        let outcome = &f.state().state().outcome;
        Some(
            outcome
                .0
                .iter()
                .flat_map(|e| e.allocations.iter())
                .filter(|a| a.destination == me)
                .map(|a| a.amount)
                .fold(U256::ZERO, |a, b| a + b),
        )
    }
}
