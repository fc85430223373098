//! Real nodes for the tests: anvil with the Nitro contracts deployed, and `node::run` in the
//! test's runtime with a configuration file written the way an operator would.
#![allow(dead_code)]

pub mod local_chain;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use alloy_primitives::Address;
use nitro_chain::{dev_key, Anvil, Artifacts, ChainConfig, Contracts, EthClient};
use nitro_node::api::ApiClient;
use nitro_node::config::NodeConfig;
use nitro_node::node::NodeError;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long anything may take on a loaded machine.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// A loopback port below Linux's ephemeral range (which starts at 32768), so that no outgoing
/// connection can take it between this check and the node's bind; each call gives another
/// one, starting at a place that depends on the process (test binaries run concurrently).
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let port = 20_000 + (std::process::id().wrapping_mul(97).wrapping_add(n) % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
        assert!(n < 12_000, "no free port between 20000 and 32000");
    }
}

/// anvil, with the contracts deployed. Dropping it stops the chain.
pub struct Net {
    pub anvil: Anvil,
    pub contracts: Contracts,
    /// (p2p, api, metrics) ports of the nodes of each dev key index.
    pub ports: Vec<(u16, u16, u16)>,
}

impl Net {
    pub async fn start() -> Self {
        let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
        let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
        let deployer =
            EthClient::connect(&anvil.endpoint(), &dev_key(0).unwrap(), ChainConfig::default()).await.unwrap();
        let contracts = Contracts::deploy(&deployer, &artifacts).await.unwrap();
        let ports = (0..4).map(|_| (free_port(), free_port(), free_port())).collect();
        Self { anvil, contracts, ports }
    }
}

/// Writes `content` to `path` readable by its owner only (as a key file must be).
pub fn write_private(path: &Path, content: &str) {
    std::fs::write(path, content).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// The configuration of the node of dev key `index`, with the nodes of `peers` as peers.
pub fn config_text(net: &Net, index: usize, peers: &[usize], metrics_listen: bool) -> String {
    let (p2p, api, metrics) = net.ports[index];
    let mut text = format!(
        "key_file = \"node.key\"\ndb_path = \"node.db\"\nlisten = \"127.0.0.1:{p2p}\"\napi = \"127.0.0.1:{api}\"\n\
         token_file = \"node.token\"\nchain_url = \"{url}\"\nadjudicator = \"{adj}\"\nconsensus_app = \"{ca}\"\n\
         virtual_payment_app = \"{vpa}\"\ntick_ms = 200\n",
        url = net.anvil.endpoint(),
        adj = net.contracts.adjudicator,
        ca = net.contracts.consensus_app,
        vpa = net.contracts.virtual_payment_app,
    );
    if metrics_listen {
        text.push_str(&format!("metrics_listen = \"127.0.0.1:{metrics}\"\n"));
    }
    for &peer in peers {
        let address = dev_key(peer).unwrap().address();
        text.push_str(&format!("[[peers]]\naddress = \"{address}\"\nat = \"127.0.0.1:{}\"\n", net.ports[peer].0));
    }
    text
}

/// A directory holding the key of dev key `index` (mode 0600) and `config` as `node.toml`.
pub fn node_dir(index: usize, config: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = dev_key(index).unwrap();
    write_private(&dir.path().join("node.key"), &format!("0x{}", alloy_primitives::hex::encode(key.to_bytes())));
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    (dir, path)
}

/// A node running in the test's runtime.
pub struct NodeHandle {
    pub address: Address,
    pub api: SocketAddr,
    pub metrics_listen: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), NodeError>>>,
}

impl NodeHandle {
    pub async fn start(net: &Net, index: usize, peers: &[usize], metrics_listen: bool) -> Self {
        Self::start_with(net, index, peers, metrics_listen, "").await
    }

    /// Like [`NodeHandle::start`], with `extra` top-level configuration lines.
    pub async fn start_with(net: &Net, index: usize, peers: &[usize], metrics_listen: bool, extra: &str) -> Self {
        let text = format!("{extra}{}", config_text(net, index, peers, metrics_listen));
        Self::start_text(net, index, metrics_listen, &text).await
    }

