//! A party as durable state, one record per thing: each ledger ([`LedgerRecord`]), each
//! objective ([`ObjectiveRecord`]), what the party knows of each channel besides its ledger
//! ([`ChannelRecord`]: the chain's record, what was paid, the latest voucher), and a small
//! record of the rest ([`PartyRecord`]). After each input, [`Party::take_touched`] names the
//! records that changed, so a store writes only those; [`Party::restore`] builds the party
//! back from them, verifying every ledger (its signatures, every queued proposal). Restart cost
//! follows the live state, never the history.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::{
    chain_view::ChannelChain, exit::Defence, objective::Crank, Entry, Objective, ObjectiveId, Party, PartyConfig,
    PartyError, PartyPolicy,
};
use crate::{ChannelId, ConsensusChannel, LedgerRecord, Proposal, SigningKey, TurnNum, Voucher, U256};

/// Timer ticks a finished objective stays in the live state before it is archived.
pub const EVICT_AFTER_TICKS: u32 = 100;

/// What a store keeps one record for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StateKey {
    /// A ledger ([`LedgerRecord`]); gone once the ledger is closed.
    Ledger(ChannelId),
    /// An objective ([`ObjectiveRecord`]).
    Objective(ObjectiveId),
    /// What the party knows of a channel besides its ledger ([`ChannelRecord`]).
    Channel(ChannelId),
    /// The rest ([`PartyRecord`]).
    Party,
}

/// An objective as a store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectiveRecord {
    /// The objective.
    pub objective: Objective,
    /// Whether it completed.
    pub done: bool,
}

/// What the party knows of one channel besides its ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelRecord {
    /// What the chain says about it.
    pub chain: Option<ChannelChain>,
    /// What was paid in it (a virtual channel: issued as payer, received as payee).
    pub paid: Option<U256>,
    /// The latest voucher received (as payee).
    pub voucher: Option<Voucher>,
}

/// The rest of a party's state: small, global.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyRecord {
    closing: BTreeSet<ChannelId>,
    defences: BTreeMap<ChannelId, Defence>,
    deferred: BTreeMap<ChannelId, (TurnNum, u32)>,
    changes: BTreeMap<ChannelId, Vec<(ObjectiveId, Proposal)>>,
    chain_time: u64,
    /// Ledgers replaced by a withdrawal, with their successors.
    #[serde(default)]
    successors: BTreeMap<ChannelId, ChannelId>,
}

impl Party {
    /// The records changed since the last call (and forgets them): what a store writes after
    /// an input. A key whose record is now `None` is to be deleted.
    pub fn take_touched(&mut self) -> Vec<StateKey> {
        std::mem::take(&mut self.touched).into_iter().collect()
    }

    pub(crate) fn touch(&mut self, key: StateKey) {
        self.touched.insert(key);
    }

    /// On the timer: counts how long each finished objective has been finished.
    /// Also forgets the chain's record of channels nothing refers to any more (a closed
    /// ledger whose last events arrived after its objectives were archived, or events about
    /// a channel the party never had): what the store keeps follows the live state.
    pub(crate) fn age_finished(&mut self) {
        for (id, e) in &self.objectives {
            if e.done || e.objective.failure().is_some() {
                *self.finished_ticks.entry(*id).or_default() += 1;
            }
        }
        let referenced: std::collections::HashSet<ChannelId> =
            self.objectives.keys().map(|id| id.channel_id()).collect();
        let stale: Vec<ChannelId> = self
            .chain
            .channel_ids()
            .filter(|c| {
                !referenced.contains(c)
                    && !self.ledgers.contains_key(c)
                    && !self.defences.contains_key(c)
                    && !self.paid.contains_key(c)
                    && !self.vouchers.contains_key(c)
            })
            .collect();
        for c in stale {
            self.chain.forget(&c);
            self.touched.insert(StateKey::Channel(c));
        }
    }

    /// A ledger's record (`None`: no such ledger, or closed).
    pub fn ledger_record(&self, id: &ChannelId) -> Option<LedgerRecord> {
        self.ledgers.get(id).map(ConsensusChannel::to_record)
    }

    /// An objective's record.
    pub fn objective_record(&self, id: &ObjectiveId) -> Option<ObjectiveRecord> {
        self.objectives.get(id).map(|e| ObjectiveRecord { objective: e.objective.clone(), done: e.done })
    }

    /// What the party knows of a channel besides its ledger (`None`: nothing).
    pub fn channel_record(&self, id: &ChannelId) -> Option<ChannelRecord> {
        let record = ChannelRecord {
            chain: self.chain.channel(id).cloned(),
            paid: self.paid.get(id).copied(),
            voucher: self.vouchers.get(id).copied(),
        };
        (record != ChannelRecord::default()).then_some(record)
    }

