//! ForceClose: take a channel to chain alone and leave with what its latest supported state
//! gives (ADR-0017). The way out that needs nobody else.
//!
//! 1. **Finalize.** With a final state signed by everyone: conclude at once (a ledger without
//!    guarantees is paid out in the same call). Otherwise challenge with the latest state the
//!    chain supports: a ledger's consensus state (or a funding ledger's prefund/postfund), a
//!    virtual channel's postfund — or, for its payee holding a voucher, a `VirtualPaymentApp`
//!    redemption state carrying it. A challenge registered with an older state is answered
//!    with ours; one as new as ours is waited out. Time is chain time (block timestamps).
//! 2. **Pay out** (ledgers). Each guarantee is redeemed with `reclaim` once its virtual
//!    channel is finalized (this objective starts a ForceClose for each); the parties'
//!    balances are paid with `transfer`, as soon as the ledger is finalized and again after
//!    reclaims. Each step's effect on the ledger's on-chain outcome is computed as the
//!    adjudicator computes it ([`crate::chain::after_reclaim`], [`crate::chain::after_transfer`]).
//!
//! A virtual channel's ForceClose completes when it is finalized: it holds no funds itself;
//! the ledgers guaranteeing it pay out.

use alloy_primitives::B256;

use super::{
    chain_view::ChainView,
    objective::{Crank, Ctx, View},
    payout_steps::{first_guarantee, guarantee_targets, next_step, transfer_indices, PayoutStep},
    ObjectiveId, PartyError, TransactionRequest, WaitingFor,
};
use crate::{
    chain::{after_reclaim, after_transfer, ChainEvent, ChainTransaction},
    AllocationType, ChannelId, ConsensusChannel, Exit, SignedState, SignedTurn,
};

/// Chain time (seconds of block timestamps) to wait for the finalizing transaction to show on
/// chain, final at the configured depth, before asking for it again. The transaction manager
/// lands what it was given (and joins an identical request while it is in flight), so this is a
/// backstop for a request lost on the way to it; chain time, so that a slow chain is not hurried.
const FINALIZE_PATIENCE_SECS: u64 = 180;

/// Failed payout transactions tolerated before the objective gives up with a reason.
const MAX_PAYOUT_FAILURES: u32 = 20;

/// How the channel is finalized.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) enum Plan {
    /// A final state signed by every participant: concluded at once.
    Conclude(SignedState),
    /// The latest supported state (with its support proof), challenged.
    Challenge {
        /// Fully signed states supporting the candidate (empty for ledgers).
        proof: Vec<SignedState>,
        /// The candidate.
        candidate: SignedState,
    },
}

impl Plan {
    fn state(&self) -> &SignedState {
        match self {
            Plan::Conclude(s) | Plan::Challenge { candidate: s, .. } => s,
        }
    }
}

/// The ledger's outcome as the chain fingerprints it, once finalized.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Payout {
    state_hash: B256,
    outcome: Exit,
}

/// The ForceClose objective for one channel (a ledger, a ledger being funded, or a virtual
/// channel).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ForceClose {
    channel_id: ChannelId,
    /// A ledger (paid out here) or a virtual channel (finalized only).
    ledger: bool,
    plan: Plan,
    /// Our signature on a state made for this exit (a redemption), reported once.
    signed: Option<SignedTurn>,
    /// The finalizing transaction is asked for and not yet seen on chain.
    submitted: bool,
    /// Chain time at which the last transaction was asked for.
    requested_at: u64,
    failed: bool,
    payout: Option<Payout>,
    pending: Option<PayoutStep>,
    /// After a failed payout step: wait for the timer before the next (the event of someone
    /// else's step may be on its way).
    hold: bool,
    payout_failures: u32,
    /// Virtual channels this ledger's guarantees wait for.
    targets: Vec<ChannelId>,
    /// The tracked outcome before each payout event applied to it, with the event's block:
    /// what a retraction of that block restores (bounded: the oldest are dropped).
    history: Vec<(u64, Exit)>,
    done: bool,
    failure: Option<String>,
}

