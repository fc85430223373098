//! Ethereum-prefixed secp256k1 signatures over state hashes.
//!
//! A Nitro signature signs `keccak256("\x19Ethereum Signed Message:\n32" ‖ stateHash)` with an
//! RFC 6979 nonce; it is carried as `r ‖ s ‖ v` with `v ∈ {27, 28}` and low `s`. Signing and
//! recovery use libsecp256k1 (ADR-0001 explains the choice and its figures).

use std::{fmt, sync::LazyLock};

use alloy_primitives::{keccak256, Address, B256};
use secp256k1::{
    ecdsa::{RecoverableSignature, RecoveryId},
    All, Message, PublicKey, Secp256k1, SecretKey,
};
use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::json;

/// Half the order of the secp256k1 group: a canonical (low-s) signature has `s <= HALF_ORDER`.
const HALF_ORDER: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x5d, 0x57, 0x6e,
    0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// One libsecp256k1 context for the process, blinded once with a per-process seed.
///
/// libsecp256k1 signing is constant time; the blinding is defence in depth. Re-blinding on
/// every signature (what `secp256k1` 0.32+ does) doubles the cost of a signature; ADR-0001.
static CONTEXT: LazyLock<Secp256k1<All>> = LazyLock::new(|| {
    let mut ctx = Secp256k1::new();
    ctx.seeded_randomize(&process_seed());
    ctx
});

/// 32 bytes that differ between processes, from the OS-seeded keys of std's `RandomState`.
fn process_seed() -> [u8; 32] {
    use std::hash::{BuildHasher, Hasher};
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_usize(i);
        chunk.copy_from_slice(&h.finish().to_le_bytes());
    }
    seed
}

/// Why a signature or key was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SignatureError {
    /// The flat signature is not 65 bytes.
    #[error("a signature is 65 bytes (r ‖ s ‖ v), got {0}")]
    BadLength(usize),
    /// `v` is not 27 or 28.
    #[error("signature v must be 27 or 28, got {0}")]
    BadRecoveryByte(u8),
    /// `s` is in the upper half of the group order (malleable form).
    #[error("signature s is not canonical (high s)")]
    HighS,
    /// `r` or `s` is zero or not below the group order, or no key recovers from it.
    #[error("signature does not recover to any public key")]
    Unrecoverable,
    /// The private key is zero or not below the group order.
    #[error("invalid secp256k1 private key")]
    BadPrivateKey,
}

/// A recoverable ECDSA signature in Ethereum's `r ‖ s ‖ v` form.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature {
    /// The `r` component.
    pub r: B256,
    /// The `s` component (always low-s).
    pub s: B256,
    /// 27 or 28.
    pub v: u8,
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", json::format_hex(&self.to_bytes()))
    }
}

impl Signature {
    /// The 65-byte flat form `r ‖ s ‖ v`.
    pub fn to_bytes(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        out[..32].copy_from_slice(self.r.as_slice());
        out[32..64].copy_from_slice(self.s.as_slice());
        out[64] = self.v;
        out
    }

    /// Parses the flat form, refusing a wrong length, a `v` other than 27/28 and high `s`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        if bytes.len() != 65 {
            return Err(SignatureError::BadLength(bytes.len()));
        }
        let v = bytes[64];
        if v != 27 && v != 28 {
            return Err(SignatureError::BadRecoveryByte(v));
        }
        let s = B256::from_slice(&bytes[32..64]);
        if s.0 > HALF_ORDER {
            return Err(SignatureError::HighS);
        }
        Ok(Self { r: B256::from_slice(&bytes[..32]), s, v })
    }

    fn to_recoverable(self) -> Result<RecoverableSignature, SignatureError> {
        // Fields are public: `v` may be anything here, not only what `from_bytes` admits.
        let id = match self.v {
            27 | 28 => {
                RecoveryId::try_from(i32::from(self.v) - 27).map_err(|_| SignatureError::BadRecoveryByte(self.v))?
            }
            v => return Err(SignatureError::BadRecoveryByte(v)),
        };
        let mut compact = [0u8; 64];
        compact[..32].copy_from_slice(self.r.as_slice());
        compact[32..].copy_from_slice(self.s.as_slice());
        RecoverableSignature::from_compact(&compact, id).map_err(|_| SignatureError::Unrecoverable)
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&json::format_hex(&self.to_bytes()))
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        let bytes = json::decode_hex(&s).map_err(D::Error::custom)?;
        Signature::from_bytes(&bytes).map_err(D::Error::custom)
    }
}

/// `keccak256("\x19Ethereum Signed Message:\n32" ‖ hash)`: what a Nitro signature signs.
pub fn ethereum_message_hash(hash: &B256) -> B256 {
    let mut buf = [0u8; 60];
    buf[..28].copy_from_slice(b"\x19Ethereum Signed Message:\n32");
    buf[28..].copy_from_slice(hash.as_slice());
    keccak256(buf)
}

