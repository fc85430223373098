//! Withdraw: take part of a ledger L out to chain without closing the virtual channels it
//! funds, by migrating L to a new ledger L′ (ADR-0022 §5).
//!
//! L′ has L's participants, app and challenge duration, a fresh nonce, and the outcome
//! `[leader − w_L, follower − w_F, every guarantee of L's consensus state]` at turns 0 and 1,
//! in the asset withdrawn; every other asset of a multi-asset ledger is carried whole.
//! L's final state F pays `w_L` and `w_F` of that asset to the parties and the rest of every
//! asset to L′. The party that
//! asks sends its signatures on L′@0 and L′@1 (M1); the other answers with its own and its
//! signature on F (M2); the asker signs F (M3) and concludes L, which credits L′ on chain.
//! Nobody signs F before both L′ states are signed by both, and L reserves F's turn before we
//! sign it, so no other state of L is signed by us afterwards.

use super::{
    chain_view::ChainView,
    direct_defund::CONCLUDE_PATIENCE_SECS,
    objective::{Crank, Ctx, View},
    round::SignatureRound,
    Envelope, ObjectiveId, PartyError, WaitingFor,
};
use crate::{
    chain::ChainEvent, destination_of, Address, Allocation, AssetMetadata, ChannelId, ConsensusChannel, Exit,
    GuaranteeStatus, LedgerOutcome, SignedState, SingleAssetExit, State, TurnNum, U256, U48,
};

/// The Withdraw objective of one party: L migrates to L′ paying out the withdrawals.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Withdraw {
    ledger: ChannelId,
    successor: ChannelId,
    /// Whether this party asked for the withdrawal (it signs F last and concludes L).
    asked: bool,
    /// `[leader, follower]` withdrawals, in the asset withdrawn.
    amounts: [U256; 2],
    /// The asset withdrawn (`None`, and in records from before multi-asset ledgers: L's only
    /// asset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    asset: Option<Address>,
    prefund: SignatureRound,
    postfund: SignatureRound,
    final_round: SignatureRound,
    submitted: bool,
    failed: bool,
    /// Chain time since which F is complete without L concluding (or our last conclusion).
    since: Option<u64>,
    failure: Option<String>,
    /// Whether L's payout of its first asset credited L′ already (counted once).
    #[serde(default)]
    credited: bool,
    /// The further asset indices whose payout credited L′ already (multi-asset ledgers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    credited_assets: Vec<usize>,
}

/// Whether a 32-byte id would be read by the adjudicator as an external address (twelve
/// leading zero bytes): such a channel could never be credited internally.
fn looks_like_address(id: &ChannelId) -> bool {
    id.0[..12].iter().all(|b| *b == 0)
}

