//! DirectFund: open a ledger on chain. Prefund (turn 0) signed by both → deposits in order,
//! per asset (ADR-0022 §2) → postfund (turn 1) signed by both, once every asset is funded → a
//! [`ConsensusChannel`] at turn 1.

pub(crate) use super::direct_fund_asset::DEPOSIT_PATIENCE_SECS;
use super::{
    chain_view::ChainView,
    direct_fund_asset::AssetFunding,
    objective::{Crank, Ctx, View},
    round::SignatureRound,
    Envelope, ObjectiveId, Party, PartyError, WaitingFor,
};
use crate::{chain::ChainEvent, destination_of, ChannelId, ConsensusChannel, LedgerOutcome, SignedState, State, U256};

/// The DirectFund objective of one party.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DirectFund {
    channel_id: ChannelId,
    my_index: usize,
    /// The first asset's funding (its fields where a single-asset record had them).
    #[serde(flatten)]
    first: AssetFunding,
    /// The other assets' fundings, ascending by asset (none for a single-asset ledger).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    more: Vec<AssetFunding>,
    prefund: SignatureRound,
    postfund: SignatureRound,
    /// Why the objective stopped (cancelled, declined, taken over by a ForceClose).
    failure: Option<String>,
}

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
        if outcome.guarantee_count() != 0
            || outcome.has_slot()
            || outcome.leader().destination != destination_of(prefund.participants[0])
            || outcome.follower().destination != destination_of(prefund.participants[1])
        {
            return Err(invalid("balances must pay the two participants, no guarantees, no top-up slot"));
        }
        let mut fundings =
            outcome.assets().iter().map(|a| AssetFunding::new(a.asset(), [a.leader().amount, a.follower().amount]));
        let first = fundings.next().ok_or_else(|| invalid("at least one asset"))?;
        let mut postfund = prefund.clone();
        postfund.turn_num = crate::U48::from(1);
        Ok(Self {
            channel_id: prefund.channel_id(),
            my_index,
            first,
            more: fundings.collect(),
            prefund: SignatureRound::new(prefund.clone()),
            postfund: SignatureRound::new(postfund),
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

    /// The ledger's assets, ascending.
    pub fn assets(&self) -> impl Iterator<Item = crate::Address> + '_ {
        self.fundings().map(|f| f.asset)
    }

    /// The two deposits of `asset`, ours first (zero for an asset the ledger does not hold).
    pub fn amounts_mine_first(&self, asset: crate::Address) -> [U256; 2] {
        self.fundings()
            .find(|f| f.asset == asset)
            .map_or([U256::ZERO; 2], |f| [f.amounts[self.my_index], f.amounts[1 - self.my_index]])
    }

    fn fundings(&self) -> impl Iterator<Item = &AssetFunding> {
        std::iter::once(&self.first).chain(&self.more)
    }

    fn fundings_mut(&mut self) -> impl Iterator<Item = &mut AssetFunding> {
        std::iter::once(&mut self.first).chain(&mut self.more)
    }

    /// The ledger being funded.
    pub fn channel_id(&self) -> ChannelId {
        self.channel_id
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
    /// Every asset whose deposit is in flight counts it failed (the objective does not know
    /// which one failed; a copy asked for again cannot double-fund, see `on_timer`).
    fn transaction_failed(&mut self) {
        for f in self.fundings_mut().filter(|f| f.deposit_submitted) {
            f.deposit_failed = true;
        }
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
        let now = ctx.chain.now();
        self.fundings_mut().for_each(|f| f.on_timer(now));
    }

    /// A reorg took back blocks of this channel: if what the chain holds now leaves our
    /// deposit due again (it was in the blocks taken back, or the deposits before it were), it
    /// is asked for again as soon as it is our turn (with the holdings seen then as
    /// `expectedHeld`, so that it cannot double-fund).
    fn on_chain_event(&mut self, event: &ChainEvent, chain: &ChainView) {
        let ChainEvent::Retracted { channel_id, asset, .. } = event else { return };
        if *channel_id != self.channel_id || self.failure.is_some() || self.postfund.signed_by(self.my_index) {
            return;
        }
        // A retraction re-reads one asset (the watcher sends one per asset it reported): the
        // other assets' holdings, and so their deposits, stand as they were.
        let (channel, me) = (self.channel_id, self.my_index);
        self.fundings_mut().filter(|f| f.asset == *asset).for_each(|f| f.on_retracted(&channel, me, chain));
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
        let (channel, me) = (self.channel_id, self.my_index);
        let mut funded = true;
        for f in std::iter::once(&mut self.first).chain(&mut self.more) {
            if f.is_funded(&channel, ctx.chain) {
                continue;
            }
            funded = false;
            if let Some(deposit) = f.due_deposit(id, channel, me, ctx.chain) {
                ctx.effects.transactions.push(deposit);
            }
        }
        if !funded {
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
        if let Some(waiting) = self.fundings().find_map(|f| f.waiting_for(&self.channel_id, self.my_index, view.chain))
        {
            return waiting;
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
        self.postfund.signed_by(me) || self.fundings().any(|f| f.has_committed(&self.channel_id, me, view.chain))
    }
}

impl Party {
    /// Opens a ledger holding every asset of `assets` (ADR-0022 §2), each with the two
    /// parties' deposits (`participants[0]`'s, the leader's, first): the exit lists the assets
    /// ascending by address, whatever the order given, and the list is fixed for the ledger's
    /// life. Refused: no asset, an asset twice, us not one of the two participants, a ledger
    /// with the peer already open or being funded; then the policy, as for a peer's opening.
    /// The counterparty joins when our prefund signature reaches it.
    pub fn direct_fund_assets(
        &mut self,
        participants: [crate::Address; 2],
        assets: &[(crate::Address, [U256; 2])],
        channel_nonce: u64,
    ) -> Result<(ObjectiveId, super::Effects), PartyError> {
        let me = self.address();
        let peer = match participants {
            [a, b] if a == me && b != me => b,
            [a, b] if b == me && a != me => a,
            _ => return Err(PartyError::NotAParticipant),
        };
        let mut sorted = assets.to_vec();
        sorted.sort_by_key(|(asset, _)| *asset);
        if sorted.is_empty() || sorted.windows(2).any(|w| w[0].0 == w[1].0) {
            return Err(PartyError::BadRequest("a ledger holds one or more assets, each once".into()));
        }
        let exits = sorted.iter().map(|(asset, amounts)| crate::SingleAssetExit {
            asset: *asset,
            asset_metadata: crate::AssetMetadata::default(),
            allocations: participants
                .iter()
                .zip(amounts)
                .map(|(p, a)| crate::Allocation::simple(destination_of(*p), *a))
                .collect(),
        });
        let state = State {
            participants: participants.to_vec(),
            channel_nonce,
            app_definition: self.config.consensus_app,
            challenge_duration: self.config.challenge_duration,
            outcome: crate::Exit(exits.collect()),
            app_data: Default::default(),
            turn_num: crate::U48::ZERO,
            is_final: false,
        };
        if self.ledger_with.contains_key(&peer) || self.funding_with(peer) {
            return Err(PartyError::LedgerExists(peer));
        }
        let objective = DirectFund::new(&state, self)?;
        self.start(super::Objective::DirectFund(objective))
    }
}
