//! Test doubles for Nitro ledger channels.
//!
//! [`MemoryAdjudicator`] executes the core's [`ChainTransaction`]s as the `NitroAdjudicator`
//! (2.0.1-alpha.6) does — deposits with `expectedHeld`, checkpoints, challenges with their
//! mode and turn rules, the `ConsensusApp` and `VirtualPaymentApp` support rules, conclusions,
//! `transfer` and `reclaim` with fingerprints — and reports the events the contract emits. It
//! serves unit tests of the core, the network simulator and the fuzzers: fast and
//! deterministic. What a feature is done on is the real contract on anvil.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

use std::collections::HashMap;

use alloy_primitives::{Address, B256, U256};
use nitro_core::{
    abi, address_of,
    chain::{after_reclaim, after_transfer, ChainEvent, ChainTransaction, SubmittedState},
    challenge_hash, recover_signer, ChannelId, Exit, SignedState, TurnNum, Voucher,
};
use thiserror::Error;

/// Why the adjudicator reverted a transaction (the contract's reason, in words).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("reverted: {0}")]
pub struct Revert(pub String);

fn revert<T>(why: impl Into<String>) -> Result<T, Revert> {
    Err(Revert(why.into()))
}

/// One channel's record: `turnNumRecord`, `finalizesAt` and the fingerprinted state hash and
/// outcome hash.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Status {
    /// The highest turn recorded.
    pub turn_num_record: TurnNum,
    /// When the channel finalizes (0: open).
    pub finalizes_at: u64,
    /// Fingerprinted state hash.
    pub state_hash: B256,
    /// Fingerprinted outcome hash.
    pub outcome_hash: B256,
}

/// Where a channel stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// No challenge, not finalized.
    Open,
    /// A challenge runs.
    Challenge,
    /// Finalized.
    Finalized,
}

/// An in-memory `NitroAdjudicator`, with a chain clock. Holdings are kept per (channel,
/// asset), as `holdings[asset][channelId]` on chain; token transfers are not modelled (a
/// deposit credits, a payout is recorded per recipient and asset).
#[derive(Clone, Debug, Default)]
pub struct MemoryAdjudicator {
    /// The `ConsensusApp` address (ledgers).
    pub consensus_app: Address,
    /// The `VirtualPaymentApp` address (virtual channels).
    pub virtual_payment_app: Address,
    holdings: HashMap<(ChannelId, Address), U256>,
    status: HashMap<ChannelId, Status>,
    /// What each external address received from payouts (all assets summed).
    pub paid_out: HashMap<Address, U256>,
    /// What each sender deposited (all assets summed).
    pub deposited: HashMap<Address, U256>,
    /// What each external address received from payouts, per `(asset, address)`.
    pub paid_out_of: HashMap<(Address, Address), U256>,
    /// What each sender deposited, per `(asset, sender)`.
    pub deposited_of: HashMap<(Address, Address), U256>,
    /// The block the next transaction goes into.
    pub block: u64,
    /// Chain time (the next block's timestamp), unix seconds.
    pub now: u64,
    /// Transactions reverted so far.
    pub reverts: u64,
}

impl MemoryAdjudicator {
    /// An adjudicator judging ledgers with `consensus_app` and virtual channels with
    /// `virtual_payment_app`, at chain time `now`.
    pub fn new(consensus_app: Address, virtual_payment_app: Address, now: u64) -> Self {
        Self { consensus_app, virtual_payment_app, block: 1, now, ..Self::default() }
    }

    /// What the channel holds of ETH.
    pub fn holdings(&self, channel: &ChannelId) -> U256 {
        self.holdings_of(channel, Address::ZERO)
    }

    /// What the channel holds of `asset`.
    pub fn holdings_of(&self, channel: &ChannelId, asset: Address) -> U256 {
        self.holdings.get(&(*channel, asset)).copied().unwrap_or_default()
    }

    /// Every channel's holdings, of every asset.
    pub fn all_holdings(&self) -> impl Iterator<Item = (&ChannelId, &U256)> {
        self.holdings.iter().map(|((channel, _), held)| (channel, held))
    }

    /// The channel's record.
    pub fn status(&self, channel: &ChannelId) -> Status {
        self.status.get(channel).copied().unwrap_or_default()
    }

    /// The channel's mode now.
    pub fn mode(&self, channel: &ChannelId) -> Mode {
        let s = self.status(channel);
        if s.finalizes_at == 0 {
            Mode::Open
        } else if s.finalizes_at <= self.now {
            Mode::Finalized
        } else {
            Mode::Challenge
        }
    }

