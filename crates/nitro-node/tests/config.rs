//! Configuration mistakes are clear start-up errors: refused by `NodeConfig::load`, or by
//! `node::run` before it creates anything (key file permissions, our own address as a peer,
//! contracts without code on the chain).

mod common;

use std::path::Path;

use common::{config_text, node_dir, Net};
use nitro_chain::dev_key;
use nitro_node::config::{ConfigError, NodeConfig};
use nitro_node::node::{self, NodeError};

/// A configuration that loads, with placeholders for everything chain-related.
fn base() -> String {
    "key_file = \"node.key\"\ndb_path = \"node.db\"\nlisten = \"127.0.0.1:0\"\napi = \"127.0.0.1:0\"\n\
     token_file = \"node.token\"\nchain_url = \"http://127.0.0.1:1\"\n\
     adjudicator = \"0x5FbDB2315678afecb367f032d93F642f64180aa3\"\n\
     consensus_app = \"0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512\"\n\
     virtual_payment_app = \"0x9fE46736679d2D9a65F0992F2272dE9f3c7fa6e0\"\n"
        .to_owned()
}

const PEER: &str = "[[peers]]\naddress = \"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC\"\nat = \"127.0.0.1:9702\"\n";

fn load(text: &str) -> Result<NodeConfig, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.toml");
    std::fs::write(&path, text).unwrap();
    NodeConfig::load(&path)
}

fn refused(text: &str) -> String {
    match load(text) {
        Ok(_) => panic!("accepted:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_base_configuration_loads_without_warnings() {
    let config = load(&format!("{}{PEER}", base())).unwrap();
    assert!(config.warnings().is_empty());
    assert_eq!(config.metrics_listen, None);
}

#[test]
fn outbox_kept_per_peer_is_accepted_with_a_deprecation_warning() {
    let config = load(&format!("{}outbox_kept_per_peer = 1000\n", base())).unwrap();
    let warnings = config.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].starts_with("outbox_kept_per_peer = 1000 is deprecated and ignored"), "{}", warnings[0]);
}

#[test]
fn an_address_with_a_bad_checksum_is_refused_naming_the_key() {
    // The adjudicator's address with one letter's case flipped.
    let bad = "0x5FbDB2315678afecb367f032d93F642f64180aA3";
    for key in ["adjudicator", "consensus_app", "virtual_payment_app"] {
        let text = base()
            .lines()
            .map(|l| if l.starts_with(&format!("{key} =")) { format!("{key} = \"{bad}\"") } else { l.to_owned() })
            .collect::<Vec<_>>()
            .join("\n");
        let e = refused(&text);
        assert!(e.contains("EIP-55 checksum") && e.contains(key), "{key}: {e}");
    }
    let e = refused(&format!("{}{}", base(), PEER.replace("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC", bad)));
    assert!(e.contains("EIP-55 checksum") && e.contains("address"), "{e}");
    // Single-case addresses carry no checksum and are fine.
    let lower =
        base().replace("0x5FbDB2315678afecb367f032d93F642f64180aa3", "0x5fbdb2315678afecb367f032d93f642f64180aa3");
    assert!(load(&lower).is_ok());
    let upper =
        base().replace("0x5FbDB2315678afecb367f032d93F642f64180aa3", "0x5FBDB2315678AFECB367F032D93F642F64180AA3");
    assert!(load(&upper).is_ok());
    assert!(refused(&base().replace("0x5FbDB2315678afecb367f032d93F642f64180aa3", "0x5FbDB23")).contains("adjudicator"));
}

#[test]
fn a_zero_challenge_duration_is_refused() {
    let zero = format!("{}challenge_duration = 0\n[policy]\nchallenge_duration_min = 0\n", base());
    let e = refused(&zero);
    assert!(e.starts_with("challenge_duration = 0: a challenge would finalize in the block that registers it"), "{e}");
    let e = refused(&format!("{}[policy]\nchallenge_duration_min = 0\n", base()));
    assert!(e.starts_with("policy.challenge_duration_min = 0:"), "{e}");
    // Short but not zero is the policy's business, and allowed if the operator says so.
    assert!(load(&format!("{}challenge_duration = 60\n[policy]\nchallenge_duration_min = 30\n", base())).is_ok());
}

#[test]
fn a_hub_keeps_more_unknown_peers_than_a_wallet_unless_told() {
    assert_eq!(load(&base()).unwrap().unknown_peers(), 16);
    let hub = load(&format!("{}[policy]\naccept_ledgers_from = \"anyone\"\n", base())).unwrap();
    assert_eq!(hub.unknown_peers(), 1_024);
    let set = load(&format!("{}max_unknown_peers = 3\n[policy]\naccept_ledgers_from = \"anyone\"\n", base())).unwrap();
    assert_eq!(set.unknown_peers(), 3);
}