impl ForceClose {
    pub(crate) fn new(channel_id: ChannelId, ledger: bool, plan: Plan, signed: Option<SignedTurn>) -> Self {
        Self {
            channel_id,
            ledger,
            plan,
            signed,
            submitted: false,
            requested_at: 0,
            failed: false,
            payout: None,
            pending: None,
            hold: false,
            payout_failures: 0,
            targets: Vec::new(),
            history: Vec::new(),
            done: false,
            failure: None,
        }
    }

    /// The channel being closed.
    pub fn channel_id(&self) -> ChannelId {
        self.channel_id
    }

    /// The state this exit finalizes the channel with (the final state, or the challenge
    /// candidate).
    pub fn state(&self) -> &SignedState {
        self.plan.state()
    }

    fn fail(&mut self, why: String) -> Result<bool, PartyError> {
        self.failure = Some(why.clone());
        Err(PartyError::InvalidState(why))
    }

    fn request(&mut self, ctx: &mut Ctx<'_>, transaction: ChainTransaction, deadline: Option<u64>) {
        ctx.effects.transactions.push(TransactionRequest { objective: Some(self.id()), transaction, deadline });
        self.requested_at = ctx.chain.now();
    }

    /// Submits the finalizing transaction if nothing as good is on chain yet.
    fn finalize(&mut self, ctx: &mut Ctx<'_>) -> Result<(), PartyError> {
        if self.submitted {
            return Ok(());
        }
        let channel = self.channel_id;
        let transaction = match &self.plan {
            Plan::Conclude(state) => {
                if ctx.chain.is_concluded(&channel) {
                    return Ok(());
                }
                ctx.chain.know_final_outcome(channel, state.state().outcome.clone());
                let has_guarantee = state
                    .state()
                    .outcome
                    .0
                    .iter()
                    .any(|e| e.allocations.iter().any(|a| a.allocation_type == AllocationType::GUARANTEE));
                if self.ledger && !has_guarantee {
                    ChainTransaction::conclude_and_transfer_all_assets(state.clone())
                } else {
                    ChainTransaction::conclude(state.clone())
                }
            }
            Plan::Challenge { proof, candidate } => {
                let ours = candidate.state().turn_num;
                if ctx.chain.challenge(&channel).is_some_and(|c| c.turn >= ours) {
                    return Ok(()); // a challenge as new as ours runs: wait it out
                }
                let record = ctx.chain.record(&channel);
                if record > ours {
                    let why = format!(
                        "the chain records turn {record} for {channel}, newer than our latest supported state \
                         (turn {ours}): the counterparty holds a newer state and is not gone"
                    );
                    return self.fail(why).map(|_| ());
                }
                ChainTransaction::challenge_with_proof(proof.clone(), candidate.clone(), ctx.key)
            }
        };
        match transaction {
            Ok(tx) => {
                self.request(ctx, tx, None);
                self.submitted = true;
                Ok(())
            }
            Err(e) => self.fail(format!("cannot finalize {channel}: {e}")).map(|_| ()),
        }
    }

