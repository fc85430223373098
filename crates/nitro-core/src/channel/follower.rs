//! The follower of a ledger: it checks the leader's proposals and countersigns the ones it
//! agrees to.

use std::collections::BTreeMap;

use super::{
    messages::bounded_reason,
    shared::{ledger_accessors, Ledger, FOLLOWER},
    ChannelError, Countersignature, LedgerEvent, LedgerMessage, Proposal, Rejection, SignedProposal, Step,
};
use crate::{SignedState, SignedTurn, SigningKey, TurnNum};

/// How many proposals beyond the latest one the follower buffers by default.
pub const DEFAULT_REORDER_CAPACITY: usize = 256;

/// A follower's decision on a pending proposal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Approval {
    /// Countersign it.
    Approve,
    /// Refuse it, with a reason for the leader.
    Reject(String),
    /// Not yet (e.g. the virtual channel it funds is not known yet); ask again later.
    Defer,
}

/// Decides which proposals a follower countersigns.
pub trait ApprovalPolicy {
    /// The decision on `proposal`, the oldest pending one.
    fn decide(&mut self, proposal: &Proposal) -> Approval;
}

impl<F: FnMut(&Proposal) -> Approval> ApprovalPolicy for F {
    fn decide(&mut self, proposal: &Proposal) -> Approval {
        self(proposal)
    }
}

/// A ledger channel seen by its follower (`participants[1]`).
///
/// Proposals are verified and applied in chain order (each names the turn it builds on):
/// early ones wait in a bounded reorder buffer, duplicates are answered idempotently.
/// Verified proposals wait (pending) until the follower approves or rejects them. A turn it
/// refused is never countersigned later, however often it comes back: the highest refused
/// turn is a high-water mark, not a cache that forgets. It cannot propose: there is no such
/// method on this type.
#[derive(Clone, Debug)]
pub struct FollowerChannel {
    key: SigningKey,
    ledger: Ledger,
    /// Verified-later proposals, keyed by the turn they build on.
    buffer: BTreeMap<TurnNum, SignedProposal>,
    capacity: usize,
    /// The highest turn refused, or discarded with a refused one: never countersigned.
    refused_through: TurnNum,
    /// The latest refusal, sent again when a refused branch comes back (the leader may have
    /// missed it; it cannot have missed an earlier one, since it re-proposes only after one).
    last_rejection: Option<Box<Rejection>>,
    /// The turn of the final state, once the ledger is closing.
    closing: Option<TurnNum>,
}

impl FollowerChannel {
    /// The follower's view of the ledger whose latest consensus state is `signed` (signed by
    /// both participants); `key` must be the follower's.
    pub fn new(key: SigningKey, signed: &SignedState) -> Result<Self, ChannelError> {
        let ledger = Ledger::from_signed_state(signed)?;
        if ledger.participant(FOLLOWER) != key.address() {
            return Err(ChannelError::WrongRole { key: key.address(), role: "follower" });
        }
        let refused_through = ledger.consensus_turn;
        Ok(Self {
            key,
            ledger,
            buffer: BTreeMap::new(),
            capacity: DEFAULT_REORDER_CAPACITY,
            refused_through,
            last_rejection: None,
            closing: None,
        })
    }

