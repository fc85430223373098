//! DirectFund: open a ledger on chain. Prefund (turn 0) signed by both → deposits in order →
//! postfund (turn 1) signed by both → a [`ConsensusChannel`] at turn 1.

use super::{
    chain_view::ChainView,
    objective::{Crank, Ctx, View},
    round::SignatureRound,
    Envelope, ObjectiveId, Party, PartyError, TransactionRequest, WaitingFor,
};
use crate::{
    chain::{ChainEvent, ChainTransaction},
    destination_of, ChannelId, ConsensusChannel, LedgerOutcome, SignedState, State, U256,
};

/// The DirectFund objective of one party.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectFund {
    channel_id: ChannelId,
    my_index: usize,
    asset: crate::Address,
    amounts: [U256; 2],
    prefund: SignatureRound,
    postfund: SignatureRound,
    deposit_submitted: bool,
    deposit_failed: bool,
    /// Chain time (block timestamp) when our deposit was last asked for.
    submitted_at: u64,
    /// Why the objective stopped (cancelled, declined, taken over by a ForceClose).
    failure: Option<String>,
}

/// Chain time (seconds of block timestamps) to wait for our deposit to show up on chain,
/// final at the configured depth, before asking for it again. The transaction manager lands
/// what it was given (retrying, re-pricing, and merging an identical request while the first is
/// in flight), so this is only a backstop for a request lost on the way to it; measured in chain
/// time so that a slow chain, not a fast timer, decides.
pub(crate) const DEPOSIT_PATIENCE_SECS: u64 = 180;

impl DirectFund {
    /// The objective for the ledger whose prefund state is `prefund` (turn 0, a ledger outcome
    /// with no guarantees paying the two participants, the ConsensusApp as app).
    pub(crate) fn new(prefund: &State, party: &Party) -> Result<Self, PartyError> {
        let invalid = |why: &str| PartyError::InvalidState(format!("prefund of a ledger: {why}"));
        if prefund.participants.len() != 2 {
            return Err(invalid("a ledger has two participants"));
        }
        let my_index =
            prefund.participants.iter().position(|p| *p == party.address()).ok_or(PartyError::NotAParticipant)?;
        if prefund.turn_num != crate::U48::ZERO || prefund.is_final || !prefund.app_data.is_empty() {
            return Err(invalid("turn 0, not final, no app data"));
        }
        if prefund.app_definition != party.config.consensus_app {
            return Err(invalid("the app must be the ConsensusApp"));
        }
        let outcome = LedgerOutcome::from_exit(&prefund.outcome).map_err(|e| invalid(&e.to_string()))?;
        if outcome.guarantees().len() != 0
            || outcome.leader().destination != destination_of(prefund.participants[0])
            || outcome.follower().destination != destination_of(prefund.participants[1])
        {
            return Err(invalid("balances must pay the two participants, no guarantees"));
        }
        let mut postfund = prefund.clone();
        postfund.turn_num = crate::U48::from(1);
        Ok(Self {
            channel_id: prefund.channel_id(),
            my_index,
            asset: outcome.asset(),
            amounts: [outcome.leader().amount, outcome.follower().amount],
            prefund: SignatureRound::new(prefund.clone()),
            postfund: SignatureRound::new(postfund),
            deposit_submitted: false,
            deposit_failed: false,
            submitted_at: 0,
            failure: None,
        })
    }

    /// The two participants of the ledger.
    pub fn participants(&self) -> &[crate::Address] {
        &self.prefund.state.state().participants
    }

    /// The prefund state (turn 0), with the signatures held so far.
    pub fn prefund(&self) -> &SignedState {
        &self.prefund.state
    }

    /// The postfund state (turn 1), with the signatures held so far.
    pub fn postfund(&self) -> &SignedState {
        &self.postfund.state
    }

    /// The ledger's asset.
    pub fn asset(&self) -> crate::Address {
        self.asset
    }

    /// The two deposits, ours first.
    pub fn amounts_mine_first(&self) -> [U256; 2] {
        [self.amounts[self.my_index], self.amounts[1 - self.my_index]]
    }

    /// The ledger being funded.
    pub fn channel_id(&self) -> ChannelId {
        self.channel_id
    }

    fn total(&self) -> U256 {
        self.amounts[0].saturating_add(self.amounts[1])
    }

    /// What the channel holds when our deposit is due (the deposits before ours), and once it
    /// is made.
    fn my_range(&self) -> (U256, U256) {
        let before = self.amounts[..self.my_index].iter().fold(U256::ZERO, |a, b| a.saturating_add(*b));
        (before, before.saturating_add(self.amounts[self.my_index]))
    }
}

impl Crank for DirectFund {
    fn id(&self) -> ObjectiveId {
        ObjectiveId::DirectFund(self.channel_id)
    }

