//! The Noise layer (`docs/wire-format.md` §2–3): `Noise_XX_25519_ChaChaPoly_BLAKE2s` through
//! `snow`, every Noise message behind a 2-byte length, and the records of the transport phase
//! with their rekeying.

use std::sync::{Arc, Mutex};

use futures::StreamExt;
use snow::{HandshakeState, TransportState};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::error::ConnError;
use super::frame::{Assembler, Frame, REKEY_FRAME};
use super::lock;

/// The Noise protocol name.
pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";

/// The Noise prologue: both sides must use the same, or the handshake fails. Names the wire
/// format version.
pub const PROLOGUE: &[u8] = b"nitro-transport-v2";

/// The longest Noise message (the Noise specification's limit).
pub const MAX_NOISE_MESSAGE: usize = 65_535;

/// The authentication tag of every encrypted Noise message.
pub(super) const TAG_BYTES: usize = 16;

/// The most plaintext one record carries.
pub(super) const MAX_RECORD_PLAINTEXT: usize = MAX_NOISE_MESSAGE - TAG_BYTES;

/// The plaintext of a record available to frames other than the final `REKEY`.
const RECORD_DATA: usize = MAX_RECORD_PLAINTEXT - REKEY_FRAME.len();

/// The sizes of the three XX messages with empty payloads: `e`; `e, ee, s, es`; `s, se`.
const HANDSHAKE_SIZES: [usize; 3] = [32, 32 + 32 + TAG_BYTES + TAG_BYTES, 32 + TAG_BYTES + TAG_BYTES];

/// The reading half of a connection: Noise messages behind their 2-byte length.
pub(super) type MessageReader = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;

/// A reader of Noise messages on `read`.
pub(super) fn message_reader(read: OwnedReadHalf) -> MessageReader {
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(2)
        .big_endian()
        .max_frame_length(MAX_NOISE_MESSAGE)
        .new_codec();
    FramedRead::new(read, codec)
}

/// A fresh X25519 static key pair (one per transport instance; see ADR-0016).
pub(super) fn generate_static_key() -> Result<snow::Keypair, snow::Error> {
    snow::Builder::new(params()?).generate_keypair()
}

fn params() -> Result<snow::params::NoiseParams, snow::Error> {
    NOISE_PARAMS.parse()
}

/// The outcome of the Noise handshake: the session, the handshake hash and the peer's
/// static key.
pub(super) struct NoiseOutcome {
    /// The transport-phase cipher states.
    pub(super) session: TransportState,
    /// `h` at the end of the handshake, unique to this connection.
    pub(super) handshake_hash: [u8; 32],
    /// The peer's X25519 static public key.
    pub(super) remote_static: [u8; 32],
}

/// Runs the three XX messages as initiator (we dialed) or responder, with empty payloads.
pub(super) async fn handshake(
    static_private: &[u8],
    initiator: bool,
    reader: &mut MessageReader,
    writer: &mut OwnedWriteHalf,
) -> Result<NoiseOutcome, ConnError> {
    let builder = snow::Builder::new(params()?).local_private_key(static_private)?.prologue(PROLOGUE)?;
    let mut state = if initiator { builder.build_initiator()? } else { builder.build_responder()? };
    for (index, size) in HANDSHAKE_SIZES.into_iter().enumerate() {
        let ours = (index % 2 == 0) == initiator;
        if ours {
            let mut message = [0u8; 2 + 128];
            let len = state.write_message(&[], &mut message[2..])?;
            message[..2].copy_from_slice(&(len as u16).to_be_bytes());
            writer.write_all(&message[..2 + len]).await?;
        } else {
            let message = read_message(reader).await?;
            if message.len() != size {
                return Err(ConnError::HandshakeMessage { index: index + 1, len: message.len() });
            }
            let mut payload = [0u8; 128];
            if state.read_message(&message, &mut payload)? != 0 {
                return Err(ConnError::HandshakeMessage { index: index + 1, len: message.len() });
            }
        }
    }
    finish(state)
}

fn finish(state: HandshakeState) -> Result<NoiseOutcome, ConnError> {
    let handshake_hash: [u8; 32] = state.get_handshake_hash().try_into().map_err(|_| ConnError::NoStaticKey)?;
    let remote_static: [u8; 32] =
        state.get_remote_static().and_then(|key| key.try_into().ok()).ok_or(ConnError::NoStaticKey)?;
    Ok(NoiseOutcome { session: state.into_transport_mode()?, handshake_hash, remote_static })
}

/// The next Noise message from the peer.
pub(super) async fn read_message(reader: &mut MessageReader) -> Result<Bytes, ConnError> {
    match reader.next().await {
        None => Err(ConnError::Closed),
        Some(Err(error)) => Err(ConnError::Io(error)),
        Some(Ok(message)) => Ok(message.freeze()),
    }
}

/// The cipher states of one connection, shared by its reading and writing halves (each uses
/// its own direction; the lock is held only while one record is sealed or opened).
pub(super) type Session = Arc<Mutex<TransportState>>;