/// `keccak256(abi.encode(bytes32 stateHash, string "forceMove"))`: what a challenger signs
/// (with the Ethereum prefix) to register a challenge with a state.
pub fn challenge_hash(state_hash: &B256) -> B256 {
    use alloy_sol_types::SolValue;
    keccak256((*state_hash, String::from("forceMove")).abi_encode_params())
}

/// The address whose key produced `signature` over `hash` (with the Ethereum prefix).
pub fn recover_signer(hash: &B256, signature: &Signature) -> Result<Address, SignatureError> {
    let recoverable = signature.to_recoverable()?;
    let message = Message::from_digest(ethereum_message_hash(hash).0);
    let key = CONTEXT.recover_ecdsa(message, &recoverable).map_err(|_| SignatureError::Unrecoverable)?;
    Ok(address_of_key(&key))
}

fn address_of_key(key: &PublicKey) -> Address {
    let uncompressed = key.serialize_uncompressed();
    Address::from_slice(&keccak256(&uncompressed[1..])[12..])
}

/// A participant's private key, with its address computed once.
#[derive(Clone)]
pub struct SigningKey {
    secret: SecretKey,
    address: Address,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("address", &self.address).finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A key from its 32 secret bytes; zero or out-of-range values are refused.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, SignatureError> {
        let secret = SecretKey::from_byte_array(*bytes).map_err(|_| SignatureError::BadPrivateKey)?;
        let address = address_of_key(&secret.public_key(&CONTEXT));
        Ok(Self { secret, address })
    }

    /// A key from `0x`-hex (64 digits).
    pub fn from_hex(hex: &str) -> Result<Self, SignatureError> {
        let bytes = json::decode_fixed::<32>(hex.trim()).map_err(|_| SignatureError::BadPrivateKey)?;
        Self::from_bytes(&bytes)
    }

    /// The secret bytes (for storing the key; handle with care).
    pub fn to_bytes(&self) -> [u8; 32] {
        self.secret.secret_bytes()
    }

    /// The Ethereum address of this key.
    pub fn address(&self) -> Address {
        self.address
    }

    /// Signs `hash` with the Ethereum prefix (RFC 6979, low s, v ∈ {27, 28}).
    pub fn sign(&self, hash: &B256) -> Signature {
        let message = Message::from_digest(ethereum_message_hash(hash).0);
        let (id, compact) = CONTEXT.sign_ecdsa_recoverable(message, &self.secret).serialize_compact();
        Signature {
            r: B256::from_slice(&compact[..32]),
            s: B256::from_slice(&compact[32..]),
            v: 27 + i32::from(id) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        let mut b = [0u8; 32];
        b[31] = n;
        SigningKey::from_bytes(&b).unwrap()
    }

    #[test]
    fn known_address_of_key_one() {
        assert_eq!(key(1).address(), "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf".parse::<Address>().unwrap());
    }

    #[test]
    fn sign_then_recover() {
        let hash = B256::repeat_byte(9);
        let sig = key(5).sign(&hash);
        assert_eq!(recover_signer(&hash, &sig).unwrap(), key(5).address());
        assert_ne!(recover_signer(&B256::repeat_byte(8), &sig).unwrap(), key(5).address());
        assert_eq!(Signature::from_bytes(&sig.to_bytes()).unwrap(), sig);
    }

    #[test]
    fn malformed_signatures_are_refused() {
        let sig = key(2).sign(&B256::ZERO).to_bytes();
        assert_eq!(Signature::from_bytes(&sig[..64]), Err(SignatureError::BadLength(64)));
        let mut bad_v = sig;
        bad_v[64] = 1;
        assert_eq!(Signature::from_bytes(&bad_v), Err(SignatureError::BadRecoveryByte(1)));
        let mut high_s = sig;
        high_s[32] = 0xff;
        assert_eq!(Signature::from_bytes(&high_s), Err(SignatureError::HighS));
        let zero = Signature { r: B256::ZERO, s: B256::ZERO, v: 27 };
        assert_eq!(recover_signer(&B256::ZERO, &zero), Err(SignatureError::Unrecoverable));
        // Found by fuzzing: a `v` below 27 built directly (not parsed) must not underflow.
        for v in [0, 1, 26, 29, 255] {
            let odd = Signature { r: B256::repeat_byte(1), s: B256::repeat_byte(1), v };
            assert_eq!(recover_signer(&B256::ZERO, &odd), Err(SignatureError::BadRecoveryByte(v)));
        }
    }

    #[test]
    fn bad_private_keys_are_refused() {
        assert!(SigningKey::from_bytes(&[0u8; 32]).is_err());
        assert!(SigningKey::from_bytes(&[0xff; 32]).is_err());
        assert!(SigningKey::from_hex("0x12").is_err());
        assert!(!format!("{:?}", key(3)).contains("secret"));
    }
}