impl Withdraw {
    /// The withdrawal of `amounts` (`[leader, follower]`) of `asset` from `ledger` into a
    /// successor with nonce `nonce`. Refused while proposals wait, a guarantee is being added or
    /// removed, a top-up slot is pending (ADR-0022 §5's preconditions), the ledger is closing,
    /// the ledger does not hold `asset`, or an amount exceeds its party's balance.
    pub(crate) fn new(
        ledger: &ConsensusChannel,
        asset: Address,
        amounts: [U256; 2],
        nonce: u64,
        asked: bool,
    ) -> Result<Self, PartyError> {
        let index = ledger
            .consensus_outcome()
            .asset_index(asset)
            .ok_or_else(|| PartyError::BadRequest(format!("the ledger holds no asset {asset}")))?;
        if ledger.has_pending() {
            return Err(PartyError::ProposalsPending);
        }
        if ledger.closing().is_some() {
            return Err(PartyError::LedgerClosing(ledger.channel_id()));
        }
        if ledger.consensus_outcome().has_slot() || ledger.latest_outcome().has_slot() {
            return Err(PartyError::TopUpPending);
        }
        let consensus = ledger.consensus_outcome();
        let changing =
            consensus.guarantees().any(|g| ledger.guarantees().status(&g.target()) != Some(GuaranteeStatus::Locked))
                || ledger.guarantees().len() != consensus.guarantee_count();
        if changing {
            return Err(PartyError::ProposalsPending);
        }
        if amounts.iter().all(U256::is_zero) {
            return Err(PartyError::BadRequest("nothing to withdraw".into()));
        }
        let withdrawn = &consensus.assets()[index];
        let balances = [withdrawn.leader().amount, withdrawn.follower().amount];
        for (w, b) in amounts.iter().zip(balances) {
            if *w > b {
                return Err(PartyError::InsufficientFunds { ledger: ledger.channel_id(), needed: *w, available: b });
            }
        }
        let state = ledger.consensus_state().state().clone();
        let mut prefund = state.clone();
        prefund.channel_nonce = nonce;
        prefund.turn_num = U48::ZERO;
        let [leader, follower] = Self::balances_mut(&mut prefund.outcome, index)?;
        leader.amount -= amounts[0];
        follower.amount -= amounts[1];
        let successor = prefund.channel_id();
        if successor == ledger.channel_id() || looks_like_address(&successor) {
            return Err(PartyError::BadRequest("the successor's nonce gives an unusable channel id".into()));
        }
        let mut postfund = prefund.clone();
        postfund.turn_num = U48::from(1);
        // F, per asset: the withdrawals (of the asset withdrawn) and the rest to L′, zero
        // entries omitted.
        let mut exits = Vec::with_capacity(consensus.assets().len());
        for (i, a) in consensus.assets().iter().enumerate() {
            let total = a.total().ok_or(PartyError::BadRequest("ledger total overflows".into()))?;
            let w = if i == index { amounts } else { [U256::ZERO; 2] };
            let payouts = [
                (destination_of(state.participants[0]), w[0]),
                (destination_of(state.participants[1]), w[1]),
                (successor, total - w[0] - w[1]),
            ];
            let allocations = payouts.iter().filter(|(_, a)| !a.is_zero()).map(|(d, a)| Allocation::simple(*d, *a));
            exits.push(SingleAssetExit {
                asset: a.asset(),
                asset_metadata: AssetMetadata::default(),
                allocations: allocations.collect(),
            });
        }
        let mut fin = state;
        fin.outcome = Exit(exits);
        fin.is_final = true;
        fin.turn_num = ledger.highest_turn().checked_add(TurnNum::from(1)).ok_or(PartyError::TurnOverflow)?;
        Ok(Self {
            ledger: ledger.channel_id(),
            successor,
            asked,
            amounts,
            asset: consensus.is_multi_asset().then_some(asset),
            prefund: SignatureRound::new(prefund),
            postfund: SignatureRound::new(postfund),
            final_round: SignatureRound::new(fin),
            submitted: false,
            failed: false,
            since: None,
            failure: None,
            credited: false,
            credited_assets: Vec::new(),
        })
    }

