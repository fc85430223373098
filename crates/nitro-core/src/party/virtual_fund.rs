//! VirtualFund: fund a virtual channel V = [Alice, intermediaries…, Bob] from the ledgers
//! along its path. Prefund of V signed by all → in each ledger L(p_j, p_j+1) a guarantee
//! {target V, left p_j, right p_j+1, amount a + b, left deposit a} → locked in every ledger
//! of this party (ADR-0014) → postfund of V signed by all.

use super::{
    objective::{Crank, Ctx, View},
    round::SignatureRound,
    Envelope, ObjectiveId, Party, PartyError, WaitingFor,
};
use crate::{
    destination_of, Address, AllocationType, Approval, AssetMetadata, ChannelId, ConsensusChannel, Guarantee, Proposal,
    SignedState, State, U256,
};

/// One of this party's ledgers on V's path, and the guarantee it must hold for V.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct PathLedger {
    pub channel_id: ChannelId,
    pub expected: Proposal,
    pub proposed: bool,
    /// How often the follower rejected our proposal here.
    pub rejections: u32,
}

/// How often a leader proposes a guarantee the follower keeps rejecting before the objective
/// fails (a rejection for "not known yet" is worth repeating; a disagreement is not).
pub(crate) const MAX_REJECTIONS: u32 = 3;

/// The parts of a virtual channel this crate needs: its participants, asset and the two
/// end parties' amounts.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtualChannel {
    /// V's state at turn 0 (participants, app, outcome).
    pub prefund: State,
    /// The asset.
    pub asset: Address,
    /// `[a, b]`: what the first (payer) and last (payee) participants put in.
    pub amounts: [U256; 2],
}

impl VirtualChannel {
    /// Reads V from its prefund state: at least three participants, the VirtualPaymentApp,
    /// one asset with exactly the two end parties' allocations.
    pub fn from_prefund(state: &State, virtual_payment_app: Address) -> Result<Self, PartyError> {
        let invalid = |why: &str| PartyError::InvalidState(format!("prefund of a virtual channel: {why}"));
        let n = state.participants.len();
        if n < 3 {
            return Err(invalid("at least three participants (an intermediary)"));
        }
        if state.app_definition != virtual_payment_app {
            return Err(invalid("the app must be the VirtualPaymentApp"));
        }
        if state.turn_num != crate::U48::ZERO || state.is_final {
            return Err(invalid("turn 0, not final"));
        }
        let [exit] = state.outcome.0.as_slice() else { return Err(invalid("one asset")) };
        if exit.asset_metadata != AssetMetadata::default() {
            return Err(invalid("default asset metadata"));
        }
        if !exit.asset.is_zero() {
            // The deployed VirtualPaymentApp checks a redemption with "only native asset
            // allowed": a payee could never enforce its vouchers in a token on chain (ADR-0022).
            return Err(invalid(
                "ETH only: the VirtualPaymentApp redeems vouchers only in the native asset, so a payee could not                  enforce a payment in a token on chain",
            ));
        }
        let [first, last] = exit.allocations.as_slice() else { return Err(invalid("two allocations")) };
        for (a, p) in [(first, state.participants[0]), (last, state.participants[n - 1])] {
            if a.destination != destination_of(p)
                || a.allocation_type != AllocationType::SIMPLE
                || !a.metadata.is_empty()
            {
                return Err(invalid("simple allocations paying the first and last participants"));
            }
        }
        first.amount.checked_add(last.amount).ok_or_else(|| invalid("amounts overflow"))?;
        Ok(Self { prefund: state.clone(), asset: exit.asset, amounts: [first.amount, last.amount] })
    }

    /// The guarantee every ledger on the path holds for V, given its left party's index in V.
    pub fn guarantee(&self, left_index: usize) -> Result<Proposal, PartyError> {
        let p = &self.prefund.participants;
        let target = self.prefund.channel_id();
        let amount = self.amounts[0] + self.amounts[1];
        let guarantee =
            Guarantee::new(target, amount, destination_of(p[left_index]), destination_of(p[left_index + 1]))
                .map_err(|e| PartyError::InvalidState(e.to_string()))?;
        Ok(Proposal::Add { guarantee, left_deposit: self.amounts[0], asset: self.asset })
    }
}

/// The VirtualFund objective of one participant of V.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtualFund {
    channel: VirtualChannel,
    channel_id: ChannelId,
    prefund: SignatureRound,
    postfund: SignatureRound,
    pub(crate) ledgers: Vec<PathLedger>,
    failure: Option<String>,
}

impl VirtualFund {
    pub(crate) fn new(prefund: &State, party: &Party) -> Result<Self, PartyError> {
        let channel = VirtualChannel::from_prefund(prefund, party.config.virtual_payment_app)?;
        let p = &prefund.participants;
        let i = p.iter().position(|x| *x == party.address()).ok_or(PartyError::NotAParticipant)?;
        let mut ledgers = Vec::new();
        for (neighbour, left_index) in
            [(i.checked_sub(1), i.wrapping_sub(1)), (Some(i + 1).filter(|j| *j < p.len()), i)]
        {
            let Some(j) = neighbour else { continue };
            let channel_id = *party.ledger_with.get(&p[j]).ok_or(PartyError::NoLedgerWith(p[j]))?;
            let ledger = party.ledgers.get(&channel_id).ok_or(PartyError::UnknownLedger(channel_id))?;
            if ledger.consensus_outcome().exit(channel.asset).is_none() {
                return Err(PartyError::InvalidState(format!("the ledger does not hold {}", channel.asset)));
            }
            ledgers.push(PathLedger {
                channel_id,
                expected: channel.guarantee(left_index)?,
                proposed: false,
                rejections: 0,
            });
        }
        let mut postfund = prefund.clone();
        postfund.turn_num = crate::U48::from(1);
        Ok(Self {
            channel_id: prefund.channel_id(),
            prefund: SignatureRound::new(prefund.clone()),
            postfund: SignatureRound::new(postfund),
            channel,
            ledgers,
            failure: None,
        })
    }

