//! The JSON-RPC 2.0 error object every failed call answers and its codes ([`RpcError`]), and
//! why the server could not start ([`ApiError`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use thiserror::Error;

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

/// `s` cut to at most `max` bytes (on a character boundary), with `…` when cut: user input
/// quoted in error messages stays short.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
