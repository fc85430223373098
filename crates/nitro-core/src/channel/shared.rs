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
    ChannelError, GuaranteeManager, LedgerEvent, LedgerOutcome, Proposal, ProposalQueue, QueuedProposal, Rejection,
    SignedProposal,
};
use crate::{destination_of, recover_signer, ChannelId, FixedPart, Signature, SignedState, TurnNum};

/// What reverts a proposal just applied to the latest outcome (a batch that fails part-way,
/// or a proposal whose signature does not verify).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Undo {
    /// Apply this (inverse) proposal.
    Apply(Proposal),
    /// Take a `Credit` back into the slot (no proposal does that).
    Uncredit(alloy_primitives::Address, super::Side, alloy_primitives::U256),
}

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
    /// Proposals after the consensus turn, at strictly increasing turns.
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
        self.queue.back().map_or(self.consensus_turn, |q| q.signed.turn_num)
    }

    /// Applies `proposal` to the latest outcome (refusing a re-add of a target still tracked),
    /// returning what undoes it.
    pub fn apply_latest(&mut self, proposal: &Proposal) -> Result<Undo, ChannelError> {
        if let Proposal::Add { guarantee, .. } = proposal {
            if self.guarantees.status(&guarantee.target()).is_some() {
                return Err(super::ProposalError::DuplicateTarget(guarantee.target()).into());
            }
        }
        let undo = match *proposal {
            Proposal::Add { guarantee, left_deposit, .. } => {
                Undo::Apply(Proposal::Remove { target: guarantee.target(), left_amount: left_deposit })
            }
            Proposal::Remove { target, left_amount } => {
                let not_found = super::ProposalError::TargetNotFound(target);
                let guarantee = *self.latest.guarantee(&target).ok_or(not_found.clone())?;
                let asset = self.latest.asset_of(&target).ok_or(not_found)?;
                Undo::Apply(Proposal::Add { guarantee, left_deposit: left_amount, asset })
            }
            Proposal::Reserve { asset, side, .. } => Undo::Apply(Proposal::CancelReserve { asset, side }),
            Proposal::Credit { asset, side, amount } => Undo::Uncredit(asset, side, amount),
            Proposal::CancelReserve { asset, side } => {
                let exit = self.latest.exit(asset).ok_or(super::ProposalError::UnknownAsset(asset))?;
                let slot = exit.slot().ok_or(super::ProposalError::NoSlot)?;
                Undo::Apply(Proposal::Reserve { asset, side, amount: slot.amount })
            }
        };
        self.latest.apply(proposal)?;
        Ok(undo)
    }

    /// Reverts [`Ledger::apply_latest`] with the proposal it returned.
    pub fn undo_latest(&mut self, undo: &Undo) {
        // Applying the inverse of a proposal that just applied cannot fail.
        let reverted = match *undo {
            Undo::Apply(ref p) => self.latest.apply(p),
            Undo::Uncredit(asset, side, amount) => self.latest.uncredit(asset, side, amount),
        };
        debug_assert!(reverted.is_ok());
    }

    /// Applies every change of a batch to the latest outcome, in order, or none of them: the
    /// index and reason of the first that does not apply.
    pub fn apply_batch(&mut self, proposals: &[Proposal]) -> Result<Vec<Undo>, (usize, ChannelError)> {
        let mut undos = Vec::with_capacity(proposals.len());
        let mut added = std::collections::HashSet::new();
        for (i, p) in proposals.iter().enumerate() {
            let applied = match p {
                // A target added earlier in this batch is not yet in the guarantee statuses.
                Proposal::Add { guarantee, .. } if !added.insert(guarantee.target()) => {
                    Err(super::ProposalError::DuplicateTarget(guarantee.target()).into())
                }
                _ => self.apply_latest(p),
            };
            match applied {
                Ok(undo) => undos.push(undo),
                Err(e) => {
                    self.undo_batch(&undos);
                    return Err((i, e));
                }
            }
        }
        Ok(undos)
    }

    /// Reverts [`Ledger::apply_batch`] with the undos it returned.
    pub fn undo_batch(&mut self, undos: &[Undo]) {
        for undo in undos.iter().rev() {
            self.undo_latest(undo);
        }
    }

    /// Checks a proposal at the end of the chain (`previous_turn` the latest turn, a higher
    /// turn, 1 to [`MAX_BATCH`](super::MAX_BATCH) changes) and applies it to `latest`, if the
    /// leader's signature verifies on the state it produces (and that state's hash is
    /// `expected`, when given): the one check every queued proposal passes, live or replayed.
    /// Returns the hash of that state; on error nothing changed.
    pub fn verify_and_apply(&mut self, signed: &SignedProposal, expected: Option<B256>) -> Result<B256, ChannelError> {
        self.check_channel(signed.channel_id)?;
        let latest = self.latest_turn();
        if signed.previous_turn != latest || signed.turn_num <= latest {
            return Err(ChannelError::NotNext { previous: signed.previous_turn, turn: signed.turn_num, latest });
        }
        if signed.proposals.is_empty() || signed.proposals.len() > super::MAX_BATCH {
            return Err(ChannelError::BatchSize(signed.proposals.len()));
        }
        let undos = self.apply_batch(&signed.proposals).map_err(|(_, e)| e)?;
        let state_hash = self.latest.state_hash(self.channel_id, signed.turn_num);
        let leader = self.participant(LEADER);
        let verdict = match recover_signer(&state_hash, &signed.signature) {
            _ if expected.is_some_and(|e| e != state_hash) => {
                Err(ChannelError::Replay(format!("logged state hash at turn {} is not the state's", signed.turn_num)))
            }
            Ok(signer) if signer == leader => return Ok(state_hash),
            Ok(signer) => Err(ChannelError::WrongSigner { expected: leader, got: signer }),
            Err(e) => Err(e.into()),
        };
        self.undo_batch(&undos);
        verdict
    }

    /// Queues a proposal already applied to `latest`.
    pub fn enqueue(&mut self, signed: SignedProposal, state_hash: B256, events: &mut Vec<LedgerEvent>) {
        events.push(LedgerEvent::ProposalQueued { signed: signed.clone(), state_hash });
        for p in &signed.proposals {
            self.guarantees.on_proposed(p);
            events.push(match *p {
                Proposal::Add { guarantee, left_deposit, .. } => {
                    LedgerEvent::GuaranteeProposed { guarantee, left_deposit }
                }
                Proposal::Remove { target, left_amount } => {
                    LedgerEvent::GuaranteeRemovalProposed { target, left_amount }
                }
                Proposal::Reserve { .. } | Proposal::Credit { .. } | Proposal::CancelReserve { .. } => {
                    LedgerEvent::TopUpProposed { proposal: *p }
                }
            });
        }
        self.queue.push(QueuedProposal { signed, state_hash });
    }

    /// Checks that `countersignature` is the follower's on the queued state at `turn`.
    pub fn verify_countersignature(&self, turn: TurnNum, countersignature: &Signature) -> Result<B256, ChannelError> {
        let entry = self.queue.get(turn).ok_or(ChannelError::UnknownTurn { turn, latest: self.latest_turn() })?;
        let signer = recover_signer(&entry.state_hash, countersignature)?;
        let follower = self.participant(FOLLOWER);
        if signer != follower {
            return Err(ChannelError::WrongSigner { expected: follower, got: signer });
        }
        Ok(entry.state_hash)
    }

    /// Checks that `rejection` is the follower's refusal of (changes of) the queued state at
    /// its turn.
    pub fn verify_rejection(&self, rejection: &Rejection) -> Result<&QueuedProposal, ChannelError> {
        self.check_channel(rejection.channel_id)?;
        if rejection.reason.len() > super::MAX_REASON_LEN {
            return Err(ChannelError::ReasonTooLong(rejection.reason.len()));
        }
        let turn = rejection.turn_num;
        let entry = match self.queue.get(turn) {
            Some(entry) if entry.state_hash == rejection.state_hash => entry,
            Some(_) => return Err(ChannelError::StaleRejection(turn)),
            None if turn <= self.latest_turn() => return Err(ChannelError::StaleRejection(turn)),
            None => return Err(ChannelError::UnknownTurn { turn, latest: self.latest_turn() }),
        };
        let refused = &rejection.refused;
        if refused.windows(2).any(|w| w[0] >= w[1])
            || refused.iter().any(|i| usize::from(*i) >= entry.signed.proposals.len())
        {
            return Err(ChannelError::BadRefusal(turn));
        }
        let hash = Rejection::signing_hash(self.channel_id, turn, entry.state_hash, refused);
        let signer = recover_signer(&hash, &rejection.signature)?;
        let follower = self.participant(FOLLOWER);
        if signer != follower {
            return Err(ChannelError::WrongSigner { expected: follower, got: signer });
        }
        Ok(entry)
    }

    /// Moves the consensus to `turn` (a queued turn), given the follower's signature on it.
    pub fn advance_consensus(&mut self, turn: TurnNum, countersignature: Signature, events: &mut Vec<LedgerEvent>) {
        let mut last = None;
        while let Some(entry) = self.queue.pop_through(turn) {
            for p in &entry.signed.proposals {
                // Each queued change applied to `latest` in this order, so it applies here too.
                let applied = self.consensus.apply(p);
                debug_assert!(applied.is_ok());
                self.guarantees.on_consensus(p);
                events.push(match *p {
                    Proposal::Add { guarantee, .. } => LedgerEvent::GuaranteeLocked { target: guarantee.target() },
                    Proposal::Remove { target, left_amount } => LedgerEvent::GuaranteeReleased { target, left_amount },
                    Proposal::Reserve { .. } | Proposal::Credit { .. } | Proposal::CancelReserve { .. } => {
                        LedgerEvent::TopUpAgreed { proposal: *p }
                    }
                });
            }
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
        for p in self.queue.iter().flat_map(|e| e.signed.proposals.iter()) {
            let applied = latest.apply(p);
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

    /// Replays a state-changing event, verifying it as if it came from the peer: a proposal
    /// is recomputed from the latest state and its signature checked, a countersignature or a
    /// rejection is checked against the queued state it names. A forged or foreign log is a
    /// [`ChannelError::Replay`] and changes nothing. Returns the proposals a replayed
    /// rejection dropped. Descriptive events change nothing.
    pub fn replay_event(&mut self, event: &LedgerEvent) -> Result<Vec<QueuedProposal>, ChannelError> {
        let replay = |e: ChannelError| match e {
            ChannelError::Replay(_) => e,
            other => ChannelError::Replay(other.to_string()),
        };
        match event {
            LedgerEvent::ProposalQueued { signed, state_hash } => {
                let hash = self.verify_and_apply(signed, Some(*state_hash)).map_err(replay)?;
                self.enqueue(signed.clone(), hash, &mut Vec::new());
                Ok(Vec::new())
            }
            LedgerEvent::ConsensusAdvanced { turn, state_hash, countersignature } => {
                let hash = self.verify_countersignature(*turn, countersignature).map_err(replay)?;
                if hash != *state_hash {
                    return Err(ChannelError::Replay(format!("consensus at turn {turn}: state hash mismatch")));
                }
                self.advance_consensus(*turn, *countersignature, &mut Vec::new());
                Ok(Vec::new())
            }
            LedgerEvent::ProposalRejected { rejection, refused } => {
                let entry = self.verify_rejection(rejection).map_err(replay)?;
                let expected: Vec<Proposal> = entry
                    .signed
                    .proposals
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| rejection.refuses(*i))
                    .map(|(_, p)| *p)
                    .collect();
                if expected != *refused {
                    return Err(ChannelError::Replay(format!(
                        "rejection at turn {}: refused changes mismatch",
                        rejection.turn_num
                    )));
                }
                Ok(self.truncate_from(rejection.turn_num))
            }
            LedgerEvent::Closing { .. }
            | LedgerEvent::ProposalDropped { .. }
            | LedgerEvent::GuaranteeProposed { .. }
            | LedgerEvent::GuaranteeLocked { .. }
            | LedgerEvent::GuaranteeRemovalProposed { .. }
            | LedgerEvent::GuaranteeReleased { .. }
            | LedgerEvent::TopUpProposed { .. }
            | LedgerEvent::TopUpAgreed { .. } => Ok(Vec::new()),
        }
    }
}
