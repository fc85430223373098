//! The peer transport over loopback TCP: ordered exchange, reconnection, resends and
//! deduplication, cut connections, restarts; and what an attacker on the path or at the other
//! end tries: relays, replays, forged bindings, forged and out-of-window ids, floods of
//! half-open sockets, idle connections, unknown keys, garbage, plaintext snooping.
//!
//! The raw clients below speak the protocol from `docs/wire-format.md` with their own Noise
//! session (`snow`) and their own frame encoder, so these tests also check the document.

use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{keccak256, Address, B256};
use nitro_core::{recover_signer, Signature, SigningKey};
use nitro_node::transport::{Inbound, Transport, TransportConfig, TransportError};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

/// The bound on every test.
const TEST_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for something that should happen.
const PATIENCE: Duration = Duration::from_secs(15);
/// How long to watch for something that should not happen.
const QUIET: Duration = Duration::from_millis(300);

const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_BLAKE2s";
const PROLOGUE: &[u8] = b"nitro-transport-v2";

async fn within<F: Future>(test: F) -> F::Output {
    timeout(TEST_TIMEOUT, test).await.expect("test timed out")
}

fn key(n: u8) -> SigningKey {
    let mut bytes = [0x42u8; 32];
    bytes[31] = n;
    SigningKey::from_bytes(&bytes).unwrap()
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// Quick timers so that reconnections and resends happen within a test.
fn config() -> TransportConfig {
    TransportConfig {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        handshake_timeout: Duration::from_secs(5),
        ack_timeout: Duration::from_millis(300),
        ..TransportConfig::new(loopback())
    }
}

async fn node(n: u8, config: TransportConfig) -> (Transport, Receiver<Inbound>) {
    Transport::bind(key(n), config).await.unwrap()
}

/// A loopback port held (bound, not listening: dials are refused) until the socket is dropped.
fn reserve_port() -> (TcpSocket, SocketAddr) {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_reuseaddr(true).unwrap();
    socket.bind(loopback()).unwrap();
    let at = socket.local_addr().unwrap();
    (socket, at)
}

/// The next message (sessions being established, [`Inbound::Connected`], are skipped).
async fn recv(rx: &mut Receiver<Inbound>) -> (Address, u64, Value) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Inbound::Message { from, id, body })) => return (from, id, body),
            Ok(Some(Inbound::Connected { .. })) => continue,
            Ok(None) => panic!("inbound channel closed"),
            Err(_) => panic!("no message within {PATIENCE:?}"),
        }
    }
}

