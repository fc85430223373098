//! TopUp: deposit more into an open ledger (ADR-0022 §4). The leader proposes `Reserve` (a
//! slot for the depositor, the asset's last allocation); once it is in the consensus state the
//! depositor deposits with DirectFund's rule; once the chain holds the ledger's total at depth
//! the leader proposes `Credit`, which folds the slot into the depositor's balance. A follower
//! that tops up asks the leader with [`Payload::TopUpRequest`](super::Payload::TopUpRequest).
//!
//! Nothing is ever credited before the deposit is on chain: the leader proposes, and the
//! follower countersigns ([`decide_top_up`]), a `Credit` only when the holdings at depth cover
//! the ledger's total including the slot.

use super::{
    chain_view::ChainView,
    direct_fund::DEPOSIT_PATIENCE_SECS,
    objective::{Crank, Ctx, View},
    Envelope, ObjectiveId, PartyError, Payload, TransactionRequest, WaitingFor,
};
use crate::{
    chain::{ChainEvent, ChainTransaction},
    Address, Approval, AssetOutcome, ChannelId, ConsensusChannel, FollowerChannel, Proposal, Side, SignedState, Slot,
    U256,
};

/// The TopUp objective of one party of a ledger (either role; the depositor is either side).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopUp {
    ledger: ChannelId,
    asset: Address,
    /// Our role in the ledger.
    me: Side,
    /// The counterparty.
    peer: Address,
    /// The slot asked for: who deposits, how much.
    slot: Slot,
    /// Leader: `Reserve` asked for. Follower depositor: `TopUpRequest` sent.
    asked: bool,
    /// The ledger's total with the slot, once the slot was seen in the consensus state.
    reserved_total: Option<U256>,
    /// Leader: a `Credit` or `CancelReserve` was asked for; seen back out of the queue without
    /// reaching consensus, it was refused, and is asked for again only after a timer tick.
    settle_asked: bool,
    /// Leader: the next `Credit` or `CancelReserve` waits for a timer tick.
    settle_wait: bool,
    deposit_submitted: bool,
    deposit_failed: bool,
    /// Chain time when our deposit was last asked for.
    submitted_at: u64,
    failure: Option<String>,
}

impl TopUp {
    /// The objective for a top-up of `amount` by `depositor` in `ledger` (ours: we are `me`).
    pub(crate) fn new(
        ledger: ChannelId,
        asset: Address,
        me: Side,
        peer: Address,
        depositor: Side,
        amount: U256,
    ) -> Self {
        Self {
            ledger,
            asset,
            me,
            peer,
            slot: Slot { side: depositor, amount },
            asked: false,
            reserved_total: None,
            settle_asked: false,
            settle_wait: false,
            deposit_submitted: false,
            deposit_failed: false,
            submitted_at: 0,
            failure: None,
        }
    }

    /// The asset topped up.
    pub fn asset(&self) -> Address {
        self.asset
    }

    /// The ledger topped up.
    pub fn ledger(&self) -> ChannelId {
        self.ledger
    }

    /// Who deposits and how much.
    pub fn slot(&self) -> Slot {
        self.slot
    }

    /// The counterparty.
    pub fn peer(&self) -> Address {
        self.peer
    }

    fn i_deposit(&self) -> bool {
        self.slot.side == self.me
    }

    /// Whether our deposit may be on its way (asked for and not failed).
    pub(crate) fn deposit_in_flight(&self) -> bool {
        self.deposit_submitted
    }

    fn reserve(&self) -> Proposal {
        Proposal::Reserve { asset: self.asset, side: self.slot.side, amount: self.slot.amount }
    }

    fn credit(&self) -> Proposal {
        Proposal::Credit { asset: self.asset, side: self.slot.side, amount: self.slot.amount }
    }

    /// Leader: settles our slot while it is in the consensus state and no change of ours is
    /// queued or asked for — a `Credit` once the holdings at depth cover the ledger's total
    /// with the slot (never before), or, once this TopUp failed, a `CancelReserve` while the
    /// holdings show no deposit for it. A change the follower refused is asked for again after
    /// the next timer tick (a follower that refuses everything, closing, costs one proposal per
    /// tick, not a message loop).
    fn settle_slot(&mut self, ctx: &mut Ctx<'_>, consensus: &AssetOutcome, latest: Option<Slot>, pending: bool) {
        if self.me != Side::Leader || pending || consensus.slot() != Some(self.slot) || latest != Some(self.slot) {
            return;
        }
        if self.settle_asked {
            self.settle_asked = false;
            self.settle_wait = true;
        }
        if self.settle_wait {
            return;
        }
        let (Some(total), Some(base)) = (consensus.total(), consensus.total_without_slot()) else { return };
        let held = ctx.chain.holdings(&self.ledger, self.asset);
        if held >= total {
            ctx.request_change(self.ledger, self.id(), self.credit());
            self.settle_asked = true;
        } else if self.failure.is_some() && held <= base {
            let cancel = Proposal::CancelReserve { asset: self.asset, side: self.slot.side };
            ctx.request_change(self.ledger, self.id(), cancel);
            self.settle_asked = true;
        }
    }

