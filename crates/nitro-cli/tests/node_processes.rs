//! Three `nitro node` processes (Alice, a hub, Bob) and anvil on loopback: ledgers opened,
//! 20 virtual channels funded, paid and closed through the hub, ledgers closed on chain —
//! once cleanly, once with the hub killed (SIGKILL) and restarted several times.

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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
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

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill(); // SIGKILL
            let _ = child.wait();
        }
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

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default();
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
        self.kill();
    }
}

struct Cluster {
    _anvil: Anvil,
    chain: EthChainService,
    nodes: Vec<NodeProc>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
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
            let config = format!(
                "key_file = \"{n}.key\"\ndb_path = \"{n}.db\"\nlisten = \"127.0.0.1:{p2p}\"\napi = \"127.0.0.1:{api}\"\n\
                 token_file = \"{n}.token\"\nchain_url = \"{url}\"\nadjudicator = \"{adj}\"\nconsensus_app = \"{ca}\"\n\
                 virtual_payment_app = \"{vpa}\"\ntick_ms = 200\noutbox_kept_per_peer = 1000000\n{peers}\
                 [policy]\nmax_deposit_per_ledger = \"10000000000000000000\"\nmax_total_deposit = \"100000000000000000000\"\n",
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
        Self { _anvil: anvil, chain, nodes, _dir: dir }
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
    // Give the vouchers time to reach Bob (they ride the same reliable transport).
    tokio::time::sleep(Duration::from_millis(500)).await;
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
        n.kill();
    }
    assert!(cluster.audit_signatures() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hub_killed_and_restarted_several_times_loses_nothing() {
    let mut cluster = Cluster::start().await;
    run_scenario(&mut cluster, true).await;
    for n in &mut cluster.nodes {
        n.kill();
    }
    assert!(cluster.audit_signatures() > 0);
}
