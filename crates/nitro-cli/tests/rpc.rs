//! `nitro rpc` against a `nitro node` process (JSON logs, stopped with SIGTERM), and what each
//! of them refuses in one line.

#![cfg(unix)]

use std::{
    net::TcpListener,
    path::Path,
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use nitro_chain::{dev_key, Anvil, Artifacts, ChainConfig, Contracts, EthClient, DEV_PRIVATE_KEYS};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(120);

fn nitro(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nitro")).args(args).stdin(Stdio::null()).output().unwrap()
}

/// Exit status 2 and one line on stderr, which is returned.
fn refused(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "one line on stderr: {err:?}");
    assert!(err.starts_with("error: ") && !err.contains("panicked"), "{err}");
    err
}

/// A free loopback port below the ephemeral range (which outgoing connections may take).
fn free_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    for _ in 0..1000 {
        let random = std::collections::hash_map::RandomState::new().build_hasher().finish();
        let port = 10_000 + (random % 20_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn rpc_refuses_what_cannot_work_without_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    write_secret(&token, "secret\n");
    let token_arg = token.to_str().unwrap();
    // Nothing listens on port 1.
    let api = "http://127.0.0.1:1";

    let missing = dir.path().join("missing.token");
    let e = refused(&nitro(&["rpc", "--api", api, "--token-file", missing.to_str().unwrap(), "ledger_list"]));
    assert!(e.contains("missing.token"), "{e}");
    let e = refused(&nitro(&["rpc", "--api", api, "--token-file", token_arg, "ledger_get", "{not json"]));
    assert!(e.contains("params:"), "{e}");
    refused(&nitro(&["rpc", "--api", api, "--token-file", token_arg, "ledger_list"]));
    refused(&nitro(&["rpc", "--api", "not a url", "--token-file", token_arg, "ledger_list"]));

    let e = refused(&nitro(&["node", "--config", dir.path().join("absent.toml").to_str().unwrap()]));
    assert!(e.contains("absent.toml"), "{e}");
}

#[test]
fn rpc_calls_a_running_node_which_stops_cleanly_on_sigterm() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let contracts = runtime.block_on(async {
        let deployer =
            EthClient::connect(&anvil.endpoint(), &dev_key(0).unwrap(), ChainConfig::default()).await.unwrap();
        Contracts::deploy(&deployer, &Artifacts::locate().unwrap_or_else(|e| panic!("{e}"))).await.unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    write_secret(&dir.path().join("node.key"), &format!("{}\n", DEV_PRIVATE_KEYS[1]));
    let (p2p, api_port) = (free_port(), free_port());
    let config = format!(
        "key_file = \"node.key\"\ndb_path = \"node.db\"\nlisten = \"127.0.0.1:{p2p}\"\napi = \"127.0.0.1:{api_port}\"\n\
         token_file = \"node.token\"\nchain_url = \"{url}\"\nadjudicator = \"{adj}\"\nconsensus_app = \"{ca}\"\n\
         virtual_payment_app = \"{vpa}\"\n",
        url = anvil.endpoint(),
        adj = contracts.adjudicator,
        ca = contracts.consensus_app,
        vpa = contracts.virtual_payment_app,
    );
    let config_path = dir.path().join("node.toml");
    std::fs::write(&config_path, config).unwrap();
    let log_path = dir.path().join("node.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_nitro"))
        .args(["node", "--log-json", "--config", config_path.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    let api = format!("http://127.0.0.1:{api_port}");
    let token = dir.path().join("node.token");
    let token_arg = token.to_str().unwrap();
    let rpc = |method: &str, params: Option<&str>| {
        let mut args = vec!["rpc", "--api", &api, "--token-file", token_arg, method];
        args.extend(params);
        nitro(&args)
    };

    // The node writes its token and then answers; until then, calls fail.
    let start = Instant::now();
    let listed = loop {
        if token.exists() {
            let out = rpc("ledger_list", None);
            if out.status.success() {
                break out;
            }
        }
        assert!(child.try_wait().unwrap().is_none(), "the node exited early:\n{}", log());
        assert!(start.elapsed() < PATIENCE, "the node never answered:\n{}", log());
        std::thread::sleep(Duration::from_millis(50));
    };
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed, serde_json::json!({"ledgers": []}));

    // Params given as a JSON object; and the API's refusals, in one line each.
    let objectives: Value =
        serde_json::from_slice(&rpc("objective_list", Some(r#"{"status": "pending"}"#)).stdout).unwrap();
    assert!(objectives.is_object() || objectives.is_array(), "{objectives}");
    let e = refused(&rpc("ledger_get", Some(r#"{"channel_id": "0x1234"}"#)));
    assert!(e.contains("channel_id"), "{e}");
    let e = refused(&rpc("frobnicate", None));
    assert!(e.to_lowercase().contains("method"), "{e}");
    let wrong = dir.path().join("wrong.token");
    write_secret(&wrong, "not the token\n");
    refused(&nitro(&["rpc", "--api", &api, "--token-file", wrong.to_str().unwrap(), "ledger_list"]));

    // SIGTERM: the node shuts down, exits 0 and says so; every log line is JSON.
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("the node ignored SIGTERM:\n{}", log());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    assert!(status.success(), "{status:?}\n{}", log());
    assert_eq!(stdout.trim(), "node stopped");
    let log = log();
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}")))
        .collect();
    assert!(lines.iter().any(|l| l["fields"]["message"] == "shutting down"), "{log}");
    assert!(lines.iter().all(|l| l["level"].is_string()), "{log}");
}
