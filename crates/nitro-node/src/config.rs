//! `nitro node --config FILE`: the node's TOML configuration.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use alloy_primitives::Address;
use serde::Deserialize;
use thiserror::Error;

/// Why a configuration was refused.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("{path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        error: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

/// A peer: its Ethereum address and where it listens.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// Its address (the key its transport handshake must prove).
    pub address: Address,
    /// Where to dial it.
    pub at: SocketAddr,
}

/// The node's configuration. Relative paths are relative to the configuration file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// File holding the node's private key (0x-hex, 32 bytes).
    pub key_file: PathBuf,
    /// The SQLite database.
    pub db_path: PathBuf,
    /// Peer-to-peer listen address.
    pub listen: SocketAddr,
    /// JSON-RPC listen address (loopback only).
    pub api: SocketAddr,
    /// The API's bearer token (created on first start).
    pub token_file: PathBuf,
    /// JSON-RPC URL of the Ethereum node.
    pub chain_url: String,
    /// The deployed NitroAdjudicator.
    pub adjudicator: Address,
    /// The deployed ConsensusApp.
    pub consensus_app: Address,
    /// The deployed VirtualPaymentApp.
    pub virtual_payment_app: Address,
    /// Challenge duration of channels this node opens, in seconds.
    #[serde(default = "default_challenge_duration")]
    pub challenge_duration: u64,
    /// The node's timer, in milliseconds: chain polling and answering waiters every tick;
    /// resending what peers may lack once nothing progressed for a tick, then backing off
    /// (doubling, up to 16 ticks) while nothing progresses.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Outbox messages kept per peer (for resending after a restart and for audits).
    #[serde(default = "default_outbox_kept")]
    pub outbox_kept_per_peer: usize,
    /// Known peers.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
}

fn default_challenge_duration() -> u64 {
    86_400
}

fn default_tick_ms() -> u64 {
    500
}

fn default_outbox_kept() -> usize {
    512
}

impl NodeConfig {
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| ConfigError::Read { path: path.to_path_buf(), error })?;
        let mut config: NodeConfig =
            toml::from_str(&text).map_err(|error| ConfigError::Parse { path: path.to_path_buf(), error })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut config.key_file, &mut config.db_path, &mut config.token_file] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        if !config.api.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!("api {} must be a loopback address", config.api)));
        }
        if config.tick_ms == 0 || config.challenge_duration >= 1 << 48 {
            return Err(ConfigError::Invalid("tick_ms must be > 0 and challenge_duration < 2^48".into()));
        }
        Ok(config)
    }
}
