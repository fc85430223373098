//! JSON-RPC 2.0 API of the node, over HTTP/1.1 on a loopback address, behind a bearer token.
//!
//! The server knows nothing of the engine: [`serve`] checks the token, the JSON-RPC framing
//! and the shape of each method's `params` ([`ApiRequest::parse`]), then forwards the call as
//! an [`ApiCall`] over a channel and waits for the engine's answer on the call's `reply`
//! sender. The engine does the semantic checks (does the ledger exist, is there enough
//! money) and answers with a result or an [`RpcError`], usually [`RpcError::refused`].
//!
//! [`ApiClient`] is the other end, for the CLI: a small HTTP/1.1 client that talks to
//! loopback addresses only, so that the token never crosses a network in clear text.
//!
//! The wire format (every method's params and result, the error codes, the limits) is
//! described in `docs/api.md`; the result types below ([`ObjectiveStarted`],
//! [`LedgerSummary`], [`ObjectiveStatus`], [`WaitResult`], …) serialize to those shapes.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alloy_primitives::{Address, U256};
use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use nitro_core::json;
use nitro_core::party::ObjectiveId;
use nitro_core::ChannelId;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// Every method the API serves; anything else is answered with [`RpcError::METHOD_NOT_FOUND`]
/// without reaching the engine.
pub const METHODS: &[&str] = &[
    "ledger_open",
    "ledger_close",
    "ledger_get",
    "ledger_list",
    "virtual_fund",
    "virtual_pay",
    "virtual_defund",
    "objective_get",
    "objective_list",
    "objective_cancel",
    "objectives_wait",
    "channel_force_close",
];

/// Parameters each method accepts (any other is refused with [`RpcError::INVALID_PARAMS`]).
const FIELDS: &[(&str, &[&str])] = &[
    ("ledger_open", &["counterparty", "my_amount", "counterparty_amount", "asset", "nonce"]),
    ("ledger_close", &["channel_id"]),
    ("ledger_get", &["channel_id"]),
    ("ledger_list", &[]),
    ("virtual_fund", &["counterparty", "amount", "counterparty_amount", "hub", "intermediaries", "asset", "nonce"]),
    ("virtual_pay", &["channel_id", "amount"]),
    ("virtual_defund", &["channel_id"]),
    ("objective_get", &["objective_id"]),
    ("objective_list", &["kind", "status", "channel_id"]),
    ("objective_cancel", &["objective_id"]),
    ("objectives_wait", &["objective_ids", "timeout_ms", "any"]),
    ("channel_force_close", &["channel_id"]),
];

/// Default limit on the size of a request body (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// How long the server waits for the engine's answer to a call (on top of an
/// `objectives_wait` call's own `timeout_ms`) before answering -32603.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most requests in one batch.
pub const MAX_BATCH: usize = 100;

/// `objectives_wait`: the `timeout_ms` used when none is given.
pub const DEFAULT_WAIT_MS: u64 = 30_000;

/// `objectives_wait`: the largest `timeout_ms` accepted (5 minutes).
pub const MAX_WAIT_MS: u64 = 300_000;

/// `objectives_wait`: the most objective ids one call may wait for.
pub const MAX_WAIT_OBJECTIVES: usize = 1_000;

/// Shortest token accepted in a token file.
const MIN_TOKEN_LEN: usize = 32;

/// Longest token accepted in a token file.
const MAX_TOKEN_LEN: usize = 512;

/// How long [`ApiServer::shutdown`] waits for open connections before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Largest response [`ApiClient`] reads (64 MiB).
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Default time [`ApiClient::call`] waits for an answer.
const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Errors on the wire
// ---------------------------------------------------------------------------------------------

/// A JSON-RPC 2.0 error object: what a failed call answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Error)]
#[error("JSON-RPC error {code}: {message}")]
pub struct RpcError {
    /// The code: one of the associated constants of this type.
    pub code: i64,
    /// A sentence for people.
    pub message: String,
    /// Details for programs (for invalid params: `{"field": <name>}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

impl RpcError {
    /// The body is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// The JSON is not a valid request object (or the body is too large).
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The method's params are missing, of the wrong type or malformed.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The server or the engine failed (engine gone, no answer in time, shutting down).
    pub const INTERNAL_ERROR: i64 = -32603;
    /// The engine refused the call; the message says why.
    pub const REFUSED: i64 = -32000;
    /// Missing or wrong bearer token (sent with HTTP 401).
    pub const UNAUTHORIZED: i64 = -32001;

    /// An error with `code` and `message` and no data.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    /// The same error carrying `data`.
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }

    /// -32700: the body is not JSON (`detail` says where it broke).
    pub fn parse_error(detail: impl fmt::Display) -> Self {
        Self::new(Self::PARSE_ERROR, format!("parse error: {detail}"))
    }

    /// -32600: not a valid request object.
    pub fn invalid_request(detail: impl fmt::Display) -> Self {
        Self::new(Self::INVALID_REQUEST, format!("invalid request: {detail}"))
    }