    fn receive_state(&mut self, state: &SignedState, _: Option<&ConsensusChannel>) -> Result<SignedState, PartyError> {
        match state.state().turn_num.to::<u64>() {
            0 => self.prefund.merge(state),
            1 => self.postfund.merge(state),
            _ => Err(PartyError::UnexpectedState),
        }
    }

    /// A deposit of ours failed. It is submitted again (with the holdings known then) at the
    /// next timer tick, not at once: a failing deposit must not spin.
    fn transaction_failed(&mut self) {
        self.deposit_failed = true;
    }

    /// On a timer: our deposit allowed again (asked for by the crank that follows every tick)
    /// if it failed, or if it has not shown up on chain after [`DEPOSIT_PATIENCE_SECS`] of
    /// chain time (it may never have reached the chain: a crash between the store and the
    /// transaction manager). A second deposit cannot double-fund: it carries the holdings seen
    /// now as `expectedHeld`, so at most one of two copies can execute.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        if self.failure.is_some() {
            return;
        }
        let patience_over = ctx.chain.now() >= self.submitted_at.saturating_add(DEPOSIT_PATIENCE_SECS);
        if self.deposit_failed || (self.deposit_submitted && patience_over) {
            self.deposit_failed = false;
            self.deposit_submitted = false;
        }
    }

    /// A reorg took back blocks of this channel: if what the chain holds now leaves our
    /// deposit due again (it was in the blocks taken back, or the deposits before it were), it
    /// is asked for again as soon as it is our turn (with the holdings seen then as
    /// `expectedHeld`, so that it cannot double-fund).
    fn on_chain_event(&mut self, event: &ChainEvent, chain: &ChainView) {
        if event.channel_id() != self.channel_id || event.retracted_from().is_none() || self.failure.is_some() {
            return;
        }
        let (_, mine_until) = self.my_range();
        if !self.postfund.signed_by(self.my_index) && chain.holdings(&self.channel_id) < mine_until {
            self.deposit_submitted = false;
            self.deposit_failed = false;
        }
    }

    /// Our signatures on the prefund and postfund, to whoever lacks them.
    fn resync(&self, me: crate::Address) -> Vec<Envelope> {
        if self.failure.is_some() {
            return Vec::new();
        }
        let mut out = self.prefund.resend(me, self.id());
        out.extend(self.postfund.resend(me, self.id()));
        out
    }

    fn crank(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, PartyError> {
        if self.failure.is_some() {
            return Ok(false);
        }
        let id = self.id();
        self.prefund.sign_and_send(ctx.key, id, ctx.effects);
        if !self.prefund.is_complete() {
            return Ok(false);
        }
        let held = ctx.chain.holdings(&self.channel_id);
        if held < self.total() {
            let (before, mine_until) = self.my_range();
            if !self.deposit_submitted && held >= before && held < mine_until {
                ctx.effects.transactions.push(TransactionRequest {
                    objective: Some(id),
                    transaction: ChainTransaction::Deposit {
                        channel_id: self.channel_id,
                        asset: self.asset,
                        expected_held: held,
                        amount: mine_until - held,
                    },
                    deadline: None,
                });
                self.deposit_submitted = true;
                self.submitted_at = ctx.chain.now();
            }
            return Ok(false);
        }
        self.postfund.sign_and_send(ctx.key, id, ctx.effects);
        if !self.postfund.is_complete() {
            return Ok(false);
        }
        ctx.opened.push(ConsensusChannel::new(ctx.key.clone(), &self.postfund.state)?);
        Ok(true)
    }

    fn waiting_for(&self, view: &View<'_>) -> WaitingFor {
        if let Some(why) = &self.failure {
            return WaitingFor::Failed(why.clone());
        }
        if !self.prefund.is_complete() {
            return WaitingFor::signatures("prefund", &self.prefund);
        }
        let held = view.chain.holdings(&self.channel_id);
        if held < self.total() {
            let before = self.amounts[..self.my_index].iter().fold(U256::ZERO, |a, b| a.saturating_add(*b));
            return if held < before {
                WaitingFor::Deposits { held, target: self.total() }
            } else if self.deposit_submitted {
                WaitingFor::DepositConfirmation { held, target: self.total() }
            } else {
                WaitingFor::Deposits { held, target: self.total() }
            };
        }
        if !self.postfund.is_complete() {
            return WaitingFor::signatures("postfund", &self.postfund);
        }
        WaitingFor::Nothing
    }

    fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn fail_with(&mut self, why: &str) {
        self.failure.get_or_insert_with(|| why.to_owned());
    }

    /// Committed once our deposit may be on chain, or our postfund signature is out.
    fn has_committed(&self, view: &View<'_>) -> bool {
        let me = self.my_index;
        let before = self.amounts[..me].iter().fold(U256::ZERO, |a, b| a.saturating_add(*b));
        self.deposit_submitted
            || self.postfund.signed_by(me)
            || (!self.amounts[me].is_zero() && view.chain.holdings(&self.channel_id) > before)
    }
}
