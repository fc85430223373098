//! A local `anvil` node for tests and demos: the binary that `npm ci` installs
//! (`node_modules/.bin/anvil`, package `@foundry-rs/anvil-linux-amd64`), or `NITRO_ANVIL`.
//!
//! [`Anvil::spawn`] starts it on a free 127.0.0.1 port with automining, waits until it answers
//! JSON-RPC, and kills it when dropped.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use alloy::providers::{Provider, RootProvider};
use nitro_core::SigningKey;

use crate::{error::AnvilError, locate, ChainError};

/// anvil's default chain id.
pub const ANVIL_CHAIN_ID: u64 = 31337;

/// The private keys of anvil's ten default funded accounts (10,000 ETH each), derived from
/// the well-known test mnemonic `test test ... junk`. Never use them on a real network.
pub const DEV_PRIVATE_KEYS: [&str; 10] = [
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
    "0x8b3a350cf5c34c9194ca85829a2df0ec3153be0318b5e2d3348e872092edffba",
    "0x92db14e403b83dfe3df233f83dfa3a0d7096f21ca9b0d6d6b8d88b2b4ec1564e",
    "0x4bbbf85ce3377467afe5d46f804f221813b2bb87f24d81f60f1fcdbf7cbf4356",
    "0xdbda1821b80551c9d65939329250298aa3472ba22feea921c0cf5d620ea67b97",
    "0x2a871d0798f97d79848a013d4936a73bf4cc922c825d33c1cf7073dff6d409c6",
];

/// The signing key of anvil's default account `index` (0..10).
pub fn dev_key(index: usize) -> Option<SigningKey> {
    DEV_PRIVATE_KEYS.get(index).and_then(|hex| SigningKey::from_hex(hex).ok())
}

/// Where the anvil binary is: `NITRO_ANVIL` if set, else the nearest `node_modules/.bin/anvil`
/// above the current directory or this crate.
pub fn locate_anvil() -> Result<PathBuf, AnvilError> {
    if let Some(path) = std::env::var_os("NITRO_ANVIL") {
        let path = PathBuf::from(path);
        return if path.exists() { Ok(path) } else { Err(AnvilError::BadOverride(path)) };
    }
    locate::find_up(Path::new("node_modules/.bin/anvil")).map_err(|searched| AnvilError::NotInstalled { searched })
}

/// Options for starting anvil.
#[derive(Clone, Debug)]
pub struct AnvilBuilder {
    binary: Option<PathBuf>,
    port: u16,
    args: Vec<String>,
    startup_timeout: Duration,
}

impl Default for AnvilBuilder {
    fn default() -> Self {
        Self { binary: None, port: 0, args: Vec::new(), startup_timeout: Duration::from_secs(60) }
    }
}

impl AnvilBuilder {
    /// Use this binary instead of locating one.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Listen on this port (default 0: a free port chosen by the OS).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Pass an extra command-line argument to anvil (e.g. `--block-time`).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// How long to wait for anvil to answer (default 60 s: a loaded machine starts it slowly).
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Starts anvil and waits until it answers `eth_chainId`.
    pub fn spawn(self) -> Result<Anvil, AnvilError> {
        let path = match self.binary {
            Some(path) => path,
            None => locate_anvil()?,
        };
        let mut child = Command::new(&path)
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| AnvilError::Spawn { path: path.clone(), message: e.to_string() })?;
        let started = Instant::now();
        match wait_until_listening(&mut child, self.startup_timeout) {
            Ok(port) => {
                let anvil = Anvil { child, port, path };
                let remaining = self.startup_timeout.saturating_sub(started.elapsed());
                match wait_until_answering(port, remaining) {
                    Ok(()) => Ok(anvil),
                    Err(output) => Err(AnvilError::Startup { after: self.startup_timeout, output }),
                }
            }
            Err(output) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(AnvilError::Startup { after: self.startup_timeout, output })
            }
        }
    }
}

/// Reads anvil's stdout until "Listening on 127.0.0.1:PORT"; keeps draining it afterwards
/// (anvil logs every request, and a full pipe would block it).
fn wait_until_listening(child: &mut Child, timeout: Duration) -> Result<u16, String> {
    let (tx, rx) = mpsc::channel::<String>();
    if let Some(stdout) = child.stdout.take() {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Once the receiver is gone, keep reading and discard.
                let _ = tx.send(line);
            }
        });
    }
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut all = String::new();
            let _ = stderr.read_to_string(&mut all);
            let _ = tx.send(format!("stderr: {all}"));
        });
    }
    let deadline = Instant::now() + timeout;
    let mut output = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.max(Duration::from_millis(1))) {
            Ok(line) => {
                if let Some(address) = line.trim().strip_prefix("Listening on ") {
                    if let Some(port) = address.rsplit(':').next().and_then(|p| p.trim().parse().ok()) {
                        return Ok(port);
                    }
                }
                output.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                output.push("(no \"Listening on\" line before the timeout)".into());
                return Err(tail(&output));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.try_wait().ok().flatten();
                output.push(format!("(anvil exited: {status:?})"));
                return Err(tail(&output));
            }
        }
        if Instant::now() >= deadline {
            return Err(tail(&output));
        }
    }
}

