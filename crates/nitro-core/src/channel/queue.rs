//! The ordered proposals after the consensus turn.

use std::collections::VecDeque;

use alloy_primitives::B256;

use super::SignedProposal;
use crate::TurnNum;

/// A proposal in the queue, with the hash of the state it produces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueuedProposal {
    /// The signed proposal.
    pub signed: SignedProposal,
    /// Hash of the ledger state at `signed.turn_num`.
    pub state_hash: B256,
}

/// Proposals after the consensus turn, oldest first, each applied to the one before.
///
/// Turns strictly increase. They are consecutive until a rejection; then the leader goes on
/// at fresh turns above every turn it ever signed, leaving a gap (ADR-0013). Appending and
/// acknowledging are O(1); lookup by turn is O(1) while the turns are consecutive and
/// O(log n) across gaps. Nothing here ever replays the queue.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProposalQueue {
    entries: VecDeque<QueuedProposal>,
}

impl ProposalQueue {
    /// Number of proposals waiting.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no proposal waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn index_of(&self, turn: TurnNum) -> Result<usize, usize> {
        let Some(first) = self.entries.front().map(|e| e.signed.turn_num) else { return Err(0) };
        // The common case: no gap between `first` and `turn`.
        if let Some(offset) = turn.checked_sub(first).and_then(|d| usize::try_from(d.to::<u64>()).ok()) {
            if self.entries.get(offset).is_some_and(|e| e.signed.turn_num == turn) {
                return Ok(offset);
            }
        }
        self.entries.binary_search_by_key(&turn, |e| e.signed.turn_num)
    }

    /// The entry at `turn`, if queued.
    pub fn get(&self, turn: TurnNum) -> Option<&QueuedProposal> {
        self.index_of(turn).ok().and_then(|i| self.entries.get(i))
    }

    /// The newest entry.
    pub fn back(&self) -> Option<&QueuedProposal> {
        self.entries.back()
    }

    /// The oldest entry.
    pub fn front(&self) -> Option<&QueuedProposal> {
        self.entries.front()
    }

    /// The entries, oldest first.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &QueuedProposal> {
        self.entries.iter()
    }

    /// Appends an entry; its turn must be above the last one and its `previous_turn` must be
    /// the last one's turn (checked by the caller).
    pub(crate) fn push(&mut self, entry: QueuedProposal) {
        debug_assert!(self.entries.back().is_none_or(
            |b| b.signed.turn_num == entry.signed.previous_turn && b.signed.turn_num < entry.signed.turn_num
        ));
        self.entries.push_back(entry);
    }

    /// Removes and returns the oldest entry if its turn is at most `turn`.
    pub(crate) fn pop_through(&mut self, turn: TurnNum) -> Option<QueuedProposal> {
        if self.entries.front()?.signed.turn_num <= turn {
            self.entries.pop_front()
        } else {
            None
        }
    }

    /// Removes every entry from `turn` on and returns them, oldest first.
    pub(crate) fn split_off(&mut self, turn: TurnNum) -> Vec<QueuedProposal> {
        let at = match self.index_of(turn) {
            Ok(i) | Err(i) => i,
        };
        self.entries.split_off(at).into()
    }
}
