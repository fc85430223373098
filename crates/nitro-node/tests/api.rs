//! The JSON-RPC API over loopback HTTP, against a fake engine: authentication, framing,
//! params validation, limits, the token file, and the client.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use alloy_primitives::{Address, U256};
use nitro_core::party::ObjectiveId;
use nitro_core::ChannelId;
use nitro_node::api::{
    self, ApiCall, ApiClient, ApiConfig, ApiError, ApiRequest, ApiServer, ClientError, GuaranteeSummary, LedgerList,
    LedgerRole, LedgerStatus, LedgerSummary, ObjectiveStarted, ObjectiveStatus, PaymentSent, RpcError, WaitResult,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

const ALICE: &str = "0x70997970c51812dc3a010c7d01b50e0d17dc79c8";
const ALICE_CHECKSUMMED: &str = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8";
const HUB: &str = "0x3c44cdddb6a900fa2b585dd299e03d12fa4293bc";

fn ledger_id() -> ChannelId {
    ChannelId::repeat_byte(0x11)
}

fn ledger_id_hex() -> String {
    format!("0x{}", "11".repeat(32))
}

/// Every call the fake engine received: method and params.
type Seen = Arc<Mutex<Vec<(String, Value)>>>;

/// Answers calls like a small, well-behaved engine, recording each one.
fn fake_engine(mut calls: mpsc::Receiver<ApiCall>, seen: Seen) {
    tokio::spawn(async move {
        while let Some(call) = calls.recv().await {
            seen.lock().unwrap().push((call.method.clone(), call.params.clone()));
            let request = match call.request() {
                Ok(r) => r,
                Err(e) => {
                    call.respond::<Value>(Err(e));
                    continue;
                }
            };
            match request {
                ApiRequest::LedgerOpen(_) => call.respond(Ok(ObjectiveStarted {
                    objective_id: ObjectiveId::DirectFund(ledger_id()),
                    channel_id: ledger_id(),
                })),
                ApiRequest::LedgerGet { channel_id } if channel_id == ledger_id() => call.respond(Ok(summary())),
                ApiRequest::LedgerGet { channel_id } => {
                    call.respond::<Value>(Err(RpcError::refused(format!("unknown ledger {channel_id}"))))
                }
                ApiRequest::LedgerList => call.respond(Ok(LedgerList { ledgers: vec![summary()] })),
                ApiRequest::ObjectiveGet { objective_id } => call.respond(Ok(ObjectiveStatus {
                    objective_id,
                    channel_id: objective_id.channel_id(),
                    done: false,
                    failed: None,
                    waiting_for: "waiting for deposits: 0 of 10 held".into(),
                    finalizes_at: None,
                })),
                ApiRequest::ObjectivesWait(w) => {
                    // Completes after a short while, well within the timeout.
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        call.respond(Ok(WaitResult { done: w.objective_ids, failed: vec![], pending: vec![] }));
                    });
                }
                ApiRequest::VirtualPay { channel_id, amount } if amount <= U256::from(100) => {
                    call.respond(Ok(PaymentSent { channel_id, paid: amount }))
                }
                ApiRequest::VirtualPay { amount, .. } => {
                    call.respond::<Value>(Err(RpcError::refused(format!("overpaid: {amount} > 100"))))
                }
                // Dropped unanswered, as a crashing engine would.
                ApiRequest::VirtualDefund { .. } => drop(call),
                other => {
                    let echo = json!({ "method": other.method(), "params": call.params });
                    call.respond(Ok(echo))
                }
            }
        }
    });
}

fn summary() -> LedgerSummary {
    LedgerSummary {
        channel_id: ledger_id(),
        counterparty: ALICE.parse().unwrap(),
        role: LedgerRole::Leader,
        status: LedgerStatus::Open,
        asset: Address::ZERO,
        my_balance: U256::from(70),
        counterparty_balance: U256::from(20),
        guarantees: vec![GuaranteeSummary { channel_id: ChannelId::repeat_byte(0x22), amount: U256::from(10) }],
        turn_num: 4,
        top_up: None,
        assets: vec![nitro_node::api::AssetBalanceSummary {
            asset: Address::ZERO,
            my_balance: U256::from(70),
            counterparty_balance: U256::from(20),
            guarantees: vec![GuaranteeSummary { channel_id: ChannelId::repeat_byte(0x22), amount: U256::from(10) }],
            top_up: None,
        }],
    }
}

struct Harness {
    server: ApiServer,
    seen: Seen,
    dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Self {
        Self::with_limit(api::DEFAULT_MAX_BODY_BYTES).await
    }

    async fn with_limit(max_body_bytes: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = ApiConfig::new(loopback(), dir.path().join("api.token"));
        config.max_body_bytes = max_body_bytes;
        let (tx, rx) = mpsc::channel(16);
        let seen = Seen::default();
        fake_engine(rx, seen.clone());
        let server = api::serve(config, tx).await.unwrap();
        Self { server, seen, dir }
    }

    fn client(&self) -> ApiClient {
        ApiClient::new(&self.server.url(), self.server.token()).unwrap()
    }

    fn addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    fn seen(&self) -> Vec<(String, Value)> {
        self.seen.lock().unwrap().clone()
    }

