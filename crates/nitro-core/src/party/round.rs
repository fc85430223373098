//! A signature round: every participant signs one state and sends its signature to the others.

use super::{Effects, Envelope, ObjectiveId, PartyError, Payload, TransactionRequest};
use crate::{
    chain::ChainTransaction, Address, ChannelError, ConsensusChannel, SignedState, SignedTurn, SigningKey, State, Step,
    TurnNum,
};

/// One state that every participant must sign (a prefund, postfund or final state).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct SignatureRound {
    pub state: SignedState,
}

impl SignatureRound {
    pub fn new(state: State) -> Self {
        Self { state: SignedState::new(state) }
    }

    /// For a ledger's final state, before we sign it: its turn is reserved in `ledger`
    /// (nothing proposed or countersigned there from then on). If the turn is no longer fresh
    /// for us — we signed or saw a proposal there since — the round restarts at the turn above
    /// the highest we know, with the state `at_turn` gives for it.
    pub fn reserve_final_turn(
        &mut self,
        ledger: &mut ConsensusChannel,
        at_turn: impl FnOnce(&ConsensusChannel, TurnNum) -> State,
    ) -> Result<Step, PartyError> {
        match ledger.reserve_final_turn(self.state.state().turn_num) {
            Ok(step) => Ok(step),
            Err(ChannelError::TurnNotFresh { highest, .. }) => {
                let fresh = highest.checked_add(TurnNum::from(1)).ok_or(PartyError::TurnOverflow)?;
                *self = Self::new(at_turn(ledger, fresh));
                Ok(ledger.reserve_final_turn(fresh)?)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// `concludeAndTransferAllAssets` of this (final) state, asked for by `objective`; `None`
    /// while the state is not one the contract would take (not final or not fully signed).
    pub fn conclusion(&self, objective: ObjectiveId) -> Option<TransactionRequest> {
        let transaction = ChainTransaction::conclude_and_transfer_all_assets(self.state.clone()).ok()?;
        Some(TransactionRequest { objective: Some(objective), transaction, deadline: None })
    }

    pub fn is_complete(&self) -> bool {
        self.state.is_fully_signed()
    }

    pub fn signed_by(&self, index: usize) -> bool {
        self.state.signature(index).is_some()
    }

    /// Signs (once) and sends the state with every signature held to the other participants;
    /// the signature is reported in `effects.signed`.
    pub fn sign_and_send(&mut self, key: &SigningKey, objective: ObjectiveId, effects: &mut Effects) {
        let me = key.address();
        let Some(index) = self.state.state().participants.iter().position(|p| *p == me) else { return };
        if self.signed_by(index) {
            return;
        }
        // `key` is a participant, so signing cannot fail.
        if self.state.sign(key).is_ok() {
            effects.signed.push(SignedTurn {
                channel_id: self.state.channel_id(),
                turn_num: self.state.state().turn_num,
                state_hash: self.state.hash(),
            });
            effects.messages.extend(self.envelopes(me, objective, |_| true));
        }
    }

    /// Merges a participant's copy of the same state; returns our (merged) copy.
    pub fn merge(&mut self, incoming: &SignedState) -> Result<SignedState, PartyError> {
        self.state.merge(incoming).map_err(|_| PartyError::UnexpectedState)?;
        Ok(self.state.clone())
    }

    /// What to send again: the state to every participant whose signature is missing, if we
    /// have signed it.
    pub fn resend(&self, me: Address, objective: ObjectiveId) -> Vec<Envelope> {
        let Some(index) = self.state.state().participants.iter().position(|p| *p == me) else { return Vec::new() };
        if !self.signed_by(index) || self.is_complete() {
            return Vec::new();
        }
        self.envelopes(me, objective, |i| !self.signed_by(i))
    }

    fn envelopes(&self, me: Address, objective: ObjectiveId, include: impl Fn(usize) -> bool) -> Vec<Envelope> {
        self.state
            .state()
            .participants
            .iter()
            .enumerate()
            .filter(|(i, p)| **p != me && include(*i))
            .map(|(_, p)| Envelope { to: *p, payload: Payload::State { objective, state: self.state.clone() } })
            .collect()
    }
}