/// Encrypts frames into records for one connection. Once `rekey_interval` records went out
/// under one key, the next record that ends at the end of a frame ends with a `REKEY` frame
/// and the sending key changes.
pub(super) struct Sealer {
    session: Session,
    rekey_interval: u64,
    since_rekey: u64,
    plain: Vec<u8>,
    out: Vec<u8>,
}

impl Sealer {
    /// A sealer for `session`, rekeying every `rekey_interval` records (at least 1).
    pub(super) fn new(session: Session, rekey_interval: u64) -> Self {
        Self {
            session,
            rekey_interval: rekey_interval.max(1),
            since_rekey: 0,
            plain: Vec::with_capacity(MAX_RECORD_PLAINTEXT),
            out: Vec::new(),
        }
    }

    /// The bytes to write for `frames` (each a whole encoded frame): as few records as they
    /// fit in, each behind its 2-byte length.
    pub(super) fn seal(&mut self, frames: &[Bytes]) -> Result<&[u8], ConnError> {
        self.out.clear();
        self.plain.clear();
        for frame in frames {
            let mut rest = &frame[..];
            while !rest.is_empty() {
                if self.plain.is_empty() && rest.len() >= RECORD_DATA {
                    // A whole record of one long frame: sealed without staging it.
                    let (now, later) = rest.split_at(RECORD_DATA);
                    rest = later;
                    if !self.rekey_due(rest.is_empty()) {
                        self.seal_record(now, false)?;
                        continue;
                    }
                    self.plain.extend_from_slice(now);
                } else {
                    let room = RECORD_DATA - self.plain.len();
                    let (now, later) = rest.split_at(room.min(rest.len()));
                    self.plain.extend_from_slice(now);
                    rest = later;
                    if self.plain.len() < RECORD_DATA {
                        continue;
                    }
                }
                self.seal_staged(rest.is_empty())?;
            }
        }
        if !self.plain.is_empty() {
            self.seal_staged(true)?;
        }
        Ok(&self.out)
    }

    /// Whether the next record must end with a `REKEY`: `rekey_interval` records went out
    /// under the current key and the record ends with the end of a frame (only such a
    /// record may carry a `REKEY`, a frame of its own in the stream; a rekey that falls due
    /// inside a long frame waits for its end).
    fn rekey_due(&self, at_boundary: bool) -> bool {
        at_boundary && self.since_rekey + 1 >= self.rekey_interval
    }

    /// Seals the staged plaintext as one record, with a `REKEY` if one is due.
    fn seal_staged(&mut self, at_boundary: bool) -> Result<(), ConnError> {
        let rekey = self.rekey_due(at_boundary);
        let mut plain = std::mem::take(&mut self.plain);
        if rekey {
            plain.extend_from_slice(&REKEY_FRAME);
        }
        let sealed = self.seal_record(&plain, rekey);
        plain.clear();
        self.plain = plain;
        sealed
    }

    /// Appends `plain` as one sealed record to the output; rekeys after it if `rekey`.
    fn seal_record(&mut self, plain: &[u8], rekey: bool) -> Result<(), ConnError> {
        let start = self.out.len();
        self.out.resize(start + 2 + plain.len() + TAG_BYTES, 0);
        let mut session = lock(&self.session);
        let len = session.write_message(plain, &mut self.out[start + 2..])?;
        if rekey {
            session.rekey_outgoing();
        }
        drop(session);
        self.since_rekey = if rekey { 0 } else { self.since_rekey + 1 };
        self.out[start..start + 2].copy_from_slice(&(len as u16).to_be_bytes());
        self.out.truncate(start + 2 + len);
        Ok(())
    }
}

/// Decrypts records of one connection and decodes the frames they carry; follows the peer's
/// `REKEY`s.
pub(super) struct Opener {
    session: Session,
    assembler: Assembler,
}

impl Opener {
    /// An opener for `session`, refusing frames above `max_frame_bytes`.
    pub(super) fn new(session: Session, max_frame_bytes: usize) -> Self {
        Self { session, assembler: Assembler::new(max_frame_bytes) }
    }