    /// Our deposit, if due: holdings in `[total without the slot, total)`, amount the rest.
    fn deposit(&mut self, outcome: &AssetOutcome, ctx: &mut Ctx<'_>) {
        let (Some(before), Some(total)) = (outcome.total_without_slot(), outcome.total()) else { return };
        let held = ctx.chain.holdings(&self.ledger, self.asset);
        if self.deposit_submitted || held < before || held >= total {
            return;
        }
        ctx.effects.transactions.push(TransactionRequest {
            objective: Some(self.id()),
            transaction: ChainTransaction::Deposit {
                channel_id: self.ledger,
                asset: self.asset,
                expected_held: held,
                amount: total - held,
            },
            deadline: None,
        });
        self.deposit_submitted = true;
        self.submitted_at = ctx.chain.now();
    }
}

impl Crank for TopUp {
    fn id(&self) -> ObjectiveId {
        ObjectiveId::TopUp(self.ledger)
    }

    fn receive_state(&mut self, _: &SignedState, _: Option<&ConsensusChannel>) -> Result<SignedState, PartyError> {
        Err(PartyError::UnexpectedState)
    }

    fn crank(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, PartyError> {
        let id = self.id();
        let Some(ledger) = ctx.ledgers.get(&self.ledger) else {
            self.fail_with("the ledger is closed");
            return Ok(false);
        };
        let Some(consensus) = ledger.consensus_outcome().exit(self.asset).cloned() else {
            self.fail_with(&format!("the ledger holds no asset {}", self.asset));
            return Ok(false);
        };
        let latest_slot = ledger.latest_outcome().exit(self.asset).and_then(|e| e.slot());
        let pending = ctx.changes.get(&self.ledger).is_some_and(|c| c.iter().any(|(by, _)| *by == id));
        if self.failure.is_some() {
            // Stopped: nothing more is deposited, but the slot is still settled.
            self.settle_slot(ctx, &consensus, latest_slot, pending);
            return Ok(false);
        }
        if self.reserved_total.is_none() {
            if consensus.slot() == Some(self.slot) {
                self.reserved_total = consensus.total();
            } else if !self.asked {
                self.asked = true;
                match self.me {
                    Side::Leader => {
                        if let Some(slot) = latest_slot {
                            self.fail_with(&format!("a top-up slot of {} is already pending", slot.amount));
                            return Ok(false);
                        }
                        ctx.request_change(self.ledger, id, self.reserve());
                    }
                    Side::Follower => ctx.effects.messages.push(Envelope {
                        to: self.peer,
                        payload: Payload::TopUpRequest {
                            channel_id: self.ledger,
                            asset: Some(self.asset),
                            amount: self.slot.amount,
                        },
                    }),
                }
                return Ok(false);
            } else if self.me == Side::Leader && !pending && latest_slot != Some(self.slot) {
                self.fail_with("the follower refused the reserve");
                return Ok(false);
            }
        }
        let Some(reserved_total) = self.reserved_total else { return Ok(false) };
        if consensus.slot() != Some(self.slot) {
            // The slot left the consensus state: credited (the total kept it) or cancelled.
            if consensus.total().is_some_and(|t| t >= reserved_total) {
                return Ok(true);
            }
            self.fail_with("the top-up slot was cancelled");
            return Ok(false);
        }
        if self.i_deposit() {
            self.deposit(&consensus, ctx);
        }
        self.settle_slot(ctx, &consensus, latest_slot, pending);
        Ok(false)
    }

    /// On a timer: our deposit asked for again if it failed or has not shown up after
    /// [`DEPOSIT_PATIENCE_SECS`] of chain time (its `expectedHeld` keeps a second copy from
    /// double-funding).
    fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        self.settle_wait = false;
        if self.failure.is_some() {
            return;
        }
        let patience_over = ctx.chain.now() >= self.submitted_at.saturating_add(DEPOSIT_PATIENCE_SECS);
        if self.deposit_failed || (self.deposit_submitted && patience_over) {
            self.deposit_failed = false;
            self.deposit_submitted = false;
        }
    }

