//! Peer transport: authenticated, reliable JSON messages between Nitro nodes over TCP.
//!
//! Every connection carries frames of a 4-byte big-endian length followed by one UTF-8 JSON
//! object with a `"type"` field (`docs/wire-format.md` is the normative description):
//!
//! 1. **Handshake.** Both sides send `hello` (protocol version, their Ethereum address and a
//!    random 32-byte challenge), then `auth`: a signature by the key of the claimed address
//!    over the *other* side's challenge and both addresses. A connection is bound to the
//!    peer's address only once its signature recovers to that address; when we dial, the
//!    address must also be the one we expect.
//! 2. **Messages.** `msg` carries the caller's id and a JSON body; the receiver answers every
//!    `msg` (duplicates included) with `ack` once the message is in the [`Inbound`] channel.
//!
//! The sender keeps each message until it is acknowledged: it resends the unacknowledged
//! ones in id order on every new connection and after [`TransportConfig::ack_timeout`] (with
//! exponential backoff), and it redials a peer it has messages for with exponential backoff.
//! The receiver delivers each `(from, id)` at most once per [`Transport`] (a bounded window
//! of recently seen ids per peer). The [`Inbound`] channel is bounded: when it is full the
//! reader of a connection waits, nothing more is acknowledged, and TCP pushes back on the
//! sender.
//!
//! Whether a peer may speak about a channel is the engine's concern: the transport only
//! guarantees *who* sent a message.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use alloy_primitives::{keccak256, Address, B256};
use futures::{SinkExt, StreamExt};
use nitro_core::{recover_signer, Signature, SigningKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

/// The protocol version carried in `hello`.
pub const PROTOCOL_VERSION: u64 = 1;

/// The domain separator at the start of the handshake challenge hash.
pub const AUTH_DOMAIN: &[u8] = b"nitro-transport-v1";

/// The smallest accepted [`TransportConfig::max_frame_bytes`] (the handshake must fit).
pub const MIN_FRAME_BYTES: usize = 512;

/// How many recently delivered ids are remembered per peer, above a floor below which every
/// id counts as already delivered.
pub const DEDUP_WINDOW: usize = 4096;

/// Connections still in their handshake at once; more are closed on accept.
const MAX_PENDING_HANDSHAKES: usize = 256;

/// Peers known at once. When full, peers that only ever dialed us and are idle (no
/// connection, nothing queued) are forgotten to admit new ones.
const MAX_PEERS: usize = 10_000;

/// Live connections kept per peer; a newer one beyond this closes the oldest. Normally there
/// is one; two when both sides dialed at once; a third can be an older connection whose end
/// we did not notice yet, or whose handshake finished after a newer one's.
const MAX_CONNECTIONS_PER_PEER: usize = 3;

/// Frames written per batch before the writer looks for new work again.
const WRITE_BATCH: usize = 64;

/// Acknowledgements waiting to be written on one connection; beyond this they are dropped
/// (the sender resends, and the duplicate is acknowledged again).
const MAX_PENDING_ACKS: usize = 65_536;

/// The longest accepted duration in the configuration.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);

/// How long the accept loop pauses after an accept error (for example too many open files).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Settings of a [`Transport`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Where to listen for peers (port 0 picks a free port; see [`Transport::local_addr`]).
    pub listen: SocketAddr,
    /// The largest frame payload (JSON bytes after the length prefix) sent or accepted.
    /// A peer that sends a larger frame is disconnected. Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Unacknowledged messages kept per peer ([`Transport::send`] refuses more with
    /// [`TransportError::QueueFull`]); also the capacity of the [`Inbound`] channel.
    /// Default 4096.
    pub queue_capacity: usize,
    /// The first pause between failed dials of a peer. Default 100 ms.
    pub initial_backoff: Duration,
    /// The longest pause between dials, and between resends of one message. Default 5 s.
    pub max_backoff: Duration,
    /// The time allowed to connect and complete the handshake. Default 5 s.
    pub handshake_timeout: Duration,
    /// A message not acknowledged this long after it was written is written again (then
    /// after twice as long, and so on up to [`max_backoff`](Self::max_backoff)). Default 1 s.
    pub ack_timeout: Duration,
}

