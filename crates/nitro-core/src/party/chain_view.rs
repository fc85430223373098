//! What a party knows of the chain, from the adjudicator's events: holdings, conclusions,
//! registered challenges, the highest turn recorded, and chain time. Objectives read it to
//! decide when a channel is funded, challenged or finalized, and with which outcome.
//!
//! Kept per channel ([`ChannelChain`]), so that a store writes only the channels an event
//! touched, and forgets a channel's record once the channel is closed.
//!
//! Events arrive once they are final at the configured depth; a reorg deeper than that is
//! reported as a [`ChainEvent::Retracted`](crate::chain::ChainEvent::Retracted), which
//! [`ChainView::retract`] undoes: holdings and the turn record go back to the values re-read
//! at the last shared block, conclusions and challenges registered in the blocks taken back
//! are forgotten, and a challenge cleared in them is registered again.

use std::collections::{BTreeMap, HashMap};

use alloy_primitives::{Address, B256};
use serde::{Deserialize, Serialize};

use crate::{chain::SubmittedState, ChannelId, Exit, FixedPart, TurnNum, U256};

/// A challenge the chain registered for a channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// What the adjudicator holds of one asset for a channel, and the block of that report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetHoldings {
    /// What the adjudicator holds.
    #[serde(with = "crate::json::uint256")]
    pub held: U256,
    /// The block of the latest report.
    pub block: Option<u64>,
}

/// What the chain says about one channel.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelChain {
    /// What the adjudicator holds for it, per asset (`holdings[asset][channel]` on chain): only
    /// assets the channel holds are recorded (the party filters reports of other assets).
    #[serde(default)]
    pub assets: BTreeMap<Address, AssetHoldings>,
    /// Holdings recorded before they were kept per asset (a single-asset channel's, asset
    /// unnamed): read as the holdings of any asset asked for until a per-asset report comes,
    /// which replaces them. Never written any more.
    #[serde(default, rename = "holdings", skip_serializing)]
    pub legacy_holdings: Option<U256>,
    /// The block of the legacy holdings.
    #[serde(default, rename = "holdings_block", skip_serializing)]
    pub legacy_block: Option<u64>,
    /// Concluded with a final state: the block of the conclusion.
    pub concluded: Option<u64>,
    /// The running (or expired) challenge; cleared by a checkpoint.
    pub challenge: Option<RegisteredChallenge>,
    /// The latest challenge a checkpoint cleared, with the block that cleared it: what a
    /// retraction of that block registers again.
    pub cleared: Option<(RegisteredChallenge, u64)>,
    /// The highest turn recorded.
    pub record: TurnNum,
    /// The outcome of a final state this party knows (signed or received): what the channel
    /// concluded with, once a `Concluded` event names it.
    pub final_outcome: Option<Exit>,
}

/// The party's view of the chain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct ChainView {
    channels: HashMap<ChannelId, ChannelChain>,
    /// The latest chain time seen (block timestamp, unix seconds).
    now: u64,
}

impl ChainView {
    fn get(&self, channel: &ChannelId) -> Option<&ChannelChain> {
        self.channels.get(channel)
    }

    fn entry(&mut self, channel: ChannelId) -> &mut ChannelChain {
        self.channels.entry(channel).or_default()
    }

    /// One channel's record, for a store.
    pub fn channel(&self, channel: &ChannelId) -> Option<&ChannelChain> {
        self.get(channel)
    }