    /// The objective a counterparty's first state of L′ (`state`, turn 0 or 1) asks us to join
    /// as responder: it must be exactly the successor our own consensus state of `ledger` gives
    /// for a withdrawal of the counterparty's funds only.
    pub(crate) fn join(ledger: &ConsensusChannel, me: Address, state: &State) -> Result<Self, PartyError> {
        let invalid = |why: &str| PartyError::InvalidState(format!("withdrawal: {why}"));
        let ours = ledger.consensus_state();
        let consensus = ledger.consensus_outcome();
        let theirs = LedgerOutcome::from_exit(&state.outcome).map_err(|e| invalid(&e.to_string()))?;
        // The withdrawal is of one asset: the only one whose balances differ (the first when
        // none does, which `new` refuses as nothing to withdraw).
        let mut withdrawn = None;
        for ours in consensus.assets() {
            let Some(t) = theirs.exit(ours.asset()) else { return Err(invalid("the successor lacks an asset")) };
            let w_leader = ours.leader().amount.checked_sub(t.leader().amount);
            let w_follower = ours.follower().amount.checked_sub(t.follower().amount);
            let (Some(w_leader), Some(w_follower)) = (w_leader, w_follower) else {
                return Err(invalid("the successor's balances exceed ours"));
            };
            if w_leader.is_zero() && w_follower.is_zero() {
                continue;
            }
            if withdrawn.replace((ours.asset(), [w_leader, w_follower])).is_some() {
                return Err(invalid("a withdrawal is of one asset"));
            }
        }
        let (asset, amounts) = withdrawn.unwrap_or((consensus.asset(), [U256::ZERO; 2]));
        let my_index = ours.state().participants.iter().position(|p| *p == me).ok_or(PartyError::NotAParticipant)?;
        if !amounts[my_index].is_zero() {
            return Err(PartyError::Policy("a party withdraws only its own funds".into()));
        }
        let objective = Self::new(ledger, asset, amounts, state.channel_nonce, false)?;
        let expected = match state.turn_num.to::<u64>() {
            0 => objective.prefund.state.state(),
            1 => objective.postfund.state.state(),
            _ => return Err(invalid("the successor's states are at turns 0 and 1")),
        };
        if expected != state {
            return Err(invalid("the successor is not L's consensus state less the withdrawal"));
        }
        Ok(objective)
    }

    fn balances_mut(exit: &mut Exit, index: usize) -> Result<[&mut Allocation; 2], PartyError> {
        let allocations = &mut exit.0.get_mut(index).ok_or(PartyError::UnexpectedState)?.allocations;
        match allocations.as_mut_slice() {
            [leader, follower, ..] => Ok([leader, follower]),
            _ => Err(PartyError::UnexpectedState),
        }
    }

    /// The ledger withdrawn from (L).
    pub fn channel_id(&self) -> ChannelId {
        self.ledger
    }

    /// The successor ledger (L′).
    pub fn successor(&self) -> ChannelId {
        self.successor
    }

    /// The withdrawals, `[leader, follower]`, of [`Withdraw::asset`].
    pub fn amounts(&self) -> [U256; 2] {
        self.amounts
    }

    /// The asset withdrawn.
    pub fn asset(&self) -> Address {
        self.asset.unwrap_or_else(|| self.postfund.state.state().outcome.0.first().map_or(Address::ZERO, |e| e.asset))
    }

    /// Whether this party asked for the withdrawal.
    pub fn asked(&self) -> bool {
        self.asked
    }

    /// L′'s turn-0 state, with the signatures held so far.
    pub fn successor_prefund(&self) -> &SignedState {
        &self.prefund.state
    }

    /// L′'s turn-1 state (its first consensus state), with the signatures held so far.
    pub fn successor_postfund(&self) -> &SignedState {
        &self.postfund.state
    }

    /// L's final state F, with the signatures held so far.
    pub fn final_state(&self) -> &SignedState {
        &self.final_round.state
    }

    /// Whether we signed F (from then on L is closed to us: we sign no other state of it).
    pub fn signed_final(&self, me: Address) -> bool {
        self.final_round
            .state
            .state()
            .participants
            .iter()
            .position(|p| *p == me)
            .is_some_and(|i| self.final_round.signed_by(i))
    }

    /// Whether we signed L′'s turn-0 state (our successor signatures are out).
    pub fn signed_successor(&self, me: Address) -> bool {
        self.prefund.state.state().participants.iter().position(|p| *p == me).is_some_and(|i| self.prefund.signed_by(i))
    }

    fn successor_complete(&self) -> bool {
        self.prefund.is_complete() && self.postfund.is_complete()
    }

