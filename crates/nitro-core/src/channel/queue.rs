//! The ordered proposals after the consensus turn.

use std::collections::VecDeque;

use alloy_primitives::B256;

use super::SignedProposal;
use crate::TurnNum;

/// A proposal in the queue, with the hash of the state it produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuedProposal {
    /// The signed proposal.
    pub signed: SignedProposal,
    /// Hash of the ledger state at `signed.turn_num`.
    pub state_hash: B256,
}

/// Proposals at consecutive turns after the consensus turn, oldest first.
///
/// Appending, looking up by turn and acknowledging are O(1) in the queue length (each
/// acknowledged entry is popped once); nothing here ever replays the queue.
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

    /// The entry at `turn`, if queued.
    pub fn get(&self, turn: TurnNum) -> Option<&QueuedProposal> {
        let first = self.entries.front()?.signed.turn_num;
        let offset = usize::try_from(turn.checked_sub(first)?.to::<u64>()).ok()?;
        self.entries.get(offset)
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

    /// Appends an entry; its turn must follow the last one (checked by the caller).
    pub(crate) fn push(&mut self, entry: QueuedProposal) {
        debug_assert!(self
            .entries
            .back()
            .is_none_or(|b| b.signed.turn_num + TurnNum::from(1) == entry.signed.turn_num));
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
        let Some(first) = self.entries.front().map(|e| e.signed.turn_num) else {
            return Vec::new();
        };
        let at = turn.saturating_sub(first).to::<u64>().min(self.entries.len() as u64) as usize;
        self.entries.split_off(at).into()
    }
}
