//! [`ApiClient`]: the CLI's end of the API, a JSON-RPC client over HTTP (`reqwest`) that
//! talks to loopback addresses only, so that the token never crosses a network in clear
//! text. It sends no request through a proxy and follows no redirect, for the same reason.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{self, HeaderValue};
use reqwest::Url;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use thiserror::Error;

use super::error::{truncate, RpcError};
use super::schema::{DEFAULT_WAIT_MS, MAX_WAIT_MS};

/// Default limit on the size of a response [`ApiClient`] reads (64 MiB).
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 << 20;

/// Default time [`ApiClient::call`] waits for an answer.
pub const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

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

/// A JSON-RPC client for the node's API, over plain HTTP/1.1 to a loopback address
/// (connections are kept alive between calls).
pub struct ApiClient {
    url: String,
    target: Url,
    authority: String,
    http: reqwest::Client,
    authorization: HeaderValue,
    timeout: Duration,
    max_response_bytes: usize,
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
        let invalid_token = || ClientError::InvalidToken("expected visible ASCII characters without spaces".into());
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid_token());
        }
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| invalid_token())?;
        authorization.set_sensitive(true);
        let invalid_url = |reason: String| ClientError::InvalidUrl { url: url.into(), reason };
        let target = check_url(url).map_err(invalid_url)?;
        let port = target.port_or_known_default().unwrap_or(80);
        let authority = match target.host_str() {
            Some(host) => format!("{host}:{port}"),
            None => url.to_owned(),
        };
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(30));
        if target.host_str() == Some("localhost") {
            // Never ask a resolver: localhost is the loopback addresses, whatever the hosts
            // file says.
            builder = builder.resolve_to_addrs(
                "localhost",
                &[
                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
                    SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), port),
                ],
            );
        }
        let http = builder.build().map_err(|e| invalid_url(format!("cannot build an HTTP client: {}", chain(&e))))?;
        Ok(Self {
            url: url.to_owned(),
            target,
            authority,
            http,
            authorization,
            timeout: DEFAULT_CLIENT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
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

    /// Refuses answers larger than `bytes` (default [`DEFAULT_MAX_RESPONSE_BYTES`]) with
    /// [`ClientError::InvalidResponse`].
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.max_response_bytes = bytes;
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
            tokio::time::timeout(limit, self.post(body)).await.map_err(|_| ClientError::Timeout(limit))??;
        parse_rpc_answer(status, &body, id)
    }

    /// [`ApiClient::call`], with the result deserialized into `T` (one of this module's
    /// result types).
    pub async fn call_as<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, ClientError> {
        let value = self.call(method, params).await?;
        serde_json::from_value(value).map_err(|e| ClientError::InvalidResponse(format!("{method} result: {e}")))
    }

    /// POSTs `body` and reads the answer's status and body (at most `max_response_bytes`).
    async fn post(&self, body: Vec<u8>) -> Result<(u16, Vec<u8>), ClientError> {
        let mut response = self
            .http
            .post(self.target.clone())
            .header(header::AUTHORIZATION, self.authorization.clone())
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(header::ACCEPT, HeaderValue::from_static("application/json"))
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport(&e))?;
        let status = response.status().as_u16();
        let limit = self.max_response_bytes;
        let too_large = || ClientError::InvalidResponse(format!("response larger than {limit} bytes"));
        if response.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.transport(&e))? {
            if body.len() + chunk.len() > limit {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok((status, body))
    }

    fn transport(&self, e: &reqwest::Error) -> ClientError {
        // The io::Error at the bottom (connection refused, reset, …) keeps its kind.
        let mut kind = io::ErrorKind::Other;
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            if let Some(io) = s.downcast_ref::<io::Error>() {
                kind = io.kind();
            }
            source = s.source();
        }
        ClientError::Transport { addr: self.authority.clone(), source: io::Error::new(kind, chain(e)) }
    }
}

/// `e` and its sources, as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.ends_with(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}

/// Checks that `url` is `http://host[:port][/path]` with a loopback host (`localhost`, an
/// address of 127.0.0.0/8, `::1`), no user information, query nor fragment.
fn check_url(url: &str) -> Result<Url, String> {
    let parsed = Url::parse(url).map_err(|e| e.to_string())?;
    if parsed.scheme() != "http" {
        return Err("only http:// URLs are supported (the API listens on loopback, without TLS)".into());
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("user information is not supported".into());
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err("queries and fragments are not supported".into());
    }
    let loopback = match parsed.host() {
        Some(url::Host::Domain("localhost")) => true,
        Some(url::Host::Domain(name)) => {
            return Err(format!("the host must be localhost or an IP address, got {:?}", truncate(name, 64)))
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.to_canonical().is_loopback(),
        None => return Err("no host".into()),
    };
    if !loopback {
        let host = parsed.host_str().unwrap_or_default();
        return Err(format!("{host} is not a loopback address: the token would cross the network in clear text"));
    }
    Ok(parsed)
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
    fn urls() {
        for good in [
            "http://127.0.0.1:8545",
            "http://127.0.0.2:1/rpc",
            "http://[::1]:9/",
            "http://localhost:1/",
            "http://LOCALHOST:1",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        assert_eq!(check_url("http://localhost:7").unwrap().host_str(), Some("localhost"));
        for bad in [
            "https://127.0.0.1:1/",
            "http://10.0.0.1:1/",
            "http://[::ffff:10.0.0.1]:1/",
            "http://example.com:1/",
            "http://localhost.example.com:1/",
            "http://127.0.0.1:x/",
            "http://127.0.0.1:1/?a",
            "http://127.0.0.1:1/#a",
            "http://u@127.0.0.1:1/",
            "http://u:p@127.0.0.1:1/",
            "http://[::1/",
            "127.0.0.1:1",
            "",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers() {
        let ok = br#"{"jsonrpc":"2.0","result":{"a":1},"id":3}"#;
        assert_eq!(parse_rpc_answer(200, ok, 3).unwrap(), json!({ "a": 1 }));
        assert!(matches!(parse_rpc_answer(200, ok, 4), Err(ClientError::InvalidResponse(_))));
        let error = br#"{"jsonrpc":"2.0","error":{"code":-32001,"message":"no"},"id":null}"#;
        let e = parse_rpc_answer(401, error, 3).unwrap_err();
        assert_eq!(e.rpc().map(|e| e.code), Some(RpcError::UNAUTHORIZED));
        assert!(matches!(parse_rpc_answer(502, b"Bad Gateway", 3), Err(ClientError::Http { status: 502, .. })));
        assert!(matches!(parse_rpc_answer(200, b"<html>", 3), Err(ClientError::InvalidResponse(_))));
        assert!(matches!(parse_rpc_answer(200, br#"{"id":3}"#, 3), Err(ClientError::InvalidResponse(_))));
        let bad_error = br#"{"error":{"code":"x"},"id":3}"#;
        assert!(matches!(parse_rpc_answer(200, bad_error, 3), Err(ClientError::InvalidResponse(_))));
    }
}
