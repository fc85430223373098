//! The follower of a ledger: it checks the leader's proposals and countersigns the ones it
//! agrees to.

use std::collections::{BTreeMap, VecDeque};

use super::{
    messages::bounded_reason,
    shared::{ledger_accessors, Ledger, FOLLOWER, LEADER},
    ChannelError, Countersignature, LedgerEvent, LedgerMessage, Proposal, Rejection, SignedProposal, Step,
};
use crate::{recover_signer, SignedState, SigningKey, TurnNum};

/// How many proposals ahead of the next expected turn the follower buffers by default.
pub const DEFAULT_REORDER_CAPACITY: usize = 256;

/// How many of its recent rejections the follower remembers, to answer retransmissions.
const REMEMBERED_REJECTIONS: usize = 64;

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
/// Proposals are verified and applied in turn order: early ones wait in a bounded reorder
/// buffer, duplicates are answered idempotently. Verified proposals wait (pending) until the
/// follower approves or rejects them. It cannot propose: there is no such method on this type.
#[derive(Clone, Debug)]
pub struct FollowerChannel {
    key: SigningKey,
    ledger: Ledger,
    buffer: BTreeMap<TurnNum, SignedProposal>,
    capacity: usize,
    rejections: VecDeque<Rejection>,
}

impl FollowerChannel {
    /// The follower's view of the ledger whose latest consensus state is `signed` (signed by
    /// both participants); `key` must be the follower's.
    pub fn new(key: SigningKey, signed: &SignedState) -> Result<Self, ChannelError> {
        let ledger = Ledger::from_signed_state(signed)?;
        if ledger.participant(FOLLOWER) != key.address() {
            return Err(ChannelError::WrongRole { key: key.address(), role: "follower" });
        }
        Ok(Self {
            key,
            ledger,
            buffer: BTreeMap::new(),
            capacity: DEFAULT_REORDER_CAPACITY,
            rejections: VecDeque::new(),
        })
    }