async fn expect_nothing(rx: &mut Receiver<Inbound>) {
    let deadline = tokio::time::Instant::now() + QUIET;
    while let Ok(Some(inbound)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if let Inbound::Message { .. } = inbound {
            panic!("unexpected delivery {inbound:?}");
        }
    }
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "still waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Receives `ids` from `from`, in this order, with the bodies `send_range` used.
async fn expect_ids(rx: &mut Receiver<Inbound>, from: Address, ids: impl IntoIterator<Item = u64>) {
    for expected in ids {
        let (sender, id, body) = recv(rx).await;
        assert_eq!((sender, id), (from, expected));
        assert_eq!(body, json!({ "n": expected }));
    }
}

fn send_range(transport: &Transport, to: Address, ids: impl IntoIterator<Item = u64>) {
    for id in ids {
        transport.send(to, id, json!({ "n": id })).unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// The wire format, written out independently of the transport's own code.

/// `keccak256("nitro-noise-binding-v1" ‖ handshake_hash ‖ static_key)`.
fn binding_hash(handshake_hash: &[u8; 32], static_key: &[u8; 32]) -> B256 {
    let mut buf = b"nitro-noise-binding-v1".to_vec();
    buf.extend_from_slice(handshake_hash);
    buf.extend_from_slice(static_key);
    keccak256(buf)
}

fn frame(kind: u8, fields: &[u8]) -> Vec<u8> {
    let mut out = ((1 + fields.len()) as u32).to_be_bytes().to_vec();
    out.push(kind);
    out.extend_from_slice(fields);
    out
}

fn hello_frame(address: Address, signature: &Signature, stream: u64) -> Vec<u8> {
    let mut fields = address.to_vec();
    fields.extend_from_slice(&signature.to_bytes());
    fields.extend_from_slice(&stream.to_be_bytes());
    frame(0x01, &fields)
}

fn msg_frame(seq: u64, id: u64, body: &Value) -> Vec<u8> {
    let mut fields = seq.to_be_bytes().to_vec();
    fields.extend_from_slice(&id.to_be_bytes());
    fields.extend_from_slice(&serde_json::to_vec(body).unwrap());
    frame(0x02, &fields)
}

fn ack_frame(seq: u64) -> Vec<u8> {
    frame(0x03, &seq.to_be_bytes())
}

fn ping_frame() -> Vec<u8> {
    frame(0x04, &[])
}

#[derive(Debug, PartialEq)]
enum RawFrame {
    Hello { address: Address, signature: Signature, stream: u64 },
    Msg { seq: u64, id: u64, body: Value },
    Ack { seq: u64 },
    Ping,
    Rekey,
}

fn parse(content: &[u8]) -> RawFrame {
    let u64_at = |at: usize| u64::from_be_bytes(content[at..at + 8].try_into().unwrap());
    match content[0] {
        0x01 => {
            assert_eq!(content.len(), 94);
            RawFrame::Hello {
                address: Address::from_slice(&content[1..21]),
                signature: Signature::from_bytes(&content[21..86]).unwrap(),
                stream: u64_at(86),
            }
        }
        0x02 => RawFrame::Msg { seq: u64_at(1), id: u64_at(9), body: serde_json::from_slice(&content[17..]).unwrap() },
        0x03 => RawFrame::Ack { seq: u64_at(1) },
        0x04 => RawFrame::Ping,
        0x05 => RawFrame::Rekey,
        other => panic!("unknown frame kind {other}"),
    }
}

async fn write_noise(stream: &mut TcpStream, message: &[u8]) {
    let mut bytes = (message.len() as u16).to_be_bytes().to_vec();
    bytes.extend_from_slice(message);
    // The node may already have closed the connection; that is what some tests expect.
    let _ = stream.write_all(&bytes).await;
}

/// The next Noise message, or `None` once the connection is closed.
async fn read_noise(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.ok()?;
    let mut message = vec![0; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut message).await.ok()?;
    Some(message)
}

/// A client that speaks the wire format by hand.
struct Raw {
    stream: TcpStream,
    session: snow::TransportState,
    handshake_hash: [u8; 32],
    own_static: [u8; 32],
    remote_static: [u8; 32],
    /// Decrypted bytes not yet parsed into frames.
    plain: Vec<u8>,
    frames: VecDeque<RawFrame>,
    /// The node's rekeys followed so far.
    rekeys: usize,
    /// Every Noise message we sent, for replays.
    sent: Vec<Vec<u8>>,
}

impl Raw {
    /// Runs the Noise XX handshake on `stream`.
    async fn noise(mut stream: TcpStream, initiator: bool) -> Raw {
        let keys = snow::Builder::new(NOISE_PARAMS.parse().unwrap()).generate_keypair().unwrap();
        let builder = snow::Builder::new(NOISE_PARAMS.parse().unwrap())
            .local_private_key(&keys.private)
            .unwrap()
            .prologue(PROLOGUE)
            .unwrap();
        let mut handshake = if initiator { builder.build_initiator() } else { builder.build_responder() }.unwrap();
        let (mut buf, mut sent) = ([0u8; 256], Vec::new());
        for step in 0..3 {
            if (step % 2 == 0) == initiator {
                let len = handshake.write_message(&[], &mut buf).unwrap();
                write_noise(&mut stream, &buf[..len]).await;
                sent.push(buf[..len].to_vec());
            } else {
                let message = timeout(PATIENCE, read_noise(&mut stream)).await.unwrap().expect("handshake message");
                handshake.read_message(&message, &mut buf).unwrap();
            }
        }
        Raw {
            handshake_hash: handshake.get_handshake_hash().try_into().unwrap(),
            own_static: keys.public.as_slice().try_into().unwrap(),
            remote_static: handshake.get_remote_static().unwrap().try_into().unwrap(),
            session: handshake.into_transport_mode().unwrap(),
            stream,
            plain: Vec::new(),
            frames: VecDeque::new(),
            rekeys: 0,
            sent,
        }
    }

    /// Our honest `HELLO` as `key` with stream `stream`.
    fn hello(&self, key: &SigningKey, stream: u64) -> Vec<u8> {
        hello_frame(key.address(), &key.sign(&binding_hash(&self.handshake_hash, &self.own_static)), stream)
    }

    /// Dials `at`, runs the handshake, proves `key` with stream 1 and checks the node's proof.
    async fn authenticate(at: SocketAddr, key: &SigningKey) -> Raw {
        Self::authenticate_stream(at, key, 1).await
    }

    async fn authenticate_stream(at: SocketAddr, key: &SigningKey, stream: u64) -> Raw {
        let mut raw = Raw::noise(TcpStream::connect(at).await.unwrap(), true).await;
        let hello = raw.hello(key, stream);
        raw.send(&[&hello]).await;
        raw.node_hello().await;
        raw
    }

    /// Accepts the node's dial on `listener` and authenticates as `key`.
    async fn accept(listener: &TcpListener, key: &SigningKey) -> Raw {
        let (stream, _) = timeout(PATIENCE, listener.accept()).await.unwrap().unwrap();
        let mut raw = Raw::noise(stream, false).await;
        raw.node_hello().await;
        let hello = raw.hello(key, 1);
        raw.send(&[&hello]).await;
        raw
    }

    /// Reads the node's `HELLO`, checks its binding and returns its address.
    async fn node_hello(&mut self) -> Address {
        match self.next().await {
            Some(RawFrame::Hello { address, signature, .. }) => {
                let hash = binding_hash(&self.handshake_hash, &self.remote_static);
                assert_eq!(recover_signer(&hash, &signature).unwrap(), address, "the node's binding holds");
                address
            }
            other => panic!("expected the node's HELLO, got {other:?}"),
        }
    }

    /// Encrypts `frames` into one record and sends it.
    async fn send(&mut self, frames: &[&[u8]]) {
        let plain: Vec<u8> = frames.concat();
        let mut record = vec![0u8; plain.len() + 16];
        let len = self.session.write_message(&plain, &mut record).unwrap();
        self.send_noise(&record[..len]).await;
    }

    async fn send_noise(&mut self, message: &[u8]) {
        self.sent.push(message.to_vec());
        write_noise(&mut self.stream, message).await;
    }

    /// The next frame from the node (pings and rekeys included), `None` once it closed.
    async fn next(&mut self) -> Option<RawFrame> {
        loop {
            if let Some(frame) = self.frames.pop_front() {
                return Some(frame);
            }
            let record = timeout(PATIENCE, read_noise(&mut self.stream)).await.expect("no frame in time")?;
            let mut out = vec![0u8; 65_535];
            let len = self.session.read_message(&record, &mut out).ok()?;
            self.plain.extend_from_slice(&out[..len]);
            let mut last = None;
            while self.plain.len() >= 4 {
                let len = u32::from_be_bytes(self.plain[..4].try_into().unwrap()) as usize;
                if self.plain.len() < 4 + len {
                    break;
                }
                let frame = parse(&self.plain[4..4 + len]);
                self.plain.drain(..4 + len);
                last = Some(frame == RawFrame::Rekey);
                self.frames.push_back(frame);
            }
            if last == Some(true) {
                assert!(self.plain.is_empty(), "REKEY ends its record");
                self.session.rekey_incoming();
                self.rekeys += 1;
            }
        }
    }

    /// The next frame other than a keepalive or rekey.
    async fn recv(&mut self) -> RawFrame {
        loop {
            match self.next().await {
                Some(RawFrame::Ping | RawFrame::Rekey) => {}
                Some(frame) => return frame,
                None => panic!("the node closed the connection"),
            }
        }
    }

    /// Receives the next `MSG` (its body must be `{"n": id}`) and returns (seq, id).
    async fn msg(&mut self) -> (u64, u64) {
        match self.recv().await {
            RawFrame::Msg { seq, id, body } => {
                assert_eq!(body, json!({ "n": id }));
                (seq, id)
            }
            other => panic!("expected MSG, got {other:?}"),
        }
    }

    /// Receives `ACK`s until one acknowledges `seq`.
    async fn ack_up_to(&mut self, seq: u64) {
        loop {
            match self.recv().await {
                RawFrame::Ack { seq: acked } if acked >= seq => {
                    assert_eq!(acked, seq, "acknowledged more than was sent");
                    return;
                }
                RawFrame::Ack { .. } => {}
                other => panic!("expected ACK, got {other:?}"),
            }
        }
    }

    /// Reads (and ignores) until the node closes the connection.
    async fn expect_closed(&mut self) {
        let closed = timeout(PATIENCE, async {
            let mut buf = [0u8; 4096];
            while let Ok(n) = self.stream.read(&mut buf).await {
                if n == 0 {
                    return;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the node did not close the connection");
    }
}

/// Reads from `stream` until the other side closes it; panics after `PATIENCE`.
async fn expect_eof(stream: &mut TcpStream) {
    let closed = timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the node did not close the connection");
}

// ---------------------------------------------------------------------------------------
// Honest exchanges.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_flow_both_ways_in_order() {
    within(async {
        let (a, mut a_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        assert_eq!(a.address(), key(1).address());
        a.add_peer(b.address(), b.local_addr());
        b.add_peer(a.address(), a.local_addr());

        send_range(&a, b.address(), 1..=200);
        send_range(&b, a.address(), (1..=200).map(|i| i * 10));
        expect_ids(&mut b_rx, a.address(), 1..=200).await;
        expect_ids(&mut a_rx, b.address(), (1..=200).map(|i| i * 10)).await;

        wait_until("all acknowledged", || a.unacked(b.address()) == 0 && b.unacked(a.address()) == 0).await;
        // Caller ids with gaps and out of order, interleaved with the other direction.
        send_range(&a, b.address(), [1000, 1005, 2, 2000]);
        b.send(a.address(), 3, json!({ "n": 3 })).unwrap();
        expect_ids(&mut b_rx, a.address(), [1000, 1005, 2, 2000]).await;
        expect_ids(&mut a_rx, b.address(), [3]).await;
        expect_nothing(&mut b_rx).await;
        a.shutdown().await;
        b.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_only_dialed_us_can_be_answered() {
    within(async {
        let (a, mut a_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        assert!(matches!(b.send(a.address(), 1, json!(1)), Err(TransportError::UnknownPeer(p)) if p == a.address()));

        a.add_peer(b.address(), b.local_addr());
        send_range(&a, b.address(), [1]);
        expect_ids(&mut b_rx, a.address(), [1]).await;
        // B never learnt where A listens, but A's connection carries the answer.
        send_range(&b, a.address(), [9]);
        expect_ids(&mut a_rx, b.address(), [9]).await;
        wait_until("answer acknowledged", || b.unacked(a.address()) == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_before_the_peer_listens_arrives_once_it_starts() {
    within(async {
        let (a, _a_rx) = node(1, config()).await;
        let (reserved, b_addr) = reserve_port();
        // From a thread outside the runtime, as an engine's blocking code may do.
        let sender = a.clone();
        std::thread::spawn(move || {
            sender.add_peer(key(2).address(), b_addr);
            send_range(&sender, key(2).address(), [1, 2]);
        })
        .join()
        .unwrap();
        assert_eq!(a.unacked(key(2).address()), 2);

        drop(reserved);
        let (b, mut b_rx) = node(2, TransportConfig { listen: b_addr, ..config() }).await;
        expect_ids(&mut b_rx, a.address(), [1, 2]).await;
        wait_until("acknowledged", || a.unacked(b.address()) == 0).await;
        expect_nothing(&mut b_rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_are_acknowledged_but_delivered_once() {
    within(async {
        let (b, mut b_rx) = node(2, config()).await;
        let x = key(9);
        let m = |seq: u64, id: u64| msg_frame(seq, id, &json!({ "n": id }));

        let mut raw = Raw::authenticate_stream(b.local_addr(), &x, 77).await;
        raw.send(&[&m(1, 5), &m(1, 5)]).await;
        raw.send(&[&m(2, 7), &m(1, 5)]).await;
        raw.ack_up_to(2).await;
        expect_ids(&mut b_rx, x.address(), [5, 7]).await;
        expect_nothing(&mut b_rx).await;

        // A new connection of the same stream: what was delivered stays delivered.
        drop(raw);
        let mut raw = Raw::authenticate_stream(b.local_addr(), &x, 77).await;
        raw.send(&[&m(1, 5), &m(2, 7)]).await;
        raw.ack_up_to(2).await;
        raw.send(&[&m(3, 8)]).await;
        raw.ack_up_to(3).await;
        expect_ids(&mut b_rx, x.address(), [8]).await;
        expect_nothing(&mut b_rx).await;

        // A new stream (the peer restarted) starts afresh, wherever it starts; a message it
        // sends again (same id, same body) is acknowledged but not delivered again.
        drop(raw);
        let mut raw = Raw::authenticate_stream(b.local_addr(), &x, 78).await;
        raw.send(&[&m(40, 5), &m(41, 6), &msg_frame(42, 7, &json!({ "n": 7, "new": true }))]).await;
        raw.ack_up_to(42).await;
        expect_ids(&mut b_rx, x.address(), [6]).await;
        assert_eq!(recv(&mut b_rx).await, (x.address(), 7, json!({ "n": 7, "new": true })));
        expect_nothing(&mut b_rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_while_the_receiver_is_slow_are_delivered_once_in_order() {
    within(async {
        let fast_resends = TransportConfig {
            ack_timeout: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            ..config()
        };
        let (a, _a_rx) = node(1, fast_resends).await;
        // An inbound channel of 2: the rest waits unacknowledged while B does not read.
        let (b, mut b_rx) = node(2, TransportConfig { queue_capacity: 2, ..config() }).await;
        a.add_peer(b.address(), b.local_addr());
        send_range(&a, b.address(), 1..=50);
        // B holds two in its channel and one waiting for room; nothing else can be acknowledged.
        wait_until("B's channel is full", || b_rx.len() == 2).await;
        tokio::time::sleep(QUIET).await;
        assert!(a.unacked(b.address()) >= 47, "B cannot have acknowledged what it could not deliver");

        expect_ids(&mut b_rx, a.address(), 1..=50).await;
        wait_until("acknowledged", || a.unacked(b.address()) == 0).await;
        expect_nothing(&mut b_rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sender_resends_unacknowledged_messages_after_the_timeout_and_on_reconnection() {
    within(async {
        let (a, _a_rx) = node(1, TransportConfig { ack_timeout: Duration::from_millis(50), ..config() }).await;
        // B is a raw listener that acknowledges only what the test says.
        let b = key(2);
        let listener = TcpListener::bind(loopback()).await.unwrap();
        a.add_peer(b.address(), listener.local_addr().unwrap());
        send_range(&a, b.address(), [1, 2, 3]);

        let accepted = tokio::time::Instant::now();
        let mut raw = Raw::accept(&listener, &b).await;
        assert_eq!([raw.msg().await, raw.msg().await, raw.msg().await], [(1, 1), (2, 2), (3, 3)]);
        // Nothing acknowledged: after the ack timeout, they come again, oldest first.
        assert_eq!(raw.msg().await, (1, 1));
        assert!(accepted.elapsed() >= Duration::from_millis(50), "resent after {:?}", accepted.elapsed());
        raw.send(&[&ack_frame(1)]).await;
        wait_until("1 acknowledged", || a.unacked(b.address()) == 2).await;

        // The connection drops: A redials and resends what is unacknowledged, in order.
        drop(raw);
        send_range(&a, b.address(), [4]);
        let mut raw = Raw::accept(&listener, &b).await;
        assert_eq!([raw.msg().await, raw.msg().await, raw.msg().await], [(2, 2), (3, 3), (4, 4)]);
        raw.send(&[&ack_frame(4)]).await;
        wait_until("all acknowledged", || a.unacked(b.address()) == 0).await;

        // A caller id may be reused once acknowledged: it is a new message.
        send_range(&a, b.address(), [1]);
        assert_eq!(raw.msg().await, (5, 1));
    })
    .await;
}

/// A TCP proxy to `target` that cuts its first connection after `cut_after` bytes from the
/// client; later connections pass everything. Every byte that crosses it, both ways, lands
/// in the returned buffer. Also returns the count of connections.
async fn proxy(target: SocketAddr, cut_after: Option<usize>) -> (SocketAddr, Arc<AtomicUsize>, Arc<Mutex<Vec<u8>>>) {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let at = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let wire = Arc::new(Mutex::new(Vec::new()));
    let (counter, tap) = (connections.clone(), wire.clone());
    tokio::spawn(async move {
        let mut limit = cut_after;
        while let Ok((client, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(target).await else { continue };
            tokio::spawn(pipe(client, server, limit.take(), tap.clone()));
        }
    });
    (at, connections, wire)
}

async fn pipe(client: TcpStream, server: TcpStream, limit: Option<usize>, wire: Arc<Mutex<Vec<u8>>>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up_tap = wire.clone();
    let up = async move {
        let mut left = limit.unwrap_or(usize::MAX);
        let mut buf = vec![0u8; 4096];
        while left > 0 {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n.min(left),
            };
            up_tap.lock().unwrap().extend_from_slice(&buf[..n]);
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
    };
    let down = async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            wire.lock().unwrap().extend_from_slice(&buf[..n]);
            if client_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
    // Dropping both halves of both sockets cuts the connection.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_cut_mid_stream_loses_and_repeats_nothing() {
    within(async {
        let (a, _a_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        // The cut falls in the middle of a record, after the handshake.
        let (proxy, connections, _) = proxy(b.local_addr(), Some(5_001)).await;
        a.add_peer(b.address(), proxy);
        send_range(&a, b.address(), 1..=300);
        expect_ids(&mut b_rx, a.address(), 1..=300).await;
        wait_until("acknowledged", || a.unacked(b.address()) == 0).await;
        expect_nothing(&mut b_rx).await;
        assert!(connections.load(Ordering::SeqCst) >= 2, "the connection was cut and redialed");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_receiver_gets_everything_unacknowledged() {
    within(async {
        let (a, _a_rx) = node(1, config()).await;
        // A small inbound channel: most messages are still unacknowledged when B1 stops.
        let (b1, mut b1_rx) = node(2, TransportConfig { queue_capacity: 8, ..config() }).await;
        let b_addr = b1.local_addr();
        a.add_peer(b1.address(), b_addr);
        send_range(&a, b1.address(), 1..=500);

        // B reads a few, then goes away mid-stream.
        let mut first = Vec::new();
        for _ in 0..20 {
            first.push(recv(&mut b1_rx).await.1);
        }
        b1.shutdown().await;
        while let Ok(inbound) = b1_rx.try_recv() {
            if let Inbound::Message { id, .. } = inbound {
                first.push(id);
            }
        }
        assert_eq!(first, (1..=first.len() as u64).collect::<Vec<_>>());
        assert!(first.len() < 100, "B1 took {} messages", first.len());
        send_range(&a, key(2).address(), 501..=510);

        let (b2, mut b2_rx) = node(2, TransportConfig { listen: b_addr, ..config() }).await;
        let mut second = Vec::new();
        while second.last() != Some(&510) {
            second.push(recv(&mut b2_rx).await.1);
        }
        assert!(second.windows(2).all(|w| w[0] < w[1]), "in order, no duplicates: {second:?}");
        // Only what B1 had delivered but not yet acknowledged may come again.
        let last_first = *first.last().unwrap();
        assert!(second[0] <= last_first + 1, "lost {}..{}", last_first + 1, second[0]);
        let all: BTreeSet<u64> = first.iter().chain(&second).copied().collect();
        assert_eq!(all, (1..=510).collect());
        wait_until("acknowledged", || a.unacked(b2.address()) == 0).await;
        expect_nothing(&mut b2_rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_sender_starts_a_new_stream() {
    within(async {
        let (b, mut b_rx) = node(2, config()).await;
        let a_config = TransportConfig { listen: loopback(), ..config() };
        let (a1, _a1_rx) = node(1, a_config.clone()).await;
        a1.add_peer(b.address(), b.local_addr());
        send_range(&a1, b.address(), 1..=5);
        expect_ids(&mut b_rx, a1.address(), 1..=5).await;
        wait_until("acknowledged", || a1.unacked(b.address()) == 0).await;
        a1.shutdown().await;

        // The same key again, with a new stream from 1. What it sends again (as an engine
        // re-sends its recent outbox after a restart) is acknowledged, not delivered twice;
        // anything else is delivered, a reused id with another body too.
        let (a2, _a2_rx) = node(1, a_config).await;
        a2.add_peer(b.address(), b.local_addr());
        send_range(&a2, b.address(), [4, 5, 6]);
        a2.send(b.address(), 3, json!({ "n": 3, "again": false })).unwrap();
        expect_ids(&mut b_rx, a2.address(), [6]).await;
        assert_eq!(recv(&mut b_rx).await, (a2.address(), 3, json!({ "n": 3, "again": false })));
        wait_until("acknowledged", || a2.unacked(b.address()) == 0).await;
        expect_nothing(&mut b_rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simultaneous_dials_deliver_everything_once_in_order() {
    within(async {
        for round in 0..4u8 {
            let (a, mut a_rx) = node(10 + 2 * round, config()).await;
            let (b, mut b_rx) = node(11 + 2 * round, config()).await;
            a.add_peer(b.address(), b.local_addr());
            b.add_peer(a.address(), a.local_addr());
            let (a2, b2) = (a.clone(), b.clone());
            let (a_addr, b_addr) = (a.address(), b.address());
            let sending = [
                tokio::spawn(async move { send_range(&a2, b_addr, 1..=100) }),
                tokio::spawn(async move { send_range(&b2, a_addr, 1..=100) }),
            ];
            for task in sending {
                task.await.unwrap();
            }
            expect_ids(&mut b_rx, a.address(), 1..=100).await;
            expect_ids(&mut a_rx, b.address(), 1..=100).await;
            wait_until("acknowledged", || a.unacked(b.address()) == 0 && b.unacked(a.address()) == 0).await;
            tokio::join!(expect_nothing(&mut a_rx), expect_nothing(&mut b_rx));
            a.shutdown().await;
            b.shutdown().await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_cross_in_many_records_and_rekeying_keeps_the_stream_readable() {
    within(async {
        // Both rekey after every other record.
        let rekeying = TransportConfig { rekey_interval: 2, ..config() };
        let (a, mut a_rx) = node(1, rekeying.clone()).await;
        let (b, mut b_rx) = node(2, rekeying).await;
        a.add_peer(b.address(), b.local_addr());
        b.add_peer(a.address(), a.local_addr());
        let big = json!({ "n": 0, "pad": "z".repeat(200_000) });
        a.send(b.address(), 0, big.clone()).unwrap();
        assert_eq!(recv(&mut b_rx).await, (a.address(), 0, big));
        send_range(&a, b.address(), 1..=300);
        send_range(&b, a.address(), 1..=300);
        expect_ids(&mut b_rx, a.address(), 1..=300).await;
        expect_ids(&mut a_rx, b.address(), 1..=300).await;
        wait_until("acknowledged", || a.unacked(b.address()) == 0 && b.unacked(a.address()) == 0).await;

        // A raw client follows the node's REKEYs (every record here) and reads on.
        let (c, _c_rx) = node(3, TransportConfig { rekey_interval: 1, ..config() }).await;
        let x = key(9);
        let mut raw = Raw::authenticate(c.local_addr(), &x).await;
        for id in 1..=20 {
            c.send(x.address(), id, json!({ "n": id })).unwrap();
            assert_eq!(raw.msg().await, (id, id));
        }
        assert!(raw.rekeys >= 20, "rekeyed {} times", raw.rekeys);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_crosses_the_wire_in_plaintext() {
    within(async {
        let (a, _a_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        let (proxy, _, wire) = proxy(b.local_addr(), None).await;
        a.add_peer(b.address(), proxy);
        let secret = "amount-0x0de0b6b3a7640000-to-0xfeedface";
        a.send(b.address(), 1, json!({ "n": 1, "secret": secret })).unwrap();
        let (_, _, body) = recv(&mut b_rx).await;
        assert_eq!(body["secret"], secret);
        wait_until("acknowledged", || a.unacked(b.address()) == 0).await;
        let wire = wire.lock().unwrap().clone();
        assert!(wire.len() > 200, "the proxy saw the exchange");
        let contains = |needle: &[u8]| wire.windows(needle.len()).any(|w| w == needle);
        assert!(!contains(secret.as_bytes()), "the message body is encrypted");
        assert!(!contains(b"secret"), "the JSON keys are encrypted");
        assert!(!contains(a.address().as_slice()) && !contains(b.address().as_slice()), "the addresses are encrypted");
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// Attacks.

/// A third party M tells B "I am the hub" and tells the hub "I am B", passing each one's
/// binding to the other: neither accepts, nothing is delivered, and B reaches the hub as
/// soon as it dials the hub itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_between_two_honest_nodes_fails_to_authenticate() {
    within(async {
        let (hub, mut hub_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        let m = key(66);
        let relay = TcpListener::bind(loopback()).await.unwrap();
        // B believes the hub listens where M does.
        b.add_peer(hub.address(), relay.local_addr().unwrap());
        hub.add_peer(b.address(), b.local_addr());
        send_range(&b, hub.address(), [1, 2]);

        // M answers B's dial and learns B's binding (over the B–M handshake hash).
        let (stream, _) = relay.accept().await.unwrap();
        let mut to_b = Raw::noise(stream, false).await;
        let b_hello = match to_b.next().await {
            Some(RawFrame::Hello { address, signature, stream }) => {
                assert_eq!(address, b.address());
                hello_frame(address, &signature, stream)
            }
            other => panic!("expected B's HELLO, got {other:?}"),
        };

        // M dials the hub claiming to be B with B's binding: refused.
        let mut as_b = Raw::noise(TcpStream::connect(hub.local_addr()).await.unwrap(), true).await;
        as_b.send(&[&b_hello]).await;
        as_b.expect_closed().await;

        // M authenticates to the hub as itself to obtain the hub's binding (over the M–hub
        // hash), and passes it to B as the hub's: refused.
        let mut as_m = Raw::noise(TcpStream::connect(hub.local_addr()).await.unwrap(), true).await;
        let m_hello = as_m.hello(&m, 1);
        as_m.send(&[&m_hello]).await;
        let hub_hello = match as_m.next().await {
            Some(RawFrame::Hello { address, signature, stream }) => {
                assert_eq!(address, hub.address());
                hello_frame(address, &signature, stream)
            }
            other => panic!("expected the hub's HELLO, got {other:?}"),
        };
        to_b.send(&[&hub_hello]).await;
        to_b.expect_closed().await;

        // Nothing was delivered either way, and B's messages still wait for the hub.
        expect_nothing(&mut hub_rx).await;
        expect_nothing(&mut b_rx).await;
        assert_eq!(b.unacked(hub.address()), 2);

        // B learns the hub's real address: everything arrives.
        b.add_peer(hub.address(), hub.local_addr());
        expect_ids(&mut hub_rx, b.address(), [1, 2]).await;
        wait_until("acknowledged", || b.unacked(hub.address()) == 0).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_handshake_is_refused() {
    within(async {
        let (b, mut b_rx) = node(2, config()).await;
        let x = key(9);
        // An honest session, recorded: the two handshake messages of the initiator, its
        // HELLO and one message.
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        raw.send(&[&msg_frame(1, 1, &json!({ "n": 1 }))]).await;
        raw.ack_up_to(1).await;
        expect_ids(&mut b_rx, x.address(), [1]).await;
        let recorded = raw.sent.clone();
        assert_eq!(recorded.len(), 4);
        drop(raw);

        // Played again on a new connection: the node answers with a fresh ephemeral key, so
        // the recorded third message no longer decrypts.
        let mut replay = TcpStream::connect(b.local_addr()).await.unwrap();
        for message in &recorded {
            write_noise(&mut replay, message).await;
        }
        expect_eof(&mut replay).await;
        expect_nothing(&mut b_rx).await;

        // The HELLO of the recorded session in a new, honest handshake: its binding is over
        // the old handshake hash.
        let mut raw = Raw::noise(TcpStream::connect(b.local_addr()).await.unwrap(), true).await;
        let old_hello = {
            let mut old = Raw::noise(TcpStream::connect(b.local_addr()).await.unwrap(), true).await;
            let hello = old.hello(&x, 1);
            old.send(&[&hello]).await;
            old.node_hello().await;
            hello
        };
        raw.send(&[&old_hello]).await;
        raw.expect_closed().await;
        expect_nothing(&mut b_rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_out_of_window_ids_are_refused_without_moving_the_window() {
    within(async {
        let (a, _a_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        let x = key(9);
        let m = |seq: u64| msg_frame(seq, seq, &json!({ "n": seq }));

        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        raw.send(&[&m(1)]).await;
        raw.ack_up_to(1).await;
        expect_ids(&mut b_rx, x.address(), [1]).await;
        // A gap: refused, disconnected.
        raw.send(&[&m(3)]).await;
        raw.expect_closed().await;
        // Ids near 2^64, on a new connection of the same stream: refused too.
        for far in [u64::MAX, u64::MAX - 1, 1 << 63] {
            let mut raw = Raw::authenticate(b.local_addr(), &x).await;
            raw.send(&[&m(far)]).await;
            raw.expect_closed().await;
        }
        expect_nothing(&mut b_rx).await;
        // The window did not move: the real next message is delivered, earlier ones are
        // duplicates.
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        raw.send(&[&m(1), &m(2)]).await;
        raw.ack_up_to(2).await;
        expect_ids(&mut b_rx, x.address(), [2]).await;

        // An acknowledgement of a message B never sent: refused.
        raw.send(&[&ack_frame(1)]).await;
        raw.expect_closed().await;
        // And one of a message B did send, but beyond it.
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        b.send(x.address(), 70, json!({ "n": 70 })).unwrap();
        assert_eq!(raw.msg().await, (1, 70));
        raw.send(&[&ack_frame(2)]).await;
        raw.expect_closed().await;
        assert_eq!(b.unacked(x.address()), 1, "a forged acknowledgement releases nothing");

        // Honest peers are still served.
        a.add_peer(b.address(), b.local_addr());
        send_range(&a, b.address(), [1]);
        expect_ids(&mut b_rx, a.address(), [1]).await;
        expect_nothing(&mut b_rx).await;
    })
    .await;
}

/// Opens `count` TCP connections to `at` from `from` that never send a byte.
async fn half_open(from: &str, at: SocketAddr, count: usize) -> Vec<TcpStream> {
    let mut sockets = Vec::new();
    for _ in 0..count {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        sockets.push(socket.connect(at).await.unwrap());
    }
    sockets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_open_flood_does_not_lock_out_an_honest_peer() {
    within(async {
        // The handshake timeout is longer than the test: only eviction can make room.
        let victim = TransportConfig {
            handshake_timeout: Duration::from_secs(120),
            max_pending_handshakes: 16,
            max_pending_handshakes_per_ip: 4,
            ..config()
        };
        let (b, mut b_rx) = node(2, victim).await;
        // 300 idle sockets from another loopback address, and 40 from the honest peer's.
        let mut other = half_open("127.0.0.2", b.local_addr(), 300).await;
        let mut same = half_open("127.0.0.1", b.local_addr(), 40).await;

        let (a, _a_rx) = node(1, config()).await;
        a.add_peer(b.address(), b.local_addr());
        send_range(&a, b.address(), 1..=3);
        expect_ids(&mut b_rx, a.address(), 1..=3).await;
        wait_until("acknowledged", || a.unacked(b.address()) == 0).await;

        // The oldest idle sockets of each address were closed to make room.
        expect_eof(&mut other[0]).await;
        expect_eof(&mut same[0]).await;
        // The node keeps serving while the flood goes on.
        let _more = half_open("127.0.0.2", b.local_addr(), 100).await;
        send_range(&a, b.address(), [4]);
        expect_ids(&mut b_rx, a.address(), [4]).await;
        let x = key(9);
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        raw.send(&[&msg_frame(1, 1, &json!({ "n": 1 }))]).await;
        expect_ids(&mut b_rx, x.address(), [1]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_authenticated_connection_is_closed_after_the_timeout() {
    within(async {
        let idle = Duration::from_secs(1);
        let (b, mut b_rx) = node(2, TransportConfig { idle_timeout: idle, ..config() }).await;
        let x = key(9);

        // Authenticates, then says nothing: closed (the node's own keepalives do not count).
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        let mut pings = 0;
        while let Some(frame) = raw.next().await {
            assert_eq!(frame, RawFrame::Ping);
            pings += 1;
        }
        assert!(pings >= 1, "the node sent keepalives while it waited");

        // Keepalives from the peer keep it open past the timeout.
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        for _ in 0..25 {
            tokio::time::sleep(idle / 10).await;
            raw.send(&[&ping_frame()]).await;
        }
        raw.send(&[&msg_frame(1, 1, &json!({ "n": 1 }))]).await;
        raw.ack_up_to(1).await;
        expect_ids(&mut b_rx, x.address(), [1]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_hold_an_idle_link_between_two_nodes() {
    within(async {
        let idle = TransportConfig { idle_timeout: Duration::from_secs(2), ..config() };
        let (a, _a_rx) = node(1, idle.clone()).await;
        let (b, mut b_rx) = node(2, idle).await;
        let (proxy, connections, _) = proxy(b.local_addr(), None).await;
        a.add_peer(b.address(), proxy);
        send_range(&a, b.address(), [1]);
        expect_ids(&mut b_rx, a.address(), [1]).await;
        // Idle for well over two idle timeouts.
        tokio::time::sleep(Duration::from_secs(5)).await;
        send_range(&a, b.address(), [2]);
        expect_ids(&mut b_rx, a.address(), [2]).await;
        assert_eq!(connections.load(Ordering::SeqCst), 1, "the first connection stayed up");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_address_binding_is_refused() {
    within(async {
        let (a, _a_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        let (x, y) = (key(9), key(8));
        let connect = || async { Raw::noise(TcpStream::connect(b.local_addr()).await.unwrap(), true).await };

        // Claims X, signs with Y's key.
        let mut raw = connect().await;
        let signature = y.sign(&binding_hash(&raw.handshake_hash, &raw.own_static));
        raw.send(&[&hello_frame(x.address(), &signature, 1)]).await;
        raw.expect_closed().await;

        // Claims honest A's address, signed with its own key.
        let mut raw = connect().await;
        let signature = x.sign(&binding_hash(&raw.handshake_hash, &raw.own_static));
        raw.send(&[&hello_frame(a.address(), &signature, 1)]).await;
        raw.expect_closed().await;

        // Signs this handshake hash but another static key (the node's).
        let mut raw = connect().await;
        let signature = x.sign(&binding_hash(&raw.handshake_hash, &raw.remote_static));
        raw.send(&[&hello_frame(x.address(), &signature, 1)]).await;
        raw.expect_closed().await;

        // Signs its static key with another hash; signs the bare hash without the domain.
        let mut raw = connect().await;
        let signature = x.sign(&binding_hash(&[0; 32], &raw.own_static));
        raw.send(&[&hello_frame(x.address(), &signature, 1)]).await;
        raw.expect_closed().await;
        let mut raw = connect().await;
        let signature = x.sign(&B256::from(raw.handshake_hash));
        raw.send(&[&hello_frame(x.address(), &signature, 1)]).await;
        raw.expect_closed().await;

        // A malformed signature (v = 29).
        let mut raw = connect().await;
        let mut hello = raw.hello(&x, 1);
        hello[4 + 1 + 20 + 64] = 29;
        raw.send(&[&hello]).await;
        raw.expect_closed().await;

        // Claims B itself, with B's own valid binding.
        let mut raw = connect().await;
        let hello = raw.hello(&key(2), 1);
        raw.send(&[&hello]).await;
        raw.expect_closed().await;

        // A dials "B" and meets a listener that proves C: refused, nothing sent.
        let listener = TcpListener::bind(loopback()).await.unwrap();
        let fake = key(3);
        a.add_peer(key(4).address(), listener.local_addr().unwrap());
        send_range(&a, key(4).address(), [1]);
        let (stream, _) = listener.accept().await.unwrap();
        let mut raw = Raw::noise(stream, false).await;
        raw.node_hello().await;
        let hello = raw.hello(&fake, 1);
        raw.send(&[&hello]).await;
        raw.expect_closed().await;
        assert_eq!(a.unacked(key(4).address()), 1);

        // Honest peers are still served, and nothing else was delivered.
        a.add_peer(b.address(), b.local_addr());
        send_range(&a, b.address(), [1, 2]);
        expect_ids(&mut b_rx, a.address(), [1, 2]).await;
        expect_nothing(&mut b_rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dialing_a_node_with_another_key_is_refused() {
    within(async {
        let (a, _a_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        let (c, mut c_rx) = node(3, config()).await;
        // A thinks B listens where C does.
        a.add_peer(b.address(), c.local_addr());
        send_range(&a, b.address(), [1]);
        expect_nothing(&mut c_rx).await;
        assert_eq!(a.unacked(b.address()), 1);

        a.add_peer(b.address(), b.local_addr());
        expect_ids(&mut b_rx, a.address(), [1]).await;
        wait_until("acknowledged", || a.unacked(b.address()) == 0).await;
        expect_nothing(&mut c_rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_peers_beyond_the_budget_evict_the_one_idle_longest() {
    within(async {
        let (b, mut b_rx) = node(2, TransportConfig { max_unknown_peers: 2, ..config() }).await;
        let (x1, x2, x3, friend) = (key(31), key(32), key(33), key(34));
        b.allow_peer(friend.address());

        let mut raw1 = Raw::authenticate(b.local_addr(), &x1).await;
        raw1.send(&[&msg_frame(1, 1, &json!({ "n": 1 }))]).await;
        expect_ids(&mut b_rx, x1.address(), [1]).await;
        let mut raw2 = Raw::authenticate(b.local_addr(), &x2).await;
        raw2.send(&[&msg_frame(1, 2, &json!({ "n": 2 }))]).await;
        expect_ids(&mut b_rx, x2.address(), [2]).await;
        // An allowed peer does not count.
        let mut raw_friend = Raw::authenticate(b.local_addr(), &friend).await;
        // A third unknown key: the one idle longest (X1) goes.
        let mut raw3 = Raw::authenticate(b.local_addr(), &x3).await;
        raw1.expect_closed().await;
        raw2.send(&[&msg_frame(2, 22, &json!({ "n": 22 }))]).await;
        raw2.ack_up_to(2).await;
        raw3.send(&[&msg_frame(1, 3, &json!({ "n": 3 }))]).await;
        raw3.ack_up_to(1).await;
        raw_friend.send(&[&msg_frame(1, 4, &json!({ "n": 4 }))]).await;
        raw_friend.ack_up_to(1).await;
        let mut got: Vec<_> = Vec::new();
        for _ in 0..3 {
            got.push(recv(&mut b_rx).await.1);
        }
        got.sort_unstable();
        assert_eq!(got, [3, 4, 22]);
        assert!(matches!(b.send(x1.address(), 1, json!(1)), Err(TransportError::UnknownPeer(_))), "X1 is forgotten");

        // With no budget, unknown keys are refused before the node proves itself.
        let (c, mut c_rx) = node(3, TransportConfig { max_unknown_peers: 0, ..config() }).await;
        c.allow_peer(friend.address());
        let mut raw = Raw::noise(TcpStream::connect(c.local_addr()).await.unwrap(), true).await;
        let hello = raw.hello(&x1, 1);
        raw.send(&[&hello]).await;
        assert_eq!(raw.next().await, None, "no HELLO from the node, only the end of the connection");
        let mut raw = Raw::authenticate(c.local_addr(), &friend).await;
        raw.send(&[&msg_frame(1, 9, &json!({ "n": 9 }))]).await;
        expect_ids(&mut c_rx, friend.address(), [9]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_frames_are_refused() {
    within(async {
        let small = TransportConfig { max_frame_bytes: 1024, ..config() };
        let (a, _a_rx) = node(1, small.clone()).await;
        let (b, mut b_rx) = node(2, small).await;
        let x = key(9);

        // Before the handshake: a first Noise message of the largest size.
        let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
        write_noise(&mut raw, &vec![7u8; 65_535]).await;
        expect_eof(&mut raw).await;

        // After the handshake: a frame that announces more than the limit.
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        raw.send(&[&msg_frame(1, 1, &json!("x".repeat(2000)))[..100]]).await;
        raw.expect_closed().await;

        // Our own sends are checked against the limit too.
        a.add_peer(b.address(), b.local_addr());
        let refused = a.send(b.address(), 1, json!("x".repeat(2000)));
        assert!(matches!(refused, Err(TransportError::FrameTooLarge { limit: 1024, .. })), "{refused:?}");
        assert_eq!(a.unacked(b.address()), 0);

        send_range(&a, b.address(), [2]);
        expect_ids(&mut b_rx, a.address(), [2]).await;
        expect_nothing(&mut b_rx).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_refused() {
    within(async {
        let (a, _a_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        let x = key(9);

        // Before the handshake: not Noise, a wrong-size first message, an empty one.
        for bytes in [&b"GET / HTTP/1.1\r\n\r\n"[..], b"\x00\x05hello", b"\x00\x00"] {
            let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
            raw.write_all(bytes).await.unwrap();
            expect_eof(&mut raw).await;
        }
        // A handshake with another prologue (another protocol version) cannot complete.
        {
            let keys = snow::Builder::new(NOISE_PARAMS.parse().unwrap()).generate_keypair().unwrap();
            let mut handshake = snow::Builder::new(NOISE_PARAMS.parse().unwrap())
                .local_private_key(&keys.private)
                .unwrap()
                .prologue(b"nitro-transport-v1")
                .unwrap()
                .build_initiator()
                .unwrap();
            let mut stream = TcpStream::connect(b.local_addr()).await.unwrap();
            let mut buf = [0u8; 256];
            let len = handshake.write_message(&[], &mut buf).unwrap();
            write_noise(&mut stream, &buf[..len]).await;
            let reply = read_noise(&mut stream).await.unwrap();
            assert!(handshake.read_message(&reply, &mut buf).is_err(), "the prologues differ");
        }

        // After the handshake, before HELLO: a message.
        let mut raw = Raw::noise(TcpStream::connect(b.local_addr()).await.unwrap(), true).await;
        raw.send(&[&msg_frame(1, 1, &json!({ "n": 1 }))]).await;
        raw.expect_closed().await;

        // After HELLO: another HELLO, an unknown kind, an empty frame, a short one, a body
        // that is not JSON, a REKEY in the middle of a record.
        let bad: Vec<Vec<u8>> = vec![
            hello_frame(x.address(), &x.sign(&B256::ZERO), 1),
            frame(0x09, &[]),
            vec![0, 0, 0, 0],
            frame(0x03, &[1, 2, 3]),
            frame(0x02, b"\x00\x00\x00\x00\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x01{\"n\":"),
            [frame(0x05, &[]), ping_frame()].concat(),
        ];
        for frames in bad {
            let mut raw = Raw::authenticate(b.local_addr(), &x).await;
            raw.send(&[&frames]).await;
            raw.expect_closed().await;
        }
        // A record whose ciphertext was changed on the way.
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        let mut record = vec![0u8; 64];
        let len = raw.session.write_message(&ping_frame(), &mut record).unwrap();
        record[3] ^= 0x40;
        raw.send_noise(&record[..len]).await;
        raw.expect_closed().await;

        // An honest peer is still served; nothing of the garbage was delivered.
        a.add_peer(b.address(), b.local_addr());
        send_range(&a, b.address(), [1]);
        expect_ids(&mut b_rx, a.address(), [1]).await;
        expect_nothing(&mut b_rx).await;
        // And a well-behaved raw client too, its message split across three records.
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        let message = msg_frame(1, 1, &json!({ "n": 1 }));
        for part in message.chunks(10) {
            raw.send(&[part]).await;
        }
        raw.ack_up_to(1).await;
        expect_ids(&mut b_rx, x.address(), [1]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_its_oldest_and_shutdown_stops_sending() {
    within(async {
        let (a, _a_rx) = node(1, TransportConfig { queue_capacity: 4, ..config() }).await;
        let nobody = key(2).address();
        assert!(matches!(a.send(nobody, 1, json!(1)), Err(TransportError::UnknownPeer(p)) if p == nobody));
        assert_eq!(a.unacked(nobody), 0);

        let (_reserved, nowhere) = reserve_port();
        a.add_peer(nobody, nowhere);
        send_range(&a, nobody, 1..=4);
        // Full: the oldest goes, the newest is kept.
        a.send(nobody, 5, json!(5)).unwrap();
        a.send(nobody, 6, json!(6)).unwrap();
        assert_eq!((a.unacked(nobody), a.dropped(nobody)), (4, 2));
        // Queuing an id still queued again is a no-op; one that was dropped is a new message.
        a.send(nobody, 4, json!(4)).unwrap();
        assert_eq!((a.unacked(nobody), a.dropped(nobody)), (4, 2));
        a.send(nobody, 1, json!(1)).unwrap();
        assert_eq!((a.unacked(nobody), a.dropped(nobody)), (4, 3));

        let other = a.clone();
        a.shutdown().await;
        assert!(matches!(other.send(nobody, 7, json!(7)), Err(TransportError::Shutdown)));
    })
    .await;
}

#[tokio::test]
async fn invalid_configurations_are_refused() {
    let refused = Transport::bind(key(1), TransportConfig { queue_capacity: 0, ..config() }).await;
    assert!(matches!(refused, Err(TransportError::InvalidConfig(_))));
    let refused = Transport::bind(key(1), TransportConfig { initial_backoff: Duration::ZERO, ..config() }).await;
    assert!(matches!(refused, Err(TransportError::InvalidConfig(_))));
}

/// The worked example of `docs/wire-format.md` §7, recomputed.
#[test]
fn the_documented_example_holds() {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let a = SigningKey::from_bytes(&[0x01; 32]).unwrap();
    let b = SigningKey::from_bytes(&[0x02; 32]).unwrap();
    fn build<'a>(static_key: &'a [u8; 32], ephemeral: &'a [u8; 32]) -> snow::Builder<'a> {
        snow::Builder::new(NOISE_PARAMS.parse().unwrap())
            .local_private_key(static_key)
            .unwrap()
            .prologue(PROLOGUE)
            .unwrap()
            .fixed_ephemeral_key_for_testing_only(ephemeral)
    }
    let (a_static, a_ephemeral, b_static, b_ephemeral) = ([0x11u8; 32], [0x12u8; 32], [0x21u8; 32], [0x22u8; 32]);
    let mut i = build(&a_static, &a_ephemeral).build_initiator().unwrap();
    let mut r = build(&b_static, &b_ephemeral).build_responder().unwrap();
    let (mut buf, mut out) = ([0u8; 256], [0u8; 256]);
    let mut messages = Vec::new();
    for step in 0..3 {
        let (from, to) = if step % 2 == 0 { (&mut i, &mut r) } else { (&mut r, &mut i) };
        let len = from.write_message(&[], &mut buf).unwrap();
        to.read_message(&buf[..len], &mut out).unwrap();
        messages.push(buf[..len].to_vec());
    }
    let h: [u8; 32] = i.get_handshake_hash().try_into().unwrap();
    let a_pub: [u8; 32] = r.get_remote_static().unwrap().try_into().unwrap();
    let b_pub: [u8; 32] = i.get_remote_static().unwrap().try_into().unwrap();
    let a_binding = binding_hash(&h, &a_pub);
    let b_binding = binding_hash(&h, &b_pub);
    let a_sig = a.sign(&a_binding);
    let b_sig = b.sign(&b_binding);
    let a_hello = hello_frame(a.address(), &a_sig, 0x0a0a_0a0a_0a0a_0a0a);
    let b_hello = hello_frame(b.address(), &b_sig, 0x0b0b_0b0b_0b0b_0b0b);
    let mut i = i.into_transport_mode().unwrap();
    let mut r = r.into_transport_mode().unwrap();
    let mut record = [0u8; 256];
    let len = i.write_message(&a_hello, &mut record).unwrap();
    let a_record = record[..len].to_vec();
    let msg = msg_frame(1, 42, &json!({ "hello": "world" }));
    let ack = ack_frame(1);
    assert_eq!(a.address().to_checksum(None), "0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1");
    assert_eq!(b.address().to_checksum(None), "0x5050A4F4b3f9338C3472dcC01A87C76A144b3c9c");
    assert_eq!(hex(&a_pub), "7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13");
    assert_eq!(hex(&b_pub), "7d34a4815fa6b982535e60af3bd9b49556816080f1641ff81d2b7c8ae8268a44");
    assert_eq!(messages.iter().map(Vec::len).collect::<Vec<_>>(), [0x20, 0x60, 0x40]);
    assert_eq!(hex(&messages[0]), "052a50773ac8d91773f2dc9662e12f0defe915e415b8a1c8e20a5a3d6ab2b843");
    assert_eq!(
        hex(&messages[1]),
        "0faa684ed28867b97f4a6a2dee5df8ce974e76b7018e3f22a1c4cf2678570f20\
         81ec35d54e14957e69d45b70a95234b246787c8dec7191f8931632439792dee3\
         1d22f835db6a7ea044c400afccd95ca131de37f17524aee3ecf13ba9259fc33d"
    );
    assert_eq!(
        hex(&messages[2]),
        "fa2e257227721908e56c61a1bd3cead475408f32f88c7ac499bcb3176c5b6187\
         6e681bedee5e7f20f31d4f31278461c1860c08e75749c285792bdd6c4acfec0b"
    );
    assert_eq!(hex(&h), "5120fc050db9f02c0abf684227525fde570717f9ff99a307595c0e0c752b0cda");
    assert_eq!(hex(b"nitro-noise-binding-v1"), "6e6974726f2d6e6f6973652d62696e64696e672d7631");
    assert_eq!(a_binding.to_string(), "0x85d50277ad601d5ed8d777e6f57b2aaa1134d9193568ce5066b737c5717d3f8a");
    assert_eq!(b_binding.to_string(), "0x9fa0a406110439dbeb3a1a0f40f48a3375c6441e39c5f2604727a9c2a74d78cc");
    assert_eq!(
        hex(&a_hello),
        "0000005e01\
         1a642f0e3c3af545e7acbd38b07251b3990914f1\
         f4712dc1313908c412a8eaa3c604ae26f20b8d5fcdceeb95e663b8572beb6bee\
         7157b780bcd6e861f6c60fd61d680a3f00acbb17097fee5da8b3fc52d10b0d5c1c\
         0a0a0a0a0a0a0a0a"
    );
    assert!(hex(&b_sig.to_bytes()).starts_with("bf45cd4f") && hex(&b_sig.to_bytes()).ends_with("9e8b5521c"));
    assert_eq!(recover_signer(&b_binding, &b_sig).unwrap(), b.address());
    assert_eq!(b_hello.len(), 98);
    assert_eq!(a_record.len(), 0x72);
    assert_eq!(
        hex(&a_record),
        "9e201aca6ac87807070f03625395ba9dabaacea9aed1d09b7a9731b36d1c3646\
         5e2b0bd97314753ef47d04f2824aa354b155eee3abcb85beacae423657e0239b\
         348350654a6a54d7f701ea09d929d07314ac41244c647ef089a367f421094d30\
         c04afc56b896adcb1274e364a7b6fe1eb353"
    );
    assert_eq!(hex(&msg), "00000022020000000000000001000000000000002a7b2268656c6c6f223a22776f726c64227d");
    assert_eq!(hex(&ack), "00000009030000000000000001");
    let mut plain = [0u8; 256];
    let n = r.read_message(&a_record, &mut plain).unwrap();
    assert_eq!(&plain[..n], &a_hello[..]);
}
