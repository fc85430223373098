//! What both roles of a ledger hold: the consensus state, the queue after it, the latest
//! proposed outcome and the guarantee statuses, and the transitions they share.

/// The read-only accessors both roles offer over their shared [`Ledger`] (one definition,
/// expanded in `LeaderChannel` and `FollowerChannel`).
macro_rules! ledger_accessors {
    () => {
        /// The ledger's channel id.
        pub fn channel_id(&self) -> crate::ChannelId {
            self.ledger.channel_id
        }

        /// The latest state signed by both.
        pub fn consensus_state(&self) -> crate::SignedState {
            self.ledger.consensus_state()
        }

        /// The consensus turn.
        pub fn consensus_turn(&self) -> crate::TurnNum {
            self.ledger.consensus_turn
        }

        /// The consensus outcome.
        pub fn consensus_outcome(&self) -> &crate::LedgerOutcome {
            &self.ledger.consensus
        }

        /// The outcome with every queued (leader) or pending (follower) proposal applied.
        pub fn latest_outcome(&self) -> &crate::LedgerOutcome {
            &self.ledger.latest
        }

        /// The turn of the latest proposed state.
        pub fn latest_turn(&self) -> crate::TurnNum {
            self.ledger.latest_turn()
        }

        /// The proposals after the consensus turn: waiting for the follower's countersignature
        /// (leader) or for its decision (follower).
        pub fn queue(&self) -> &crate::ProposalQueue {
            &self.ledger.queue
        }

        /// Where each guarantee stands.
        pub fn guarantees(&self) -> &crate::GuaranteeManager {
            &self.ledger.guarantees
        }

        /// Whether the guarantee for `target` is in the consensus state.
        pub fn is_locked(&self, target: &crate::ChannelId) -> bool {
            self.ledger.guarantees.is_locked(target)
        }
    };
}
pub(crate) use ledger_accessors;

use alloy_primitives::{Address, B256};

use super::{
    ChannelError, GuaranteeManager, LedgerEvent, LedgerOutcome, Proposal, ProposalQueue, QueuedProposal, SignedProposal,
};
use crate::{destination_of, ChannelId, FixedPart, Signature, SignedState, TurnNum};

/// Index of the leader among the participants.
pub(crate) const LEADER: usize = 0;
/// Index of the follower among the participants.
pub(crate) const FOLLOWER: usize = 1;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Ledger {
    pub fixed: FixedPart,
    pub channel_id: ChannelId,
    /// The latest state signed by both.
    pub consensus: LedgerOutcome,
    pub consensus_turn: TurnNum,
    pub consensus_hash: B256,
    /// `[leader, follower]` signatures on the consensus state.
    pub consensus_signatures: [Signature; 2],
    /// Proposals after the consensus turn, at consecutive turns.
    pub queue: ProposalQueue,
    /// The consensus outcome with every queued proposal applied.
    pub latest: LedgerOutcome,
    pub guarantees: GuaranteeManager,
}

impl Ledger {
    /// A ledger from a state signed by both participants (both signatures verified).
    pub fn from_signed_state(signed: &SignedState) -> Result<Self, ChannelError> {
        let state = signed.state();
        if state.participants.len() != 2 {
            return Err(ChannelError::ParticipantCount(state.participants.len()));
        }
        let (Some(leader_sig), Some(follower_sig)) = (signed.signature(LEADER), signed.signature(FOLLOWER)) else {
            return Err(ChannelError::NotFullySigned);
        };
        if state.is_final {
            return Err(ChannelError::FinalState);
        }
        if !state.app_data.is_empty() {
            return Err(ChannelError::AppData);
        }
        let outcome = LedgerOutcome::from_exit(&state.outcome)?;
        if outcome.leader().destination != destination_of(state.participants[LEADER]) {
            return Err(ChannelError::BalanceDestination("leader"));
        }
        if outcome.follower().destination != destination_of(state.participants[FOLLOWER]) {
            return Err(ChannelError::BalanceDestination("follower"));
        }
        // `SignedState` holds only verified signatures, each in its signer's slot.
        let hash = signed.hash();
        Ok(Self {
            fixed: state.fixed_part(),
            channel_id: signed.channel_id(),
            latest: outcome.clone(),
            guarantees: GuaranteeManager::rebuild(&outcome, std::iter::empty()),
            consensus: outcome,
            consensus_turn: state.turn_num,
            consensus_hash: hash,
            consensus_signatures: [leader_sig, follower_sig],
            queue: ProposalQueue::default(),
        })
    }

    pub fn participant(&self, index: usize) -> Address {
        self.fixed.participants[index]
    }

    pub fn check_channel(&self, got: ChannelId) -> Result<(), ChannelError> {
        if got == self.channel_id {
            Ok(())
        } else {
            Err(ChannelError::WrongChannel { expected: self.channel_id, got })
        }
    }

    /// The turn of the latest proposed state.
    pub fn latest_turn(&self) -> TurnNum {
        // The queue holds consecutive turns after the consensus turn, each checked on entry.
        self.queue.back().map_or(self.consensus_turn, |q| q.signed.turn_num)
    }

    /// The turn a new proposal gets.
    pub fn next_turn(&self) -> Result<TurnNum, ChannelError> {
        self.latest_turn().checked_add(TurnNum::from(1)).ok_or(ChannelError::TurnOverflow)
    }

