//! The leader of a ledger: the only party that proposes.

use alloy_primitives::{Address, U256};

use super::{
    shared::{ledger_accessors, Ledger, LEADER},
    ChannelError, Countersignature, Guarantee, LedgerEvent, LedgerMessage, Proposal, Rejection, SignedProposal, Step,
};
use crate::{ChannelId, Destination, SignedState, SignedTurn, SigningKey, TurnNum};

/// A ledger channel seen by its leader (`participants[0]`).
///
/// The leader applies each proposal to its latest proposed state, signs the result at a
/// fresh turn — one above every turn it ever signed — and queues it until the follower's
/// countersignature arrives. It never signs two different states at one turn, across
/// rejections and restarts (the high-water mark is rebuilt by [`LeaderChannel::replay`]).
/// It cannot countersign: there is no such method on this type.
#[derive(Clone, Debug)]
pub struct LeaderChannel {
    key: SigningKey,
    ledger: Ledger,
    /// The highest turn of any state this leader signed on this ledger.
    highest_signed: TurnNum,
    /// The turn of the final state, once the ledger is closing.
    closing: Option<TurnNum>,
}

impl LeaderChannel {
    /// The leader's view of the ledger whose latest consensus state is `signed` (signed by
    /// both participants); `key` must be the leader's.
    pub fn new(key: SigningKey, signed: &SignedState) -> Result<Self, ChannelError> {
        let ledger = Ledger::from_signed_state(signed)?;
        if ledger.participant(LEADER) != key.address() {
            return Err(ChannelError::WrongRole { key: key.address(), role: "leader" });
        }
        let highest_signed = ledger.consensus_turn;
        Ok(Self { key, ledger, highest_signed, closing: None })
    }