    /// Moves chain time on by `secs`.
    pub fn advance(&mut self, secs: u64) {
        self.now += secs;
    }

    /// Executes `tx` sent by `sender` in the next block; the events it emits, or why it
    /// reverted (nothing changes then).
    pub fn execute(&mut self, sender: Address, tx: &ChainTransaction) -> Result<Vec<ChainEvent>, Revert> {
        let mut next = self.clone();
        match next.apply(sender, tx) {
            Ok(events) => {
                *self = next;
                self.block += 1;
                Ok(events)
            }
            Err(e) => {
                self.reverts += 1;
                Err(e)
            }
        }
    }

    fn apply(&mut self, sender: Address, tx: &ChainTransaction) -> Result<Vec<ChainEvent>, Revert> {
        tx.validate().map_err(|e| Revert(e.to_string()))?;
        let block_number = self.block;
        match tx {
            ChainTransaction::Deposit { channel_id, asset, expected_held, amount } => {
                let held = self.holdings_of(channel_id, *asset);
                if held != *expected_held {
                    return revert("held != expectedHeld");
                }
                let now_held = held + amount;
                self.holdings.insert((*channel_id, *asset), now_held);
                *self.deposited.entry(sender).or_default() += *amount;
                *self.deposited_of.entry((*asset, sender)).or_default() += *amount;
                Ok(vec![ChainEvent::Deposited { channel_id: *channel_id, block_number, asset: *asset, now_held }])
            }
            // An allowance on a token: nothing the adjudicator records.
            ChainTransaction::Approve { .. } => Ok(Vec::new()),
            ChainTransaction::Checkpoint { state } => {
                let channel_id = state.channel_id();
                self.require_not_finalized(&channel_id)?;
                let turn = state.state().turn_num;
                if turn <= self.status(&channel_id).turn_num_record {
                    return revert("turnNumRecord not increased.");
                }
                self.require_supported(&[], state)?;
                let was = self.mode(&channel_id);
                self.status.insert(channel_id, Status { turn_num_record: turn, ..Status::default() });
                Ok(vec![match was {
                    Mode::Open => ChainEvent::Checkpointed { channel_id, block_number, new_turn_num_record: turn },
                    _ => ChainEvent::ChallengeCleared { channel_id, block_number, new_turn_num_record: turn },
                }])
            }
            ChainTransaction::Challenge { proof, state, challenger_signature } => {
                let channel_id = state.channel_id();
                let turn = state.state().turn_num;
                let record = self.status(&channel_id).turn_num_record;
                match self.mode(&channel_id) {
                    Mode::Open if turn < record => return revert("turnNumRecord decreased."),
                    Mode::Challenge if turn <= record => return revert("turnNumRecord not increased."),
                    Mode::Finalized => return revert("Channel finalized."),
                    _ => {}
                }
                self.require_supported(proof, state)?;
                let challenger = recover_signer(&challenge_hash(&state.hash()), challenger_signature)
                    .map_err(|e| Revert(e.to_string()))?;
                if !state.state().participants.contains(&challenger) {
                    return revert("Challenger is not a participant");
                }
                let finalizes_at = self.now + state.state().challenge_duration.to::<u64>();
                self.status.insert(
                    channel_id,
                    Status {
                        turn_num_record: turn,
                        finalizes_at,
                        state_hash: state.hash(),
                        outcome_hash: state.state().outcome.hash(),
                    },
                );
                let submitted = |s: &SignedState| SubmittedState {
                    variable_part: s.state().variable_part(),
                    signatures: s.signatures().iter().flatten().copied().collect(),
                };
                Ok(vec![ChainEvent::ChallengeRegistered {
                    channel_id,
                    block_number,
                    finalizes_at,
                    proof: proof.iter().map(submitted).collect(),
                    candidate: submitted(state),
                }])
            }
            ChainTransaction::Conclude { state } => Ok(vec![self.conclude(state, block_number)?]),
            ChainTransaction::ConcludeAndTransferAllAssets { state } => {
                let concluded = self.conclude(state, block_number)?;
                let channel_id = state.channel_id();
                let mut events = vec![concluded];
                // Every asset, each against the outcome the previous ones left.
                let mut outcome = state.state().outcome.clone();
                for asset_index in 0..outcome.0.len() {
                    let (event, after) =
                        self.transfer(channel_id, asset_index, &outcome, B256::ZERO, &[], block_number)?;
                    events.push(event);
                    outcome = after;
                }
                Ok(events)
            }
            ChainTransaction::Transfer { channel_id, asset_index, outcome, state_hash, indices } => {
                Ok(vec![self.transfer(*channel_id, *asset_index, outcome, *state_hash, indices, block_number)?.0])
            }
            ChainTransaction::Reclaim {
                source_channel_id,
                source_state_hash,
                source_outcome,
                source_asset_index,
                index_of_target_in_source,
                target_state_hash,
                target_outcome,
                target_asset_index,
            } => {
                self.require_finalized(source_channel_id)?;
                self.require_fingerprint(source_channel_id, *source_state_hash, source_outcome)?;
                let guarantee = source_outcome
                    .0
                    .get(*source_asset_index)
                    .and_then(|a| a.allocations.get(*index_of_target_in_source))
                    .ok_or_else(|| Revert("index out of range".into()))?;
                let target = guarantee.destination;
                self.require_finalized(&target)?;
                self.require_fingerprint(&target, *target_state_hash, target_outcome)?;
                let new = after_reclaim(
                    source_outcome,
                    *source_asset_index,
                    *index_of_target_in_source,
                    target_outcome,
                    *target_asset_index,
                )
                .map_err(|e| Revert(e.to_string()))?;
                let status = self.status.entry(*source_channel_id).or_default();
                status.outcome_hash = new.hash();
                Ok(vec![ChainEvent::Reclaimed {
                    channel_id: *source_channel_id,
                    block_number,
                    asset_index: U256::from(*source_asset_index),
                }])
            }
        }
    }