impl TransportConfig {
    /// The defaults, listening on `listen`.
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            max_frame_bytes: 1024 * 1024,
            queue_capacity: 4096,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            handshake_timeout: Duration::from_secs(5),
            ack_timeout: Duration::from_secs(1),
        }
    }

    fn validate(&self) -> Result<(), TransportError> {
        let invalid = |why: String| Err(TransportError::InvalidConfig(why));
        if self.max_frame_bytes < MIN_FRAME_BYTES || self.max_frame_bytes > u32::MAX as usize {
            return invalid(format!(
                "max_frame_bytes must be between {MIN_FRAME_BYTES} and {}, got {}",
                u32::MAX,
                self.max_frame_bytes
            ));
        }
        if self.queue_capacity == 0 || self.queue_capacity > Semaphore::MAX_PERMITS {
            return invalid(format!("queue_capacity must be positive and sane, got {}", self.queue_capacity));
        }
        for (name, value) in [
            ("initial_backoff", self.initial_backoff),
            ("max_backoff", self.max_backoff),
            ("handshake_timeout", self.handshake_timeout),
            ("ack_timeout", self.ack_timeout),
        ] {
            if value.is_zero() || value > MAX_DURATION {
                return invalid(format!("{name} must be positive and at most {MAX_DURATION:?}, got {value:?}"));
            }
        }
        if self.max_backoff < self.initial_backoff {
            return invalid(format!(
                "max_backoff ({:?}) is below initial_backoff ({:?})",
                self.max_backoff, self.initial_backoff
            ));
        }
        Ok(())
    }

    /// The pause before the `attempt`-th resend (0-based) of an unacknowledged message.
    fn resend_delay(&self, attempt: u32) -> Duration {
        let cap = self.max_backoff.max(self.ack_timeout);
        self.ack_timeout.saturating_mul(1u32 << attempt.min(20)).min(cap)
    }
}

impl Default for TransportConfig {
    /// The defaults, listening on a free port of 127.0.0.1.
    fn default() -> Self {
        Self::new(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }
}

/// What the transport hands to the engine.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Inbound {
    /// A message from an authenticated peer, delivered once per `(from, id)`.
    Message {
        /// The peer's Ethereum address, proven in the handshake.
        from: Address,
        /// The sender's id of the message.
        id: u64,
        /// The message itself.
        body: Value,
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
    /// No address to dial the peer at was given and it never connected to us.
    #[error("unknown peer {0}: no address to dial it and no connection from it")]
    UnknownPeer(Address),
    /// The peer already has `capacity` unacknowledged messages.
    #[error("the queue for {peer} is full ({capacity} unacknowledged messages)")]
    QueueFull {
        /// The recipient.
        peer: Address,
        /// The per-peer limit ([`TransportConfig::queue_capacity`]).
        capacity: usize,
    },
    /// The message does not fit in one frame.
    #[error("a frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge {
        /// The size of the encoded `msg` frame.
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

/// One frame of the wire format.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Frame<'a> {
    Hello {
        version: u64,
        #[serde(with = "nitro_core::json::address")]
        address: Address,
        #[serde(with = "nitro_core::json::bytes32")]
        nonce: B256,
    },
    Auth {
        signature: Signature,
    },
    Msg {
        id: u64,
        body: Cow<'a, Value>,
    },
    Ack {
        id: u64,
    },
}

impl Frame<'_> {
    fn encode(&self) -> Result<Bytes, serde_json::Error> {
        serde_json::to_vec(self).map(Bytes::from)
    }

    fn kind(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "hello",
            Frame::Auth { .. } => "auth",
            Frame::Msg { .. } => "msg",
            Frame::Ack { .. } => "ack",
        }
    }
}

/// `keccak256(AUTH_DOMAIN ‖ challenge ‖ signer ‖ verifier)`: what `signer` signs (with the
/// Ethereum prefix) to prove its address to `verifier`, who chose `challenge`.
fn auth_hash(challenge: &B256, signer: Address, verifier: Address) -> B256 {
    let mut buf = Vec::with_capacity(AUTH_DOMAIN.len() + 32 + 20 + 20);
    buf.extend_from_slice(AUTH_DOMAIN);
    buf.extend_from_slice(challenge.as_slice());
    buf.extend_from_slice(signer.as_slice());
    buf.extend_from_slice(verifier.as_slice());
    keccak256(buf)
}

/// Why a connection was closed (for the logs).
#[derive(Debug, Error)]
enum ConnError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake timed out")]
    Timeout,
    #[error("closed by the peer during the handshake")]
    Closed,
    #[error("malformed frame: {0}")]
    Malformed(serde_json::Error),
    #[error("frame is not a JSON object")]
    NotAnObject,
    #[error("cannot encode a frame: {0}")]
    Encode(serde_json::Error),
    #[error("unexpected {0} frame {1}")]
    Unexpected(&'static str, &'static str),
    #[error("unsupported protocol version {0}")]
    Version(u64),
    #[error("peer is {claimed}, expected {expected}")]
    Mismatch { claimed: Address, expected: Address },
    #[error("peer claims our own address")]
    SelfConnection,
    #[error("handshake signature does not recover: {0}")]
    BadSignature(nitro_core::SignatureError),
    #[error("handshake signed by {recovered}, but the peer claims {claimed}")]
    WrongSigner { recovered: Address, claimed: Address },
    #[error("no randomness for the challenge: {0}")]
    Random(getrandom::Error),
    #[error("too many peers")]
    TooManyPeers,
    #[error("shutting down")]
    Shutdown,
}