    async fn post(&self, body: &str) -> Answer {
        post(self.addr(), Some(self.server.token()), body.as_bytes()).await
    }
}

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A raw HTTP answer.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The single error object of the answer, checking the JSON-RPC envelope.
    fn error(&self) -> RpcError {
        let v = self.json();
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        assert!(v.get("result").is_none(), "{v}");
        serde_json::from_value(v["error"].clone()).unwrap()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.head.split("\r\n").find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// Sends `request` as is and reads the whole answer (the server closes: `Connection: close`).
async fn raw(addr: SocketAddr, request: &[u8]) -> Answer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may answer (and close) before reading everything: ignore write errors.
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let end = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP answer: {:?}", String::from_utf8_lossy(&response)));
    let head = String::from_utf8(response[..end].to_vec()).unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let answer = Answer { status, head, body: response[end + 4..].to_vec() };
    assert!(answer.header("transfer-encoding").is_none(), "chunked answer: {}", answer.head);
    if let Some(n) = answer.header("content-length") {
        assert_eq!(answer.body.len(), n.parse::<usize>().unwrap());
    }
    answer
}

async fn post(addr: SocketAddr, token: Option<&str>, body: &[u8]) -> Answer {
    let auth = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    post_with(addr, &auth, body).await
}

async fn post_with(addr: SocketAddr, extra_headers: &str, body: &[u8]) -> Answer {
    let mut request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n{extra_headers}Content-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    raw(addr, &request).await
}

fn rpc(method: &str, params: Value) -> String {
    json!({ "jsonrpc": "2.0", "id": 1, "method": method, "params": params }).to_string()
}

