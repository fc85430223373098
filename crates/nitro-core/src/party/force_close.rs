//! ForceClose: take a channel to chain alone and leave with what its latest supported state
//! gives (ADR-0016). The way out that needs nobody else.
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
    objective::{Crank, Ctx, View},
    ObjectiveId, PartyError, TransactionRequest, WaitingFor,
};
use crate::{
    chain::{after_reclaim, after_transfer, ChainEvent, ChainTransaction},
    AllocationType, ChannelId, ConsensusChannel, Exit, SignedState, SignedTurn,
};

/// Timer ticks to wait for a submitted transaction to show on chain before asking again.
const TRANSACTION_PATIENCE: u32 = 20;

/// Failed payout transactions tolerated before the objective gives up with a reason.
const MAX_PAYOUT_FAILURES: u32 = 5;

/// How the channel is finalized.
#[derive(Clone, Debug, PartialEq, Eq)]
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

/// A payout step in flight, applied to the tracked outcome when its event arrives.
#[derive(Clone, Debug, PartialEq, Eq)]
enum PayoutStep {
    Reclaim { index: usize, target: Exit },
    Transfer { indices: Vec<usize> },
}

/// The ledger's outcome as the chain fingerprints it, once finalized.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Payout {
    state_hash: B256,
    outcome: Exit,
}

