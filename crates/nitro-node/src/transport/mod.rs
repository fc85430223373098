//! Peer transport: encrypted, authenticated, reliable JSON messages between Nitro nodes over
//! TCP (`docs/wire-format.md` is the normative description, ADR-0016 the reasons).
//!
//! 1. **Handshake.** `Noise_XX_25519_ChaChaPoly_BLAKE2s` (the dialer initiates), then each
//!    side sends a `HELLO` inside the encrypted session: its Ethereum address and a signature
//!    by that address over the handshake hash and its Noise static key. The hash is unique to
//!    the connection, so a binding cannot be relayed or replayed; when we dial, the address
//!    must also be the one we expect.
//! 2. **Messages.** Every frame afterwards is encrypted and authenticated. Our messages to a
//!    peer form one stream per transport instance with sequence numbers 1, 2, 3 …; the peer
//!    acknowledges cumulatively. A receiver delivers exactly the next message of a stream,
//!    acknowledges an earlier one again without delivering it, and disconnects a peer that
//!    sends a later one (nothing changes). A restarted peer's new stream starts afresh; what
//!    it sends again is recognised by a digest of its id and body.
//!
//! The sender keeps each message until it is acknowledged: it resends the unacknowledged
//! ones in order on every new connection and after [`TransportConfig::ack_timeout`] (with
//! exponential backoff), and it redials a peer it has messages for. Delivery is the
//! transport's job alone (ADR-0021): the engine sends nothing again on a timer. What the
//! transport cannot cover — a peer that acknowledged and crashed before its engine stored the
//! message, or messages dropped from a full queue — the engines recover when a session is
//! (re)established: the transport reports it ([`Inbound::Connected`]) and the party resyncs
//! the peer.
//!
//! The per-peer queue is bounded ([`TransportConfig::queue_capacity`]); when it is full,
//! [`Transport::send`] drops the oldest message instead of refusing the new one (the newest
//! messages are the ones a peer needs; a refusal could hold back a resync). If the peer may
//! have needed the dropped message on our current stream, its connections are closed, the
//! rest of its queue is abandoned, and the next handshake starts a new stream, so that a gap
//! never reaches the receiver's window; the new session makes both engines resync (which
//! gives the peer what it needs, so the abandoned queue is not missed, and the resync itself
//! finds room in the queue). So a peer unreachable for a long time costs at most
//! `queue_capacity` messages. The [`Inbound`] channel is
//! bounded: when it is full the reader of a connection waits, nothing more is acknowledged,
//! and TCP pushes back on the sender. Everything a peer can make us hold is bounded: pending
//! handshakes (per IP address and in all, the oldest evicted), peers we do not know
//! ([`TransportConfig::max_unknown_peers`]), idle connections
//! ([`TransportConfig::idle_timeout`]), frames ([`TransportConfig::max_frame_bytes`]).
//!
//! Whether a peer may speak about a channel is the engine's concern: the transport only
//! guarantees *who* sent a message.

mod config;
mod error;
mod frame;
mod handshake;
mod io;
mod limits;
mod noise;
mod peer;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use alloy_primitives::Address;
use nitro_core::SigningKey;
use serde_json::Value;
use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

pub use config::{TransportConfig, DEFAULT_REKEY_INTERVAL};
#[doc(hidden)]
pub use frame::decode_frames_for_fuzzing;
pub use handshake::{binding_hash, BINDING_DOMAIN};
pub use noise::{MAX_NOISE_MESSAGE, NOISE_PARAMS, PROLOGUE};

use handshake::Identity;
use io::Shared;
use limits::{PendingHandshakes, WarnGate};
use peer::Peer;

/// The smallest accepted [`TransportConfig::max_frame_bytes`] (a `HELLO` must fit).
pub const MIN_FRAME_BYTES: usize = 512;

/// What the transport hands to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A message from an authenticated peer, delivered once per position in the peer's
    /// stream. A peer that restarts starts a new stream; what it sends again (same id, same
    /// body) is recognised among the last 512 messages delivered from it and not delivered
    /// twice.
    Message {
        /// The peer's Ethereum address, proven in the handshake.
        from: Address,
        /// The sender's own id of the message (as given to its [`Transport::send`]).
        id: u64,
        /// The message itself.
        body: Value,
    },
    /// An authenticated session with `peer` was (re)established: it had no live connection,
    /// or it restarted (a new stream). Comes before any message of the session. What the peer
    /// may lack — it acknowledged a message and crashed before storing it, or our full queue
    /// dropped some — is for the engine to send again (`Input::PeerConnected`).
    Connected {
        /// The peer's Ethereum address, proven in the handshake.
        peer: Address,
    },
}