    /// Applies `proposal` to the latest outcome (refusing a re-add of a target still tracked),
    /// returning the proposal that undoes it.
    pub fn apply_latest(&mut self, proposal: &Proposal) -> Result<Proposal, ChannelError> {
        if let Proposal::Add { guarantee, .. } = proposal {
            if self.guarantees.status(&guarantee.target()).is_some() {
                return Err(super::ProposalError::DuplicateTarget(guarantee.target()).into());
            }
        }
        let undo = match *proposal {
            Proposal::Add { guarantee, left_deposit } => {
                Proposal::Remove { target: guarantee.target(), left_amount: left_deposit }
            }
            Proposal::Remove { target, left_amount } => {
                let guarantee = *self.latest.guarantee(&target).ok_or(super::ProposalError::TargetNotFound(target))?;
                Proposal::Add { guarantee, left_deposit: left_amount }
            }
        };
        self.latest.apply(proposal)?;
        Ok(undo)
    }

    /// Reverts [`Ledger::apply_latest`] with the proposal it returned.
    pub fn undo_latest(&mut self, undo: &Proposal) {
        // Applying the inverse of a proposal that just applied cannot fail.
        let reverted = self.latest.apply(undo);
        debug_assert!(reverted.is_ok());
    }

    /// Queues a proposal already applied to `latest`.
    pub fn enqueue(&mut self, signed: SignedProposal, state_hash: B256, events: &mut Vec<LedgerEvent>) {
        self.queue.push(QueuedProposal { signed, state_hash });
        self.guarantees.on_proposed(&signed.proposal);
        events.push(LedgerEvent::ProposalQueued { signed, state_hash });
        events.push(match signed.proposal {
            Proposal::Add { guarantee, left_deposit } => LedgerEvent::GuaranteeProposed { guarantee, left_deposit },
            Proposal::Remove { target, left_amount } => LedgerEvent::GuaranteeRemovalProposed { target, left_amount },
        });
    }

    /// Moves the consensus to `turn` (a queued turn), given the follower's signature on it.
    pub fn advance_consensus(&mut self, turn: TurnNum, countersignature: Signature, events: &mut Vec<LedgerEvent>) {
        let mut last = None;
        while let Some(entry) = self.queue.pop_through(turn) {
            // Each queued proposal applied to `latest` in this order, so it applies here too.
            let applied = self.consensus.apply(&entry.signed.proposal);
            debug_assert!(applied.is_ok());
            self.guarantees.on_consensus(&entry.signed.proposal);
            events.push(match entry.signed.proposal {
                Proposal::Add { guarantee, .. } => LedgerEvent::GuaranteeLocked { target: guarantee.target() },
                Proposal::Remove { target, left_amount } => LedgerEvent::GuaranteeReleased { target, left_amount },
            });
            last = Some(entry);
        }
        if let Some(entry) = last {
            self.consensus_turn = entry.signed.turn_num;
            self.consensus_hash = entry.state_hash;
            self.consensus_signatures = [entry.signed.signature, countersignature];
            events.push(LedgerEvent::ConsensusAdvanced {
                turn: self.consensus_turn,
                state_hash: entry.state_hash,
                countersignature,
            });
        }
    }

    /// Drops every queued proposal from `turn` on, returning them; `latest` and the guarantee
    /// statuses are rebuilt from the consensus state and what remains.
    pub fn truncate_from(&mut self, turn: TurnNum) -> Vec<QueuedProposal> {
        let dropped = self.queue.split_off(turn);
        let mut latest = self.consensus.clone();
        for entry in self.queue.iter() {
            let applied = latest.apply(&entry.signed.proposal);
            debug_assert!(applied.is_ok());
        }
        self.latest = latest;
        self.guarantees = GuaranteeManager::rebuild(&self.consensus, self.queue.iter());
        dropped
    }

    /// The consensus state with both signatures.
    pub fn consensus_state(&self) -> SignedState {
        let state = self.consensus.to_state(&self.fixed, self.consensus_turn);
        SignedState::from_verified(state, self.channel_id, self.consensus_hash, self.consensus_signatures.map(Some))
    }

    /// Replays a state-changing event; the others are descriptions and change nothing.
    pub fn apply_event(&mut self, event: &LedgerEvent) -> Result<(), ChannelError> {
        match event {
            LedgerEvent::ProposalQueued { signed, state_hash } => {
                self.check_channel(signed.channel_id)?;
                if signed.turn_num != self.next_turn()? {
                    return Err(ChannelError::Replay(format!("proposal at turn {} out of order", signed.turn_num)));
                }
                self.apply_latest(&signed.proposal)?;
                self.enqueue(*signed, *state_hash, &mut Vec::new());
            }
            LedgerEvent::ConsensusAdvanced { turn, countersignature, .. } => {
                if self.queue.get(*turn).is_none() {
                    return Err(ChannelError::Replay(format!("consensus at unqueued turn {turn}")));
                }
                self.advance_consensus(*turn, *countersignature, &mut Vec::new());
            }
            LedgerEvent::ProposalRejected { rejection, .. } => {
                if self.queue.get(rejection.turn_num).is_none() {
                    return Err(ChannelError::Replay(format!("rejection at unqueued turn {}", rejection.turn_num)));
                }
                self.truncate_from(rejection.turn_num);
            }
            LedgerEvent::ProposalDropped { .. }
            | LedgerEvent::GuaranteeProposed { .. }
            | LedgerEvent::GuaranteeLocked { .. }
            | LedgerEvent::GuaranteeRemovalProposed { .. }
            | LedgerEvent::GuaranteeReleased { .. } => {}
        }
        Ok(())
    }
}
