//! What the core asks of the chain and hears from it, as plain data (sans-IO): the
//! transactions objectives want submitted, the adjudicator events they react to, the
//! adjudicator's per-channel status, and what `transfer` and `reclaim` do to an outcome.
//! The `nitro-chain` crate carries these out against a real `NitroAdjudicator`.
//!
//! Every transaction names exactly the arguments of one `NitroAdjudicator` function, and
//! [`ChainTransaction::validate`] refuses, before anything is sent, what the contract would
//! revert for reasons visible off chain (a state not signed by everyone, a conclude with a
//! non-final state, a challenger who is not a participant, out-of-range indices, ...).
//!
//! The adjudicator records, per channel, a packed [`ChannelStatus`]; its fingerprint commits to
//! the registered state hash and outcome hash. Two facts about the deployed contract matter for
//! `transfer` and `reclaim`: after `conclude` the registered state hash is **zero** (only the
//! outcome is fingerprinted), while after a challenge times out it is the challenged state's
//! hash; and both functions take the outcome as ABI-encoded bytes ([`Exit::encode`]).

mod event;
mod payout;
mod status;
mod transaction;

pub use event::{ChainEvent, SubmittedState};
pub use payout::{after_reclaim, after_transfer, PayoutError};
pub use status::{ChannelMode, ChannelStatus};
pub use transaction::{challenger_signature, ChainTransaction, ChainTransactionError};

#[cfg(test)]
pub(crate) mod fixtures {

    use crate::{destination_of, Allocation, AssetMetadata, Bytes, SingleAssetExit};
    use crate::{AllocationType, Exit, GuaranteeMetadata, SignedState, SigningKey, State, U256};
    use alloy_primitives::aliases::U48;
    use alloy_primitives::{Address, B256};

    pub fn key(n: u8) -> SigningKey {
        let mut b = [0u8; 32];
        b[31] = n;
        SigningKey::from_bytes(&b).unwrap()
    }

    pub fn exit(allocations: Vec<Allocation>) -> Exit {
        Exit(vec![SingleAssetExit { asset: Address::ZERO, asset_metadata: AssetMetadata::default(), allocations }])
    }

    pub fn ledger_state(turn: u64, is_final: bool, with_guarantee: bool) -> State {
        let (a, b) = (key(1), key(2));
        let mut allocations = vec![
            Allocation::simple(destination_of(a.address()), U256::from(5)),
            Allocation::simple(destination_of(b.address()), U256::from(7)),
        ];
        if with_guarantee {
            allocations.push(Allocation {
                destination: B256::repeat_byte(0xcc),
                amount: U256::from(3),
                allocation_type: AllocationType::GUARANTEE,
                metadata: GuaranteeMetadata { left: destination_of(a.address()), right: destination_of(b.address()) }
                    .encode(),
            });
        }
        State {
            participants: vec![a.address(), b.address()],
            channel_nonce: 9,
            app_definition: Address::repeat_byte(0xaa),
            challenge_duration: U48::from(60),
            outcome: exit(allocations),
            app_data: Bytes::new(),
            turn_num: U48::from(turn),
            is_final,
        }
    }

    pub fn signed(state: State, keys: &[u8]) -> SignedState {
        let mut s = SignedState::new(state);
        for k in keys {
            s.sign(&key(*k)).unwrap();
        }
        s
    }
}
