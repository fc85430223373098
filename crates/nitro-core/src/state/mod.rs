//! Nitro channel states: fixed and variable parts, outcomes, hashing and signatures,
//! byte-exact with `@statechannels/nitro-protocol` 2.0.1-alpha.6.

mod outcome;
mod signature;
mod signed_state;
#[allow(clippy::module_inception)]
mod state;

pub use outcome::{
    address_of, destination_of, Allocation, AllocationType, AssetMetadata, Destination, Exit, GuaranteeMetadata,
    SingleAssetExit,
};
pub use signature::{challenge_hash, ethereum_message_hash, recover_signer, Signature, SignatureError, SigningKey};
pub use signed_state::{SignedState, SignedStateError, SignedTurn};
pub use state::{ChannelId, FixedPart, State, TurnNum, VariablePart};