    /// The follower's request again, while the leader has not reserved the slot.
    fn resync(&self, _me: Address) -> Vec<Envelope> {
        if self.failure.is_some() || self.me != Side::Follower || self.reserved_total.is_some() {
            return Vec::new();
        }
        vec![Envelope {
            to: self.peer,
            payload: Payload::TopUpRequest {
                channel_id: self.ledger,
                asset: Some(self.asset),
                amount: self.slot.amount,
            },
        }]
    }

    fn transaction_failed(&mut self) {
        self.deposit_failed = true;
    }

    /// Our deposit was refused for good before anything was sent: none is on its way (so our
    /// slot may be cancelled), and the TopUp stops.
    fn transaction_refused(&mut self, why: &str) {
        self.deposit_submitted = false;
        self.fail_with(why);
    }

    /// A reorg took back our deposit: asked for again (with the holdings seen then).
    fn on_chain_event(&mut self, event: &ChainEvent, chain: &ChainView) {
        if event.channel_id() != self.ledger || event.retracted_from().is_none() || self.failure.is_some() {
            return;
        }
        if self.reserved_total.is_some_and(|t| chain.holdings(&self.ledger, self.asset) < t) {
            self.deposit_submitted = false;
            self.deposit_failed = false;
        }
    }

    fn waiting_for(&self, view: &View<'_>) -> WaitingFor {
        if let Some(why) = &self.failure {
            return WaitingFor::Failed(why.clone());
        }
        let Some(target) = self.reserved_total else {
            return WaitingFor::Agreement { what: "reserve" };
        };
        let held = view.chain.holdings(&self.ledger, self.asset);
        if held < target {
            return if self.i_deposit() && self.deposit_submitted {
                WaitingFor::DepositConfirmation { held, target }
            } else {
                WaitingFor::Deposits { held, target }
            };
        }
        WaitingFor::Agreement { what: "credit" }
    }

    fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn fail_with(&mut self, why: &str) {
        self.failure.get_or_insert_with(|| why.to_owned());
    }

    /// Committed once our deposit may be on chain, or the slot is in the consensus state.
    fn has_committed(&self, _view: &View<'_>) -> bool {
        self.deposit_submitted || self.reserved_total.is_some()
    }
}

/// What the follower's decision on a top-up proposal reads of its ledger, taken before it
/// decides (the ledger is borrowed for the decision itself).
pub(crate) struct Totals {
    ledger: ChannelId,
    /// Per asset of the ledger, in its order.
    assets: Vec<AssetTotals>,
}

/// One asset's totals, as [`Totals`] reads them.
struct AssetTotals {
    asset: Address,
    /// The consensus total, slot included.
    consensus: U256,
    /// The total with every pending proposal applied, slot included: at least the total at
    /// any pending `Credit` (only `CancelReserve` lowers a total, and only by a later slot).
    latest: U256,
    /// The consensus total without its slot.
    base: U256,
}

impl Totals {
    /// Reads them off a follower ledger, per asset (an impossible overflow reads as the
    /// maximum, which defers every credit).
    pub(crate) fn of(follower: &FollowerChannel) -> Self {
        let latest = follower.latest_outcome();
        let assets = follower
            .consensus_outcome()
            .assets()
            .iter()
            .map(|c| AssetTotals {
                asset: c.asset(),
                consensus: c.total().unwrap_or(U256::MAX),
                latest: latest.exit(c.asset()).and_then(|l| l.total()).unwrap_or(U256::MAX),
                base: c.total_without_slot().unwrap_or(U256::MAX),
            })
            .collect();
        Self { ledger: follower.channel_id(), assets }
    }
}

