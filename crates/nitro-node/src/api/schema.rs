//! What a call is: the methods, each method's params checked and parsed into an
//! [`ApiRequest`], and the [`ApiCall`] the server hands the engine.
//!
//! The server checks the *shape* of the params here (presence, JSON types, hex lengths,
//! EIP-55 checksums, ranges); the engine checks their *meaning*.

use std::time::Duration;

use alloy_primitives::{Address, U256};
use nitro_core::json;
use nitro_core::party::ObjectiveId;
use nitro_core::ChannelId;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use tokio::sync::oneshot;

use super::error::{truncate, RpcError};

#[path = "schema_assets.rs"]
mod assets;
pub use assets::{AssetAmounts, MAX_LEDGER_ASSETS};

/// Every method the API serves; anything else is answered with [`RpcError::METHOD_NOT_FOUND`]
/// without reaching the engine.
pub const METHODS: &[&str] = &[
    "ledger_open",
    "ledger_close",
    "ledger_top_up",
    "ledger_withdraw",
    "ledger_get",
    "ledger_list",
    "virtual_fund",
    "virtual_pay",
    "virtual_defund",
    "virtual_get",
    "objective_get",
    "objective_list",
    "objective_cancel",
    "objectives_wait",
    "channel_force_close",
];

/// Parameters each method accepts (any other is refused with [`RpcError::INVALID_PARAMS`]).
const FIELDS: &[(&str, &[&str])] = &[
    ("ledger_open", &["counterparty", "my_amount", "counterparty_amount", "asset", "assets", "nonce"]),
    ("ledger_close", &["channel_id"]),
    ("ledger_top_up", &["channel_id", "amount", "asset"]),
    ("ledger_withdraw", &["channel_id", "amount", "asset"]),
    ("ledger_get", &["channel_id"]),
    ("ledger_list", &[]),
    ("virtual_fund", &["counterparty", "amount", "counterparty_amount", "hub", "intermediaries", "asset", "nonce"]),
    ("virtual_pay", &["channel_id", "amount"]),
    ("virtual_defund", &["channel_id"]),
    ("virtual_get", &["channel_id"]),
    ("objective_get", &["objective_id"]),
    ("objective_list", &["kind", "status", "channel_id"]),
    ("objective_cancel", &["objective_id"]),
    ("objectives_wait", &["objective_ids", "timeout_ms", "any"]),
    ("channel_force_close", &["channel_id"]),
];

/// `objectives_wait`: the `timeout_ms` used when none is given.
pub const DEFAULT_WAIT_MS: u64 = 30_000;

/// `objectives_wait`: the largest `timeout_ms` accepted (5 minutes).
pub const MAX_WAIT_MS: u64 = 300_000;

/// `objectives_wait`: the most objective ids one call may wait for.
pub const MAX_WAIT_OBJECTIVES: usize = 1_000;

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
    /// `ledger_top_up`: deposit `amount` more of the ledger's asset into an open ledger of
    /// ours (ADR-0022 §4: reserve a slot, deposit, credit).
    LedgerTopUp {
        /// The ledger.
        channel_id: ChannelId,
        /// How much more to deposit.
        amount: U256,
        /// Of which asset (`None`: the ledger's first, ETH when it holds ETH).
        asset: Option<Address>,
    },
    /// `ledger_withdraw`: withdraw part of our own funds from a ledger to chain, keeping the
    /// virtual channels it funds (the ledger migrates to a successor, ADR-0022 §5).
    LedgerWithdraw {
        /// The ledger (or one it replaced: the successor is followed).
        channel_id: ChannelId,
        /// How much of our balance to withdraw.
        amount: U256,
        /// Of which asset (`None`: the ledger's single asset).
        asset: Option<Address>,
    },
    /// `ledger_get`: one ledger's summary.
    LedgerGet {
        /// The ledger.
        channel_id: ChannelId,
    },
    /// `ledger_list`: every ledger's summary.
    LedgerList,
    /// `virtual_get`: one virtual channel's summary (what was put in and paid so far).
    VirtualGet {
        /// The virtual channel.
        channel_id: ChannelId,
    },
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
    /// `"ForceClose"`, `"Withdraw"`).
    pub kind: Option<String>,
    /// Only objectives in this state.
    pub status: Option<ObjectiveState>,
    /// Only objectives about this channel.
    pub channel_id: Option<ChannelId>,
}

