//! A ledger channel as durable state: what a store keeps of it and loads back, verified.
//!
//! A [`LedgerRecord`] holds the consensus state with both signatures, the queued proposals
//! and each role's memory of what it signed, refused or reserved — never the key. Loading
//! re-verifies everything, as if it came from the peer: the consensus signatures, every
//! queued proposal recomputed from the state before it with the leader's signature checked,
//! and the follower's own refusal. A record that does not verify is a
//! [`ChannelError::Replay`] and nothing is built from it.

use serde::{Deserialize, Serialize};

use super::{shared::FOLLOWER, ChannelError, FollowerChannel, LeaderChannel, Rejection, SignedProposal};
use crate::{recover_signer, ConsensusChannel, SignedState, SigningKey, TurnNum};

/// Which role a record is of, with what that role remembers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "role")]
pub enum RoleRecord {
    /// The leader: the highest turn it signed, and the final state's turn once closing.
    Leader {
        /// Every later signature goes above it.
        highest_signed: TurnNum,
        /// The final state's turn, once the ledger is closing.
        closing: Option<TurnNum>,
    },
    /// The follower: the highest turn it refused, its latest refusal, and the final state's
    /// turn once closing.
    Follower {
        /// Never countersigned at or below, beyond the consensus.
        refused_through: TurnNum,
        /// Sent again when a refused branch comes back.
        last_rejection: Option<Rejection>,
        /// The final state's turn, once the ledger is closing.
        closing: Option<TurnNum>,
    },
}

/// A ledger channel as a store keeps it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerRecord {
    /// The latest state signed by both.
    pub consensus: SignedState,
    /// The proposals after it, oldest first.
    pub queue: Vec<SignedProposal>,
    /// The role and what it remembers.
    pub role: RoleRecord,
}

impl ConsensusChannel {
    /// The channel as durable state.
    pub fn to_record(&self) -> LedgerRecord {
        match self {
            Self::Leader(l) => LedgerRecord {
                consensus: l.consensus_state(),
                queue: l.queue().iter().map(|q| q.signed.clone()).collect(),
                role: RoleRecord::Leader { highest_signed: l.highest_signed(), closing: l.closing() },
            },
            Self::Follower(f) => LedgerRecord {
                consensus: f.consensus_state(),
                queue: f.pending().cloned().collect(),
                role: RoleRecord::Follower {
                    refused_through: f.refused_through(),
                    last_rejection: f.last_rejection().cloned(),
                    closing: f.closing(),
                },
            },
        }
    }

    /// The channel of `key` from its record, verified (see the module docs).
    pub fn from_record(key: SigningKey, record: &LedgerRecord) -> Result<Self, ChannelError> {
        let bad = |e: ChannelError| ChannelError::Replay(format!("stored ledger: {e}"));
        match &record.role {
            RoleRecord::Leader { highest_signed, closing } => {
                let mut l = LeaderChannel::new(key, &record.consensus).map_err(bad)?;
                for signed in &record.queue {
                    l.load_queued(signed).map_err(bad)?;
                }
                l.load_marks(*highest_signed, *closing).map_err(bad)?;
                Ok(Self::Leader(l))
            }
            RoleRecord::Follower { refused_through, last_rejection, closing } => {
                let mut f = FollowerChannel::new(key, &record.consensus).map_err(bad)?;
                for signed in &record.queue {
                    f.load_queued(signed).map_err(bad)?;
                }
                if let Some(r) = last_rejection {
                    let hash = Rejection::signing_hash(r.channel_id, r.turn_num, r.state_hash, &r.refused);
                    let signer = recover_signer(&hash, &r.signature).map_err(|e| bad(e.into()))?;
                    let ours = record.consensus.state().participants[FOLLOWER];
                    if signer != ours || r.channel_id != record.consensus.channel_id() {
                        return Err(bad(ChannelError::WrongSigner { expected: ours, got: signer }));
                    }
                }
                f.load_marks(*refused_through, last_rejection.clone(), *closing).map_err(bad)?;
                Ok(Self::Follower(f))
            }
        }
    }
}
