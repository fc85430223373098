//! The objectives as one kind of thing: the [`Crank`] trait each implements, the
//! [`Objective`] enum that holds any of them (dispatching in one place), and the [`Ctx`] an
//! objective sees of its party while it runs.

use std::collections::BTreeMap;

use super::{
    chain_view::ChainView, DirectDefund, DirectFund, Effects, Envelope, ForceClose, ObjectiveId, PartyError, TopUp,
    VirtualDefund, VirtualFund, WaitingFor, Withdraw,
};
use crate::{chain::ChainEvent, Address, Approval, ChannelId, ConsensusChannel, Proposal, SignedState, SigningKey};

/// What an objective sees of the party while it runs.
pub(crate) struct Ctx<'a> {
    pub key: &'a SigningKey,
    pub me: Address,
    pub ledgers: &'a mut BTreeMap<ChannelId, ConsensusChannel>,
    pub chain: &'a mut ChainView,
    pub effects: &'a mut Effects,
    /// Ledgers an objective opened in this crank (the party adopts them).
    pub opened: Vec<ConsensusChannel>,
    /// Ledgers an objective closed in this crank (the party forgets them).
    pub closed: Vec<ChannelId>,
    /// Channels an objective needs taken to chain (the party starts a ForceClose for each).
    pub force_close: Vec<ChannelId>,
    /// Changes objectives asked of the ledgers this party leads, not proposed yet: the party
    /// proposes them together, one batch per ledger (ADR-0018).
    pub changes: &'a mut BTreeMap<ChannelId, Vec<(ObjectiveId, Proposal)>>,
    /// Ledgers an objective migrated in this crank (old, successor): the party follows them.
    pub migrated: Vec<(ChannelId, ChannelId)>,
}

impl Ctx<'_> {
    /// Asks for `proposal` in ledger `ledger` (which this party leads), on behalf of
    /// objective `by`; it goes out with the ledger's other changes of the moment.
    pub fn request_change(&mut self, ledger: ChannelId, by: ObjectiveId, proposal: Proposal) {
        self.changes.entry(ledger).or_default().push((by, proposal));
    }

    /// A summary of everything objectives produced so far in this crank: an objective whose
    /// crank changes it changed state worth storing.
    pub fn footprint(&self) -> (usize, usize, usize, usize, usize, usize) {
        let e = &self.effects;
        let changes = self.changes.values().map(Vec::len).sum();
        (e.messages.len(), e.transactions.len(), e.events.len(), e.signed.len(), changes, self.force_close.len())
    }

    /// Whether a change for `target` in `ledger` is asked for and not proposed yet.
    pub fn is_requested(&self, ledger: ChannelId, target: ChannelId) -> bool {
        self.changes.get(&ledger).is_some_and(|c| c.iter().any(|(_, p)| p.target() == Some(target)))
    }
}

/// What the party reads when it reports on an objective.
pub(crate) struct View<'a> {
    pub ledgers: &'a BTreeMap<ChannelId, ConsensusChannel>,
    pub chain: &'a ChainView,
    /// The party's address.
    pub me: Address,
}

/// The steps every objective takes: the party drives each through this trait, never by
/// matching on its kind.
pub(crate) trait Crank {
    /// Which objective this is.
    fn id(&self) -> ObjectiveId;

    /// Takes a peer's copy of a state of one of the objective's signature rounds; returns our
    /// copy (to answer with when it holds more).
    fn receive_state(
        &mut self,
        state: &SignedState,
        ledger: Option<&ConsensusChannel>,
    ) -> Result<SignedState, PartyError>;

