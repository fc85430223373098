//! How deep a block must be before what it holds is acted on: the confirmation depth per
//! chain.
//!
//! A deposit, a conclusion or a challenge is acted on (and a transaction counted as landed)
//! only once its block has `confirmations - 1` blocks on top of it (1 = as soon as mined) and
//! is still in the canonical chain then. A reorg deeper than that is still detected (the
//! watcher keeps the hashes of what it reported for [`WatcherConfig::reorg_window`] more
//! blocks) and undone, but money may already have moved on it: choose a depth that reorgs do
//! not reach.
//!
//! | chain | id | depth | why |
//! |---|---|---|---|
//! | Ethereum mainnet | 1 | 12 | ~2.4 min at 12 s a block; reorgs deeper than 2 blocks have been rare since the merge (full finality takes 64–95 blocks) |
//! | Sepolia, Holesky, Hoodi | 11155111, 17000, 560048 | 12 | as mainnet |
//! | OP Mainnet, Base | 10, 8453 | 10 | 20 s at 2 s a block: sequencer reorgs of unsafe blocks are rare and short |
//! | Arbitrum One, Nova | 42161, 42170 | 20 | 5 s at 0.25 s a block |
//! | Polygon PoS | 137 | 64 | ~2 min at 2 s a block: its history has reorgs of tens of blocks |
//! | anvil / hardhat | 31337 | 1 | a local dev chain (automine): a block exists only because a transaction made it, so deeper waits would never end; reorgs happen only when a test forces them, and tests of reorgs set their depth |
//! | any other | — | 12 | conservative: set `[chain] confirmations` for the chain you run on |
//!
//! [`WatcherConfig::reorg_window`]: crate::WatcherConfig::reorg_window

/// The confirmation depth used for a chain when the configuration names none (see the
/// module's table).
pub fn default_confirmations(chain_id: u64) -> u64 {
    match chain_id {
        1 | 11_155_111 | 17_000 | 560_048 => 12,
        10 | 8453 => 10,
        42_161 | 42_170 => 20,
        137 => 64,
        crate::ANVIL_CHAIN_ID => 1,
        _ => UNKNOWN_CHAIN_CONFIRMATIONS,
    }
}

/// The depth for a chain not in the table.
pub const UNKNOWN_CHAIN_CONFIRMATIONS: u64 = 12;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_chains_have_their_depth_and_others_a_conservative_one() {
        assert_eq!(default_confirmations(1), 12);
        assert_eq!(default_confirmations(8453), 10);
        assert_eq!(default_confirmations(42_161), 20);
        assert_eq!(default_confirmations(31_337), 1);
        assert_eq!(default_confirmations(999_999), UNKNOWN_CHAIN_CONFIRMATIONS);
    }
}