    /// Sets how many proposals ahead of the next expected turn are buffered.
    pub fn with_reorder_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
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
            if let LedgerEvent::ProposalRejected { rejection, .. } = event {
                channel.remember(rejection.clone());
            }
        }
        Ok(channel)
    }

    /// Takes a proposal from the leader.
    ///
    /// The next expected turn is verified (ledger, funds, the leader's signature on the
    /// resulting state) and becomes pending, followed by any buffered proposals it unblocks.
    /// A later turn is buffered (up to the reorder capacity). A turn already settled is
    /// answered with the latest countersignature; a pending duplicate changes nothing.
    pub fn receive_proposal(&mut self, signed: &SignedProposal) -> Result<Step, ChannelError> {
        let ledger = &self.ledger;
        ledger.check_channel(signed.channel_id)?;
        let turn = signed.turn_num;
        if turn <= ledger.consensus_turn {
            return Ok(Step { messages: vec![self.countersignature_message()], events: Vec::new() });
        }
        if let Some(entry) = ledger.queue.get(turn) {
            return if entry.signed == *signed {
                Ok(Step::default())
            } else {
                Err(ChannelError::ConflictingProposal(turn))
            };
        }
        let next = ledger.next_turn()?;
        if turn > next {
            let ahead = (turn - next).to::<u64>();
            if ahead > self.capacity as u64 {
                return Err(ChannelError::TooFarAhead { turn, next, capacity: self.capacity });
            }
            self.buffer.insert(turn, *signed);
            return Ok(Step::default());
        }
        let mut step = Step::default();
        self.accept(signed, &mut step)?;
        self.drain_buffer(&mut step);
        Ok(step)
    }

    /// Verifies the proposal at the next turn and makes it pending; on error nothing changes.
    fn accept(&mut self, signed: &SignedProposal, step: &mut Step) -> Result<(), ChannelError> {
        let ledger = &mut self.ledger;
        let undo = ledger.apply_latest(&signed.proposal)?;
        let state_hash = ledger.latest.state_hash(ledger.channel_id, signed.turn_num);
        if let Some(rejection) =
            self.rejections.iter().find(|r| r.turn_num == signed.turn_num && r.state_hash == state_hash)
        {
            ledger.undo_latest(&undo);
            step.messages.push(LedgerMessage::Rejection(rejection.clone()));
            return Ok(());
        }
        let leader = ledger.participant(LEADER);
        match recover_signer(&state_hash, &signed.signature) {
            Ok(signer) if signer == leader => {
                ledger.enqueue(*signed, state_hash, &mut step.events);
                Ok(())
            }
            Ok(signer) => {
                ledger.undo_latest(&undo);
                Err(ChannelError::WrongSigner { expected: leader, got: signer })
            }
            Err(e) => {
                ledger.undo_latest(&undo);
                Err(e.into())
            }
        }
    }

    /// Verifies buffered proposals that are now next in turn. One that fails (a stale branch
    /// after a rejection, say) is discarded: the leader sends the right one again.
    fn drain_buffer(&mut self, step: &mut Step) {
        loop {
            let Ok(next) = self.ledger.next_turn() else { return };
            self.buffer = self.buffer.split_off(&next);
            let Some(signed) = self.buffer.remove(&next) else { return };
            if self.accept(&signed, step).is_err() {
                return;
            }
        }
    }

    /// Countersigns every pending proposal up to `turn` (one signature, on the state at `turn`).
    pub fn countersign_through(&mut self, turn: TurnNum) -> Result<Step, ChannelError> {
        let ledger = &mut self.ledger;
        let entry = ledger.queue.get(turn).ok_or(ChannelError::NothingPending)?;
        let signature = self.key.sign(&entry.state_hash);
        let mut step = Step::default();
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
        if head.signed.proposal != *expected {
            return Err(ChannelError::UnexpectedProposal);
        }
        self.countersign_through(head.signed.turn_num)
    }

    /// Asks `policy` about pending proposals, oldest first: countersigns the approved prefix
    /// and rejects the first refused proposal; stops at the first deferred one.
    pub fn decide(&mut self, policy: &mut impl ApprovalPolicy) -> Step {
        let mut approved_through = None;
        let mut refusal = None;
        for entry in self.ledger.queue.iter() {
            match policy.decide(&entry.signed.proposal) {
                Approval::Approve => approved_through = Some(entry.signed.turn_num),
                Approval::Reject(reason) => {
                    refusal = Some(reason);
                    break;
                }
                Approval::Defer => break,
            }
        }
        let mut step = Step::default();
        if let Some(turn) = approved_through {
            if let Ok(s) = self.countersign_through(turn) {
                step.extend(s);
            }
        }
        if let Some(reason) = refusal {
            if let Ok(s) = self.reject_next(&reason) {
                step.extend(s);
            }
        }
        step
    }

    /// Refuses the oldest pending proposal. Everything pending after it is discarded too (it
    /// was built on the refused state); the leader proposes it again at new turns.
    pub fn reject_next(&mut self, reason: &str) -> Result<Step, ChannelError> {
        let ledger = &mut self.ledger;
        let head = *ledger.queue.front().ok_or(ChannelError::NothingPending)?;
        let turn_num = head.signed.turn_num;
        let signing_hash = Rejection::signing_hash(ledger.channel_id, turn_num, head.state_hash);
        let rejection = Rejection {
            channel_id: ledger.channel_id,
            turn_num,
            state_hash: head.state_hash,
            reason: bounded_reason(reason),
            signature: self.key.sign(&signing_hash),
        };
        ledger.truncate_from(turn_num);
        self.buffer.clear();
        self.remember(rejection.clone());
        Ok(Step {
            messages: vec![LedgerMessage::Rejection(rejection.clone())],
            events: vec![LedgerEvent::ProposalRejected { rejection, proposal: head.signed.proposal }],
        })
    }

    fn remember(&mut self, rejection: Rejection) {
        if self.rejections.len() == REMEMBERED_REJECTIONS {
            self.rejections.pop_front();
        }
        self.rejections.push_back(rejection);
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

    ledger_accessors!();
}

impl PartialEq for FollowerChannel {
    /// Equal when the durable state is (the reorder buffer is transient and not compared).
    fn eq(&self, other: &Self) -> bool {
        self.key.address() == other.key.address() && self.ledger == other.ledger && self.rejections == other.rejections
    }
}
