//! Anvil, the contracts and three `nitro node` processes (Alice, the hub, Bob) on loopback,
//! each with its own key, SQLite file, API token and log in one temporary directory.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use alloy_primitives::Address;
use nitro_chain::{dev_key, Anvil, Artifacts, ChainConfig, Contracts, EthClient};
use nitro_node::api::ApiClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::HubBenchError;

/// The three parties, in path order.
pub(super) const NAMES: [&str; 3] = ["alice", "hub", "bob"];

/// Challenge duration of the channels the nodes open (the node's default), also used for the
/// floor's states.
pub(super) const CHALLENGE_DURATION: u64 = 86_400;

/// Policy limits far above what any run needs (1,000 ETH; each dev account holds 10,000).
const POLICY_LIMIT_WEI: &str = "1000000000000000000000";

/// How long the three nodes may take to become ready (a loaded machine starts them slowly).
const READY_DEADLINE: Duration = Duration::from_secs(120);

/// How long a node may take to exit after SIGTERM before it is killed.
const STOP_PATIENCE: Duration = Duration::from_secs(60);

/// A ready node as the workload sees it: a name, an address and an API client (cheap to
/// clone into tasks).
#[derive(Clone, Debug)]
pub(super) struct Handle {
    /// `alice`, `hub` or `bob`.
    pub name: &'static str,
    /// Its Ethereum address.
    pub address: Address,
    /// Its log file, named in errors.
    pub log: PathBuf,
    /// Its API client.
    pub client: Arc<ApiClient>,
}

impl Handle {
    /// An error about this node.
    pub fn error(&self, what: impl Into<String>) -> HubBenchError {
        HubBenchError::Node { name: self.name, what: what.into(), log: self.log.clone() }
    }
}

/// One `nitro node` process.
pub(super) struct Node {
    name: &'static str,
    address: Address,
    client: Option<Arc<ApiClient>>,
    child: Option<Child>,
    api: SocketAddr,
    log: PathBuf,
    token: PathBuf,
}

impl Node {
    /// An error about this node.
    fn error(&self, what: impl Into<String>) -> HubBenchError {
        HubBenchError::Node { name: self.name, what: what.into(), log: self.log.clone() }
    }

    /// What the workload needs of the node: its API client (an error before it is ready).
    pub fn handle(&self) -> Result<Handle, HubBenchError> {
        let client = self.client.clone().ok_or_else(|| self.error("not ready"))?;
        Ok(Handle { name: self.name, address: self.address, log: self.log.clone(), client })
    }

    /// Sends SIGTERM (the node finishes its step, closes its store and exits); `false` if no
    /// process is running or the signal could not be sent.
    fn signal_stop(&self) -> bool {
        match &self.child {
            #[cfg(unix)]
            Some(child) => {
                rustix::process::kill_process(rustix::process::Pid::from_child(child), rustix::process::Signal::TERM)
                    .is_ok()
            }
            #[cfg(not(unix))]
            Some(_) => false,
            None => false,
        }
    }

    /// Waits up to `patience` for the process to exit (after [`Node::signal_stop`]); kills it
    /// if it does not. Its exit status, or `None` if it had to be killed.
    fn reap(&mut self, patience: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(_) => break,
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// The last non-empty line of its log.
    fn last_log_line(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("(empty log)").trim().to_string()
    }

    /// Polls `GET /health` until it answers 200, the process exits, or `deadline` passes.
    async fn wait_ready(&mut self, deadline: Instant) -> Result<(), HubBenchError> {
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(self.error(format!("exited during startup ({status}): {}", self.last_log_line())));
                }
            }
            let last = match health(self.api).await {
                Ok((200, _)) => break,
                Ok((status, body)) => format!("HTTP {status} {body}"),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.error(format!(
                    "not ready after {} s (GET /health on {}: {last})",
                    READY_DEADLINE.as_secs(),
                    self.api
                )));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let client = ApiClient::from_token_file(&format!("http://{}/", self.api), &self.token)
            .map_err(|e| self.error(format!("API client: {e}")))?;
        self.client = Some(Arc::new(client));
        Ok(())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // Error paths too stop their nodes, gracefully where they can.
        if self.signal_stop() {
            self.reap(Duration::from_secs(10));
        } else {
            self.reap(Duration::ZERO);
        }
    }
}