    /// The frames completed by one record (`REKEY` is handled here and not returned).
    pub(super) fn open(&mut self, record: &[u8]) -> Result<Vec<Frame>, ConnError> {
        let mut session = lock(&self.session);
        let opened = self.assembler.fill_record(record.len(), |out| session.read_message(record, out).ok());
        let mut frames = opened.ok_or(ConnError::Decrypt)?.map_err(ConnError::Frame)?;
        if matches!(frames.last(), Some(Frame::Rekey)) {
            session.rekey_incoming();
            frames.pop();
        }
        Ok(frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both ends of a session, handshake done in memory.
    fn pair() -> (Session, Session) {
        let (a, b) = (generate_static_key().unwrap(), generate_static_key().unwrap());
        fn build(key: &[u8]) -> snow::Builder<'_> {
            let builder = snow::Builder::new(params().unwrap()).local_private_key(key).unwrap();
            builder.prologue(PROLOGUE).unwrap()
        }
        let mut i = build(&a.private).build_initiator().unwrap();
        let mut r = build(&b.private).build_responder().unwrap();
        let (mut buf, mut out) = ([0u8; 256], [0u8; 256]);
        for (step, size) in HANDSHAKE_SIZES.into_iter().enumerate() {
            let (from, to) = if step % 2 == 0 { (&mut i, &mut r) } else { (&mut r, &mut i) };
            let len = from.write_message(&[], &mut buf).unwrap();
            assert_eq!(len, size);
            to.read_message(&buf[..len], &mut out).unwrap();
        }
        assert_eq!(i.get_handshake_hash(), r.get_handshake_hash());
        let wrap = |s: HandshakeState| Arc::new(Mutex::new(s.into_transport_mode().unwrap()));
        (wrap(i), wrap(r))
    }

    /// Splits sealed bytes into records.
    fn records(mut bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while !bytes.is_empty() {
            let len = usize::from(u16::from_be_bytes([bytes[0], bytes[1]]));
            out.push(bytes[2..2 + len].to_vec());
            bytes = &bytes[2 + len..];
        }
        out
    }

    #[test]
    fn records_carry_frames_and_rekey_on_schedule() {
        let (a, b) = pair();
        let mut sealer = Sealer::new(a, 3);
        let mut opener = Opener::new(b.clone(), 1 << 20);
        let mut seen = 0;
        for n in 0..20u64 {
            let frames = vec![super::super::frame::ack_frame(n)];
            for record in records(sealer.seal(&frames).unwrap()) {
                assert_eq!(opener.open(&record).unwrap(), vec![Frame::Ack { seq: n }]);
                seen += 1;
            }
        }
        assert_eq!(seen, 20);
        // The receiving key did change: 20 records, rekeyed after the 3rd, 6th, … 18th.
        let nonce = lock(&b).receiving_nonce();
        assert_eq!(nonce, 20);
    }

    #[test]
    fn a_receiver_that_misses_a_rekey_cannot_read_on() {
        let (a, b) = pair();
        let mut sealer = Sealer::new(a, 2);
        let sealed = records(sealer.seal(&[super::super::frame::ping_frame()]).unwrap());
        let second = records(sealer.seal(&[super::super::frame::ping_frame()]).unwrap());
        let third = records(sealer.seal(&[super::super::frame::ping_frame()]).unwrap());
        // Decrypt the first two records by hand, ignoring the REKEY in the second.
        let mut plain = [0u8; 64];
        let mut session = lock(&b);
        session.read_message(&sealed[0], &mut plain).unwrap();
        let len = session.read_message(&second[0], &mut plain).unwrap();
        assert_eq!(&plain[len - 5..len], &REKEY_FRAME);
        assert!(session.read_message(&third[0], &mut plain).is_err(), "the third record is under the new key");
    }

    #[test]
    fn large_frames_are_cut_into_records_and_reassembled() {
        let (a, b) = pair();
        let mut sealer = Sealer::new(a, 1 << 20);
        let mut opener = Opener::new(b, 1 << 20);
        let body = serde_json::json!("y".repeat(200_000));
        let frame = Frame::Msg { seq: 1, id: 2, body: body.clone() };
        let sealed = records(sealer.seal(&[frame.encode().unwrap(), super::super::frame::ping_frame()]).unwrap());
        assert_eq!(sealed.len(), 4);
        assert!(sealed.iter().all(|r| r.len() <= MAX_NOISE_MESSAGE));
        let mut frames = Vec::new();
        for record in &sealed {
            frames.extend(opener.open(record).unwrap());
        }
        assert_eq!(frames, vec![frame, Frame::Ping]);
    }

    #[test]
    fn a_rekey_due_inside_a_long_frame_waits_for_its_end() {
        let (a, b) = pair();
        let mut sealer = Sealer::new(a, 1);
        let mut opener = Opener::new(b.clone(), 1 << 20);
        let long = Frame::Msg { seq: 1, id: 1, body: serde_json::json!("w".repeat(150_000)) };
        let sealed = records(sealer.seal(&[long.encode().unwrap(), super::super::frame::ping_frame()]).unwrap());
        assert_eq!(sealed.len(), 3);
        let mut frames = Vec::new();
        for record in &sealed {
            frames.extend(opener.open(record).unwrap());
        }
        assert_eq!(frames, vec![long, Frame::Ping]);
        // Only the last record (which ends with the PING) carried a REKEY: the next record is
        // under the new key.
        let next = records(sealer.seal(&[super::super::frame::ping_frame()]).unwrap());
        assert_eq!(opener.open(&next[0]).unwrap(), vec![Frame::Ping]);
    }

    #[test]
    fn a_tampered_record_is_refused() {
        let (a, b) = pair();
        let mut sealer = Sealer::new(a, 1 << 20);
        let mut record = records(sealer.seal(&[super::super::frame::ping_frame()]).unwrap()).remove(0);
        record[0] ^= 1;
        assert!(matches!(Opener::new(b, 1024).open(&record), Err(ConnError::Decrypt)));
    }
}
