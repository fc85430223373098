//! A long partition, measured: three real nodes (`node::run`, real transport on loopback,
//! anvil), Alice paying Bob through a hub. Bob's node goes away for a long stretch while
//! Alice's keeps ticking and her API keeps paying him (each payment a voucher for Bob). Her
//! transport queue for Bob fills up to its bound and stays there (the oldest voucher dropped
//! for each new one), her store stays flat (the state in place, the outbox pruned), and when
//! Bob comes back from his store he holds the latest voucher and closes the channel with
//! every payment.

mod common;

use std::path::Path;
use std::time::Instant;

use common::{metric, Net, NodeHandle};
use nitro_node::metrics;
use serde_json::{json, Value};

/// The transport's per-peer bound in this test (`peer_queue_capacity`).
const QUEUE: u64 = 256;
/// Payments made while Bob is away (`NITRO_PARTITION_PAYMENTS` for a longer run; the
/// figures in docs/RELIABILITY.md come from one).
const PAYMENTS: u64 = 2_000;
/// Samples of the figures taken during the partition.
const SAMPLES: u64 = 8;
/// Outbox rows kept per peer after a pruning, and steps between prunings (the engine's).
const OUTBOX_KEPT: u64 = 512;
const PRUNE_EVERY: u64 = 1_000;

/// Rows per table of a node's store, read through a read-only connection.
fn rows(db: &Path) -> Vec<(String, u64)> {
    let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    tables.sort();
    tables
        .into_iter()
        .map(|t| {
            let n: i64 = conn.query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get(0)).unwrap();
            (t, n as u64)
        })
        .collect()
}

fn count(rows: &[(String, u64)], table: &str) -> u64 {
    rows.iter().find(|(t, _)| t == table).map_or(0, |(_, n)| *n)
}

/// The figures at one moment of the partition.
struct Sample {
    payments: u64,
    elapsed: std::time::Duration,
    /// Alice's unacknowledged messages (her queue for Bob: the hub's is empty).
    unacked: u64,
    dropped: u64,
    rows: Vec<(String, u64)>,
    rss: Option<u64>,
}

impl Sample {
    fn all_rows(&self) -> u64 {
        self.rows.iter().map(|(_, c)| c).sum()
    }
}

async fn sample(alice: &NodeHandle, db: &Path, payments: u64, elapsed: std::time::Duration) -> Sample {
    let text = metrics_text(alice).await;
    let unacked = metric(&text, metrics::PEER_UNACKED).unwrap_or(-1.0) as u64;
    let dropped = metric(&text, metrics::PEER_DROPPED).unwrap_or(-1.0) as u64;
    Sample { payments, elapsed, unacked, dropped, rows: rows(db), rss: rss_kib() }
}

/// The resident set of this process (the three nodes and the test), in KiB, where Linux
/// tells it.
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse().ok())
}

async fn metrics_text(node: &NodeHandle) -> String {
    let (status, body) = common::get(node.api, "/metrics").await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).into_owned()
}