fn rpc_code(result: Result<Value, ClientError>) -> RpcError {
    match result {
        Err(ClientError::Rpc(e)) => e,
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_call_with_the_token_goes_to_the_engine_and_back() {
    let h = Harness::start().await;
    let client = h.client();

    // Amount in hex, address in lower case, no asset: the engine sees the canonical form.
    let params = json!({ "counterparty": ALICE, "my_amount": "0x64", "counterparty_amount": "50" });
    let started: ObjectiveStarted = client.call_as("ledger_open", params).await.unwrap();
    assert_eq!(
        started,
        ObjectiveStarted { objective_id: ObjectiveId::DirectFund(ledger_id()), channel_id: ledger_id() }
    );
    let seen = h.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "ledger_open");
    assert_eq!(
        seen[0].1,
        json!({
            "counterparty": ALICE_CHECKSUMMED,
            "my_amount": "100",
            "counterparty_amount": "50",
            "asset": "0x0000000000000000000000000000000000000000",
        })
    );

    // The raw wire format of the answer.
    let raw =
        client.call("ledger_open", json!({ "counterparty": ALICE, "my_amount": "1", "counterparty_amount": "1" }));
    let raw = raw.await.unwrap();
    assert_eq!(raw["objective_id"], json!(format!("DirectFund-{}", ledger_id_hex())));
    assert_eq!(raw["channel_id"], json!(ledger_id_hex()));

    let ledger: LedgerSummary = client.call_as("ledger_get", json!({ "channel_id": ledger_id_hex() })).await.unwrap();
    assert_eq!(ledger, summary());
    let list: LedgerList = client.call_as("ledger_list", Value::Null).await.unwrap();
    assert_eq!(list.ledgers, vec![summary()]);
    let wire = client.call("ledger_get", json!({ "channel_id": ledger_id_hex() })).await.unwrap();
    assert_eq!(wire["my_balance"], "70");
    assert_eq!(wire["role"], "leader");
    assert_eq!(wire["status"], "open");
    assert_eq!(wire["counterparty"], ALICE_CHECKSUMMED);

    let objective = format!("VirtualFund-{}", ledger_id_hex());
    let status: ObjectiveStatus = client.call_as("objective_get", json!({ "objective_id": objective })).await.unwrap();
    assert!(!status.done);
    assert_eq!(status.objective_id.to_string(), objective);

    // `hub` is shorthand for one intermediary; defaults are written out.
    let echo = client.call("virtual_fund", json!({ "counterparty": ALICE, "hub": HUB, "amount": "5", "nonce": "7" }));
    let echo = echo.await.unwrap();
    assert_eq!(echo["method"], "virtual_fund");
    let params = &echo["params"];
    assert_eq!(params["intermediaries"], json!(["0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC"]));
    assert_eq!(params["counterparty_amount"], "0");
    assert_eq!(params["nonce"], 7);
    assert!(params.get("hub").is_none());

    let paid: PaymentSent =
        client.call_as("virtual_pay", json!({ "channel_id": ledger_id_hex(), "amount": "40" })).await.unwrap();
    assert_eq!(paid.paid, U256::from(40));

    // The CLI's way in: the token file the node wrote.
    let from_file = ApiClient::from_token_file(&h.server.url(), &h.dir.path().join("api.token")).unwrap();
    assert_eq!(from_file.call("ledger_list", json!({})).await.unwrap()["ledgers"][0]["turn_num"], 4);
}

#[tokio::test]
async fn a_missing_or_wrong_token_is_refused_with_401_before_the_engine() {
    let h = Harness::start().await;
    let body = rpc("ledger_list", json!({}));
    let token = h.server.token().to_owned();
    let mut wrong = token.clone().into_bytes();
    wrong[10] = if wrong[10] == b'0' { b'1' } else { b'0' };
    let wrong = String::from_utf8(wrong).unwrap();
    let cases = [
        String::new(),
        format!("Authorization: Bearer {wrong}\r\n"),
        format!("Authorization: Bearer {token}0\r\n"),
        format!("Authorization: Bearer {}\r\n", &token[..token.len() - 1]),
        "Authorization: Bearer \r\n".to_owned(),
        format!("Authorization: Basic {token}\r\n"),
        format!("Authorization: {token}\r\n"),
        format!("X-Token: {token}\r\n"),
    ];
    for headers in &cases {
        let answer = post_with(h.addr(), headers, body.as_bytes()).await;
        assert_eq!(answer.status, 401, "{headers:?}");
        assert_eq!(answer.header("www-authenticate").as_deref(), Some("Bearer"));
        assert_eq!(answer.header("content-type").as_deref(), Some("application/json"));
        assert_eq!(answer.error().code, RpcError::UNAUTHORIZED);
        assert_eq!(answer.json()["id"], Value::Null);
    }
    // Through the client, too.
    let client = ApiClient::new(&h.server.url(), wrong).unwrap();
    assert_eq!(rpc_code(client.call("ledger_list", Value::Null).await).code, RpcError::UNAUTHORIZED);
    assert!(h.seen().is_empty(), "the engine saw {:?}", h.seen());

    // The scheme is case-insensitive.
    let answer = post_with(h.addr(), &format!("Authorization: bearer {token}\r\n"), body.as_bytes()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(h.seen().len(), 1);
}

#[tokio::test]
async fn an_unknown_method_is_method_not_found() {
    let h = Harness::start().await;
    let e = rpc_code(h.client().call("ledger_destroy", json!({})).await);
    assert_eq!(e.code, RpcError::METHOD_NOT_FOUND);
    assert!(e.message.contains("ledger_destroy"), "{}", e.message);

    let answer = h.post(r#"{"jsonrpc":"2.0","id":"abc","method":"eth_call"}"#).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.error().code, RpcError::METHOD_NOT_FOUND);
    assert_eq!(answer.json()["id"], "abc");
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn bad_params_are_invalid_params_naming_the_field() {
    let h = Harness::start().await;
    let client = h.client();
    let open = |extra: Value| {
        let mut p = json!({ "counterparty": ALICE, "my_amount": "1", "counterparty_amount": "2" });
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                p.as_object_mut().unwrap().remove(k);
            } else {
                p[k] = v.clone();
            }
        }
        p
    };
    let long_objective = format!("DirectFund-{}", ledger_id_hex());
    let cases: Vec<(&str, Value, &str)> = vec![
        ("ledger_open", open(json!({ "counterparty": null })), "counterparty"),
        ("ledger_open", open(json!({ "counterparty": "0x1234" })), "counterparty"),
        ("ledger_open", open(json!({ "counterparty": 5 })), "counterparty"),
        ("ledger_open", open(json!({ "counterparty": "0x70997970C51812DC3A010C7D01B50E0D17DC79c8" })), "counterparty"),
        ("ledger_open", open(json!({ "my_amount": 5 })), "my_amount"),
        ("ledger_open", open(json!({ "my_amount": "-5" })), "my_amount"),
        ("ledger_open", open(json!({ "my_amount": "1.5" })), "my_amount"),
        ("ledger_open", open(json!({ "counterparty_amount": format!("1{}", "0".repeat(80)) })), "counterparty_amount"),
        ("ledger_open", open(json!({ "asset": "eth" })), "asset"),
        ("ledger_open", open(json!({ "nonce": -1 })), "nonce"),
        ("ledger_open", open(json!({ "nonce": "0x10000000000000000" })), "nonce"),
        ("ledger_open", open(json!({ "counterpary": ALICE })), "counterpary"),
        ("ledger_close", json!({}), "channel_id"),
        ("ledger_close", json!({ "channel_id": "0x11" }), "channel_id"),
        ("ledger_get", json!({ "channel_id": format!("{}zz", &ledger_id_hex()[..64]) }), "channel_id"),
        ("ledger_list", json!({ "all": true }), "all"),
        ("virtual_fund", json!({ "counterparty": ALICE, "amount": "1" }), "hub"),
        ("virtual_fund", json!({ "counterparty": ALICE, "amount": "1", "hub": HUB, "intermediaries": [HUB] }), "hub"),
        ("virtual_fund", json!({ "counterparty": ALICE, "amount": "1", "intermediaries": [] }), "intermediaries"),
        ("virtual_fund", json!({ "counterparty": ALICE, "amount": "1", "intermediaries": HUB }), "intermediaries"),
        (
            "virtual_fund",
            json!({ "counterparty": ALICE, "amount": "1", "intermediaries": [HUB, 1] }),
            "intermediaries[1]",
        ),
        ("virtual_fund", json!({ "counterparty": ALICE, "hub": HUB }), "amount"),
        ("virtual_pay", json!({ "channel_id": ledger_id_hex() }), "amount"),
        ("virtual_defund", json!({ "channel_id": true }), "channel_id"),
        ("objective_get", json!({ "objective_id": ledger_id_hex() }), "objective_id"),
        ("objective_get", json!({ "objective_id": format!("Fund-{}", ledger_id_hex()) }), "objective_id"),
        ("objectives_wait", json!({ "objective_ids": [] }), "objective_ids"),
        ("objectives_wait", json!({ "objective_ids": long_objective }), "objective_ids"),
        ("objectives_wait", json!({ "objective_ids": [long_objective, "x"] }), "objective_ids[1]"),
        ("objectives_wait", json!({ "objective_ids": [long_objective], "timeout_ms": 300_001 }), "timeout_ms"),
        ("objectives_wait", json!({ "objective_ids": [long_objective], "timeout_ms": "5" }), "timeout_ms"),
        ("objectives_wait", json!({ "objective_ids": [long_objective], "any": "yes" }), "any"),
    ];
    for (method, params, field) in cases {
        let e = rpc_code(client.call(method, params.clone()).await);
        assert_eq!(e.code, RpcError::INVALID_PARAMS, "{method} {params}: {e:?}");
        assert!(e.message.contains(field), "{method} {params}: {:?} does not name {field}", e.message);
        assert_eq!(e.data, Some(json!({ "field": field })), "{method} {params}");
    }
    // Params that are not an object at all.
    for params in [json!([1, 2]), json!([{ "channel_id": ledger_id_hex() }])] {
        let e = rpc_code(client.call("ledger_get", params).await);
        assert_eq!(e.code, RpcError::INVALID_PARAMS);
    }
    assert!(h.seen().is_empty(), "the engine saw {:?}", h.seen());

    // Empty positional params are no params.
    let answer = h.post(r#"{"jsonrpc":"2.0","id":2,"method":"ledger_list","params":[]}"#).await;
    assert_eq!(answer.json()["result"]["ledgers"][0]["turn_num"], 4);
}

#[tokio::test]
async fn a_body_that_is_not_json_is_a_parse_error() {
    let h = Harness::start().await;
    let bodies: [&[u8]; 6] = [b"", b"{", b"not json", b"{\"jsonrpc\":\"2.0\",}", b"\xff\xfe\x00", b"[1,2"];
    for body in bodies {
        let answer = post(h.addr(), Some(h.server.token()), body).await;
        assert_eq!(answer.status, 200, "{body:?}");
        assert_eq!(answer.error().code, RpcError::PARSE_ERROR, "{body:?}");
        assert_eq!(answer.json()["id"], Value::Null);
    }
    // Nesting deeper than the parser allows is refused, not a stack overflow.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(h.post(&deep).await.error().code, RpcError::PARSE_ERROR);
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn an_invalid_request_object_is_invalid_request() {
    let h = Harness::start().await;
    let cases: [(&str, Value); 10] = [
        ("42", Value::Null),
        (r#""ledger_list""#, Value::Null),
        (r#"{"id":1,"method":"ledger_list"}"#, json!(1)),
        (r#"{"jsonrpc":"1.0","id":1,"method":"ledger_list"}"#, json!(1)),
        (r#"{"jsonrpc":2.0,"id":1,"method":"ledger_list"}"#, json!(1)),
        (r#"{"jsonrpc":"2.0","id":"a","method":7}"#, json!("a")),
        (r#"{"jsonrpc":"2.0","id":2}"#, json!(2)),
        (r#"{"jsonrpc":"2.0","id":{"x":1},"method":"ledger_list"}"#, Value::Null),
        (r#"{"jsonrpc":"2.0","id":3,"method":"ledger_list","params":"x"}"#, json!(3)),
        (r#"{"jsonrpc":"2.0","id":4,"method":"ledger_list","parms":{}}"#, json!(4)),
    ];
    for (body, id) in cases {
        let answer = h.post(body).await;
        assert_eq!(answer.status, 200, "{body}");
        assert_eq!(answer.error().code, RpcError::INVALID_REQUEST, "{body}");
        assert_eq!(answer.json()["id"], id, "{body}");
    }
    // Without an id the object is still answered: it is not a valid notification.
    assert_eq!(h.post(r#"{"jsonrpc":"2.0","method":5}"#).await.error().code, RpcError::INVALID_REQUEST);
    assert!(h.seen().is_empty());
}

#[tokio::test]
async fn a_notification_gets_no_answer_body() {
    let h = Harness::start().await;
    let answer = h.post(r#"{"jsonrpc":"2.0","method":"ledger_list"}"#).await;
    assert_eq!(answer.status, 204);
    assert!(answer.body.is_empty());
    // It still reaches the engine (the server answers once the engine's queue took it).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while h.seen().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.seen(), vec![("ledger_list".to_owned(), json!({}))]);
    // Invalid notifications are dropped silently, before the engine.
    for body in [
        r#"{"jsonrpc":"2.0","method":"no_such_method"}"#,
        r#"{"jsonrpc":"2.0","method":"ledger_get","params":{"channel_id":"0x1"}}"#,
    ] {
        let answer = h.post(body).await;
        assert_eq!((answer.status, answer.body.len()), (204, 0), "{body}");
    }
    assert_eq!(h.seen().len(), 1);
    // `"id": null` is a call, not a notification.
    let answer = h.post(r#"{"jsonrpc":"2.0","id":null,"method":"ledger_list"}"#).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.json()["id"], Value::Null);
    assert!(answer.json().get("result").is_some());
}

#[tokio::test]
async fn batches_answer_each_call_in_order() {
    let h = Harness::start().await;
    let batch = json!([
        { "jsonrpc": "2.0", "id": 1, "method": "ledger_get", "params": { "channel_id": ledger_id_hex() } },
        { "jsonrpc": "2.0", "method": "ledger_list" },
        { "jsonrpc": "2.0", "id": "two", "method": "nope" },
        7,
        { "jsonrpc": "2.0", "id": 3, "method": "ledger_get", "params": { "channel_id": format!("0x{}", "33".repeat(32)) } },
    ]);
    let answer = h.post(&batch.to_string()).await;
    assert_eq!(answer.status, 200);
    let answers = answer.json();
    let answers = answers.as_array().unwrap();
    assert_eq!(answers.len(), 4);
    assert_eq!((answers[0]["id"].clone(), answers[0]["result"]["turn_num"].clone()), (json!(1), json!(4)));
    assert_eq!((answers[1]["id"].clone(), answers[1]["error"]["code"].clone()), (json!("two"), json!(-32601)));
    assert_eq!((answers[2]["id"].clone(), answers[2]["error"]["code"].clone()), (Value::Null, json!(-32600)));
    assert_eq!((answers[3]["id"].clone(), answers[3]["error"]["code"].clone()), (json!(3), json!(-32000)));
    assert!(answers[3]["error"]["message"].as_str().unwrap().contains("unknown ledger"));

    // Only notifications: no body.
    let answer = h.post(r#"[{"jsonrpc":"2.0","method":"ledger_list"},{"jsonrpc":"2.0","method":"ledger_list"}]"#).await;
    assert_eq!((answer.status, answer.body.len()), (204, 0));

    // Empty and oversized batches are one invalid request.
    let one = json!({ "jsonrpc": "2.0", "id": 1, "method": "ledger_list" });
    for batch in [json!([]), Value::Array(vec![one; api::MAX_BATCH + 1])] {
        let answer = h.post(&batch.to_string()).await;
        assert_eq!(answer.error().code, RpcError::INVALID_REQUEST);
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let h = Harness::with_limit(1024).await;
    let token = h.server.token().to_owned();
    let big = rpc("ledger_list", json!({ "padding": "x".repeat(4096) }));

    // Declared too large.
    let answer = post(h.addr(), Some(&token), big.as_bytes()).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error().code, RpcError::INVALID_REQUEST);
    assert!(answer.error().message.contains("1024"));

    // Too large without a declared length (chunked).
    let mut request =
        format!("POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .into_bytes();
    for chunk in big.as_bytes().chunks(512) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(h.addr(), &request).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.error().code, RpcError::INVALID_REQUEST);

    // Through the client.
    let e = rpc_code(h.client().call("ledger_list", json!({ "padding": "x".repeat(4096) })).await);
    assert_eq!(e.code, RpcError::INVALID_REQUEST);

    // Just under the limit is fine (and then refused for its unknown parameter).
    let body = rpc("ledger_list", json!({ "padding": "x".repeat(900) }));
    assert!(body.len() <= 1024);
    assert_eq!(h.post(&body).await.error().code, RpcError::INVALID_PARAMS);
    assert!(h.seen().is_empty());
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn the_token_file_is_created_private_on_first_start_and_reused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state").join("node").join("api.token");
    assert!(!path.exists());
    let (tx, _rx) = mpsc::channel(1);
    let first = api::serve(ApiConfig::new(loopback(), &path), tx.clone()).await.unwrap();
    let token = first.token().to_owned();
    assert_eq!(token.len(), 64);
    assert!(token.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("{token}\n"));
    #[cfg(unix)]
    {
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    // Nothing else is left in the directory (no temporary file).
    assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    first.shutdown().await.unwrap();

    let second = api::serve(ApiConfig::new(loopback(), &path), tx.clone()).await.unwrap();
    assert_eq!(second.token(), token);
    second.shutdown().await.unwrap();
    assert_eq!(api::load_or_create_token(&path).unwrap(), token);

    // Another node gets another token.
    let other = api::load_or_create_token(&dir.path().join("other.token")).unwrap();
    assert_ne!(other, token);

    // A token file that cannot be trusted or used is refused.
    let short = dir.path().join("short.token");
    std::fs::write(&short, "abc\n").unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).unwrap();
        let open = dir.path().join("open.token");
        std::fs::write(&open, "a".repeat(64)).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = api::serve(ApiConfig::new(loopback(), &open), tx.clone()).await;
        assert!(matches!(refused, Err(ApiError::BadTokenFile { .. })), "{refused:?}");
    }
    assert!(matches!(api::load_or_create_token(&short), Err(ApiError::BadTokenFile { .. })));
    assert!(matches!(api::load_or_create_token(dir.path()), Err(ApiError::BadTokenFile { .. })));
}

#[cfg(unix)]
#[test]
fn a_token_file_too_large_or_not_plain_ascii_is_refused_saying_why() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let private = |name: &str, content: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    };
    let reason = |path: &Path| match api::load_or_create_token(path) {
        Err(e @ ApiError::BadTokenFile { .. }) => e.to_string(),
        other => panic!("{}: expected a bad token file, got {other:?}", path.display()),
    };
    let large = private("large.token", &"a".repeat(5000));
    assert!(reason(&large).contains("too large (5000 bytes) for a token"));
    let spaced = private("spaced.token", &format!("{} {}\n", "a".repeat(20), "b".repeat(20)));
    assert!(reason(&spaced).contains("the token must be visible ASCII characters without spaces"));
    let accented = private("accented.token", &format!("{}é\n", "a".repeat(40)));
    assert!(reason(&accented).contains("visible ASCII"));
    let long = private("long.token", &"a".repeat(600));
    assert!(reason(&long).contains("the token must be 32 to 512 characters long, found 600"));
    // Surrounding whitespace is not part of the token.
    let padded = private("padded.token", &format!("  {}\n\n", "t".repeat(40)));
    assert_eq!(api::load_or_create_token(&padded).unwrap(), "t".repeat(40));
    // A token that cannot be created where a file stands in for its directory.
    let blocked = private("not-a-dir", "x").join("api.token");
    match api::load_or_create_token(&blocked) {
        Err(e @ ApiError::TokenFile { .. }) => assert!(e.to_string().contains("not-a-dir"), "{e}"),
        other => panic!("expected a token file error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_non_loopback_listen_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("api.token");
    let (tx, _rx) = mpsc::channel(1);
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:0", "10.0.0.1:8545", "[::ffff:10.0.0.1]:0"] {
        let addr: SocketAddr = addr.parse().unwrap();
        match api::serve(ApiConfig::new(addr, &path), tx.clone()).await {
            Err(ApiError::NotLoopback(a)) => assert_eq!(a, addr),
            other => panic!("{addr}: {other:?}"),
        }
    }
    // Refused before the token file is made.
    assert!(!path.exists());
    // Any 127/8 address is loopback.
    let server = api::serve(ApiConfig::new("127.0.0.2:0".parse().unwrap(), &path), tx.clone()).await;
    if let Ok(server) = server {
        assert!(server.local_addr().ip().is_loopback());
        server.shutdown().await.unwrap();
    }
}

#[tokio::test]
async fn the_server_keeps_serving_after_bad_requests() {
    let h = Harness::with_limit(4096).await;
    let token = h.server.token().to_owned();
    for _ in 0..3 {
        post(h.addr(), None, b"{}").await;
        post(h.addr(), Some(&token), b"{{{").await;
        post(h.addr(), Some(&token), b"[]").await;
        post(h.addr(), Some(&token), "x".repeat(10_000).as_bytes()).await;
        h.post(&rpc("ledger_get", json!({ "channel_id": 1 }))).await;
        // Not HTTP at all, and a connection dropped halfway through a request.
        let mut garbage = TcpStream::connect(h.addr()).await.unwrap();
        garbage.write_all(b"\x16\x03\x01\x00\xa5hello\r\n\r\n").await.unwrap();
        let mut sink = Vec::new();
        let _ = garbage.read_to_end(&mut sink).await;
        let mut half = TcpStream::connect(h.addr()).await.unwrap();
        half.write_all(b"POST / HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"js").await.unwrap();
        drop(half);
        // Wrong method and path.
        let get = raw(
            h.addr(),
            format!("GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(get.status, 405);
        let elsewhere =
            raw(h.addr(), b"POST /admin HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        assert_eq!(elsewhere.status, 404);
    }
    let ledger: LedgerSummary =
        h.client().call_as("ledger_get", json!({ "channel_id": ledger_id_hex() })).await.unwrap();
    assert_eq!(ledger, summary());
    assert_eq!(h.seen().len(), 1);
}

#[tokio::test]
async fn engine_refusals_and_failures_are_json_rpc_errors() {
    let h = Harness::start().await;
    let client = h.client();
    // A refusal carries the engine's words.
    let e = rpc_code(client.call("virtual_pay", json!({ "channel_id": ledger_id_hex(), "amount": "101" })).await);
    assert_eq!((e.code, e.message.as_str()), (RpcError::REFUSED, "overpaid: 101 > 100"));
    // An engine that drops the call: internal error.
    let e = rpc_code(client.call("virtual_defund", json!({ "channel_id": ledger_id_hex() })).await);
    assert_eq!(e.code, RpcError::INTERNAL_ERROR);

    // An engine that is gone: internal error, and the server still answers.
    let dir = tempfile::tempdir().unwrap();
    let (tx, rx) = mpsc::channel(1);
    drop(rx);
    let server = api::serve(ApiConfig::new(loopback(), dir.path().join("t")), tx).await.unwrap();
    let client = ApiClient::new(&server.url(), server.token()).unwrap();
    for _ in 0..2 {
        let e = rpc_code(client.call("ledger_list", Value::Null).await);
        assert_eq!(e.code, RpcError::INTERNAL_ERROR);
        assert!(e.message.contains("engine"), "{}", e.message);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test]
async fn objectives_wait_long_polls_for_completion() {
    let h = Harness::start().await;
    let ids = [ObjectiveId::DirectFund(ledger_id()), ObjectiveId::VirtualFund(ChannelId::repeat_byte(0x22))];
    let params = json!({ "objective_ids": ids, "timeout_ms": 5_000 });
    let started = std::time::Instant::now();
    let result: WaitResult = h.client().call_as("objectives_wait", params).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(result, WaitResult { done: ids.to_vec(), failed: vec![], pending: vec![] });
    let seen = h.seen();
    assert_eq!(seen[0].1, json!({ "objective_ids": ids, "timeout_ms": 5_000, "any": false }));
    // The default timeout is written out for the engine.
    h.client().call("objectives_wait", json!({ "objective_ids": [ids[0]], "any": true })).await.unwrap();
    assert_eq!(h.seen()[1].1, json!({ "objective_ids": [ids[0]], "timeout_ms": api::DEFAULT_WAIT_MS, "any": true }));
}

#[tokio::test]
async fn shutdown_answers_waiting_calls_and_stops_listening() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, mut rx) = mpsc::channel::<ApiCall>(4);
    // An engine that holds every call without answering, and says when it got one.
    let (got_one, mut engine_has_it) = tokio::sync::watch::channel(0usize);
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(call) = rx.recv().await {
            held.push(call);
            got_one.send_replace(held.len());
        }
        held.len()
    });
    let server = api::serve(ApiConfig::new(loopback(), dir.path().join("t")), tx).await.unwrap();
    let client = ApiClient::new(&server.url(), server.token()).unwrap();
    let waiting = tokio::spawn(async move { client.call("ledger_list", Value::Null).await });
    // Shut down only once the call waits inside the engine.
    tokio::time::timeout(Duration::from_secs(60), engine_has_it.wait_for(|n| *n == 1)).await.unwrap().unwrap();
    let url = server.url();
    let token = server.token().to_owned();
    tokio::time::timeout(Duration::from_secs(60), server.shutdown()).await.unwrap().unwrap();
    let e = rpc_code(waiting.await.unwrap());
    assert_eq!(e.code, RpcError::INTERNAL_ERROR);
    assert!(e.message.contains("shutting down"), "{}", e.message);
    let after = ApiClient::new(&url, token).unwrap().call("ledger_list", Value::Null).await;
    assert!(matches!(after, Err(ClientError::Transport { .. })), "{after:?}");
    // The server let go of the engine's channel.
    assert_eq!(tokio::time::timeout(Duration::from_secs(60), held).await.unwrap().unwrap(), 1);
}

#[tokio::test]
async fn the_client_talks_to_loopback_only() {
    let token = "a".repeat(64);
    for url in
        ["http://192.0.2.1:8545/", "http://example.com:80/", "https://127.0.0.1:1/", "127.0.0.1:1", "http://[::1"]
    {
        let e = ApiClient::new(url, token.clone()).unwrap_err();
        assert!(matches!(e, ClientError::InvalidUrl { .. }), "{url}: {e:?}");
    }
    for bad in ["", "a b", "abc\r\nX-Evil: 1"] {
        assert!(matches!(ApiClient::new("http://127.0.0.1:1/", bad), Err(ClientError::InvalidToken(_))));
    }
    assert!(ApiClient::new("http://localhost:1", token.clone()).is_ok());
    assert!(ApiClient::new("http://[::1]:1/", token.clone()).is_ok());
    // Nobody listening: a transport error, not a JSON-RPC error.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let e = ApiClient::new(&format!("http://127.0.0.1:{port}/"), token).unwrap().call("ledger_list", Value::Null).await;
    match &e {
        Err(ClientError::Transport { source, .. }) => assert_eq!(source.kind(), std::io::ErrorKind::ConnectionRefused),
        other => panic!("{other:?}"),
    }
    let e = e.unwrap_err();
    assert!(e.rpc().is_none());
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(e.to_string().to_ascii_lowercase().contains("refused"), "{e}");
    let missing = ApiClient::from_token_file("http://127.0.0.1:1/", Path::new("/nonexistent/api.token"));
    assert!(matches!(missing, Err(ClientError::TokenFile { .. })));
}

#[tokio::test]
async fn debug_output_does_not_show_the_token() {
    let h = Harness::start().await;
    let token = h.server.token().to_owned();
    assert!(!format!("{:?}", h.server).contains(&token));
    assert!(!format!("{:?}", h.client()).contains(&token));
}

/// A server that answers every request on every connection with `response`, `delay` after
/// reading it (`None`: never), and counts the connections and the bytes of the requests.
struct Canned {
    addr: SocketAddr,
    connections: Arc<std::sync::atomic::AtomicUsize>,
    requests: Arc<Mutex<Vec<String>>>,
}

async fn canned(response: Vec<u8>, delay: Option<Duration>) -> Canned {
    let listener = tokio::net::TcpListener::bind(loopback()).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let (count, seen) = (connections.clone(), requests.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (response, seen) = (response.clone(), seen.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                // The head, then as many body bytes as it declares.
                let complete = |r: &[u8]| {
                    let end = r.windows(4).position(|w| w == b"\r\n\r\n")?;
                    let head = String::from_utf8_lossy(&r[..end]).to_ascii_lowercase();
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().ok()))
                        .flatten()
                        .unwrap_or(0);
                    (r.len() >= end + 4 + length).then_some(())
                };
                while complete(&request).is_none() {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                seen.lock().unwrap().push(String::from_utf8_lossy(&request).into_owned());
                match delay {
                    Some(delay) => tokio::time::sleep(delay).await,
                    None => std::future::pending().await,
                }
                let _ = stream.write_all(&response).await;
                let _ = stream.shutdown().await;
            });
        }
    });
    Canned { addr, connections, requests }
}

fn http(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .into_bytes()
}

fn canned_client(addr: SocketAddr) -> ApiClient {
    ApiClient::new(&format!("http://{addr}/"), "t".repeat(40)).unwrap()
}

#[tokio::test]
async fn the_client_reads_chunked_answers_and_sends_the_token() {
    let body = r#"{"jsonrpc":"2.0","result":{"ledgers":[]},"id":1}"#;
    let (a, b) = body.split_at(10);
    let chunked = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\n\r\n",
        a.len(),
        b.len()
    );
    let server = canned(chunked.into_bytes(), Some(Duration::ZERO)).await;
    let result = canned_client(server.addr).call("ledger_list", Value::Null).await.unwrap();
    assert_eq!(result, json!({ "ledgers": [] }));
    let request = server.requests.lock().unwrap()[0].clone();
    assert!(request.starts_with("POST / HTTP/1.1\r\n"), "{request}");
    let lower = request.to_ascii_lowercase();
    assert!(lower.contains(&format!("authorization: bearer {}\r\n", "t".repeat(40))), "{request}");
    assert!(lower.contains("content-type: application/json\r\n"), "{request}");
    assert!(request.ends_with(r#"{"id":1,"jsonrpc":"2.0","method":"ledger_list"}"#), "{request}");
}

#[tokio::test]
async fn the_client_refuses_answers_over_its_size_limit() {
    let big = format!(r#"{{"jsonrpc":"2.0","result":"{}","id":1}}"#, "x".repeat(4096));
    // With a declared length, and chunked (no length known before reading).
    let declared = canned(http("200 OK", "", &big), Some(Duration::ZERO)).await;
    let chunked = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{big}\r\n0\r\n\r\n",
        big.len()
    );
    let chunked = canned(chunked.into_bytes(), Some(Duration::ZERO)).await;
    for server in [&declared, &chunked] {
        let client = canned_client(server.addr).with_max_response_bytes(1024);
        match client.call("ledger_list", Value::Null).await {
            Err(ClientError::InvalidResponse(why)) => assert!(why.contains("larger than 1024 bytes"), "{why}"),
            other => panic!("{other:?}"),
        }
        // The same answer under the default limit is fine.
        let result = canned_client(server.addr).call("ledger_list", Value::Null).await.unwrap();
        assert_eq!(result.as_str().map(str::len), Some(4096));
    }
}

#[tokio::test]
async fn the_client_reports_answers_that_are_not_json_rpc() {
    let cases = [
        (http("502 Bad Gateway", "", "upstream down"), "http 502"),
        (http("200 OK", "", "<html>"), "not json"),
        (http("200 OK", "", r#"{"jsonrpc":"2.0","result":1,"id":99}"#), "another call"),
        (http("200 OK", "", r#"{"jsonrpc":"2.0","id":1}"#), "neither result nor error"),
    ];
    for (response, expected) in cases {
        let server = canned(response, Some(Duration::ZERO)).await;
        let e = canned_client(server.addr).call("ledger_list", Value::Null).await.unwrap_err();
        assert!(e.rpc().is_none(), "{e:?}");
        assert!(e.to_string().to_ascii_lowercase().contains(expected), "{expected}: {e}");
    }
}

#[tokio::test]
async fn the_client_follows_no_redirect() {
    // A redirect elsewhere must not take the token along: it is an answer like any other.
    let elsewhere = canned(http("200 OK", "", "{}"), Some(Duration::ZERO)).await;
    let location = format!("Location: http://{}/\r\n", elsewhere.addr);
    let server = canned(http("307 Temporary Redirect", &location, ""), Some(Duration::ZERO)).await;
    let e = canned_client(server.addr).call("ledger_list", Value::Null).await.unwrap_err();
    assert!(matches!(e, ClientError::Http { status: 307, .. }), "{e:?}");
    assert_eq!(elsewhere.connections.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_client_gives_up_at_its_timeout_and_waits_longer_for_a_long_poll() {
    let never = canned(Vec::new(), None).await;
    let limit = Duration::from_millis(300);
    let e = canned_client(never.addr).with_timeout(limit).call("ledger_list", Value::Null).await.unwrap_err();
    assert!(matches!(e, ClientError::Timeout(t) if t == limit), "{e:?}");

    // objectives_wait gets its own timeout_ms on top: an answer after a second still arrives
    // with a 300 ms client timeout.
    let answer = http("200 OK", "", r#"{"jsonrpc":"2.0","result":{"done":[],"pending":[]},"id":1}"#);
    let slow = canned(answer, Some(Duration::from_secs(1))).await;
    let params = json!({ "objective_ids": [format!("DirectFund-{}", ledger_id_hex())], "timeout_ms": 60_000 });
    let result = canned_client(slow.addr).with_timeout(limit).call("objectives_wait", params).await.unwrap();
    assert_eq!(result["done"], json!([]));
}

#[tokio::test]
async fn a_body_far_over_the_limit_is_refused_before_it_is_read() {
    // The server answers 413 as soon as it sees the declared length; the client reports that
    // answer even though it could not send the whole body.
    let h = Harness::with_limit(1024).await;
    let e = rpc_code(h.client().call("ledger_list", json!({ "padding": "x".repeat(8 << 20) })).await);
    assert_eq!(e.code, RpcError::INVALID_REQUEST);
    assert!(e.message.contains("1024"), "{}", e.message);
    assert!(h.seen().is_empty());
}

async fn get_path(addr: SocketAddr, path: &str) -> Answer {
    raw(addr, format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await
}

#[tokio::test]
async fn health_and_metrics_answer_without_the_token() {
    use nitro_node::{api::Ops, health::Health, metrics::NodeMetrics};
    let dir = tempfile::tempdir().unwrap();
    let me: Address = ALICE.parse().unwrap();
    let ops = Ops { health: Health::new(), metrics: Some(NodeMetrics::new(me)) };
    let (tx, _rx) = mpsc::channel(1);
    let server = api::serve_with(ApiConfig::new(loopback(), dir.path().join("t")), tx, ops.clone()).await.unwrap();

    // Not ready until the node says so, with the reason.
    let answer = get_path(server.local_addr(), "/health").await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(answer.header("cache-control").as_deref(), Some("no-store"));
    assert_eq!(answer.json()["status"], "unavailable");
    assert!(answer.json()["reason"].as_str().unwrap().starts_with("starting"), "{}", answer.json());
    ops.health.store_open(me);
    ops.health.transport_listening("127.0.0.1:9".parse().unwrap());
    ops.health.chain_reachable(Some(42));
    ops.health.turned();
    let answer = get_path(server.local_addr(), "/health").await;
    assert_eq!(answer.status, 200);
    let report = answer.json();
    assert_eq!(report["status"], "ready");
    assert_eq!(report["address"], ALICE_CHECKSUMMED);
    assert_eq!(report["chain_head"], 42);
    assert!(report.get("reason").is_none());

    let metrics = get_path(server.local_addr(), "/metrics").await;
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.header("content-type").as_deref(), Some("text/plain; version=0.0.4; charset=utf-8"));
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains(&format!("nitro_node_info{{address=\"{ALICE_CHECKSUMMED}\"")), "{text}");

    // GET only; JSON-RPC still needs the token.
    let post =
        raw(server.local_addr(), b"POST /health HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(post.await.status, 405);
    assert_eq!(post_with(server.local_addr(), "", rpc("ledger_list", json!({})).as_bytes()).await.status, 401);
    server.shutdown().await.unwrap();

    // The plain server has no metrics.
    let (tx, _rx) = mpsc::channel(1);
    let plain = api::serve(ApiConfig::new(loopback(), dir.path().join("t")), tx).await.unwrap();
    assert_eq!(get_path(plain.local_addr(), "/metrics").await.status, 404);
    assert_eq!(get_path(plain.local_addr(), "/health").await.status, 503);
    plain.shutdown().await.unwrap();

    // The separate listener serves the two and nothing else, on any address.
    let separate = api::serve_ops("127.0.0.1:0".parse().unwrap(), ops).await.unwrap();
    assert_eq!(get_path(separate.local_addr(), "/health").await.status, 200);
    assert_eq!(get_path(separate.local_addr(), "/metrics").await.status, 200);
    assert_eq!(post_with(separate.local_addr(), "", rpc("ledger_list", json!({})).as_bytes()).await.status, 404);
    assert_eq!(get_path(separate.local_addr(), "/").await.status, 404);
    separate.shutdown().await.unwrap();
}
