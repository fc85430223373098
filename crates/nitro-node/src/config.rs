//! `nitro node --config FILE`: the node's TOML configuration.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use std::collections::{BTreeMap, BTreeSet};

use alloy_primitives::Address;
use nitro_core::party::{AssetLimits, PartyPolicy};
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
    /// Its address (the key its transport handshake must prove); all lower case, all upper
    /// case, or with a valid EIP-55 checksum.
    #[serde(with = "nitro_core::json::address")]
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
    /// JSON-RPC listen address (loopback only); also serves `GET /health` and `GET /metrics`.
    pub api: SocketAddr,
    /// An extra listen address serving only `GET /health` and `GET /metrics` (any address,
    /// for a Prometheus server on another machine); none by default.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// The API's bearer token (created on first start).
    pub token_file: PathBuf,
    /// JSON-RPC URL of the Ethereum node.
    pub chain_url: String,
    /// The deployed NitroAdjudicator (checked for code at start).
    #[serde(with = "nitro_core::json::address")]
    pub adjudicator: Address,
    /// The deployed ConsensusApp (checked for code at start).
    #[serde(with = "nitro_core::json::address")]
    pub consensus_app: Address,
    /// The deployed VirtualPaymentApp (checked for code at start).
    #[serde(with = "nitro_core::json::address")]
    pub virtual_payment_app: Address,
    /// Challenge duration of channels this node opens, in seconds.
    #[serde(default = "default_challenge_duration")]
    pub challenge_duration: u64,
    /// The node's timer, in milliseconds: every tick polls the chain, answers waiters and
    /// ticks the party (chain time, transaction retries, force closes of silent
    /// counterparties). Nothing is re-sent on the timer: the transport delivers, and a peer
    /// is resynced when its session is established.
    #[serde(default = "default_tick_ms")]
    pub tick_ms: u64,
    /// Unacknowledged messages the transport keeps per peer (default 4096, at most
    /// 1,048,576). When a peer's queue is full its oldest message is dropped, and the peer is
    /// resynced when its session is re-established (ADR-0021): a peer unreachable for a long
    /// time costs at most this many messages.
    #[serde(default = "default_peer_queue_capacity")]
    pub peer_queue_capacity: usize,
    /// Deprecated and ignored: the store keeps the most recent 512 outbox messages per peer
    /// (`engine::OUTBOX_KEPT_PER_PEER`). Still accepted so that old configurations load,
    /// with a warning ([`NodeConfig::warnings`]).
    #[serde(default)]
    pub outbox_kept_per_peer: Option<usize>,
    /// Peers not in `[[peers]]` and without a ledger with us whose connections we keep at
    /// once (a new one beyond evicts the one idle longest; 0 refuses them all). Default: 16,
    /// or 1,024 when `policy.accept_ledgers_from = "anyone"` (a hub).
    #[serde(default)]
    pub max_unknown_peers: Option<usize>,
    /// Known peers.
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    /// What this node agrees to for its peers (defaults: `docs/node.md`).
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Confirmations, reorg detection and how transactions are landed (defaults: `docs/node.md`).
    #[serde(default)]
    pub chain: ChainSettings,
    /// The confirmation depth, as a top-level key: the same as `[chain] confirmations` (set one
    /// or the other, not both with different values).
    #[serde(default)]
    pub confirmations: Option<u64>,
}

/// The `[chain]` section: how deep a block must be before the node acts on it, and how the
/// transaction manager lands transactions.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ChainSettings {
    /// Confirmation depth: deposits, conclusions and challenges are acted on, and receipts
    /// counted, once their block has this many blocks including itself and is still canonical.
    /// Default: by chain id (mainnet 12, OP Mainnet/Base 10, Arbitrum 20, Polygon 64, anvil 1,
    /// any other 12).
    pub confirmations: Option<u64>,
    /// Blocks below the latest scanned one whose hashes are kept to detect deeper reorgs.
    pub reorg_window: u64,
    /// How often the transaction manager looks at its transactions, milliseconds.
    pub poll_ms: u64,
    /// A transaction not mined after this many blocks is re-priced at the same nonce.
    pub bump_after_blocks: u64,
    /// … or after this many seconds, whatever the blocks.
    pub bump_after_secs: u64,
    /// Least raise of both fees of a replacement, percent (nodes refuse less than 10).
    pub bump_percent: u64,
    /// Highest max fee per gas of a transaction without a deadline, gwei.
    pub max_fee_gwei: u64,
    /// Highest max fee per gas of an answer to a challenge, gwei.
    pub deadline_max_fee_gwei: u64,
    /// An answer to a challenge unmined this close to its deadline (chain seconds) is priced
    /// hardest and raises an alarm.
    pub alarm_margin_secs: u64,
}