fn tail(lines: &[String]) -> String {
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// A blocking `eth_chainId` over plain HTTP/1.1, retried until it answers or time runs out.
fn wait_until_answering(port: u16, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}"#;
    let request = format!(
        "POST / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    let mut last = String::new();
    while Instant::now() < deadline {
        let attempt = (|| -> std::io::Result<String> {
            let mut stream = TcpStream::connect(("127.0.0.1", port))?;
            stream.set_read_timeout(Some(Duration::from_secs(2)))?;
            stream.write_all(request.as_bytes())?;
            let mut response = String::new();
            stream.read_to_string(&mut response)?;
            Ok(response)
        })();
        match attempt {
            Ok(response) if response.contains("\"result\"") => return Ok(()),
            Ok(response) => last = response,
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("anvil on port {port} did not answer eth_chainId: {last}"))
}

/// A running anvil process, killed on drop.
#[derive(Debug)]
pub struct Anvil {
    child: Child,
    port: u16,
    path: PathBuf,
}

impl Anvil {
    /// Starts anvil with the defaults (free port, automine, chain id 31337).
    pub fn spawn() -> Result<Self, AnvilError> {
        AnvilBuilder::default().spawn()
    }

    /// Options for starting anvil.
    pub fn builder() -> AnvilBuilder {
        AnvilBuilder::default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its JSON-RPC endpoint, `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The binary that runs.
    pub fn binary(&self) -> &Path {
        &self.path
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn provider(&self) -> Result<RootProvider, ChainError> {
        let url = self
            .endpoint()
            .parse()
            .map_err(|e: url::ParseError| ChainError::Rpc { operation: "connect", message: e.to_string() })?;
        Ok(RootProvider::new_http(url))
    }

    /// Moves the chain's clock forward by `seconds` and mines a block with the new time
    /// (`evm_increaseTime` + `evm_mine`), e.g. to let a challenge finalize.
    pub async fn advance_time(&self, seconds: u64) -> Result<(), ChainError> {
        self.rpc("evm_increaseTime", serde_json::json!([seconds])).await?;
        self.mine().await
    }

    /// Turns automining (a block per transaction, the default) off or on
    /// (`evm_setAutomine`); with it off, blocks come from [`Anvil::mine`].
    pub async fn set_automine(&self, on: bool) -> Result<(), ChainError> {
        self.rpc("evm_setAutomine", serde_json::json!([on])).await.map(|_| ())
    }

    /// Mines one block (`evm_mine`).
    pub async fn mine(&self) -> Result<(), ChainError> {
        self.rpc("evm_mine", serde_json::json!([])).await.map(|_| ())
    }

    async fn rpc(&self, method: &'static str, params: serde_json::Value) -> Result<serde_json::Value, ChainError> {
        self.provider()?
            .raw_request::<serde_json::Value, serde_json::Value>(method.into(), params)
            .await
            .map_err(|e| ChainError::from_rpc(method, method, e))
    }

    /// Takes the latest `depth` blocks back and mines as many new, empty ones in their place
    /// (`anvil_reorg`): the transactions of the blocks taken back are gone, from the chain and
    /// from the pool — as after a reorg on a real chain to a branch that did not include them.
    pub async fn reorg(&self, depth: u64) -> Result<(), ChainError> {
        self.rpc("anvil_reorg", serde_json::json!([depth, []])).await.map(|_| ())
    }

    /// Records the chain's state (`evm_snapshot`); [`Anvil::revert`] goes back to it.
    pub async fn snapshot(&self) -> Result<String, ChainError> {
        let id = self.rpc("evm_snapshot", serde_json::json!([])).await?;
        Ok(id.as_str().map(str::to_owned).unwrap_or_else(|| id.to_string()))
    }

    /// Goes back to a snapshot (`evm_revert`): the blocks mined since are gone; the next ones
    /// are a new branch at the same heights.
    pub async fn revert(&self, snapshot: &str) -> Result<bool, ChainError> {
        let reverted = self.rpc("evm_revert", serde_json::json!([snapshot])).await?;
        Ok(reverted.as_bool().unwrap_or(false))
    }

    /// Sets the next block's base fee, in wei per gas (`anvil_setNextBlockBaseFeePerGas`): a fee
    /// spike. Later blocks move from it by the EIP-1559 rule (at most 12.5% per block).
    pub async fn set_next_block_base_fee(&self, wei: u128) -> Result<(), ChainError> {
        let value = format!("{wei:#x}");
        self.rpc("anvil_setNextBlockBaseFeePerGas", serde_json::json!([value])).await.map(|_| ())
    }

    /// Mines a block every `seconds` from now on (`evm_setIntervalMining`; 0: stop), on top of
    /// automining if it is on.
    pub async fn set_interval_mining(&self, seconds: u64) -> Result<(), ChainError> {
        self.rpc("evm_setIntervalMining", serde_json::json!([seconds])).await.map(|_| ())
    }
}

impl Drop for Anvil {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
