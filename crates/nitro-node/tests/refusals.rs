//! What a real node (`node::run` on anvil) refuses through its API before anything starts —
//! requests about channels and objectives it does not know, ledger openings it cannot make,
//! virtual channels it cannot pay from — each a JSON-RPC error saying why, and none of them
//! leaving an objective behind.

mod common;

use alloy_primitives::Address;
use common::{Net, NodeHandle};
use nitro_chain::dev_key;
use nitro_node::api::ApiClient;
use serde_json::{json, Value};

async fn refusal(client: &ApiClient, method: &str, params: Value) -> String {
    match client.call(method, params.clone()).await {
        Ok(v) => panic!("{method} {params} was accepted: {v}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_refuses_what_it_cannot_do_and_starts_nothing() {
    let net = Net::start().await;
    // Bob (dev key 2) is a configured peer but is not running: nothing here needs him.
    let alice = NodeHandle::start(&net, 1, &[2], false).await;
    alice.wait_health(200).await;
    let client = alice.client();
    let me = alice.address.to_string();
    let bob = dev_key(2).unwrap().address().to_string();
    let stranger = dev_key(3).unwrap().address().to_string();
    let unknown = format!("0x{}", "ab".repeat(32));

    // Ledger openings that cannot work.
    let open = |counterparty: &str, mine: &str, theirs: &str| json!({ "counterparty": counterparty, "my_amount": mine, "counterparty_amount": theirs });
    let e = refusal(&client, "ledger_open", open(&me, "1", "1")).await;
    assert!(e.contains("a ledger needs a counterparty other than this node"), "{e}");
    let e = refusal(&client, "ledger_open", open(&stranger, "1", "1")).await;
    assert!(e.contains(&format!("{stranger} is not a configured peer")), "{e}");
    let max = format!("0x{}", "ff".repeat(32));
    let e = refusal(&client, "ledger_open", open(&bob, &max, "1")).await;
    assert!(e.contains("the two deposits overflow 256 bits"), "{e}");
    let mut token = open(&bob, "1", "1");
    token["asset"] = json!(Address::repeat_byte(0x42).to_string());
    let e = refusal(&client, "ledger_open", token).await;
    assert!(e.contains("is not accepted by this node's policy (name it under [[policy.tokens]]"), "{e}");
    // Far more than a dev account's 10,000 ETH.
    let e = refusal(&client, "ledger_open", open(&bob, "100000000000000000000000000", "0")).await;
    assert!(e.contains("the wallet holds") && e.contains("the deposit needs 100000000000000000000000000 wei"), "{e}");

    // Virtual channels this node cannot pay from.
    let fund = |counterparty: &str, hub: &str| json!({ "counterparty": counterparty, "hub": hub, "amount": "10" });
    let e = refusal(&client, "virtual_fund", fund(&me, &bob)).await;
    assert!(e.contains("this node cannot be the payee or an intermediary"), "{e}");
    let e = refusal(&client, "virtual_fund", fund(&stranger, &me)).await;
    assert!(e.contains("this node cannot be the payee or an intermediary"), "{e}");
    let e =
        refusal(&client, "virtual_fund", json!({ "counterparty": bob, "intermediaries": [bob], "amount": "10" })).await;
    assert!(e.contains(&format!("{bob} is an intermediary, not a payee")), "{e}");

    // Channels and objectives it does not know.
    let e = refusal(&client, "ledger_get", json!({ "channel_id": unknown })).await;
    assert!(e.contains("unknown ledger"), "{e}");
    let e = refusal(&client, "virtual_get", json!({ "channel_id": unknown })).await;
    assert!(e.contains("unknown virtual channel"), "{e}");
    let objective = format!("DirectFund-{unknown}");
    let e = refusal(&client, "objective_get", json!({ "objective_id": objective })).await;
    assert!(e.contains(&format!("unknown objective {objective}")), "{e}");
    let e = refusal(&client, "objectives_wait", json!({ "objective_ids": [objective], "timeout_ms": 10 })).await;
    assert!(e.contains(&format!("unknown objective {objective}")), "{e}");
    for (method, params) in [
        ("virtual_pay", json!({ "channel_id": unknown, "amount": "1" })),
        ("virtual_defund", json!({ "channel_id": unknown })),
        ("ledger_close", json!({ "channel_id": unknown })),
        ("objective_cancel", json!({ "objective_id": objective })),
    ] {
        let e = refusal(&client, method, params).await;
        assert!(!e.is_empty(), "{method}");
    }

    // Nothing was started by any of it.
    let listed = client.call("objective_list", json!({})).await.unwrap();
    assert_eq!(listed, json!({ "objectives": [] }));
    for filter in [json!({ "status": "pending" }), json!({ "kind": "DirectFund" }), json!({ "channel_id": unknown })] {
        assert_eq!(client.call("objective_list", filter).await.unwrap(), json!({ "objectives": [] }));
    }
    assert_eq!(client.call("ledger_list", json!({})).await.unwrap(), json!({ "ledgers": [] }));
    alice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_opening_is_checked_against_the_policy_and_the_wallets_token_balance() {
    use nitro_chain::{deploy_token, ChainConfig, EthClient, TestToken, TokenArtifacts};
    let net = Net::start().await;
    let deployer =
        EthClient::connect(&net.anvil.endpoint(), &dev_key(0).unwrap(), ChainConfig::default()).await.unwrap();
    let artifact = TokenArtifacts::locate().unwrap_or_else(|e| panic!("{e}")).token(TestToken::Token).unwrap();
    let alice_address = dev_key(1).unwrap().address();
    // Token mints its whole supply (10^10 units) to alice.
    let token = deploy_token(&deployer, &artifact, alice_address).await.unwrap();
    let text = format!(
        "{}\n[[policy.tokens]]\naddress = \"{token}\"\nmax_deposit_per_ledger = \"100000000000\"\n\
         max_total_deposit = \"100000000000\"\nmax_virtual_amount = \"1\"\nmax_locked_per_counterparty = \"1\"\n",
        common::config_text(&net, 1, &[2], false)
    );
    let alice = NodeHandle::start_text(&net, 1, false, &text).await;
    alice.wait_health(200).await;
    let client = alice.client();
    let bob = dev_key(2).unwrap().address().to_string();
    let open = |asset: Address, mine: &str| json!({ "counterparty": bob, "my_amount": mine, "counterparty_amount": "1", "asset": asset.to_string() });
    let e = refusal(&client, "ledger_open", open(token, "10000000001")).await;
    assert!(e.contains(&format!("the wallet holds 10000000000 of token {token}")), "{e}");
    let other = Address::repeat_byte(0x42);
    let e = refusal(&client, "ledger_open", open(other, "1")).await;
    assert!(e.contains(&format!("asset {other} is not accepted by this node's policy")), "{e}");
    let started = client.call("ledger_open", open(token, "10000000000")).await.unwrap();
    assert!(started["objective_id"].as_str().is_some_and(|id| id.starts_with("DirectFund-")), "{started}");
}
