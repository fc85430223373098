//! The leader of a ledger: the only party that proposes.

use alloy_primitives::U256;

use super::{
    shared::{ledger_accessors, Ledger, FOLLOWER, LEADER},
    ChannelError, Countersignature, Guarantee, LedgerEvent, LedgerMessage, Proposal, Rejection, SignedProposal, Step,
    MAX_REASON_LEN,
};
use crate::{recover_signer, ChannelId, Destination, SignedState, SigningKey};

/// A ledger channel seen by its leader (`participants[0]`).
///
/// The leader applies each proposal to its latest proposed state, signs the result at the next
/// turn and queues it until the follower's countersignature arrives. It cannot countersign:
/// there is no such method on this type.
#[derive(Clone, Debug)]
pub struct LeaderChannel {
    key: SigningKey,
    ledger: Ledger,
}

impl LeaderChannel {
    /// The leader's view of the ledger whose latest consensus state is `signed` (signed by
    /// both participants); `key` must be the leader's.
    pub fn new(key: SigningKey, signed: &SignedState) -> Result<Self, ChannelError> {
        let ledger = Ledger::from_signed_state(signed)?;
        if ledger.participant(LEADER) != key.address() {
            return Err(ChannelError::WrongRole { key: key.address(), role: "leader" });
        }
        Ok(Self { key, ledger })
    }

    /// Rebuilds a channel from its initial state and the events it produced since.
    pub fn replay<'a>(
        key: SigningKey,
        initial: &SignedState,
        events: impl IntoIterator<Item = &'a LedgerEvent>,
    ) -> Result<Self, ChannelError> {
        let mut channel = Self::new(key, initial)?;
        for event in events {
            channel.ledger.apply_event(event)?;
        }
        Ok(channel)
    }

    /// Applies `proposal` to the latest proposed state, signs the result at the next turn and
    /// queues it. The step carries the proposal for the follower.
    pub fn propose(&mut self, proposal: Proposal) -> Result<Step, ChannelError> {
        let mut step = Step::default();
        let signed = self.sign_and_queue(proposal, &mut step.events)?;
        step.messages.push(LedgerMessage::Proposal(signed));
        Ok(step)
    }

    /// Proposes to lock `amount` for `target`: `left_deposit` from `left`, the rest from `right`.
    pub fn add_guarantee(
        &mut self,
        target: ChannelId,
        amount: U256,
        left: Destination,
        right: Destination,
        left_deposit: U256,
    ) -> Result<Step, ChannelError> {
        let guarantee = Guarantee::new(target, amount, left, right)?;
        self.propose(Proposal::Add { guarantee, left_deposit })
    }

    /// Proposes to release the guarantee for `target`: `left_amount` to its left party, the
    /// rest to its right party.
    pub fn remove_guarantee(&mut self, target: ChannelId, left_amount: U256) -> Result<Step, ChannelError> {
        self.propose(Proposal::Remove { target, left_amount })
    }

    fn sign_and_queue(
        &mut self,
        proposal: Proposal,
        events: &mut Vec<LedgerEvent>,
    ) -> Result<SignedProposal, ChannelError> {
        let turn_num = self.ledger.next_turn()?;
        self.ledger.apply_latest(&proposal)?;
        let state_hash = self.ledger.latest.state_hash(self.ledger.channel_id, turn_num);
        let signed = SignedProposal {
            channel_id: self.ledger.channel_id,
            proposal,
            turn_num,
            signature: self.key.sign(&state_hash),
        };
        self.ledger.enqueue(signed, state_hash, events);
        Ok(signed)
    }

    /// Takes the follower's countersignature on the state at some queued turn: the consensus
    /// moves there and every proposal up to it leaves the queue. A countersignature for a turn
    /// already in consensus is stale and ignored.
    pub fn receive_countersignature(&mut self, countersignature: &Countersignature) -> Result<Step, ChannelError> {
        let ledger = &mut self.ledger;
        ledger.check_channel(countersignature.channel_id)?;
        let turn = countersignature.turn_num;
        if turn <= ledger.consensus_turn {
            return Ok(Step::default());
        }
        let entry = ledger.queue.get(turn).ok_or(ChannelError::UnknownTurn { turn, latest: ledger.latest_turn() })?;
        let signer = recover_signer(&entry.state_hash, &countersignature.signature)?;
        let follower = ledger.participant(FOLLOWER);
        if signer != follower {
            return Err(ChannelError::WrongSigner { expected: follower, got: signer });
        }
        let mut step = Step::default();
        ledger.advance_consensus(turn, countersignature.signature, &mut step.events);
        Ok(step)
    }

    /// Takes the follower's refusal of the proposal at `rejection.turn_num`: that proposal is
    /// dropped and every later one is proposed again at new turns (those that no longer apply
    /// are dropped too, with a [`LedgerEvent::ProposalDropped`]).
    pub fn receive_rejection(&mut self, rejection: &Rejection) -> Result<Step, ChannelError> {
        let ledger = &self.ledger;
        ledger.check_channel(rejection.channel_id)?;
        if rejection.reason.len() > MAX_REASON_LEN {
            return Err(ChannelError::ReasonTooLong(rejection.reason.len()));
        }
        let turn = rejection.turn_num;
        let entry = match ledger.queue.get(turn) {
            Some(entry) if entry.state_hash == rejection.state_hash => entry,
            Some(_) => return Err(ChannelError::StaleRejection(turn)),
            None if turn <= ledger.consensus_turn => return Err(ChannelError::StaleRejection(turn)),
            None => return Err(ChannelError::UnknownTurn { turn, latest: ledger.latest_turn() }),
        };
        let hash = Rejection::signing_hash(ledger.channel_id, turn, entry.state_hash);
        let signer = recover_signer(&hash, &rejection.signature)?;
        let follower = ledger.participant(FOLLOWER);
        if signer != follower {
            return Err(ChannelError::WrongSigner { expected: follower, got: signer });
        }
        let mut step = Step::default();
        let mut dropped = self.ledger.truncate_from(turn).into_iter();
        if let Some(refused) = dropped.next() {
            step.events.push(LedgerEvent::ProposalRejected {
                rejection: rejection.clone(),
                proposal: refused.signed.proposal,
            });
        }
        for entry in dropped {
            let proposal = entry.signed.proposal;
            match self.sign_and_queue(proposal, &mut step.events) {
                Ok(signed) => step.messages.push(LedgerMessage::Proposal(signed)),
                Err(e) => step.events.push(LedgerEvent::ProposalDropped { proposal, reason: e.to_string() }),
            }
        }
        Ok(step)
    }

    /// Dispatches a message from the follower.
    pub fn receive(&mut self, message: &LedgerMessage) -> Result<Step, ChannelError> {
        match message {
            LedgerMessage::Countersignature(c) => self.receive_countersignature(c),
            LedgerMessage::Rejection(r) => self.receive_rejection(r),
            LedgerMessage::Proposal(_) => Err(ChannelError::UnexpectedMessage("a leader receives no proposals")),
        }
    }

    /// Every proposal not yet acknowledged, oldest first: what to send again after a loss.
    pub fn resend(&self) -> Vec<LedgerMessage> {
        self.ledger.queue.iter().map(|q| LedgerMessage::Proposal(q.signed)).collect()
    }

    ledger_accessors!();
}

impl PartialEq for LeaderChannel {
    fn eq(&self, other: &Self) -> bool {
        self.key.address() == other.key.address() && self.ledger == other.ledger
    }
}