    /// Moves as far as the party's state allows; `Ok(true)` once complete.
    fn crank(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, PartyError>;

    /// On the timer: progress that waits for time rather than for a message (a failed or
    /// long-unconfirmed transaction asked for again). Sending messages again is not the
    /// timer's business: the transport delivers them, and [`Crank::resync`] answers a peer
    /// that reconnects.
    fn on_timer(&mut self, _ctx: &mut Ctx<'_>) {}

    /// What a peer may lack of this objective's signature rounds, addressed to every
    /// participant whose signature we miss (the party keeps those to the reconnected peer).
    fn resync(&self, _me: Address) -> Vec<Envelope> {
        Vec::new()
    }

    /// A transaction the objective asked for failed.
    fn transaction_failed(&mut self) {}

    /// A transaction the objective asked for was refused for good before anything was sent:
    /// by default the objective stops with `why`.
    fn transaction_refused(&mut self, why: &str) {
        self.fail_with(why);
    }

    /// The follower's decision on `proposal` in `ledger`, if this objective is about it.
    fn decide(&self, _ledger: ChannelId, _proposal: &Proposal) -> Option<Approval> {
        None
    }

    /// What the objective waits for.
    fn waiting_for(&self, view: &View<'_>) -> WaitingFor;

    /// An adjudicator event about one of the party's channels.
    fn on_chain_event(&mut self, _event: &ChainEvent, _chain: &ChainView) {}

    /// Why the objective stopped for good, if it did.
    fn failure(&self) -> Option<&str>;

    /// Stops the objective for good with `why` (cancelled, declined by a peer, or taken over
    /// by a ForceClose): it proposes, signs and submits nothing more.
    fn fail_with(&mut self, why: &str);

    /// Whether the objective has committed anything that cannot be taken back by stopping it
    /// (funds deposited or locked, a state signed that moves funds): then it cannot be
    /// cancelled.
    fn has_committed(&self, view: &View<'_>) -> bool;
}

/// An objective of any kind.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Objective {
    /// Opening a ledger.
    DirectFund(DirectFund),
    /// Closing a ledger.
    DirectDefund(DirectDefund),
    /// Funding a virtual channel.
    VirtualFund(VirtualFund),
    /// Closing a virtual channel.
    VirtualDefund(VirtualDefund),
    /// Taking a channel to chain alone.
    ForceClose(ForceClose),
    /// Depositing more into an open ledger.
    TopUp(TopUp),
    /// Withdrawing part of a ledger into a successor ledger.
    Withdraw(Withdraw),
}

/// Calls `$call` on whichever objective `$self` holds: the one place that matches on kinds.
macro_rules! dispatch {
    ($self:expr, $o:ident => $call:expr) => {
        match $self {
            Objective::DirectFund($o) => $call,
            Objective::DirectDefund($o) => $call,
            Objective::VirtualFund($o) => $call,
            Objective::VirtualDefund($o) => $call,
            Objective::ForceClose($o) => $call,
            Objective::TopUp($o) => $call,
            Objective::Withdraw($o) => $call,
        }
    };
}

impl Crank for Objective {
    fn id(&self) -> ObjectiveId {
        dispatch!(self, o => o.id())
    }

    fn receive_state(
        &mut self,
        state: &SignedState,
        ledger: Option<&ConsensusChannel>,
    ) -> Result<SignedState, PartyError> {
        dispatch!(self, o => o.receive_state(state, ledger))
    }

    fn crank(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, PartyError> {
        dispatch!(self, o => o.crank(ctx))
    }

    fn on_timer(&mut self, ctx: &mut Ctx<'_>) {
        dispatch!(self, o => o.on_timer(ctx))
    }

    fn resync(&self, me: Address) -> Vec<Envelope> {
        dispatch!(self, o => o.resync(me))
    }

    fn transaction_failed(&mut self) {
        dispatch!(self, o => o.transaction_failed())
    }

    fn transaction_refused(&mut self, why: &str) {
        dispatch!(self, o => o.transaction_refused(why))
    }

    fn decide(&self, ledger: ChannelId, proposal: &Proposal) -> Option<Approval> {
        dispatch!(self, o => o.decide(ledger, proposal))
    }

    fn waiting_for(&self, view: &View<'_>) -> WaitingFor {
        dispatch!(self, o => o.waiting_for(view))
    }

    fn on_chain_event(&mut self, event: &ChainEvent, chain: &ChainView) {
        dispatch!(self, o => Crank::on_chain_event(o, event, chain))
    }

    fn failure(&self) -> Option<&str> {
        dispatch!(self, o => o.failure())
    }

    fn fail_with(&mut self, why: &str) {
        dispatch!(self, o => o.fail_with(why))
    }

    fn has_committed(&self, view: &View<'_>) -> bool {
        dispatch!(self, o => o.has_committed(view))
    }
}

impl Objective {
    /// Ledger `from` was replaced by `to` (a withdrawal): the virtual channels this objective
    /// funds or defunds through `from` now go through `to`, whose consensus state carries
    /// their guarantees byte for byte.
    pub(crate) fn follow_successor(&mut self, from: ChannelId, to: ChannelId) {
        let ledgers = match self {
            Objective::VirtualFund(v) => &mut v.ledgers,
            Objective::VirtualDefund(v) => &mut v.ledgers,
            _ => return,
        };
        for l in ledgers.iter_mut().filter(|l| l.channel_id == from) {
            l.channel_id = to;
        }
    }
}
