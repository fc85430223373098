//! Why a connection ends, and which of those reasons are a peer's fault.

use alloy_primitives::Address;
use thiserror::Error;

use super::frame::FrameError;

/// Why a connection was refused or closed (for the logs).
#[derive(Debug, Error)]
pub(super) enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake timed out")]
    Timeout,
    #[error("nothing received for the idle timeout")]
    Idle,
    #[error("closed by the peer")]
    Closed,
    #[error("noise: {0}")]
    Noise(#[from] snow::Error),
    #[error("handshake message {index} of {len} bytes")]
    HandshakeMessage { index: usize, len: usize },
    #[error("the handshake left no static key")]
    NoStaticKey,
    #[error("a record does not decrypt")]
    Decrypt,
    #[error("bad frame: {0}")]
    Frame(FrameError),
    #[error("unexpected {0} frame {1}")]
    Unexpected(&'static str, &'static str),
    #[error("peer claims our own address")]
    SelfConnection,
    #[error("peer is {claimed}, expected {expected}")]
    Mismatch { claimed: Address, expected: Address },
    #[error("binding signature does not recover: {0}")]
    BadBinding(nitro_core::SignatureError),
    #[error("binding signed by {recovered}, but the peer claims {claimed}")]
    WrongSigner { recovered: Address, claimed: Address },
    #[error("message {seq} is out of the window (expected {expected})")]
    OutOfWindow { seq: u64, expected: u64 },
    #[error("acknowledgement of {seq}, but only {sent} were sent")]
    ForgedAck { seq: u64, sent: u64 },
    #[error("the peer's connection belongs to a stream it replaced")]
    StaleStream,
    #[error("our stream to the peer was renewed during the handshake")]
    Superseded,
    #[error("evicted to admit a newer connection")]
    Evicted,
    #[error("no room for a peer we do not know")]
    NotAdmitted,
    #[error("the inbound receiver is gone")]
    Undeliverable,
    #[error("closed by us")]
    Cancelled,
    #[error("shutting down")]
    Shutdown,
}

impl ConnError {
    /// Whether the peer broke the protocol (worth a warning), rather than the connection
    /// ending or failing in the ordinary way.
    pub(super) fn is_violation(&self) -> bool {
        match self {
            ConnError::Io(error) => error.kind() == std::io::ErrorKind::InvalidData,
            ConnError::Noise(_)
            | ConnError::HandshakeMessage { .. }
            | ConnError::Decrypt
            | ConnError::Frame(_)
            | ConnError::Unexpected(..)
            | ConnError::SelfConnection
            | ConnError::Mismatch { .. }
            | ConnError::BadBinding(_)
            | ConnError::WrongSigner { .. }
            | ConnError::OutOfWindow { .. }
            | ConnError::ForgedAck { .. } => true,
            ConnError::Timeout
            | ConnError::Idle
            | ConnError::Closed
            | ConnError::NoStaticKey
            | ConnError::StaleStream
            | ConnError::Superseded
            | ConnError::Evicted
            | ConnError::NotAdmitted
            | ConnError::Undeliverable
            | ConnError::Cancelled
            | ConnError::Shutdown => false,
        }
    }
}
