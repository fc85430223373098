//! The operations endpoints of real nodes: two `node::run`s on anvil open a ledger; their
//! `GET /health` and `GET /metrics` show it (no token), and health turns 503 with a reason
//! when the chain goes away. A chain endpoint that hangs delays neither the API nor the
//! node's health report: the chain is read on a task of its own.

mod common;

use common::{get, metric, Net, NodeHandle};
use nitro_node::metrics;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_follow_a_ledger_and_the_chain() {
    let net = Net::start().await;
    let alice = NodeHandle::start(&net, 1, &[2], false).await;
    let bob = NodeHandle::start(&net, 2, &[1], true).await;

    // Ready without a token, once the store, transport and chain are up and the loop turns.
    let report = alice.wait_health(200).await;
    assert_eq!(report["status"], "ready");
    assert_eq!(report["address"], alice.address.to_checksum(None));
    assert_eq!((report["store"].as_str(), report["transport"].as_str()), (Some("open"), Some("listening")));
    assert_eq!(report["chain"], "reachable");
    assert!(report["chain_head"].as_u64().is_some(), "{report}");
    bob.wait_health(200).await;

    // A ledger, opened through the API and funded on chain.
    let client = alice.client();
    let params = json!({ "counterparty": bob.address.to_string(), "my_amount": "1000", "counterparty_amount": "500" });
    let started = client.call("ledger_open", params).await.unwrap();
    let id = started["objective_id"].clone();
    let waited = client.call("objectives_wait", json!({ "objective_ids": [id], "timeout_ms": 90_000 })).await.unwrap();
    assert_eq!(waited["done"], json!([id]), "{waited}");

    // Every metric is there; the ones this ledger moved have moved. Gauges are refreshed
    // about once a second: wait for them.
    alice.wait_metric(metrics::LEDGERS_OPEN, |v| v == 1.0).await;
    // The deposit counts once the transaction manager has it at depth, which may be a block
    // after the ledger opened.
    let text = alice.wait_metric("nitro_chain_transactions_sent_total{function=\"deposit\"}", |v| v >= 1.0).await;
    for (name, kind, _) in metrics::METRICS {
        assert!(text.contains(&format!("# TYPE {name} {kind}")), "{name}:\n{text}");
    }
    let at_least_one = [
        metrics::MESSAGES_SENT,
        metrics::MESSAGES_RECEIVED,
        "nitro_chain_transactions_sent_total{function=\"deposit\"}",
        "nitro_chain_gas_used_total{function=\"deposit\"}",
        "nitro_engine_step_seconds_count{input=\"request\"}",
        "nitro_engine_step_seconds_count{input=\"message\"}",
        "nitro_engine_step_seconds_count{input=\"tick\"}",
        metrics::CHAIN_HEAD,
    ];
    for series in at_least_one {
        assert!(metric(&text, series).is_some_and(|v| v >= 1.0), "{series}:\n{text}");
    }
    assert!(metric(&text, "nitro_chain_gas_used_total{function=\"deposit\"}").is_some_and(|gas| gas > 20_000.0));
    assert_eq!(metric(&text, metrics::GUARANTEES_LOCKED), Some(0.0));
    let text = alice.wait_metric("nitro_objectives{state=\"done\"}", |v| v == 1.0).await;
    assert_eq!(metric(&text, "nitro_objectives{state=\"pending\"}"), Some(0.0));
    assert!(metric(&text, metrics::WATCHER_LAG).is_some_and(|lag| lag <= 2.0), "{text}");
    assert!(text.contains(&format!("address=\"{}\"", alice.address.to_checksum(None))));

    // Bob serves the same on his separate metrics listener, which serves nothing else.
    let ops = bob.metrics_listen.expect("bob has a metrics listener");
    let text = bob.wait_metric(metrics::LEDGERS_OPEN, |v| v == 1.0).await;
    assert!(metric(&text, "nitro_chain_transactions_sent_total{function=\"deposit\"}") == Some(1.0), "{text}");
    let (status, body) = get(ops, "/metrics").await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("nitro_ledgers_open 1"));
    assert_eq!(get(ops, "/health").await.0, 200);
    assert_eq!(get(ops, "/").await.0, 404);

    // The chain goes away: not ready, and the report says why.
    drop(net);
    let report = alice.wait_health(503).await;
    assert_eq!(report["status"], "unavailable");
    assert!(report["reason"].as_str().is_some_and(|r| r.starts_with("chain unreachable: ")), "{report}");
    assert_eq!(report["chain"], "unreachable");
    assert_eq!(report["store"], "open");

    // A clean stop, within a tick although every chain request fails.
    tokio::join!(alice.stop(), bob.stop());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_calls_still_need_the_token_on_a_running_node() {
    let net = Net::start().await;
    let alice = NodeHandle::start(&net, 1, &[], false).await;
    alice.wait_health(200).await;
    // GET /health and /metrics answer without it; JSON-RPC does not.
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "ledger_list" }).to_string();
    let (status, answer) = common::post_unauthenticated(alice.api, &body).await;
    assert_eq!(status, 401);
    let answer: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(answer["error"]["code"], -32001);
    let ledgers = alice.client().call("ledger_list", Value::Null).await.unwrap();
    assert_eq!(ledgers["ledgers"], json!([]));
    alice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_chain_endpoint_never_delays_the_api() {
    use nitro_chain::proxy::{Fault, RpcProxy};
    use std::time::{Duration, Instant};

    let net = Net::start().await;
    let proxy = RpcProxy::start(net.anvil.port()).await.unwrap();
    let alice = NodeHandle::start_via(&net, 1, &[2], &proxy.url()).await;
    let bob = NodeHandle::start(&net, 2, &[1], false).await;
    alice.wait_health(200).await;
    bob.wait_health(200).await;
    let client = alice.client();
    let params = json!({ "counterparty": bob.address.to_string(), "my_amount": "1000", "counterparty_amount": "500" });
    let started = client.call("ledger_open", params).await.unwrap();
    let id = started["objective_id"].clone();
    let waited = client.call("objectives_wait", json!({ "objective_ids": [id], "timeout_ms": 90_000 })).await.unwrap();
    assert_eq!(waited["done"], json!([id]), "{waited}");
    let ledger = started["channel_id"].clone();

    // From now on every chain request hangs (each times out after the client's 10 s and is
    // asked again). Once the node is stuck in one of them, its API still answers at once:
    // twenty calls in less than one such timeout.
    let before = proxy.count("eth_blockNumber") + proxy.count("eth_getBlockByNumber") + proxy.count("eth_getLogs");
    proxy.set_rule(|_| Fault::Delay(Duration::from_secs(3_600)));
    let start = Instant::now();
    while proxy.count("eth_blockNumber") + proxy.count("eth_getBlockByNumber") + proxy.count("eth_getLogs") == before {
        assert!(start.elapsed() < common::TIMEOUT, "the node stopped reading the chain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let start = Instant::now();
    for _ in 0..20 {
        let got = client.call("ledger_get", json!({ "channel_id": ledger })).await.unwrap();
        assert_eq!(got["channel_id"], ledger);
        let (status, _) = get(alice.api, "/health").await;
        assert!(status == 200 || status == 503, "{status}");
    }
    let took = start.elapsed();
    assert!(took < Duration::from_secs(10), "the API waited for the chain: {took:?} for 20 calls");
    proxy.clear_rule();
}