    /// -32601: no method called `method`.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(Self::METHOD_NOT_FOUND, format!("method not found: {}", truncate(method, 64)))
    }

    /// -32602: params malformed as a whole (not a single field's fault).
    pub fn invalid_params(detail: impl fmt::Display) -> Self {
        Self::new(Self::INVALID_PARAMS, format!("invalid params: {detail}"))
    }

    /// -32602: parameter `field` is missing or malformed; the message starts with the field's
    /// name and `data` is `{"field": field}`.
    pub fn invalid_field(field: &str, detail: impl fmt::Display) -> Self {
        let field = truncate(field, 64);
        Self::new(Self::INVALID_PARAMS, format!("invalid params: {field}: {detail}"))
            .with_data(json!({ "field": field }))
    }

    /// -32603: the server or the engine failed.
    pub fn internal(detail: impl fmt::Display) -> Self {
        Self::new(Self::INTERNAL_ERROR, format!("internal error: {detail}"))
    }

    /// -32001: missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        Self::new(Self::UNAUTHORIZED, "unauthorized: missing or wrong bearer token")
    }

    /// -32000: the engine refused the call; `message` is the engine's own words.
    pub fn refused(message: impl fmt::Display) -> Self {
        Self::new(Self::REFUSED, message.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Calls to the engine
// ---------------------------------------------------------------------------------------------

/// One validated call, forwarded to the engine.
///
/// `method` is one of [`METHODS`] and `params` is the canonical form
/// ([`ApiRequest::to_params`]) of params that passed [`ApiRequest::parse`], so
/// [`ApiCall::request`] succeeds on it. The engine answers through `reply` (or
/// [`ApiCall::respond`]); for a JSON-RPC notification nobody listens any more, so a failed
/// send must be ignored. Dropping `reply` unanswered makes the client see -32603.
#[derive(Debug)]
pub struct ApiCall {
    /// The method, one of [`METHODS`].
    pub method: String,
    /// The params: always an object, in canonical form (see [`ApiRequest::to_params`]).
    pub params: Value,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Result<Value, RpcError>>,
}

impl ApiCall {
    /// The typed request (already validated by the server, so this only fails on an
    /// `ApiCall` built by hand).
    pub fn request(&self) -> Result<ApiRequest, RpcError> {
        ApiRequest::parse(&self.method, &self.params)
    }

    /// Answers with `result`, serialized (one of the result types of this module, or any
    /// JSON); the answer is dropped if the client is gone or the call was a notification.
    pub fn respond<T: Serialize>(self, result: Result<T, RpcError>) {
        let answer = result.and_then(|v| serde_json::to_value(v).map_err(RpcError::internal));
        let _ = self.reply.send(answer);
    }
}

/// A call with its params parsed into typed values: what the engine carries out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApiRequest {
    /// `ledger_open`: open a ledger channel with a counterparty.
    LedgerOpen(LedgerOpen),
    /// `ledger_close`: close (defund) a ledger channel.
    LedgerClose {
        /// The ledger.
        channel_id: ChannelId,
    },
    /// `ledger_get`: one ledger's summary.
    LedgerGet {
        /// The ledger.
        channel_id: ChannelId,
    },
    /// `ledger_list`: every ledger's summary.
    LedgerList,
    /// `virtual_fund`: fund a virtual channel to a counterparty through intermediaries.
    VirtualFund(VirtualFund),
    /// `virtual_pay`: pay more in a virtual channel we fund.
    VirtualPay {
        /// The virtual channel.
        channel_id: ChannelId,
        /// How much more to pay.
        amount: U256,
    },
    /// `virtual_defund`: close a virtual channel.
    VirtualDefund {
        /// The virtual channel.
        channel_id: ChannelId,
    },
    /// `objective_get`: where an objective stands.
    ObjectiveGet {
        /// The objective.
        objective_id: ObjectiveId,
    },
    /// `objectives_wait`: long poll until objectives complete (or fail), or a timeout.
    ObjectivesWait(ObjectivesWait),
    /// `objective_list`: objectives, filtered.
    ObjectiveList(ObjectiveFilter),
    /// `objective_cancel`: stop an objective that has committed nothing yet.
    ObjectiveCancel {
        /// The objective.
        objective_id: ObjectiveId,
    },
    /// `channel_force_close`: take a ledger or virtual channel to chain alone.
    ChannelForceClose {
        /// The channel.
        channel_id: ChannelId,
    },
}

/// Where an objective stands, for `objective_list`'s filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectiveState {
    /// Going on.
    Pending,
    /// Complete.
    Done,
    /// Stopped for good (failed, declined or cancelled).
    Failed,
}

/// Params of `objective_list`: every field narrows the list.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ObjectiveFilter {
    /// Only this kind (`"DirectFund"`, `"DirectDefund"`, `"VirtualFund"`, `"VirtualDefund"`,
    /// `"ForceClose"`).
    pub kind: Option<String>,
    /// Only objectives in this state.
    pub status: Option<ObjectiveState>,
    /// Only objectives about this channel.
    pub channel_id: Option<ChannelId>,
}

/// The objective kinds `objective_list` filters on.
pub const OBJECTIVE_KINDS: &[&str] = &["DirectFund", "DirectDefund", "VirtualFund", "VirtualDefund", "ForceClose"];

/// Params of `ledger_open`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerOpen {
    /// The other participant.
    pub counterparty: Address,
    /// What we deposit.
    pub my_amount: U256,
    /// What the counterparty deposits.
    pub counterparty_amount: U256,
    /// The asset (the zero address: ETH).
    pub asset: Address,
    /// The channel nonce; `None`: the engine picks one.
    pub nonce: Option<u64>,
}

/// Params of `virtual_fund`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualFund {
    /// The payee, last participant of the channel.
    pub counterparty: Address,
    /// The intermediaries between us and the payee, in path order (at least one).
    pub intermediaries: Vec<Address>,
    /// What we (the payer) put in.
    pub amount: U256,
    /// What the payee puts in (usually zero).
    pub counterparty_amount: U256,
    /// The asset (the zero address: ETH).
    pub asset: Address,
    /// The channel nonce; `None`: the engine picks one.
    pub nonce: Option<u64>,
}

/// Params of `objectives_wait`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectivesWait {
    /// The objectives waited for (one to [`MAX_WAIT_OBJECTIVES`]).
    pub objective_ids: Vec<ObjectiveId>,
    /// How long to wait at most ([`DEFAULT_WAIT_MS`] when not given, at most [`MAX_WAIT_MS`]).
    pub timeout: Duration,
    /// `false`: answer when every one of them is done or failed; `true`: as soon as one is
    /// (or at the timeout either way).
    pub any: bool,
}