/// Why the transport refused a request.
#[derive(Debug, Error)]
pub enum TransportError {
    /// The configuration is unusable.
    #[error("invalid transport configuration: {0}")]
    InvalidConfig(String),
    /// The listening socket could not be opened.
    #[error("cannot listen: {0}")]
    Io(#[from] std::io::Error),
    /// The Noise static key could not be made.
    #[error("cannot make the noise static key: {0}")]
    Noise(String),
    /// No address to dial the peer at was given and it is not connected to us.
    #[error("unknown peer {0}: no address to dial it and no connection from it")]
    UnknownPeer(Address),
    /// The message does not fit in one frame.
    #[error("a frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The size of the `MSG` frame (after its length).
        size: usize,
        /// [`TransportConfig::max_frame_bytes`].
        limit: usize,
    },
    /// The body could not be encoded as JSON.
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
    /// The transport was shut down.
    #[error("the transport is shut down")]
    Shutdown,
}

/// Locks a mutex, ignoring poisoning (no state here is left half-changed by a panic).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How often a warning about failed handshakes, or about messages dropped from a full queue,
/// may be logged.
const HANDSHAKE_WARN_PERIOD: Duration = Duration::from_secs(10);

/// Closes the transport when the last handle goes away.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.cancel.cancel();
    }
}

/// The peer transport of a node: listens for peers, dials them, authenticates each
/// connection to an Ethereum address and carries encrypted, acknowledged, deduplicated
/// messages.
///
/// Cheap to clone; the transport stops when [`shutdown`](Self::shutdown) is called or the
/// last clone is dropped.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Handle>,
}

impl fmt::Debug for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transport")
            .field("address", &self.address())
            .field("local_addr", &self.local_addr())
            .finish_non_exhaustive()
    }
}