impl ConnError {
    /// Whether the peer broke the protocol (worth a warning), rather than the connection
    /// ending or failing in the ordinary way.
    fn is_violation(&self) -> bool {
        match self {
            // The codec's error for a frame over the limit.
            ConnError::Io(error) => error.kind() == std::io::ErrorKind::InvalidData,
            ConnError::Malformed(_)
            | ConnError::NotAnObject
            | ConnError::Unexpected(..)
            | ConnError::Version(_)
            | ConnError::Mismatch { .. }
            | ConnError::SelfConnection
            | ConnError::BadSignature(_)
            | ConnError::WrongSigner { .. } => true,
            ConnError::Timeout
            | ConnError::Closed
            | ConnError::Encode(_)
            | ConnError::Random(_)
            | ConnError::TooManyPeers
            | ConnError::Shutdown => false,
        }
    }
}

type Reader = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;
type Writer = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One message waiting for its acknowledgement.
struct Pending {
    /// The encoded `msg` frame.
    frame: Bytes,
    /// Writes on the current connection so far.
    attempts: u32,
    /// When it is due to be written again (an entry of `PeerState::timers`).
    deadline: Option<Instant>,
}

/// One authenticated connection.
struct Conn {
    id: u64,
    /// Whether we dialed it.
    outbound: bool,
    /// Wakes the writer: new acknowledgements, new messages, a new role.
    notify: Notify,
    /// Ids to acknowledge on this connection, in the order their `msg` frames arrived.
    acks: Mutex<VecDeque<u64>>,
    /// Closes the connection (a child of the transport's token).
    closed: CancellationToken,
}

impl Conn {
    fn push_ack(&self, id: u64) {
        {
            let mut acks = lock(&self.acks);
            if acks.len() < MAX_PENDING_ACKS {
                acks.push_back(id);
            }
        }
        self.notify.notify_one();
    }
}

/// Ids already delivered from one peer: everything up to `floor`, and `recent` above it.
#[derive(Default)]
struct Dedup {
    floor: Option<u64>,
    recent: BTreeSet<u64>,
}

impl Dedup {
    fn contains(&self, id: u64) -> bool {
        self.floor.is_some_and(|floor| id <= floor) || self.recent.contains(&id)
    }

    fn insert(&mut self, id: u64) {
        self.recent.insert(id);
        while self.recent.len() > DEDUP_WINDOW {
            if let Some(lowest) = self.recent.pop_first() {
                self.floor = Some(self.floor.map_or(lowest, |floor| floor.max(lowest)));
            }
        }
    }
}

/// What we know about one peer.
#[derive(Default)]
struct PeerState {
    /// Where to dial it (from [`Transport::add_peer`]).
    dial: Option<SocketAddr>,
    /// Whether a dial task runs for it.
    dialing: bool,
    /// Unacknowledged messages by id.
    outbox: BTreeMap<u64, Pending>,
    /// Ids to write now on the active connection, in id order.
    ready: BTreeSet<u64>,
    /// Resend deadlines of written, unacknowledged messages.
    timers: BTreeSet<(Instant, u64)>,
    /// Live connections, oldest first (at most `MAX_CONNECTIONS_PER_PEER`).
    conns: Vec<Arc<Conn>>,
    /// The connection messages are written on (the newest).
    active: Option<Arc<Conn>>,
}

impl PeerState {
    /// Makes `conn` the connection that carries our messages: every unacknowledged message
    /// is written on it again, in id order.
    fn activate(&mut self, conn: Arc<Conn>) {
        self.ready = self.outbox.keys().copied().collect();
        self.timers.clear();
        for pending in self.outbox.values_mut() {
            pending.attempts = 0;
            pending.deadline = None;
        }
        conn.notify.notify_one();
        self.active = Some(conn);
    }

    fn is_active(&self, conn: &Arc<Conn>) -> bool {
        self.active.as_ref().is_some_and(|active| Arc::ptr_eq(active, conn))
    }