    fn conclude(&mut self, state: &SignedState, block_number: u64) -> Result<ChainEvent, Revert> {
        let channel_id = state.channel_id();
        self.require_not_finalized(&channel_id)?;
        if !state.state().is_final {
            return revert("State must be final");
        }
        if !state.is_fully_signed() {
            return revert("!unanimous");
        }
        self.status.insert(
            channel_id,
            Status {
                turn_num_record: TurnNum::ZERO,
                finalizes_at: self.now,
                state_hash: B256::ZERO,
                outcome_hash: state.state().outcome.hash(),
            },
        );
        Ok(ChainEvent::Concluded { channel_id, block_number, finalizes_at: self.now })
    }

    fn transfer(
        &mut self,
        channel_id: ChannelId,
        asset_index: usize,
        outcome: &Exit,
        state_hash: B256,
        indices: &[usize],
        block_number: u64,
    ) -> Result<(ChainEvent, Exit), Revert> {
        self.require_finalized(&channel_id)?;
        self.require_fingerprint(&channel_id, state_hash, outcome)?;
        let asset = outcome.0.get(asset_index).map(|e| e.asset).ok_or_else(|| Revert("asset index".into()))?;
        let initial_holdings = self.holdings_of(&channel_id, asset);
        let (new, _) =
            after_transfer(outcome, asset_index, initial_holdings, indices).map_err(|e| Revert(e.to_string()))?;
        // Pay what the allocations lost.
        let mut held = initial_holdings;
        let before = &outcome.0[asset_index].allocations;
        for (old, now) in before.iter().zip(&new.0[asset_index].allocations) {
            let paid = old.amount - now.amount;
            if paid.is_zero() {
                continue;
            }
            held -= paid;
            match address_of(&old.destination) {
                Some(who) => {
                    *self.paid_out.entry(who).or_default() += paid;
                    *self.paid_out_of.entry((asset, who)).or_default() += paid;
                }
                None => *self.holdings.entry((old.destination, asset)).or_default() += paid,
            }
        }
        self.holdings.insert((channel_id, asset), held);
        self.status.entry(channel_id).or_default().outcome_hash = new.hash();
        self.status.entry(channel_id).or_default().state_hash = state_hash;
        let event = ChainEvent::AllocationUpdated {
            channel_id,
            block_number,
            asset_index: U256::from(asset_index),
            initial_holdings,
            final_holdings: held,
        };
        Ok((event, new))
    }

    fn require_not_finalized(&self, channel: &ChannelId) -> Result<(), Revert> {
        if self.mode(channel) == Mode::Finalized {
            return revert("Channel finalized.");
        }
        Ok(())
    }

    fn require_finalized(&self, channel: &ChannelId) -> Result<(), Revert> {
        if self.mode(channel) != Mode::Finalized {
            return revert("Channel not finalized.");
        }
        Ok(())
    }

    fn require_fingerprint(&self, channel: &ChannelId, state_hash: B256, outcome: &Exit) -> Result<(), Revert> {
        let s = self.status(channel);
        if s.state_hash != state_hash || s.outcome_hash != outcome.hash() {
            return revert("incorrect fingerprint");
        }
        Ok(())
    }