impl Default for ChainSettings {
    fn default() -> Self {
        Self {
            confirmations: None,
            reorg_window: 128,
            poll_ms: 1_000,
            bump_after_blocks: 3,
            bump_after_secs: 60,
            bump_percent: 25,
            max_fee_gwei: 500,
            deadline_max_fee_gwei: 5_000,
            alarm_margin_secs: 600,
        }
    }
}

impl ChainSettings {
    /// Checks the ranges.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |what: String| Err(ConfigError::Invalid(format!("chain.{what}")));
        if let Some(depth) = self.confirmations {
            if depth == 0 || depth > self.reorg_window {
                return invalid(format!(
                    "confirmations ({depth}) must be at least 1 and at most reorg_window ({})",
                    self.reorg_window
                ));
            }
        }
        if self.reorg_window == 0 || self.reorg_window > 100_000 {
            return invalid(format!("reorg_window ({}) must be within 1..=100000", self.reorg_window));
        }
        if self.poll_ms == 0 || self.bump_after_blocks == 0 || self.bump_after_secs == 0 {
            return invalid("poll_ms, bump_after_blocks and bump_after_secs must be > 0".into());
        }
        if !(10..=1_000).contains(&self.bump_percent) {
            return invalid(format!("bump_percent ({}) must be within 10..=1000", self.bump_percent));
        }
        if self.max_fee_gwei == 0 || self.deadline_max_fee_gwei < self.max_fee_gwei {
            return invalid(format!(
                "max_fee_gwei ({}) must be > 0 and deadline_max_fee_gwei ({}) at least as high",
                self.max_fee_gwei, self.deadline_max_fee_gwei
            ));
        }
        Ok(())
    }

    /// The depth on the chain with `chain_id`: the configured one, else the chain's default.
    pub fn confirmations_on(&self, chain_id: u64) -> u64 {
        self.confirmations.unwrap_or_else(|| nitro_chain::default_confirmations(chain_id))
    }

    /// The transaction manager's settings.
    pub fn manager(&self) -> nitro_chain::TxManagerConfig {
        const GWEI: u128 = 1_000_000_000;
        nitro_chain::TxManagerConfig {
            poll_interval: std::time::Duration::from_millis(self.poll_ms),
            bump_after_blocks: self.bump_after_blocks,
            bump_after: std::time::Duration::from_secs(self.bump_after_secs),
            bump_percent: self.bump_percent,
            max_fee_per_gas: u128::from(self.max_fee_gwei) * GWEI,
            deadline_max_fee_per_gas: u128::from(self.deadline_max_fee_gwei) * GWEI,
            alarm_margin_secs: self.alarm_margin_secs,
            ..nitro_chain::TxManagerConfig::default()
        }
    }
}

/// Who may open a ledger with this node.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LedgerAcceptance {
    /// Only the peers in `[[peers]]` (the default: a wallet, not a hub).
    #[default]
    Peers,
    /// Anyone, within the limits (a hub). A stranger's deposit goes on chain before ours.
    Anyone,
}

/// The `[policy]` section: what this node agrees to before it signs or deposits anything for
/// a peer's objective. Amounts are decimal wei strings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// Who may open a ledger with us.
    pub accept_ledgers_from: LedgerAcceptance,
    /// The most we deposit into one ledger a peer opens (default 1 ETH).
    pub max_deposit_per_ledger: String,
    /// The most we hold in all ledgers together (default 10 ETH).
    pub max_total_deposit: String,
    /// Shortest challenge duration accepted, seconds (default 3,600: an hour to notice and
    /// answer a stale challenge through an RPC outage).
    pub challenge_duration_min: u64,
    /// Longest challenge duration accepted, seconds (default 604,800: funds locked at most a
    /// week when a counterparty vanishes).
    pub challenge_duration_max: u64,
    /// The largest virtual channel (both deposits) we help fund as an intermediary or payee
    /// (default 1 ETH).
    pub max_virtual_amount: String,
    /// The most we lock in guarantees in the ledger with one counterparty (default 5 ETH).
    pub max_locked_per_counterparty: String,
    /// Force-close a ledger by itself when its counterparty has left us waiting this long,
    /// seconds; 0: never (default 86,400, a day). Costs a challenge (~0.1–0.15 M gas), the
    /// payout (`transfer`, ~0.06 M) and one `reclaim` (~0.05 M) per guarantee.
    pub auto_force_close_secs: u64,
    /// ERC-20 tokens accepted besides ETH, each with its limits (`[[policy.tokens]]`). None
    /// by default: a token is accepted only when named here.
    pub tokens: Vec<TokenPolicyConfig>,
}