async fn wait_done(node: &NodeHandle, id: &Value) {
    let client = node.client();
    let waited = client.call("objectives_wait", json!({ "objective_ids": [id], "timeout_ms": 90_000 })).await.unwrap();
    assert_eq!(waited["done"], json!([id]), "{waited}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_partition_keeps_the_queue_at_its_bound_and_the_store_flat() {
    let net = Net::start().await;
    let extra = format!("peer_queue_capacity = {QUEUE}\n");
    // Alice (1) and Bob (3) each have a ledger with the hub (2); Alice also knows Bob, to
    // send him vouchers.
    let alice = NodeHandle::start_with(&net, 1, &[2, 3], false, &extra).await;
    let hub = NodeHandle::start_with(&net, 2, &[1, 3], false, &extra).await;
    let mut bob = NodeHandle::start_with(&net, 3, &[2, 1], false, &extra).await;
    for node in [&alice, &hub, &bob] {
        node.wait_health(200).await;
    }
    let deposit = 1_000_000_000_000u64;
    let open = |node: &NodeHandle| {
        let client = node.client();
        let hub = hub.address.to_string();
        async move {
            let params = json!({ "counterparty": hub, "my_amount": deposit.to_string(), "counterparty_amount": deposit.to_string() });
            client.call("ledger_open", params).await.unwrap()
        }
    };
    let (la, lb) = (open(&alice).await, open(&bob).await);
    wait_done(&alice, &la["objective_id"]).await;
    wait_done(&bob, &lb["objective_id"]).await;
    let params = json!({ "counterparty": bob.address.to_string(), "hub": hub.address.to_string(), "amount": deposit.to_string(), "counterparty_amount": "0" });
    let v = alice.client().call("virtual_fund", params).await.unwrap();
    wait_done(&alice, &v["objective_id"]).await;
    wait_done(&bob, &v["objective_id"]).await;
    let channel = v["channel_id"].clone();
    let pay = json!({ "channel_id": channel, "amount": "1" });
    alice.client().call("virtual_pay", pay.clone()).await.unwrap();

    // Bob goes away; Alice keeps paying him.
    bob.halt().await;
    let payments = std::env::var("NITRO_PARTITION_PAYMENTS").ok().and_then(|n| n.parse().ok()).unwrap_or(PAYMENTS);
    assert!(payments > PRUNE_EVERY + QUEUE, "long enough to fill the queue and prune the outbox");
    let db = alice.dir.path().join("node.db");
    let client = alice.client();
    let start = Instant::now();
    let mut samples = Vec::new();
    for n in 1..=payments {
        let paid = client.call("virtual_pay", pay.clone()).await.unwrap();
        assert_eq!(paid["paid"], json!((n + 1).to_string()), "{paid}");
        if n % (payments / SAMPLES) == 0 {
            samples.push(sample(&alice, &db, n, start.elapsed()).await);
        }
    }
    // The gauges are refreshed once a second: wait for the final figures.
    alice.wait_metric(metrics::PEER_DROPPED, |d| d as u64 >= payments - QUEUE).await;
    samples.push(sample(&alice, &db, payments, start.elapsed()).await);

    eprintln!("payments  elapsed  queue(unacked)  dropped  state  outbox  all rows  rss KiB");
    for s in &samples {
        eprintln!(
            "{:>8}  {:>6.1}s  {:>14}  {:>7}  {:>5}  {:>6}  {:>8}  {}",
            s.payments,
            s.elapsed.as_secs_f64(),
            s.unacked,
            s.dropped,
            count(&s.rows, "state"),
            count(&s.rows, "outbox"),
            s.all_rows(),
            s.rss.map_or("-".into(), |r| r.to_string())
        );
    }
    // The queue never exceeds its bound, and stays at it once reached (the metric lags by up
    // to a second).
    let queue: Vec<u64> = samples.iter().map(|s| s.unacked).collect();
    assert!(queue.iter().all(|q| *q <= QUEUE), "over the bound: {queue:?}");
    let full = queue.iter().position(|q| *q == QUEUE).expect("the queue reached its bound");
    assert!(queue[full..].iter().all(|q| *q == QUEUE), "{queue:?}");
    assert_eq!(samples.last().map(|s| s.unacked), Some(QUEUE));
    // The state is written in place: its rows never grow (a finished objective may leave it
    // for the archive); the outbox is pruned.
    let state = count(&samples[0].rows, "state");
    assert!(samples.iter().all(|s| count(&s.rows, "state") <= state), "the state grew");
    let outbox_bound = 2 * OUTBOX_KEPT + PRUNE_EVERY;
    assert!(samples.iter().all(|s| count(&s.rows, "outbox") <= outbox_bound), "the outbox grew past {outbox_bound}");
    assert!(
        samples.windows(2).any(|w| count(&w[1].rows, "outbox") < count(&w[0].rows, "outbox")),
        "the outbox was pruned during the partition"
    );
    let first = samples[0].all_rows();
    assert!(samples.iter().all(|s| s.all_rows() <= first + PRUNE_EVERY + OUTBOX_KEPT));

    // Bob comes back from his store: Alice's queue drains and the resyncs run; Bob holds the
    // latest voucher, and closes the channel with every payment in it.
    bob.resume();
    bob.wait_health(200).await;
    alice.wait_metric(metrics::PEER_UNACKED, |u| u == 0.0).await;
    let total = json!((payments + 1).to_string());
    let waited = Instant::now();
    loop {
        let v = bob.client().call("virtual_get", json!({ "channel_id": channel })).await.unwrap();
        if v["paid"] == total {
            break;
        }
        assert!(waited.elapsed() < common::TIMEOUT, "bob holds vouchers for {}, not {total}", v["paid"]);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let defund = bob.client().call("virtual_defund", json!({ "channel_id": channel })).await.unwrap();
    wait_done(&alice, &defund["objective_id"]).await;
    wait_done(&bob, &defund["objective_id"]).await;
    let ledger = bob.client().call("ledger_get", json!({ "channel_id": lb["channel_id"] })).await.unwrap();
    assert_eq!(ledger["my_balance"], json!((deposit + payments + 1).to_string()), "{ledger}");
    for node in [alice, hub, bob] {
        node.stop().await;
    }
}
