//! What the transport tells the engine about sessions (ADR-0021), and its bounded queue with
//! a live connection: a new session is announced ([`Inbound::Connected`]) before its
//! messages, again after the peer restarts; a queue that overflows on a connection drops its
//! oldest message, closes the connection and starts a new stream, which the receiver takes up
//! without a gap, in order, as a new session.

use std::net::SocketAddr;
use std::time::Duration;

use alloy_primitives::Address;
use nitro_core::SigningKey;
use nitro_node::transport::{Inbound, Transport, TransportConfig};
use serde_json::json;
use tokio::sync::mpsc::Receiver;
use tokio::time::timeout;

const TEST_TIMEOUT: Duration = Duration::from_secs(60);
const PATIENCE: Duration = Duration::from_secs(15);

fn key(n: u8) -> SigningKey {
    let mut bytes = [0x43u8; 32];
    bytes[31] = n;
    SigningKey::from_bytes(&bytes).unwrap()
}

fn config(listen: SocketAddr) -> TransportConfig {
    TransportConfig {
        initial_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(200),
        ack_timeout: Duration::from_millis(300),
        ..TransportConfig::new(listen)
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn next(rx: &mut Receiver<Inbound>) -> Inbound {
    match timeout(PATIENCE, rx.recv()).await {
        Ok(Some(inbound)) => inbound,
        Ok(None) => panic!("inbound channel closed"),
        Err(_) => panic!("nothing within {PATIENCE:?}"),
    }
}

fn connected(from: Address) -> Inbound {
    Inbound::Connected { peer: from }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_announced_before_its_messages_and_again_after_a_restart() {
    timeout(TEST_TIMEOUT, async {
        let (a, mut a_rx) = Transport::bind(key(1), config(loopback())).await.unwrap();
        let (b1, mut b1_rx) = Transport::bind(key(2), config(loopback())).await.unwrap();
        let at = b1.local_addr();
        a.add_peer(b1.address(), at);
        a.send(b1.address(), 1, json!(1)).unwrap();
        // Both ends learn of the session; the receiver before the message.
        assert_eq!(next(&mut b1_rx).await, connected(a.address()));
        assert_eq!(next(&mut b1_rx).await, Inbound::Message { from: a.address(), id: 1, body: json!(1) });
        assert_eq!(next(&mut a_rx).await, connected(b1.address()));
        // More traffic on the same session announces nothing more.
        a.send(b1.address(), 2, json!(2)).unwrap();
        assert_eq!(next(&mut b1_rx).await, Inbound::Message { from: a.address(), id: 2, body: json!(2) });
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while a.unacked(b1.address()) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "still unacknowledged");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        b1.shutdown().await;

        // B restarts (a new stream): a new session for both, whoever dials.
        let (b2, mut b2_rx) = Transport::bind(key(2), config(at)).await.unwrap();
        a.send(b2.address(), 3, json!(3)).unwrap();
        assert_eq!(next(&mut b2_rx).await, connected(a.address()));
        assert_eq!(next(&mut b2_rx).await, Inbound::Message { from: a.address(), id: 3, body: json!(3) });
        assert_eq!(next(&mut a_rx).await, connected(b2.address()));
        assert!(a_rx.try_recv().is_err(), "one announcement per session");
    })
    .await
    .expect("test timed out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overflow_on_a_live_connection_starts_a_new_stream_without_a_gap() {
    timeout(TEST_TIMEOUT, async {
        let (a, _a_rx) =
            Transport::bind(key(1), TransportConfig { queue_capacity: 4, ..config(loopback()) }).await.unwrap();
        // B takes one message at a time into its engine queue and does not read it yet: it
        // stops acknowledging, and A's queue fills up on a live connection.
        let (b, mut b_rx) =
            Transport::bind(key(2), TransportConfig { queue_capacity: 1, ..config(loopback()) }).await.unwrap();
        a.add_peer(b.address(), b.local_addr());
        a.send(b.address(), 1, json!(1)).unwrap();
        assert_eq!(next(&mut b_rx).await, connected(a.address()));
        // Message 1 sits in B's engine queue, acknowledged: the session is up on both ends.
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while a.unacked(b.address()) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "still unacknowledged");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        for id in 2..=10 {
            a.send(b.address(), id, json!(id)).unwrap();
        }
        assert!(a.unacked(b.address()) <= 4, "bounded");
        assert!(a.dropped(b.address()) >= 5, "the oldest went: {}", a.dropped(b.address()));

        // B reads everything: what arrives is in order, without duplicates, ends with the
        // newest message, misses exactly what A dropped, and comes on a new session.
        let mut ids = Vec::new();
        let mut sessions = 1;
        while ids.last() != Some(&10) {
            match next(&mut b_rx).await {
                Inbound::Message { from, id, .. } => {
                    assert_eq!(from, a.address());
                    ids.push(id);
                }
                Inbound::Connected { peer } => {
                    assert_eq!(peer, a.address());
                    sessions += 1;
                }
            }
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "in order, once: {ids:?}");
        // Whatever B lacks, A dropped (A may also have dropped what B had taken but not yet
        // acknowledged).
        assert!(ids.len() as u64 + a.dropped(b.address()) >= 10, "{ids:?}");
        assert!(ids.len() < 10, "something was dropped: {ids:?}");
        assert!(sessions >= 2, "the overflow closed the connection; a new session carried the rest");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while a.unacked(b.address()) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "still unacknowledged");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("test timed out");
}
