//! The counterparty policy: what this party agrees to before it signs or deposits anything
//! for a peer's objective — who may open a ledger with it, how much it puts in, which asset,
//! which challenge duration, in which deposit order, and, as an intermediary, how much it
//! locks per virtual channel and per counterparty. A refusal is a [`PartyError::Policy`]
//! here and a [`Payload::Decline`](super::Payload::Decline) to the peer, so that nothing waits
//! forever; an objective a peer declines, or the operator cancels before it committed
//! anything, fails with the reason.

use std::collections::{BTreeMap, BTreeSet};

use super::{
    objective::Crank, virtual_fund::VirtualFund, DirectFund, Effects, Envelope, Objective, ObjectiveId, Party,
    PartyError, PartyEvent, Payload,
};
use crate::{destination_of, Address, State, U256};

/// What a party agrees to.
///
/// [`PartyPolicy::default`] agrees to everything (a library default for tests and for callers
/// that decide elsewhere); a node builds its policy from its configuration, whose defaults are
/// strict (`docs/node.md`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct PartyPolicy {
    /// Force-close a ledger by itself when its counterparty has left us waiting (proposals
    /// unanswered, a round unsigned, a funding unfinished after our deposit) this many
    /// seconds. `None`: never by itself.
    pub auto_force_close_after: Option<u64>,
    /// Who may open a ledger with us: `None` anyone (a hub, within the limits below);
    /// `Some(peers)` only these.
    pub ledger_peers: Option<BTreeSet<Address>>,
    /// Peers we know (configured): a stranger must put its deposit on chain before ours.
    pub known_peers: BTreeSet<Address>,
    /// The most we deposit into one ledger a peer opens (ETH; tokens: [`Self::token_limits`]).
    pub max_deposit_per_ledger: Option<U256>,
    /// The most we hold in all our ledgers and fundings together (our balances, as
    /// deposited), counting the new one.
    pub max_total_deposit: Option<U256>,
    /// Challenge durations we accept for channels peers open, in seconds, inclusive.
    pub challenge_duration: Option<(u64, u64)>,
    /// Assets we accept (`None`: any).
    pub assets: Option<BTreeSet<Address>>,
    /// The largest virtual channel (both deposits) we help fund as an intermediary or payee.
    pub max_virtual_amount: Option<U256>,
    /// The most we lock in guarantees in the ledger with any one counterparty, counting the
    /// new one.
    pub max_locked_per_counterparty: Option<U256>,
    /// The limits of each ERC-20 token, in its smallest unit (the four fields above are the
    /// limits of ETH). A token accepted by [`Self::assets`] without an entry here has none.
    pub token_limits: BTreeMap<Address, AssetLimits>,
}

/// The limits of one asset, in its smallest unit (`None`: no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AssetLimits {
    /// The most we deposit into one ledger a peer opens.
    pub max_deposit_per_ledger: Option<U256>,
    /// The most we hold in all our ledgers of the asset together, counting the new one.
    pub max_total_deposit: Option<U256>,
    /// The largest virtual channel in the asset we help fund as an intermediary or payee.
    pub max_virtual_amount: Option<U256>,
    /// The most of the asset we lock in guarantees in the ledger with one counterparty.
    pub max_locked_per_counterparty: Option<U256>,
}

impl PartyPolicy {
    /// The limits of `asset`: the top-level fields for ETH, [`Self::token_limits`] for a token.
    pub fn limits(&self, asset: Address) -> AssetLimits {
        if asset.is_zero() {
            return AssetLimits {
                max_deposit_per_ledger: self.max_deposit_per_ledger,
                max_total_deposit: self.max_total_deposit,
                max_virtual_amount: self.max_virtual_amount,
                max_locked_per_counterparty: self.max_locked_per_counterparty,
            };
        }
        self.token_limits.get(&asset).copied().unwrap_or_default()
    }
}

fn refuse(why: String) -> Result<(), PartyError> {
    Err(PartyError::Policy(why))
}

