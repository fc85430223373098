//! The peer transport over loopback: messages per second one way, and the round-trip time of
//! one message and its answer, between two transports in one process (real TCP sockets).
//!
//! In the same run it measures the cryptographic floor of each workload: sealing and opening
//! the message's bytes with ChaCha20-Poly1305 through `snow`, in 64 KiB records, as the
//! transport must.
//!
//! `cargo bench -p nitro-node --bench transport` prints one line per workload, then one JSON
//! object on the last line. Options (after `--`): `--messages N` (per throughput run, default
//! 50,000), `--round-trips N` (default 2,000), `--repeat N` (best of N, default 3).

use std::time::{Duration, Instant};

use nitro_core::SigningKey;
use nitro_node::transport::{Inbound, Transport, TransportConfig};
use serde_json::{json, Value};
use tokio::sync::mpsc::Receiver;

/// How long any one wait may take before the bench gives up.
const PATIENCE: Duration = Duration::from_secs(120);

struct Options {
    messages: usize,
    round_trips: usize,
    repeat: usize,
}

fn options() -> Options {
    let mut options = Options { messages: 50_000, round_trips: 2_000, repeat: 3 };
    let args: Vec<String> = std::env::args().collect();
    let mut i = 1;
    while i < args.len() {
        let value = args.get(i + 1).and_then(|v| v.parse::<usize>().ok()).filter(|v| *v > 0);
        match (args[i].as_str(), value) {
            ("--messages", Some(v)) => options.messages = v,
            ("--round-trips", Some(v)) => options.round_trips = v,
            ("--repeat", Some(v)) => options.repeat = v,
            _ => {
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    options
}

fn key(n: u8) -> SigningKey {
    let mut bytes = [0x42u8; 32];
    bytes[31] = n;
    SigningKey::from_bytes(&bytes).expect("a valid key")
}

async fn pair(queue: usize) -> ((Transport, Receiver<Inbound>), (Transport, Receiver<Inbound>)) {
    let config = TransportConfig { queue_capacity: queue, ..TransportConfig::default() };
    let a = Transport::bind(key(1), config.clone()).await.expect("bind a");
    let b = Transport::bind(key(2), config).await.expect("bind b");
    a.0.add_peer(b.0.address(), b.0.local_addr());
    b.0.add_peer(a.0.address(), a.0.local_addr());
    (a, b)
}

fn body(bytes: usize) -> Value {
    json!({ "type": "bench", "pad": "x".repeat(bytes) })
}

/// The next message (sessions being established are skipped).
async fn recv(rx: &mut Receiver<Inbound>) -> Inbound {
    loop {
        let inbound =
            tokio::time::timeout(PATIENCE, rx.recv()).await.expect("no message in time").expect("inbound closed");
        if let Inbound::Message { .. } = inbound {
            return inbound;
        }
    }
}

/// Sends `n` messages of `bytes` from A to B as fast as the queue takes them; the time until
/// B has received the last one.
async fn throughput(n: usize, bytes: usize) -> Duration {
    let window = 4096;
    let ((a, _a_rx), (b, mut b_rx)) = pair(window).await;
    // One warm-up message: the connection and its handshake are not measured.
    a.send(b.address(), 0, body(bytes)).expect("send");
    recv(&mut b_rx).await;
    let to = b.address();
    let payload = body(bytes);
    let start = Instant::now();
    let sender = a.clone();
    let sending = tokio::spawn(async move {
        let mut next = 1u64;
        while next <= n as u64 {
            // A full queue drops its oldest message: wait for room instead.
            if sender.unacked(to) >= window {
                tokio::task::yield_now().await;
                continue;
            }
            sender.send(to, next, payload.clone()).expect("send");
            next += 1;
        }
    });
    for _ in 0..n {
        recv(&mut b_rx).await;
    }
    let elapsed = start.elapsed();
    sending.await.expect("sender");
    a.shutdown().await;
    b.shutdown().await;
    elapsed
}

/// `n` round trips of a message of `bytes` from A to B and B's answer; the sorted times.
async fn round_trips(n: usize, bytes: usize) -> Vec<Duration> {
    let ((a, mut a_rx), (b, mut b_rx)) = pair(64).await;
    let echo = b.clone();
    let to = a.address();
    let echoing = tokio::spawn(async move {
        while let Some(inbound) = b_rx.recv().await {
            if let Inbound::Message { id, body, .. } = inbound {
                if echo.send(to, id, body).is_err() {
                    return;
                }
            }
        }
    });
    let payload = body(bytes);
    let mut times = Vec::with_capacity(n);
    for id in 0..=n as u64 {
        let start = Instant::now();
        a.send(b.address(), id, payload.clone()).expect("send");
        recv(&mut a_rx).await;
        // The first one includes the connection and handshake.
        if id > 0 {
            times.push(start.elapsed());
        }
    }
    a.shutdown().await;
    b.shutdown().await;
    echoing.abort();
    times.sort_unstable();
    times
}

/// The time to seal and open `n` messages of `bytes` with a Noise session in memory, in
/// records of at most 65,535 bytes: what encryption cannot avoid.
fn crypto_floor(n: usize, bytes: usize) -> Duration {
    let params: snow::params::NoiseParams = "Noise_XX_25519_ChaChaPoly_BLAKE2s".parse().expect("params");
    let keys = |_| snow::Builder::new(params.clone()).generate_keypair().expect("keypair");
    let (a, b) = (keys(0), keys(1));
    let mut i = snow::Builder::new(params.clone())
        .local_private_key(&a.private)
        .expect("key")
        .build_initiator()
        .expect("initiator");
    let mut r = snow::Builder::new(params.clone())
        .local_private_key(&b.private)
        .expect("key")
        .build_responder()
        .expect("responder");
    let (mut buf, mut out) = (vec![0u8; 65_535], vec![0u8; 65_535]);
    let len = i.write_message(&[], &mut buf).expect("msg 1");
    r.read_message(&buf[..len], &mut out).expect("msg 1");
    let len = r.write_message(&[], &mut buf).expect("msg 2");
    i.read_message(&buf[..len], &mut out).expect("msg 2");
    let len = i.write_message(&[], &mut buf).expect("msg 3");
    r.read_message(&buf[..len], &mut out).expect("msg 3");
    let (mut sender, mut receiver) = (i.into_transport_mode().expect("i"), r.into_transport_mode().expect("r"));
    let message = vec![b'x'; bytes];
    let start = Instant::now();
    for _ in 0..n {
        for chunk in message.chunks(65_535 - 16) {
            let len = sender.write_message(chunk, &mut buf).expect("seal");
            receiver.read_message(&buf[..len], &mut out).expect("open");
        }
    }
    start.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn us(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e7).round() / 10.0
}

fn main() {
    let options = options();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let mut results = serde_json::Map::new();
    runtime.block_on(async {
        for (name, bytes, messages) in
            [("small", 64, options.messages), ("1k", 1024, options.messages), ("64k", 65536, options.messages / 50)]
        {
            let messages = messages.max(1);
            let mut best = Duration::MAX;
            for _ in 0..options.repeat {
                best = best.min(throughput(messages, bytes).await);
            }
            let rate = messages as f64 / best.as_secs_f64();
            let floor = (0..options.repeat).map(|_| crypto_floor(messages, bytes)).min().unwrap_or_default();
            let floor_us = floor.as_secs_f64() * 1e6 / messages as f64;
            println!(
                "throughput {name}: {messages} messages of {bytes} B in {best:?}: {rate:.0} messages/s; \
                 seal + open alone: {floor_us:.2} µs per message"
            );
            results.insert(format!("{name}_messages_per_s"), json!(rate.round()));
            results.insert(format!("{name}_crypto_floor_us"), json!((floor_us * 100.0).round() / 100.0));
        }
        let times = round_trips(options.round_trips, 256).await;
        let (p50, p99) = (percentile(&times, 0.5), percentile(&times, 0.99));
        println!("round trip of 256 B: p50 {p50:?}, p99 {p99:?} over {} round trips", times.len());
        results.insert("rtt_p50_us".into(), json!(us(p50)));
        results.insert("rtt_p99_us".into(), json!(us(p99)));
    });
    results.insert("bench".into(), json!("transport"));
    println!("{}", Value::Object(results));
}