    /// The virtual channel.
    pub fn channel(&self) -> &VirtualChannel {
        &self.channel
    }

    /// V's prefund state (with the signatures held so far).
    pub fn prefund(&self) -> &SignedState {
        &self.prefund.state
    }

    /// V's postfund state (with the signatures held so far).
    pub fn postfund(&self) -> &SignedState {
        &self.postfund.state
    }
}

impl Crank for VirtualFund {
    fn id(&self) -> ObjectiveId {
        ObjectiveId::VirtualFund(self.channel_id)
    }

    fn receive_state(&mut self, state: &SignedState, _: Option<&ConsensusChannel>) -> Result<SignedState, PartyError> {
        match state.state().turn_num.to::<u64>() {
            0 => self.prefund.merge(state),
            1 => self.postfund.merge(state),
            _ => Err(PartyError::UnexpectedState),
        }
    }

    /// The follower's decision on `proposal` in `ledger`, if this objective is about it.
    fn decide(&self, ledger: ChannelId, proposal: &Proposal) -> Option<Approval> {
        let side = self.ledgers.iter().find(|l| l.channel_id == ledger)?;
        Some(if let Some(why) = &self.failure {
            Approval::Reject(format!("virtual channel {}: {why}", self.channel_id))
        } else if !self.prefund.is_complete() {
            Approval::Defer
        } else if side.expected == *proposal {
            Approval::Approve
        } else {
            Approval::Reject(format!("virtual channel {} expects another guarantee", self.channel_id))
        })
    }

    /// Returns true once V's postfund is signed by all.
    fn crank(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, PartyError> {
        if self.failure.is_some() {
            return Ok(false); // a failed objective proposes nothing more
        }
        let id = self.id();
        self.prefund.sign_and_send(ctx.key, id, ctx.effects);
        if !self.prefund.is_complete() {
            return Ok(false);
        }
        for side in self.ledgers.iter_mut() {
            let requested = ctx.is_requested(side.channel_id, self.channel_id);
            let Some(ConsensusChannel::Leader(leader)) = ctx.ledgers.get(&side.channel_id) else { continue };
            let (status, held) = (
                leader.guarantees().status(&self.channel_id),
                leader.latest_outcome().guarantee(&self.channel_id).is_some(),
            );
            // Proposed, but the follower rejected it (it may not have known V yet): again, a
            // few times; a follower that keeps refusing disagrees, and the objective fails.
            if side.proposed && status.is_none() && !requested {
                side.proposed = false;
                side.rejections += 1;
                if side.rejections > MAX_REJECTIONS {
                    let why = format!(
                        "ledger {}: the follower rejected the guarantee {} times",
                        side.channel_id, side.rejections
                    );
                    self.failure = Some(why.clone());
                    return Err(PartyError::InvalidState(why));
                }
            }
            if side.proposed {
                continue;
            }
            if held {
                side.proposed = true; // proposed before a restart, or by a retried crank
                continue;
            }
            // Coalesced with other changes of this ledger into one proposal by the party.
            ctx.request_change(side.channel_id, id, side.expected);
            side.proposed = true;
        }
        let locked =
            self.ledgers.iter().all(|s| ctx.ledgers.get(&s.channel_id).is_some_and(|l| l.is_locked(&self.channel_id)));
        if !locked {
            return Ok(false);
        }
        self.postfund.sign_and_send(ctx.key, id, ctx.effects);
        Ok(self.postfund.is_complete())
    }

    fn waiting_for(&self, view: &View<'_>) -> WaitingFor {
        let ledgers = view.ledgers;
        if let Some(f) = &self.failure {
            return WaitingFor::Failed(f.clone());
        }
        if !self.prefund.is_complete() {
            return WaitingFor::signatures("prefund", &self.prefund);
        }
        let unlocked: Vec<ChannelId> = self
            .ledgers
            .iter()
            .filter(|s| !ledgers.get(&s.channel_id).is_some_and(|l| l.is_locked(&self.channel_id)))
            .map(|s| s.channel_id)
            .collect();
        if !unlocked.is_empty() {
            return WaitingFor::GuaranteesLocked { ledgers: unlocked };
        }
        if !self.postfund.is_complete() {
            return WaitingFor::signatures("postfund", &self.postfund);
        }
        WaitingFor::Nothing
    }

    /// Our signatures on the prefund and postfund of V, to whoever lacks them.
    fn resync(&self, me: Address) -> Vec<Envelope> {
        let mut out = self.prefund.resend(me, self.id());
        out.extend(self.postfund.resend(me, self.id()));
        out
    }

    fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn fail_with(&mut self, why: &str) {
        self.failure.get_or_insert_with(|| why.to_owned());
    }

    /// Committed once a guarantee for V is proposed or held in one of our ledgers, or our
    /// postfund signature is out.
    fn has_committed(&self, view: &View<'_>) -> bool {
        let me = self.postfund.state.state().participants.iter().position(|p| *p == view.me);
        me.is_some_and(|i| self.postfund.signed_by(i))
            || self.ledgers.iter().any(|l| {
                view.ledgers.get(&l.channel_id).is_some_and(|c| {
                    c.guarantees().status(&self.channel_id).is_some()
                        || c.consensus_outcome().guarantee(&self.channel_id).is_some()
                })
            })
    }
}