    fn acknowledge(&mut self, id: u64) {
        if let Some(pending) = self.outbox.remove(&id) {
            self.ready.remove(&id);
            if let Some(deadline) = pending.deadline {
                self.timers.remove(&(deadline, id));
            }
        }
    }

    fn is_idle_inbound_only(&self) -> bool {
        self.dial.is_none() && self.conns.is_empty() && self.outbox.is_empty()
    }

    /// Whether a dial task should start (and marks it started).
    fn claim_dial(&mut self) -> bool {
        let needed = self.active.is_none() && !self.outbox.is_empty() && self.dial.is_some() && !self.dialing;
        if needed {
            self.dialing = true;
        }
        needed
    }
}

struct Peer {
    address: Address,
    state: Mutex<PeerState>,
    /// Serializes deliveries from this peer (across its connections).
    delivery: tokio::sync::Mutex<Dedup>,
}

impl Peer {
    fn new(address: Address) -> Self {
        Self { address, state: Mutex::default(), delivery: tokio::sync::Mutex::default() }
    }
}

enum Delivery {
    Delivered,
    Duplicate,
    /// The engine dropped its receiver: not acknowledged.
    Undeliverable,
    Closed,
}

struct Shared {
    /// The runtime `bind` ran on: tasks are spawned there, so that `send` and `add_peer` work
    /// from any thread.
    runtime: tokio::runtime::Handle,
    key: SigningKey,
    address: Address,
    config: TransportConfig,
    local_addr: SocketAddr,
    inbound: mpsc::Sender<Inbound>,
    peers: Mutex<HashMap<Address, Arc<Peer>>>,
    cancel: CancellationToken,
    /// Cloned into every task; taken by `shutdown`, which then waits for all clones to go.
    task_guard: Mutex<Option<mpsc::Sender<()>>>,
    tasks_done: tokio::sync::Mutex<mpsc::Receiver<()>>,
    handshakes: Arc<Semaphore>,
    next_conn: AtomicU64,
}

