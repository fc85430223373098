//! The adjudicator's per-channel record: turn number, finalization time and fingerprint.

use alloy_primitives::{keccak256, B256};
use alloy_sol_types::SolValue;

use crate::{Exit, TurnNum};

/// Where a channel stands on chain, at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChannelMode {
    /// No challenge and not finalized.
    Open,
    /// A challenge is running.
    Challenge,
    /// Finalized: funds can be paid out.
    Finalized,
}

/// The adjudicator's `statusOf[channelId]`: `turnNumRecord (48 bits) ‖ finalizesAt (48 bits) ‖
/// fingerprint (160 bits)`, where the fingerprint is the low 160 bits of
/// `keccak256(abi.encode(stateHash, outcomeHash))`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ChannelStatus {
    /// The highest turn number the chain knows to be supported (zero after `conclude`).
    pub turn_num_record: TurnNum,
    /// When the channel finalizes (unix seconds); zero when open.
    pub finalizes_at: u64,
    /// Commitment to the registered state hash and outcome hash (zero when none).
    pub fingerprint: [u8; 20],
}

impl ChannelStatus {
    /// Unpacks the stored 32-byte word.
    pub fn from_word(word: B256) -> Self {
        let mut turn = [0u8; 8];
        turn[2..].copy_from_slice(&word[..6]);
        let mut finalizes = [0u8; 8];
        finalizes[2..].copy_from_slice(&word[6..12]);
        let mut fingerprint = [0u8; 20];
        fingerprint.copy_from_slice(&word[12..]);
        Self {
            turn_num_record: TurnNum::from(u64::from_be_bytes(turn)),
            finalizes_at: u64::from_be_bytes(finalizes),
            fingerprint,
        }
    }

    /// The fingerprint the adjudicator stores for a registered state hash and outcome hash.
    pub fn fingerprint_of(state_hash: B256, outcome_hash: B256) -> [u8; 20] {
        let digest = keccak256((state_hash, outcome_hash).abi_encode_params());
        let mut out = [0u8; 20];
        out.copy_from_slice(&digest[12..]);
        out
    }

    /// Whether the chain has registered exactly this state hash and outcome.
    pub fn is_registered(&self, state_hash: B256, outcome: &Exit) -> bool {
        self.fingerprint == Self::fingerprint_of(state_hash, outcome.hash())
    }

    /// The channel's mode at unix time `now` (the latest block's timestamp).
    pub fn mode(&self, now: u64) -> ChannelMode {
        if self.finalizes_at == 0 {
            ChannelMode::Open
        } else if self.finalizes_at <= now {
            ChannelMode::Finalized
        } else {
            ChannelMode::Challenge
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::aliases::U48;

    #[test]
    fn status_word_unpacks() {
        let mut word = [0u8; 32];
        word[5] = 7; // turnNumRecord = 7
        word[10] = 1;
        word[11] = 2; // finalizesAt = 258
        word[31] = 0xee;
        let status = ChannelStatus::from_word(B256::from(word));
        assert_eq!(status.turn_num_record, U48::from(7));
        assert_eq!(status.finalizes_at, 258);
        assert_eq!(status.fingerprint[19], 0xee);
        assert_eq!(status.mode(257), ChannelMode::Challenge);
        assert_eq!(status.mode(258), ChannelMode::Finalized);
        assert_eq!(ChannelStatus::default().mode(1), ChannelMode::Open);
    }
}
