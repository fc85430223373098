//! DirectDefund: close a ledger. Refused while guarantees or unsettled proposals remain; a
//! final state (consensus turn + 1) signed by both → `concludeAndTransferAllAssets` →
//! holdings reach zero.

use super::{round::SignatureRound, Ctx, ObjectiveId, PartyError, TransactionRequest, WaitingFor};
use crate::{chain::ChainTransaction, ChannelId, ConsensusChannel, SignedState, State, U256};

/// The DirectDefund objective of one party.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirectDefund {
    channel_id: ChannelId,
    final_round: SignatureRound,
    submitted: bool,
    failed: bool,
    /// Timer ticks since the final state was complete without the ledger concluding.
    waited: u32,
}

/// Ticks a follower waits for the leader's conclusion before submitting its own.
const FOLLOWER_PATIENCE: u32 = 10;

impl DirectDefund {
    /// The final state both must sign to close `ledger`: its consensus state, one turn later,
    /// final. Refused while the ledger holds guarantees or proposals wait.
    pub(crate) fn new(ledger: &ConsensusChannel) -> Result<Self, PartyError> {
        let remaining = ledger.guarantees().len().max(ledger.consensus_outcome().guarantees().len());
        if remaining > 0 {
            return Err(PartyError::GuaranteesRemain(remaining));
        }
        if ledger.has_pending() {
            return Err(PartyError::ProposalsPending);
        }
        let consensus = ledger.consensus_state();
        let mut state: State = consensus.state().clone();
        state.turn_num = state.turn_num.checked_add(crate::U48::from(1)).ok_or(PartyError::TurnOverflow)?;
        state.is_final = true;
        Ok(Self {
            channel_id: ledger.channel_id(),
            final_round: SignatureRound::new(state),
            submitted: false,
            failed: false,
            waited: 0,
        })
    }

    pub(crate) fn id(&self) -> ObjectiveId {
        ObjectiveId::DirectDefund(self.channel_id)
    }

    /// The ledger being closed.
    pub fn channel_id(&self) -> ChannelId {
        self.channel_id
    }

    /// The final state (with the signatures held so far).
    pub fn final_state(&self) -> &SignedState {
        &self.final_round.state
    }

    pub(crate) fn receive_state(&mut self, state: &SignedState) -> Result<SignedState, PartyError> {
        self.final_round.merge(state)
    }

    /// Our conclusion failed (often: the other party concluded first). It is submitted again
    /// at the next timer tick if the channel is still not concluded.
    pub(crate) fn transaction_failed(&mut self) {
        self.failed = true;
    }

    /// Returns true when the ledger's holdings reached zero after its conclusion.
    pub(crate) fn crank(&mut self, ctx: &mut Ctx<'_>, leader: bool) -> Result<bool, PartyError> {
        let id = self.id();
        self.final_round.sign_and_send(ctx.key, id, &mut ctx.effects.messages);
        if !self.final_round.is_complete() {
            return Ok(false);
        }
        if ctx.concluded.contains(&self.channel_id) && ctx.holdings.get(&self.channel_id) == Some(&U256::ZERO) {
            return Ok(true);
        }
        // The leader pays out; the follower does too if asked to retry (see `resend`).
        if leader && !self.submitted {
            self.submit(ctx);
        }
        Ok(false)
    }

    fn submit(&mut self, ctx: &mut Ctx<'_>) {
        if let Ok(tx) = ChainTransaction::conclude_and_transfer_all_assets(self.final_round.state.clone()) {
            ctx.effects.transactions.push(TransactionRequest { objective: Some(self.id()), transaction: tx });
            self.submitted = true;
        }
    }

    /// On a timer: send our signature again; submit the conclusion again if ours failed, or
    /// — as follower — if the leader's has not come after a while.
    pub(crate) fn retry(&mut self, ctx: &mut Ctx<'_>) {
        ctx.effects.messages.extend(self.final_round.resend(ctx.me, self.id()));
        if !self.final_round.is_complete() || ctx.concluded.contains(&self.channel_id) {
            return;
        }
        self.waited = self.waited.saturating_add(1);
        // Ours failed; or the leader's (or ours, never sent after a crash) has not concluded
        // the channel after a while. A conclusion of a concluded channel reverts, harmlessly.
        if self.failed || self.waited > FOLLOWER_PATIENCE {
            self.failed = false;
            self.waited = 0;
            self.submit(ctx);
        }
    }

    pub(crate) fn waiting_for(&self, holdings: Option<U256>) -> WaitingFor {
        if !self.final_round.is_complete() {
            return WaitingFor::signatures("final", &self.final_round);
        }
        WaitingFor::Payout { held: holdings.unwrap_or_default() }
    }
}