/// One accepted ERC-20 token and its limits, in the token's smallest unit (the ETH limits
/// above mean nothing for a token with other decimals, so each is given explicitly).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TokenPolicyConfig {
    /// The token contract.
    pub address: Address,
    /// The most we deposit into one ledger a peer opens.
    pub max_deposit_per_ledger: String,
    /// The most we hold in all ledgers of the token together.
    pub max_total_deposit: String,
    /// The largest virtual channel in the token we help fund.
    pub max_virtual_amount: String,
    /// The most of the token we lock in guarantees in the ledger with one counterparty.
    pub max_locked_per_counterparty: String,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        Self {
            accept_ledgers_from: LedgerAcceptance::Peers,
            max_deposit_per_ledger: "1000000000000000000".into(),
            max_total_deposit: "10000000000000000000".into(),
            challenge_duration_min: 3_600,
            challenge_duration_max: 604_800,
            max_virtual_amount: "1000000000000000000".into(),
            max_locked_per_counterparty: "5000000000000000000".into(),
            auto_force_close_secs: 86_400,
            tokens: Vec::new(),
        }
    }
}

impl NodeConfig {
    /// How many unknown peers the transport keeps connections from (see `max_unknown_peers`).
    pub fn unknown_peers(&self) -> usize {
        match (self.max_unknown_peers, self.policy.accept_ledgers_from) {
            (Some(n), _) => n,
            (None, LedgerAcceptance::Anyone) => 1_024,
            (None, LedgerAcceptance::Peers) => 16,
        }
    }
}

impl PolicyConfig {
    /// The core's policy for a node with `peers`.
    pub fn to_policy(&self, peers: &[PeerConfig]) -> Result<PartyPolicy, ConfigError> {
        let wei = |name: &str, value: &str| {
            crate::api::parse_amount(value)
                .map_err(|e| ConfigError::Invalid(format!("policy.{name}: {e} (a decimal amount of wei)")))
        };
        if self.challenge_duration_min > self.challenge_duration_max || self.challenge_duration_max >= 1 << 48 {
            return Err(ConfigError::Invalid(format!(
                "policy.challenge_duration_min ({}) must not exceed policy.challenge_duration_max ({}), itself below 2^48",
                self.challenge_duration_min, self.challenge_duration_max
            )));
        }
        let known: BTreeSet<Address> = peers.iter().map(|p| p.address).collect();
        Ok(PartyPolicy {
            auto_force_close_after: (self.auto_force_close_secs > 0).then_some(self.auto_force_close_secs),
            ledger_peers: match self.accept_ledgers_from {
                LedgerAcceptance::Peers => Some(known.clone()),
                LedgerAcceptance::Anyone => None,
            },
            known_peers: known,
            max_deposit_per_ledger: Some(wei("max_deposit_per_ledger", &self.max_deposit_per_ledger)?),
            max_total_deposit: Some(wei("max_total_deposit", &self.max_total_deposit)?),
            challenge_duration: Some((self.challenge_duration_min, self.challenge_duration_max)),
            assets: Some(std::iter::once(Address::ZERO).chain(self.tokens.iter().map(|t| t.address)).collect()),
            max_virtual_amount: Some(wei("max_virtual_amount", &self.max_virtual_amount)?),
            max_locked_per_counterparty: Some(wei("max_locked_per_counterparty", &self.max_locked_per_counterparty)?),
            token_limits: self.token_limits()?,
        })
    }

    /// The limits of each `[[policy.tokens]]` entry; the zero address or a token named twice
    /// is refused.
    fn token_limits(&self) -> Result<BTreeMap<Address, AssetLimits>, ConfigError> {
        let mut limits = BTreeMap::new();
        for (i, t) in self.tokens.iter().enumerate() {
            let units = |name: &str, value: &str| {
                crate::api::parse_amount(value).map(Some).map_err(|e| {
                    ConfigError::Invalid(format!(
                        "policy.tokens[{i}].{name}: {e} (a decimal amount in the token's smallest unit)"
                    ))
                })
            };
            if t.address.is_zero() {
                return Err(ConfigError::Invalid(format!(
                    "policy.tokens[{i}].address is the zero address: ETH's limits are the [policy] keys themselves"
                )));
            }
            let entry = AssetLimits {
                max_deposit_per_ledger: units("max_deposit_per_ledger", &t.max_deposit_per_ledger)?,
                max_total_deposit: units("max_total_deposit", &t.max_total_deposit)?,
                max_virtual_amount: units("max_virtual_amount", &t.max_virtual_amount)?,
                max_locked_per_counterparty: units("max_locked_per_counterparty", &t.max_locked_per_counterparty)?,
            };
            if limits.insert(t.address, entry).is_some() {
                return Err(ConfigError::Invalid(format!("policy.tokens[{i}]: token {} is named twice", t.address)));
            }
        }
        Ok(limits)
    }
}

fn default_challenge_duration() -> u64 {
    86_400
}

fn default_tick_ms() -> u64 {
    500
}

fn default_peer_queue_capacity() -> usize {
    4096
}

