//! VirtualDefund: close a virtual channel V. Final state of V signed by all → in each ledger
//! on the path `Remove {target V, left_amount = the first participant's final amount}` →
//! released in every ledger of this party.

use super::{
    objective::{Crank, Ctx, View},
    round::SignatureRound,
    virtual_fund::{PathLedger, VirtualChannel},
    Envelope, ObjectiveId, PartyError, WaitingFor,
};
use crate::{Address, Approval, ChannelId, ConsensusChannel, Proposal, SignedState, State, U256, U48};

/// The turn of V's final state: after the prefund (0), postfund (1) and the payee's
/// redemption turn (2, [`REDEMPTION_TURN`]), which the `VirtualPaymentApp` fixes and which a
/// payee may sign alone when it takes V to chain: a final state at turn 2 would be a second
/// state at that turn.
pub const VIRTUAL_FINAL_TURN: u64 = 3;

/// The turn of a `VirtualPaymentApp` redemption state (the app supports it, signed by the
/// payee alone, on top of the fully signed postfund).
pub const REDEMPTION_TURN: u64 = 2;

/// The turn of V's final state before the redemption turn existed (releases up to schema v1
/// of the node's store). Only a party replaying such a release's input log uses it
/// ([`super::Party::replay_legacy`]): it signed its final states there.
pub const LEGACY_VIRTUAL_FINAL_TURN: u64 = 2;

impl VirtualChannel {
    /// V's final state after the payer paid `paid` to the payee.
    pub fn final_state(&self, paid: U256) -> Result<State, PartyError> {
        self.final_state_at(paid, VIRTUAL_FINAL_TURN)
    }

    /// V's final state at `turn` after the payer paid `paid` to the payee.
    pub(crate) fn final_state_at(&self, paid: U256, turn: u64) -> Result<State, PartyError> {
        let a = self.amounts[0].checked_sub(paid).ok_or(PartyError::Overpaid { paid, available: self.amounts[0] })?;
        let b = self.amounts[1].checked_add(paid).ok_or(PartyError::Overpaid { paid, available: self.amounts[0] })?;
        let mut state = self.prefund.clone();
        state.outcome.0[0].allocations[0].amount = a;
        state.outcome.0[0].allocations[1].amount = b;
        state.turn_num = U48::from(turn);
        state.is_final = true;
        Ok(state)
    }

    /// The redemption state the payee signs to take V to chain with the payer's `voucher`:
    /// turn 2, the voucher as app data, the payer's allocation less the voucher's amount and
    /// the payee's allocation equal to it (what the `VirtualPaymentApp` requires; it assumes
    /// the payee put nothing in).
    pub fn redemption_state(&self, voucher: &crate::Voucher) -> Result<State, PartyError> {
        let a = self.amounts[0]
            .checked_sub(voucher.amount)
            .ok_or(PartyError::Overpaid { paid: voucher.amount, available: self.amounts[0] })?;
        let mut state = self.prefund.clone();
        state.outcome.0[0].allocations[0].amount = a;
        state.outcome.0[0].allocations[1].amount = voucher.amount;
        state.app_data = voucher.app_data();
        state.turn_num = U48::from(REDEMPTION_TURN);
        state.is_final = false;
        Ok(state)
    }

    /// What a proposed final state pays the payee beyond its deposit, if it is a final state
    /// of this channel (at `final_turn`) at all.
    pub fn paid_in(&self, state: &State, final_turn: u64) -> Option<U256> {
        let paid = self.amounts[0].checked_sub(state.outcome.0.first()?.allocations.first()?.amount)?;
        (self.final_state_at(paid, final_turn).ok()? == *state).then_some(paid)
    }
}

/// The VirtualDefund objective of one participant of V.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtualDefund {
    channel_id: ChannelId,
    final_round: SignatureRound,
    pub(crate) ledgers: Vec<PathLedger>,
    failure: Option<String>,
}

impl VirtualDefund {
    /// Defunds V with `final_state` over the ledgers V was funded through.
    pub(crate) fn new(final_state: State, funded_through: &[PathLedger]) -> Self {
        let left_amount = final_state.outcome.0[0].allocations[0].amount;
        let channel_id = final_state.channel_id();
        let ledgers = funded_through
            .iter()
            .map(|l| PathLedger {
                channel_id: l.channel_id,
                expected: Proposal::Remove { target: channel_id, left_amount },
                proposed: false,
                rejections: 0,
            })
            .collect();
        Self { channel_id, final_round: SignatureRound::new(final_state), ledgers, failure: None }
    }

