//! The transport's tasks: accepting and dialing, admitting peers, and the reading and
//! writing halves of every authenticated connection.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::Address;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tokio_util::bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::error::ConnError;
use super::frame::{self, Frame};
use super::handshake::{authenticate, Authenticated, Identity};
use super::limits::{PendingHandshakes, WarnGate};
use super::noise::{self, MessageReader, Opener, Sealer};
use super::peer::{self, Conn, Peer, Verdict};
use super::{lock, Inbound, TransportConfig};

/// Frames written per batch before the writer looks for new work again.
const WRITE_BATCH: usize = 256;

/// Bytes of messages written per batch (beyond one message).
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// How long the accept loop pauses after an accept error (for example too many open files).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// How often violations of one authenticated peer may be logged as warnings.
const PEER_WARN_PERIOD: Duration = Duration::from_secs(60);

/// The state the transport's tasks share.
pub(super) struct Shared {
    /// The runtime `bind` ran on: tasks are spawned there, so that `send` and `add_peer` work
    /// from any thread.
    pub(super) runtime: tokio::runtime::Handle,
    pub(super) address: Address,
    pub(super) identity: Identity,
    pub(super) config: TransportConfig,
    pub(super) local_addr: SocketAddr,
    pub(super) inbound: mpsc::Sender<Inbound>,
    pub(super) peers: Mutex<HashMap<Address, Arc<Peer>>>,
    pub(super) cancel: CancellationToken,
    /// Cloned into every task; taken by `shutdown`, which then waits for all clones to go.
    pub(super) task_guard: Mutex<Option<mpsc::Sender<()>>>,
    pub(super) tasks_done: tokio::sync::Mutex<mpsc::Receiver<()>>,
    pub(super) pending: Arc<PendingHandshakes>,
    pub(super) next_conn: AtomicU64,
    pub(super) handshake_warnings: WarnGate,
    /// Gates the warnings about messages dropped from full queues.
    pub(super) overflow_warnings: WarnGate,
}

impl Shared {
    /// Runs `task` unless the transport is shutting down; says whether it did.
    pub(super) fn spawn<F>(&self, task: F) -> bool
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

    pub(super) fn spawn_dialer(self: &Arc<Self>, peer: Arc<Peer>) {
        let shared = self.clone();
        let dialed = peer.clone();
        if !self.spawn(async move { shared.dial_loop(dialed).await }) {
            lock(&peer.state).dialing = false;
        }
    }