/// The ForceClose objective for one channel (a ledger, a ledger being funded, or a virtual
/// channel).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForceClose {
    channel_id: ChannelId,
    /// A ledger (paid out here) or a virtual channel (finalized only).
    ledger: bool,
    plan: Plan,
    /// Our signature on a state made for this exit (a redemption), reported once.
    signed: Option<SignedTurn>,
    /// The finalizing transaction is asked for and not yet seen on chain.
    submitted: bool,
    waited: u32,
    failed: bool,
    payout: Option<Payout>,
    pending: Option<PayoutStep>,
    payout_failures: u32,
    /// Virtual channels this ledger's guarantees wait for.
    targets: Vec<ChannelId>,
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
            waited: 0,
            failed: false,
            payout: None,
            pending: None,
            payout_failures: 0,
            targets: Vec::new(),
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
        self.waited = 0;
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
                    return Ok(ctx.chain.holdings(&channel).is_zero());
                }
            }
            let Some((state_hash, outcome)) = ctx.chain.finalized(&channel) else {
                return self.fail(format!("{channel} concluded with a final state this party does not know"));
            };
            self.payout = Some(Payout { state_hash, outcome });
        }
        if self.pending.is_some() {
            return Ok(false);
        }
        let Some(Payout { state_hash, outcome }) = self.payout.clone() else { return Ok(false) };
        let Some(asset) = outcome.0.first() else { return Ok(true) };
        let holdings = ctx.chain.holdings(&channel);
        self.targets.clear();
        for (index, allocation) in asset.allocations.iter().enumerate() {
            if allocation.allocation_type != AllocationType::GUARANTEE {
                continue;
            }
            let target = allocation.destination;
            match ctx.chain.finalized(&target) {
                Some((target_state_hash, target_outcome)) => {
                    let transaction = ChainTransaction::Reclaim {
                        source_channel_id: channel,
                        source_state_hash: state_hash,
                        source_outcome: outcome.clone(),
                        source_asset_index: 0,
                        index_of_target_in_source: index,
                        target_state_hash,
                        target_outcome: target_outcome.clone(),
                        target_asset_index: 0,
                    };
                    self.request(ctx, transaction, None);
                    self.pending = Some(PayoutStep::Reclaim { index, target: target_outcome });
                    return Ok(false);
                }
                None => self.targets.push(target),
            }
        }
        ctx.force_close.extend(self.targets.iter().copied());
        let unpaid =
            asset.allocations.iter().any(|a| a.allocation_type != AllocationType::GUARANTEE && !a.amount.is_zero());
        if unpaid && !holdings.is_zero() {
            let indices: Vec<usize> = if self.targets.is_empty() {
                Vec::new() // all
            } else {
                let simple =
                    |(i, a): (usize, &crate::Allocation)| (a.allocation_type != AllocationType::GUARANTEE).then_some(i);
                asset.allocations.iter().enumerate().filter_map(simple).collect()
            };
            let transaction = ChainTransaction::Transfer {
                channel_id: channel,
                asset_index: 0,
                outcome: outcome.clone(),
                state_hash,
                indices: indices.clone(),
            };
            self.request(ctx, transaction, None);
            self.pending = Some(PayoutStep::Transfer { indices });
            return Ok(false);
        }
        Ok(self.targets.is_empty())
    }

    /// Applies the step in flight to the tracked outcome when its event arrives. An event no
    /// step of ours explains means someone else paid out part of the ledger.
    pub(crate) fn on_chain_event(&mut self, event: &ChainEvent) {
        let channel = self.channel_id;
        if event.channel_id() != channel || self.failure.is_some() {
            return;
        }
        match event {
            ChainEvent::ChallengeRegistered { .. }
            | ChainEvent::Concluded { .. }
            | ChainEvent::ChallengeCleared { .. }
            | ChainEvent::Checkpointed { .. } => self.submitted = false,
            ChainEvent::Reclaimed { .. } => {
                let (Some(payout), Some(PayoutStep::Reclaim { index, target })) =
                    (&mut self.payout, self.pending.take())
                else {
                    self.failure = Some(format!("a guarantee of {channel} was reclaimed by someone else"));
                    return;
                };
                match after_reclaim(&payout.outcome, 0, index, &target, 0) {
                    Ok(outcome) => payout.outcome = outcome,
                    Err(e) => self.failure = Some(format!("reclaim on {channel}: {e}")),
                }
            }
            ChainEvent::AllocationUpdated { initial_holdings, final_holdings, .. } => {
                match (&mut self.payout, self.pending.take()) {
                    (Some(payout), Some(PayoutStep::Transfer { indices })) => {
                        match after_transfer(&payout.outcome, 0, *initial_holdings, &indices) {
                            Ok((outcome, _)) => payout.outcome = outcome,
                            Err(e) => self.failure = Some(format!("transfer on {channel}: {e}")),
                        }
                    }
                    (_, pending) if final_holdings.is_zero() => {
                        // Someone paid everything out (a conclusion, or the other party's transfer).
                        self.pending = pending;
                        self.done = self.ledger;
                    }
                    (_, pending) => {
                        self.pending = pending;
                        if self.payout.is_some() {
                            self.failure = Some(format!("{channel} was partly paid out by someone else"));
                        }
                    }
                }
            }
            ChainEvent::Deposited { .. } => {}
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
        let _ = ctx;
        if self.submitted {
            self.waited = self.waited.saturating_add(1);
        }
        // Ours failed, or has not shown on chain for a while: ask again (a duplicate
        // challenge or conclusion reverts harmlessly).
        if self.failed || self.waited > TRANSACTION_PATIENCE {
            self.failed = false;
            self.submitted = false;
            self.waited = 0;
        }
    }

    fn transaction_failed(&mut self) {
        if self.pending.take().is_some() {
            self.payout_failures += 1;
            if self.payout_failures > MAX_PAYOUT_FAILURES {
                self.failure = Some(format!("the payout of {} failed {} times", self.channel_id, self.payout_failures));
            }
        } else {
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
        WaitingFor::Payout { held: view.chain.holdings(channel) }
    }

    fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn fail_with(&mut self, why: &str) {
        if self.failure.is_none() && !self.done {
            self.failure = Some(why.to_owned());
        }
    }

    fn on_chain_event(&mut self, event: &ChainEvent) {
        ForceClose::on_chain_event(self, event);
    }

    fn has_committed(&self, _: &View<'_>) -> bool {
        true
    }
}