/// `GET /health` on `addr`: the HTTP status and the body.
async fn health(addr: SocketAddr) -> std::io::Result<(u16, String)> {
    let io_timeout = |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out");
    let limit = Duration::from_secs(5);
    let mut stream = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr)).await.map_err(io_timeout)??;
    let request = format!("GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(limit, stream.take(64 * 1024).read_to_end(&mut answer)).await.map_err(io_timeout)??;
    let answer = String::from_utf8_lossy(&answer);
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer"))?;
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b).trim().to_string();
    Ok((status, body))
}

/// Free loopback ports for the nodes, chosen *below* the kernel's ephemeral range: a port from
/// that range (what binding port 0 gives) can be taken by any outgoing connection between our
/// check and the node's bind.
fn free_ports(count: usize) -> Result<Vec<u16>, HubBenchError> {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let mut ports = Vec::new();
    for _ in 0..1000 * count {
        if ports.len() == count {
            break;
        }
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = low + (random % u64::from(high - low)) as u16;
        if !ports.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() < count {
        return Err(HubBenchError::Setup(format!("no {count} free loopback ports in {low}..{high}")));
    }
    Ok(ports)
}

fn setup(what: &str) -> impl Fn(&dyn std::fmt::Display) -> HubBenchError + '_ {
    move |e| HubBenchError::Setup(format!("{what}: {e}"))
}

/// Writes `text` to `path` readable by its owner only (the node refuses a key file others may
/// read).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    std::fs::write(path, text)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// Anvil with the contracts deployed, and the three node processes.
pub(super) struct Cluster {
    /// Alice, the hub, Bob (dropped first: stopped before anvil goes away).
    pub nodes: Vec<Node>,
    /// The deployed contracts.
    pub contracts: Contracts,
    _anvil: Anvil,
    dir: Option<tempfile::TempDir>,
}

impl Cluster {
    /// Starts anvil, deploys the contracts, writes the configurations and starts the three
    /// nodes; returns once each answers `GET /health` with 200. On failure the temporary
    /// directory (logs included) is kept, and said so on stderr.
    pub async fn start() -> Result<Self, HubBenchError> {
        let anvil = Anvil::spawn().map_err(|e| {
            HubBenchError::Setup(format!("cannot start anvil: {e} (scripts/setup.sh, or `npm ci`, installs it)"))
        })?;
        let artifacts = Artifacts::locate().map_err(|e| setup("contracts")(&e))?;
        let deployer_key = dev_key(0).ok_or_else(|| HubBenchError::Setup("no anvil dev key 0".into()))?;
        let deployer = EthClient::connect(&anvil.endpoint(), &deployer_key, ChainConfig::default())
            .await
            .map_err(|e| setup("connecting to anvil")(&e))?;
        let contracts =
            Contracts::deploy(&deployer, &artifacts).await.map_err(|e| setup("deploying the contracts")(&e))?;
        let dir = tempfile::Builder::new()
            .prefix("nitro-bench-hub-")
            .tempdir()
            .map_err(|e| setup("temporary directory")(&e))?;
        let mut cluster = Self { nodes: Vec::new(), contracts, _anvil: anvil, dir: Some(dir) };
        match cluster.launch().await {
            Ok(()) => Ok(cluster),
            Err(e) => {
                if let Some(kept) = cluster.finish(true) {
                    eprintln!("bench hub: kept {}", kept.display());
                }
                Err(e)
            }
        }
    }

    fn dir(&self) -> Result<&Path, HubBenchError> {
        self.dir.as_ref().map(|d| d.path()).ok_or_else(|| HubBenchError::Setup("no temporary directory".into()))
    }