    pub(super) async fn accept_loop(self: Arc<Self>, listener: TcpListener) {
        loop {
            let accepted = tokio::select! {
                _ = self.cancel.cancelled() => return,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok((stream, remote)) => {
                    let shared = self.clone();
                    self.spawn(async move { shared.serve_inbound(stream, remote).await });
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

    async fn serve_inbound(self: Arc<Self>, stream: TcpStream, remote: SocketAddr) {
        let (slot, evicted) = self.pending.admit(remote.ip());
        if evicted > 0 {
            debug!(%remote, evicted, "too many pending handshakes; closed the oldest");
        }
        let handshake = authenticate(&self.identity, stream, None, |address| self.admit(address));
        let authenticated = tokio::select! {
            _ = self.cancel.cancelled() => Err(ConnError::Shutdown),
            _ = slot.evicted.cancelled() => Err(ConnError::Evicted),
            result = tokio::time::timeout(self.config.handshake_timeout, handshake) => {
                result.unwrap_or(Err(ConnError::Timeout))
            }
        };
        drop(slot);
        let registered = authenticated.and_then(|auth| {
            let (peer, conn, fresh) = self.register(&auth, false)?;
            Ok((peer, conn, fresh, auth))
        });
        match registered {
            Ok((peer, conn, fresh, auth)) => {
                debug!(peer = %peer.address, %remote, "inbound connection authenticated");
                self.run_connection(peer, conn, fresh, auth).await;
            }
            Err(error) => self.log_refused(remote, None, &error),
        }
    }

    /// Lets an authenticated peer in: a known one, or one already admitted, at once; any
    /// other counts against `max_unknown_peers`, evicting the unknown peer idle longest
    /// (those without a connection first). Returns the stream to announce to it.
    fn admit(&self, address: Address) -> Result<u64, ConnError> {
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        if self.cancel.is_cancelled() {
            return Err(ConnError::Shutdown);
        }
        if let Some(peer) = peers.get(&address) {
            let mut state = lock(&peer.state);
            state.last_active = now;
            return Ok(state.stream_for_handshake());
        }
        let budget = self.config.max_unknown_peers;
        if budget == 0 {
            return Err(ConnError::NotAdmitted);
        }
        loop {
            let mut unknown = 0;
            let mut victim: Option<((bool, Instant), Address)> = None;
            for (candidate, peer) in peers.iter() {
                let state = lock(&peer.state);
                if state.known {
                    continue;
                }
                unknown += 1;
                let key = (!state.conns.is_empty(), state.last_active);
                if victim.is_none_or(|(best, _)| key < best) {
                    victim = Some((key, *candidate));
                }
            }
            let Some((_, victim)) = victim.filter(|_| unknown >= budget) else { break };
            if let Some(evicted) = peers.remove(&victim) {
                debug!(peer = %victim, "evicting the unknown peer idle longest to admit {address}");
                for conn in &lock(&evicted.state).conns {
                    conn.closed.cancel();
                }
            }
        }
        peers.insert(address, Arc::new(Peer::new(address, self.identity.stream)));
        Ok(self.identity.stream)
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
            match self.dial(&peer, target).await {
                Ok(()) => debug!(peer = %peer.address, %target, "outbound connection authenticated"),
                Err(ConnError::Shutdown) => {}
                Err(error) => self.log_refused(target, Some(peer.address), &error),
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

    async fn dial(self: &Arc<Self>, peer: &Peer, at: SocketAddr) -> Result<(), ConnError> {
        let connect = async {
            let stream = TcpStream::connect(at).await?;
            let local_stream = lock(&peer.state).stream_for_handshake();
            authenticate(&self.identity, stream, Some((peer.address, local_stream)), |_| Ok(local_stream)).await
        };
        let auth = tokio::select! {
            _ = self.cancel.cancelled() => return Err(ConnError::Shutdown),
            result = tokio::time::timeout(self.config.handshake_timeout, connect) => {
                result.unwrap_or(Err(ConnError::Timeout))?
            }
        };
        let (peer, conn, fresh) = self.register(&auth, true)?;
        let shared = self.clone();
        self.spawn(async move { shared.run_connection(peer, conn, fresh, auth).await });
        Ok(())
    }

    /// Binds an authenticated connection to its peer and makes it the one that carries our
    /// messages; older connections stay open (for what is still in flight on them) unless
    /// there are too many or they belong to a stream the peer replaced. Also says whether the
    /// session is new (see [`peer::PeerState::add_connection`]).
    fn register(&self, auth: &Authenticated, outbound: bool) -> Result<(Arc<Peer>, Arc<Conn>, bool), ConnError> {
        let mut peers = lock(&self.peers);
        if self.cancel.is_cancelled() {
            return Err(ConnError::Shutdown);
        }
        let stream = self.identity.stream;
        let peer = peers.entry(auth.address).or_insert_with(|| Arc::new(Peer::new(auth.address, stream))).clone();
        let conn = Arc::new(Conn {
            id: self.next_conn.fetch_add(1, Ordering::Relaxed),
            outbound,
            remote_stream: auth.remote_stream,
            local_stream: auth.local_stream,
            notify: Notify::new(),
            ack_due: AtomicBool::new(false),
            closed: self.cancel.child_token(),
        });
        let mut state = lock(&peer.state);
        state.last_active = Instant::now();
        let (closed, fresh) = state.add_connection(conn.clone())?;
        for old in closed {
            debug!(peer = %auth.address, old = old.id, new = conn.id, "closing an older connection");
            old.closed.cancel();
        }
        drop(state);
        drop(peers);
        Ok((peer, conn, fresh))
    }

    /// Forgets a closed connection; another live one takes over, or we redial if needed.
    fn unregister(self: &Arc<Self>, peer: &Arc<Peer>, conn: &Arc<Conn>) {
        let mut state = lock(&peer.state);
        state.remove_connection(conn);
        let redial = state.claim_dial();
        drop(state);
        if redial {
            self.spawn_dialer(peer.clone());
        }
    }

    async fn run_connection(self: Arc<Self>, peer: Arc<Peer>, conn: Arc<Conn>, fresh: bool, auth: Authenticated) {
        debug!(peer = %peer.address, conn = conn.id, outbound = conn.outbound, fresh, "connection up");
        let Authenticated { reader, writer, sealer, opener, leftover, .. } = auth;
        let (read, write) = tokio::join!(
            self.read_loop(&peer, &conn, fresh, reader, opener, leftover),
            self.write_loop(&peer, &conn, writer, sealer)
        );
        for error in [read.err(), write.err()].into_iter().flatten() {
            self.log_connection_error(&peer, &conn, &error);
        }
        self.unregister(&peer, &conn);
    }

    /// Reads and handles the peer's frames until the connection ends; a new session is
    /// first announced to the engine ([`Inbound::Connected`]), before any of its messages.
    async fn read_loop(
        &self,
        peer: &Peer,
        conn: &Conn,
        fresh: bool,
        mut reader: MessageReader,
        mut opener: Opener,
        leftover: Vec<Frame>,
    ) -> Result<(), ConnError> {
        let result = async {
            if fresh {
                tokio::select! {
                    _ = conn.closed.cancelled() => return Err(ConnError::Cancelled),
                    sent = self.inbound.send(Inbound::Connected { peer: peer.address }) => {
                        sent.map_err(|_| ConnError::Undeliverable)?;
                    }
                }
            }
            self.handle_frames(peer, conn, leftover).await?;
            loop {
                let next = tokio::select! {
                    biased;
                    _ = conn.closed.cancelled() => return Ok(()),
                    next = tokio::time::timeout(self.config.idle_timeout, noise::read_message(&mut reader)) => next,
                };
                let record = match next {
                    Err(_) => return Err(ConnError::Idle),
                    Ok(Err(ConnError::Closed)) => return Ok(()),
                    Ok(record) => record?,
                };
                let frames = opener.open(&record)?;
                self.handle_frames(peer, conn, frames).await?;
            }
        }
        .await;
        conn.closed.cancel();
        result
    }

    async fn handle_frames(&self, peer: &Peer, conn: &Conn, frames: Vec<Frame>) -> Result<(), ConnError> {
        for frame in frames {
            match frame {
                Frame::Msg { seq, id, body } => self.deliver(peer, conn, seq, id, body).await?,
                Frame::Ack { seq } => lock(&peer.state).acknowledge(conn, seq)?,
                Frame::Ping | Frame::Rekey => {}
                Frame::Hello { .. } => return Err(ConnError::Unexpected("HELLO", "after the handshake")),
            }
        }
        Ok(())
    }

    /// Hands message `seq` to the engine if it is the next of the peer's stream (waiting
    /// while the inbound channel is full) and asks the writer to acknowledge it.
    async fn deliver(&self, peer: &Peer, conn: &Conn, seq: u64, id: u64, body: Value) -> Result<(), ConnError> {
        let digest = peer::digest(id, &body);
        let _turn = tokio::select! {
            _ = conn.closed.cancelled() => return Err(ConnError::Cancelled),
            turn = peer.delivery.lock() => turn,
        };
        let verdict = lock(&peer.state).judge(conn, seq, digest)?;
        match verdict {
            Verdict::Duplicate => {}
            Verdict::Redelivered => lock(&peer.state).delivered(conn, seq, digest, Instant::now()),
            Verdict::Deliver => {
                let permit = tokio::select! {
                    _ = conn.closed.cancelled() => return Err(ConnError::Cancelled),
                    permit = self.inbound.reserve() => permit.map_err(|_| ConnError::Undeliverable)?,
                };
                let mut state = lock(&peer.state);
                // The peer may have replaced its stream meanwhile.
                if state.judge(conn, seq, digest)? == Verdict::Deliver {
                    permit.send(Inbound::Message { from: peer.address, id, body });
                    state.delivered(conn, seq, digest, Instant::now());
                }
            }
        }
        conn.request_ack();
        Ok(())
    }

    async fn write_loop(
        &self,
        peer: &Peer,
        conn: &Conn,
        mut writer: OwnedWriteHalf,
        mut sealer: Sealer,
    ) -> Result<(), ConnError> {
        let keepalive = self.config.keepalive_interval();
        let mut last_write = Instant::now();
        let result = loop {
            let (mut frames, resend_at) = self.collect(peer, conn);
            if frames.is_empty() && last_write.elapsed() >= keepalive {
                frames.push(frame::ping_frame());
            }
            if frames.is_empty() {
                let ping_at = last_write + keepalive;
                let wake = resend_at.map_or(ping_at, |at| at.min(ping_at));
                tokio::select! {
                    _ = conn.closed.cancelled() => break Ok(()),
                    _ = conn.notify.notified() => {}
                    _ = tokio::time::sleep_until(wake) => {}
                }
                continue;
            }
            let bytes = match sealer.seal(&frames) {
                Ok(bytes) => bytes,
                Err(error) => break Err(error),
            };
            tokio::select! {
                _ = conn.closed.cancelled() => break Ok(()),
                written = writer.write_all(bytes) => if let Err(error) = written {
                    break Err(ConnError::Io(error));
                }
            }
            last_write = Instant::now();
        };
        conn.closed.cancel();
        result
    }

    /// The next frames to write on `conn` (an acknowledgement first, then messages if it is
    /// the active connection) and the next resend deadline.
    fn collect(&self, peer: &Peer, conn: &Conn) -> (Vec<Bytes>, Option<Instant>) {
        let mut frames = Vec::new();
        let now = Instant::now();
        let mut state = lock(&peer.state);
        if conn.ack_due.swap(false, Ordering::AcqRel) && state.is_current(conn) {
            if let Some(delivered) = state.delivered {
                frames.push(frame::ack_frame(delivered));
            }
        }
        let is_active = state.active.as_ref().is_some_and(|active| std::ptr::eq(Arc::as_ptr(active), conn));
        if !is_active {
            return (frames, None);
        }
        let config = &self.config;
        let super::peer::PeerState { outbox, ready, timers, .. } = &mut *state;
        while let Some(&(deadline, seq)) = timers.first() {
            if deadline > now {
                break;
            }
            timers.pop_first();
            if let Some(pending) = outbox.get_mut(&seq) {
                pending.deadline = None;
                ready.insert(seq);
            }
        }
        let mut bytes = 0;
        while frames.len() < WRITE_BATCH && bytes < WRITE_BATCH_BYTES {
            let Some(seq) = ready.pop_first() else { break };
            let Some(pending) = outbox.get_mut(&seq) else { continue };
            if let Some(old) = pending.deadline.take() {
                timers.remove(&(old, seq));
            }
            let deadline = now + config.resend_delay(pending.attempts);
            pending.attempts = pending.attempts.saturating_add(1);
            pending.deadline = Some(deadline);
            timers.insert((deadline, seq));
            bytes += pending.frame.len();
            frames.push(pending.frame.clone());
        }
        if !ready.is_empty() {
            // More to write at once: the writer comes back without waiting.
            conn.notify.notify_one();
        }
        let next = timers.first().map(|&(deadline, _)| deadline);
        (frames, next)
    }

    fn log_connection_error(&self, peer: &Peer, conn: &Conn, error: &ConnError) {
        if !error.is_violation() {
            debug!(peer = %peer.address, conn = conn.id, %error, "connection closed");
            return;
        }
        let now = Instant::now();
        let mut state = lock(&peer.state);
        let quiet = state.last_warned.is_some_and(|last| now.duration_since(last) < PEER_WARN_PERIOD);
        if quiet {
            debug!(peer = %peer.address, conn = conn.id, %error, "dropping connection");
        } else {
            state.last_warned = Some(now);
            drop(state);
            warn!(peer = %peer.address, conn = conn.id, %error, "dropping connection");
        }
    }

    fn log_refused(&self, remote: SocketAddr, expected: Option<Address>, error: &ConnError) {
        if !error.is_violation() {
            debug!(%remote, ?expected, %error, "connection failed");
        } else if let Some(suppressed) = self.handshake_warnings.pass() {
            warn!(%remote, ?expected, %error, suppressed, "handshake refused");
        } else {
            debug!(%remote, ?expected, %error, "handshake refused");
        }
    }
}

/// Up to a quarter of `backoff`, at random, so that peers do not redial in lockstep.
fn jitter(backoff: Duration) -> Duration {
    let random = getrandom::u32().unwrap_or(0);
    backoff.mul_f64(f64::from(random) / f64::from(u32::MAX) / 4.0)
}