/// The largest accepted [`NodeConfig::peer_queue_capacity`].
const MAX_PEER_QUEUE_CAPACITY: usize = 1 << 20;

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
        if config.peer_queue_capacity == 0 || config.peer_queue_capacity > MAX_PEER_QUEUE_CAPACITY {
            return Err(ConfigError::Invalid(format!(
                "peer_queue_capacity must be between 1 and {MAX_PEER_QUEUE_CAPACITY}, got {}",
                config.peer_queue_capacity
            )));
        }
        let policy = &config.policy;
        if config.challenge_duration == 0 || policy.challenge_duration_min == 0 {
            let key =
                if config.challenge_duration == 0 { "challenge_duration" } else { "policy.challenge_duration_min" };
            return Err(ConfigError::Invalid(format!(
                "{key} = 0: a challenge would finalize in the block that registers it, before anyone could \
                 answer a stale state with a later one; use at least an hour (3600, the default minimum)"
            )));
        }
        if config.challenge_duration < policy.challenge_duration_min
            || config.challenge_duration > policy.challenge_duration_max
        {
            return Err(ConfigError::Invalid(format!(
                "challenge_duration {} is outside the policy's [{}, {}] s",
                config.challenge_duration, policy.challenge_duration_min, policy.challenge_duration_max
            )));
        }
        let mut seen = BTreeSet::new();
        if let Some(twice) = config.peers.iter().find(|p| !seen.insert(p.address)) {
            return Err(ConfigError::Invalid(format!(
                "peer {} is listed twice under [[peers]]; keep one entry per address",
                twice.address
            )));
        }
        policy.to_policy(&config.peers)?;
        match (config.confirmations, config.chain.confirmations) {
            (Some(top), Some(section)) if top != section => {
                return Err(ConfigError::Invalid(format!(
                    "confirmations = {top} and [chain] confirmations = {section} disagree: set one"
                )));
            }
            (Some(top), _) => config.chain.confirmations = Some(top),
            _ => {}
        }
        config.chain.check()?;
        Ok(config)
    }

    /// Refuses a configuration that lists `me`, this node's own address (from its key
    /// file), as a peer: the node would try to open ledgers with itself.
    pub fn check_own_address(&self, me: Address) -> Result<(), ConfigError> {
        match self.peers.iter().find(|p| p.address == me) {
            Some(p) => Err(ConfigError::Invalid(format!(
                "[[peers]] lists {me} (at {}), which is this node's own address (the key in {}); remove that entry",
                p.at,
                self.key_file.display()
            ))),
            None => Ok(()),
        }
    }

    /// What a loaded configuration holds that is accepted but deprecated, one sentence each
    /// (the node logs them as warnings at start).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(kept) = self.outbox_kept_per_peer {
            warnings.push(format!(
                "outbox_kept_per_peer = {kept} is deprecated and ignored: the store keeps the most recent 512 \
                 outbox messages per peer; remove the line"
            ));
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(extra: &str) -> Result<NodeConfig, ConfigError> {
        let dir = tempfile::tempdir().map_err(|error| ConfigError::Read { path: PathBuf::new(), error })?;
        let path = dir.path().join("node.toml");
        let text = format!(
            "key_file = \"k\"\ndb_path = \"d\"\nlisten = \"127.0.0.1:1\"\napi = \"127.0.0.1:2\"\ntoken_file = \"t\"\n\
             chain_url = \"http://127.0.0.1:8545\"\nadjudicator = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n\
             consensus_app = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n\
             virtual_payment_app = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n{extra}"
        );
        std::fs::write(&path, text).map_err(|error| ConfigError::Read { path: path.clone(), error })?;
        NodeConfig::load(&path)
    }

    #[test]
    fn the_chain_section_sets_the_depth_and_defaults_it_per_chain() {
        let config = load("[chain]\nconfirmations = 3\nmax_fee_gwei = 100\n").unwrap();
        assert_eq!(config.chain.confirmations_on(1), 3, "configured: whatever the chain");
        assert_eq!(config.chain.manager().max_fee_per_gas, 100_000_000_000);
        assert_eq!(load("confirmations = 3\n").unwrap().chain.confirmations_on(1), 3, "top-level shorthand");
        assert!(load("confirmations = 3\n[chain]\nconfirmations = 4\n").is_err(), "two values");
        let defaults = load("").unwrap();
        assert_eq!(defaults.chain.confirmations_on(1), 12, "mainnet");
        assert_eq!(defaults.chain.confirmations_on(31_337), 1, "anvil");
        for bad in
            ["confirmations = 0", "confirmations = 500", "bump_percent = 5", "deadline_max_fee_gwei = 1", "unknown = 1"]
        {
            assert!(load(&format!("[chain]\n{bad}\n")).is_err(), "{bad}");
        }
    }
}
