//! The operations endpoints: `GET /health` (readiness, 200 or 503) and `GET /metrics`
//! (Prometheus text format). Neither needs the token nor reaches the engine: they read the
//! node's [`Health`] and [`NodeMetrics`], which the main loop keeps up to date.
//!
//! Both are served on the API listener (loopback), and, if the configuration has a
//! `metrics_listen` address, on a listener of their own that serves nothing else ([`serve_ops`]):
//! a Prometheus server on another machine can scrape it while the API stays on loopback.

use std::fmt;
use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::error::ApiError;
use super::server::Listening;
use crate::health::Health;
use crate::metrics::NodeMetrics;

/// What the operations endpoints answer from. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Ops {
    /// Read by `GET /health`.
    pub health: Health,
    /// Rendered by `GET /metrics` (`None`: 404).
    pub metrics: Option<NodeMetrics>,
}

/// The `GET /health` and `GET /metrics` routes, for any router state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(ops: Ops) -> Router<S> {
    Router::new().route("/health", get(health)).route("/metrics", get(metrics)).with_state(ops)
}

async fn health(State(ops): State<Ops>) -> Response {
    let report = ops.health.report();
    let status = if report.is_ready() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = serde_json::to_vec(&report).unwrap_or_else(|_| br#"{"status":"unavailable"}"#.to_vec());
    (
        status,
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        body,
    )
        .into_response()
}

async fn metrics(State(ops): State<Ops>) -> Response {
    match ops.metrics {
        Some(metrics) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"))],
            metrics.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled\n").into_response(),
    }
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "GET /health or GET /metrics\n").into_response()
}

/// A running operations listener; stop it with [`OpsServer::shutdown`] (dropping it stops
/// it too, without waiting).
pub struct OpsServer {
    listening: Listening,
}

impl fmt::Debug for OpsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpsServer").field("local_addr", &self.local_addr()).finish()
    }
}

impl OpsServer {
    /// The address it listens on (with the actual port when configured with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listening.local_addr()
    }

    /// Stops accepting connections and waits (a few seconds at most) for open ones.
    pub async fn shutdown(self) -> Result<(), ApiError> {
        self.listening.shutdown().await
    }
}

/// Serves `GET /health` and `GET /metrics` only, on `listen` (any address: nothing there
/// needs the token or changes anything; what it shows — balances locked, objectives
/// counts — is still for the operator's network only).
pub async fn serve_ops(listen: SocketAddr, ops: Ops) -> Result<OpsServer, ApiError> {
    let bind_error = |source| ApiError::Bind { addr: listen, source };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let (stop, stopped) = watch::channel(false);
    let app = routes(ops).fallback(not_found);
    let listening = Listening::spawn(listener, app, stop, stopped).map_err(bind_error)?;
    tracing::info!(local_addr = %listening.local_addr(), "health and metrics listening");
    Ok(OpsServer { listening })
}