impl ApiRequest {
    /// Checks `params` against the shape `method` expects and parses them. Errors are
    /// -32601 for an unknown method and -32602 naming the offending field otherwise.
    pub fn parse(method: &str, params: &Value) -> Result<Self, RpcError> {
        let Some((method, known)) = FIELDS.iter().find(|(m, _)| *m == method) else {
            return Err(RpcError::method_not_found(method));
        };
        let p = Params::new(params, known)?;
        Ok(match *method {
            "ledger_open" => ApiRequest::LedgerOpen(LedgerOpen {
                counterparty: address(p.required("counterparty")?, "counterparty")?,
                my_amount: amount(p.required("my_amount")?, "my_amount")?,
                counterparty_amount: amount(p.required("counterparty_amount")?, "counterparty_amount")?,
                asset: p.optional("asset").map(|v| address(v, "asset")).transpose()?.unwrap_or(Address::ZERO),
                nonce: p.optional("nonce").map(|v| uint64(v, "nonce")).transpose()?,
            }),
            "ledger_close" => {
                ApiRequest::LedgerClose { channel_id: channel_id(p.required("channel_id")?, "channel_id")? }
            }
            "ledger_get" => ApiRequest::LedgerGet { channel_id: channel_id(p.required("channel_id")?, "channel_id")? },
            "ledger_list" => ApiRequest::LedgerList,
            "virtual_fund" => {
                let counterparty = address(p.required("counterparty")?, "counterparty")?;
                let intermediaries = match (p.optional("hub"), p.optional("intermediaries")) {
                    (Some(_), Some(_)) => {
                        return Err(RpcError::invalid_field("hub", "give either hub or intermediaries, not both"))
                    }
                    (Some(hub), None) => vec![address(hub, "hub")?],
                    (None, Some(list)) => address_list(list, "intermediaries")?,
                    (None, None) => return Err(RpcError::invalid_field("hub", "required (or intermediaries)")),
                };
                ApiRequest::VirtualFund(VirtualFund {
                    counterparty,
                    intermediaries,
                    amount: amount(p.required("amount")?, "amount")?,
                    counterparty_amount: p
                        .optional("counterparty_amount")
                        .map(|v| amount(v, "counterparty_amount"))
                        .transpose()?
                        .unwrap_or(U256::ZERO),
                    asset: p.optional("asset").map(|v| address(v, "asset")).transpose()?.unwrap_or(Address::ZERO),
                    nonce: p.optional("nonce").map(|v| uint64(v, "nonce")).transpose()?,
                })
            }
            "virtual_pay" => ApiRequest::VirtualPay {
                channel_id: channel_id(p.required("channel_id")?, "channel_id")?,
                amount: amount(p.required("amount")?, "amount")?,
            },
            "virtual_defund" => {
                ApiRequest::VirtualDefund { channel_id: channel_id(p.required("channel_id")?, "channel_id")? }
            }
            "objective_get" => {
                ApiRequest::ObjectiveGet { objective_id: objective_id(p.required("objective_id")?, "objective_id")? }
            }
            "objectives_wait" => {
                let ids = p.required("objective_ids")?;
                let list = ids.as_array().ok_or_else(|| wrong_type("objective_ids", "an array", ids))?;
                if list.is_empty() || list.len() > MAX_WAIT_OBJECTIVES {
                    return Err(RpcError::invalid_field(
                        "objective_ids",
                        format!("expected 1 to {MAX_WAIT_OBJECTIVES} objective ids, got {}", list.len()),
                    ));
                }
                let objective_ids = list
                    .iter()
                    .enumerate()
                    .map(|(i, v)| objective_id(v, &format!("objective_ids[{i}]")))
                    .collect::<Result<Vec<_>, _>>()?;
                let timeout_ms = match p.optional("timeout_ms") {
                    None => DEFAULT_WAIT_MS,
                    Some(v) => match v.as_u64() {
                        Some(ms) if ms <= MAX_WAIT_MS => ms,
                        _ => {
                            return Err(RpcError::invalid_field(
                                "timeout_ms",
                                format!("expected an integer from 0 to {MAX_WAIT_MS}, got {}", describe(v)),
                            ))
                        }
                    },
                };
                let any = match p.optional("any") {
                    None => false,
                    Some(v) => v.as_bool().ok_or_else(|| wrong_type("any", "true or false", v))?,
                };
                ApiRequest::ObjectivesWait(ObjectivesWait {
                    objective_ids,
                    timeout: Duration::from_millis(timeout_ms),
                    any,
                })
            }
            "objective_list" => {
                let kind = match p.optional("kind") {
                    None => None,
                    Some(v) => {
                        let k = string(v, "kind", "an objective kind")?;
                        if !OBJECTIVE_KINDS.contains(&k) {
                            return Err(RpcError::invalid_field(
                                "kind",
                                format!("one of {}", OBJECTIVE_KINDS.join(", ")),
                            ));
                        }
                        Some(k.to_owned())
                    }
                };
                let status = match p.optional("status") {
                    None => None,
                    Some(v) => Some(match string(v, "status", "pending, done or failed")? {
                        "pending" => ObjectiveState::Pending,
                        "done" => ObjectiveState::Done,
                        "failed" => ObjectiveState::Failed,
                        _ => return Err(RpcError::invalid_field("status", "pending, done or failed")),
                    }),
                };
                let channel_id = p.optional("channel_id").map(|v| channel_id(v, "channel_id")).transpose()?;
                ApiRequest::ObjectiveList(ObjectiveFilter { kind, status, channel_id })
            }
            "objective_cancel" => {
                ApiRequest::ObjectiveCancel { objective_id: objective_id(p.required("objective_id")?, "objective_id")? }
            }
            "channel_force_close" => {
                ApiRequest::ChannelForceClose { channel_id: channel_id(p.required("channel_id")?, "channel_id")? }
            }
            other => return Err(RpcError::method_not_found(other)),
        })
    }

    /// The method name of this request.
    pub fn method(&self) -> &'static str {
        match self {
            ApiRequest::LedgerOpen(_) => "ledger_open",
            ApiRequest::LedgerClose { .. } => "ledger_close",
            ApiRequest::LedgerGet { .. } => "ledger_get",
            ApiRequest::LedgerList => "ledger_list",
            ApiRequest::VirtualFund(_) => "virtual_fund",
            ApiRequest::VirtualPay { .. } => "virtual_pay",
            ApiRequest::VirtualDefund { .. } => "virtual_defund",
            ApiRequest::ObjectiveGet { .. } => "objective_get",
            ApiRequest::ObjectivesWait(_) => "objectives_wait",
            ApiRequest::ObjectiveList(_) => "objective_list",
            ApiRequest::ObjectiveCancel { .. } => "objective_cancel",
            ApiRequest::ChannelForceClose { .. } => "channel_force_close",
        }
    }

    /// The params in canonical form: every optional field with a default written out
    /// (`asset`, `counterparty_amount`, `timeout_ms`, `any`; `hub` turned into
    /// `intermediaries`), addresses EIP-55, amounts in decimal, nonces and `timeout_ms` as
    /// JSON numbers. [`ApiRequest::parse`] reads it back to the same request; the server
    /// forwards this form in [`ApiCall::params`].
    pub fn to_params(&self) -> Value {
        let addr = |a: &Address| Value::String(a.to_checksum(None));
        let amount = |v: &U256| Value::String(v.to_string());
        let id = |c: &ChannelId| Value::String(json::format_hex(c.as_slice()));
        let mut params = match self {
            ApiRequest::LedgerOpen(o) => json!({
                "counterparty": addr(&o.counterparty),
                "my_amount": amount(&o.my_amount),
                "counterparty_amount": amount(&o.counterparty_amount),
                "asset": addr(&o.asset),
            }),
            ApiRequest::LedgerClose { channel_id }
            | ApiRequest::LedgerGet { channel_id }
            | ApiRequest::VirtualDefund { channel_id }
            | ApiRequest::ChannelForceClose { channel_id } => json!({ "channel_id": id(channel_id) }),
            ApiRequest::ObjectiveCancel { objective_id } => json!({ "objective_id": objective_id.to_string() }),
            ApiRequest::ObjectiveList(f) => {
                let mut params = Map::new();
                if let Some(k) = &f.kind {
                    params.insert("kind".into(), Value::String(k.clone()));
                }
                if let Some(s) = f.status {
                    params.insert("status".into(), serde_json::to_value(s).unwrap_or(Value::Null));
                }
                if let Some(c) = &f.channel_id {
                    params.insert("channel_id".into(), id(c));
                }
                Value::Object(params)
            }
            ApiRequest::LedgerList => json!({}),
            ApiRequest::VirtualFund(v) => json!({
                "counterparty": addr(&v.counterparty),
                "intermediaries": v.intermediaries.iter().map(addr).collect::<Vec<_>>(),
                "amount": amount(&v.amount),
                "counterparty_amount": amount(&v.counterparty_amount),
                "asset": addr(&v.asset),
            }),
            ApiRequest::VirtualPay { channel_id, amount: paid } => {
                json!({ "channel_id": id(channel_id), "amount": amount(paid) })
            }
            ApiRequest::ObjectiveGet { objective_id } => json!({ "objective_id": objective_id.to_string() }),
            ApiRequest::ObjectivesWait(w) => json!({
                "objective_ids": w.objective_ids.iter().map(|o| o.to_string()).collect::<Vec<_>>(),
                "timeout_ms": u64::try_from(w.timeout.as_millis()).unwrap_or(u64::MAX),
                "any": w.any,
            }),
        };
        let nonce = match self {
            ApiRequest::LedgerOpen(LedgerOpen { nonce, .. }) | ApiRequest::VirtualFund(VirtualFund { nonce, .. }) => {
                *nonce
            }
            _ => None,
        };
        if let Some(nonce) = nonce {
            params["nonce"] = Value::from(nonce);
        }
        params
    }

    /// How long the call itself may legitimately take (the long poll's timeout; zero for
    /// every other method).
    fn wait_time(&self) -> Duration {
        match self {
            ApiRequest::ObjectivesWait(w) => w.timeout,
            _ => Duration::ZERO,
        }
    }
}