impl Party {
    /// Checks a peer's ledger opening against the policy, before we sign anything.
    pub(crate) fn admit_ledger(&self, state: &State, funding: &DirectFund) -> Result<(), PartyError> {
        let p = &self.policy;
        let me = self.address();
        let Some(peer) = state.participants.iter().copied().find(|a| *a != me) else {
            return Err(PartyError::NotAParticipant);
        };
        if p.ledger_peers.as_ref().is_some_and(|allowed| !allowed.contains(&peer)) {
            return refuse(format!("{peer} is not a peer this node opens ledgers with"));
        }
        for asset in funding.assets() {
            if p.assets.as_ref().is_some_and(|assets| !assets.contains(&asset)) {
                return refuse(format!("asset {asset} is not accepted"));
            }
        }
        let duration = state.challenge_duration.to::<u64>();
        if let Some((min, max)) = p.challenge_duration {
            if duration < min || duration > max {
                return refuse(format!("challenge duration {duration} s is outside [{min}, {max}] s"));
            }
        }
        let we_deposit_first = state.participants.first() == Some(&me);
        for asset in funding.assets() {
            let [ours, theirs] = funding.amounts_mine_first(asset);
            let limits = p.limits(asset);
            if limits.max_deposit_per_ledger.is_some_and(|max| ours > max) {
                return refuse(format!("our deposit {ours} is above the per-ledger limit (asset {asset})"));
            }
            if let Some(max) = limits.max_total_deposit {
                let total = self.deposits_held(asset).checked_add(ours);
                if total.is_none_or(|t| t > max) {
                    return refuse(format!("our deposits would pass the total limit {max} (asset {asset})"));
                }
            }
            if !p.known_peers.contains(&peer) && we_deposit_first && !theirs.is_zero() {
                return refuse(format!(
                    "{peer} is a stranger: its deposit goes on chain before ours (make it the leader)"
                ));
            }
        }
        Ok(())
    }

    /// What we hold of `asset` in our ledgers (our consensus balances plus our guarantee
    /// shares) and have committed to fundings in progress.
    pub(crate) fn deposits_held(&self, asset: Address) -> U256 {
        let me = destination_of(self.address());
        let mut total = U256::ZERO;
        for o in self.ledgers.values().filter_map(|l| l.consensus_outcome().exit(asset)) {
            let balance = if o.leader().destination == me { o.leader().amount } else { o.follower().amount };
            let locked = o.guarantees().map(|g| g.amount()).fold(U256::ZERO, |a, b| a.saturating_add(b));
            // A top-up slot of ours counts from its reservation (ADR-0022 §4).
            let side = if o.leader().destination == me { crate::Side::Leader } else { crate::Side::Follower };
            let slot = o.slot().filter(|s| s.side == side).map_or(U256::ZERO, |s| s.amount);
            total = total.saturating_add(balance).saturating_add(locked).saturating_add(slot);
        }
        for e in self.objectives.values().filter(|e| !e.done) {
            if let Objective::DirectFund(d) = &e.objective {
                total = total.saturating_add(d.amounts_mine_first(asset)[0]);
            }
        }
        total
    }

