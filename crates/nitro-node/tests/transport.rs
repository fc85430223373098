//! The peer transport over loopback TCP: ordered exchange, reconnection, resends and
//! deduplication, cut connections, restarts, refused handshakes and frames, full queues.
//!
//! The raw clients below speak the protocol from `docs/wire-format.md` byte by byte, so these
//! tests also check the document.

use std::collections::BTreeSet;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{keccak256, Address, B256};
use futures::{SinkExt, StreamExt};
use nitro_core::{json, recover_signer, Signature, SigningKey};
use nitro_node::transport::{Inbound, Transport, TransportConfig, TransportError};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// The bound on every test.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for something that should happen.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long to watch for something that should not happen.
const QUIET: Duration = Duration::from_millis(300);

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
        handshake_timeout: Duration::from_secs(2),
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

async fn recv(rx: &mut Receiver<Inbound>) -> (Address, u64, Value) {
    match timeout(PATIENCE, rx.recv()).await {
        Ok(Some(Inbound::Message { from, id, body })) => (from, id, body),
        Ok(None) => panic!("inbound channel closed"),
        Err(_) => panic!("no message within {PATIENCE:?}"),
    }
}

async fn expect_nothing(rx: &mut Receiver<Inbound>) {
    if let Ok(Some(message)) = timeout(QUIET, rx.recv()).await {
        panic!("unexpected delivery {message:?}");
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

/// What a node signs to prove `signer` to `verifier`, who chose `challenge`.
fn auth_hash(challenge: &[u8; 32], signer: Address, verifier: Address) -> B256 {
    let mut buf = b"nitro-transport-v1".to_vec();
    buf.extend_from_slice(challenge);
    buf.extend_from_slice(signer.as_slice());
    buf.extend_from_slice(verifier.as_slice());
    keccak256(buf)
}

/// A client that speaks the wire format by hand.
struct Raw {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
}

impl Raw {
    async fn connect(at: SocketAddr) -> Self {
        Self::over(TcpStream::connect(at).await.unwrap())
    }

    fn over(stream: TcpStream) -> Self {
        Self { framed: Framed::new(stream, LengthDelimitedCodec::new()) }
    }

    async fn send_bytes(&mut self, payload: &[u8]) {
        // The peer may already have closed the connection; that is what some tests expect.
        let _ = self.framed.send(Bytes::copy_from_slice(payload)).await;
    }

    async fn send(&mut self, frame: Value) {
        self.send_bytes(&serde_json::to_vec(&frame).unwrap()).await;
    }

    async fn recv(&mut self) -> Value {
        match timeout(PATIENCE, self.framed.next()).await {
            Ok(Some(Ok(bytes))) => serde_json::from_slice(&bytes).unwrap(),
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Reads (and ignores) frames until the node closes the connection.
    async fn expect_closed(&mut self) {
        let closed = timeout(PATIENCE, async {
            loop {
                match self.framed.next().await {
                    None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the node did not close the connection");
    }

    /// Sends `hello` claiming `claimed` and returns the node's `hello` (address, nonce).
    async fn hello(&mut self, claimed: Address, nonce: [u8; 32]) -> (Address, [u8; 32]) {
        self.send(json!({ "type": "hello", "version": 1, "address": claimed.to_checksum(None), "nonce": json::format_hex(&nonce) }))
            .await;
        let hello = self.recv().await;
        assert_eq!(hello["type"], "hello");
        assert_eq!(hello["version"], 1);
        let address = json::parse_address(hello["address"].as_str().unwrap()).unwrap();
        assert_eq!(hello["address"].as_str().unwrap(), address.to_checksum(None), "hello carries EIP-55");
        let nonce = json::decode_fixed::<32>(hello["nonce"].as_str().unwrap()).unwrap();
        (address, nonce)
    }

    /// A full honest handshake as `key` on a new connection to `at`.
    async fn authenticate(at: SocketAddr, key: &SigningKey) -> Self {
        Self::connect(at).await.handshake(key).await
    }

    /// A full honest handshake as `key` (dialing or dialed: both sides do the same); checks
    /// the node's proof too.
    async fn handshake(self, key: &SigningKey) -> Self {
        let mut raw = self;
        let our_nonce = [7u8; 32];
        let (node, their_nonce) = raw.hello(key.address(), our_nonce).await;
        let signature = key.sign(&auth_hash(&their_nonce, key.address(), node));
        raw.send(json!({ "type": "auth", "signature": json::format_hex(&signature.to_bytes()) })).await;
        let auth = raw.recv().await;
        assert_eq!(auth["type"], "auth");
        let bytes = json::decode_hex(auth["signature"].as_str().unwrap()).unwrap();
        let theirs = Signature::from_bytes(&bytes).unwrap();
        assert_eq!(recover_signer(&auth_hash(&our_nonce, node, key.address()), &theirs).unwrap(), node);
        raw
    }

    /// Receives the next `msg` and returns its id.
    async fn msg(&mut self) -> u64 {
        let frame = self.recv().await;
        assert_eq!(frame["type"], "msg", "{frame}");
        let id = frame["id"].as_u64().unwrap();
        assert_eq!(frame["body"], json!({ "n": id }));
        id
    }

    /// Receives the next `ack` and returns its id.
    async fn ack(&mut self) -> u64 {
        let frame = self.recv().await;
        assert_eq!(frame["type"], "ack", "{frame}");
        frame["id"].as_u64().unwrap()
    }
}

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
        // Ids with gaps, interleaved with the other direction.
        send_range(&a, b.address(), [1000, 1005, 2000]);
        b.send(a.address(), 3, json!({ "n": 3 })).unwrap();
        expect_ids(&mut b_rx, a.address(), [1000, 1005, 2000]).await;
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
        // Several dials fail meanwhile (backoff from 20 ms).
        tokio::time::sleep(Duration::from_millis(250)).await;
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

        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        for id in [5, 5, 5, 7, 5] {
            raw.send(json!({ "type": "msg", "id": id, "body": { "n": id } })).await;
        }
        let mut acks = Vec::new();
        for _ in 0..5 {
            acks.push(raw.ack().await);
        }
        acks.sort_unstable();
        assert_eq!(acks, [5, 5, 5, 5, 7], "every msg is acknowledged, duplicates too");
        expect_ids(&mut b_rx, x.address(), [5, 7]).await;
        expect_nothing(&mut b_rx).await;

        // A new connection of the same peer: what was delivered stays delivered.
        drop(raw);
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        for id in [5, 7, 8] {
            raw.send(json!({ "type": "msg", "id": id, "body": { "n": id } })).await;
            assert_eq!(raw.ack().await, id);
        }
        expect_ids(&mut b_rx, x.address(), [8]).await;
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
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(a.unacked(b.address()) >= 45, "B cannot have acknowledged what it could not deliver");

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
        let mut raw = Raw::over(listener.accept().await.unwrap().0).handshake(&b).await;
        assert_eq!([raw.msg().await, raw.msg().await, raw.msg().await], [1, 2, 3]);
        // Nothing acknowledged: after the ack timeout, they come again, oldest first.
        assert_eq!(raw.msg().await, 1);
        assert!(accepted.elapsed() >= Duration::from_millis(50), "resent after {:?}", accepted.elapsed());
        raw.send(json!({ "type": "ack", "id": 1 })).await;
        raw.send(json!({ "type": "ack", "id": 99 })).await; // unknown ids are ignored
        wait_until("1 acknowledged", || a.unacked(b.address()) == 2).await;

        // The connection drops: A redials and resends what is unacknowledged, in id order.
        drop(raw);
        send_range(&a, b.address(), [4]);
        let mut raw = Raw::over(listener.accept().await.unwrap().0).handshake(&b).await;
        assert_eq!([raw.msg().await, raw.msg().await, raw.msg().await], [2, 3, 4]);
        for id in [2, 3, 4] {
            raw.send(json!({ "type": "ack", "id": id })).await;
        }
        wait_until("all acknowledged", || a.unacked(b.address()) == 0).await;
    })
    .await;
}

/// A TCP proxy to `target` that cuts its first connection after `cut_after` bytes from the
/// client; later connections pass everything. Also returns the count of connections.
async fn cutting_proxy(target: SocketAddr, cut_after: usize) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind(loopback()).await.unwrap();
    let at = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = connections.clone();
    tokio::spawn(async move {
        let mut limit = Some(cut_after);
        while let Ok((client, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let Ok(server) = TcpStream::connect(target).await else { continue };
            tokio::spawn(pipe(client, server, limit.take()));
        }
    });
    (at, connections)
}

async fn pipe(client: TcpStream, server: TcpStream, limit: Option<usize>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut left = limit.unwrap_or(usize::MAX);
        let mut buf = vec![0u8; 4096];
        while left > 0 {
            let n = match client_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n.min(left),
            };
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
            left -= n;
        }
    };
    let down = tokio::io::copy(&mut server_read, &mut client_write);
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
        // The cut falls in the middle of a frame, after the handshake.
        let (proxy, connections) = cutting_proxy(b.local_addr(), 5_001).await;
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
        while let Ok(Inbound::Message { id, .. }) = b1_rx.try_recv() {
            first.push(id);
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
async fn bad_handshakes_are_refused_and_honest_peers_still_served() {
    within(async {
        let (a, _a_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        let (x, y) = (key(9), key(8));

        // Claims X, signs with Y's key.
        let mut raw = Raw::connect(b.local_addr()).await;
        let (node, nonce) = raw.hello(x.address(), [1; 32]).await;
        let signature = y.sign(&auth_hash(&nonce, x.address(), node));
        raw.send(json!({ "type": "auth", "signature": json::format_hex(&signature.to_bytes()) })).await;
        raw.expect_closed().await;

        // Claims honest A's address with its own key.
        let mut raw = Raw::connect(b.local_addr()).await;
        let (node, nonce) = raw.hello(a.address(), [2; 32]).await;
        let signature = y.sign(&auth_hash(&nonce, a.address(), node));
        raw.send(json!({ "type": "auth", "signature": json::format_hex(&signature.to_bytes()) })).await;
        raw.expect_closed().await;

        // Signs the right fields over the wrong challenge (its own nonce: a replay).
        let mut raw = Raw::connect(b.local_addr()).await;
        let (node, _) = raw.hello(x.address(), [3; 32]).await;
        let signature = x.sign(&auth_hash(&[3; 32], x.address(), node));
        raw.send(json!({ "type": "auth", "signature": json::format_hex(&signature.to_bytes()) })).await;
        raw.expect_closed().await;

        // Not a signature at all; a wrong version; a malformed address.
        let mut raw = Raw::connect(b.local_addr()).await;
        raw.hello(x.address(), [4; 32]).await;
        raw.send(json!({ "type": "auth", "signature": "0x1234" })).await;
        raw.expect_closed().await;
        let mut raw = Raw::connect(b.local_addr()).await;
        raw.send(json!({ "type": "hello", "version": 2, "address": x.address().to_checksum(None), "nonce": json::format_hex(&[5; 32]) })).await;
        raw.expect_closed().await;
        let mut raw = Raw::connect(b.local_addr()).await;
        raw.send(json!({ "type": "hello", "version": 1, "address": "0x1234", "nonce": json::format_hex(&[5; 32]) }))
            .await;
        raw.expect_closed().await;
        // Claims B itself.
        let mut raw = Raw::connect(b.local_addr()).await;
        raw.send(json!({ "type": "hello", "version": 1, "address": b.address().to_checksum(None), "nonce": json::format_hex(&[6; 32]) })).await;
        raw.expect_closed().await;

        // The honest peer is still served, and nothing else was delivered.
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
async fn oversized_frames_are_refused() {
    within(async {
        let small = TransportConfig { max_frame_bytes: 1024, ..config() };
        let (a, _a_rx) = node(1, small.clone()).await;
        let (b, mut b_rx) = node(2, small).await;
        let x = key(9);

        // Before the handshake: only the length prefix, announcing 2000 bytes.
        let mut raw = TcpStream::connect(b.local_addr()).await.unwrap();
        raw.write_all(&2000u32.to_be_bytes()).await.unwrap();
        let mut sink = Vec::new();
        let closed = timeout(PATIENCE, raw.read_to_end(&mut sink)).await;
        assert!(closed.is_ok(), "the node did not close the connection");

        // After the handshake: a whole msg frame over the limit.
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        raw.send(json!({ "type": "msg", "id": 1, "body": "x".repeat(2000) })).await;
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
async fn garbage_frames_are_refused() {
    within(async {
        let (a, _a_rx) = node(1, config()).await;
        let (b, mut b_rx) = node(2, config()).await;
        let x = key(9);
        let hello = json!({ "type": "hello", "version": 1, "address": x.address().to_checksum(None), "nonce": json::format_hex(&[1; 32]) });

        // Before the handshake.
        let payloads: Vec<Vec<u8>> = vec![
            b"hello world".to_vec(),
            vec![0xff, 0xfe, 0x00],
            b"[]".to_vec(),
            br#"["hello", 1, "0x0000000000000000000000000000000000000000", "0x00"]"#.to_vec(),
            b"{}".to_vec(),
            br#"{"type":"ping"}"#.to_vec(),
            br#"{"type":"msg","id":1,"body":{"n":1}}"#.to_vec(),
            br#"{"type":"ack","id":1}"#.to_vec(),
            br#"{"type":"auth","signature":"0x00"}"#.to_vec(),
            Vec::new(),
        ];
        for payload in payloads {
            let mut raw = Raw::connect(b.local_addr()).await;
            raw.send_bytes(&payload).await;
            raw.expect_closed().await;
        }

        // After hello, before auth.
        let mut raw = Raw::connect(b.local_addr()).await;
        raw.send(hello.clone()).await;
        raw.send(json!({ "type": "msg", "id": 1, "body": { "n": 1 } })).await;
        raw.expect_closed().await;

        // After the handshake: another hello, an unknown type, a bad id, not JSON.
        for frame in [
            hello.clone(),
            json!({ "type": "ping" }),
            json!({ "type": "msg", "id": -1, "body": 1 }),
            json!({ "type": "msg", "id": 1 }),
            json!({ "type": "ack", "id": "one" }),
            json!(["ack", 1]),
        ] {
            let mut raw = Raw::authenticate(b.local_addr(), &x).await;
            raw.send(frame).await;
            raw.expect_closed().await;
        }
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        raw.send_bytes(b"{\"type\":\"msg\",").await;
        raw.expect_closed().await;

        // An honest peer is still served; nothing of the garbage was delivered.
        a.add_peer(b.address(), b.local_addr());
        send_range(&a, b.address(), [1]);
        expect_ids(&mut b_rx, a.address(), [1]).await;
        expect_nothing(&mut b_rx).await;
        // And a well-behaved raw client too.
        let mut raw = Raw::authenticate(b.local_addr(), &x).await;
        raw.send(json!({ "type": "msg", "id": 1, "body": { "n": 1 } })).await;
        assert_eq!(raw.ack().await, 1);
        expect_ids(&mut b_rx, x.address(), [1]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_more_and_shutdown_stops_sending() {
    within(async {
        let (a, _a_rx) = node(1, TransportConfig { queue_capacity: 4, ..config() }).await;
        let nobody = key(2).address();
        assert!(matches!(a.send(nobody, 1, json!(1)), Err(TransportError::UnknownPeer(p)) if p == nobody));
        assert_eq!(a.unacked(nobody), 0);

        let (_reserved, nowhere) = reserve_port();
        a.add_peer(nobody, nowhere);
        send_range(&a, nobody, 1..=4);
        let refused = a.send(nobody, 5, json!(5));
        assert!(
            matches!(refused, Err(TransportError::QueueFull { peer, capacity: 4 }) if peer == nobody),
            "{refused:?}"
        );
        // Queuing an id again is a no-op, not an error.
        a.send(nobody, 4, json!(4)).unwrap();
        assert_eq!(a.unacked(nobody), 4);

        let other = a.clone();
        a.shutdown().await;
        assert!(matches!(other.send(nobody, 6, json!(6)), Err(TransportError::Shutdown)));
    })
    .await;
}

/// The example of `docs/wire-format.md`, section 7.
#[test]
fn the_documented_example_holds() {
    let a = SigningKey::from_bytes(&[0x01; 32]).unwrap();
    let b = SigningKey::from_bytes(&[0x02; 32]).unwrap();
    assert_eq!(a.address().to_checksum(None), "0x1a642f0E3c3aF545E7AcBD38b07251B3990914F1");
    assert_eq!(b.address().to_checksum(None), "0x5050A4F4b3f9338C3472dcC01A87C76A144b3c9c");
    let hello = json!({ "type": "hello", "version": 1, "address": a.address().to_checksum(None), "nonce": json::format_hex(&[0xaa; 32]) });
    assert_eq!(serde_json::to_vec(&hello).unwrap().len(), 0xa0);

    let a_signs = auth_hash(&[0xbb; 32], a.address(), b.address());
    let b_signs = auth_hash(&[0xaa; 32], b.address(), a.address());
    assert_eq!(a_signs.to_string(), "0xb2b5279b9bca271be9a388c7491d1baf4135628dc850d954b291c27d5b8c12eb");
    assert_eq!(b_signs.to_string(), "0xfe962190bdeaa0a8214b979679cdb7e25747ea7515b6513e871d5425d82e128e");
    let a_signature = "0xf4bc84cce065dde4d8082b9db672113067279c821c07f06b00a68a231a220be24758db470e6c92f644602a82eda0ffe4ea4476e9e737919294b63a6b9a7706801b";
    let b_signature = "0x4dd4ce0303f802316f6e13306e9f4be483d833246466b7cfc11e43f89eef3ea66cb8fdfad92cac251670d7fc536ee8b0ff5cc96651ed468a7206305b0cf7c79e1c";
    assert_eq!(json::format_hex(&a.sign(&a_signs).to_bytes()), a_signature);
    assert_eq!(json::format_hex(&b.sign(&b_signs).to_bytes()), b_signature);
    let parsed = Signature::from_bytes(&json::decode_hex(a_signature).unwrap()).unwrap();
    assert_eq!(recover_signer(&a_signs, &parsed).unwrap(), a.address());

    assert_eq!(br#"{"type":"msg","id":42,"body":{"hello":"world"}}"#.len(), 0x2f);
    assert_eq!(br#"{"type":"ack","id":42}"#.len(), 0x16);
}

#[tokio::test]
async fn invalid_configurations_are_refused() {
    let refused = Transport::bind(key(1), TransportConfig { queue_capacity: 0, ..config() }).await;
    assert!(matches!(refused, Err(TransportError::InvalidConfig(_))));
    let refused = Transport::bind(key(1), TransportConfig { initial_backoff: Duration::ZERO, ..config() }).await;
    assert!(matches!(refused, Err(TransportError::InvalidConfig(_))));
}
