//! Nitro protocol ledger (consensus) channels, in library form.
//!
//! This crate is a *sans-IO*, fully deterministic implementation of the off-chain half of
//! Nitro ledger channels: it never touches a socket, a file or the clock. Callers feed it
//! messages, chain events and approvals and carry out the effects it returns (messages to
//! send, transactions to submit, events to persist); the `nitro-chain`, `nitro-store` and
//! `nitro-node` crates are one such caller.
//!
//! Start from [`ConsensusChannel`], an enum of [`LeaderChannel`] (the only party that
//! proposes) and [`FollowerChannel`] (which verifies and countersigns), and from
//! [`LedgerOutcome`] and [`Proposal`], the one rule both apply. Underneath are [`State`] and
//! [`SignedState`], the on-chain encoding, byte-exact with the official
//! `@statechannels/nitro-protocol` package.
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod abi;
pub mod bench;
pub mod chain;
mod channel;
pub mod json;
pub mod party;
mod state;
mod voucher;

pub use alloy_primitives::{aliases::U48, Address, Bytes, B256, U256};
pub use channel::{
    Approval, ApprovalPolicy, AssetOutcome, Balance, ChannelError, ConsensusChannel, Countersignature, FollowerChannel,
    Guarantee, GuaranteeManager, GuaranteeStatus, LeaderChannel, LedgerEvent, LedgerMessage, LedgerOutcome,
    LedgerRecord, OutcomeError, Proposal, ProposalError, ProposalQueue, QueuedProposal, Rejection, RoleRecord, Side,
    SignedProposal, Slot, Step, DEFAULT_REORDER_CAPACITY, MAX_BATCH, MAX_REASON_LEN,
};
pub use state::{
    address_of, challenge_hash, destination_of, ethereum_message_hash, recover_signer, Allocation, AllocationType,
    AssetMetadata, ChannelId, Destination, Exit, FixedPart, GuaranteeMetadata, Signature, SignatureError, SignedState,
    SignedStateError, SignedTurn, SigningKey, SingleAssetExit, State, TurnNum, VariablePart,
};
pub use voucher::Voucher;