impl Shared {
    /// Runs `task` unless the transport is shutting down; says whether it did.
    fn spawn<F>(&self, task: F) -> bool
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let Some(guard) = lock(&self.task_guard).clone() else {
            return false;
        };
        self.runtime.spawn(async move {
            task.await;
            drop(guard);
        });
        true
    }

    fn spawn_dialer(self: &Arc<Self>, peer: Arc<Peer>) {
        let shared = self.clone();
        let dialed = peer.clone();
        if !self.spawn(async move { shared.dial_loop(dialed).await }) {
            lock(&peer.state).dialing = false;
        }
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, remote)) => {
                    let Ok(permit) = self.handshakes.clone().try_acquire_owned() else {
                        debug!(%remote, "too many connections in their handshake; closing");
                        continue;
                    };
                    let shared = self.clone();
                    self.spawn(async move { shared.serve_inbound(stream, remote, permit).await });
                }
                Err(error) => {
                    warn!(%error, "accept failed");
                    tokio::select! {
                        _ = self.cancel.cancelled() => return,
                        _ = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                    }
                }
            }
        }
    }

    async fn serve_inbound(self: Arc<Self>, stream: TcpStream, remote: SocketAddr, permit: OwnedSemaphorePermit) {
        let handshake = tokio::select! {
            _ = self.cancel.cancelled() => Err(ConnError::Shutdown),
            result = tokio::time::timeout(self.config.handshake_timeout, self.handshake(stream, None)) => {
                result.unwrap_or(Err(ConnError::Timeout))
            }
        };
        drop(permit);
        let registered = handshake.and_then(|(peer, reader, writer)| {
            let (peer, conn) = self.register(peer, false)?;
            Ok((peer, conn, reader, writer))
        });
        match registered {
            Ok((peer, conn, reader, writer)) => {
                debug!(peer = %peer.address, %remote, "inbound connection authenticated");
                self.run_connection(peer, conn, reader, writer).await;
            }
            Err(error) => log_refused(remote, None, &error),
        }
    }

    async fn dial_loop(self: Arc<Self>, peer: Arc<Peer>) {
        let mut backoff = self.config.initial_backoff;
        loop {
            let target = {
                let mut state = lock(&peer.state);
                match state.dial {
                    Some(at) if !self.cancel.is_cancelled() && state.active.is_none() && !state.outbox.is_empty() => at,
                    _ => {
                        state.dialing = false;
                        return;
                    }
                }
            };
            match self.dial(peer.address, target).await {
                Ok(()) => debug!(peer = %peer.address, %target, "outbound connection authenticated"),
                Err(ConnError::Shutdown) => {}
                Err(error) => log_refused(target, Some(peer.address), &error),
            }
            {
                let mut state = lock(&peer.state);
                if self.cancel.is_cancelled() || state.active.is_some() || state.outbox.is_empty() {
                    state.dialing = false;
                    return;
                }
            }
            let pause = backoff + jitter(backoff);
            tokio::select! {
                _ = self.cancel.cancelled() => {
                    lock(&peer.state).dialing = false;
                    return;
                }
                _ = tokio::time::sleep(pause) => {}
            }
            backoff = backoff.saturating_mul(2).min(self.config.max_backoff);
        }
    }

    async fn dial(self: &Arc<Self>, peer: Address, at: SocketAddr) -> Result<(), ConnError> {
        let connect = async {
            let stream = TcpStream::connect(at).await?;
            self.handshake(stream, Some(peer)).await
        };
        let (address, reader, writer) = tokio::select! {
            _ = self.cancel.cancelled() => return Err(ConnError::Shutdown),
            result = tokio::time::timeout(self.config.handshake_timeout, connect) => {
                result.unwrap_or(Err(ConnError::Timeout))?
            }
        };
        let (peer, conn) = self.register(address, true)?;
        let shared = self.clone();
        self.spawn(async move { shared.run_connection(peer, conn, reader, writer).await });
        Ok(())
    }

    /// Proves our address to the peer and checks its proof; `expected` is whom we dialed.
    async fn handshake(
        &self,
        stream: TcpStream,
        expected: Option<Address>,
    ) -> Result<(Address, Reader, Writer), ConnError> {
        stream.set_nodelay(true)?;
        let (read, write) = stream.into_split();
        let mut reader = FramedRead::new(read, self.codec());
        let mut writer = FramedWrite::new(write, self.codec());

        let mut nonce = B256::ZERO;
        getrandom::fill(nonce.as_mut_slice()).map_err(ConnError::Random)?;
        let hello = Frame::Hello { version: PROTOCOL_VERSION, address: self.address, nonce };
        writer.send(encode_internal(&hello)?).await?;

        let (claimed, their_nonce) = match read_frame(&mut reader).await? {
            Frame::Hello { version, address, nonce } => {
                if version != PROTOCOL_VERSION {
                    return Err(ConnError::Version(version));
                }
                (address, nonce)
            }
            other => return Err(ConnError::Unexpected(other.kind(), "before hello")),
        };
        if claimed == self.address {
            return Err(ConnError::SelfConnection);
        }
        if let Some(expected) = expected {
            if claimed != expected {
                return Err(ConnError::Mismatch { claimed, expected });
            }
        }

        let signature = self.key.sign(&auth_hash(&their_nonce, self.address, claimed));
        writer.send(encode_internal(&Frame::Auth { signature })?).await?;

        match read_frame(&mut reader).await? {
            Frame::Auth { signature } => {
                let recovered = recover_signer(&auth_hash(&nonce, claimed, self.address), &signature)
                    .map_err(ConnError::BadSignature)?;
                if recovered != claimed {
                    return Err(ConnError::WrongSigner { recovered, claimed });
                }
            }
            other => return Err(ConnError::Unexpected(other.kind(), "before auth")),
        }
        Ok((claimed, reader, writer))
    }

    fn codec(&self) -> LengthDelimitedCodec {
        LengthDelimitedCodec::builder()
            .length_field_length(4)
            .big_endian()
            .max_frame_length(self.config.max_frame_bytes)
            .new_codec()
    }

    /// Binds an authenticated connection to its peer and makes it the one that carries our
    /// messages; older connections stay open (for what is still in flight on them) unless
    /// there are too many.
    fn register(&self, address: Address, outbound: bool) -> Result<(Arc<Peer>, Arc<Conn>), ConnError> {
        let mut peers = lock(&self.peers);
        if self.cancel.is_cancelled() {
            return Err(ConnError::Shutdown);
        }
        let peer = match peers.get(&address) {
            Some(peer) => peer.clone(),
            None => {
                if peers.len() >= MAX_PEERS {
                    peers.retain(|_, peer| !lock(&peer.state).is_idle_inbound_only());
                    if peers.len() >= MAX_PEERS {
                        return Err(ConnError::TooManyPeers);
                    }
                }
                let peer = Arc::new(Peer::new(address));
                peers.insert(address, peer.clone());
                peer
            }
        };
        let conn = Arc::new(Conn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            outbound,
            notify: Notify::new(),
            acks: Mutex::default(),
            closed: self.cancel.child_token(),
        });
        let mut state = lock(&peer.state);
        state.conns.push(conn.clone());
        while state.conns.len() > MAX_CONNECTIONS_PER_PEER {
            let old = state.conns.remove(0);
            debug!(peer = %address, old = old.id, new = conn.id, "closing the oldest connection");
            old.closed.cancel();
        }
        state.activate(conn.clone());
        drop(state);
        Ok((peer, conn))
    }

    /// Forgets a closed connection; another live one takes over, or we redial if needed.
    fn unregister(self: &Arc<Self>, peer: &Arc<Peer>, conn: &Arc<Conn>) {
        let mut state = lock(&peer.state);
        state.conns.retain(|c| !Arc::ptr_eq(c, conn));
        if state.is_active(conn) {
            state.active = None;
            if let Some(other) = state.conns.last().cloned() {
                state.activate(other);
            }
        }
        let redial = state.claim_dial();
        drop(state);
        if redial {
            self.spawn_dialer(peer.clone());
        }
    }

    async fn run_connection(self: Arc<Self>, peer: Arc<Peer>, conn: Arc<Conn>, reader: Reader, writer: Writer) {
        debug!(peer = %peer.address, conn = conn.id, outbound = conn.outbound, "connection up");
        let (read, write) = tokio::join!(self.read_loop(&peer, &conn, reader), self.write_loop(&peer, &conn, writer));
        for result in [read, write] {
            if let Err(error) = result {
                if error.is_violation() {
                    warn!(peer = %peer.address, conn = conn.id, %error, "dropping connection");
                } else {
                    debug!(peer = %peer.address, conn = conn.id, %error, "connection closed");
                }
            }
        }
        self.unregister(&peer, &conn);
    }

    async fn read_loop(&self, peer: &Peer, conn: &Conn, mut reader: Reader) -> Result<(), ConnError> {
        let result = loop {
            let next = tokio::select! {
                biased;
                _ = conn.closed.cancelled() => break Ok(()),
                next = reader.next() => next,
            };
            let bytes = match next {
                None => break Ok(()),
                Some(Err(error)) => break Err(ConnError::Io(error)),
                Some(Ok(bytes)) => bytes,
            };
            match decode_frame(&bytes) {
                Err(error) => break Err(error),
                Ok(Frame::Msg { id, body }) => match self.deliver(peer, conn, id, body.into_owned()).await {
                    Delivery::Delivered | Delivery::Duplicate => conn.push_ack(id),
                    Delivery::Undeliverable => {}
                    Delivery::Closed => break Ok(()),
                },
                Ok(Frame::Ack { id }) => lock(&peer.state).acknowledge(id),
                Ok(other) => break Err(ConnError::Unexpected(other.kind(), "after the handshake")),
            }
        };
        conn.closed.cancel();
        result
    }

    /// Puts a message in the inbound channel unless it was delivered before; waits while
    /// the channel is full.
    async fn deliver(&self, peer: &Peer, conn: &Conn, id: u64, body: Value) -> Delivery {
        let mut dedup = tokio::select! {
            _ = conn.closed.cancelled() => return Delivery::Closed,
            dedup = peer.delivery.lock() => dedup,
        };
        if dedup.contains(id) {
            return Delivery::Duplicate;
        }
        let permit = tokio::select! {
            _ = conn.closed.cancelled() => return Delivery::Closed,
            permit = self.inbound.reserve() => match permit {
                Ok(permit) => permit,
                Err(_) => {
                    debug!(peer = %peer.address, id, "inbound receiver dropped; message not acknowledged");
                    return Delivery::Undeliverable;
                }
            },
        };
        permit.send(Inbound::Message { from: peer.address, id, body });
        dedup.insert(id);
        Delivery::Delivered
    }

    async fn write_loop(&self, peer: &Peer, conn: &Arc<Conn>, mut writer: Writer) -> Result<(), ConnError> {
        let result = loop {
            let (frames, next_deadline) = self.collect(peer, conn);
            if frames.is_empty() {
                let resend = async {
                    match next_deadline {
                        Some(deadline) => tokio::time::sleep_until(deadline).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    _ = conn.closed.cancelled() => break Ok(()),
                    _ = conn.notify.notified() => {}
                    _ = resend => {}
                }
                continue;
            }
            let write = async {
                for frame in frames {
                    writer.feed(frame).await?;
                }
                SinkExt::<Bytes>::flush(&mut writer).await
            };
            tokio::select! {
                _ = conn.closed.cancelled() => break Ok(()),
                written = write => if let Err(error) = written {
                    break Err(ConnError::Io(error));
                }
            }
        };
        conn.closed.cancel();
        result
    }

    /// The next frames to write on `conn` (acknowledgements first, then messages if it is
    /// the active connection) and the next resend deadline.
    fn collect(&self, peer: &Peer, conn: &Arc<Conn>) -> (Vec<Bytes>, Option<Instant>) {
        let mut frames = Vec::new();
        {
            let mut acks = lock(&conn.acks);
            while frames.len() < WRITE_BATCH {
                let Some(id) = acks.pop_front() else { break };
                if let Ok(frame) = (Frame::Ack { id }).encode() {
                    frames.push(frame);
                }
            }
        }
        let now = Instant::now();
        let mut state = lock(&peer.state);
        if !state.is_active(conn) {
            return (frames, None);
        }
        let PeerState { outbox, ready, timers, .. } = &mut *state;
        while let Some(&(deadline, id)) = timers.first() {
            if deadline > now {
                break;
            }
            timers.pop_first();
            if let Some(pending) = outbox.get_mut(&id) {
                pending.deadline = None;
                ready.insert(id);
            }
        }
        while frames.len() < WRITE_BATCH {
            let Some(id) = ready.pop_first() else { break };
            let Some(pending) = outbox.get_mut(&id) else { continue };
            if let Some(old) = pending.deadline.take() {
                timers.remove(&(old, id));
            }
            let deadline = now + self.config.resend_delay(pending.attempts);
            pending.attempts = pending.attempts.saturating_add(1);
            pending.deadline = Some(deadline);
            timers.insert((deadline, id));
            frames.push(pending.frame.clone());
        }
        let next = timers.first().map(|&(deadline, _)| deadline);
        (frames, next)
    }
}

