//! Checks the node makes before it starts, so that a configuration that cannot work is a
//! clear error at once instead of a loss or a hang later.

use std::path::Path;

use nitro_chain::{ChainError, EthClient};

use crate::config::NodeConfig;
use crate::node::NodeError;

/// On Unix, refuses a key file that group or others may read or change, naming the fix.
pub(crate) fn check_key_file(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).map_err(|e| e.to_string())?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(format!(
                "mode {mode:03o} lets other users read or change the private key; run chmod 600 {}",
                path.display()
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Refuses to start against contracts that are not there: each configured address must hold
/// code on the chain (a wrong chain, a fresh devnet, a typo would otherwise only show when
/// the first deposit is lost or reverts).
pub(crate) async fn check_contracts(client: &EthClient, config: &NodeConfig) -> Result<(), NodeError> {
    use alloy::providers::Provider;
    let rpc_timeout = client.config().rpc_timeout;
    for (name, address) in [
        ("adjudicator", config.adjudicator),
        ("consensus_app", config.consensus_app),
        ("virtual_payment_app", config.virtual_payment_app),
    ] {
        let code = tokio::time::timeout(rpc_timeout, client.provider().get_code_at(address))
            .await
            .map_err(|_| ChainError::Timeout { what: format!("eth_getCode of {address}"), after: rpc_timeout })?
            .map_err(|e| ChainError::Rpc { operation: "eth_getCode", message: e.to_string() })?;
        if code.is_empty() {
            return Err(NodeError::Config(format!(
                "{name} {address} has no contract code on the chain at {url} (chain id {}): deploy the contracts \
                 with `nitro deploy --chain-url {url} --key-file <deployer key>` and copy the addresses it prints \
                 into the configuration",
                client.chain_id(),
                url = config.chain_url,
            )));
        }
    }
    Ok(())
}