    /// Checks a peer's virtual channel against the policy (as an intermediary or the payee),
    /// and that our ledgers can carry our share of it, before we sign anything.
    pub(crate) fn admit_virtual(&self, v: &VirtualFund) -> Result<(), PartyError> {
        let p = &self.policy;
        let c = v.channel();
        let amount = c.amounts[0].checked_add(c.amounts[1]).ok_or(PartyError::BadRequest("amounts overflow".into()))?;
        if p.assets.as_ref().is_some_and(|assets| !assets.contains(&c.asset)) {
            return refuse(format!("asset {} is not accepted", c.asset));
        }
        let limits = p.limits(c.asset);
        if limits.max_virtual_amount.is_some_and(|max| amount > max) {
            return refuse(format!("virtual channel of {amount} is above the limit"));
        }
        self.check_capacity(v)?;
        if let Some(max) = limits.max_locked_per_counterparty {
            for side in &v.ledgers {
                let Some(l) = self.ledgers.get(&side.channel_id) else { continue };
                let locked =
                    l.latest_outcome().guarantees().map(|g| g.amount()).fold(U256::ZERO, |a, b| a.saturating_add(b));
                if locked.checked_add(amount).is_none_or(|t| t > max) {
                    return refuse(format!(
                        "ledger {}: locked funds would pass the per-counterparty limit",
                        side.channel_id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Refuses a virtual channel whose guarantee our side of a ledger cannot cover now.
    pub(crate) fn check_capacity(&self, v: &VirtualFund) -> Result<(), PartyError> {
        let me = destination_of(self.address());
        for side in &v.ledgers {
            let Some(ledger) = self.ledgers.get(&side.channel_id) else { continue };
            let crate::Proposal::Add { guarantee, left_deposit, asset } = side.expected else { continue };
            let ours = if guarantee.left() == me { left_deposit } else { guarantee.amount() - left_deposit };
            let Some(o) = ledger.latest_outcome().exit(asset) else {
                return Err(PartyError::InvalidState(format!("ledger {} does not hold {asset}", side.channel_id)));
            };
            let balance = if o.leader().destination == me { o.leader().amount } else { o.follower().amount };
            if ours > balance {
                return Err(PartyError::InsufficientFunds {
                    ledger: side.channel_id,
                    needed: ours,
                    available: balance,
                });
            }
        }
        Ok(())
    }

    /// Cancels an objective that has committed nothing yet (no deposit, no guarantee, no
    /// signature that moves funds): it fails with "cancelled", and the other participants are
    /// told so they stop waiting. Anything further along is refused
    /// ([`PartyError::NotCancellable`]); a force close is the way out then.
    pub fn cancel(&mut self, id: ObjectiveId) -> Result<Effects, PartyError> {
        let view = self.view();
        let entry = self.objectives.get(&id).ok_or(PartyError::UnknownObjective(id))?;
        // A withdrawal whose successor signatures are out: the counterparty may have signed
        // the final state on them and refuses the old ledger from then on; only a force close
        // gets out (ADR-0022 §5).
        let withdrawing = matches!(&entry.objective, Objective::Withdraw(w) if w.signed_successor(view.me));
        if entry.done || withdrawing || entry.objective.has_committed(&view) {
            return Err(PartyError::NotCancellable(id));
        }
        let peers = self.participants_of(&entry.objective);
        let reason = "cancelled by its operator".to_owned();
        if let Some(entry) = self.objectives.get_mut(&id) {
            entry.objective.fail_with(&reason);
        }
        let mut effects = self.decline_to(id, peers, &reason);
        effects.events.push(PartyEvent::ObjectiveFailed { id, reason });
        self.note(&effects);
        Ok(effects)
    }

    /// The other participants of an objective's channel.
    pub(crate) fn participants_of(&self, objective: &Objective) -> Vec<Address> {
        let me = self.address();
        let all: Vec<Address> = match objective {
            Objective::DirectFund(d) => d.participants().to_vec(),
            Objective::VirtualFund(v) => v.channel().prefund.participants.clone(),
            Objective::TopUp(t) => vec![t.peer()],
            Objective::Withdraw(w) => w.final_state().state().participants.clone(),
            _ => Vec::new(),
        };
        all.into_iter().filter(|p| *p != me).collect()
    }

    /// A decline of objective `id` to each of `to`.
    pub(crate) fn decline_to(&self, id: ObjectiveId, to: Vec<Address>, reason: &str) -> Effects {
        let reason = crate::channel::bounded_reason(reason);
        let messages = to
            .into_iter()
            .map(|to| Envelope { to, payload: Payload::Decline { objective: id, reason: reason.clone() } })
            .collect();
        Effects { messages, ..Effects::default() }
    }

    /// A peer declined objective `id`: it fails with the reason, unless it committed
    /// something already (then only a force close gets out, and the decline is reported). A
    /// TopUp fails even with its slot reserved: a failed TopUp still settles the slot (credits
    /// it once funded, cancels it while unfunded), which is the way out.
    pub(crate) fn receive_decline(&mut self, from: Address, id: ObjectiveId, reason: &str) -> Effects {
        let view = self.view();
        let Some(entry) = self.objectives.get(&id) else { return Effects::default() };
        if entry.done || !self.participants_of(&entry.objective).contains(&from) {
            return Effects::default();
        }
        let why = format!("{from} declined: {}", crate::channel::bounded_reason(reason));
        if entry.objective.has_committed(&view) && !matches!(entry.objective, Objective::TopUp(_)) {
            return Effects { events: vec![PartyEvent::ObjectiveFailed { id, reason: why }], ..Effects::default() };
        }
        if let Some(entry) = self.objectives.get_mut(&id) {
            entry.objective.fail_with(&why);
        }
        Effects { events: vec![PartyEvent::ObjectiveFailed { id, reason: why }], ..Effects::default() }
    }
}
