//! Alice, the hub and Bob as a [`LocalNetwork`] (engines in this process, in-memory stores)
//! over a fresh anvil with the real Nitro contracts: the setup the anvil flow tests share.

use nitro_chain::{dev_key, Anvil, Artifacts, ChainConfig, Contracts, EthClient};
use nitro_core::{party::PartyConfig, U48};
use std::time::Duration;

use nitro_node::{LocalChainSettings, LocalNetwork, NetworkError, Participant, Stores};

/// The chain, the deployer's account and the three parties (0 alice, 1 hub, 2 bob, dev keys
/// 1–3); the deployer (dev key 0) deployed the contracts.
pub struct LocalChain {
    pub anvil: Anvil,
    pub net: LocalNetwork,
    pub deployer: EthClient,
    pub contracts: Contracts,
}

impl LocalChain {
    /// A fresh anvil (failing clearly when it or the contracts are not installed), the
    /// contracts deployed, the parties with `challenge_duration` seconds, at depth 1: an
    /// automining anvil makes a block only for a transaction, so deeper waits would never end
    /// (reorgs are chain_safety.rs's subject).
    pub async fn start(challenge_duration: u64) -> Self {
        let anvil = Anvil::spawn().unwrap_or_else(|e| panic!("{e}"));
        let artifacts = Artifacts::locate().unwrap_or_else(|e| panic!("{e}"));
        let deployer =
            EthClient::connect(&anvil.endpoint(), &dev_key(0).unwrap(), ChainConfig::default()).await.unwrap();
        let contracts = Contracts::deploy(&deployer, &artifacts).await.unwrap();
        let config = PartyConfig {
            consensus_app: contracts.consensus_app,
            virtual_payment_app: contracts.virtual_payment_app,
            challenge_duration: U48::from(challenge_duration),
        };
        let parties =
            ["alice", "hub", "bob"].iter().zip(1..).map(|(n, i)| (n.to_string(), dev_key(i).unwrap())).collect();
        let settings = LocalChainSettings { confirmations: Some(1), ..LocalChainSettings::default() };
        let net =
            LocalNetwork::connect_with(&anvil.endpoint(), &contracts, parties, config, &Stores::InMemory, settings)
                .await
                .unwrap();
        Self { anvil, net, deployer, contracts }
    }
}

/// Runs `net` until `done`, moving chain time on by `challenge_duration + 1` seconds whenever
/// nothing happens for `step` (objectives waiting for a challenge to expire), at most `rounds`
/// times; panics with the network's report if it never settles.
pub async fn settle(
    net: &mut LocalNetwork,
    anvil: &Anvil,
    challenge_duration: u64,
    step: Duration,
    rounds: usize,
    done: impl Fn(&[Participant]) -> bool + Copy,
) {
    for _ in 0..rounds {
        match net.run_until(step, done).await {
            Ok(()) => return,
            Err(NetworkError::Timeout { .. }) => anvil.advance_time(challenge_duration + 1).await.unwrap(),
            Err(e) => panic!("{e}"),
        }
    }
    panic!("not settled:\n{}", net.report());
}