impl Transport {
    /// Listens on `config.listen` as the holder of `key`; returns the transport and the
    /// channel on which messages from peers arrive (capacity
    /// [`TransportConfig::queue_capacity`]).
    pub async fn bind(
        key: SigningKey,
        config: TransportConfig,
    ) -> Result<(Transport, mpsc::Receiver<Inbound>), TransportError> {
        config.validate()?;
        let static_key = noise::generate_static_key().map_err(|e| TransportError::Noise(e.to_string()))?;
        let stream = getrandom::u64().map_err(|e| TransportError::Noise(e.to_string()))?;
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (inbound, receiver) = mpsc::channel(config.queue_capacity);
        let (guard, tasks_done) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            runtime: tokio::runtime::Handle::current(),
            address: key.address(),
            identity: Identity {
                key,
                static_key,
                stream,
                max_frame_bytes: config.max_frame_bytes,
                rekey_interval: config.rekey_interval,
            },
            pending: PendingHandshakes::new(config.max_pending_handshakes_per_ip, config.max_pending_handshakes),
            config,
            local_addr,
            inbound,
            peers: Mutex::new(HashMap::new()),
            cancel: CancellationToken::new(),
            task_guard: Mutex::new(Some(guard)),
            tasks_done: tokio::sync::Mutex::new(tasks_done),
            next_conn: AtomicU64::new(0),
            handshake_warnings: WarnGate::new(HANDSHAKE_WARN_PERIOD),
            overflow_warnings: WarnGate::new(HANDSHAKE_WARN_PERIOD),
        });
        info!(address = %shared.address, %local_addr, "transport listening");
        let accepting = shared.clone();
        shared.spawn(async move { accepting.accept_loop(listener).await });
        Ok((Transport { inner: Arc::new(Handle { shared }) }, receiver))
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// The address we listen on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared().local_addr
    }

    /// Our Ethereum address (the one we prove in handshakes).
    pub fn address(&self) -> Address {
        self.shared().address
    }

    /// Records where to dial `peer` (replacing an earlier address) and counts it as known;
    /// if messages for it are waiting and no connection is up, dialing starts. Our own
    /// address is ignored.
    pub fn add_peer(&self, peer: Address, at: SocketAddr) {
        let shared = self.shared();
        let Some(entry) = shared.known_peer(peer) else { return };
        let dial = {
            let mut state = lock(&entry.state);
            state.dial = Some(at);
            state.claim_dial()
        };
        if dial {
            shared.spawn_dialer(entry);
        }
    }

    /// Counts `peer` as known without an address to dial it at: its connections to us are
    /// never evicted to make room for others, and do not count against
    /// [`TransportConfig::max_unknown_peers`]. Our own address is ignored.
    pub fn allow_peer(&self, peer: Address) {
        self.shared().known_peer(peer);
    }

    /// Queues `body` for `to` under the caller's `id` and returns at once. The message is
    /// kept (and resent) until `to` acknowledges it; queuing an id that is still
    /// unacknowledged again does nothing. When `to` has
    /// [`queue_capacity`](TransportConfig::queue_capacity) unacknowledged messages already,
    /// the oldest is dropped (see the module documentation).
    ///
    /// Refused with [`TransportError::UnknownPeer`] if `to` was never added nor is connected,
    /// [`TransportError::FrameTooLarge`] if the message exceeds the frame limit, and
    /// [`TransportError::Shutdown`] after shutdown.
    pub fn send(&self, to: Address, id: u64, body: Value) -> Result<(), TransportError> {
        let shared = self.shared();
        if shared.cancel.is_cancelled() {
            return Err(TransportError::Shutdown);
        }
        let peer = lock(&shared.peers).get(&to).cloned().ok_or(TransportError::UnknownPeer(to))?;
        let encoded = serde_json::to_vec(&body)?;
        let size = frame::MSG_HEADER_LEN + encoded.len();
        let limit = shared.config.max_frame_bytes;
        if size > limit {
            return Err(TransportError::FrameTooLarge { size, limit });
        }
        let capacity = shared.config.queue_capacity;
        let (enqueued, dial) = {
            let mut state = lock(&peer.state);
            let enqueued = state.enqueue(id, |seq| frame::encode_msg(seq, id, &encoded), Instant::now(), capacity);
            (enqueued, state.claim_dial())
        };
        for conn in &enqueued.close {
            conn.closed.cancel();
        }
        if enqueued.dropped_oldest {
            match shared.overflow_warnings.pass() {
                Some(suppressed) => warn!(
                    peer = %to,
                    capacity,
                    suppressed,
                    closed = enqueued.close.len(),
                    "queue full: dropped the oldest unacknowledged message (the engines resync when the session is re-established)"
                ),
                None => debug!(peer = %to, capacity, "queue full: dropped the oldest unacknowledged message"),
            }
        }
        if dial {
            shared.spawn_dialer(peer);
        }
        Ok(())
    }

    /// Messages queued for `to` and not yet acknowledged (0 for an unknown peer); at most
    /// [`queue_capacity`](TransportConfig::queue_capacity).
    pub fn unacked(&self, to: Address) -> usize {
        let peer = lock(&self.shared().peers).get(&to).cloned();
        peer.map_or(0, |peer| lock(&peer.state).outbox.len())
    }

    /// Messages for `to` dropped from its full queue so far (0 for an unknown peer).
    pub fn dropped(&self, to: Address) -> u64 {
        let peer = lock(&self.shared().peers).get(&to).cloned();
        peer.map_or(0, |peer| lock(&peer.state).dropped)
    }

    /// Stops listening, closes every connection and waits for the transport's tasks to end.
    /// Unacknowledged messages are dropped (the engine keeps its own outbox). Other clones
    /// of this transport refuse to send afterwards.
    pub async fn shutdown(self) {
        let shared = self.shared().clone();
        shared.cancel.cancel();
        let guard = lock(&shared.task_guard).take();
        drop(guard);
        let mut tasks_done = shared.tasks_done.lock().await;
        while tasks_done.recv().await.is_some() {}
        info!(address = %shared.address, "transport shut down");
    }
}

impl Shared {
    /// The entry of a peer added or allowed by the node (made known if it was not); `None`
    /// for our own address.
    fn known_peer(&self, address: Address) -> Option<Arc<Peer>> {
        if address == self.address {
            debug!(peer = %address, "not adding ourselves as a peer");
            return None;
        }
        let stream = self.identity.stream;
        let entry = lock(&self.peers).entry(address).or_insert_with(|| Arc::new(Peer::new(address, stream))).clone();
        lock(&entry.state).known = true;
        Some(entry)
    }
}