    /// The app's `stateIsSupported`: the `ConsensusApp` (and any other app) needs every
    /// signature on the candidate and no proof; the `VirtualPaymentApp` supports its prefund
    /// and postfund unanimously, and a redemption (turn 2) signed by the payee on top of the
    /// unanimous postfund, carrying a payer's voucher and adjusting the outcome by it.
    fn require_supported(&self, proof: &[SignedState], candidate: &SignedState) -> Result<(), Revert> {
        let state = candidate.state();
        if state.app_definition != self.virtual_payment_app {
            if !proof.is_empty() {
                return revert("|proof|!=0");
            }
            if !candidate.is_fully_signed() {
                return revert("!unanimous");
            }
            return Ok(());
        }
        match proof {
            [] => {
                if !candidate.is_fully_signed() {
                    return revert("!unanimous; |proof|=0");
                }
                if state.turn_num > TurnNum::from(1) {
                    return revert("bad candidate turnNum; |proof|=0");
                }
                Ok(())
            }
            [postfund] => {
                if postfund.state().turn_num != TurnNum::from(1) || !postfund.is_fully_signed() {
                    return revert("postfund !unanimous; |proof|=1");
                }
                if state.turn_num != TurnNum::from(2) {
                    return revert("bad candidate turnNum; |proof|=1");
                }
                let payee = state.participants.len() - 1;
                if candidate.signature(payee).is_none() {
                    return revert("redemption not signed by Bob");
                }
                let voucher =
                    <abi::VoucherAmountAndSignature as alloy_sol_types::SolValue>::abi_decode(&state.app_data)
                        .map_err(|_| Revert("bad app data".into()))?;
                let signature =
                    nitro_core::Signature::normalized(voucher.signature.r, voucher.signature.s, voucher.signature.v)
                        .map_err(|e| Revert(e.to_string()))?;
                let signer = recover_signer(&Voucher::hash_of(candidate.channel_id(), voucher.amount), &signature)
                    .map_err(|e| Revert(e.to_string()))?;
                if signer != state.participants[0] {
                    return revert("invalid signature for voucher");
                }
                let (old, new) = (&postfund.state().outcome.0, &state.outcome.0);
                if old.len() != 1 || new.len() != 1 || !old[0].asset.is_zero() || !new[0].asset.is_zero() {
                    return revert("only native asset allowed");
                }
                let alice = old[0].allocations[0].amount.checked_sub(voucher.amount);
                if Some(new[0].allocations[0].amount) != alice {
                    return revert("Alice not adjusted correctly");
                }
                if new[0].allocations[1].amount != voucher.amount {
                    return revert("Bob not adjusted correctly");
                }
                Ok(())
            }
            _ => revert("bad proof length"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nitro_core::{destination_of, Allocation, AssetMetadata, Bytes, SigningKey, SingleAssetExit, State, U48};

    const CONSENSUS: Address = Address::repeat_byte(0xca);
    const VIRTUAL: Address = Address::repeat_byte(0xfa);

    fn keys() -> [SigningKey; 2] {
        [SigningKey::from_bytes(&[1; 32]).unwrap(), SigningKey::from_bytes(&[2; 32]).unwrap()]
    }

    fn outcome(amounts: [u64; 2]) -> Exit {
        let [a, b] = keys();
        Exit(vec![SingleAssetExit {
            asset: Address::ZERO,
            asset_metadata: AssetMetadata::default(),
            allocations: vec![
                Allocation::simple(destination_of(a.address()), U256::from(amounts[0])),
                Allocation::simple(destination_of(b.address()), U256::from(amounts[1])),
            ],
        }])
    }

    /// A state of the channel between the two keys, judged by `app`, signed by `signers`.
    fn state(app: Address, turn: u64, is_final: bool, app_data: Bytes, signers: &[usize]) -> SignedState {
        let keys = keys();
        let mut signed = SignedState::new(State {
            participants: keys.iter().map(SigningKey::address).collect(),
            channel_nonce: 7,
            app_definition: app,
            challenge_duration: U48::from(100),
            outcome: outcome([5, 5]),
            app_data,
            turn_num: TurnNum::from(turn),
            is_final,
        });
        for &i in signers {
            signed.sign(&keys[i]).unwrap();
        }
        signed
    }

    fn ledger(turn: u64, is_final: bool) -> SignedState {
        state(CONSENSUS, turn, is_final, Bytes::new(), &[0, 1])
    }

    fn challenge(proof: Vec<SignedState>, state: SignedState) -> ChainTransaction {
        let challenger_signature = keys()[0].sign(&challenge_hash(&state.hash()));
        ChainTransaction::Challenge { proof, state, challenger_signature }
    }

    fn reverted(chain: &mut MemoryAdjudicator, tx: &ChainTransaction) -> String {
        let before = (chain.reverts, chain.block);
        let e = chain.execute(Address::ZERO, tx).expect_err("reverts");
        assert_eq!((chain.reverts, chain.block), (before.0 + 1, before.1), "counted, and no block mined");
        e.0
    }

    #[test]
    fn checkpoints_challenges_and_conclusions_follow_the_contracts_mode_rules() {
        let mut chain = MemoryAdjudicator::new(CONSENSUS, VIRTUAL, 1_000);
        let id = ledger(1, false).channel_id();
        let checkpoint = |turn| ChainTransaction::Checkpoint { state: ledger(turn, false) };
        let events = chain.execute(Address::ZERO, &checkpoint(2)).unwrap();
        assert!(matches!(events[..], [ChainEvent::Checkpointed { .. }]), "{events:?}");
        assert_eq!(reverted(&mut chain, &checkpoint(2)), "turnNumRecord not increased.");
        assert_eq!(reverted(&mut chain, &challenge(vec![ledger(1, false)], ledger(3, false))), "|proof|!=0");

        chain.execute(Address::ZERO, &challenge(vec![], ledger(3, false))).unwrap();
        assert_eq!(chain.mode(&id), Mode::Challenge);
        assert_eq!(reverted(&mut chain, &challenge(vec![], ledger(3, false))), "turnNumRecord not increased.");
        // A transfer before the channel finalizes, and one with the wrong fingerprint after.
        let transfer = |state_hash| ChainTransaction::Transfer {
            channel_id: id,
            asset_index: 0,
            outcome: outcome([5, 5]),
            state_hash,
            indices: vec![],
        };
        assert_eq!(reverted(&mut chain, &transfer(ledger(3, false).hash())), "Channel not finalized.");
        chain.advance(100);
        assert_eq!(chain.mode(&id), Mode::Finalized);
        assert_eq!(reverted(&mut chain, &transfer(B256::ZERO)), "incorrect fingerprint");
        assert_eq!(reverted(&mut chain, &challenge(vec![], ledger(4, false))), "Channel finalized.");
        assert_eq!(reverted(&mut chain, &checkpoint(5)), "Channel finalized.");
        let concluded = ChainTransaction::Conclude { state: ledger(5, true) };
        assert_eq!(reverted(&mut chain, &concluded), "Channel finalized.");

        // Another channel (nonce 8) concludes at once with its final state.
        let mut other = ledger(4, true).state().clone();
        other.channel_nonce = 8;
        let mut final_state = SignedState::new(other);
        for key in keys() {
            final_state.sign(&key).unwrap();
        }
        let events = chain.execute(Address::ZERO, &ChainTransaction::Conclude { state: final_state.clone() }).unwrap();
        assert!(matches!(events[..], [ChainEvent::Concluded { finalizes_at: 1_100, .. }]), "{events:?}");
        assert_eq!(chain.mode(&final_state.channel_id()), Mode::Finalized);
    }

    #[test]
    fn the_virtual_payment_app_supports_only_its_prefund_postfund_and_redemptions() {
        let mut chain = MemoryAdjudicator::new(CONSENSUS, VIRTUAL, 1_000);
        let vpa = |turn, signers: &[usize]| state(VIRTUAL, turn, false, Bytes::new(), signers);
        let bad = |chain: &mut MemoryAdjudicator, proof, candidate| reverted(chain, &challenge(proof, candidate));
        assert_eq!(bad(&mut chain, vec![], vpa(2, &[0, 1])), "bad candidate turnNum; |proof|=0");
        assert_eq!(bad(&mut chain, vec![vpa(0, &[0, 1])], vpa(2, &[1])), "postfund !unanimous; |proof|=1");
        assert_eq!(bad(&mut chain, vec![vpa(1, &[0, 1])], vpa(3, &[1])), "bad candidate turnNum; |proof|=1");
        assert_eq!(bad(&mut chain, vec![vpa(1, &[0, 1])], vpa(2, &[0])), "redemption not signed by Bob");
        assert_eq!(bad(&mut chain, vec![vpa(1, &[0, 1])], vpa(2, &[1])), "bad app data");
        assert_eq!(bad(&mut chain, vec![vpa(0, &[0, 1]), vpa(1, &[0, 1])], vpa(2, &[1])), "bad proof length");
        // Its postfund, unanimous, is supported on its own.
        chain.execute(Address::ZERO, &challenge(vec![], vpa(1, &[0, 1]))).unwrap();
        assert_eq!(chain.reverts, 6);
    }
}