/// The objective kinds `objective_list` filters on.
pub const OBJECTIVE_KINDS: &[&str] =
    &["DirectFund", "DirectDefund", "VirtualFund", "VirtualDefund", "ForceClose", "Withdraw", "TopUp"];

/// Params of `ledger_open`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerOpen {
    /// The other participant.
    pub counterparty: Address,
    /// What each deposits, per asset (one or more, each asset once).
    pub assets: Vec<AssetAmounts>,
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
                assets: assets::parse(
                    p.optional("assets"),
                    p.optional("asset"),
                    p.optional("my_amount"),
                    p.optional("counterparty_amount"),
                )?,
                nonce: p.optional("nonce").map(|v| uint64(v, "nonce")).transpose()?,
            }),
            "ledger_close" => {
                ApiRequest::LedgerClose { channel_id: channel_id(p.required("channel_id")?, "channel_id")? }
            }
            "ledger_top_up" => ApiRequest::LedgerTopUp {
                channel_id: channel_id(p.required("channel_id")?, "channel_id")?,
                amount: amount(p.required("amount")?, "amount")?,
                asset: p.optional("asset").map(|v| address(v, "asset")).transpose()?,
            },
            "ledger_withdraw" => ApiRequest::LedgerWithdraw {
                channel_id: channel_id(p.required("channel_id")?, "channel_id")?,
                amount: amount(p.required("amount")?, "amount")?,
                asset: p.optional("asset").map(|v| address(v, "asset")).transpose()?,
            },
            "ledger_get" => ApiRequest::LedgerGet { channel_id: channel_id(p.required("channel_id")?, "channel_id")? },
            "ledger_list" => ApiRequest::LedgerList,
            "virtual_get" => {
                ApiRequest::VirtualGet { channel_id: channel_id(p.required("channel_id")?, "channel_id")? }
            }
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
            ApiRequest::LedgerTopUp { .. } => "ledger_top_up",
            ApiRequest::LedgerWithdraw { .. } => "ledger_withdraw",
            ApiRequest::LedgerGet { .. } => "ledger_get",
            ApiRequest::LedgerList => "ledger_list",
            ApiRequest::VirtualGet { .. } => "virtual_get",
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
            ApiRequest::LedgerOpen(o) => {
                let mut params = assets::to_params(&o.assets);
                params["counterparty"] = addr(&o.counterparty);
                params
            }
            ApiRequest::LedgerClose { channel_id }
            | ApiRequest::LedgerGet { channel_id }
            | ApiRequest::VirtualGet { channel_id }
            | ApiRequest::VirtualDefund { channel_id }
            | ApiRequest::ChannelForceClose { channel_id } => json!({ "channel_id": id(channel_id) }),
            ApiRequest::LedgerWithdraw { channel_id, amount: a, asset }
            | ApiRequest::LedgerTopUp { channel_id, amount: a, asset } => {
                let mut params = json!({ "channel_id": id(channel_id), "amount": amount(a) });
                if let Some(asset) = asset {
                    params["asset"] = addr(asset);
                }
                params
            }
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
    pub(crate) fn wait_time(&self) -> Duration {
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

    fn parsed(method: &str, params: Value) -> ApiRequest {
        let request = ApiRequest::parse(method, &params).unwrap_or_else(|e| panic!("{method} {params}: {e:?}"));
        assert_eq!(request.method(), method);
        // The canonical form reads back to the same request.
        assert_eq!(ApiRequest::parse(method, &request.to_params()).unwrap(), request, "{method}");
        request
    }

    fn refused(method: &str, params: Value) -> RpcError {
        ApiRequest::parse(method, &params).expect_err(&format!("{method} {params} accepted"))
    }

    #[test]
    fn objective_filters_cancels_and_force_closes_parse_and_round_trip() {
        let channel = format!("0x{}", "cd".repeat(32));
        let filter =
            parsed("objective_list", json!({ "kind": "VirtualFund", "status": "failed", "channel_id": channel }));
        let ApiRequest::ObjectiveList(f) = filter else { panic!("{filter:?}") };
        assert_eq!(f.kind.as_deref(), Some("VirtualFund"));
        assert_eq!(f.status, Some(ObjectiveState::Failed));
        assert_eq!(f.channel_id.map(|c| json::format_hex(c.as_slice())), Some(channel.clone()));
        for status in ["pending", "done"] {
            parsed("objective_list", json!({ "status": status }));
        }
        assert_eq!(parsed("objective_list", json!(null)), ApiRequest::ObjectiveList(ObjectiveFilter::default()));
        assert_eq!(parsed("objective_list", json!([])), ApiRequest::ObjectiveList(ObjectiveFilter::default()));
        parsed("objective_cancel", json!({ "objective_id": format!("ForceClose-{channel}") }));
        parsed("channel_force_close", json!({ "channel_id": channel }));
        assert_eq!(
            parsed("objectives_wait", json!({ "objective_ids": [format!("DirectFund-{channel}")] })).wait_time(),
            Duration::from_millis(DEFAULT_WAIT_MS)
        );
        assert_eq!(parsed("ledger_list", json!({})).wait_time(), Duration::ZERO);

        let e = refused("objective_list", json!({ "kind": "Lunch" }));
        assert_eq!(e.code, RpcError::INVALID_PARAMS);
        assert!(e.message.contains("one of DirectFund, DirectDefund, VirtualFund, VirtualDefund, ForceClose"), "{e:?}");
        let e = refused("objective_list", json!({ "status": "sleeping" }));
        assert!(e.message.contains("pending, done or failed"), "{e:?}");
        let e = refused("objective_list", json!({ "status": 3 }));
        assert!(e.message.contains("the number 3"), "{e:?}");
        assert_eq!(refused("objective_cancel", json!({})).data, Some(json!({ "field": "objective_id" })));
        assert_eq!(refused("channel_force_close", json!({ "channel_id": "0x12" })).code, RpcError::INVALID_PARAMS);
        assert_eq!(refused("ledger_destroy", json!({})).code, RpcError::METHOD_NOT_FOUND);
    }

    #[test]
    fn params_must_be_named_and_known() {
        let e = refused("ledger_list", json!([1]));
        assert!(e.message.contains("expected named parameters (an object), got an array"), "{e:?}");
        for (params, described) in
            [(json!(true), "true"), (json!(7), "the number 7"), (json!("x"), "\"x\""), (json!(1.5), "the number 1.5")]
        {
            let e = refused("ledger_list", params);
            assert!(e.message.contains(&format!("expected an object, got {described}")), "{e:?}");
        }
        let e = refused("ledger_list", json!({ "extra": 1 }));
        assert!(e.message.contains("unknown parameter (expected: none)"), "{e:?}");
        let e = refused("ledger_get", json!({ "extra": 1 }));
        assert!(e.message.contains("unknown parameter (expected: channel_id)"), "{e:?}");
        let e = refused("virtual_pay", json!({ "channel_id": null, "amount": "1" }));
        assert_eq!(e.data, Some(json!({ "field": "channel_id" })), "null is absent: {e:?}");
        assert!(describe(&json!([1])).contains("an array") && describe(&json!({})).contains("an object"));
        assert_eq!(describe(&Value::Null), "null");
    }

    #[test]
    fn ledger_top_up_parses_and_round_trips() {
        let channel = format!("0x{}", "ab".repeat(32));
        let request = parsed("ledger_top_up", json!({ "channel_id": channel, "amount": "500" }));
        let ApiRequest::LedgerTopUp { amount, .. } = request else { panic!("{request:?}") };
        assert_eq!(amount, U256::from(500));
        let e = refused("ledger_top_up", json!({ "channel_id": channel }));
        assert!(e.message.contains("amount"), "{e:?}");
        let e = refused("ledger_top_up", json!({ "channel_id": channel, "amount": "-1" }));
        assert!(e.message.contains("amount"), "{e:?}");
        let e = refused("ledger_top_up", json!({ "amount": "1" }));
        assert!(e.message.contains("channel_id"), "{e:?}");
    }

    #[test]
    fn every_method_has_its_fields() {
        assert_eq!(METHODS.len(), FIELDS.len());
        for m in METHODS {
            assert!(FIELDS.iter().any(|(f, _)| f == m), "{m}");
        }
    }
}
