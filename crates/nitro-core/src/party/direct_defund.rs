//! DirectDefund: close a ledger. Refused while guarantees or unsettled proposals remain; a
//! final state (the consensus outcome at a turn above every turn either party took part in)
//! signed by both → `concludeAndTransferAllAssets` → holdings reach zero.

use super::{
    chain_view::ChainView,
    objective::{Crank, Ctx, View},
    round::SignatureRound,
    Envelope, ObjectiveId, PartyError, WaitingFor,
};
use crate::{chain::ChainEvent, Address, ChannelId, ConsensusChannel, SignedState, State, TurnNum};

/// The DirectDefund objective of one party.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectDefund {
    channel_id: ChannelId,
    final_round: SignatureRound,
    submitted: bool,
    failed: bool,
    /// Chain time (block timestamp) since which the final state is complete without the ledger
    /// concluding, or at which our conclusion was last asked for again.
    since: Option<u64>,
}

/// Chain time (seconds of block timestamps) a follower waits for the leader's conclusion
/// before submitting its own, and anyone waits for a conclusion asked for before asking again.
/// The leader's transaction manager lands (and re-prices) what it sends; the follower steps in
/// only when the leader is gone. Measured in chain time, not timer ticks: on a chain with 12 s
/// blocks, ten ticks of half a second are less than one block.
pub(crate) const CONCLUDE_PATIENCE_SECS: u64 = 120;

impl DirectDefund {
    /// The final state both must sign to close `ledger`: its consensus outcome, final, at a
    /// turn above every turn this party has taken part in (and at least `at_least`, the turn
    /// a peer proposed), so that signing it never makes two states at one turn. Refused while
    /// the ledger holds guarantees or proposals wait.
    pub(crate) fn new(ledger: &ConsensusChannel, at_least: Option<TurnNum>) -> Result<Self, PartyError> {
        let remaining = ledger.guarantees().len().max(ledger.consensus_outcome().guarantee_count());
        if remaining > 0 {
            return Err(PartyError::GuaranteesRemain(remaining));
        }
        if ledger.has_pending() {
            return Err(PartyError::ProposalsPending);
        }
        if ledger.consensus_outcome().has_slot() || ledger.latest_outcome().has_slot() {
            return Err(PartyError::TopUpPending);
        }
        let fresh = ledger.highest_turn().checked_add(TurnNum::from(1)).ok_or(PartyError::TurnOverflow)?;
        let turn = at_least.map_or(fresh, |t| t.max(fresh));
        Ok(Self {
            channel_id: ledger.channel_id(),
            final_round: SignatureRound::new(Self::final_state_at(ledger, turn)),
            submitted: false,
            failed: false,
            since: None,
        })
    }

    /// The ledger's consensus state, one turn `turn`, final.
    fn final_state_at(ledger: &ConsensusChannel, turn: TurnNum) -> State {
        let mut state: State = ledger.consensus_state().state().clone();
        state.turn_num = turn;
        state.is_final = true;
        state
    }

    /// The ledger's assets (every one is paid out by the conclusion).
    fn assets(&self) -> impl Iterator<Item = crate::Address> + '_ {
        self.final_round.state.state().outcome.0.iter().map(|e| e.asset)
    }

    /// The ledger being closed.
    pub fn channel_id(&self) -> ChannelId {
        self.channel_id
    }

    /// The final state (with the signatures held so far).
    pub fn final_state(&self) -> &SignedState {
        &self.final_round.state
    }

    /// Before we sign the final state: its turn is reserved in the ledger (nothing proposed
    /// or countersigned from now on). If the turn is no longer fresh for us — we signed or saw
    /// a proposal there since — the final state moves to a fresh turn instead.
    fn reserve_fresh_turn(&mut self, ctx: &mut Ctx<'_>) -> Result<(), PartyError> {
        let me = ctx.me;
        let state = self.final_round.state.state();
        let signed = state.participants.iter().position(|p| *p == me).is_some_and(|i| self.final_round.signed_by(i));
        if signed {
            return Ok(());
        }
        let ledger = ctx.ledgers.get_mut(&self.channel_id).ok_or(PartyError::UnknownLedger(self.channel_id))?;
        let step = self.final_round.reserve_final_turn(ledger, Self::final_state_at)?;
        ctx.effects.absorb_ledger_step(self.channel_id, step, None);
        Ok(())
    }

    fn submit(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(request) = self.final_round.conclusion(self.id()) {
            ctx.effects.transactions.push(request);
            self.submitted = true;
        }
    }
}