#[test]
fn a_peer_listed_twice_is_refused() {
    let e = refused(&format!("{}{PEER}{PEER}", base()));
    assert!(e.contains("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC is listed twice"), "{e}");
}

#[test]
fn our_own_address_as_a_peer_is_refused() {
    let config = load(&format!("{}{PEER}", base())).unwrap();
    let hub = dev_key(2).unwrap().address();
    let e = config.check_own_address(hub).unwrap_err().to_string();
    assert!(e.contains("which is this node's own address") && e.contains("remove that entry"), "{e}");
    assert!(config.check_own_address(dev_key(1).unwrap().address()).is_ok());
}

/// Runs the node of `dir`'s configuration; it must fail at start, having created nothing.
async fn start_fails(dir: &Path) -> NodeError {
    let config = NodeConfig::load(&dir.join("node.toml")).unwrap();
    let result = tokio::time::timeout(common::TIMEOUT, node::run(config, std::future::pending())).await;
    let error = result.expect("the node gives up at start").expect_err("the node refuses to start");
    for made in ["node.db", "node.token"] {
        assert!(!dir.join(made).exists(), "{made} was created before the refusal: {error}");
    }
    error
}

#[cfg(unix)]
#[tokio::test]
async fn a_key_file_others_can_read_is_refused_with_the_fix() {
    use std::os::unix::fs::PermissionsExt;
    let (dir, _) = node_dir(1, &base());
    let key = dir.path().join("node.key");
    for mode in [0o644, 0o640, 0o604, 0o660] {
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
        let e = start_fails(dir.path()).await;
        assert!(matches!(e, NodeError::Key(..)), "{e:?}");
        let e = e.to_string();
        assert!(e.contains(&format!("mode {mode:03o} lets other users read or change the private key")), "{e}");
        assert!(e.ends_with(&format!("run chmod 600 {}", key.display())), "{e}");
    }
}