/// The params object of one call, with the names it may hold.
struct Params<'a> {
    map: Option<&'a Map<String, Value>>,
}

impl<'a> Params<'a> {
    /// Accepts an object (or nothing: absent, `null`, `[]`) whose every key is in `known`.
    fn new(params: &'a Value, known: &[&str]) -> Result<Self, RpcError> {
        let map = match params {
            Value::Null => None,
            Value::Array(a) if a.is_empty() => None,
            Value::Object(m) => Some(m),
            Value::Array(_) => {
                return Err(RpcError::invalid_params("expected named parameters (an object), got an array"))
            }
            other => return Err(RpcError::invalid_params(format!("expected an object, got {}", describe(other)))),
        };
        if let Some(unknown) = map.and_then(|m| m.keys().find(|k| !known.contains(&k.as_str()))) {
            let expected = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            return Err(RpcError::invalid_field(unknown, format!("unknown parameter (expected: {expected})")));
        }
        Ok(Self { map })
    }

    /// The value of `name`, treating `null` as absent.
    fn optional(&self, name: &str) -> Option<&'a Value> {
        self.map.and_then(|m| m.get(name)).filter(|v| !v.is_null())
    }

    fn required(&self, name: &str) -> Result<&'a Value, RpcError> {
        self.optional(name).ok_or_else(|| RpcError::invalid_field(name, "required"))
    }
}

/// A short description of a JSON value for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => format!("the number {}", truncate(&n.to_string(), 40)),
        Value::String(s) => format!("{:?}", truncate(s, 40)),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

fn wrong_type(field: &str, expected: &str, got: &Value) -> RpcError {
    RpcError::invalid_field(field, format!("expected {expected}, got {}", describe(got)))
}

fn string<'v>(v: &'v Value, field: &str, expected: &str) -> Result<&'v str, RpcError> {
    v.as_str().ok_or_else(|| wrong_type(field, expected, v))
}

fn address(v: &Value, field: &str) -> Result<Address, RpcError> {
    let s = string(v, field, "an address (0x and 40 hex digits)")?;
    json::parse_address(s).map_err(|e| RpcError::invalid_field(field, e))
}

fn address_list(v: &Value, field: &str) -> Result<Vec<Address>, RpcError> {
    let list = v.as_array().ok_or_else(|| wrong_type(field, "an array of addresses", v))?;
    if list.is_empty() {
        return Err(RpcError::invalid_field(field, "expected at least one address"));
    }
    list.iter().enumerate().map(|(i, a)| address(a, &format!("{field}[{i}]"))).collect()
}

fn amount(v: &Value, field: &str) -> Result<U256, RpcError> {
    let s = string(v, field, "an amount as a decimal or 0x-hex string")?;
    parse_amount(s).map_err(|e| RpcError::invalid_field(field, e))
}

fn channel_id(v: &Value, field: &str) -> Result<ChannelId, RpcError> {
    let s = string(v, field, "a channel id (0x and 64 hex digits)")?;
    json::decode_fixed::<32>(s).map(ChannelId::from).map_err(|e| RpcError::invalid_field(field, e))
}

fn objective_id(v: &Value, field: &str) -> Result<ObjectiveId, RpcError> {
    let s = string(v, field, "an objective id (Kind-0x<channel id>)")?;
    s.parse().map_err(|e: String| RpcError::invalid_field(field, e))
}

fn uint64(v: &Value, field: &str) -> Result<u64, RpcError> {
    if let Some(n) = v.as_u64() {
        return Ok(n);
    }
    let s = v.as_str().ok_or_else(|| wrong_type(field, "an unsigned 64-bit integer", v))?;
    let n = parse_amount(s).map_err(|e| RpcError::invalid_field(field, e))?;
    u64::try_from(n).map_err(|_| RpcError::invalid_field(field, format!("{} does not fit in 64 bits", truncate(s, 40))))
}

/// Parses an amount written in decimal (`"1000"`) or `0x`-hex (`"0x3e8"`), at most 256 bits.
pub fn parse_amount(s: &str) -> Result<U256, String> {
    if s.starts_with("0x") {
        return json::parse_uint(s, 256);
    }
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a decimal or 0x-hex amount, got {:?}", truncate(s, 40)));
    }
    if s.len() > 80 {
        return Err(format!("amount {:?} does not fit in 256 bits", truncate(s, 40)));
    }
    U256::from_str_radix(s, 10).map_err(|_| format!("amount {:?} does not fit in 256 bits", truncate(s, 40)))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

/// Serde for amounts: written as decimal strings, read as decimal or `0x`-hex strings.
mod amount_serde {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &U256, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<U256, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        parse_amount(&s).map_err(serde::de::Error::custom)
    }
}

/// Result of `ledger_open`, `ledger_close`, `virtual_fund` and `virtual_defund`: the
/// objective started, and the channel it is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectiveStarted {
    /// The objective (`Kind-0x<channel id>`).
    pub objective_id: ObjectiveId,
    /// The channel.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
}

/// Our role in a ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerRole {
    /// We propose changes (participant 0).
    Leader,
    /// We countersign the leader's proposals (participant 1).
    Follower,
}

/// Where a ledger stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerStatus {
    /// Being funded (its `ledger_open` objective is not done).
    Opening,
    /// Funded; can fund virtual channels.
    Open,
    /// Being closed (its `ledger_close` objective is not done).
    Closing,
    /// Concluded and paid out.
    Closed,
}

/// Funds a ledger holds for a virtual channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuaranteeSummary {
    /// The virtual channel.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// The amount held for it.
    #[serde(with = "amount_serde")]
    pub amount: U256,
}

/// Result of `ledger_get` (and each entry of `ledger_list`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerSummary {
    /// The ledger.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// The other participant.
    #[serde(with = "json::address")]
    pub counterparty: Address,
    /// Our role.
    pub role: LedgerRole,
    /// Where it stands.
    pub status: LedgerStatus,
    /// The asset (the zero address: ETH).
    #[serde(with = "json::address")]
    pub asset: Address,
    /// Our balance in the consensus state (not counting guarantees).
    #[serde(with = "amount_serde")]
    pub my_balance: U256,
    /// The counterparty's balance in the consensus state.
    #[serde(with = "amount_serde")]
    pub counterparty_balance: U256,
    /// Funds locked for virtual channels.
    pub guarantees: Vec<GuaranteeSummary>,
    /// Turn number of the consensus state.
    pub turn_num: u64,
}

