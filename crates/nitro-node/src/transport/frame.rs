//! The frames inside the encrypted session (`docs/wire-format.md` §4): their binary encoding,
//! and the reassembly of frames from the decrypted records that carry them.
//!
//! The decrypted records of one direction form one byte stream; frames follow each other in
//! it, each a 4-byte big-endian length and that many bytes, without regard to record
//! boundaries (a frame may span records, a record may hold many frames). Only `REKEY` is tied
//! to a record: it must be the last bytes of one.

use alloy_primitives::Address;
use nitro_core::Signature;
use serde_json::Value;
use thiserror::Error;
use tokio_util::bytes::{Buf, BufMut, Bytes, BytesMut};

/// The length prefix of a frame.
pub(super) const LENGTH_BYTES: usize = 4;

/// `HELLO`: the binding of the session to an Ethereum address, and the sender's stream.
const HELLO: u8 = 0x01;
/// `MSG`: one message of the sender's stream.
const MSG: u8 = 0x02;
/// `ACK`: everything of the receiver's stream up to a sequence number was delivered.
const ACK: u8 = 0x03;
/// `PING`: a keepalive.
const PING: u8 = 0x04;
/// `REKEY`: the sender's key changes after this record.
const REKEY: u8 = 0x05;

/// The bytes of a `HELLO` frame after its length: kind, address, signature, stream id.
pub(super) const HELLO_LEN: usize = 1 + 20 + 65 + 8;
/// The bytes of a `MSG` frame after its length, before the body: kind, seq, id.
pub(super) const MSG_HEADER_LEN: usize = 1 + 8 + 8;
/// The bytes of an `ACK` frame after its length: kind, seq.
const ACK_LEN: usize = 1 + 8;

/// A whole `REKEY` frame, length included.
pub(super) const REKEY_FRAME: [u8; 5] = [0, 0, 0, 1, REKEY];
/// A whole `PING` frame, length included.
const PING_FRAME: [u8; 5] = [0, 0, 0, 1, PING];

/// One decoded frame.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Frame {
    /// The sender's Ethereum address, its signature binding the session to it, and the id of
    /// the stream its messages on this connection belong to.
    Hello {
        /// The address the signature must recover to.
        address: Address,
        /// `sign(keccak256(domain ‖ handshake hash ‖ sender's Noise static key))`.
        signature: Signature,
        /// The sender's stream (one per transport instance).
        stream: u64,
    },
    /// Message `seq` of the sender's stream: the caller's `id` and the JSON body.
    Msg {
        /// The position in the sender's stream (1, 2, 3 … from the first message to this peer).
        seq: u64,
        /// The sender's own id of the message (informational).
        id: u64,
        /// The message.
        body: Value,
    },
    /// Every message of the receiver's stream up to `seq` was delivered.
    Ack {
        /// The highest delivered sequence number.
        seq: u64,
    },
    /// A keepalive.
    Ping,
    /// The sender rekeys its direction after the record that ends with this frame.
    Rekey,
}

/// Why a frame (or a stream of them) is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub(super) enum FrameError {
    /// A length prefix of zero.
    #[error("empty frame")]
    Empty,
    /// A length prefix above the limit.
    #[error("a frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced length.
        size: usize,
        /// The receiver's `max_frame_bytes`.
        limit: usize,
    },
    /// An unknown frame kind.
    #[error("unknown frame kind {0:#04x}")]
    UnknownKind(u8),
    /// A frame of a known kind with the wrong length.
    #[error("a {kind} frame of {len} bytes")]
    BadLength {
        /// The frame kind.
        kind: &'static str,
        /// Its length.
        len: usize,
    },
    /// The signature of a `HELLO` is not well formed.
    #[error("malformed signature: {0}")]
    BadSignature(String),
    /// The body of a `MSG` is not JSON.
    #[error("message body is not JSON: {0}")]
    BadBody(String),
    /// A `REKEY` frame that does not end its record.
    #[error("REKEY does not end its record")]
    MisplacedRekey,
}

impl Frame {
    /// The frame's name in logs and errors.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "HELLO",
            Frame::Msg { .. } => "MSG",
            Frame::Ack { .. } => "ACK",
            Frame::Ping => "PING",
            Frame::Rekey => "REKEY",
        }
    }

    /// The whole frame, length prefix included.
    pub(super) fn encode(&self) -> Result<Bytes, serde_json::Error> {
        Ok(match self {
            Frame::Hello { address, signature, stream } => hello_frame(*address, signature, *stream),
            Frame::Msg { seq, id, body } => encode_msg(*seq, *id, &serde_json::to_vec(body)?),
            Frame::Ack { seq } => ack_frame(*seq),
            Frame::Ping => Bytes::from_static(&PING_FRAME),
            Frame::Rekey => Bytes::from_static(&REKEY_FRAME),
        })
    }
}

/// A whole `HELLO` frame.
pub(super) fn hello_frame(address: Address, signature: &Signature, stream: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(LENGTH_BYTES + HELLO_LEN);
    buf.put_u32(HELLO_LEN as u32);
    buf.put_u8(HELLO);
    buf.put_slice(address.as_slice());
    buf.put_slice(&signature.to_bytes());
    buf.put_u64(stream);
    buf.freeze()
}

