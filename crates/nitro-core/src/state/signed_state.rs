//! A state together with the participants' signatures on it.

use alloy_primitives::{Address, B256};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::{recover_signer, ChannelId, Signature, SignatureError, SigningKey, State};

/// A state this party signed: the record the "at most one state per turn" rule is checked
/// against (by the channel types, and again by a node's store before anything leaves).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SignedTurn {
    /// The channel.
    #[serde(with = "crate::json::bytes32")]
    pub channel_id: ChannelId,
    /// The turn of the state signed.
    #[serde(with = "crate::json::uint48")]
    pub turn_num: crate::TurnNum,
    /// The hash of the state signed.
    #[serde(with = "crate::json::bytes32")]
    pub state_hash: B256,
}

/// Why a signature could not be added to a [`SignedState`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignedStateError {
    /// The signature itself is malformed or unrecoverable.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The signature recovers to someone who is not a participant.
    #[error("signer {0} is not a participant of the channel")]
    NotAParticipant(Address),
    /// The serialized form lists a different number of signature slots than participants.
    #[error("{signatures} signature slots for {participants} participants")]
    WrongSignatureCount {
        /// Slots in the input.
        signatures: usize,
        /// Participants of the state.
        participants: usize,
    },
    /// Two signed copies of different states cannot be merged.
    #[error("cannot merge signatures of different states")]
    DifferentStates,
}

/// A [`State`] with signatures by participant index; every signature held has been verified.
///
/// The state hash is computed once, when the signed state is built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedState {
    state: State,
    channel_id: ChannelId,
    hash: B256,
    signatures: Vec<Option<Signature>>,
}

impl SignedState {
    /// A state with no signatures yet.
    pub fn new(state: State) -> Self {
        let channel_id = state.channel_id();
        Self::with_channel_id(state, channel_id)
    }

    /// A state with no signatures yet, when the caller already knows its channel id.
    pub fn with_channel_id(state: State, channel_id: ChannelId) -> Self {
        let hash = state.hash_with_channel_id(channel_id);
        let signatures = vec![None; state.participants.len()];
        Self { state, channel_id, hash, signatures }
    }

    /// A state with signatures the caller has already verified (crate-internal: the ledger
    /// keeps verified signatures and its state hash, and rebuilds the signed state on demand).
    pub(crate) fn from_verified(
        state: State,
        channel_id: ChannelId,
        hash: B256,
        signatures: impl IntoIterator<Item = Option<Signature>>,
    ) -> Self {
        let mut signatures: Vec<Option<Signature>> = signatures.into_iter().collect();
        signatures.resize(state.participants.len(), None);
        Self { state, channel_id, hash, signatures }
    }

    /// The state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Its channel id.
    pub fn channel_id(&self) -> ChannelId {
        self.channel_id
    }

    /// Its state hash.
    pub fn hash(&self) -> B256 {
        self.hash
    }

    /// The signature of participant `index`, if held.
    pub fn signature(&self, index: usize) -> Option<Signature> {
        self.signatures.get(index).copied().flatten()
    }

    /// All signature slots, by participant index.
    pub fn signatures(&self) -> &[Option<Signature>] {
        &self.signatures
    }

    /// Whether every participant has signed.
    pub fn is_fully_signed(&self) -> bool {
        self.signatures.iter().all(Option::is_some)
    }

    /// Signs with `key` (which must belong to a participant) and records the signature.
    pub fn sign(&mut self, key: &SigningKey) -> Result<Signature, SignedStateError> {
        let index = self.index_of(key.address())?;
        let signature = key.sign(&self.hash);
        self.place(index, signature);
        Ok(signature)
    }

    /// Verifies `signature` and records it under its signer's index, which is returned.
    /// Adding the same signature twice is harmless.
    pub fn add_signature(&mut self, signature: Signature) -> Result<usize, SignedStateError> {
        let signer = recover_signer(&self.hash, &signature)?;
        let index = self.index_of(signer)?;
        self.place(index, signature);
        Ok(index)
    }

    /// Verifies that `signature` is participant `index`'s and records it.
    pub fn add_signature_of(&mut self, index: usize, signature: Signature) -> Result<(), SignedStateError> {
        let signer = recover_signer(&self.hash, &signature)?;
        match self.state.participants.get(index) {
            Some(expected) if *expected == signer => {
                self.place(index, signature);
                Ok(())
            }
            _ => Err(SignedStateError::NotAParticipant(signer)),
        }
    }

    /// Adds every signature of `other` (a signed copy of the same state) that this copy lacks.
    pub fn merge(&mut self, other: &SignedState) -> Result<(), SignedStateError> {
        if other.hash != self.hash || other.state != self.state {
            return Err(SignedStateError::DifferentStates);
        }
        for (mine, theirs) in self.signatures.iter_mut().zip(&other.signatures) {
            if mine.is_none() {
                *mine = *theirs;
            }
        }
        Ok(())
    }

    fn index_of(&self, signer: Address) -> Result<usize, SignedStateError> {
        self.state.participants.iter().position(|p| *p == signer).ok_or(SignedStateError::NotAParticipant(signer))
    }

    /// Records a verified signature; a participant's first signature is kept (a second valid
    /// one on the same hash adds nothing).
    fn place(&mut self, index: usize, signature: Signature) {
        self.signatures[index].get_or_insert(signature);
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignedStateJson {
    state: State,
    signatures: Vec<Option<Signature>>,
}

impl Serialize for SignedState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SignedStateJson { state: self.state.clone(), signatures: self.signatures.clone() }.serialize(s)
    }
}

impl<'de> Deserialize<'de> for SignedState {
    /// Every signature is verified against its slot's participant while decoding.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let raw = SignedStateJson::deserialize(d)?;
        let participants = raw.state.participants.len();
        if raw.signatures.len() != participants {
            return Err(D::Error::custom(SignedStateError::WrongSignatureCount {
                signatures: raw.signatures.len(),
                participants,
            }));
        }
        let mut signed = SignedState::new(raw.state);
        for (index, signature) in raw.signatures.into_iter().enumerate() {
            if let Some(signature) = signature {
                signed.add_signature_of(index, signature).map_err(D::Error::custom)?;
            }
        }
        Ok(signed)
    }
}
