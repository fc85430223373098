//! Workloads that measure a ledger against its cryptographic floor, shared by `nitro bench`
//! and the criterion benches.
//!
//! The *floor* of one proposal round is what no implementation can avoid for each new state:
//! the leader and the follower each encode and hash it once, each sign it once, and each
//! recover the other's signature once. [`LedgerWorkload::run_channels`] runs the real leader
//! and follower; [`LedgerWorkload::run_floor`] performs just those operations on the same
//! states, so the ratio of the two is the overhead of the protocol logic.

use std::time::{Duration, Instant};

use alloy_primitives::{keccak256, Address, B256, U256};

use crate::{
    destination_of, recover_signer, Balance, FixedPart, FollowerChannel, Guarantee, LeaderChannel, LedgerMessage,
    LedgerOutcome, Proposal, SignedState, SigningKey, State, U48,
};

/// A deterministic ledger workload: `proposals` adds, then as many removes, over a ledger that
/// already holds `standing_guarantees` guarantees.
#[derive(Clone, Debug)]
pub struct LedgerWorkload {
    leader_key: SigningKey,
    follower_key: SigningKey,
    fixed: FixedPart,
    initial: SignedState,
    proposals: Vec<Proposal>,
    standing_guarantees: usize,
}

fn key(byte: u8) -> SigningKey {
    // Fixed, valid secp256k1 keys: a workload is reproducible run to run.
    let mut secret = [byte; 32];
    secret[0] = 0x01;
    SigningKey::from_bytes(&secret).unwrap_or_else(|_| unreachable!("0x01 followed by {byte:#x}s is a valid key"))
}

fn target(kind: u8, i: usize) -> B256 {
    let mut t = B256::ZERO;
    t[0] = kind;
    t[24..].copy_from_slice(&(i as u64).to_be_bytes());
    t
}

impl LedgerWorkload {
    /// Builds the initial (fully signed) ledger and the proposals.
    pub fn new(proposals: usize, standing_guarantees: usize) -> Self {
        let (leader_key, follower_key) = (key(0x11), key(0x22));
        let (l, f) = (destination_of(leader_key.address()), destination_of(follower_key.address()));
        let fixed = FixedPart {
            participants: vec![leader_key.address(), follower_key.address()],
            channel_nonce: 1,
            app_definition: Address::repeat_byte(0xca),
            challenge_duration: U48::from(86_400),
        };
        let unit = U256::from(1_000u64);
        let funds = unit * U256::from(2 * (proposals + standing_guarantees) + 2);
        let standing = (0..standing_guarantees).map(|i| {
            Guarantee::new(target(0xaa, i), unit, l, f).unwrap_or_else(|_| unreachable!("non-zero, distinct"))
        });
        let outcome = LedgerOutcome::with_guarantees(
            Address::ZERO,
            Balance { destination: l, amount: funds },
            Balance { destination: f, amount: funds },
            standing,
        )
        .unwrap_or_else(|_| unreachable!("a well-formed ledger outcome"));
        let mut initial = SignedState::new(outcome.to_state(&fixed, U48::from(1)));
        for k in [&leader_key, &follower_key] {
            initial.sign(k).unwrap_or_else(|_| unreachable!("both keys are participants"));
        }
        let adds = (0..proposals).map(|i| {
            let (left, right) = if i % 2 == 0 { (l, f) } else { (f, l) };
            let guarantee = Guarantee::new(target(0xbb, i), unit, left, right).unwrap_or_else(|_| unreachable!());
            Proposal::Add { guarantee, left_deposit: U256::from(400u64), asset: Address::ZERO }
        });
        let removes =
            (0..proposals).map(|i| Proposal::Remove { target: target(0xbb, i), left_amount: U256::from(700u64) });
        let proposals = adds.chain(removes).collect();
        Self { leader_key, follower_key, fixed, initial, proposals, standing_guarantees }
    }

    /// Number of proposal rounds (adds + removes).
    pub fn rounds(&self) -> usize {
        self.proposals.len()
    }

    /// Guarantees held throughout.
    pub fn standing_guarantees(&self) -> usize {
        self.standing_guarantees
    }