    /// What L′ holds once funded, per asset: its turn-1 outcome's totals.
    fn successor_totals(&self) -> impl Iterator<Item = (Address, U256)> + '_ {
        self.postfund
            .state
            .state()
            .outcome
            .0
            .iter()
            .map(|e| (e.asset, e.allocations.iter().fold(U256::ZERO, |a, b| a.saturating_add(b.amount))))
    }

    /// Whether the chain holds every asset's total for L′.
    fn successor_funded(&self, chain: &ChainView) -> bool {
        self.successor_totals().all(|(asset, total)| chain.holdings(&self.successor, asset) >= total)
    }

    /// F's outcome once we signed it: what a conclusion of L pays (the only final state of L
    /// we sign), e.g. to learn what it credited L′.
    pub(crate) fn final_outcome_if_signed(&self, me: Address) -> Option<&Exit> {
        self.signed_final(me).then(|| &self.final_round.state.state().outcome)
    }

    /// Records that L's payout of asset `index` credited L′; false if it was recorded already.
    pub(crate) fn mark_credited(&mut self, index: usize) -> bool {
        if index == 0 {
            return !std::mem::replace(&mut self.credited, true);
        }
        if self.credited_assets.contains(&index) {
            return false;
        }
        self.credited_assets.push(index);
        true
    }

    /// Before we sign F: its turn is reserved in L (nothing proposed or countersigned there
    /// from now on); if the turn is no longer fresh for us, F moves to a fresh turn.
    fn reserve_fresh_turn(&mut self, ctx: &mut Ctx<'_>) -> Result<(), PartyError> {
        if self.signed_final(ctx.me) {
            return Ok(());
        }
        let ledger = ctx.ledgers.get_mut(&self.ledger).ok_or(PartyError::UnknownLedger(self.ledger))?;
        // F keeps its outcome at a fresh turn.
        let current = self.final_round.state.state().clone();
        let step = self.final_round.reserve_final_turn(ledger, |_, fresh| State { turn_num: fresh, ..current })?;
        ctx.effects.absorb_ledger_step(self.ledger, step, None);
        Ok(())
    }

    fn submit(&mut self, ctx: &mut Ctx<'_>) {
        if let Some(request) = self.final_round.conclusion(self.id()) {
            ctx.effects.transactions.push(request);
            self.submitted = true;
        }
    }
}

impl Crank for Withdraw {
    fn id(&self) -> ObjectiveId {
        ObjectiveId::Withdraw(self.ledger)
    }

    /// Merges a peer's copy of L′@0, L′@1 or F. A copy of F at a higher turn (fresh for us)
    /// replaces ours; one at a lower turn is answered with ours.
    fn receive_state(
        &mut self,
        state: &SignedState,
        ledger: Option<&ConsensusChannel>,
    ) -> Result<SignedState, PartyError> {
        if state.channel_id() == self.successor {
            return match state.state().turn_num.to::<u64>() {
                0 => self.prefund.merge(state),
                1 => self.postfund.merge(state),
                _ => Err(PartyError::UnexpectedState),
            };
        }
        if state.channel_id() != self.ledger {
            return Err(PartyError::UnexpectedState);
        }
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
        if let Some(ledger) = ledger {
            if incoming.turn_num <= ledger.highest_turn() && ledger.closing() != Some(incoming.turn_num) {
                return Ok(self.final_round.state.clone());
            }
        }
        // Our signature on F at a lower turn stays valid (same outcome): nothing is lost.
        self.final_round = SignatureRound::new(incoming.clone());
        self.submitted = false;
        self.final_round.merge(state)
    }

    fn transaction_failed(&mut self) {
        self.failed = true;
    }