/// Parses a payload, which must be a JSON object (serde would also take an array).
fn decode_frame(payload: &[u8]) -> Result<Frame<'static>, ConnError> {
    let first = payload.iter().find(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'));
    if first != Some(&b'{') {
        return Err(ConnError::NotAnObject);
    }
    serde_json::from_slice(payload).map_err(ConnError::Malformed)
}

/// Runs the frame decoder of incoming connections on one frame payload (the bytes after the
/// 4-byte length), for the fuzz targets under `fuzz/`: `Ok` is the frame re-encoded by this
/// transport's encoder, `Err` the reason the frame is refused. Not part of the API.
#[doc(hidden)]
pub fn decode_frame_for_fuzzing(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let frame = decode_frame(bytes).map_err(|e| e.to_string())?;
    encode_internal(&frame).map(|b| b.to_vec()).map_err(|e| e.to_string())
}

fn encode_internal(frame: &Frame<'_>) -> Result<Bytes, ConnError> {
    frame.encode().map_err(ConnError::Encode)
}

async fn read_frame(reader: &mut Reader) -> Result<Frame<'static>, ConnError> {
    match reader.next().await {
        None => Err(ConnError::Closed),
        Some(Err(error)) => Err(ConnError::Io(error)),
        Some(Ok(bytes)) => decode_frame(&bytes),
    }
}

