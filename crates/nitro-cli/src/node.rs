//! `nitro node` (run a node) and `nitro rpc` (call a node's JSON-RPC API).

use std::path::PathBuf;

use clap::Args;
use nitro_node::{api::ApiClient, config::NodeConfig};
use serde_json::Value;

use crate::UsageError;

/// Options of `nitro node`.
#[derive(Args)]
pub struct NodeArgs {
    /// The node's TOML configuration (see docs/node.md).
    #[arg(long)]
    config: PathBuf,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

/// Options of `nitro rpc`.
#[derive(Args)]
pub struct RpcArgs {
    /// The API's URL, e.g. http://127.0.0.1:9801.
    #[arg(long)]
    api: String,
    /// File holding the API's bearer token.
    #[arg(long)]
    token_file: PathBuf,
    /// The method, e.g. ledger_list.
    method: String,
    /// Its params, as a JSON object (default {}).
    params: Option<String>,
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal: no escape codes in files, journals, pipes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let _ = if json { builder.json().try_init() } else { builder.try_init() };
}

/// Runs a node until Ctrl-C or SIGTERM.
pub fn run_node(args: NodeArgs) -> Result<Value, UsageError> {
    init_logging(args.log_json);
    let config = NodeConfig::load(&args.config).map_err(|e| UsageError(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| UsageError(e.to_string()))?;
    runtime.block_on(async move {
        let shutdown = async {
            // A handler that cannot be installed must not stop the node at once: it then runs
            // until killed, with a warning.
            let interrupted = async {
                if let Err(error) = tokio::signal::ctrl_c().await {
                    tracing::warn!(%error, "cannot listen for Ctrl-C");
                    std::future::pending::<()>().await;
                }
            };
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                match signal(SignalKind::terminate()) {
                    Ok(mut term) => {
                        tokio::select! {
                            _ = interrupted => {}
                            _ = term.recv() => {}
                        }
                    }
                    Err(error) => {
                        tracing::warn!(%error, "cannot listen for SIGTERM");
                        interrupted.await;
                    }
                }
            }
            #[cfg(not(unix))]
            interrupted.await;
            tracing::info!("shutting down");
        };
        nitro_node::node::run(config, shutdown).await.map_err(|e| UsageError(e.to_string()))
    })?;
    Ok(Value::String("node stopped".into()))
}

/// Calls one API method and prints its result.
pub fn run_rpc(args: RpcArgs) -> Result<Value, UsageError> {
    let token = std::fs::read_to_string(&args.token_file)
        .map_err(|e| UsageError(format!("{}: {e}", args.token_file.display())))?;
    let params: Value = match &args.params {
        Some(p) => serde_json::from_str(p).map_err(|e| UsageError(format!("params: {e}")))?,
        None => Value::Object(Default::default()),
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| UsageError(e.to_string()))?;
    runtime.block_on(async move {
        let client = ApiClient::new(&args.api, token.trim()).map_err(|e| UsageError(e.to_string()))?;
        client.call(&args.method, params).await.map_err(|e| UsageError(e.to_string()))
    })
}
