//! The chain shell of Nitro ledger channels: it carries out the sans-IO core's
//! [`ChainTransaction`](nitro_core::chain::ChainTransaction)s on a real `NitroAdjudicator`
//! over JSON-RPC (with `alloy`) and turns the adjudicator's logs back into
//! [`ChainEvent`](nitro_core::chain::ChainEvent)s.
//!
//! - [`bindings`]: the adjudicator's functions and events, declared inline, and the calldata
//!   of each transaction.
//! - [`Artifacts`] / [`Contracts`]: the compiled contracts from the npm package
//!   `@statechannels/nitro-protocol` (installed by `npm ci` at the repository root), and their
//!   deployment.
//! - [`EthClient`]: an account on a node; [`EthChainService`]: the [`ChainService`] on top.
//! - [`TxManager`]: lands the transactions objectives need — retried, re-priced at the same
//!   nonce, pushed harder as a deadline nears, confirmed only when still canonical at the
//!   configured depth ([`default_confirmations`]).
//! - [`EventWatcher`]: `eth_getLogs` polling from a block cursor, reporting blocks final at the
//!   depth and retracting what a deeper reorg takes back.
//! - [`proxy::RpcProxy`]: a fault-injecting JSON-RPC proxy for tests (lost answers, delays,
//!   5xx, outages).
//! - ERC-20 deposits: the approval each needs, landed by the same manager, and a check by
//!   simulation that the token neither takes a fee on transfer nor returns `false` from
//!   `transfer` ([`EthChainService::check_token`]).
//! - [`Anvil`]: a local node (the `anvil` binary from npm) for tests and demos.
//! - [`tokens`]: real ERC-20 tokens for tests and demos ([`TestToken`]: nitro-protocol's
//!   `Token`, a `FalseToken` whose `transfer` returns false, a 1%-`FeeToken`), compiled by
//!   `scripts/setup.sh` into `build/contracts` ([`TokenArtifacts`]), deployed with
//!   [`deploy_token`], moved with [`transfer_tokens`] / [`approve_tokens`], read with
//!   [`token_balance`].
//!
//! The contracts and anvil come from the repository's `package.json` (pinned, locked): run
//! `npm ci` at the repository root once, then `cargo test -p nitro-chain`. The tests start
//! their own anvil and fail with a message naming `npm ci` when it is missing.
//! `NITRO_ARTIFACTS` and `NITRO_ANVIL` override where both are looked for; the token tests
//! also need `scripts/setup.sh` to have compiled the tokens (`NITRO_TOKEN_ARTIFACTS` overrides).
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod anvil;
pub mod bindings;
mod client;
mod contracts;
mod depth;
mod erc20;
mod error;
mod locate;
pub mod manager;
pub mod proxy;
mod service;
pub mod tokens;
mod watcher;

pub use anvil::{dev_key, Anvil, AnvilBuilder, ANVIL_CHAIN_ID, DEV_PRIVATE_KEYS};
pub use client::{ChainConfig, EthClient, TxReceipt};
pub use contracts::{Artifact, Artifacts, Contracts};
pub use depth::{default_confirmations, UNKNOWN_CHAIN_CONFIRMATIONS};
pub use error::{AnvilError, ArtifactError, ChainError};
pub use manager::{TxEvent, TxManager, TxManagerConfig, TxManagerStats, TxOutcome};
pub use service::{ChainService, EthChainService};
pub use tokens::{approve_tokens, deploy_token, token_balance, transfer_tokens, TestToken, TokenArtifacts};
pub use watcher::{EventWatcher, WatcherConfig, WatcherState};
