//! The cryptographic floor of the hub workload: what the three parties cannot avoid for N
//! virtual channels, timed on one thread with the real `nitro_core` primitives.
//!
//! Per virtual channel V = [Alice, hub, Bob]: its three states (prefund at turn 0, postfund at
//! turn 1, the final state at turn 3), each hashed by each party, signed by each party, and
//! each signature recovered by the two other parties (3 hashes, 3 signatures, 6 recoveries per
//! state); plus one voucher, signed by Alice (a hash and a signature) and recovered by Bob (a
//! hash and a recovery). Each party computes V's channel id once. The ledger states (a
//! guarantee added and one removed in each of the two ledgers) are left out: a ledger state
//! carries any number of changes (ADR-0018), so batching makes their cost per virtual channel
//! as small as the batches are large.

use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use nitro_chain::dev_key;
use nitro_core::{
    destination_of, recover_signer, Allocation, AssetMetadata, Exit, SignedState, SigningKey, SingleAssetExit, State,
    Voucher, U48,
};

use super::{
    cluster::CHALLENGE_DURATION,
    load::{PAYMENT, VIRTUAL_AMOUNT},
    HubBenchError,
};

/// A floor run longer than this is not repeated.
const REPEAT_UNDER: Duration = Duration::from_secs(1);

/// The states of N virtual channels shaped like the nodes' (same keys, app, challenge
/// duration, amounts), built ahead of timing.
pub(super) struct HubFloor {
    keys: [SigningKey; 3],
    /// Per channel: prefund, postfund, final.
    channels: Vec<[State; 3]>,
    paid: U256,
}

fn invalid(e: impl std::fmt::Display) -> HubBenchError {
    HubBenchError::Workload(format!("floor: {e}"))
}

impl HubFloor {
    /// The floor workload of `n` virtual channels with the nodes' keys and app.
    pub fn new(virtual_payment_app: Address, n: usize) -> Result<Self, HubBenchError> {
        let key = |i| dev_key(i).ok_or_else(|| invalid(format!("no anvil dev key {i}")));
        let keys = [key(1)?, key(2)?, key(3)?];
        let (amount, paid) = (U256::from(VIRTUAL_AMOUNT), U256::from(PAYMENT));
        let participants: Vec<Address> = keys.iter().map(SigningKey::address).collect();
        let channels = (0..n)
            .map(|i| {
                let prefund = State {
                    participants: participants.clone(),
                    channel_nonce: i as u64 + 1,
                    app_definition: virtual_payment_app,
                    challenge_duration: U48::from(CHALLENGE_DURATION),
                    outcome: Exit(vec![SingleAssetExit {
                        asset: Address::ZERO,
                        asset_metadata: AssetMetadata::default(),
                        allocations: vec![
                            Allocation::simple(destination_of(participants[0]), amount),
                            Allocation::simple(destination_of(participants[2]), U256::ZERO),
                        ],
                    }]),
                    app_data: Default::default(),
                    turn_num: U48::ZERO,
                    is_final: false,
                };
                let mut postfund = prefund.clone();
                postfund.turn_num = U48::from(1);
                let mut closing = prefund.clone();
                closing.outcome.0[0].allocations[0].amount = amount - paid;
                closing.outcome.0[0].allocations[1].amount = paid;
                closing.turn_num = U48::from(3);
                closing.is_final = true;
                [prefund, postfund, closing]
            })
            .collect();
        Ok(Self { keys, channels, paid })
    }

    /// Times the floor once.
    fn run(&self) -> Result<Duration, HubBenchError> {
        let started = Instant::now();
        for states in &self.channels {
            // Each party computes V's channel id once, from the prefund.
            let ids: Vec<_> = self.keys.iter().map(|_| states[0].channel_id()).collect();
            for state in states {
                let mut signed = Vec::with_capacity(3);
                for (key, id) in self.keys.iter().zip(&ids) {
                    let mut copy = SignedState::with_channel_id(state.clone(), *id);
                    let signature = copy.sign(key).map_err(invalid)?;
                    signed.push((copy.hash(), signature));
                }
                for (verifier, (hash, _)) in signed.iter().enumerate() {
                    for (signer, (_, signature)) in signed.iter().enumerate() {
                        if signer != verifier
                            && recover_signer(hash, signature).map_err(invalid)? != state.participants[signer]
                        {
                            return Err(invalid("a signature recovered to someone else"));
                        }
                    }
                }
            }
            let voucher = Voucher::sign(ids[0], self.paid, &self.keys[0]);
            if voucher.signer().map_err(invalid)? != self.keys[0].address() {
                return Err(invalid("a voucher recovered to someone else"));
            }
        }
        Ok(started.elapsed())
    }

    /// The floor: the fastest of up to 3 runs (a single one when it takes over a second).
    pub fn time(&self) -> Result<Duration, HubBenchError> {
        let mut best = self.run()?;
        for _ in 1..3 {
            if best > REPEAT_UNDER {
                break;
            }
            best = best.min(self.run()?);
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_signs_and_recovers_every_state() {
        let floor = HubFloor::new(Address::repeat_byte(0xca), 2).map_err(|e| e.to_string());
        let floor = floor.as_ref().map(|f| f.time().is_ok_and(|d| d > Duration::ZERO));
        assert_eq!(floor, Ok(true));
    }
}