/// A whole `MSG` frame for an encoded JSON body.
pub(super) fn encode_msg(seq: u64, id: u64, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(LENGTH_BYTES + MSG_HEADER_LEN + body.len());
    buf.put_u32((MSG_HEADER_LEN + body.len()) as u32);
    buf.put_u8(MSG);
    buf.put_u64(seq);
    buf.put_u64(id);
    buf.put_slice(body);
    buf.freeze()
}

/// A whole `ACK` frame.
pub(super) fn ack_frame(seq: u64) -> Bytes {
    let mut buf = BytesMut::with_capacity(LENGTH_BYTES + ACK_LEN);
    buf.put_u32(ACK_LEN as u32);
    buf.put_u8(ACK);
    buf.put_u64(seq);
    buf.freeze()
}

/// A whole `PING` frame.
pub(super) fn ping_frame() -> Bytes {
    Bytes::from_static(&PING_FRAME)
}

/// Decodes one frame's bytes after its length prefix (`content.len()` is the length).
pub(super) fn decode(content: &[u8]) -> Result<Frame, FrameError> {
    let (&kind, mut rest) = content.split_first().ok_or(FrameError::Empty)?;
    let exact = |name: &'static str, len: usize| {
        if content.len() == len {
            Ok(())
        } else {
            Err(FrameError::BadLength { kind: name, len: content.len() })
        }
    };
    match kind {
        HELLO => {
            exact("HELLO", HELLO_LEN)?;
            let address = Address::from_slice(&rest[..20]);
            let signature =
                Signature::from_bytes(&rest[20..85]).map_err(|e| FrameError::BadSignature(e.to_string()))?;
            rest.advance(85);
            Ok(Frame::Hello { address, signature, stream: rest.get_u64() })
        }
        MSG => {
            if content.len() < MSG_HEADER_LEN {
                return Err(FrameError::BadLength { kind: "MSG", len: content.len() });
            }
            let seq = rest.get_u64();
            let id = rest.get_u64();
            let body = serde_json::from_slice(rest).map_err(|e| FrameError::BadBody(e.to_string()))?;
            Ok(Frame::Msg { seq, id, body })
        }
        ACK => {
            exact("ACK", ACK_LEN)?;
            Ok(Frame::Ack { seq: rest.get_u64() })
        }
        PING => exact("PING", 1).map(|()| Frame::Ping),
        REKEY => exact("REKEY", 1).map(|()| Frame::Rekey),
        other => Err(FrameError::UnknownKind(other)),
    }
}

/// Reassembles frames from the decrypted records of one direction. Holds at most one frame
/// in progress plus one record (`max_frame_bytes` + 64 KiB).
pub(super) struct Assembler {
    buffer: BytesMut,
    max_frame_bytes: usize,
}

impl Assembler {
    /// An empty assembler refusing frames longer than `max_frame_bytes`.
    pub(super) fn new(max_frame_bytes: usize) -> Self {
        Self { buffer: BytesMut::new(), max_frame_bytes }
    }

    /// Decodes the frames that the plaintext of one record completes, in order. A `REKEY`
    /// must come last and end exactly at the end of the record.
    pub(super) fn push_record(&mut self, plaintext: &[u8]) -> Result<Vec<Frame>, FrameError> {
        self.buffer.extend_from_slice(plaintext);
        self.frames()
    }

    /// Lets `fill` write one record's plaintext (at most `max` bytes) straight after the
    /// bytes held, then decodes the frames it completes as [`push_record`](Self::push_record)
    /// does. `fill` returns how many bytes it wrote, or `None` (then nothing changes).
    pub(super) fn fill_record(
        &mut self,
        max: usize,
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) -> Option<Result<Vec<Frame>, FrameError>> {
        let held = self.buffer.len();
        self.buffer.resize(held + max, 0);
        let written = fill(&mut self.buffer[held..]);
        self.buffer.truncate(held + written.unwrap_or(0).min(max));
        written.map(|_| self.frames())
    }

