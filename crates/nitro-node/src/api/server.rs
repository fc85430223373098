//! The server: HTTP/1.1 on a loopback address; `POST /` carries JSON-RPC 2.0 (single calls
//! and batches, behind the bearer token, bodies bounded), and `GET /health` and
//! `GET /metrics` answer without the token ([`super::ops`]).

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::error::{truncate, ApiError, RpcError};
use super::ops::{self, Ops};
use super::schema::{ApiCall, ApiRequest};
use super::token::load_or_create_token;

/// Default limit on the size of a request body (1 MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 1 << 20;

/// How long the server waits for the engine's answer to a call (on top of an
/// `objectives_wait` call's own `timeout_ms`) before answering -32603.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Most requests in one batch.
pub const MAX_BATCH: usize = 100;

/// How long a shutdown waits for open connections before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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

/// An axum server running in a background task until told to stop.
pub(crate) struct Listening {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<io::Result<()>>,
}

impl Listening {
    /// Serves `app` on `listener` until [`Listening::shutdown`] (or until dropped). `stopped`
    /// is the receiving end of `stop`: handlers may watch it too.
    pub(crate) fn spawn(
        listener: TcpListener,
        app: Router,
        stop: watch::Sender<bool>,
        mut stopped: watch::Receiver<bool>,
    ) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    // Either `true` was sent or the owner was dropped.
                    let _ = stopped.wait_for(|stop| *stop).await;
                })
                .await
        });
        Ok(Self { local_addr, stop, task })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections and waits (a few seconds at most) for open ones.
    pub(crate) async fn shutdown(self) -> Result<(), ApiError> {
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

/// A running API server; stop it with [`ApiServer::shutdown`] (dropping it stops it too,
/// without waiting).
pub struct ApiServer {
    listening: Listening,
    token: String,
}

impl fmt::Debug for ApiServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiServer").field("local_addr", &self.local_addr()).field("token", &"<redacted>").finish()
    }
}

impl ApiServer {
    /// The address it listens on (with the actual port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listening.local_addr()
    }

    /// The URL to give [`ApiClient::new`](super::ApiClient::new): `http://<local_addr>/`.
    pub fn url(&self) -> String {
        format!("http://{}/", self.local_addr())
    }

    /// The bearer token clients must send.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// Stops accepting connections, answers calls still waiting for the engine with -32603,
    /// and waits (a few seconds at most) for open connections to finish.
    pub async fn shutdown(self) -> Result<(), ApiError> {
        self.listening.shutdown().await
    }
}

/// Starts the API server: refuses a non-loopback `config.listen`, loads or creates the token
/// file, binds, and serves in a background task. Each valid call goes to `calls`.
/// `GET /health` answers "starting" (503) and `GET /metrics` 404: a node passes its own
/// [`Ops`] to [`serve_with`].
pub async fn serve(config: ApiConfig, calls: mpsc::Sender<ApiCall>) -> Result<ApiServer, ApiError> {
    serve_with(config, calls, Ops::default()).await
}

/// [`serve`], with `GET /health` and `GET /metrics` answered from `ops`.
pub async fn serve_with(config: ApiConfig, calls: mpsc::Sender<ApiCall>, ops: Ops) -> Result<ApiServer, ApiError> {
    if !config.listen.ip().to_canonical().is_loopback() {
        return Err(ApiError::NotLoopback(config.listen));
    }
    let token = load_or_create_token(&config.token_file)?;
    let bind_error = |source| ApiError::Bind { addr: config.listen, source };
    let listener = TcpListener::bind(config.listen).await.map_err(bind_error)?;
    let (stop, stopped) = watch::channel(false);
    let shared = Arc::new(Shared {
        token: token.clone(),
        calls,
        max_body_bytes: config.max_body_bytes,
        stopped: stopped.clone(),
    });
    let app = Router::new().route("/", post(handle)).merge(ops::routes(ops)).fallback(not_found).with_state(shared);
    let listening = Listening::spawn(listener, app, stop, stopped).map_err(bind_error)?;
    tracing::info!(local_addr = %listening.local_addr(), "JSON-RPC API listening");
    Ok(ApiServer { listening, token })
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
    rpc_response(
        StatusCode::NOT_FOUND,
        error_object(Value::Null, RpcError::invalid_request("POST / for JSON-RPC, GET /health, GET /metrics")),
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(constant_time_eq(b"", b""));
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
}
