//! Ethereum-prefixed secp256k1 signatures over state hashes.
//!
//! A Nitro signature signs `keccak256("\x19Ethereum Signed Message:\n32" ‖ stateHash)` with an
//! RFC 6979 nonce; it is carried as `r ‖ s ‖ v` with `v ∈ {27, 28}` and low `s`. Signing and
//! recovery use libsecp256k1 (ADR-0001 explains the choice and its figures).

use std::{fmt, sync::LazyLock};

use alloy_primitives::{keccak256, Address, B256, U256};
use secp256k1::{
    ecdsa::{RecoverableSignature, RecoveryId},
    All, Message, PublicKey, Secp256k1, SecretKey,
};
use serde::{de::Error as _, Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::json;

/// The order n of the secp256k1 group.
const ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc,
    0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];

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
    /// `r` or `s` is zero or not below the group order.
    #[error("signature {0} is zero or not below the group order")]
    ScalarOutOfRange(&'static str),
    /// No public key recovers from the signature over this message.
    #[error("signature does not recover to any public key")]
    Unrecoverable,
    /// The private key is zero or not below the group order.
    #[error("invalid secp256k1 private key")]
    BadPrivateKey,
}

/// A recoverable ECDSA signature in Ethereum's `r ‖ s ‖ v` form.
///
/// Always well formed: `v ∈ {27, 28}`, `r` and `s` in `[1, n − 1]` and `s ≤ n/2` (low s).
/// The fields are private and every constructor checks them, so no code path — recovery,
/// the ledger's receive paths, [`SignedState`](crate::SignedState) — can hold one that is not.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Signature {
    r: B256,
    s: B256,
    v: u8,
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

    /// A signature from its parts, refusing `v ∉ {27, 28}`, `r` or `s` zero or not below the
    /// group order, and high `s` (the malleable twin of a canonical signature).
    pub fn new(r: B256, s: B256, v: u8) -> Result<Self, SignatureError> {
        if v != 27 && v != 28 {
            return Err(SignatureError::BadRecoveryByte(v));
        }
        for (name, x) in [("r", &r), ("s", &s)] {
            if x.is_zero() || x.0 >= ORDER {
                return Err(SignatureError::ScalarOutOfRange(name));
            }
        }
        if s.0 > HALF_ORDER {
            return Err(SignatureError::HighS);
        }
        Ok(Self { r, s, v })
    }

    /// A signature as the chain accepts it (`ecrecover` takes high `s` too), brought to its
    /// canonical low-`s` form, which recovers the same signer: `s → n − s`, `v → 55 − v`.
    /// Use it only for signatures read from the chain (a challenger's submission), never for
    /// what a peer sends.
    pub fn normalized(r: B256, s: B256, v: u8) -> Result<Self, SignatureError> {
        if (v == 27 || v == 28) && !s.is_zero() && s.0 > HALF_ORDER && s.0 < ORDER {
            let low = U256::from_be_bytes(ORDER) - U256::from_be_bytes(s.0);
            return Self::new(r, B256::from(low.to_be_bytes::<32>()), 55 - v);
        }
        Self::new(r, s, v)
    }

    /// Parses the flat form `r ‖ s ‖ v`, with the checks of [`Signature::new`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignatureError> {
        if bytes.len() != 65 {
            return Err(SignatureError::BadLength(bytes.len()));
        }
        Self::new(B256::from_slice(&bytes[..32]), B256::from_slice(&bytes[32..64]), bytes[64])
    }

    /// The `r` component.
    pub fn r(&self) -> B256 {
        self.r
    }

    /// The `s` component (at most n/2).
    pub fn s(&self) -> B256 {
        self.s
    }

    /// The recovery byte: 27 or 28.
    pub fn v(&self) -> u8 {
        self.v
    }

    fn to_recoverable(self) -> Result<RecoverableSignature, SignatureError> {
        // `v` is 27 or 28 by construction.
        let id = RecoveryId::try_from(i32::from(self.v) - 27).map_err(|_| SignatureError::BadRecoveryByte(self.v))?;
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
        high_s[32] = 0xfe;
        assert_eq!(Signature::from_bytes(&high_s), Err(SignatureError::HighS));
        let order = B256::from(ORDER);
        let (r, s) = (B256::from_slice(&sig[..32]), B256::from_slice(&sig[32..64]));
        // Every constructor refuses the same things: there is no unchecked way in.
        for (r, s, v, error) in [
            (B256::ZERO, s, 27, SignatureError::ScalarOutOfRange("r")),
            (order, s, 27, SignatureError::ScalarOutOfRange("r")),
            (B256::repeat_byte(0xff), s, 27, SignatureError::ScalarOutOfRange("r")),
            (r, B256::ZERO, 27, SignatureError::ScalarOutOfRange("s")),
            (r, order, 28, SignatureError::ScalarOutOfRange("s")),
            (r, B256::from(HALF_ORDER), 27, SignatureError::HighS),
            (r, s, 0, SignatureError::BadRecoveryByte(0)),
            (r, s, 26, SignatureError::BadRecoveryByte(26)),
            (r, s, 29, SignatureError::BadRecoveryByte(29)),
            (r, s, 255, SignatureError::BadRecoveryByte(255)),
        ] {
            let mut flat = [0u8; 65];
            flat[..32].copy_from_slice(r.as_slice());
            flat[32..64].copy_from_slice(s.as_slice());
            flat[64] = v;
            if error == SignatureError::HighS {
                // n/2 itself is the largest low s; one more is high.
                let high = U256::from_be_bytes(HALF_ORDER) + U256::from(1);
                flat[32..64].copy_from_slice(&high.to_be_bytes::<32>());
                assert!(Signature::new(r, B256::from(HALF_ORDER), v).is_ok());
                assert_eq!(Signature::new(r, B256::from(high.to_be_bytes::<32>()), v), Err(error.clone()));
            } else {
                assert_eq!(Signature::new(r, s, v), Err(error.clone()), "new({r}, {s}, {v})");
            }
            assert_eq!(Signature::from_bytes(&flat), Err(error.clone()));
            let json = serde_json::Value::String(json::format_hex(&flat));
            assert!(serde_json::from_value::<Signature>(json).is_err());
        }
    }

    #[test]
    fn high_s_from_the_chain_normalizes_to_the_same_signer() {
        let hash = B256::repeat_byte(3);
        let sig = key(7).sign(&hash);
        let high = U256::from_be_bytes(ORDER) - U256::from_be_bytes(sig.s().0);
        let twin_v = 55 - sig.v();
        let high_s = B256::from(high.to_be_bytes::<32>());
        assert_eq!(Signature::new(sig.r(), high_s, twin_v), Err(SignatureError::HighS));
        let normalized = Signature::normalized(sig.r(), high_s, twin_v).unwrap();
        assert_eq!(normalized, sig);
        assert_eq!(recover_signer(&hash, &normalized).unwrap(), key(7).address());
        assert_eq!(Signature::normalized(sig.r(), sig.s(), sig.v()).unwrap(), sig);
        assert!(Signature::normalized(sig.r(), B256::ZERO, 27).is_err());
        assert!(Signature::normalized(sig.r(), high_s, 1).is_err());
    }

    #[test]
    fn bad_private_keys_are_refused() {
        assert!(SigningKey::from_bytes(&[0u8; 32]).is_err());
        assert!(SigningKey::from_bytes(&[0xff; 32]).is_err());
        assert!(SigningKey::from_hex("0x12").is_err());
        assert!(!format!("{:?}", key(3)).contains("secret"));
    }
}