fn log_refused(remote: SocketAddr, expected: Option<Address>, error: &ConnError) {
    if error.is_violation() {
        warn!(%remote, ?expected, %error, "handshake refused");
    } else {
        debug!(%remote, ?expected, %error, "connection failed");
    }
}

/// Up to a quarter of `backoff`, at random, so that peers do not redial in lockstep.
fn jitter(backoff: Duration) -> Duration {
    let random = getrandom::u32().unwrap_or(0);
    backoff.mul_f64(f64::from(random) / f64::from(u32::MAX) / 4.0)
}

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
/// connection to an Ethereum address and carries acknowledged, deduplicated messages.
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
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let (inbound, receiver) = mpsc::channel(config.queue_capacity);
        let (guard, tasks_done) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            runtime: tokio::runtime::Handle::current(),
            address: key.address(),
            key,
            config,
            local_addr,
            inbound,
            peers: Mutex::default(),
            cancel: CancellationToken::new(),
            task_guard: Mutex::new(Some(guard)),
            tasks_done: tokio::sync::Mutex::new(tasks_done),
            handshakes: Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES)),
            next_conn: AtomicU64::new(0),
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

    /// Records where to dial `peer` (replacing an earlier address); if messages for it are
    /// waiting and no connection is up, dialing starts. Our own address is ignored.
    pub fn add_peer(&self, peer: Address, at: SocketAddr) {
        let shared = self.shared();
        if peer == shared.address {
            debug!(%peer, "not adding ourselves as a peer");
            return;
        }
        let entry = lock(&shared.peers).entry(peer).or_insert_with(|| Arc::new(Peer::new(peer))).clone();
        let dial = {
            let mut state = lock(&entry.state);
            state.dial = Some(at);
            state.claim_dial()
        };
        if dial {
            shared.spawn_dialer(entry);
        }
    }

    /// Queues `body` for `to` under the caller's `id` and returns at once. The message is
    /// kept (and resent) until `to` acknowledges it; queuing an id that is still
    /// unacknowledged again does nothing.
    ///
    /// Refused with [`TransportError::UnknownPeer`] if `to` was never added nor connected,
    /// [`TransportError::QueueFull`] if `to` has
    /// [`queue_capacity`](TransportConfig::queue_capacity) unacknowledged messages,
    /// [`TransportError::FrameTooLarge`] if the message exceeds the frame limit, and
    /// [`TransportError::Shutdown`] after shutdown.
    pub fn send(&self, to: Address, id: u64, body: Value) -> Result<(), TransportError> {
        let shared = self.shared();
        if shared.cancel.is_cancelled() {
            return Err(TransportError::Shutdown);
        }
        let peer = lock(&shared.peers).get(&to).cloned().ok_or(TransportError::UnknownPeer(to))?;
        let frame = Frame::Msg { id, body: Cow::Borrowed(&body) }.encode()?;
        let limit = shared.config.max_frame_bytes;
        if frame.len() > limit {
            return Err(TransportError::FrameTooLarge { size: frame.len(), limit });
        }
        let dial = {
            let mut state = lock(&peer.state);
            if state.outbox.contains_key(&id) {
                return Ok(());
            }
            let capacity = shared.config.queue_capacity;
            if state.outbox.len() >= capacity {
                return Err(TransportError::QueueFull { peer: to, capacity });
            }
            state.outbox.insert(id, Pending { frame, attempts: 0, deadline: None });
            if let Some(active) = &state.active {
                active.notify.notify_one();
                state.ready.insert(id);
            }
            state.claim_dial()
        };
        if dial {
            shared.spawn_dialer(peer);
        }
        Ok(())
    }

    /// Messages queued for `to` and not yet acknowledged (0 for an unknown peer).
    pub fn unacked(&self, to: Address) -> usize {
        let peer = lock(&self.shared().peers).get(&to).cloned();
        peer.map_or(0, |peer| lock(&peer.state).outbox.len())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_window_keeps_a_floor() {
        let mut dedup = Dedup::default();
        for id in (0..2 * DEDUP_WINDOW as u64).map(|i| i * 3) {
            assert!(!dedup.contains(id));
            dedup.insert(id);
            assert!(dedup.contains(id));
        }
        assert_eq!(dedup.recent.len(), DEDUP_WINDOW);
        // Gaps below the floor count as seen, gaps above it do not.
        assert!(dedup.contains(1));
        assert!(!dedup.contains(3 * (2 * DEDUP_WINDOW as u64 - 1) - 1));
        assert!(!dedup.contains(u64::MAX));
    }

    #[test]
    fn resend_delay_doubles_up_to_the_cap() {
        let config = TransportConfig::default();
        assert_eq!(config.resend_delay(0), Duration::from_secs(1));
        assert_eq!(config.resend_delay(1), Duration::from_secs(2));
        assert_eq!(config.resend_delay(2), Duration::from_secs(4));
        assert_eq!(config.resend_delay(3), Duration::from_secs(5));
        assert_eq!(config.resend_delay(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn frames_round_trip() {
        let body = serde_json::json!({"a": [1, 2, 3]});
        let frame = Frame::Msg { id: 7, body: Cow::Borrowed(&body) }.encode().unwrap();
        assert_eq!(&frame[..], br#"{"type":"msg","id":7,"body":{"a":[1,2,3]}}"#);
        match decode_frame(&frame).unwrap() {
            Frame::Msg { id, body: decoded } => {
                assert_eq!(id, 7);
                assert_eq!(decoded.into_owned(), body);
            }
            other => panic!("decoded {other:?}"),
        }
        for bad in [
            &br#"{"type":"nope"}"#[..],
            br#"{"type":"msg","id":-1,"body":1}"#,
            br#"{"type":"msg","id":1}"#,
            b"[]",
            br#"["ack",5]"#,
        ] {
            assert!(decode_frame(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn invalid_configs_are_refused() {
        let good = TransportConfig::default();
        assert!(good.validate().is_ok());
        assert!(TransportConfig { queue_capacity: 0, ..good.clone() }.validate().is_err());
        assert!(TransportConfig { max_frame_bytes: 10, ..good.clone() }.validate().is_err());
        assert!(TransportConfig { ack_timeout: Duration::ZERO, ..good.clone() }.validate().is_err());
        assert!(TransportConfig { max_backoff: Duration::from_millis(1), ..good }.validate().is_err());
    }
}
