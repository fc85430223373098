//! Where each guarantee of a ledger stands (ADR-0014).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::{LedgerOutcome, Proposal, QueuedProposal};
use crate::ChannelId;

/// The lifecycle of a guarantee: proposed → locked → removal proposed → released (gone).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuaranteeStatus {
    /// An `Add` is queued but not yet in the consensus state: nothing is locked.
    Proposed,
    /// In the consensus state: the funds are locked and redeemable on chain.
    Locked,
    /// A `Remove` is queued; the funds stay locked until it reaches consensus.
    RemovalProposed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    locked: bool,
    removal_proposed: bool,
}

/// Tracks every guarantee of one ledger by target.
///
/// A guarantee counts as locked only once it is in the *consensus* state (signed by both),
/// never when merely proposed: a virtual channel's postfund round waits for that.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuaranteeManager {
    entries: HashMap<ChannelId, Entry>,
}

impl GuaranteeManager {
    /// Statuses for a consensus outcome and the proposals queued after it.
    pub(crate) fn rebuild<'a>(consensus: &LedgerOutcome, queue: impl Iterator<Item = &'a QueuedProposal>) -> Self {
        let mut m = Self::default();
        for g in consensus.guarantees() {
            m.entries.insert(g.target(), Entry { locked: true, removal_proposed: false });
        }
        for p in queue.flat_map(|q| q.signed.proposals.iter()) {
            m.on_proposed(p);
        }
        m
    }

    /// Where the guarantee for `target` stands; `None` if there is none (never added, or released).
    pub fn status(&self, target: &ChannelId) -> Option<GuaranteeStatus> {
        self.entries.get(target).map(|e| match e {
            Entry { removal_proposed: true, .. } => GuaranteeStatus::RemovalProposed,
            Entry { locked: true, .. } => GuaranteeStatus::Locked,
            Entry { locked: false, .. } => GuaranteeStatus::Proposed,
        })
    }

    /// Whether the guarantee for `target` is in the consensus state.
    pub fn is_locked(&self, target: &ChannelId) -> bool {
        self.entries.get(target).is_some_and(|e| e.locked)
    }

    /// Number of guarantees tracked (proposed, locked or being removed).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no guarantee is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub(crate) fn on_proposed(&mut self, proposal: &Proposal) {
        match proposal {
            Proposal::Add { guarantee, .. } => {
                self.entries.insert(guarantee.target(), Entry { locked: false, removal_proposed: false });
            }
            Proposal::Remove { target, .. } => {
                if let Some(e) = self.entries.get_mut(target) {
                    e.removal_proposed = true;
                }
            }
            Proposal::Reserve { .. } | Proposal::Credit { .. } | Proposal::CancelReserve { .. } => {}
        }
    }

    pub(crate) fn on_consensus(&mut self, proposal: &Proposal) {
        match proposal {
            Proposal::Add { guarantee, .. } => {
                if let Some(e) = self.entries.get_mut(&guarantee.target()) {
                    e.locked = true;
                }
            }
            Proposal::Remove { target, .. } => {
                self.entries.remove(target);
            }
            Proposal::Reserve { .. } | Proposal::Credit { .. } | Proposal::CancelReserve { .. } => {}
        }
    }
}
