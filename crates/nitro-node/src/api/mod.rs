//! JSON-RPC 2.0 API of the node, over HTTP/1.1 on a loopback address, behind a bearer token;
//! and the operations endpoints `GET /health` and `GET /metrics`, without it.
//!
//! The server knows nothing of the engine: [`serve`] checks the token, the JSON-RPC framing
//! and the shape of each method's `params` ([`ApiRequest::parse`]), then forwards the call as
//! an [`ApiCall`] over a channel and waits for the engine's answer on the call's `reply`
//! sender. The engine does the semantic checks (does the ledger exist, is there enough
//! money) and answers with a result or an [`RpcError`], usually [`RpcError::refused`].
//! [`serve_with`] also answers `GET /health` and `GET /metrics` from the node's [`Ops`]
//! (its [`Health`](crate::health::Health) and [`NodeMetrics`](crate::metrics::NodeMetrics));
//! [`serve_ops`] serves those two alone on a listener of their own.
//!
//! [`ApiClient`] is the other end, for the CLI: an HTTP client that talks to loopback
//! addresses only, so that the token never crosses a network in clear text.
//!
//! The wire format (every method's params and result, the error codes, the limits, the
//! health report and the metrics) is described in `docs/api.md`; the result types
//! ([`ObjectiveStarted`], [`LedgerSummary`], [`ObjectiveStatus`], [`WaitResult`], …)
//! serialize to those shapes.
//!
//! - `schema`: the methods, their params ([`ApiRequest`]) and the [`ApiCall`] the engine gets;
//! - `results`: what the methods answer;
//! - `error`: [`RpcError`] (the JSON-RPC error object and its codes) and [`ApiError`];
//! - `token`: the token file ([`load_or_create_token`]);
//! - `server`: [`serve`], [`ApiConfig`], [`ApiServer`];
//! - `ops`: `GET /health`, `GET /metrics`, [`serve_ops`];
//! - `client`: [`ApiClient`].

mod client;
mod error;
mod ops;
mod results;
mod schema;
mod server;
mod token;

pub use client::{ApiClient, ClientError, DEFAULT_CLIENT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES};
pub use error::{ApiError, RpcError};
pub use ops::{serve_ops, Ops, OpsServer};
pub use results::{
    AssetBalanceSummary, GuaranteeSummary, LedgerList, LedgerRole, LedgerStatus, LedgerSummary, ObjectiveList,
    ObjectiveStarted, ObjectiveStatus, PaymentSent, TopUpSlotSummary, VirtualRole, VirtualStatus, VirtualSummary,
    WaitResult,
};
pub use schema::{
    parse_amount, ApiCall, ApiRequest, AssetAmounts, LedgerOpen, ObjectiveFilter, ObjectiveState, ObjectivesWait,
    VirtualFund, DEFAULT_WAIT_MS, MAX_LEDGER_ASSETS, MAX_WAIT_MS, MAX_WAIT_OBJECTIVES, METHODS, OBJECTIVE_KINDS,
};
pub use server::{serve, serve_with, ApiConfig, ApiServer, DEFAULT_MAX_BODY_BYTES, ENGINE_TIMEOUT, MAX_BATCH};
pub use token::load_or_create_token;
