//! `ledger_top_up` through the API of two real nodes (`node::run` on anvil, SQLite stores):
//! requests that cannot succeed are refused at once with the reason; a leader's and a
//! follower's top-up each complete, and `ledger_get` on both nodes shows the new balances
//! (and a pending slot while one is reserved).

mod common;

use common::{Net, NodeHandle};
use nitro_node::api::ApiClient;
use serde_json::{json, Value};

async fn refusal(client: &ApiClient, method: &str, params: Value) -> String {
    match client.call(method, params.clone()).await {
        Ok(v) => panic!("{method} {params} was accepted: {v}"),
        Err(e) => e.to_string(),
    }
}

async fn wait_done(client: &ApiClient, id: &Value) {
    let waited = client.call("objectives_wait", json!({ "objective_ids": [id], "timeout_ms": 90_000 })).await.unwrap();
    assert_eq!(waited["done"], json!([id]), "{waited}");
}

async fn balances(client: &ApiClient, ledger: &Value) -> (String, String) {
    let l = client.call("ledger_get", json!({ "channel_id": ledger })).await.unwrap();
    assert!(l.get("top_up").is_none(), "no slot pending once done: {l}");
    (l["my_balance"].as_str().unwrap().to_owned(), l["counterparty_balance"].as_str().unwrap().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_ups_through_the_api_of_both_nodes() {
    let net = Net::start().await;
    let alice = NodeHandle::start(&net, 1, &[2], false).await;
    let bob = NodeHandle::start(&net, 2, &[1], false).await;
    alice.wait_health(200).await;
    bob.wait_health(200).await;
    let (a, b) = (alice.client(), bob.client());

    let params = json!({ "counterparty": bob.address.to_string(), "my_amount": "1000", "counterparty_amount": "500" });
    let started = a.call("ledger_open", params).await.unwrap();
    wait_done(&a, &started["objective_id"]).await;
    let ledger = started["channel_id"].clone();

    // Refused at once, with the reason.
    let unknown = format!("0x{}", "ab".repeat(32));
    let top_up = |channel: &Value, amount: &str| json!({ "channel_id": channel, "amount": amount });
    let e = refusal(&a, "ledger_top_up", top_up(&json!(unknown), "1")).await;
    assert!(e.contains("unknown ledger"), "{e}");
    let e = refusal(&a, "ledger_top_up", top_up(&ledger, "0")).await;
    assert!(e.contains("a top-up of zero"), "{e}");
    let e = refusal(&a, "ledger_top_up", top_up(&ledger, &format!("0x{}", "ff".repeat(32)))).await;
    assert!(e.contains("overflow"), "{e}");
    // Far more than a dev account's 10,000 ETH.
    let e = refusal(&a, "ledger_top_up", top_up(&ledger, "100000000000000000000000000")).await;
    assert!(e.contains("the wallet holds"), "{e}");
    // Above the default per-ledger deposit limit (1 ETH).
    let e = refusal(&a, "ledger_top_up", top_up(&ledger, "2000000000000000000")).await;
    assert!(e.contains("per-ledger deposit limit"), "{e}");

    // Alice (the leader) tops up 700; then Bob (the follower) 300.
    let started = a.call("ledger_top_up", top_up(&ledger, "700")).await.unwrap();
    let id = started["objective_id"].clone();
    assert!(id.as_str().unwrap().starts_with("TopUp-"), "{started}");
    // While it runs, a second one is refused.
    let e = refusal(&a, "ledger_top_up", top_up(&ledger, "1")).await;
    assert!(e.contains("pending") || e.contains("exists"), "{e}");
    wait_done(&a, &id).await;
    assert_eq!(balances(&a, &ledger).await, ("1700".into(), "500".into()));

    let started = b.call("ledger_top_up", top_up(&ledger, "300")).await.unwrap();
    wait_done(&b, &started["objective_id"]).await;
    assert_eq!(balances(&b, &ledger).await, ("800".into(), "1700".into()));
    // Alice's node completes its side once the credit is countersigned.
    let waited = a.call("objectives_wait", json!({ "objective_ids": [id], "timeout_ms": 90_000 })).await.unwrap();
    assert_eq!(waited["done"], json!([id]));
    let start = std::time::Instant::now();
    while balances(&a, &ledger).await != ("1700".into(), "800".into()) {
        assert!(start.elapsed() < std::time::Duration::from_secs(90), "alice never saw bob's credit");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // The ledger closes as usual afterwards.
    let close = a.call("ledger_close", json!({ "channel_id": ledger })).await.unwrap();
    wait_done(&a, &close["objective_id"]).await;
    alice.stop().await;
    bob.stop().await;
}