    fn frames(&mut self) -> Result<Vec<Frame>, FrameError> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next_frame()? {
            if matches!(frames.last(), Some(Frame::Rekey)) {
                return Err(FrameError::MisplacedRekey);
            }
            frames.push(frame);
        }
        if matches!(frames.last(), Some(Frame::Rekey)) && !self.buffer.is_empty() {
            return Err(FrameError::MisplacedRekey);
        }
        Ok(frames)
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(prefix) = self.buffer.get(..LENGTH_BYTES) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len == 0 {
            return Err(FrameError::Empty);
        }
        if len > self.max_frame_bytes {
            return Err(FrameError::TooLarge { size: len, limit: self.max_frame_bytes });
        }
        if self.buffer.len() < LENGTH_BYTES + len {
            self.buffer.reserve(LENGTH_BYTES + len - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(LENGTH_BYTES);
        let content = self.buffer.split_to(len);
        decode(&content).map(Some)
    }
}

/// Decodes a plaintext frame stream the way a connection does after the handshake — `data`
/// is cut into records at the lengths its first bytes choose — and returns every decoded
/// frame re-encoded, or the reason the stream is refused. For the fuzz targets under
/// `fuzz/`; not part of the API.
#[doc(hidden)]
pub fn decode_frames_for_fuzzing(data: &[u8], max_frame_bytes: usize) -> Result<Vec<Vec<u8>>, String> {
    let (cuts, mut stream) = data.split_at(data.len().min(4));
    let mut assembler = Assembler::new(max_frame_bytes.max(super::MIN_FRAME_BYTES));
    let mut encoded = Vec::new();
    let mut sizes = cuts.iter().map(|&b| usize::from(b) * 61 + 1).cycle();
    while !stream.is_empty() {
        let size = sizes.next().unwrap_or(stream.len()).min(stream.len());
        let (record, rest) = stream.split_at(size);
        stream = rest;
        for frame in assembler.push_record(record).map_err(|e| e.to_string())? {
            encoded.push(frame.encode().map_err(|e| e.to_string())?.to_vec());
        }
    }
    Ok(encoded)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn signature() -> Signature {
        let mut bytes = [0x11u8; 65];
        bytes[32..64].fill(0x01);
        bytes[64] = 27;
        Signature::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn frames_round_trip() {
        let frames = [
            Frame::Hello { address: Address::repeat_byte(7), signature: signature(), stream: 99 },
            Frame::Msg { seq: 1, id: 42, body: json!({"a": [1, 2, 3]}) },
            Frame::Ack { seq: u64::MAX },
            Frame::Ping,
            Frame::Rekey,
        ];
        let mut assembler = Assembler::new(1024);
        for frame in frames {
            let bytes = frame.encode().unwrap();
            assert_eq!(assembler.push_record(&bytes).unwrap(), vec![frame]);
        }
        let msg = Frame::Msg { seq: 1, id: 42, body: json!({"hello": "world"}) }.encode().unwrap();
        assert_eq!(
            &msg[..],
            b"\x00\x00\x00\x22\x02\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x2a{\"hello\":\"world\"}"
        );
    }

    #[test]
    fn frames_span_and_share_records() {
        let a = Frame::Msg { seq: 1, id: 1, body: json!("x".repeat(300)) };
        let b = Frame::Ack { seq: 5 };
        let mut stream = a.encode().unwrap().to_vec();
        stream.extend_from_slice(&b.encode().unwrap());
        let mut assembler = Assembler::new(1024);
        let mut decoded = Vec::new();
        for chunk in stream.chunks(7) {
            decoded.extend(assembler.push_record(chunk).unwrap());
        }
        assert_eq!(decoded, vec![a, b]);
    }

    #[test]
    fn bad_frames_are_refused() {
        let cases: [(&[u8], FrameError); 7] = [
            (b"\x00\x00\x00\x00", FrameError::Empty),
            (b"\x00\x10\x00\x00", FrameError::TooLarge { size: 0x100000, limit: 1024 }),
            (b"\x00\x00\x00\x01\x09", FrameError::UnknownKind(9)),
            (b"\x00\x00\x00\x02\x04\x00", FrameError::BadLength { kind: "PING", len: 2 }),
            (b"\x00\x00\x00\x03\x02\x00\x00", FrameError::BadLength { kind: "MSG", len: 3 }),
            (b"\x00\x00\x00\x02\x03\x00", FrameError::BadLength { kind: "ACK", len: 2 }),
            (b"\x00\x00\x00\x01\x05\x00\x00\x00\x01\x04", FrameError::MisplacedRekey),
        ];
        for (bytes, expected) in cases {
            assert_eq!(Assembler::new(1024).push_record(bytes), Err(expected), "{bytes:?}");
        }
        // A REKEY whose record goes on with part of another frame.
        assert_eq!(Assembler::new(1024).push_record(b"\x00\x00\x00\x01\x05\x00"), Err(FrameError::MisplacedRekey));
        let not_json = encode_msg(1, 1, b"{\"a\":");
        assert!(matches!(Assembler::new(1024).push_record(&not_json), Err(FrameError::BadBody(_))));
        let mut hello =
            Frame::Hello { address: Address::ZERO, signature: signature(), stream: 1 }.encode().unwrap().to_vec();
        hello[4 + 1 + 20 + 64] = 29;
        assert!(matches!(Assembler::new(1024).push_record(&hello), Err(FrameError::BadSignature(_))));
    }

    #[test]
    fn the_fuzz_hook_decodes_what_it_encodes() {
        let mut data = vec![3u8, 0, 1, 2];
        data.extend_from_slice(&Frame::Msg { seq: 7, id: 8, body: json!([1, "two"]) }.encode().unwrap());
        data.extend_from_slice(&ping_frame());
        let frames = decode_frames_for_fuzzing(&data, 0).unwrap();
        assert_eq!(frames.len(), 2);
        assert!(decode_frames_for_fuzzing(&[0, 0, 0, 0, 0, 0, 0, 0], 0).is_err());
    }
}