    /// Complete once L concluded and L′ holds its total: L′ replaces L.
    fn crank(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, PartyError> {
        let signed_final = self.signed_final(ctx.me);
        if self.failure.is_some() && !signed_final {
            return Ok(false);
        }
        let id = self.id();
        if self.failure.is_none() {
            self.prefund.sign_and_send(ctx.key, id, ctx.effects);
            self.postfund.sign_and_send(ctx.key, id, ctx.effects);
        }
        if !self.successor_complete() {
            return Ok(false);
        }
        // The responder signs F first; the asker only once the responder's signature is in
        // (or when F had to move to a turn fresh for it).
        let other = self.final_round.state.state().participants.iter().position(|p| *p != ctx.me).unwrap_or(0);
        if self.failure.is_none() && (!self.asked || self.final_round.signed_by(other)) {
            self.reserve_fresh_turn(ctx)?;
            self.final_round.sign_and_send(ctx.key, id, ctx.effects);
        }
        if !self.signed_final(ctx.me) {
            return Ok(false);
        }
        if ctx.chain.is_finalized(&self.ledger) && !ctx.chain.is_concluded(&self.ledger) {
            // Finalized by a challenge with an earlier state: L′ is never funded.
            self.failure.get_or_insert_with(|| "the ledger was finalized by a challenge".into());
            return Ok(false);
        }
        if self.final_round.is_complete() {
            ctx.chain.know_final_outcome(self.ledger, self.final_round.state.state().outcome.clone());
            if self.asked && !self.submitted && !ctx.chain.is_concluded(&self.ledger) {
                self.submit(ctx);
            }
        }
        let funded = self.successor_funded(ctx.chain);
        if ctx.chain.is_concluded(&self.ledger) && funded {
            ctx.opened.push(ConsensusChannel::new(ctx.key.clone(), &self.postfund.state)?);
            // A force close of L that met F's conclusion may have closed it already.
            if ctx.ledgers.contains_key(&self.ledger) {
                ctx.closed.push(self.ledger);
            }
            ctx.migrated.push((self.ledger, self.successor));
            return Ok(true);
        }
        Ok(false)
    }

    /// Our signatures on L′@0, L′@1 and F, to whoever lacks them.
    fn resync(&self, me: Address) -> Vec<Envelope> {
        let mut out = Vec::new();
        if self.failure.is_none() {
            out.extend(self.prefund.resend(me, self.id()));
            out.extend(self.postfund.resend(me, self.id()));
        }
        out.extend(self.final_round.resend(me, self.id()));
        out
    }

    /// The conclusion again if ours failed, or — as responder — if the asker's has not
    /// concluded L after [`CONCLUDE_PATIENCE_SECS`] of chain time.
    fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        if !self.final_round.is_complete() || ctx.chain.is_concluded(&self.ledger) {
            return;
        }
        let now = ctx.chain.now();
        let since = *self.since.get_or_insert(now);
        if self.failed || now >= since.saturating_add(CONCLUDE_PATIENCE_SECS) {
            self.failed = false;
            self.since = Some(now);
            self.submit(ctx);
        }
    }

    /// A reorg took back the conclusion: it is asked for again.
    fn on_chain_event(&mut self, event: &ChainEvent, chain: &ChainView) {
        if event.channel_id() == self.ledger && event.retracted_from().is_some() && !chain.is_concluded(&self.ledger) {
            self.submitted = false;
            self.since = None;
        }
    }

    fn waiting_for(&self, view: &View<'_>) -> WaitingFor {
        if let Some(why) = &self.failure {
            return WaitingFor::Failed(why.clone());
        }
        if !self.prefund.is_complete() {
            return WaitingFor::signatures("successor prefund", &self.prefund);
        }
        if !self.postfund.is_complete() {
            return WaitingFor::signatures("successor postfund", &self.postfund);
        }
        if !self.final_round.is_complete() && !view.chain.is_concluded(&self.ledger) {
            return WaitingFor::signatures("final", &self.final_round);
        }
        // The first asset L′ still lacks (or the first, once all are there).
        let mut totals =
            self.successor_totals().map(|(asset, target)| (view.chain.holdings(&self.successor, asset), target));
        let first = self.successor_totals().next().map(|(a, t)| (view.chain.holdings(&self.successor, a), t));
        let (held, target) = totals.find(|(held, target)| held < target).or(first).unwrap_or_default();
        WaitingFor::Deposits { held, target }
    }

    fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Stops the objective; once we signed F it still follows L's conclusion (F may be
    /// concluded by the other party whenever it wants).
    fn fail_with(&mut self, why: &str) {
        self.failure.get_or_insert_with(|| why.to_owned());
    }

    /// Committed once our signature on F is out.
    fn has_committed(&self, view: &View<'_>) -> bool {
        self.signed_final(view.me)
    }
}
