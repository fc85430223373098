//! The errors of the chain shell.

use std::{path::PathBuf, time::Duration};

use alloy::transports::{RpcError, TransportErrorKind};
use alloy_primitives::{Address, B256, U256};
use nitro_core::{chain::ChainTransactionError, ChannelId};
use thiserror::Error;

/// Why a chain operation failed. Nothing here is a panic: every failure of the node, the
/// network or the contract arrives as one of these.
#[derive(Debug, Error)]
pub enum ChainError {
    /// The transaction was refused before sending (see [`ChainTransactionError`]).
    #[error("refused before sending: {0}")]
    Invalid(#[from] ChainTransactionError),
    /// The node could not be reached (connection refused, reset, timed out), after retries.
    #[error("JSON-RPC endpoint unreachable during {operation}: {message}")]
    Unreachable {
        /// What was being done.
        operation: &'static str,
        /// The transport's last error.
        message: String,
    },
    /// The node answered with an error that is not a revert.
    #[error("JSON-RPC error during {operation}: {message}")]
    Rpc {
        /// What was being done.
        operation: &'static str,
        /// The node's message.
        message: String,
    },
    /// The contract reverted (at gas estimation, or once mined).
    #[error("{function} reverted: {}", reason.as_deref().unwrap_or("(no reason given)"))]
    Reverted {
        /// The contract function called.
        function: &'static str,
        /// The decoded revert reason (`require` message), when the node returned one.
        reason: Option<String>,
        /// The mined transaction, when the revert happened on chain rather than at estimation.
        tx_hash: Option<B256>,
    },
    /// A deposit's precondition does not hold: the channel does not hold what it expects.
    #[error("channel {channel_id} holds {actual} of {asset}, the deposit expects {expected}")]
    UnexpectedHoldings {
        /// The channel.
        channel_id: ChannelId,
        /// The asset.
        asset: Address,
        /// The `expected_held` of the deposit.
        expected: U256,
        /// What the chain holds.
        actual: U256,
    },
    /// A token deposit refused before anything was sent: the token would lose money in the
    /// adjudicator (a fee on transfer, a `transfer` returning `false`), or it could not be
    /// checked. Permanent: the objective asking for the deposit fails with this reason.
    #[error("token {token} is refused: {reason}")]
    UnsafeToken {
        /// The ERC-20 contract.
        token: Address,
        /// What the check found.
        reason: String,
    },
    /// Waited too long for something (a receipt, confirmations, holdings).
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long we waited.
        after: Duration,
    },
    /// The transaction was sent, but another transaction of the account was mined with its
    /// nonce: it never will be. Reported when that other transaction is found on chain
    /// (`replaced_by`), or when the account's nonce has moved past ours and still no receipt
    /// of ours is visible after [`ChainConfig::dropped_after`](crate::ChainConfig::dropped_after)
    /// (`replaced_by: None`).
    #[error("transaction {tx_hash} was dropped: its nonce was used by {}", match replaced_by {
        Some(other) => format!("transaction {other}"),
        None => "another transaction (no receipt of ours within the dropped_after bound)".to_owned(),
    })]
    Dropped {
        /// The transaction we sent.
        tx_hash: B256,
        /// The transaction mined with its nonce instead, when it was found.
        replaced_by: Option<B256>,
    },
    /// A log, a return value or a node answer could not be decoded.
    #[error("cannot decode {what}: {message}")]
    Decode {
        /// What was decoded.
        what: &'static str,
        /// The decoder's message.
        message: String,
    },
    /// The signing key could not be used or the transaction could not be built.
    #[error("cannot build or sign the transaction: {0}")]
    Signing(String),
    /// A contract deployment produced no contract.
    #[error("deployment of {0} produced no contract code")]
    Deployment(String),
    /// An ERC-20 token answered `false` to `function` instead of reverting: it refused without
    /// moving anything (the `transfer` of [`crate::tokens::TestToken::FalseToken`]).
    #[error("token {token} returned false from {function}")]
    TokenRefused {
        /// The token contract.
        token: Address,
        /// The ERC-20 function.
        function: &'static str,
    },
    /// An artifact could not be found or read.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

impl ChainError {
    /// Classifies an alloy RPC error: transport failures are `Unreachable`, reverts are
    /// `Reverted` (with the reason decoded when the node returned revert data), anything
    /// else is `Rpc`.
    pub(crate) fn from_rpc(operation: &'static str, function: &'static str, e: RpcError<TransportErrorKind>) -> Self {
        match &e {
            RpcError::Transport(kind) => Self::Unreachable { operation, message: kind.to_string() },
            RpcError::ErrorResp(payload) => {
                let reverted = payload.message.contains("revert") || payload.code == 3;
                if reverted {
                    let reason = payload.as_revert_data().and_then(|data| revert_reason(&data)).or_else(|| {
                        payload.message.split_once("execution reverted: ").map(|(_, r)| r.trim().to_owned())
                    });
                    Self::Reverted { function, reason, tx_hash: None }
                } else {
                    Self::Rpc { operation, message: payload.to_string() }
                }
            }
            RpcError::NullResp => Self::Rpc { operation, message: "null response".into() },
            other => Self::Rpc { operation, message: other.to_string() },
        }
    }

