//! [`ApiClient`]: the CLI's end of the API, a small HTTP/1.1 client that talks to loopback
//! addresses only, so that the token never crosses a network in clear text.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::error::{truncate, RpcError};
use super::schema::{DEFAULT_WAIT_MS, MAX_WAIT_MS};

/// Largest response [`ApiClient`] reads (64 MiB).
const MAX_RESPONSE_BYTES: u64 = 64 << 20;

/// Default time [`ApiClient::call`] waits for an answer.
const DEFAULT_CLIENT_TIMEOUT: Duration = Duration::from_secs(60);

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
}