/// Result of `ledger_list`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerList {
    /// Every ledger the node knows.
    pub ledgers: Vec<LedgerSummary>,
}

/// Result of `virtual_pay`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentSent {
    /// The virtual channel.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// Everything paid in the channel so far (the voucher's total).
    #[serde(with = "amount_serde")]
    pub paid: U256,
}

/// Result of `objective_get`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectiveStatus {
    /// The objective.
    pub objective_id: ObjectiveId,
    /// The channel it is about.
    #[serde(with = "json::bytes32")]
    pub channel_id: ChannelId,
    /// Complete.
    pub done: bool,
    /// Why it cannot go on, if it cannot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<String>,
    /// What it waits for, in words (`"done"` once done).
    pub waiting_for: String,
    /// For a channel on its way to chain: the chain time (unix seconds) at which its
    /// registered challenge finalizes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finalizes_at: Option<u64>,
}

/// Result of `objective_list`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectiveList {
    /// The objectives that pass the filter, by id.
    pub objectives: Vec<ObjectiveStatus>,
}

/// Result of `objectives_wait`: the ids asked about, split by where they stand.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitResult {
    /// Complete.
    pub done: Vec<ObjectiveId>,
    /// Cannot go on.
    #[serde(default)]
    pub failed: Vec<ObjectiveId>,
    /// Still going.
    pub pending: Vec<ObjectiveId>,
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

/// Why the API server could not start or run.
#[derive(Debug, Error)]
pub enum ApiError {
    /// The listen address is not a loopback address.
    #[error("refusing to listen on {0}: the API listens on loopback addresses only")]
    NotLoopback(SocketAddr),
    /// Binding the listen address failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Reading or writing the token file failed.
    #[error("token file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The token file exists but cannot be used.
    #[error("token file {}: {reason}", path.display())]
    BadTokenFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The system has no randomness to offer for a new token.
    #[error("cannot generate a token: {0}")]
    Random(String),
    /// The server stopped with an error.
    #[error("API server failed: {0}")]
    Server(#[source] io::Error),
}

/// Where and how the API server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiConfig {
    /// The address to listen on; must be loopback (`127.0.0.0/8` or `::1`). Port 0 picks a
    /// free port (see [`ApiServer::local_addr`]).
    pub listen: SocketAddr,
    /// The bearer-token file, created on first start (see [`load_or_create_token`]).
    pub token_file: PathBuf,
    /// Larger request bodies are refused with HTTP 413 ([`DEFAULT_MAX_BODY_BYTES`] is a good
    /// value).
    pub max_body_bytes: usize,
}

impl ApiConfig {
    /// Listens on `listen` with the token in `token_file` and a body limit of
    /// [`DEFAULT_MAX_BODY_BYTES`].
    pub fn new(listen: SocketAddr, token_file: impl Into<PathBuf>) -> Self {
        Self { listen, token_file: token_file.into(), max_body_bytes: DEFAULT_MAX_BODY_BYTES }
    }
}

/// A running API server; stop it with [`ApiServer::shutdown`] (dropping it stops it too,
/// without waiting).
pub struct ApiServer {
    local_addr: SocketAddr,
    token: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<io::Result<()>>,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer").field("local_addr", &self.local_addr).field("token", &"<redacted>").finish()
    }
}

impl ApiServer {
    /// The address it listens on (with the actual port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The URL to give [`ApiClient::new`]: `http://<local_addr>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Stops accepting connections, answers calls still waiting for the engine with -32603,
    /// and waits (a few seconds at most) for open connections to finish.
    pub async fn shutdown(self) -> Result<(), ApiError> {
        let _ = self.stop.send(true);
        let mut task = self.task;
        match tokio::time::timeout(SHUTDOWN_GRACE, &mut task).await {
            Ok(Ok(result)) => result.map_err(ApiError::Server),
            Ok(Err(join)) => Err(ApiError::Server(io::Error::other(join))),
            Err(_) => {
                task.abort();
                Ok(())
            }
        }
    }
}

/// Reads the bearer token from `path`, or creates the file with a new token (32 random bytes
/// as 64 hex digits, file mode 0600, parent directories 0700) if it does not exist.
///
/// An existing file must hold one token of 32 to 512 visible ASCII characters (surrounding
/// whitespace is ignored) and, on Unix, must not be readable or writable by group or others.
/// Creation is atomic: the file appears with its full content or not at all.
pub fn load_or_create_token(path: &Path) -> Result<String, ApiError> {
    match read_token(path) {
        Err(ApiError::TokenFile { source, .. }) if source.kind() == io::ErrorKind::NotFound => create_token(path),
        other => other,
    }
}

fn read_token(path: &Path) -> Result<String, ApiError> {
    let io_error = |source| ApiError::TokenFile { path: path.to_owned(), source };
    let bad = |reason: String| ApiError::BadTokenFile { path: path.to_owned(), reason };
    let metadata = std::fs::metadata(path).map_err(io_error)?;
    if !metadata.is_file() {
        return Err(bad("not a regular file".into()));
    }
    if metadata.len() > 4096 {
        return Err(bad(format!("too large ({} bytes) for a token", metadata.len())));
    }
    check_private(&metadata).map_err(bad)?;
    let text = std::fs::read_to_string(path).map_err(io_error)?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || token.len() > MAX_TOKEN_LEN {
        return Err(bad(format!(
            "the token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters long, found {}",
            token.len()
        )));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("the token must be visible ASCII characters without spaces".into()));
    }
    Ok(token.to_owned())
}

#[cfg(unix)]
fn check_private(metadata: &std::fs::Metadata) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(format!("mode {mode:o} lets other users read or change the token; run chmod 600 on it"));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_: &std::fs::Metadata) -> Result<(), String> {
    Ok(())
}

fn random_bytes<const N: usize>() -> Result<[u8; N], ApiError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::Random(e.to_string()))?;
    Ok(bytes)
}

fn create_token(path: &Path) -> Result<String, ApiError> {
    let io_error = |source| ApiError::TokenFile { path: path.to_owned(), source };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir).map_err(io_error)?;
    }
    let token = alloy_primitives::hex::encode(random_bytes::<32>()?);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "token".into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", alloy_primitives::hex::encode(random_bytes::<8>()?)));
    let written = write_private(&tmp, format!("{token}\n").as_bytes());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io_error(e));
    }
    // A hard link publishes the complete file, and fails if another process created the
    // token first: then that token wins.
    let linked = std::fs::hard_link(&tmp, path);
    let result = match linked {
        Ok(()) => Ok(token),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_token(path),
        Err(_) => std::fs::rename(&tmp, path).map(|()| token.clone()).map_err(io_error),
    };
    let _ = std::fs::remove_file(&tmp);
    if result.is_ok() {
        tracing::info!(path = %path.display(), "created the API token file");
    }
    result
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

fn write_private(path: &Path, content: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(content)?;
    file.sync_all()
}