    /// Like [`NodeHandle::start`], reaching the chain at `chain_url` (e.g. through a proxy).
    pub async fn start_via(net: &Net, index: usize, peers: &[usize], chain_url: &str) -> Self {
        let text = config_text(net, index, peers, false).replace(&net.anvil.endpoint(), chain_url);
        Self::start_text(net, index, false, &text).await
    }

    /// Starts the node of dev key `index` with the configuration `text`.
    pub async fn start_text(net: &Net, index: usize, metrics_listen: bool, text: &str) -> Self {
        init_logs();
        let (dir, _) = node_dir(index, text);
        let (_, api, metrics) = net.ports[index];
        let mut node = Self {
            address: dev_key(index).unwrap().address(),
            api: SocketAddr::from(([127, 0, 0, 1], api)),
            metrics_listen: metrics_listen.then(|| SocketAddr::from(([127, 0, 0, 1], metrics))),
            dir,
            stop: None,
            task: None,
        };
        node.resume();
        node
    }

    /// Runs the node from its directory (its configuration, key and store).
    pub fn resume(&mut self) {
        let config = NodeConfig::load(&self.dir.path().join("node.toml")).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(nitro_node::node::run(config, async move {
            let _ = stopped.await;
        }));
        self.stop = Some(stop);
        self.task = Some(task);
    }

    /// Stops the node, checks that it stopped cleanly, and keeps its directory (see
    /// [`NodeHandle::resume`]).
    pub async fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            let result = tokio::time::timeout(TIMEOUT, task).await.expect("the node stops").expect("no panic");
            result.unwrap_or_else(|e| panic!("the node stopped with {e}"));
        }
    }

    pub fn client(&self) -> ApiClient {
        ApiClient::from_token_file(&format!("http://{}/", self.api), &self.dir.path().join("node.token")).unwrap()
    }

    /// Polls `GET /health` until it answers `status`; returns the report.
    pub async fn wait_health(&self, status: u16) -> Value {
        let start = Instant::now();
        let mut last = None;
        loop {
            if let Some((s, body)) = try_get(self.api, "/health").await {
                if s == status {
                    return serde_json::from_slice(&body).unwrap();
                }
                last = Some((s, String::from_utf8_lossy(&body).into_owned()));
            }
            self.assert_running();
            assert!(start.elapsed() < TIMEOUT, "no HTTP {status} from /health; last: {last:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `GET /metrics` until `series` has a value that `ok` accepts; returns the text.
    pub async fn wait_metric(&self, series: &str, ok: impl Fn(f64) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some((200, body)) = try_get(self.api, "/metrics").await {
                let text = String::from_utf8_lossy(&body).into_owned();
                if metric(&text, series).is_some_and(&ok) {
                    return text;
                }
                assert!(start.elapsed() < TIMEOUT, "{series} never reached the expected value:\n{text}");
            }
            self.assert_running();
            assert!(start.elapsed() < TIMEOUT, "no metrics");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn assert_running(&self) {
        if self.task.as_ref().is_some_and(|t| t.is_finished()) {
            panic!("the node stopped");
        }
    }

    /// Stops the node and checks that it stopped cleanly.
    pub async fn stop(mut self) {
        self.halt().await;
    }
}

impl Drop for NodeHandle {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The value of the sample whose series (name and labels) is `series`.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

/// `GET path` on `addr` (status and body), or `None` if nothing answers.
pub async fn try_get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    request(addr, format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await
}

pub async fn get(addr: SocketAddr, path: &str) -> (u16, Vec<u8>) {
    try_get(addr, path).await.unwrap_or_else(|| panic!("nothing answers GET {path} on {addr}"))
}

/// A JSON-RPC POST without the token.
pub async fn post_unauthenticated(addr: SocketAddr, body: &str) -> (u16, Vec<u8>) {
    let text = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    request(addr, text.as_bytes()).await.unwrap_or_else(|| panic!("nothing answers on {addr}"))
}

async fn request(addr: SocketAddr, request: &[u8]) -> Option<(u16, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    stream.write_all(request).await.ok()?;
    let mut response = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut response)).await.ok()?.ok()?;
    let end = response.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&response[..end]).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, response[end + 4..].to_vec()))
}

/// Node logs on stderr when `RUST_LOG` is set (e.g. `RUST_LOG=nitro_node=debug`), for
/// debugging a failing test; nothing otherwise.
pub fn init_logs() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