    /// Whether retrying the same request later may succeed (the node was unreachable or slow).
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Timeout { .. })
    }

    /// Whether a node refused `eth_sendRawTransaction` because it already has this very
    /// transaction (same hash) in its pool: the transaction *was* sent. Clients word it
    /// differently: geth, reth and erigon "already known", anvil "transaction already
    /// imported", OpenEthereum "…was already imported", Besu "Known transaction",
    /// Nethermind "AlreadyKnown".
    pub(crate) fn is_already_known(&self) -> bool {
        let Self::Rpc { message, .. } = self else { return false };
        let message = message.to_ascii_lowercase();
        ["already known", "already imported", "known transaction", "alreadyknown"].iter().any(|m| message.contains(m))
    }

    /// Whether a node refused `eth_sendRawTransaction` because the account's nonce has moved
    /// past the transaction's: either an earlier attempt of the same bytes was mined, or
    /// another transaction took the nonce.
    pub(crate) fn is_nonce_too_low(&self) -> bool {
        let Self::Rpc { message, .. } = self else { return false };
        let message = message.to_ascii_lowercase();
        message.contains("nonce too low") || message.contains("oldnonce") || message.contains("nonce is too low")
    }
}

impl ChainError {
    /// Whether a node refused `eth_sendRawTransaction` for its price: below the block's base
    /// fee, or a replacement that does not raise both fees enough (geth, reth, erigon, anvil,
    /// Besu and Nethermind wordings). Re-pricing cures it.
    pub(crate) fn is_underpriced(&self) -> bool {
        let Self::Rpc { message, .. } = self else { return false };
        let message = message.to_ascii_lowercase();
        [
            "underpriced",
            "less than block base fee",
            "fee cap less than",
            "feecap",
            "fee too low",
            "gas price too low",
            "max fee per gas less than",
            "feetoolow",
        ]
        .iter()
        .any(|m| message.contains(m))
    }
}

/// The reason of a revert: the message of `require(…, message)` / `revert(message)`, else
/// alloy's rendering of a panic code or custom error.
fn revert_reason(data: &[u8]) -> Option<String> {
    use alloy_sol_types::SolError;
    match alloy_sol_types::Revert::abi_decode(data) {
        Ok(revert) => Some(revert.reason),
        Err(_) => alloy_sol_types::decode_revert_reason(data),
    }
}

/// Why the compiled contracts could not be loaded.
#[derive(Debug, Error)]
pub enum ArtifactError {
    /// No artifact directory was found.
    #[error(
        "the Nitro contract artifacts were not found (looked for \
         node_modules/@statechannels/nitro-protocol/dist/artifacts above {searched:?}, and NITRO_ARTIFACTS is \
         unset): run `npm ci` at the repository root"
    )]
    NotInstalled {
        /// The directories searched from.
        searched: Vec<PathBuf>,
    },
    /// The compiled test tokens (`build/contracts`, written by `scripts/compile-contracts.js`)
    /// were not found: they are built at setup, never committed.
    #[error(
        "the compiled test tokens were not found (looked for build/contracts above {searched:?}, and \
         NITRO_TOKEN_ARTIFACTS is unset): run `scripts/setup.sh` at the repository root"
    )]
    TokensNotBuilt {
        /// The directories searched from (or the `NITRO_TOKEN_ARTIFACTS` directory).
        searched: Vec<PathBuf>,
    },
    /// An artifact file could not be read.
    #[error("cannot read artifact {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// An artifact file is not a Hardhat artifact with an ABI and bytecode.
    #[error("malformed artifact {path}: {message}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The artifact lacks a function or event declared in [`crate::bindings`].
    #[error("artifact {path} does not match the declared bindings: {mismatch}")]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The first mismatch.
        mismatch: crate::bindings::AbiMismatch,
    },
}

/// Why anvil could not be started.
#[derive(Debug, Error)]
pub enum AnvilError {
    /// The binary is not installed.
    #[error(
        "anvil not found (looked for node_modules/.bin/anvil above {searched:?}, and NITRO_ANVIL is unset): run \
         `npm ci` at the repository root"
    )]
    NotInstalled {
        /// The directories searched from.
        searched: Vec<PathBuf>,
    },
    /// `NITRO_ANVIL` names a file that does not exist.
    #[error("NITRO_ANVIL={0} does not exist")]
    BadOverride(PathBuf),
    /// The process could not be started.
    #[error("cannot start {path}: {message}")]
    Spawn {
        /// The binary.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// The process exited or stayed silent before listening.
    #[error("anvil did not start within {after:?}: {output}")]
    Startup {
        /// How long we waited.
        after: Duration,
        /// What it printed.
        output: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rpc(message: &str) -> ChainError {
        ChainError::Rpc { operation: "eth_sendRawTransaction", message: format!("error code -32000: {message}") }
    }

    #[test]
    fn every_client_wording_of_a_known_transaction_means_sent() {
        for message in [
            "already known",
            "transaction already imported",
            "Transaction with the same hash was already imported.",
            "Known transaction (0xabc…)",
            "AlreadyKnown",
        ] {
            assert!(rpc(message).is_already_known(), "{message}");
            assert!(!rpc(message).is_nonce_too_low(), "{message}");
        }
        for message in ["nonce too low", "Nonce too low: next nonce 4, tx nonce 3", "OldNonce"] {
            assert!(rpc(message).is_nonce_too_low(), "{message}");
            assert!(!rpc(message).is_already_known(), "{message}");
        }
        for other in ["insufficient funds for gas * price + value", "replacement transaction underpriced"] {
            assert!(!rpc(other).is_already_known() && !rpc(other).is_nonce_too_low(), "{other}");
        }
        for price in [
            "replacement transaction underpriced",
            "transaction underpriced",
            "max fee per gas less than block base fee",
            "FeeCapTooLow",
            "fee cap less than block base fee",
        ] {
            assert!(rpc(price).is_underpriced(), "{price}");
        }
        assert!(!rpc("insufficient funds for gas * price + value").is_underpriced());
        let unreachable =
            ChainError::Unreachable { operation: "eth_sendRawTransaction", message: "already known".into() };
        assert!(!unreachable.is_already_known(), "only a node's answer counts");
    }
}