    /// Rebuilds a channel from its initial state and the events it produced since, verifying
    /// every one (recomputed states, signatures): a corrupt or foreign log is a
    /// [`ChannelError::Replay`], and nothing is built from it.
    pub fn replay<'a>(
        key: SigningKey,
        initial: &SignedState,
        events: impl IntoIterator<Item = &'a LedgerEvent>,
    ) -> Result<Self, ChannelError> {
        let mut channel = Self::new(key, initial)?;
        for event in events {
            match event {
                LedgerEvent::ProposalQueued { signed, .. } if signed.turn_num <= channel.highest_signed => {
                    return Err(ChannelError::Replay(format!("turn {} signed twice in the log", signed.turn_num)));
                }
                LedgerEvent::ProposalQueued { .. } if channel.closing.is_some() => {
                    return Err(ChannelError::Replay("a proposal after the ledger began closing".into()));
                }
                LedgerEvent::Closing { turn } => channel.reserve_final_turn(*turn).map(|_| ())?,
                _ => {}
            }
            channel.ledger.replay_event(event)?;
            if let LedgerEvent::ProposalQueued { signed, .. } = event {
                channel.highest_signed = signed.turn_num;
            }
        }
        Ok(channel)
    }

    /// Applies `proposal` to the latest proposed state, signs the result at the next fresh
    /// turn and queues it. The step carries the proposal for the follower. Refused (nothing
    /// changes) if the change does not apply.
    pub fn propose(&mut self, proposal: Proposal) -> Result<Step, ChannelError> {
        let mut step = Step::default();
        let signed = self.sign_and_queue(vec![proposal], &mut step, false)?;
        step.messages.push(LedgerMessage::Proposal(signed));
        Ok(step)
    }

    /// Applies several changes, in order, as one new state: one signature, one
    /// countersignature (ADR-0018). Changes that do not apply (on the state with the earlier
    /// ones applied) are left out, each with a [`LedgerEvent::ProposalDropped`]; refused only
    /// when none applies (the first one's error) or `proposals` is empty. More than
    /// [`MAX_BATCH`](super::MAX_BATCH) changes go out as consecutive proposals.
    pub fn propose_batch(&mut self, proposals: Vec<Proposal>) -> Result<Step, ChannelError> {
        if proposals.is_empty() {
            return Err(ChannelError::BatchSize(0));
        }
        let mut step = Step::default();
        let mut first_error = None;
        for chunk in proposals.chunks(super::MAX_BATCH) {
            match self.sign_and_queue(chunk.to_vec(), &mut step, true) {
                Ok(signed) => step.messages.push(LedgerMessage::Proposal(signed)),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (step.messages.is_empty(), first_error) {
            (true, Some(e)) => Err(e),
            _ => Ok(step),
        }
    }

    /// Proposes to lock `amount` of ETH for `target`: `left_deposit` from `left`, the rest from
    /// `right` (see [`LeaderChannel::add_guarantee_in`] for another asset).
    pub fn add_guarantee(
        &mut self,
        target: ChannelId,
        amount: U256,
        left: Destination,
        right: Destination,
        left_deposit: U256,
    ) -> Result<Step, ChannelError> {
        self.add_guarantee_in(Address::ZERO, target, amount, left, right, left_deposit)
    }

    /// Proposes to lock `amount` of `asset` for `target` in that asset's exit: `left_deposit`
    /// from `left`, the rest from `right`.
    pub fn add_guarantee_in(
        &mut self,
        asset: Address,
        target: ChannelId,
        amount: U256,
        left: Destination,
        right: Destination,
        left_deposit: U256,
    ) -> Result<Step, ChannelError> {
        let guarantee = Guarantee::new(target, amount, left, right)?;
        self.propose(Proposal::Add { guarantee, left_deposit, asset })
    }

    /// Proposes to release the guarantee for `target`: `left_amount` to its left party, the
    /// rest to its right party.
    pub fn remove_guarantee(&mut self, target: ChannelId, left_amount: U256) -> Result<Step, ChannelError> {
        self.propose(Proposal::Remove { target, left_amount })
    }

    /// Applies `proposals` to the latest state (leaving out, if `lenient`, those that do not
    /// apply), signs the result at a fresh turn and queues it.
    fn sign_and_queue(
        &mut self,
        proposals: Vec<Proposal>,
        step: &mut Step,
        lenient: bool,
    ) -> Result<SignedProposal, ChannelError> {
        if let Some(turn) = self.closing {
            return Err(ChannelError::Closing(turn));
        }
        let turn_num = self.highest_signed.checked_add(TurnNum::from(1)).ok_or(ChannelError::TurnOverflow)?;
        let previous_turn = self.ledger.latest_turn();
        let mut applied = Vec::with_capacity(proposals.len());
        let mut undos = Vec::with_capacity(proposals.len());
        let mut dropped = Vec::new();
        let mut first_error = None;
        for proposal in proposals {
            match self.ledger.apply_batch(std::slice::from_ref(&proposal)) {
                Ok(undo) => {
                    applied.push(proposal);
                    undos.extend(undo);
                }
                Err((_, e)) if lenient => {
                    dropped.push(LedgerEvent::ProposalDropped { proposal, reason: e.to_string() });
                    first_error.get_or_insert(e);
                }
                Err((_, e)) => {
                    // Strict: undo what applied and refuse.
                    self.ledger.undo_batch(&undos);
                    return Err(e);
                }
            }
        }
        if applied.is_empty() {
            return Err(first_error.unwrap_or(ChannelError::BatchSize(0)));
        }
        step.events.extend(dropped);
        let channel_id = self.ledger.channel_id;
        let state_hash = self.ledger.latest.state_hash(channel_id, turn_num);
        let signed = SignedProposal {
            channel_id,
            proposals: applied,
            previous_turn,
            turn_num,
            signature: self.key.sign(&state_hash),
        };
        self.highest_signed = turn_num;
        step.signed.push(SignedTurn { channel_id, turn_num, state_hash });
        self.ledger.enqueue(signed.clone(), state_hash, &mut step.events);
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
        ledger.verify_countersignature(turn, &countersignature.signature)?;
        let mut step = Step::default();
        ledger.advance_consensus(turn, countersignature.signature, &mut step.events);
        Ok(step)
    }

    /// Takes the follower's refusal of the proposal at `rejection.turn_num`: that proposal is
    /// dropped and every later one is proposed again at fresh turns, above every turn signed
    /// so far — never at a turn signed before, since the follower holds our signature on the
    /// refused state and could complete it (those that no longer apply are dropped, with a
    /// [`LedgerEvent::ProposalDropped`]).
    pub fn receive_rejection(&mut self, rejection: &Rejection) -> Result<Step, ChannelError> {
        self.ledger.verify_rejection(rejection)?;
        let mut step = Step::default();
        let mut dropped = self.ledger.truncate_from(rejection.turn_num).into_iter();
        let mut again = Vec::new();
        if let Some(refused) = dropped.next() {
            let (no, yes): (Vec<_>, Vec<_>) =
                refused.signed.proposals.iter().enumerate().partition(|(i, _)| rejection.refuses(*i));
            step.events.push(LedgerEvent::ProposalRejected {
                rejection: rejection.clone(),
                refused: no.into_iter().map(|(_, p)| *p).collect(),
            });
            again.extend(yes.into_iter().map(|(_, p)| *p));
        }
        again.extend(dropped.flat_map(|entry| entry.signed.proposals));
        if !again.is_empty() {
            match self.propose_batch(again.clone()) {
                Ok(s) => step.extend(s),
                Err(e) => step.events.extend(
                    again.into_iter().map(|proposal| LedgerEvent::ProposalDropped { proposal, reason: e.to_string() }),
                ),
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
        self.ledger.queue.iter().map(|q| LedgerMessage::Proposal(q.signed.clone())).collect()
    }

    /// The highest turn of any state this leader signed on the ledger: every later signature
    /// goes above it.
    pub fn highest_signed(&self) -> TurnNum {
        self.highest_signed
    }

    /// Reserves `turn` for the ledger's final state, which the caller is about to sign: from
    /// now on nothing is proposed, and `turn` counts as signed. Idempotent for the turn already
    /// reserved; refused ([`ChannelError::TurnNotFresh`]) for a turn at or below one signed.
    pub fn reserve_final_turn(&mut self, turn: TurnNum) -> Result<Step, ChannelError> {
        if self.closing == Some(turn) {
            return Ok(Step::default());
        }
        if turn <= self.highest_signed {
            return Err(ChannelError::TurnNotFresh { turn, highest: self.highest_signed });
        }
        self.closing = Some(turn);
        self.highest_signed = turn;
        Ok(Step { events: vec![LedgerEvent::Closing { turn }], ..Step::default() })
    }

    /// The final state's turn, once the ledger is closing.
    pub fn closing(&self) -> Option<TurnNum> {
        self.closing
    }

    /// Loads a stored queued proposal (see [`super::LedgerRecord`]): verified as the
    /// follower would verify it.
    pub(crate) fn load_queued(&mut self, signed: &SignedProposal) -> Result<(), ChannelError> {
        let state_hash = self.ledger.verify_and_apply(signed, None)?;
        self.ledger.enqueue(signed.clone(), state_hash, &mut Vec::new());
        self.highest_signed = self.highest_signed.max(signed.turn_num);
        Ok(())
    }

    /// Loads the stored high-water mark and closing turn.
    pub(crate) fn load_marks(&mut self, highest_signed: TurnNum, closing: Option<TurnNum>) -> Result<(), ChannelError> {
        if highest_signed < self.highest_signed || closing.is_some_and(|t| t > highest_signed) {
            return Err(ChannelError::Replay("stored marks below what the ledger holds".into()));
        }
        self.highest_signed = highest_signed;
        self.closing = closing;
        Ok(())
    }

    ledger_accessors!();
}

impl PartialEq for LeaderChannel {
    fn eq(&self, other: &Self) -> bool {
        self.key.address() == other.key.address()
            && self.ledger == other.ledger
            && self.highest_signed == other.highest_signed
            && self.closing == other.closing
    }
}