    /// The channels the view has a record of.
    pub fn channel_ids(&self) -> impl Iterator<Item = ChannelId> + '_ {
        self.channels.keys().copied()
    }

    /// Puts back a channel's record loaded from a store.
    pub fn load(&mut self, channel: ChannelId, record: ChannelChain) {
        self.channels.insert(channel, record);
    }

    /// Forgets a channel (closed, paid out).
    pub fn forget(&mut self, channel: &ChannelId) {
        self.channels.remove(channel);
    }

    /// What the chain holds of `asset` for `channel`.
    pub fn holdings(&self, channel: &ChannelId, asset: Address) -> U256 {
        self.get(channel).map(|c| c.holdings_of(asset).held).unwrap_or_default()
    }

    /// The first non-zero holdings of `assets` for `channel` (zero when it holds none of
    /// them): whether, and what, a channel paying out all its assets still holds.
    pub fn held_any(&self, channel: &ChannelId, assets: impl IntoIterator<Item = Address>) -> U256 {
        assets.into_iter().map(|a| self.holdings(channel, a)).find(|h| !h.is_zero()).unwrap_or_default()
    }

    /// Records holdings of `asset` reported at `block`, ignoring reports older than the latest
    /// one seen for that asset (events may be delivered out of order). Within a block deposits
    /// only grow holdings.
    pub fn observe_holdings(&mut self, channel_id: ChannelId, asset: Address, block: u64, held: U256, deposit: bool) {
        let c = self.entry(channel_id);
        let h = c.holdings_of(asset);
        let newer = match h.block {
            None => true,
            Some(b) if block > b => true,
            Some(b) if block == b => !deposit || held > h.held,
            Some(_) => false,
        };
        if newer {
            c.set_holdings(asset, AssetHoldings { held, block: Some(block) });
        }
    }

    /// Whether the channel was concluded with a final state.
    pub fn is_concluded(&self, channel: &ChannelId) -> bool {
        self.get(channel).is_some_and(|c| c.concluded.is_some())
    }

    /// Records a `Concluded` in `block`, finalized at chain time `at`.
    pub fn conclude(&mut self, channel: ChannelId, block: u64, at: u64) {
        self.entry(channel).concluded.get_or_insert(block);
        self.advance(at);
    }

    /// Records a final state's outcome this party knows (it may conclude the channel).
    pub fn know_final_outcome(&mut self, channel: ChannelId, outcome: Exit) {
        self.entry(channel).final_outcome.get_or_insert(outcome);
    }

    /// The challenge registered for `channel`, if any (cleared by a checkpoint).
    pub fn challenge(&self, channel: &ChannelId) -> Option<&RegisteredChallenge> {
        self.get(channel)?.challenge.as_ref()
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
        let c = self.entry(channel);
        c.record = c.record.max(state.turn_num);
        c.challenge = Some(registered);
    }

    /// Records a checkpoint in `block` (which clears a running challenge) at `turn`.
    pub fn checkpointed(&mut self, channel: ChannelId, turn: TurnNum, block: u64) {
        let c = self.entry(channel);
        c.record = c.record.max(turn);
        if let Some(cleared) = c.challenge.take() {
            c.cleared = Some((cleared, block));
        }
    }

    /// Undoes every event of `channel` reported from block `from_block` on (a reorg took those
    /// blocks back): holdings and the turn record become the values re-read at `at_block`
    /// (the last block both chains share); a conclusion or a challenge registered from
    /// `from_block` on is forgotten; a challenge cleared from `from_block` on runs again. The
    /// new chain's events follow and apply as usual. Chain time does not go back.
    pub fn retract(&mut self, channel: ChannelId, from_block: u64, at_block: u64, re_read: ReRead) {
        let Some(c) = self.channels.get_mut(&channel) else {
            return; // nothing of it was ever recorded here
        };
        if let Some((asset, held)) = re_read.held {
            c.set_holdings(asset, AssetHoldings { held, block: Some(at_block) });
        }
        if c.concluded.is_some_and(|b| b >= from_block) {
            c.concluded = None;
        }
        if c.challenge.as_ref().is_some_and(|ch| ch.block_number >= from_block) {
            c.challenge = None;
        }
        if let Some((challenge, cleared_at)) = c.cleared.take() {
            if cleared_at >= from_block {
                if challenge.block_number < from_block && c.challenge.is_none() {
                    c.challenge = Some(challenge);
                }
            } else {
                c.cleared = Some((challenge, cleared_at));
            }
        }
        if re_read.finalizes_at == 0 {
            // Open at the shared block: nothing registered there can still run.
            c.challenge = None;
            c.concluded = None;
        }
        c.record = re_read.turn_num_record;
    }

    /// The highest turn the chain recorded for `channel` (zero when none).
    pub fn record(&self, channel: &ChannelId) -> TurnNum {
        self.get(channel).map(|c| c.record).unwrap_or_default()
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
        let c = self.get(channel)?;
        if c.concluded.is_some() {
            return c.final_outcome.clone().map(|o| (B256::ZERO, o));
        }
        let ch = c.challenge.as_ref()?;
        (ch.finalizes_at <= self.now).then(|| (ch.state_hash, ch.outcome.clone()))
    }

    /// Whether the chain has finalized `channel` (whatever the outcome).
    pub fn is_finalized(&self, channel: &ChannelId) -> bool {
        self.get(channel).is_some_and(|c| {
            c.concluded.is_some() || c.challenge.as_ref().is_some_and(|ch| ch.finalizes_at <= self.now)
        })
    }
}

impl ChannelChain {
    /// The holdings of `asset` (the legacy record, if no per-asset report came yet).
    pub fn holdings_of(&self, asset: Address) -> AssetHoldings {
        match self.assets.get(&asset) {
            Some(h) => *h,
            None => AssetHoldings { held: self.legacy_holdings.unwrap_or_default(), block: self.legacy_block },
        }
    }

    /// Replaces the holdings of `asset`; a legacy record is dropped (it was this asset's: the
    /// party records only assets the channel holds, and a legacy channel holds one).
    fn set_holdings(&mut self, asset: Address, holdings: AssetHoldings) {
        self.legacy_holdings = None;
        self.legacy_block = None;
        self.assets.insert(asset, holdings);
    }
}