    /// V's final state (with the signatures held so far).
    pub fn final_state(&self) -> &SignedState {
        &self.final_round.state
    }

    fn released(&self, ledgers: &std::collections::BTreeMap<ChannelId, ConsensusChannel>) -> Vec<bool> {
        self.ledgers
            .iter()
            .map(|s| {
                ledgers.get(&s.channel_id).is_none_or(|l| {
                    l.guarantees().status(&self.channel_id).is_none()
                        && l.consensus_outcome().guarantee(&self.channel_id).is_none()
                })
            })
            .collect()
    }
}

impl Crank for VirtualDefund {
    fn id(&self) -> ObjectiveId {
        ObjectiveId::VirtualDefund(self.channel_id)
    }

    fn receive_state(&mut self, state: &SignedState, _: Option<&ConsensusChannel>) -> Result<SignedState, PartyError> {
        self.final_round.merge(state)
    }

    fn decide(&self, ledger: ChannelId, proposal: &Proposal) -> Option<Approval> {
        let side = self.ledgers.iter().find(|l| l.channel_id == ledger)?;
        if proposal.target() != Some(self.channel_id) {
            return None;
        }
        Some(if !self.final_round.is_complete() {
            Approval::Defer
        } else if side.expected == *proposal {
            Approval::Approve
        } else {
            Approval::Reject(format!("virtual channel {} closes with another split", self.channel_id))
        })
    }

    /// Returns true once the guarantee for V is released in every ledger of this party.
    fn crank(&mut self, ctx: &mut Ctx<'_>) -> Result<bool, PartyError> {
        if self.failure.is_some() {
            return Ok(false); // a failed objective proposes nothing more
        }
        let id = self.id();
        self.final_round.sign_and_send(ctx.key, id, ctx.effects);
        if !self.final_round.is_complete() {
            return Ok(false);
        }
        for side in self.ledgers.iter_mut() {
            let requested = ctx.is_requested(side.channel_id, self.channel_id);
            let Some(ConsensusChannel::Leader(leader)) = ctx.ledgers.get(&side.channel_id) else { continue };
            let (status, held) = (
                leader.guarantees().status(&self.channel_id),
                leader.latest_outcome().guarantee(&self.channel_id).is_some(),
            );
            // Proposed, but the follower rejected it: the guarantee is merely locked again.
            // Again, a few times; then the objective fails (the parties disagree on the split
            // and the chain must settle it).
            if side.proposed && status == Some(crate::GuaranteeStatus::Locked) && !requested {
                side.proposed = false;
                side.rejections += 1;
                if side.rejections > super::virtual_fund::MAX_REJECTIONS {
                    let why = format!(
                        "ledger {}: the follower rejected the removal {} times",
                        side.channel_id, side.rejections
                    );
                    self.failure = Some(why.clone());
                    return Err(PartyError::InvalidState(why));
                }
            }
            if side.proposed {
                continue;
            }
            if !held {
                side.proposed = true; // already removed (a retried crank)
                continue;
            }
            ctx.request_change(side.channel_id, id, side.expected);
            side.proposed = true;
        }
        Ok(self.released(ctx.ledgers).iter().all(|r| *r))
    }

    fn waiting_for(&self, view: &View<'_>) -> WaitingFor {
        let ledgers = view.ledgers;
        if let Some(f) = &self.failure {
            return WaitingFor::Failed(f.clone());
        }
        if !self.final_round.is_complete() {
            return WaitingFor::signatures("final", &self.final_round);
        }
        let pending: Vec<ChannelId> = self
            .ledgers
            .iter()
            .zip(self.released(ledgers))
            .filter(|(_, released)| !released)
            .map(|(s, _)| s.channel_id)
            .collect();
        if pending.is_empty() {
            WaitingFor::Nothing
        } else {
            WaitingFor::GuaranteesReleased { ledgers: pending }
        }
    }

    /// Our signature on V's final state, to whoever lacks it.
    fn resync(&self, me: Address) -> Vec<Envelope> {
        self.final_round.resend(me, self.id())
    }

    fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    fn fail_with(&mut self, why: &str) {
        self.failure.get_or_insert_with(|| why.to_owned());
    }

    fn has_committed(&self, _: &View<'_>) -> bool {
        true // a final state of V is signed or about to be
    }
}