    /// Runs every proposal through a real leader and follower, one round each (propose,
    /// verify, countersign, acknowledge). Returns the elapsed time and the final leader.
    pub fn run_channels(&self) -> (Duration, LeaderChannel) {
        let mut leader = LeaderChannel::new(self.leader_key.clone(), &self.initial)
            .unwrap_or_else(|e| unreachable!("workload ledger is valid: {e}"));
        let mut follower = FollowerChannel::new(self.follower_key.clone(), &self.initial)
            .unwrap_or_else(|e| unreachable!("workload ledger is valid: {e}"));
        let start = Instant::now();
        for proposal in &self.proposals {
            let step = leader.propose(*proposal).unwrap_or_else(|e| unreachable!("workload proposal applies: {e}"));
            for m in &step.messages {
                let _ = follower.receive(m).unwrap_or_else(|e| unreachable!("follower accepts: {e}"));
            }
            let step = follower.countersign_next(proposal).unwrap_or_else(|e| unreachable!("pending: {e}"));
            for m in &step.messages {
                if let LedgerMessage::Countersignature(c) = m {
                    let _ = leader.receive_countersignature(c).unwrap_or_else(|e| unreachable!("valid: {e}"));
                }
            }
        }
        (start.elapsed(), leader)
    }

    /// Runs the changes in batches of `batch` (ADR-0018): one state, one signature and one
    /// countersignature per batch. Returns the elapsed time and the final leader.
    pub fn run_batched(&self, batch: usize) -> (Duration, LeaderChannel) {
        let mut leader = LeaderChannel::new(self.leader_key.clone(), &self.initial)
            .unwrap_or_else(|e| unreachable!("workload ledger is valid: {e}"));
        let mut follower = FollowerChannel::new(self.follower_key.clone(), &self.initial)
            .unwrap_or_else(|e| unreachable!("workload ledger is valid: {e}"));
        let start = Instant::now();
        for chunk in self.proposals.chunks(batch.max(1)) {
            let step =
                leader.propose_batch(chunk.to_vec()).unwrap_or_else(|e| unreachable!("workload batch applies: {e}"));
            for m in &step.messages {
                let _ = follower.receive(m).unwrap_or_else(|e| unreachable!("follower accepts: {e}"));
            }
            let step = follower.countersign_all().unwrap_or_else(|e| unreachable!("pending: {e}"));
            for m in &step.messages {
                if let LedgerMessage::Countersignature(c) = m {
                    let _ = leader.receive_countersignature(c).unwrap_or_else(|e| unreachable!("valid: {e}"));
                }
            }
        }
        (start.elapsed(), leader)
    }

    /// The states the workload goes through, built ahead (not timed).
    pub fn states(&self) -> Vec<State> {
        self.batched_states(1)
    }

    /// The states the workload goes through in batches of `batch` changes (not timed).
    pub fn batched_states(&self, batch: usize) -> Vec<State> {
        let mut outcome = LedgerOutcome::from_exit(&self.initial.state().outcome)
            .unwrap_or_else(|e| unreachable!("workload ledger is valid: {e}"));
        self.proposals
            .chunks(batch.max(1))
            .enumerate()
            .map(|(i, chunk)| {
                for p in chunk {
                    outcome.apply(p).unwrap_or_else(|e| unreachable!("workload proposal applies: {e}"));
                }
                outcome.to_state(&self.fixed, U48::from(i as u64 + 2))
            })
            .collect()
    }

    /// Times the floor over `states`: per state two encodings and hashes, two signatures
    /// and two signature recoveries.
    pub fn run_floor(&self, states: &[State]) -> Duration {
        let channel_id = self.fixed.channel_id();
        let start = Instant::now();
        for state in states {
            let leader_hash = keccak256(state.encode_with_channel_id(channel_id));
            let leader_sig = self.leader_key.sign(&leader_hash);
            let follower_hash = keccak256(state.encode_with_channel_id(channel_id));
            let _ = recover_signer(&follower_hash, &leader_sig);
            let follower_sig = self.follower_key.sign(&follower_hash);
            let _ = recover_signer(&leader_hash, &follower_sig);
        }
        start.elapsed()
    }
}