    /// The next payout step of a finalized ledger; `Ok(true)` when nothing is left to pay.
    fn pay_out(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, PartyError> {
        let channel = self.channel_id;
        if self.payout.is_none() {
            if matches!(self.plan, Plan::Conclude(_)) && ctx.chain.is_concluded(&channel) {
                // A conclusion of a ledger without guarantees paid out in the same call.
                let has_guarantee = self
                    .plan
                    .state()
                    .state()
                    .outcome
                    .0
                    .iter()
                    .any(|e| e.allocations.iter().any(|a| a.allocation_type == AllocationType::GUARANTEE));
                if !has_guarantee {
                    return Ok(ctx.chain.held_any(&channel, self.assets()).is_zero());
                }
            }
            let Some((state_hash, outcome)) = ctx.chain.finalized(&channel) else {
                return self.fail(format!("{channel} concluded with a final state this party does not know"));
            };
            self.payout = Some(Payout { state_hash, outcome });
        }
        if self.pending.is_some() || self.hold {
            return Ok(false);
        }
        let Some(Payout { state_hash, outcome }) = self.payout.clone() else { return Ok(false) };
        self.targets = guarantee_targets(&outcome);
        // Asset by asset, in the exit's order; within an asset, guarantees are reclaimed in
        // allocation order, the first one first (whoever sends it), so that every party paying
        // the ledger out computes the same outcome from the same events.
        let finalized = |target: &ChannelId| ctx.chain.finalized(target);
        let holdings = |asset| ctx.chain.holdings(&channel, asset);
        let step = next_step(channel, state_hash, &outcome, finalized, holdings);
        if let Some((transaction, step)) = step {
            if step == PayoutStep::Transfer {
                ctx.force_close.extend(self.targets.iter().copied());
            }
            self.request(ctx, transaction, None);
            self.pending = Some(step);
            return Ok(false);
        }
        ctx.force_close.extend(self.targets.iter().copied());
        Ok(self.targets.is_empty())
    }

    /// Applies a payout step to the tracked outcome when its event arrives, whoever sent it:
    /// a reclaim is of the first guarantee (the order every party follows), a transfer pays
    /// the parties' balances (all allocations once no guarantee is left).
    pub(crate) fn on_chain_event(&mut self, event: &ChainEvent, chain: &ChainView) {
        let channel = self.channel_id;
        if event.channel_id() != channel || self.failure.is_some() {
            return;
        }
        match event {
            ChainEvent::ChallengeRegistered { .. }
            | ChainEvent::Concluded { .. }
            | ChainEvent::ChallengeCleared { .. }
            | ChainEvent::Checkpointed { .. } => self.submitted = false,
            ChainEvent::Retracted { from_block, .. } => self.retract(*from_block, chain),
            ChainEvent::Reclaimed { block_number, asset_index, .. } => {
                if self.pending == Some(PayoutStep::Reclaim) {
                    self.pending = None;
                }
                self.remember(*block_number);
                let Some(payout) = &mut self.payout else { return };
                let asset_index = usize::try_from(*asset_index).unwrap_or(usize::MAX);
                let reclaimed = first_guarantee(&payout.outcome, asset_index).and_then(|(index, target)| {
                    let (_, target_outcome) = chain.finalized(&target)?;
                    after_reclaim(&payout.outcome, asset_index, index, &target_outcome, 0).ok()
                });
                match reclaimed {
                    Some(outcome) => payout.outcome = outcome,
                    None => {
                        self.failure = Some(format!(
                            "a guarantee of {channel} was reclaimed out of order: the chain's outcome is not ours"
                        ))
                    }
                }
            }
            ChainEvent::AllocationUpdated { initial_holdings, block_number, asset_index, .. } => {
                if self.pending == Some(PayoutStep::Transfer) {
                    self.pending = None;
                }
                self.remember(*block_number);
                // Every asset's event updates the view first: all paid once none holds any.
                let all_paid = chain.held_any(&channel, self.assets()).is_zero();
                match &mut self.payout {
                    Some(payout) => {
                        let asset_index = usize::try_from(*asset_index).unwrap_or(usize::MAX);
                        let indices = transfer_indices(&payout.outcome, asset_index);
                        match after_transfer(&payout.outcome, asset_index, *initial_holdings, &indices) {
                            Ok((outcome, _)) => payout.outcome = outcome,
                            Err(e) => self.failure = Some(format!("transfer on {channel}: {e}")),
                        }
                    }
                    // Paid out before we tracked it (a conclusion and payout in one call).
                    None if all_paid => self.done = self.ledger,
                    None => {}
                }
            }
            ChainEvent::Deposited { .. } => {}
        }
    }
}

/// Payout events whose prior outcome is kept for retractions.
const MAX_HISTORY: usize = 64;

impl ForceClose {
    /// The channel's assets, in its exit's order (the state it goes to chain with).
    fn assets(&self) -> impl Iterator<Item = crate::Address> + '_ {
        self.plan.state().state().outcome.0.iter().map(|e| e.asset)
    }

