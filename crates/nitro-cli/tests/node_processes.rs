//! Three `nitro node` processes (Alice, a hub, Bob) and anvil on loopback: ledgers opened,
//! 20 virtual channels funded, paid and closed through the hub, ledgers closed on chain —
//! once cleanly, once with the hub killed (SIGKILL) and restarted several times. Every node
//! is finally stopped with SIGTERM and must exit cleanly (which also writes its coverage
//! profile under `cargo llvm-cov`).

#![cfg(unix)]

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use alloy_primitives::{Address, U256};
use nitro_chain::{dev_key, Anvil, Artifacts, ChainConfig, ChainService, Contracts, EthChainService, EthClient};
use nitro_node::{api::ApiClient, store::Store};
use serde_json::{json, Value};

const NAMES: [&str; 3] = ["alice", "hub", "bob"];
const TIMEOUT: Duration = Duration::from_secs(120);

/// A free loopback port for a node to listen on, chosen *below* the kernel's ephemeral range:
/// a port from that range (what binding port 0 gives) can be taken by any outgoing connection
/// on the machine between our check and the node's bind — or while a killed node restarts.
fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    // Never the same port twice in this process (the tests run in parallel, and a port is
    // only bound once its node starts).
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    for _ in 0..1000 {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = low + (random % u64::from(high - low)) as u16;
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
    panic!("no free port in {low}..{high}");
}

struct NodeProc {
    name: &'static str,
    dir: PathBuf,
    child: Option<Child>,
    api: String,
    address: Address,
}

impl NodeProc {
    fn config(&self) -> PathBuf {
        self.dir.join(format!("{}.toml", self.name))
    }

    fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{}.log", self.name)))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_nitro"))
            .args(["node", "--config"])
            .arg(self.config())
            .env("RUST_LOG", "info,nitro_node=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nitro node");
        self.child = Some(child);
    }

    /// SIGKILL: the node dies mid-step, as in a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits (up to `patience`) for the node to finish its shutdown and exit;
    /// its exit status, or `None` if it had to be killed. A node that exits normally also
    /// writes its coverage profile (`LLVM_PROFILE_FILE`, inherited) under `cargo llvm-cov`.
    fn terminate(&mut self, patience: Duration) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status); // it had stopped already
        }
        let pid = rustix::process::Pid::from_child(&child);
        if rustix::process::kill_process(pid, rustix::process::Signal::TERM).is_ok() {
            let deadline = Instant::now() + patience;
            while Instant::now() < deadline {
                match child.try_wait() {
                    Ok(Some(status)) => return Some(status),
                    Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                    Err(_) => break,
                }
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Stops the node gracefully and checks it shut down cleanly.
    fn stop(&mut self) {
        let shutdowns = |node: &Self| node.log().matches("shutting down").count();
        let before = shutdowns(self);
        let status = self.terminate(Duration::from_secs(60));
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly on SIGTERM: {status:?}\n{}",
            self.name,
            self.log_tail()
        );
        assert_eq!(shutdowns(self), before + 1, "{}: the signal handler ran\n{}", self.name, self.log_tail());
    }

    fn client(&self) -> Option<ApiClient> {
        let token = std::fs::read_to_string(self.dir.join(format!("{}.token", self.name))).ok()?;
        ApiClient::new(&self.api, token.trim()).ok()
    }

    /// Calls the API, retrying while the node is (re)starting.
    async fn call(&self, method: &str, params: Value) -> Value {
        let start = Instant::now();
        loop {
            if let Some(client) = self.client() {
                match client.call(method, params.clone()).await {
                    Ok(v) => return v,
                    Err(e) if start.elapsed() > TIMEOUT => panic!("{}: {method}: {e}\n{}", self.name, self.log_tail()),
                    Err(_) => {}
                }
            }
            assert!(start.elapsed() < TIMEOUT, "{}: {method}: node not answering\n{}", self.name, self.log_tail());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    async fn wait(&self, ids: &[Value]) {
        let start = Instant::now();
        loop {
            let r = self.call("objectives_wait", json!({"objective_ids": ids, "timeout_ms": 2000})).await;
            if r["pending"].as_array().is_some_and(|p| p.is_empty()) {
                return;
            }
            if start.elapsed() > TIMEOUT {
                let mut report = String::new();
                for id in r["pending"].as_array().unwrap() {
                    let o = self.call("objective_get", json!({"objective_id": id})).await;
                    report.push_str(&format!("\n  {o}"));
                }
                let hub_log = std::fs::read_to_string(self.dir.join("hub.log")).unwrap_or_default();
                let interesting: Vec<&str> = hub_log
                    .lines()
                    .filter(|l| {
                        l.contains("refused") || l.contains("WARN") || l.contains("ERROR") || l.contains("replayed")
                    })
                    .collect();
                panic!(
                    "{}: objectives not done:{report}\nhub log (refusals, warnings):\n{}",
                    self.name,
                    interesting[interesting.len().saturating_sub(40)..].join("\n")
                );
            }
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        // A failing test still stops its nodes gracefully where it can.
        self.terminate(Duration::from_secs(10));
    }
}

struct Cluster {
    anvil: Anvil,
    chain: EthChainService,
    nodes: Vec<NodeProc>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Three nodes; with `challenge_duration`, every channel they open (and accept) uses it.
    async fn start_with(challenge_duration: Option<u64>) -> Self {
        let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
        let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
        let deployer =
            EthClient::connect(&anvil.endpoint(), &dev_key(0).unwrap(), ChainConfig::default()).await.unwrap();
        let contracts = Contracts::deploy(&deployer, &artifacts).await.unwrap();
        let chain = EthChainService::new(deployer, contracts.adjudicator);
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let keys: Vec<_> = (1..=3).map(|i| dev_key(i).unwrap()).collect();
        let mut nodes = Vec::new();
        for i in 0..3 {
            let key_file = dir.path().join(format!("{}.key", NAMES[i]));
            std::fs::write(&key_file, format!("0x{}", alloy_primitives::hex::encode(keys[i].to_bytes()))).unwrap();
            // The node refuses a key file that others may read.
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            let peers: String = (0..3)
                .filter(|j| *j != i)
                .map(|j| format!("[[peers]]\naddress = \"{}\"\nat = \"127.0.0.1:{}\"\n", keys[j].address(), ports[j].0))
                .collect();
            let (challenge, challenge_min) = match challenge_duration {
                Some(d) => (format!("challenge_duration = {d}\n"), format!("challenge_duration_min = {d}\n")),
                None => (String::new(), String::new()),
            };
            let config = format!(
                "{challenge}key_file = \"{n}.key\"\ndb_path = \"{n}.db\"\nlisten = \"127.0.0.1:{p2p}\"\napi = \"127.0.0.1:{api}\"\n\
                 token_file = \"{n}.token\"\nchain_url = \"{url}\"\nadjudicator = \"{adj}\"\nconsensus_app = \"{ca}\"\n\
                 virtual_payment_app = \"{vpa}\"\ntick_ms = 200\noutbox_kept_per_peer = 1000000\n{peers}\
                 [policy]\nmax_deposit_per_ledger = \"10000000000000000000\"\nmax_total_deposit = \"100000000000000000000\"\n\
                 {challenge_min}",
                n = NAMES[i],
                p2p = ports[i].0,
                api = ports[i].1,
                url = anvil.endpoint(),
                adj = contracts.adjudicator,
                ca = contracts.consensus_app,
                vpa = contracts.virtual_payment_app,
            );
            std::fs::write(dir.path().join(format!("{}.toml", NAMES[i])), config).unwrap();
            let mut node = NodeProc {
                name: NAMES[i],
                dir: dir.path().to_path_buf(),
                child: None,
                api: format!("http://127.0.0.1:{}", ports[i].1),
                address: keys[i].address(),
            };
            node.start();
            nodes.push(node);
        }
        Self { anvil, chain, nodes, _dir: dir }
    }

    fn db(&self, i: usize) -> PathBuf {
        self.nodes[i].dir.join(format!("{}.db", NAMES[i]))
    }

    async fn open_ledgers(&self) -> (String, String) {
        let hub = &self.nodes[1];
        let mut ledgers = Vec::new();
        let mut ids = Vec::new();
        for other in [0, 2] {
            let r = hub
                .call(
                    "ledger_open",
                    json!({
                        "counterparty": self.nodes[other].address.to_string(),
                        "my_amount": "5000000000000000000",
                        "counterparty_amount": "5000000000000000000",
                    }),
                )
                .await;
            ledgers.push(r["channel_id"].as_str().unwrap().to_string());
            ids.push(r["objective_id"].clone());
        }
        hub.wait(&ids).await;
        (ledgers[0].clone(), ledgers[1].clone())
    }

    async fn fund_virtual(&self, count: usize) -> Vec<String> {
        let (alice, hub, bob) = (&self.nodes[0], &self.nodes[1], &self.nodes[2]);
        let mut channels = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..count {
            let r = alice
                .call(
                    "virtual_fund",
                    json!({
                        "counterparty": bob.address.to_string(),
                        "intermediaries": [hub.address.to_string()],
                        "amount": "100000000000000000",
                    }),
                )
                .await;
            channels.push(r["channel_id"].as_str().unwrap().to_string());
            ids.push(r["objective_id"].clone());
        }
        let _ = ids;
        channels
    }

    fn audit_signatures(&self) -> u64 {
        let mut total = 0;
        for (i, name) in NAMES.iter().enumerate() {
            let store = Store::open(&self.db(i)).unwrap();
            let signed = store.signed_states().unwrap();
            let mut turns = std::collections::HashSet::new();
            for (channel, turn, _) in &signed {
                assert!(turns.insert((channel.clone(), *turn)), "{name} signed two states of {channel} at turn {turn}");
            }
            total += signed.len() as u64;
        }
        total
    }
}

async fn run_scenario(cluster: &mut Cluster, chaos: bool) {
    let (la, lb) = cluster.open_ledgers().await;
    let started = Instant::now();
    let channels = cluster.fund_virtual(20).await;
    let objective = |kind: &str, c: &str| json!(format!("{kind}-{c}"));
    let fund_ids: Vec<Value> = channels.iter().map(|c| objective("VirtualFund", c)).collect();
    if chaos {
        // Kill the hub at staggered moments while the virtual channels are being funded.
        for k in 0..3u64 {
            tokio::time::sleep(Duration::from_millis(60 + 90 * k)).await;
            cluster.nodes[1].kill();
            tokio::time::sleep(Duration::from_millis(100)).await;
            cluster.nodes[1].start();
        }
    }
    cluster.nodes[0].wait(&fund_ids).await;
    cluster.nodes[2].wait(&fund_ids).await;
    cluster.nodes[1].wait(&fund_ids).await;

    for c in &channels {
        cluster.nodes[0].call("virtual_pay", json!({"channel_id": c, "amount": "30000000000000000"})).await;
    }
    // No need to wait for the vouchers: Bob countersigns a final state paying him at least
    // what his vouchers say, and what he was paid shows in L(hub, bob) below.
    let mut defund_ids = Vec::new();
    for c in &channels {
        let r = cluster.nodes[0].call("virtual_defund", json!({"channel_id": c})).await;
        defund_ids.push(r["objective_id"].clone());
    }
    if chaos {
        for k in 0..2u64 {
            tokio::time::sleep(Duration::from_millis(80 + 70 * k)).await;
            cluster.nodes[1].kill();
            tokio::time::sleep(Duration::from_millis(100)).await;
            cluster.nodes[1].start();
        }
    }
    for n in [0, 1, 2] {
        cluster.nodes[n].wait(&defund_ids).await;
    }
    let elapsed = started.elapsed();
    // 20 adds and 20 removes in each of the two ledgers, every step durable at both ends.
    eprintln!(
        "20 virtual channels funded, paid and closed across 3 processes in {:.0} ms: {:.0} ledger proposals/s{}",
        elapsed.as_secs_f64() * 1e3,
        80.0 / elapsed.as_secs_f64(),
        if chaos { " (hub killed 5 times)" } else { "" }
    );

    let hub = &cluster.nodes[1];
    let la_state = hub.call("ledger_get", json!({"channel_id": la})).await;
    assert_eq!(la_state["guarantees"].as_array().unwrap().len(), 0);
    let lb_state = hub.call("ledger_get", json!({"channel_id": lb})).await;
    assert_eq!(lb_state["guarantees"].as_array().unwrap().len(), 0);
    // Bob received 0.03 ETH in each of the 20 channels, through the hub.
    assert_eq!(lb_state["counterparty_balance"], "5600000000000000000", "{lb_state}");
    assert_eq!(lb_state["my_balance"], "4400000000000000000", "{lb_state}");
    let mut close_ids = Vec::new();
    for l in [&la, &lb] {
        close_ids.push(hub.call("ledger_close", json!({"channel_id": l})).await["objective_id"].clone());
    }
    hub.wait(&close_ids).await;
    for l in [&la, &lb] {
        let id: alloy_primitives::B256 = l.parse().unwrap();
        assert_eq!(cluster.chain.holdings(Address::ZERO, id).await.unwrap(), U256::ZERO, "ledger {l} paid out");
    }
    // Alice paid 0.03 ETH in each of 20 channels: her ledger balance went from 5 to 4.4 ETH,
    // which is what the chain paid her (the hub submitted the conclusion).
    assert_eq!(la_state["counterparty_balance"], "4400000000000000000", "{la_state}");
    assert_eq!(la_state["my_balance"], "5600000000000000000", "{la_state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_fund_and_defund_twenty_virtual_channels() {
    let mut cluster = Cluster::start().await;
    run_scenario(&mut cluster, false).await;
    for n in &mut cluster.nodes {
        n.stop();
    }
    assert!(cluster.audit_signatures() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_killed_and_restarted_several_times_loses_nothing() {
    let mut cluster = Cluster::start().await;
    run_scenario(&mut cluster, true).await;
    // Killed five times, the hub (like the others) still stops cleanly when asked.
    for n in &mut cluster.nodes {
        n.stop();
    }
    assert!(cluster.audit_signatures() > 0);
}

/// The hub dies for good (SIGKILL, never restarted) while a virtual channel through it is
/// open and paid in. Alice and Bob take their ledgers to chain through the API alone and end
/// with exactly what the last agreed states give them: Alice her balance less what she paid,
/// Bob his plus what Alice's vouchers promised; every channel ends empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hub_gone_for_good_leaves_alice_and_bob_their_money_on_chain() {
    const CHALLENGE: u64 = 120;
    let mut cluster = Cluster::start_with(Some(CHALLENGE)).await;
    let (la, lb) = cluster.open_ledgers().await;
    let channels = cluster.fund_virtual(1).await;
    let v = &channels[0];
    let fund = [json!(format!("VirtualFund-{v}"))];
    cluster.nodes[0].wait(&fund).await;
    cluster.nodes[2].wait(&fund).await;
    cluster.nodes[0].call("virtual_pay", json!({"channel_id": v, "amount": "30000000000000000"})).await;
    // Bob holds the voucher once his node says so.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let seen = cluster.nodes[2].call("virtual_get", json!({"channel_id": v})).await;
        assert_eq!(seen["role"], "payee", "{seen}");
        if seen["paid"] == "30000000000000000" {
            break;
        }
        assert!(Instant::now() < deadline, "bob never saw the payment: {seen}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cluster.nodes[1].kill();

    let wallet = |i: usize| cluster.chain.client().balance(cluster.nodes[i].address);
    let before = [wallet(0).await.unwrap(), wallet(2).await.unwrap()];
    let alice = cluster.nodes[0].call("channel_force_close", json!({"channel_id": la})).await;
    let bob = cluster.nodes[2].call("channel_force_close", json!({"channel_id": lb})).await;
    let exits = [(0, alice["objective_id"].clone()), (2, bob["objective_id"].clone())];
    // Chain time moves on past the challenges while the exits wait for it.
    let deadline = Instant::now() + TIMEOUT * 2;
    loop {
        let mut pending = false;
        for (i, id) in &exits {
            let r = cluster.nodes[*i].call("objectives_wait", json!({"objective_ids": [id], "timeout_ms": 1000})).await;
            assert!(r["failed"].as_array().is_none_or(|f| f.is_empty()), "{}: {r}", NAMES[*i]);
            pending |= r["pending"].as_array().is_some_and(|p| !p.is_empty());
        }
        if !pending {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the exits did not finish:\n{}\n{}",
            cluster.nodes[0].log_tail(),
            cluster.nodes[2].log_tail()
        );
        cluster.anvil.advance_time(CHALLENGE + 1).await.unwrap();
    }
    for l in [&la, &lb, v] {
        let id: alloy_primitives::B256 = l.parse().unwrap();
        assert_eq!(cluster.chain.holdings(Address::ZERO, id).await.unwrap(), U256::ZERO, "channel {l} paid out");
    }
    // Gas is what each paid for its own transactions: at most 0.01 ETH here.
    let gained = |after: U256, before: U256, expected: U256| {
        let gas = expected.checked_sub(after - before).unwrap_or_else(|| panic!("gained more than {expected}"));
        assert!(gas < U256::from(10_000_000_000_000_000u64), "gas {gas}");
    };
    // Alice: 5 ETH in her ledger less the 0.1 she put into V, plus V's 0.07 left to her.
    gained(wallet(0).await.unwrap(), before[0], U256::from(4_970_000_000_000_000_000u64));
    // Bob: his 5 ETH plus the 0.03 Alice's voucher promised.
    gained(wallet(2).await.unwrap(), before[1], U256::from(5_030_000_000_000_000_000u64));
    for i in [0, 2] {
        cluster.nodes[i].stop();
    }
    assert!(cluster.audit_signatures() > 0);
}