#[tokio::test]
async fn our_own_address_as_a_peer_stops_the_start() {
    let own = format!("[[peers]]\naddress = \"{}\"\nat = \"127.0.0.1:9702\"\n", dev_key(1).unwrap().address());
    let (dir, _) = node_dir(1, &format!("{}{own}", base()));
    let e = start_fails(dir.path()).await;
    assert!(matches!(e, NodeError::Config(_)) && e.to_string().contains("own address"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contracts_without_code_stop_the_start() {
    let net = Net::start().await;
    let good = config_text(&net, 1, &[], false);
    // An account without code (a wallet) in place of each contract in turn.
    let wallet = dev_key(5).unwrap().address();
    for (key, address) in [
        ("adjudicator", net.contracts.adjudicator),
        ("consensus_app", net.contracts.consensus_app),
        ("virtual_payment_app", net.contracts.virtual_payment_app),
    ] {
        let text = good.replace(&format!("{key} = \"{address}\""), &format!("{key} = \"{wallet}\""));
        assert_ne!(text, good);
        let (dir, _) = node_dir(1, &text);
        let config = NodeConfig::load(&dir.path().join("node.toml")).unwrap();
        let result = tokio::time::timeout(common::TIMEOUT, node::run(config, std::future::pending())).await;
        let e = result.expect("the node gives up at start").expect_err("refused").to_string();
        let expected =
            format!("{key} {wallet} has no contract code on the chain at {} (chain id 31337)", net.anvil.endpoint());
        assert!(e.contains(&expected), "{e}");
        assert!(e.contains("nitro deploy"), "{e}");
        assert!(!dir.path().join("node.token").exists(), "the API started");
    }
}

#[test]
fn values_out_of_range_are_refused_naming_the_key_and_the_range() {
    let cases: &[(&str, &str)] = &[
        ("tick_ms = 0\n", "tick_ms must be > 0 and challenge_duration < 2^48"),
        ("challenge_duration = 281474976710656\n", "tick_ms must be > 0 and challenge_duration < 2^48"),
        ("peer_queue_capacity = 0\n", "peer_queue_capacity must be between 1 and 1048576, got 0"),
        ("peer_queue_capacity = 1048577\n", "peer_queue_capacity must be between 1 and 1048576, got 1048577"),
        ("challenge_duration = 60\n", "challenge_duration 60 is outside the policy's [3600, 604800] s"),
        ("challenge_duration = 700000\n", "challenge_duration 700000 is outside the policy's [3600, 604800] s"),
        (
            "[policy]\nchallenge_duration_max = 281474976710656\n",
            "policy.challenge_duration_min (3600) must not exceed policy.challenge_duration_max (281474976710656), \
             itself below 2^48",
        ),
        ("[policy]\nmax_deposit_per_ledger = \"lots\"\n", "policy.max_deposit_per_ledger: "),
        ("[policy]\nmax_total_deposit = \"-1\"\n", "policy.max_total_deposit: "),
        ("[policy]\nmax_virtual_amount = \"1.5\"\n", "policy.max_virtual_amount: "),
        ("[policy]\nmax_locked_per_counterparty = \"\"\n", "policy.max_locked_per_counterparty: "),
        ("confirmations = 3\n[chain]\nconfirmations = 4\n", "confirmations = 3 and [chain] confirmations = 4 disagree"),
        ("[chain]\nconfirmations = 0\n", "chain.confirmations (0) must be at least 1 and at most reorg_window (128)"),
        ("[chain]\nreorg_window = 0\n", "chain.reorg_window (0) must be within 1..=100000"),
        ("[chain]\nreorg_window = 100001\n", "chain.reorg_window (100001) must be within 1..=100000"),
        ("[chain]\npoll_ms = 0\n", "chain.poll_ms, bump_after_blocks and bump_after_secs must be > 0"),
        ("[chain]\nbump_after_blocks = 0\n", "chain.poll_ms, bump_after_blocks and bump_after_secs must be > 0"),
        ("[chain]\nbump_after_secs = 0\n", "chain.poll_ms, bump_after_blocks and bump_after_secs must be > 0"),
        ("[chain]\nbump_percent = 1001\n", "chain.bump_percent (1001) must be within 10..=1000"),
        (
            "[chain]\nmax_fee_gwei = 0\n",
            "chain.max_fee_gwei (0) must be > 0 and deadline_max_fee_gwei (5000) at least as high",
        ),
    ];
    for (extra, expected) in cases {
        let e = refused(&format!("{}{extra}", base()));
        assert!(e.contains(expected), "{extra:?}: {e}");
    }
    let inverted = nitro_node::config::PolicyConfig {
        challenge_duration_min: 90_000,
        challenge_duration_max: 80_000,
        ..Default::default()
    };
    let e = inverted.to_policy(&[]).unwrap_err().to_string();
    assert!(
        e.contains("policy.challenge_duration_min (90000) must not exceed policy.challenge_duration_max (80000)"),
        "{e}"
    );
    let public = base().replace("api = \"127.0.0.1:0\"", "api = \"0.0.0.0:9801\"");
    assert!(refused(&public).contains("api 0.0.0.0:9801 must be a loopback address"));
    // A policy with the range given and every amount a decimal: loads, and means what it says.
    let config = load(&format!(
        "{}challenge_duration = 7200\n[policy]\naccept_ledgers_from = \"anyone\"\nchallenge_duration_min = 7200\n\
         challenge_duration_max = 7200\nmax_deposit_per_ledger = \"5\"\nauto_force_close_secs = 0\n\
         [chain]\nconfirmations = 128\npoll_ms = 250\nbump_after_secs = 7\nbump_percent = 10\n",
        base()
    ))
    .unwrap();
    let policy = config.policy.to_policy(&config.peers).unwrap();
    assert_eq!(policy.challenge_duration, Some((7200, 7200)));
    assert_eq!(policy.ledger_peers, None, "anyone may open a ledger with a hub");
    assert_eq!(policy.auto_force_close_after, None);
    assert_eq!(policy.max_deposit_per_ledger, Some(alloy_primitives::U256::from(5)));
    assert_eq!(config.chain.confirmations_on(1), 128);
    let manager = config.chain.manager();
    assert_eq!(manager.poll_interval, std::time::Duration::from_millis(250));
    assert_eq!(manager.bump_after, std::time::Duration::from_secs(7));
    assert_eq!(manager.bump_percent, 10);
}

#[test]
fn an_unreadable_or_malformed_file_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.toml");
    let e = NodeConfig::load(&missing).unwrap_err();
    assert!(matches!(e, ConfigError::Read { .. }), "{e:?}");
    assert!(e.to_string().starts_with(&format!("cannot read {}: ", missing.display())), "{e}");
    let e = refused("key_file = [not toml");
    assert!(e.contains("node.toml"), "{e}");
    let e = refused(&format!("{}surprise = 1\n", base()));
    assert!(e.contains("surprise"), "{e}");
}
