//! Authenticating a connection (`docs/wire-format.md` §3): the Noise XX handshake, then one
//! `HELLO` each way that binds the session to the sender's Ethereum address.
//!
//! Each side signs `keccak256("nitro-noise-binding-v1" ‖ handshake_hash ‖ own_static_key)`
//! with the Ethereum prefix. The handshake hash is unique to the connection (it covers both
//! sides' ephemeral and static keys), so a binding is worthless anywhere else: a relay that
//! runs one handshake with each of two nodes holds two different hashes and cannot pass one
//! node's binding to the other.

use alloy_primitives::{keccak256, Address, B256};
use nitro_core::{recover_signer, Signature, SigningKey};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

use super::error::ConnError;
use super::frame::{self, Frame};
use super::noise::{self, MessageReader, Opener, Sealer};

/// The domain separator at the start of the binding hash.
pub const BINDING_DOMAIN: &[u8] = b"nitro-noise-binding-v1";

/// `keccak256(BINDING_DOMAIN ‖ handshake_hash ‖ static_key)`: what a node signs (with the
/// Ethereum prefix) to bind the Noise session with hash `handshake_hash` and its X25519
/// static key `static_key` to its Ethereum address.
pub fn binding_hash(handshake_hash: &[u8; 32], static_key: &[u8; 32]) -> B256 {
    let mut buf = [0u8; BINDING_DOMAIN.len() + 64];
    buf[..BINDING_DOMAIN.len()].copy_from_slice(BINDING_DOMAIN);
    buf[BINDING_DOMAIN.len()..BINDING_DOMAIN.len() + 32].copy_from_slice(handshake_hash);
    buf[BINDING_DOMAIN.len() + 32..].copy_from_slice(static_key);
    keccak256(buf)
}

/// Who we are on every connection.
pub(super) struct Identity {
    /// Our Ethereum key.
    pub(super) key: SigningKey,
    /// Our X25519 static key pair for this transport instance.
    pub(super) static_key: snow::Keypair,
    /// Our first stream id to each peer, random per transport instance (a stream with a gap
    /// is replaced by the next id).
    pub(super) stream: u64,
    /// The largest frame accepted.
    pub(super) max_frame_bytes: usize,
    /// Records sent between our rekeys.
    pub(super) rekey_interval: u64,
}

/// An authenticated connection, ready to carry messages.
pub(super) struct Authenticated {
    /// The peer's proven Ethereum address.
    pub(super) address: Address,
    /// The peer's stream on this connection.
    pub(super) remote_stream: u64,
    /// Our stream on this connection (announced in our `HELLO`).
    pub(super) local_stream: u64,
    /// Incoming Noise messages.
    pub(super) reader: MessageReader,
    /// Outgoing bytes.
    pub(super) writer: OwnedWriteHalf,
    /// Encrypts our frames.
    pub(super) sealer: Sealer,
    /// Decrypts the peer's frames.
    pub(super) opener: Opener,
    /// Frames that arrived in the same record as the peer's `HELLO`.
    pub(super) leftover: Vec<Frame>,
}

/// Authenticates `stream`: as the Noise initiator when we dialed (`expected` is whom we
/// meant to reach, and the stream we announce to it) or as the responder. The responder
/// checks the initiator's binding (and calls `admit` with its address, which answers the
/// stream we announce to it) before it sends its own.
pub(super) async fn authenticate(
    identity: &Identity,
    stream: TcpStream,
    expected: Option<(Address, u64)>,
    admit: impl FnOnce(Address) -> Result<u64, ConnError>,
) -> Result<Authenticated, ConnError> {
    stream.set_nodelay(true)?;
    let (read, mut writer) = stream.into_split();
    let mut reader = noise::message_reader(read);
    let initiator = expected.is_some();
    let outcome = noise::handshake(&identity.static_key.private, initiator, &mut reader, &mut writer).await?;
    let session = std::sync::Arc::new(std::sync::Mutex::new(outcome.session));
    let mut sealer = Sealer::new(session.clone(), identity.rekey_interval);
    let mut opener = Opener::new(session, identity.max_frame_bytes);

    let own_static: [u8; 32] = identity.static_key.public.as_slice().try_into().map_err(|_| ConnError::NoStaticKey)?;
    let signature = identity.key.sign(&binding_hash(&outcome.handshake_hash, &own_static));
    let hello = |stream: u64| frame::hello_frame(identity.key.address(), &signature, stream);
    if let Some((_, local_stream)) = expected {
        writer.write_all(sealer.seal(std::slice::from_ref(&hello(local_stream)))?).await?;
    }
    let (Hello { address, signature, stream: remote_stream }, leftover) = read_hello(&mut reader, &mut opener).await?;
    let recovered = recover_signer(&binding_hash(&outcome.handshake_hash, &outcome.remote_static), &signature)
        .map_err(ConnError::BadBinding)?;
    if recovered != address {
        return Err(ConnError::WrongSigner { recovered, claimed: address });
    }
    if address == identity.key.address() {
        return Err(ConnError::SelfConnection);
    }
    let local_stream = match expected {
        Some((expected, local_stream)) => {
            if address != expected {
                return Err(ConnError::Mismatch { claimed: address, expected });
            }
            local_stream
        }
        None => {
            let local_stream = admit(address)?;
            writer.write_all(sealer.seal(std::slice::from_ref(&hello(local_stream)))?).await?;
            local_stream
        }
    };
    Ok(Authenticated { address, remote_stream, local_stream, reader, writer, sealer, opener, leftover })
}

/// The fields of a peer's `HELLO`.
struct Hello {
    address: Address,
    signature: Signature,
    stream: u64,
}

/// Reads records until the peer's first frame, which must be its `HELLO`; returns it and
/// whatever frames followed it in the same record.
async fn read_hello(reader: &mut MessageReader, opener: &mut Opener) -> Result<(Hello, Vec<Frame>), ConnError> {
    loop {
        let record = noise::read_message(reader).await?;
        let mut frames = opener.open(&record)?.into_iter();
        let Some(first) = frames.next() else { continue };
        let Frame::Hello { address, signature, stream } = first else {
            return Err(ConnError::Unexpected(first.kind(), "before HELLO"));
        };
        let rest: Vec<Frame> = frames.collect();
        if let Some(again) = rest.iter().find(|f| matches!(f, Frame::Hello { .. })) {
            return Err(ConnError::Unexpected(again.kind(), "after HELLO"));
        }
        return Ok((Hello { address, signature, stream }, rest));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binding_hash_covers_domain_hash_and_key() {
        let h = [0x11; 32];
        let s = [0x22; 32];
        let mut expected = BINDING_DOMAIN.to_vec();
        expected.extend_from_slice(&h);
        expected.extend_from_slice(&s);
        assert_eq!(binding_hash(&h, &s), keccak256(expected));
        assert_ne!(binding_hash(&h, &s), binding_hash(&s, &h));
    }
}