/// Starts the API server: refuses a non-loopback `config.listen`, loads or creates the token
/// file, binds, and serves in a background task. Each valid call goes to `calls`.
pub async fn serve(config: ApiConfig, calls: mpsc::Sender<ApiCall>) -> Result<ApiServer, ApiError> {
    if !config.listen.ip().to_canonical().is_loopback() {
        return Err(ApiError::NotLoopback(config.listen));
    }
    let token = load_or_create_token(&config.token_file)?;
    let listener =
        TcpListener::bind(config.listen).await.map_err(|source| ApiError::Bind { addr: config.listen, source })?;
    let local_addr = listener.local_addr().map_err(|source| ApiError::Bind { addr: config.listen, source })?;
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        token: token.clone(),
        calls,
        max_body_bytes: config.max_body_bytes,
        stopped: stopped.clone(),
    });
    let app = Router::new().route("/", post(handle)).fallback(not_found).with_state(shared);
    let mut signal = stopped;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                // Either `true` was sent or the `ApiServer` was dropped.
                let _ = signal.wait_for(|stop| *stop).await;
            })
            .await
    });
    tracing::info!(%local_addr, "JSON-RPC API listening");
    Ok(ApiServer { local_addr, token, stop, task })
}

/// What every request handler shares.
struct Shared {
    token: String,
    calls: mpsc::Sender<ApiCall>,
    max_body_bytes: usize,
    stopped: watch::Receiver<bool>,
}

/// A parsed request object.
struct Envelope {
    /// `None`: a notification.
    id: Option<Value>,
    method: String,
    params: Value,
}

async fn not_found() -> Response {
    rpc_response(StatusCode::NOT_FOUND, error_object(Value::Null, RpcError::invalid_request("POST to / only")))
}

async fn handle(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Body) -> Response {
    if !authorized(&headers, &shared.token) {
        tracing::debug!("API request refused: missing or wrong token");
        let mut response = rpc_response(StatusCode::UNAUTHORIZED, error_object(Value::Null, RpcError::unauthorized()));
        response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let too_large = || {
        rpc_response(
            StatusCode::PAYLOAD_TOO_LARGE,
            error_object(
                Value::Null,
                RpcError::invalid_request(format!("request body larger than {} bytes", shared.max_body_bytes)),
            ),
        )
    };
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > shared.max_body_bytes as u64) {
        return too_large();
    }
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return rpc_response(
                StatusCode::BAD_REQUEST,
                error_object(Value::Null, RpcError::invalid_request("could not read the request body")),
            );
        };
        if bytes.len() + chunk.len() > shared.max_body_bytes {
            return too_large();
        }
        bytes.extend_from_slice(&chunk);
    }
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(e) => return rpc_response(StatusCode::OK, error_object(Value::Null, RpcError::parse_error(e))),
    };
    match value {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_BATCH {
                let why = format!("a batch holds 1 to {MAX_BATCH} requests, got {}", items.len());
                return rpc_response(StatusCode::OK, error_object(Value::Null, RpcError::invalid_request(why)));
            }
            let answers = futures::future::join_all(items.into_iter().map(|item| shared.handle_one(item))).await;
            let answers: Vec<Value> = answers.into_iter().flatten().collect();
            if answers.is_empty() {
                StatusCode::NO_CONTENT.into_response()
            } else {
                rpc_response(StatusCode::OK, Value::Array(answers))
            }
        }
        single => match shared.handle_one(single).await {
            Some(answer) => rpc_response(StatusCode::OK, answer),
            None => StatusCode::NO_CONTENT.into_response(),
        },
    }
}

impl Shared {
    /// Answers one request object; `None` for a notification.
    async fn handle_one(&self, request: Value) -> Option<Value> {
        let envelope = match parse_envelope(request) {
            Ok(e) => e,
            Err((id, error)) => return Some(error_object(id, error)),
        };
        let result = self.dispatch(&envelope).await;
        let id = envelope.id?;
        Some(match result {
            Ok(value) => json!({ "jsonrpc": "2.0", "result": value, "id": id }),
            Err(error) => error_object(id, error),
        })
    }

    /// Validates the call, forwards it to the engine and waits for the answer (not for a
    /// notification's).
    async fn dispatch(&self, envelope: &Envelope) -> Result<Value, RpcError> {
        let request = ApiRequest::parse(&envelope.method, &envelope.params)?;
        tracing::debug!(method = request.method(), notification = envelope.id.is_none(), "API call");
        let (reply, answer) = oneshot::channel();
        let call = ApiCall { method: request.method().to_owned(), params: request.to_params(), reply };
        let notification = envelope.id.is_none();
        let exchange = async {
            self.calls.send(call).await.map_err(|_| RpcError::internal("the engine is not running"))?;
            if notification {
                return Ok(Value::Null);
            }
            answer.await.unwrap_or_else(|_| Err(RpcError::internal("the engine dropped the call unanswered")))
        };
        let limit = ENGINE_TIMEOUT.saturating_add(request.wait_time());
        let mut stopped = self.stopped.clone();
        tokio::select! {
            result = tokio::time::timeout(limit, exchange) => {
                result.unwrap_or_else(|_| Err(RpcError::internal(format!("the engine did not answer within {limit:?}"))))
            }
            _ = stopped.wait_for(|stop| *stop) => Err(RpcError::internal("the server is shutting down")),
        }
    }
}

/// Checks the JSON-RPC 2.0 request object; on error, the id to answer with (the request's if
/// it is a valid id, else null).
fn parse_envelope(request: Value) -> Result<Envelope, (Value, RpcError)> {
    let Value::Object(mut object) = request else {
        return Err((Value::Null, RpcError::invalid_request("expected a request object")));
    };
    let id = match object.remove("id") {
        None => None,
        Some(id @ (Value::Null | Value::String(_) | Value::Number(_))) => Some(id),
        Some(_) => return Err((Value::Null, RpcError::invalid_request("id must be a string, a number or null"))),
    };
    let answer_id = id.clone().unwrap_or(Value::Null);
    let fail = |why: String| Err((answer_id.clone(), RpcError::invalid_request(why)));
    match object.remove("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        _ => return fail("jsonrpc must be \"2.0\"".into()),
    }
    let method = match object.remove("method") {
        Some(Value::String(m)) => m,
        _ => return fail("method must be a string".into()),
    };
    let params = match object.remove("params") {
        None | Some(Value::Null) => Value::Null,
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => return fail("params must be an object or an array".into()),
    };
    if let Some(extra) = object.keys().next() {
        return fail(format!("unexpected member {:?}", truncate(extra, 40)));
    }
    Ok(Envelope { id, method, params })
}

fn error_object(id: Value, error: RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "error": error, "id": id })
}

fn rpc_response(status: StatusCode, body: Value) -> Response {
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| {
        br#"{"jsonrpc":"2.0","error":{"code":-32603,"message":"internal error"},"id":null}"#.to_vec()
    });
    (status, [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], bytes).into_response()
}

fn authorized(headers: &HeaderMap, token: &str) -> bool {
    let Some(value) = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some((scheme, credentials)) = value.trim().split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer") && constant_time_eq(credentials.trim().as_bytes(), token.as_bytes())
}

/// Compares in time that depends on the length only (the token's length is no secret).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

// ---------------------------------------------------------------------------------------------
// Client
// ---------------------------------------------------------------------------------------------