impl Crank for DirectDefund {
    fn id(&self) -> ObjectiveId {
        ObjectiveId::DirectDefund(self.channel_id)
    }

    /// Takes a peer's copy of a final state. The same state merges; a final state of the same
    /// ledger and outcome at a higher turn replaces ours (the peer knew of a higher turn: a
    /// leader's proposal we never saw); one at a lower turn is answered with ours.
    fn receive_state(
        &mut self,
        state: &SignedState,
        ledger: Option<&ConsensusChannel>,
    ) -> Result<SignedState, PartyError> {
        let ours = self.final_round.state.state();
        if state.state() == ours {
            return self.final_round.merge(state);
        }
        let incoming = state.state();
        let mut expected = ours.clone();
        expected.turn_num = incoming.turn_num;
        if *incoming != expected {
            return Err(PartyError::UnexpectedState);
        }
        if incoming.turn_num < ours.turn_num {
            return Ok(self.final_round.state.clone());
        }
        // A higher turn: it must be fresh for us too (checked again before we sign).
        if let Some(ledger) = ledger {
            if incoming.turn_num <= ledger.highest_turn() && ledger.closing() != Some(incoming.turn_num) {
                return Ok(self.final_round.state.clone());
            }
        }
        self.final_round = SignatureRound::new(incoming.clone());
        self.submitted = false;
        self.final_round.merge(state)
    }

    /// Our conclusion failed (often: the other party concluded first). It is submitted again
    /// at the next timer tick if the channel is still not concluded.
    fn transaction_failed(&mut self) {
        self.failed = true;
    }

    /// Returns true when the ledger's holdings reached zero after its conclusion.
    fn crank(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, PartyError> {
        let id = self.id();
        let leader = matches!(ctx.ledgers.get(&self.channel_id), Some(ConsensusChannel::Leader(_)));
        self.reserve_fresh_turn(ctx)?;
        self.final_round.sign_and_send(ctx.key, id, ctx.effects);
        if !self.final_round.is_complete() {
            return Ok(false);
        }
        if ctx.chain.is_concluded(&self.channel_id) && ctx.chain.held_any(&self.channel_id, self.assets()).is_zero() {
            ctx.closed.push(self.channel_id);
            return Ok(true);
        }
        // The leader pays out; the follower does too if asked to retry (see `resend`).
        if leader && !self.submitted {
            self.submit(ctx);
        }
        Ok(false)
    }

    /// Our signature on the final state, to whoever lacks it.
    fn resync(&self, me: Address) -> Vec<Envelope> {
        self.final_round.resend(me, self.id())
    }

    /// On a timer: submit the conclusion again if ours failed, or — as follower — if the
    /// leader's has not concluded the channel after [`CONCLUDE_PATIENCE_SECS`] of chain time.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        if !self.final_round.is_complete() || ctx.chain.is_concluded(&self.channel_id) {
            return;
        }
        let now = ctx.chain.now();
        let since = *self.since.get_or_insert(now);
        // Ours failed; or the leader's (or ours, never sent after a crash) has not concluded
        // the channel for a while. A conclusion of a concluded channel reverts at estimation,
        // before anything is sent.
        if self.failed || now >= since.saturating_add(CONCLUDE_PATIENCE_SECS) {
            self.failed = false;
            self.since = Some(now);
            self.submit(ctx);
        }
    }

    /// A reorg took back the conclusion: it is asked for again (by the leader at once, by the
    /// follower after its patience, counted anew).
    fn on_chain_event(&mut self, event: &ChainEvent, chain: &ChainView) {
        if event.channel_id() == self.channel_id
            && event.retracted_from().is_some()
            && !chain.is_concluded(&self.channel_id)
        {
            self.submitted = false;
            self.since = None;
        }
    }

    fn waiting_for(&self, view: &View<'_>) -> WaitingFor {
        if !self.final_round.is_complete() {
            return WaitingFor::signatures("final", &self.final_round);
        }
        WaitingFor::Payout { held: view.chain.held_any(&self.channel_id, self.assets()) }
    }

    fn failure(&self) -> Option<&str> {
        None
    }

    fn fail_with(&mut self, _: &str) {
        // A closing ledger has a final state out (signed by us or about to be): it finishes
        // on chain — by its conclusion, or by a ForceClose challenging the consensus state.
    }

    fn has_committed(&self, _: &View<'_>) -> bool {
        true
    }
}
