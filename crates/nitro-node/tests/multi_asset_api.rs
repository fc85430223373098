//! A ledger of ETH and a token through the API of two real nodes (`node::run` on anvil,
//! SQLite stores): `ledger_open` with `assets`, checked per asset before anything starts;
//! `ledger_get` on both nodes shows every asset's balances; a top-up of the token names its
//! asset; the ledger closes paying both assets.

mod common;

use alloy_primitives::{Address, U256};
use common::{Net, NodeHandle};
use nitro_chain::{
    deploy_token, dev_key, token_balance, transfer_tokens, ChainConfig, EthClient, TestToken, TokenArtifacts,
};
use nitro_node::api::ApiClient;
use serde_json::{json, Value};

const START: u64 = 1_000_000;

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

/// `(asset, my_balance, counterparty_balance)` of each asset `ledger_get` lists.
async fn balances(client: &ApiClient, ledger: &Value) -> Vec<(String, String, String)> {
    let l = client.call("ledger_get", json!({ "channel_id": ledger })).await.unwrap();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_lowercase();
    l["assets"]
        .as_array()
        .unwrap_or_else(|| panic!("{l}"))
        .iter()
        .map(|a| (s(&a["asset"]), s(&a["my_balance"]), s(&a["counterparty_balance"])))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_of_eth_and_a_token_through_the_api() {
    let net = Net::start().await;
    let deployer =
        EthClient::connect(&net.anvil.endpoint(), &dev_key(0).unwrap(), ChainConfig::default()).await.unwrap();
    let artifact = TokenArtifacts::locate().unwrap_or_else(|e| panic!("{e}")).token(TestToken::Token).unwrap();
    let token = deploy_token(&deployer, &artifact, deployer.address()).await.unwrap();
    for i in [1, 2] {
        transfer_tokens(&deployer, token, dev_key(i).unwrap().address(), U256::from(START)).await.unwrap();
    }
    let policy = format!(
        "\n[[policy.tokens]]\naddress = \"{token}\"\nmax_deposit_per_ledger = \"100000\"\nmax_total_deposit = \
         \"100000\"\nmax_virtual_amount = \"1\"\nmax_locked_per_counterparty = \"1\"\n"
    );
    let alice = NodeHandle::start_text(&net, 1, false, &(common::config_text(&net, 1, &[2], false) + &policy)).await;
    let bob = NodeHandle::start_text(&net, 2, false, &(common::config_text(&net, 2, &[1], false) + &policy)).await;
    alice.wait_health(200).await;
    bob.wait_health(200).await;
    let (a, b) = (alice.client(), bob.client());
    let eth = Address::ZERO.to_string().to_lowercase();
    let tok = token.to_string().to_lowercase();
    let counterparty = bob.address.to_string();

    // Refused at once: both forms given; a token over the wallet; an asset the policy lacks.
    let both = json!({ "counterparty": counterparty, "my_amount": "1", "counterparty_amount": "1",
        "assets": [{ "asset": eth, "my_amount": "1", "counterparty_amount": "1" }] });
    assert!(refusal(&a, "ledger_open", both).await.contains("assets"));
    let assets = |mine_token: &str, other: Option<Address>| {
        let mut list = vec![
            json!({ "asset": tok, "my_amount": mine_token, "counterparty_amount": "300" }),
            json!({ "asset": eth, "my_amount": "1000", "counterparty_amount": "500" }),
        ];
        if let Some(o) = other {
            list.push(json!({ "asset": o.to_string(), "my_amount": "1", "counterparty_amount": "0" }));
        }
        json!({ "counterparty": counterparty, "assets": list })
    };
    let e = refusal(&a, "ledger_open", assets(&(START + 1).to_string(), None)).await;
    assert!(e.contains("the wallet holds"), "{e}");
    let other = Address::repeat_byte(0x42);
    let e = refusal(&a, "ledger_open", assets("700", Some(other))).await;
    assert!(e.contains("is not accepted by this node's policy"), "{e}");
    assert_eq!(a.call("objective_list", json!({})).await.unwrap()["objectives"], json!([]), "nothing started");

    let started = a.call("ledger_open", assets("700", None)).await.unwrap();
    wait_done(&a, &started["objective_id"]).await;
    let ledger = started["channel_id"].clone();
    let on_alice = vec![(eth.clone(), "1000".into(), "500".into()), (tok.clone(), "700".into(), "300".into())];
    assert_eq!(balances(&a, &ledger).await, on_alice, "ETH first, then the token");
    wait_done(&b, &started["objective_id"]).await;
    assert_eq!(balances(&b, &ledger).await[1], (tok.clone(), "300".into(), "700".into()));

    // Bob tops up 50 of the token; an asset the ledger does not hold is refused.
    let top_up = |asset: &str, amount: &str| json!({ "channel_id": ledger, "amount": amount, "asset": asset });
    let e = refusal(&b, "ledger_top_up", top_up(&other.to_string(), "1")).await;
    assert!(e.contains("holds no asset"), "{e}");
    let started = b.call("ledger_top_up", top_up(&tok, "50")).await.unwrap();
    wait_done(&b, &started["objective_id"]).await;
    assert_eq!(balances(&b, &ledger).await[1], (tok.clone(), "350".into(), "700".into()));

    let close = a.call("ledger_close", json!({ "channel_id": ledger })).await.unwrap();
    wait_done(&a, &close["objective_id"]).await;
    wait_done(&b, &close["objective_id"]).await;
    for (i, expected) in [(1, START), (2, START)] {
        let start = std::time::Instant::now();
        // The payout is one conclusion; the balance shows once its transaction is mined.
        while token_balance(&deployer, token, dev_key(i).unwrap().address()).await.unwrap() != U256::from(expected) {
            assert!(start.elapsed() < std::time::Duration::from_secs(60), "party {i} never got its tokens back");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
