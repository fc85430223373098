//! `nitro deploy`: deploys the `NitroAdjudicator`, `ConsensusApp` and `VirtualPaymentApp` from
//! the pinned npm package's artifacts and prints their addresses, as a TOML snippet for a
//! node's configuration, then as one JSON object on the last line.

use std::path::PathBuf;

use clap::Args;
use nitro_chain::{Artifacts, ChainConfig, Contracts, EthClient};
use nitro_core::SigningKey;
use serde_json::{json, Value};

use crate::UsageError;

/// The environment variable `nitro deploy` reads the deployer's key from when neither
/// `--key-file` nor `--key` is given.
pub const KEY_ENV: &str = "NITRO_DEPLOY_KEY";

/// Options of `nitro deploy`.
#[derive(Args)]
pub struct DeployArgs {
    /// JSON-RPC URL of the Ethereum node, e.g. http://127.0.0.1:8545.
    #[arg(long)]
    chain_url: String,
    /// File holding the deployer's private key (0x-hex; mode 0600).
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The deployer's private key (0x-hex). Other users can see command lines: prefer
    /// --key-file or the NITRO_DEPLOY_KEY environment variable.
    #[arg(long)]
    key: Option<String>,
    /// Directory of the contract artifacts (default: NITRO_ARTIFACTS, else
    /// node_modules/@statechannels/nitro-protocol/dist/artifacts above the current directory).
    #[arg(long)]
    artifacts: Option<PathBuf>,
}

fn deployer_key(args: &DeployArgs) -> Result<SigningKey, UsageError> {
    let from_hex = |hex: &str, origin: &str| {
        SigningKey::from_hex(hex.trim()).map_err(|e| UsageError(format!("{origin}: {e} (expected 32 bytes of 0x-hex)")))
    };
    match (&args.key_file, &args.key) {
        (Some(_), Some(_)) => Err(UsageError("give either --key-file or --key, not both".into())),
        (Some(file), None) => nitro_node::node::read_key(file).map_err(|e| UsageError(e.to_string())),
        (None, Some(hex)) => from_hex(hex, "--key"),
        (None, None) => match std::env::var(KEY_ENV) {
            Ok(hex) => from_hex(&hex, KEY_ENV),
            Err(_) => Err(UsageError(format!("the deployer's key is needed: give --key-file FILE, or set {KEY_ENV}"))),
        },
    }
}

/// Deploys the three contracts; prints the TOML snippet and returns the JSON summary.
pub fn run(args: DeployArgs) -> Result<Value, UsageError> {
    let key = deployer_key(&args)?;
    let artifacts = match &args.artifacts {
        Some(dir) if dir.is_dir() => Artifacts::at(dir),
        Some(dir) => return Err(UsageError(format!("--artifacts {}: not a directory", dir.display()))),
        None => Artifacts::locate().map_err(|e| UsageError(e.to_string()))?,
    };
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| UsageError(e.to_string()))?;
    let (chain_id, deployer, contracts) = runtime
        .block_on(async {
            let client = EthClient::connect(&args.chain_url, &key, ChainConfig::default()).await?;
            let contracts = Contracts::deploy(&client, &artifacts).await?;
            Ok::<_, nitro_chain::ChainError>((client.chain_id(), client.address(), contracts))
        })
        .map_err(|e| UsageError(e.to_string()))?;
    let url = &args.chain_url;
    let address = |a: alloy_primitives::Address| a.to_checksum(None);
    println!("# Nitro contracts on chain {chain_id} ({url}), deployed by {}", address(deployer));
    println!("chain_url = {}", Value::String(url.clone()));
    println!("adjudicator = \"{}\"", address(contracts.adjudicator));
    println!("consensus_app = \"{}\"", address(contracts.consensus_app));
    println!("virtual_payment_app = \"{}\"", address(contracts.virtual_payment_app));
    Ok(json!({
        "chain_id": chain_id,
        "chain_url": url,
        "deployer": address(deployer),
        "adjudicator": address(contracts.adjudicator),
        "consensus_app": address(contracts.consensus_app),
        "virtual_payment_app": address(contracts.virtual_payment_app),
    }))
}
