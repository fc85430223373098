//! What a party knows of the chain, from the adjudicator's events: holdings, conclusions,
//! registered challenges, the highest turn recorded, and chain time. Objectives read it to
//! decide when a channel is funded, challenged or finalized, and with which outcome.

use std::collections::{HashMap, HashSet};

use alloy_primitives::B256;

use crate::{chain::SubmittedState, ChannelId, Exit, FixedPart, TurnNum, U256};

/// A challenge the chain registered for a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredChallenge {
    /// The challenged state's turn.
    pub turn: TurnNum,
    /// Chain time (unix seconds) at which the channel finalizes with it.
    pub finalizes_at: u64,
    /// The challenged state's hash: what `transfer` and `reclaim` name once it finalized.
    pub state_hash: B256,
    /// The challenged state's outcome.
    pub outcome: Exit,
    /// The challenged state, as submitted (variable part and signatures).
    pub candidate: SubmittedState,
    /// Block of the event.
    pub block_number: u64,
}

/// The party's view of the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChainView {
    holdings: HashMap<ChannelId, U256>,
    holdings_block: HashMap<ChannelId, u64>,
    concluded: HashSet<ChannelId>,
    challenges: HashMap<ChannelId, RegisteredChallenge>,
    records: HashMap<ChannelId, TurnNum>,
    /// Outcomes of final states this party knows (signed or received), by channel: what a
    /// channel concluded with, once a `Concluded` event names it.
    final_outcomes: HashMap<ChannelId, Exit>,
    /// The latest chain time seen (block timestamp, unix seconds).
    now: u64,
}

impl ChainView {
    /// What the chain holds for `channel` (of the channel's single asset).
    pub fn holdings(&self, channel: &ChannelId) -> U256 {
        self.holdings.get(channel).copied().unwrap_or_default()
    }

    /// Records holdings reported at `block`, ignoring reports older than the latest one seen
    /// (events may be delivered out of order). Within a block deposits only grow holdings.
    pub fn observe_holdings(&mut self, channel_id: ChannelId, block: u64, held: U256, deposit: bool) {
        let seen = self.holdings_block.get(&channel_id).copied();
        let current = self.holdings(&channel_id);
        let newer = match seen {
            None => true,
            Some(b) if block > b => true,
            Some(b) if block == b => !deposit || held > current,
            Some(_) => false,
        };
        if newer {
            self.holdings.insert(channel_id, held);
            self.holdings_block.insert(channel_id, block);
        }
    }

    /// Whether the channel was concluded with a final state.
    pub fn is_concluded(&self, channel: &ChannelId) -> bool {
        self.concluded.contains(channel)
    }

    pub fn conclude(&mut self, channel: ChannelId, at: u64) {
        self.concluded.insert(channel);
        self.advance(at);
    }

    /// Records a final state's outcome this party knows (it may conclude the channel).
    pub fn know_final_outcome(&mut self, channel: ChannelId, outcome: Exit) {
        self.final_outcomes.entry(channel).or_insert(outcome);
    }

    /// The challenge registered for `channel`, if any (cleared by a checkpoint).
    pub fn challenge(&self, channel: &ChannelId) -> Option<&RegisteredChallenge> {
        self.challenges.get(channel)
    }

    /// Records a `ChallengeRegistered`, computing the candidate's hash with `fixed`.
    pub fn register_challenge(
        &mut self,
        channel: ChannelId,
        fixed: &FixedPart,
        candidate: &SubmittedState,
        finalizes_at: u64,
        block_number: u64,
    ) {
        let state = candidate.state(fixed);
        let registered = RegisteredChallenge {
            turn: state.turn_num,
            finalizes_at,
            state_hash: state.hash(),
            outcome: state.outcome.clone(),
            candidate: candidate.clone(),
            block_number,
        };
        self.raise_record(channel, state.turn_num);
        self.challenges.insert(channel, registered);
    }

    /// Records a checkpoint (which clears a running challenge) at `turn`.
    pub fn checkpointed(&mut self, channel: ChannelId, turn: TurnNum) {
        self.raise_record(channel, turn);
        self.challenges.remove(&channel);
    }

    fn raise_record(&mut self, channel: ChannelId, turn: TurnNum) {
        let record = self.records.entry(channel).or_default();
        *record = (*record).max(turn);
    }

    /// The highest turn the chain recorded for `channel` (zero when none).
    pub fn record(&self, channel: &ChannelId) -> TurnNum {
        self.records.get(channel).copied().unwrap_or_default()
    }

    /// Moves chain time forward to `now` (never back).
    pub fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
    }

    /// The latest chain time seen.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// The fingerprint `transfer` and `reclaim` need once `channel` is finalized: the state hash
    /// (zero after a conclusion) and the outcome. `None` while it is not finalized, or when it
    /// concluded with a final state this party does not know.
    pub fn finalized(&self, channel: &ChannelId) -> Option<(B256, Exit)> {
        if self.concluded.contains(channel) {
            return self.final_outcomes.get(channel).map(|o| (B256::ZERO, o.clone()));
        }
        let c = self.challenges.get(channel)?;
        (c.finalizes_at <= self.now).then(|| (c.state_hash, c.outcome.clone()))
    }

    /// Whether the chain has finalized `channel` (whatever the outcome).
    pub fn is_finalized(&self, channel: &ChannelId) -> bool {
        self.concluded.contains(channel) || self.challenges.get(channel).is_some_and(|c| c.finalizes_at <= self.now)
    }
}