/// Why a call through [`ApiClient`] failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The URL is not `http://<loopback host>[:port][/path]`.
    #[error("invalid API URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token cannot be sent in a header.
    #[error("invalid API token: {0}")]
    InvalidToken(String),
    /// The token file cannot be read.
    #[error("cannot read the token file {}: {source}", path.display())]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The node could not be reached, or the connection broke.
    #[error("cannot talk to the node at {addr}: {source}")]
    Transport {
        /// Where.
        addr: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// No answer in time.
    #[error("no answer from the node within {0:?}")]
    Timeout(Duration),
    /// An HTTP error without a JSON-RPC error body.
    #[error("HTTP {status} from the node: {body}")]
    Http {
        /// The status code.
        status: u16,
        /// The body, as text.
        body: String,
    },
    /// The answer is not a JSON-RPC response to the call.
    #[error("unexpected answer from the node: {0}")]
    InvalidResponse(String),
    /// The node answered with a JSON-RPC error (unauthorized, invalid params, refused, …).
    #[error(transparent)]
    Rpc(#[from] RpcError),
}

impl ClientError {
    /// The JSON-RPC error, if the node answered with one.
    pub fn rpc(&self) -> Option<&RpcError> {
        match self {
            ClientError::Rpc(e) => Some(e),
            _ => None,
        }
    }
}

/// A JSON-RPC client for the node's API, over plain HTTP/1.1 to a loopback address (one
/// connection per call).
pub struct ApiClient {
    url: String,
    addrs: Vec<SocketAddr>,
    host: String,
    path: String,
    token: String,
    timeout: Duration,
    next_id: AtomicU64,
}

impl fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiClient")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl ApiClient {
    /// A client for the node at `url` (`http://127.0.0.1:<port>/`, `http://localhost:<port>`,
    /// `http://[::1]:<port>/`; loopback only, so the token never leaves the machine) sending
    /// `token`.
    pub fn new(url: &str, token: impl Into<String>) -> Result<Self, ClientError> {
        let token = token.into();
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ClientError::InvalidToken("expected visible ASCII characters without spaces".into()));
        }
        let (addrs, host, path) =
            parse_url(url).map_err(|reason| ClientError::InvalidUrl { url: url.into(), reason })?;
        Ok(Self {
            url: url.to_owned(),
            addrs,
            host,
            path,
            token,
            timeout: DEFAULT_CLIENT_TIMEOUT,
            next_id: AtomicU64::new(1),
        })
    }

    /// A client for the node at `url`, with the token read from `token_file` (never created
    /// here: the node creates it on its first start).
    pub fn from_token_file(url: &str, token_file: &Path) -> Result<Self, ClientError> {
        let text = std::fs::read_to_string(token_file)
            .map_err(|source| ClientError::TokenFile { path: token_file.to_owned(), source })?;
        Self::new(url, text.trim())
    }

    /// Waits at most `timeout` for each answer (default 60 s); `objectives_wait` calls get
    /// their own `timeout_ms` on top.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The URL it talks to.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Calls `method` with `params` (an object, or `Value::Null` for none) and returns the
    /// result.
    pub async fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut request = json!({ "jsonrpc": "2.0", "id": id, "method": method });
        if !params.is_null() {
            request["params"] = params;
        }
        let mut limit = self.timeout;
        if method == "objectives_wait" {
            let wait = request["params"]["timeout_ms"].as_u64().unwrap_or(DEFAULT_WAIT_MS).min(MAX_WAIT_MS);
            limit = limit.saturating_add(Duration::from_millis(wait));
        }
        let body = serde_json::to_vec(&request).map_err(|e| ClientError::InvalidResponse(e.to_string()))?;
        let (status, body) =
            tokio::time::timeout(limit, self.post(&body)).await.map_err(|_| ClientError::Timeout(limit))??;
        parse_rpc_answer(status, &body, id)
    }

    /// [`ApiClient::call`], with the result deserialized into `T` (one of this module's
    /// result types).
    pub async fn call_as<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, ClientError> {
        let value = self.call(method, params).await?;
        serde_json::from_value(value).map_err(|e| ClientError::InvalidResponse(format!("{method} result: {e}")))
    }

    async fn connect(&self) -> Result<(TcpStream, SocketAddr), ClientError> {
        let mut last = None;
        for addr in &self.addrs {
            match TcpStream::connect(addr).await {
                Ok(stream) => return Ok((stream, *addr)),
                Err(e) => last = Some((addr, e)),
            }
        }
        let (addr, source) = match last {
            Some((addr, e)) => (addr.to_string(), e),
            None => (self.host.clone(), io::Error::new(io::ErrorKind::NotFound, "no address")),
        };
        Err(ClientError::Transport { addr, source })
    }

    async fn post(&self, body: &[u8]) -> Result<(u16, Vec<u8>), ClientError> {
        let (mut stream, addr) = self.connect().await?;
        let transport = |source| ClientError::Transport { addr: addr.to_string(), source };
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            self.token,
            body.len()
        );
        let mut request = head.into_bytes();
        request.extend_from_slice(body);
        // Read even if the write failed: the server may have answered early (HTTP 413).
        let written = stream.write_all(&request).await;
        let mut response = Vec::new();
        let read = (&mut stream).take(MAX_RESPONSE_BYTES + 1).read_to_end(&mut response).await;
        match parse_http_response(&response) {
            Ok(answer) => Ok(answer),
            Err(reason) => match (written, read) {
                (Err(e), _) | (_, Err(e)) => Err(transport(e)),
                _ if response.len() as u64 > MAX_RESPONSE_BYTES => {
                    Err(ClientError::InvalidResponse(format!("response larger than {MAX_RESPONSE_BYTES} bytes")))
                }
                _ => Err(ClientError::InvalidResponse(reason)),
            },
        }
    }
}

/// Splits `http://host[:port][/path]` into the addresses to try, the Host header and the path.
fn parse_url(url: &str) -> Result<(Vec<SocketAddr>, String, String), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs are supported")?;
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], &rest[i..]),
        Some(_) => return Err("queries and fragments are not supported".into()),
        None => (rest, "/"),
    };
    if path.contains(['?', '#']) || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the path must be plain visible ASCII without query or fragment".into());
    }
    if authority.contains('@') {
        return Err("user information is not supported".into());
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (ip, after) = v6.split_once(']').ok_or("unclosed [ in the host")?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or("expected :port after ]")?),
        };
        (ip, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    let port: u16 = match port {
        None => 80,
        Some(p) => p.parse().map_err(|_| format!("invalid port {:?}", truncate(p, 20)))?,
    };
    let ips: Vec<IpAddr> = if host.eq_ignore_ascii_case("localhost") {
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)]
    } else {
        let ip: IpAddr =
            host.parse().map_err(|_| format!("the host must be localhost or an IP address, got {host:?}"))?;
        if !ip.to_canonical().is_loopback() {
            return Err(format!("{ip} is not a loopback address: the token would cross the network in clear text"));
        }
        vec![ip]
    };
    Ok((ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect(), authority.to_owned(), path.to_owned()))
}

