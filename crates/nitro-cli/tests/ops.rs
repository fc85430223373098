//! The operator's commands, run as processes: `nitro deploy` against anvil, and `nitro node`'s
//! logs when stderr is not a terminal.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use alloy_primitives::{Address, B256, U256};
use nitro_chain::{dev_key, Anvil, ChainConfig, ChainService, EthChainService, EthClient, DEV_PRIVATE_KEYS};
use nitro_node::config::NodeConfig;
use serde_json::Value;

fn nitro(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_nitro"));
    command.args(args).stdin(Stdio::null()).env_remove("NITRO_DEPLOY_KEY");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

fn write_key(path: &Path, index: usize, mode: u32) {
    std::fs::write(path, format!("{}\n", DEV_PRIVATE_KEYS[index])).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    #[cfg(not(unix))]
    let _ = mode;
}

/// Exit status 2 and one line on stderr, which is returned.
fn refused(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "stdout: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "one line on stderr: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// The JSON on the last line, and the lines before it.
fn deployed(out: &Output) -> (Value, Vec<String>) {
    assert!(out.status.success(), "nitro deploy failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let json = serde_json::from_str(&lines.pop().unwrap()).unwrap();
    (json, lines)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_prints_the_addresses_of_working_contracts() {
    let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
    let url = anvil.endpoint();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("deployer.key");
    write_key(&key, 0, 0o600);
    let key_arg = key.to_str().unwrap();

    let (json, toml) = deployed(&nitro(&["deploy", "--chain-url", &url, "--key-file", key_arg], &[]));
    assert_eq!(json["chain_id"], 31337);
    assert_eq!(json["chain_url"], url.as_str());
    assert_eq!(json["deployer"], dev_key(0).unwrap().address().to_checksum(None));
    let address = |field: &str| -> Address { json[field].as_str().unwrap().parse().unwrap() };
    let (adjudicator, consensus_app, virtual_payment_app) =
        (address("adjudicator"), address("consensus_app"), address("virtual_payment_app"));
    assert!(toml[0].starts_with("# Nitro contracts on chain 31337"), "{toml:?}");
    assert_eq!(
        toml[1..],
        [
            format!("chain_url = \"{url}\""),
            format!("adjudicator = \"{}\"", adjudicator.to_checksum(None)),
            format!("consensus_app = \"{}\"", consensus_app.to_checksum(None)),
            format!("virtual_payment_app = \"{}\"", virtual_payment_app.to_checksum(None)),
        ]
    );

    // The snippet completes a node's configuration as it is.
    let config = format!(
        "key_file = \"node.key\"\ndb_path = \"node.db\"\nlisten = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n\
         token_file = \"node.token\"\n{}\n",
        toml.join("\n")
    );
    std::fs::write(dir.path().join("node.toml"), config).unwrap();
    let config = NodeConfig::load(&dir.path().join("node.toml")).unwrap();
    assert_eq!(
        (config.chain_url.as_str(), config.adjudicator, config.consensus_app, config.virtual_payment_app),
        (url.as_str(), adjudicator, consensus_app, virtual_payment_app)
    );

    // The adjudicator answers as one: nothing held for a channel nobody funded.
    let client = EthClient::connect(&url, &dev_key(1).unwrap(), ChainConfig::default()).await.unwrap();
    let chain = EthChainService::new(client, adjudicator);
    assert_eq!(chain.holdings(Address::ZERO, B256::repeat_byte(7)).await.unwrap(), U256::ZERO);

    // The key from the environment: a second deployment, at other addresses.
    let (again, _) = deployed(&nitro(&["deploy", "--chain-url", &url], &[("NITRO_DEPLOY_KEY", DEV_PRIVATE_KEYS[3])]));
    assert_eq!(again["deployer"], dev_key(3).unwrap().address().to_checksum(None));
    assert_ne!(again["adjudicator"], json["adjudicator"]);
}

#[test]
fn deploy_refuses_what_cannot_work_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("deployer.key");
    write_key(&key, 0, 0o600);
    let key_arg = key.to_str().unwrap();
    // Nothing listens on port 1.
    let url = "http://127.0.0.1:1";

    let e = refused(&nitro(&["deploy", "--chain-url", url], &[]));
    assert!(e.contains("the deployer's key is needed: give --key-file FILE, or set NITRO_DEPLOY_KEY"), "{e}");
    let e = refused(&nitro(&["deploy", "--chain-url", url, "--key-file", key_arg, "--key", DEV_PRIVATE_KEYS[0]], &[]));
    assert!(e.contains("either --key-file or --key"), "{e}");
    let e = refused(&nitro(&["deploy", "--chain-url", url, "--key", "0x1234"], &[]));
    assert!(e.contains("--key:"), "{e}");
    let e = refused(&nitro(&["deploy", "--chain-url", url], &[("NITRO_DEPLOY_KEY", "nope")]));
    assert!(e.contains("NITRO_DEPLOY_KEY:"), "{e}");
    let missing = dir.path().join("missing");
    let e = refused(&nitro(&["deploy", "--chain-url", url, "--key-file", missing.to_str().unwrap()], &[]));
    assert!(e.contains("missing"), "{e}");
    #[cfg(unix)]
    {
        write_key(&key, 0, 0o644);
        let e = refused(&nitro(&["deploy", "--chain-url", url, "--key-file", key_arg], &[]));
        assert!(e.contains(&format!("run chmod 600 {key_arg}")), "{e}");
        write_key(&key, 0, 0o600);
    }
    let e = refused(&nitro(&["deploy", "--chain-url", url, "--key-file", key_arg, "--artifacts", key_arg], &[]));
    assert!(e.contains("--artifacts") && e.contains("not a directory"), "{e}");
    let e = refused(&nitro(&["deploy", "--chain-url", url, "--key-file", key_arg], &[]));
    assert!(e.contains("unreachable"), "{e}");
    let e = refused(&nitro(&["deploy", "--chain-url", "not a url", "--key-file", key_arg], &[]));
    assert!(e.contains("not a url"), "{e}");
}

#[test]
fn node_logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    write_key(&dir.path().join("node.key"), 1, 0o600);
    // A deprecated key (logged as a warning), and a chain that is not there (the node stops
    // with an error after logging its start).
    let config = "key_file = \"node.key\"\ndb_path = \"node.db\"\nlisten = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n\
                  token_file = \"node.token\"\nchain_url = \"http://127.0.0.1:1\"\n\
                  adjudicator = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n\
                  consensus_app = \"0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512\"\n\
                  virtual_payment_app = \"0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0\"\noutbox_kept_per_peer = 512\n";
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).unwrap();
    let out = nitro(&["node", "--config", path.to_str().unwrap()], &[("RUST_LOG", "info")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("WARN") && err.contains("outbox_kept_per_peer = 512 is deprecated"), "{err}");
    assert!(err.contains("store opened"), "{err}");
    assert!(!err.contains('\u{1b}'), "escape codes in {err:?}");
}