    /// Sets how many proposals ahead of the latest one are buffered.
    pub fn with_reorder_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Rebuilds a channel from its initial state and the events it produced since, verifying
    /// every one (recomputed states, the leader's and our own signatures, rejections): a
    /// corrupt or foreign log is a [`ChannelError::Replay`], and nothing is built from it.
    pub fn replay<'a>(
        key: SigningKey,
        initial: &SignedState,
        events: impl IntoIterator<Item = &'a LedgerEvent>,
    ) -> Result<Self, ChannelError> {
        let mut channel = Self::new(key, initial)?;
        for event in events {
            match event {
                LedgerEvent::ProposalQueued { signed, .. } if signed.turn_num <= channel.refused_through => {
                    return Err(ChannelError::Replay(format!("refused turn {} queued again", signed.turn_num)));
                }
                LedgerEvent::ConsensusAdvanced { .. } if channel.closing.is_some() => {
                    return Err(ChannelError::Replay("a countersignature after the ledger began closing".into()));
                }
                LedgerEvent::Closing { turn } => channel.reserve_final_turn(*turn).map(|_| ())?,
                _ => {}
            }
            let dropped = channel.ledger.replay_event(event)?;
            if let LedgerEvent::ProposalRejected { rejection, .. } = event {
                // Our own refusal: it must carry our signature (checked as the follower's).
                let highest = dropped.iter().map(|q| q.signed.turn_num).max().unwrap_or(rejection.turn_num);
                channel.refused_through = channel.refused_through.max(highest);
                channel.last_rejection = Some(Box::new(rejection.clone()));
            }
        }
        Ok(channel)
    }

    /// Takes a proposal from the leader.
    ///
    /// A proposal that builds on the latest state is verified (ledger, funds, the leader's
    /// signature on the resulting state) and becomes pending, followed by any buffered
    /// proposals it unblocks. One that builds on a state not yet received is buffered (up to
    /// the reorder capacity). A settled turn is answered with the latest countersignature, a
    /// pending duplicate changes nothing, and a refused turn — or one built on a refused
    /// state — is answered with the latest rejection and never becomes pending again.
    pub fn receive_proposal(&mut self, signed: &SignedProposal) -> Result<Step, ChannelError> {
        let ledger = &self.ledger;
        ledger.check_channel(signed.channel_id)?;
        let (previous, turn) = (signed.previous_turn, signed.turn_num);
        let latest = ledger.latest_turn();
        if previous >= turn {
            return Err(ChannelError::NotNext { previous, turn, latest });
        }
        if turn <= ledger.consensus_turn {
            return Ok(Step { messages: vec![self.countersignature_message()], ..Step::default() });
        }
        if let Some(entry) = ledger.queue.get(turn) {
            return if entry.signed == *signed {
                Ok(Step::default())
            } else {
                Err(ChannelError::ConflictingProposal(turn))
            };
        }
        if turn <= self.refused_through || (previous > latest && previous <= self.refused_through) {
            let messages = self.last_rejection.iter().map(|r| LedgerMessage::Rejection((**r).clone())).collect();
            return Ok(Step { messages, ..Step::default() });
        }
        if previous < latest {
            return Err(ChannelError::NotNext { previous, turn, latest });
        }
        if previous > latest {
            if self.buffer.len() >= self.capacity && !self.buffer.contains_key(&previous) {
                return Err(ChannelError::TooFarAhead { turn, latest, capacity: self.capacity });
            }
            self.buffer.entry(previous).or_insert_with(|| signed.clone());
            return Ok(Step::default());
        }
        let mut step = Step::default();
        self.accept(signed, &mut step)?;
        self.drain_buffer(&mut step);
        Ok(step)
    }

    /// Verifies the proposal that extends the latest state and makes it pending; on error
    /// nothing changes.
    fn accept(&mut self, signed: &SignedProposal, step: &mut Step) -> Result<(), ChannelError> {
        if signed.turn_num <= self.refused_through {
            return Err(ChannelError::TurnNotFresh { turn: signed.turn_num, highest: self.refused_through });
        }
        let state_hash = self.ledger.verify_and_apply(signed, None)?;
        self.ledger.enqueue(signed.clone(), state_hash, &mut step.events);
        Ok(())
    }

    /// Verifies buffered proposals that now extend the latest state. One that fails is
    /// discarded (the leader sends the right one again); those built on states we will never
    /// hold are dropped.
    fn drain_buffer(&mut self, step: &mut Step) {
        loop {
            let latest = self.ledger.latest_turn();
            self.buffer = self.buffer.split_off(&latest);
            let Some(signed) = self.buffer.remove(&latest) else { return };
            if self.accept(&signed, step).is_err() {
                return;
            }
        }
    }

    /// Countersigns every pending proposal up to `turn` (one signature, on the state at `turn`).
    pub fn countersign_through(&mut self, turn: TurnNum) -> Result<Step, ChannelError> {
        if let Some(closing) = self.closing {
            return Err(ChannelError::Closing(closing));
        }
        let ledger = &mut self.ledger;
        let entry = ledger.queue.get(turn).ok_or(ChannelError::NothingPending)?;
        let state_hash = entry.state_hash;
        let signature = self.key.sign(&state_hash);
        let mut step = Step::default();
        step.signed.push(SignedTurn { channel_id: ledger.channel_id, turn_num: turn, state_hash });
        ledger.advance_consensus(turn, signature, &mut step.events);
        step.messages.push(self.countersignature_message());
        Ok(step)
    }

    /// Countersigns every pending proposal.
    pub fn countersign_all(&mut self) -> Result<Step, ChannelError> {
        if self.ledger.queue.is_empty() {
            return Err(ChannelError::NothingPending);
        }
        self.countersign_through(self.ledger.latest_turn())
    }

    /// Countersigns the oldest pending proposal if it is exactly `expected` (for objectives
    /// that know which guarantee they wait for).
    pub fn countersign_next(&mut self, expected: &Proposal) -> Result<Step, ChannelError> {
        let head = self.ledger.queue.front().ok_or(ChannelError::NothingPending)?;
        if head.signed.proposals.as_slice() != std::slice::from_ref(expected) {
            return Err(ChannelError::UnexpectedProposal);
        }
        self.countersign_through(head.signed.turn_num)
    }

    /// Asks `policy` about every change of the pending proposals, oldest first: countersigns
    /// the prefix of proposals whose changes are all approved; at the first proposal with a
    /// refused change, refuses those changes (the leader proposes the others again); stops at
    /// the first proposal with a deferred change. While the ledger is closing every pending
    /// proposal is refused.
    pub fn decide(&mut self, policy: &mut impl ApprovalPolicy) -> Step {
        let mut approved_through = None;
        let mut refusal: Option<(Vec<u16>, String)> = None;
        'entries: for entry in self.ledger.queue.iter() {
            let mut refused = Vec::new();
            let mut reason = String::new();
            for (i, p) in entry.signed.proposals.iter().enumerate() {
                let decision = match self.closing {
                    Some(_) => Approval::Reject("the ledger is closing".into()),
                    None => policy.decide(p),
                };
                match decision {
                    Approval::Approve => {}
                    Approval::Reject(why) => {
                        refused.push(i as u16);
                        if reason.is_empty() {
                            reason = why;
                        }
                    }
                    Approval::Defer if refused.is_empty() => break 'entries,
                    Approval::Defer => {}
                }
            }
            if !refused.is_empty() {
                if refused.len() == entry.signed.proposals.len() {
                    refused.clear(); // all of them
                }
                refusal = Some((refused, reason));
                break;
            }
            approved_through = Some(entry.signed.turn_num);
        }
        let mut step = Step::default();
        if let Some(turn) = approved_through {
            if let Ok(s) = self.countersign_through(turn) {
                step.extend(s);
            }
        }
        if let Some((refused, reason)) = refusal {
            if let Ok(s) = self.reject_changes(&refused, &reason) {
                step.extend(s);
            }
        }
        step
    }

    /// Refuses the oldest pending proposal as a whole. Everything pending after it is
    /// discarded too (it was built on the refused state); the leader proposes it again at
    /// fresh turns. None of these turns is ever countersigned.
    pub fn reject_next(&mut self, reason: &str) -> Result<Step, ChannelError> {
        self.reject_changes(&[], reason)
    }

    /// Refuses the changes at `refused` (indices, increasing; empty: all) of the oldest
    /// pending proposal: the proposal and everything after it leave; the leader proposes the
    /// changes not refused again, at fresh turns.
    pub fn reject_changes(&mut self, refused: &[u16], reason: &str) -> Result<Step, ChannelError> {
        let ledger = &mut self.ledger;
        let head = ledger.queue.front().cloned().ok_or(ChannelError::NothingPending)?;
        let turn_num = head.signed.turn_num;
        if refused.windows(2).any(|w| w[0] >= w[1])
            || refused.iter().any(|i| usize::from(*i) >= head.signed.proposals.len())
        {
            return Err(ChannelError::BadRefusal(turn_num));
        }
        let signing_hash = Rejection::signing_hash(ledger.channel_id, turn_num, head.state_hash, refused);
        let rejection = Rejection {
            channel_id: ledger.channel_id,
            turn_num,
            state_hash: head.state_hash,
            refused: refused.to_vec(),
            reason: bounded_reason(reason),
            signature: self.key.sign(&signing_hash),
        };
        self.refused_through = self.refused_through.max(ledger.latest_turn());
        ledger.truncate_from(turn_num);
        self.buffer.clear();
        self.last_rejection = Some(Box::new(rejection.clone()));
        let refused_changes =
            head.signed.proposals.iter().enumerate().filter(|(i, _)| rejection.refuses(*i)).map(|(_, p)| *p).collect();
        Ok(Step {
            messages: vec![LedgerMessage::Rejection(rejection.clone())],
            events: vec![LedgerEvent::ProposalRejected { rejection, refused: refused_changes }],
            signed: Vec::new(),
        })
    }

    /// Dispatches a message from the leader.
    pub fn receive(&mut self, message: &LedgerMessage) -> Result<Step, ChannelError> {
        match message {
            LedgerMessage::Proposal(p) => self.receive_proposal(p),
            _ => Err(ChannelError::UnexpectedMessage("a follower receives only proposals")),
        }
    }

    /// The follower's (cumulative) countersignature on the consensus state.
    pub fn countersignature(&self) -> Countersignature {
        Countersignature {
            channel_id: self.ledger.channel_id,
            turn_num: self.ledger.consensus_turn,
            signature: self.ledger.consensus_signatures[FOLLOWER],
        }
    }

    fn countersignature_message(&self) -> LedgerMessage {
        LedgerMessage::Countersignature(self.countersignature())
    }

    /// Verified proposals waiting for a decision, oldest first.
    pub fn pending(&self) -> impl ExactSizeIterator<Item = &SignedProposal> {
        self.ledger.queue.iter().map(|q| &q.signed)
    }

    /// Number of proposals held in the reorder buffer.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The highest turn this follower refused (or discarded with a refusal): it never
    /// countersigns a turn at or below it that is not already settled.
    pub fn refused_through(&self) -> TurnNum {
        self.refused_through
    }

    /// The highest turn this follower has taken part in: settled, pending, refused or
    /// reserved for a final state. A final state it signs must go above it.
    pub fn highest_turn(&self) -> TurnNum {
        let mut highest = self.ledger.latest_turn().max(self.refused_through);
        if let Some(closing) = self.closing {
            highest = highest.max(closing);
        }
        highest
    }

    /// Reserves `turn` for the ledger's final state, which the caller is about to sign: from
    /// now on nothing is countersigned and every pending proposal is refused. Idempotent for
    /// the turn already reserved; refused ([`ChannelError::TurnNotFresh`]) for a turn at or
    /// below one taken.
    pub fn reserve_final_turn(&mut self, turn: TurnNum) -> Result<Step, ChannelError> {
        if self.closing == Some(turn) {
            return Ok(Step::default());
        }
        let highest = self.highest_turn();
        if turn <= highest {
            return Err(ChannelError::TurnNotFresh { turn, highest });
        }
        self.closing = Some(turn);
        Ok(Step { events: vec![LedgerEvent::Closing { turn }], ..Step::default() })
    }

    /// The final state's turn, once the ledger is closing.
    pub fn closing(&self) -> Option<TurnNum> {
        self.closing
    }

    /// The latest refusal sent, if any.
    pub fn last_rejection(&self) -> Option<&Rejection> {
        self.last_rejection.as_deref()
    }

    /// Loads a stored pending proposal (see [`super::LedgerRecord`]), verified.
    pub(crate) fn load_queued(&mut self, signed: &SignedProposal) -> Result<(), ChannelError> {
        let state_hash = self.ledger.verify_and_apply(signed, None)?;
        self.ledger.enqueue(signed.clone(), state_hash, &mut Vec::new());
        Ok(())
    }

    /// Loads the stored refusal mark, latest refusal and closing turn.
    pub(crate) fn load_marks(
        &mut self,
        refused_through: TurnNum,
        last_rejection: Option<Rejection>,
        closing: Option<TurnNum>,
    ) -> Result<(), ChannelError> {
        if self.ledger.queue.front().is_some_and(|q| q.signed.turn_num <= refused_through) {
            return Err(ChannelError::Replay("a stored pending turn at or below the refusal mark".into()));
        }
        self.refused_through = self.refused_through.max(refused_through);
        self.last_rejection = last_rejection.map(Box::new);
        self.closing = closing;
        Ok(())
    }

    ledger_accessors!();
}

impl PartialEq for FollowerChannel {
    /// Equal when the durable state is (the reorder buffer is transient and not compared).
    fn eq(&self, other: &Self) -> bool {
        self.key.address() == other.key.address()
            && self.ledger == other.ledger
            && self.refused_through == other.refused_through
            && self.last_rejection == other.last_rejection
            && self.closing == other.closing
    }
}