    /// Keeps the tracked outcome as it is before a payout event of `block` changes it.
    fn remember(&mut self, block: u64) {
        if let Some(payout) = &self.payout {
            if self.history.len() >= MAX_HISTORY {
                self.history.remove(0);
            }
            self.history.push((block, payout.outcome.clone()));
        }
    }

    /// A reorg took back the blocks from `from_block` on: the tracked outcome goes back to
    /// what it was before the first payout event of those blocks; a finalization taken back
    /// is pursued again, and the payout recomputed once the channel is finalized again.
    fn retract(&mut self, from_block: u64, chain: &ChainView) {
        self.submitted = false;
        self.pending = None;
        self.hold = false;
        if let Some(at) = self.history.iter().position(|(block, _)| *block >= from_block) {
            let (_, outcome) = self.history[at].clone();
            self.history.truncate(at);
            if let Some(payout) = &mut self.payout {
                payout.outcome = outcome;
            }
        }
        if !chain.is_finalized(&self.channel_id) {
            self.payout = None;
            self.history.clear();
            self.targets.clear();
        }
    }
}

impl Crank for ForceClose {
    fn id(&self) -> ObjectiveId {
        ObjectiveId::ForceClose(self.channel_id)
    }

    fn receive_state(&mut self, _: &SignedState, _: Option<&ConsensusChannel>) -> Result<SignedState, PartyError> {
        Err(PartyError::UnexpectedState) // a unilateral exit has no signature rounds
    }

    fn crank(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, PartyError> {
        if let Some(signed) = self.signed.take() {
            ctx.effects.signed.push(signed);
        }
        if self.failure.is_some() {
            return Ok(false);
        }
        if self.done {
            return Ok(true);
        }
        if !ctx.chain.is_finalized(&self.channel_id) {
            self.finalize(ctx)?;
            return Ok(false);
        }
        if !self.ledger {
            return Ok(true);
        }
        let done = self.pay_out(ctx)?;
        if done {
            ctx.closed.push(self.channel_id);
        }
        Ok(done)
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        self.hold = false;
        // Ours failed, or has not shown on chain for a while (chain time): ask again.
        let patience_over = ctx.chain.now() >= self.requested_at.saturating_add(FINALIZE_PATIENCE_SECS);
        if self.failed || (self.submitted && patience_over) {
            self.failed = false;
            self.submitted = false;
        }
    }

    fn transaction_failed(&mut self) {
        if self.pending.take().is_some() {
            // Often someone else's step of the same payout landed first: its event updates
            // the outcome; the next step waits for the timer.
            self.hold = true;
            self.payout_failures += 1;
            if self.payout_failures > MAX_PAYOUT_FAILURES {
                self.failure = Some(format!("the payout of {} failed {} times", self.channel_id, self.payout_failures));
            }
        } else if self.payout.is_none() {
            self.failed = true;
        }
    }

    fn waiting_for(&self, view: &View<'_>) -> WaitingFor {
        if let Some(why) = &self.failure {
            return WaitingFor::Failed(why.clone());
        }
        if self.done {
            return WaitingFor::Nothing;
        }
        let channel = &self.channel_id;
        if !view.chain.is_finalized(channel) {
            if let Some(c) = view.chain.challenge(channel) {
                return WaitingFor::Finalization { finalizes_at: c.finalizes_at, now: view.chain.now() };
            }
            let what = if matches!(self.plan, Plan::Conclude(_)) { "conclusion" } else { "challenge" };
            return WaitingFor::Registration { what };
        }
        if !self.targets.is_empty() {
            return WaitingFor::TargetsFinalized { channels: self.targets.clone() };
        }
        WaitingFor::Payout { held: view.chain.held_any(channel, self.assets()) }
    }

    fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn fail_with(&mut self, why: &str) {
        if self.failure.is_none() && !self.done {
            self.failure = Some(why.to_owned());
        }
    }

    fn on_chain_event(&mut self, event: &ChainEvent, chain: &ChainView) {
        ForceClose::on_chain_event(self, event, chain);
    }

    fn has_committed(&self, _: &View<'_>) -> bool {
        true
    }
}