    /// The rest of the party's state.
    pub fn party_record(&self) -> PartyRecord {
        PartyRecord {
            closing: self.closing.iter().copied().collect(),
            defences: self.defences.clone(),
            deferred: self.deferred.iter().map(|(k, v)| (*k, *v)).collect(),
            changes: self.changes.clone(),
            chain_time: self.chain.now(),
            successors: self.successors.clone(),
        }
    }

    /// Builds a party back from its records: every ledger verified (see [`LedgerRecord`]);
    /// a record that does not verify is an error and nothing is built.
    pub fn restore(
        key: SigningKey,
        config: PartyConfig,
        policy: PartyPolicy,
        party: PartyRecord,
        ledgers: impl IntoIterator<Item = LedgerRecord>,
        objectives: impl IntoIterator<Item = ObjectiveRecord>,
        channels: impl IntoIterator<Item = (ChannelId, ChannelRecord)>,
    ) -> Result<Self, PartyError> {
        let mut p = Party::new(key.clone(), config).with_policy(policy);
        let me = p.address();
        for record in ledgers {
            let channel = ConsensusChannel::from_record(key.clone(), &record)?;
            let id = channel.channel_id();
            if let Some(peer) = record.consensus.state().participants.iter().find(|a| **a != me).copied() {
                p.ledger_with.insert(peer, id);
                p.peers.insert(id, peer);
            }
            p.ledgers.insert(id, channel);
        }
        for record in objectives {
            let id = super::objective::Crank::id(&record.objective);
            p.objectives.insert(id, Entry { objective: record.objective, done: record.done });
        }
        for (id, record) in channels {
            if let Some(chain) = record.chain {
                p.chain.load(id, chain);
            }
            if let Some(paid) = record.paid {
                p.paid.insert(id, paid);
            }
            if let Some(voucher) = record.voucher {
                p.vouchers.insert(id, voucher);
            }
        }
        p.closing = party.closing.into_iter().collect();
        p.defences = party.defences;
        p.deferred = party.deferred.into_iter().collect();
        p.changes = party.changes;
        p.successors = party.successors;
        p.chain.advance(party.chain_time);
        p.touched.clear();
        Ok(p)
    }
}

impl Party {
    /// Every record key of the party's current state (a full write: the store's migration).
    pub fn all_keys(&self) -> Vec<StateKey> {
        let mut keys: std::collections::BTreeSet<StateKey> = std::collections::BTreeSet::new();
        keys.insert(StateKey::Party);
        keys.extend(self.ledgers.keys().map(|id| StateKey::Ledger(*id)));
        keys.extend(self.objectives.keys().map(|id| StateKey::Objective(*id)));
        keys.extend(self.paid.keys().chain(self.vouchers.keys()).map(|id| StateKey::Channel(*id)));
        keys.extend(self.chain.channel_ids().map(StateKey::Channel));
        keys.into_iter().collect()
    }

    /// Takes finished objectives out of the live state: completed ones (a virtual channel's
    /// funding once the channel is closed or taken to chain), and failed ones that committed
    /// nothing. Returns each with its final status (`"done"` or `"failed"`) and a word on it,
    /// for an archive; their records are marked touched (to be deleted), and so is what the
    /// party kept of a closed virtual channel (what was paid, the voucher).
    pub fn evict_finished(&mut self) -> Vec<(ObjectiveId, &'static str, String)> {
        let view = self.view();
        let mut out = Vec::new();
        for (id, entry) in &self.objectives {
            let closed_virtual = |c: &ChannelId| {
                [ObjectiveId::VirtualDefund(*c), ObjectiveId::ForceClose(*c)]
                    .iter()
                    .any(|k| self.objectives.get(k).is_some_and(|e| e.done))
            };
            // A finished objective stays a while: its peers may still ask for our copy of its
            // last round, and a virtual channel's funding serves until the channel is closed.
            let settled = self.finished_ticks.get(id).is_some_and(|t| *t >= EVICT_AFTER_TICKS);
            let evict = settled
                && match (id, entry.done) {
                    (ObjectiveId::VirtualFund(c), true) => closed_virtual(c),
                    (_, true) => true,
                    (_, false) => entry.objective.failure().is_some() && !entry.objective.has_committed(&view),
                };
            if evict {
                let detail = match entry.objective.failure() {
                    Some(why) if !entry.done => why.to_owned(),
                    _ => "done".to_owned(),
                };
                out.push((*id, if entry.done { "done" } else { "failed" }, detail));
            }
        }
        for (id, _, _) in &out {
            self.objectives.remove(id);
            self.finished_ticks.remove(id);
            self.touched.insert(StateKey::Objective(*id));
            if let ObjectiveId::VirtualFund(c) = id {
                self.paid.remove(c);
                self.vouchers.remove(c);
                self.touched.insert(StateKey::Channel(*c));
            }
        }
        out
    }
}