    /// Writes the keys and configurations, starts the processes, waits until they are ready.
    async fn launch(&mut self) -> Result<(), HubBenchError> {
        let dir = self.dir()?.to_path_buf();
        let exe = std::env::current_exe().map_err(|e| setup("locating the nitro executable")(&e))?;
        let ports = free_ports(2 * NAMES.len())?;
        let keys = (1..=NAMES.len())
            .map(|i| dev_key(i).ok_or_else(|| HubBenchError::Setup(format!("no anvil dev key {i}"))))
            .collect::<Result<Vec<_>, _>>()?;
        let endpoint = self._anvil.endpoint();
        for (i, name) in NAMES.iter().enumerate() {
            let (p2p, api) = (ports[2 * i], ports[2 * i + 1]);
            let key_file = dir.join(format!("{name}.key"));
            write_private(&key_file, &format!("0x{}", alloy_primitives::hex::encode(keys[i].to_bytes())))
                .map_err(|e| setup("writing a key file")(&e))?;
            let peers: String = (0..NAMES.len())
                .filter(|j| *j != i)
                .map(|j| {
                    format!("[[peers]]\naddress = \"{}\"\nat = \"127.0.0.1:{}\"\n", keys[j].address(), ports[2 * j])
                })
                .collect();
            let c = &self.contracts;
            let config = format!(
                "key_file = \"{name}.key\"\ndb_path = \"{name}.db\"\nlisten = \"127.0.0.1:{p2p}\"\n\
                 api = \"127.0.0.1:{api}\"\ntoken_file = \"{name}.token\"\nchain_url = \"{endpoint}\"\n\
                 adjudicator = \"{}\"\nconsensus_app = \"{}\"\nvirtual_payment_app = \"{}\"\n\
                 challenge_duration = {CHALLENGE_DURATION}\ntick_ms = 200\n{peers}\
                 [policy]\nmax_deposit_per_ledger = \"{POLICY_LIMIT_WEI}\"\nmax_total_deposit = \"{POLICY_LIMIT_WEI}\"\n\
                 max_virtual_amount = \"{POLICY_LIMIT_WEI}\"\nmax_locked_per_counterparty = \"{POLICY_LIMIT_WEI}\"\n",
                c.adjudicator, c.consensus_app, c.virtual_payment_app,
            );
            let config_file = dir.join(format!("{name}.toml"));
            std::fs::write(&config_file, config).map_err(|e| setup("writing a configuration")(&e))?;
            let log = dir.join(format!("{name}.log"));
            let log_file = std::fs::File::create(&log).map_err(|e| setup("creating a log file")(&e))?;
            let child = Command::new(&exe)
                .args(["node", "--config"])
                .arg(&config_file)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file)
                .spawn()
                .map_err(|e| setup(&format!("starting {}", exe.display()))(&e))?;
            self.nodes.push(Node {
                name,
                address: keys[i].address(),
                client: None,
                child: Some(child),
                api: SocketAddr::from(([127, 0, 0, 1], api)),
                log,
                token: dir.join(format!("{name}.token")),
            });
        }
        let deadline = Instant::now() + READY_DEADLINE;
        for node in &mut self.nodes {
            node.wait_ready(deadline).await?;
        }
        Ok(())
    }

    /// Stops the three nodes with SIGTERM (all at once) and checks each exits cleanly.
    pub async fn stop(&mut self) -> Result<(), HubBenchError> {
        for node in &mut self.nodes {
            node.client = None;
        }
        let signalled: Vec<bool> = self.nodes.iter().map(Node::signal_stop).collect();
        let mut nodes = std::mem::take(&mut self.nodes);
        let outcome = tokio::task::spawn_blocking(move || {
            let mut first_error = None;
            for (node, signalled) in nodes.iter_mut().zip(signalled) {
                let status = node.reap(if signalled { STOP_PATIENCE } else { Duration::ZERO });
                if first_error.is_none() && !status.is_some_and(|s| s.success()) {
                    let what = match status {
                        Some(status) => format!("did not stop cleanly on SIGTERM: {status}"),
                        None if signalled => {
                            format!("still running {} s after SIGTERM: killed", STOP_PATIENCE.as_secs())
                        }
                        None => "could not be sent SIGTERM: killed".to_string(),
                    };
                    first_error = Some(node.error(what));
                }
            }
            (nodes, first_error)
        })
        .await;
        match outcome {
            Ok((nodes, first_error)) => {
                self.nodes = nodes;
                first_error.map_or(Ok(()), Err)
            }
            Err(e) => Err(HubBenchError::Setup(format!("stopping the nodes: {e}"))),
        }
    }

    /// Stops what still runs (nodes, then anvil) and removes the temporary directory, unless
    /// `keep`: then returns where it is.
    pub fn finish(mut self, keep: bool) -> Option<PathBuf> {
        self.nodes.clear();
        let dir = self.dir.take()?;
        keep.then(|| dir.keep())
    }
}