/// The follower's decision on a top-up proposal in `ledger` (ADR-0022 §4): a `Reserve` for us
/// only if our own TopUp asked for exactly it, for the leader only in an asset we accept; a
/// `Credit` only when the holdings at depth cover the ledger's total including the slot (never
/// before the deposit is on chain); a `CancelReserve` of our slot only when no deposit of ours
/// may be on its way and the holdings show none. `None` for other proposals.
pub(crate) fn decide_top_up(
    totals: &Totals,
    proposal: &Proposal,
    chain: &ChainView,
    ours: Option<&TopUp>,
    asset_accepted: &dyn Fn(&Address) -> bool,
) -> Option<Approval> {
    let ledger = totals.ledger;
    let asset = match *proposal {
        Proposal::Reserve { asset, .. } | Proposal::Credit { asset, .. } | Proposal::CancelReserve { asset, .. } => {
            asset
        }
        Proposal::Add { .. } | Proposal::Remove { .. } => return None,
    };
    let Some(totals) = totals.assets.iter().find(|t| t.asset == asset) else {
        return Some(Approval::Reject(format!("the ledger holds no asset {asset}")));
    };
    let ours = ours.filter(|t| t.asset == asset);
    let in_flight = ours.is_some_and(|t| t.deposit_in_flight());
    let active = ours.filter(|t| t.failure.is_none());
    let decision = match *proposal {
        Proposal::Reserve { side: Side::Follower, amount, .. } => match active {
            Some(t) if t.slot == (Slot { side: Side::Follower, amount }) => Approval::Approve,
            _ => Approval::Reject("we did not ask for this top-up".into()),
        },
        Proposal::Reserve { side: Side::Leader, .. } if !asset_accepted(&asset) => {
            Approval::Reject("the ledger's asset is not accepted".into())
        }
        Proposal::Reserve { .. } => Approval::Approve,
        Proposal::Credit { .. } => {
            let needed = totals.consensus.max(totals.latest);
            if chain.holdings(&ledger, asset) >= needed {
                Approval::Approve
            } else {
                Approval::Defer
            }
        }
        Proposal::CancelReserve { side: Side::Leader, .. } => Approval::Approve,
        Proposal::CancelReserve { side: Side::Follower, .. } => {
            if chain.holdings(&ledger, asset) > totals.base {
                Approval::Reject("the chain holds a deposit for our top-up slot".into())
            } else if active.is_some() || in_flight {
                // Our deposit may still land: decided once it did (refused) or failed for good.
                Approval::Defer
            } else {
                Approval::Approve
            }
        }
        Proposal::Add { .. } | Proposal::Remove { .. } => return None,
    };
    Some(decision)
}

impl super::Party {
    /// Deposits `amount` more of the ledger's first asset (its only one, for a one-asset
    /// ledger) into open ledger `ledger`: [`Party::top_up_in`] of that asset.
    ///
    /// [`Party::top_up_in`]: super::Party::top_up_in
    pub fn top_up(&mut self, ledger: ChannelId, amount: U256) -> Result<(ObjectiveId, super::Effects), PartyError> {
        let ledger = self.current_ledger(ledger);
        let channel = self.ledgers.get(&ledger).ok_or(PartyError::UnknownLedger(ledger))?;
        let asset = channel.consensus_outcome().asset();
        self.top_up_in(ledger, asset, amount)
    }

    /// Deposits `amount` more of `asset` into open ledger `ledger`, for us (ADR-0022 §4):
    /// reserve a slot in that asset's exit, deposit, credit. Refused for an unknown or closing
    /// ledger, an asset the ledger does not hold, a zero amount, a total that would overflow,
    /// a slot pending in that asset or another top-up of this ledger running (one at a time
    /// per ledger), and above our policy's deposit limits for the asset.
    pub fn top_up_in(
        &mut self,
        ledger: ChannelId,
        asset: Address,
        amount: U256,
    ) -> Result<(ObjectiveId, super::Effects), PartyError> {
        let ledger = self.current_ledger(ledger);
        let channel = self.ledgers.get(&ledger).ok_or(PartyError::UnknownLedger(ledger))?;
        if self.closing.contains(&ledger) {
            return Err(PartyError::LedgerClosing(ledger));
        }
        if self.migrating(&ledger) {
            return Err(PartyError::ObjectiveExists(ObjectiveId::Withdraw(ledger)));
        }
        let me = match channel {
            ConsensusChannel::Leader(_) => Side::Leader,
            ConsensusChannel::Follower(_) => Side::Follower,
        };
        let peer = self.peers.get(&ledger).copied().ok_or(PartyError::UnknownLedger(ledger))?;
        let outcome = self.check_top_up(channel, asset, amount)?;
        let limits = self.policy.limits(asset);
        let mine = match me {
            Side::Leader => outcome.leader().amount,
            Side::Follower => outcome.follower().amount,
        };
        if limits.max_deposit_per_ledger.is_some_and(|max| mine.checked_add(amount).is_none_or(|t| t > max)) {
            return Err(PartyError::Policy(format!("a top-up of {amount} passes the per-ledger deposit limit")));
        }
        if let Some(max) = limits.max_total_deposit {
            let total = self.deposits_held(asset).checked_add(amount);
            if total.is_none_or(|t| t > max) {
                return Err(PartyError::Policy(format!("a top-up of {amount} passes the total deposit limit {max}")));
            }
        }
        let objective = TopUp::new(ledger, asset, me, peer, me, amount);
        self.forget_finished_top_up(ledger)?;
        self.start(super::Objective::TopUp(objective))
    }