/// Splits a raw HTTP/1.x response into its status and (de-chunked) body.
fn parse_http_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no complete HTTP response")?;
    let head = std::str::from_utf8(&raw[..end]).map_err(|_| "HTTP header is not UTF-8")?;
    let rest = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().unwrap_or_default().starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 status line: {:?}", truncate(status_line, 60)));
    }
    let status: u16 = parts.next().and_then(|s| s.parse().ok()).ok_or("no status code")?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else { continue };
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(value.parse::<usize>().map_err(|_| "invalid Content-Length")?);
        }
    }
    let body = if chunked {
        decode_chunked(rest)?
    } else if let Some(n) = length {
        rest.get(..n).ok_or("response body shorter than its Content-Length")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn decode_chunked(mut raw: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").ok_or("truncated chunk size")?;
        let line = std::str::from_utf8(&raw[..line_end]).map_err(|_| "chunk size is not UTF-8")?;
        let size = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).map_err(|_| format!("invalid chunk size {:?}", truncate(size, 20)))?;
        raw = &raw[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = raw.get(..size).ok_or("truncated chunk")?;
        body.extend_from_slice(chunk);
        raw = raw.get(size..).and_then(|r| r.strip_prefix(b"\r\n")).ok_or("chunk not followed by CRLF")?;
    }
}

/// Turns the HTTP answer to call `id` into its result or error.
fn parse_rpc_answer(status: u16, body: &[u8], id: u64) -> Result<Value, ClientError> {
    let text = || String::from_utf8_lossy(&body[..body.len().min(500)]).into_owned();
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) if status != 200 => return Err(ClientError::Http { status, body: text() }),
        Err(e) => return Err(ClientError::InvalidResponse(format!("not JSON ({e}): {}", text()))),
    };
    if let Some(error) = value.get("error") {
        let error: RpcError = serde_json::from_value(error.clone())
            .map_err(|e| ClientError::InvalidResponse(format!("malformed error object: {e}")))?;
        return Err(ClientError::Rpc(error));
    }
    if status != 200 {
        return Err(ClientError::Http { status, body: text() });
    }
    if value.get("id") != Some(&Value::from(id)) {
        return Err(ClientError::InvalidResponse(format!("answer to another call: {}", text())));
    }
    match value.get("result") {
        Some(result) => Ok(result.clone()),
        None => Err(ClientError::InvalidResponse(format!("neither result nor error: {}", text()))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_in_decimal_and_hex() {
        assert_eq!(parse_amount("0"), Ok(U256::ZERO));
        assert_eq!(parse_amount("1000"), Ok(U256::from(1000)));
        assert_eq!(parse_amount("0x3e8"), Ok(U256::from(1000)));
        assert_eq!(parse_amount(&U256::MAX.to_string()), Ok(U256::MAX));
        assert!(parse_amount("115792089237316195423570985008687907853269984665640564039457584007913129639936").is_err());
        for bad in ["", "-1", "+1", "1.5", "1e3", " 1", "0x", "0xg", "١"] {
            assert!(parse_amount(bad).is_err(), "{bad:?}");
        }
        assert!(parse_amount(&"9".repeat(10_000)).is_err());
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn urls() {
        let (addrs, host, path) = parse_url("http://127.0.0.1:8545").unwrap();
        assert_eq!(
            (addrs, host.as_str(), path.as_str()),
            (vec!["127.0.0.1:8545".parse().unwrap()], "127.0.0.1:8545", "/")
        );
        let (addrs, _, path) = parse_url("http://[::1]:9/rpc").unwrap();
        assert_eq!((addrs, path.as_str()), (vec!["[::1]:9".parse().unwrap()], "/rpc"));
        assert_eq!(parse_url("http://localhost:1/").unwrap().0.len(), 2);
        for bad in [
            "https://127.0.0.1:1/",
            "http://10.0.0.1:1/",
            "http://example.com:1/",
            "http://127.0.0.1:x/",
            "http://127.0.0.1:1/?a",
            "http://u@127.0.0.1:1/",
            "http://[::1/",
            "127.0.0.1:1",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn http_responses() {
        let raw = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}junk";
        assert_eq!(parse_http_response(raw), Ok((200, b"{}".to_vec())));
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n1\r\nd\r\n0\r\n\r\n";
        assert_eq!(parse_http_response(raw), Ok((200, b"abcd".to_vec())));
        assert_eq!(parse_http_response(b"HTTP/1.1 204 No Content\r\n\r\n"), Ok((204, vec![])));
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SMTP 200\r\n\r\n",
            b"HTTP/1.1 abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n{}",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nff\r\nab",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(parse_http_response(bad).is_err());
        }
    }

    #[test]
    fn envelopes() {
        let e = parse_envelope(json!({"jsonrpc": "2.0", "method": "m", "id": 7})).ok().unwrap();
        assert_eq!((e.id, e.method.as_str(), e.params), (Some(json!(7)), "m", Value::Null));
        let notification = parse_envelope(json!({"jsonrpc": "2.0", "method": "m", "params": {}})).ok().unwrap();
        assert!(notification.id.is_none());
        let (id, e) = parse_envelope(json!({"jsonrpc": "2.0", "method": 1, "id": "x"})).err().unwrap();
        assert_eq!((id, e.code), (json!("x"), RpcError::INVALID_REQUEST));
        let (id, _) = parse_envelope(json!({"jsonrpc": "2.0", "method": "m", "id": [1]})).err().unwrap();
        assert_eq!(id, Value::Null);
        for bad in [
            json!(1),
            json!("x"),
            json!({"method": "m", "id": 1}),
            json!({"jsonrpc": "1.0", "method": "m", "id": 1}),
            json!({"jsonrpc": "2.0", "method": "m", "params": 3, "id": 1}),
            json!({"jsonrpc": "2.0", "method": "m", "param": {}, "id": 1}),
        ] {
            assert_eq!(parse_envelope(bad).err().unwrap().1.code, RpcError::INVALID_REQUEST);
        }
    }

    #[test]
    fn every_method_has_its_fields() {
        assert_eq!(METHODS.len(), FIELDS.len());
        for m in METHODS {
            assert!(FIELDS.iter().any(|(f, _)| f == m), "{m}");
        }
    }

    #[test]
    fn results_round_trip() {
        let id: ChannelId = ChannelId::repeat_byte(0xab);
        let objective = ObjectiveId::VirtualFund(id);
        let started = ObjectiveStarted { objective_id: objective, channel_id: id };
        let v = serde_json::to_value(&started).unwrap();
        assert_eq!(v["objective_id"], json!(format!("VirtualFund-0x{}", "ab".repeat(32))));
        assert_eq!(serde_json::from_value::<ObjectiveStarted>(v).unwrap(), started);
        let paid = PaymentSent { channel_id: id, paid: U256::from(1_000_000u64) };
        let v = serde_json::to_value(&paid).unwrap();
        assert_eq!(v["paid"], json!("1000000"));
        assert_eq!(serde_json::from_value::<PaymentSent>(v).unwrap(), paid);
    }
}