/// What a retraction re-read from the chain at the last block both chains share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReRead {
    /// The channel's holdings of one asset it holds (`None`: the asset re-read is not one of
    /// the channel's, its holdings stay as they are).
    pub held: Option<(Address, U256)>,
    /// The adjudicator's turn number record.
    pub turn_num_record: TurnNum,
    /// The channel's finalization time (0: open).
    pub finalizes_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::fixtures::ledger_state;
    use crate::U48;

    fn submitted(turn: u64) -> SubmittedState {
        SubmittedState { variable_part: ledger_state(turn, false, false).variable_part(), signatures: vec![] }
    }

    #[test]
    fn holdings_are_kept_per_asset_and_a_legacy_record_reads_as_the_channels_asset() {
        let id = ChannelId::repeat_byte(2);
        let token = Address::repeat_byte(7);
        let mut view = ChainView::default();
        view.observe_holdings(id, Address::ZERO, 10, U256::from(5), true);
        view.observe_holdings(id, token, 9, U256::from(3), true);
        assert_eq!((view.holdings(&id, Address::ZERO), view.holdings(&id, token)), (U256::from(5), U256::from(3)));
        assert_eq!(view.held_any(&id, [token, Address::ZERO]), U256::from(3));
        // A record written before per-asset holdings: one value, no asset.
        let mut json = serde_json::to_value(ChannelChain::default()).unwrap();
        json["holdings"] = serde_json::to_value(U256::from(9)).unwrap();
        json["holdings_block"] = serde_json::json!(4);
        let legacy: ChannelChain = serde_json::from_value(json).unwrap();
        let mut view = ChainView::default();
        view.load(id, legacy);
        assert_eq!(view.holdings(&id, token), U256::from(9));
        view.observe_holdings(id, token, 3, U256::from(1), true);
        assert_eq!(view.holdings(&id, token), U256::from(9), "older than the legacy report");
        view.observe_holdings(id, token, 5, U256::from(11), true);
        assert_eq!(view.holdings(&id, token), U256::from(11));
        assert!(view.channel(&id).is_some_and(|c| c.legacy_holdings.is_none()), "replaced");
        assert!(serde_json::to_value(view.channel(&id).unwrap()).unwrap().get("holdings").is_none());
    }

    #[test]
    fn a_retraction_undoes_what_the_blocks_taken_back_did() {
        let fixed = ledger_state(0, false, false).fixed_part();
        let id = ChannelId::repeat_byte(1);
        let mut view = ChainView::default();
        view.observe_holdings(id, Address::ZERO, 10, U256::from(5), true);
        view.observe_holdings(id, Address::ZERO, 12, U256::from(12), true);
        view.register_challenge(id, &fixed, &submitted(2), 1_000, 13);
        view.checkpointed(id, U48::from(4), 14);
        assert!(view.challenge(&id).is_none());
        assert_eq!(view.record(&id), U48::from(4));

        // Blocks 14 on are taken back: the checkpoint is void, the challenge runs again.
        let re_read =
            ReRead { held: Some((Address::ZERO, U256::from(12))), turn_num_record: U48::from(2), finalizes_at: 1_000 };
        view.retract(id, 14, 13, re_read);
        assert_eq!(view.challenge(&id).map(|c| c.turn), Some(U48::from(2)));
        assert_eq!(view.record(&id), U48::from(2));
        assert_eq!(view.holdings(&id, Address::ZERO), U256::from(12));

        // Blocks 12 on: the second deposit and the challenge are void too.
        let re_read =
            ReRead { held: Some((Address::ZERO, U256::from(5))), turn_num_record: U48::ZERO, finalizes_at: 0 };
        view.retract(id, 12, 11, re_read);
        assert!(view.challenge(&id).is_none());
        assert_eq!(view.holdings(&id, Address::ZERO), U256::from(5));
        // The new chain's events apply again, even at the blocks of the void ones.
        view.observe_holdings(id, Address::ZERO, 12, U256::from(12), true);
        assert_eq!(view.holdings(&id, Address::ZERO), U256::from(12));

        view.conclude(id, 20, 2_000);
        assert!(view.is_concluded(&id));
        view.retract(
            id,
            21,
            20,
            ReRead { held: Some((Address::ZERO, U256::ZERO)), turn_num_record: U48::ZERO, finalizes_at: 2_000 },
        );
        assert!(view.is_concluded(&id), "concluded before the blocks taken back");
        view.retract(
            id,
            20,
            19,
            ReRead { held: Some((Address::ZERO, U256::from(12))), turn_num_record: U48::ZERO, finalizes_at: 0 },
        );
        assert!(!view.is_concluded(&id));
        assert_eq!(view.now(), 2_000, "chain time does not go back");
    }
}