    /// What both a top-up request of ours and one of our follower must pass.
    /// The asset's consensus outcome.
    fn check_top_up<'c>(
        &self,
        channel: &'c ConsensusChannel,
        asset: Address,
        amount: U256,
    ) -> Result<&'c AssetOutcome, PartyError> {
        if amount.is_zero() {
            return Err(PartyError::BadRequest("a top-up of zero".into()));
        }
        let unknown = || PartyError::BadRequest(format!("the ledger holds no asset {asset}"));
        let consensus = channel.consensus_outcome().exit(asset).ok_or_else(unknown)?;
        let latest = channel.latest_outcome().exit(asset).ok_or_else(unknown)?;
        if consensus.slot().is_some() || latest.slot().is_some() {
            return Err(PartyError::TopUpPending);
        }
        if latest.total().and_then(|t| t.checked_add(amount)).is_none() {
            return Err(PartyError::BadRequest("the ledger's total would overflow 256 bits".into()));
        }
        Ok(consensus)
    }

    /// Whether a TopUp of `ledger` is running (a withdrawal waits for it: ADR-0022 §5 wants no
    /// slot in a ledger that migrates).
    pub(crate) fn topping_up(&self, ledger: &ChannelId) -> bool {
        self.objectives.get(&ObjectiveId::TopUp(*ledger)).is_some_and(|e| !e.done && e.objective.failure().is_none())
    }

    /// A finished (completed or failed) TopUp of `ledger` makes room for the next one; a
    /// running one refuses it.
    fn forget_finished_top_up(&mut self, ledger: ChannelId) -> Result<(), PartyError> {
        let id = ObjectiveId::TopUp(ledger);
        match self.objectives.get(&id) {
            Some(e) if !e.done && e.objective.failure().is_none() => Err(PartyError::ObjectiveExists(id)),
            Some(_) => {
                self.objectives.remove(&id);
                self.touch(super::StateKey::Objective(id));
                Ok(())
            }
            None => Ok(()),
        }
    }

    /// Our follower asks for a top-up slot: we (the leader) start the TopUp that reserves and
    /// later credits it. A repeat of the request of a running TopUp changes nothing; a
    /// request we refuse is declined, so that the follower does not wait for it.
    pub(crate) fn receive_top_up_request(
        &mut self,
        from: Address,
        ledger: ChannelId,
        asset: Option<Address>,
        amount: U256,
    ) -> Result<super::Effects, PartyError> {
        if self.peers.get(&ledger) != Some(&from) {
            return Err(PartyError::UnexpectedSender(from));
        }
        let first = self.ledgers.get(&ledger).map(|c| c.consensus_outcome().asset());
        let asset = asset.or(first).unwrap_or_default();
        let id = ObjectiveId::TopUp(ledger);
        if let Some(super::Objective::TopUp(t)) = self.objectives.get(&id).filter(|e| !e.done).map(|e| &e.objective) {
            if t.failure.is_none() && t.asset == asset && t.slot == (Slot { side: Side::Follower, amount }) {
                return Ok(super::Effects::default());
            }
        }
        let channel = self.ledgers.get(&ledger).ok_or(PartyError::UnknownLedger(ledger))?;
        let refusal = match channel {
            ConsensusChannel::Follower(_) => Some(PartyError::UnexpectedSender(from)),
            ConsensusChannel::Leader(_) if self.closing.contains(&ledger) => Some(PartyError::LedgerClosing(ledger)),
            ConsensusChannel::Leader(_) if self.migrating(&ledger) => {
                Some(PartyError::ObjectiveExists(ObjectiveId::Withdraw(ledger)))
            }
            ConsensusChannel::Leader(_) => {
                if self.policy.assets.as_ref().is_some_and(|a| !a.contains(&asset)) {
                    Some(PartyError::Policy(format!("asset {asset} is not accepted")))
                } else {
                    self.check_top_up(channel, asset, amount).err()
                }
            }
        };
        if let Some(e) = refusal {
            return Ok(self.decline_to(id, vec![from], &e.to_string()));
        }
        let objective = TopUp::new(ledger, asset, Side::Leader, from, Side::Follower, amount);
        if let Err(e) = self.forget_finished_top_up(ledger) {
            return Ok(self.decline_to(id, vec![from], &e.to_string()));
        }
        Ok(self.start(super::Objective::TopUp(objective))?.1)
    }
}
