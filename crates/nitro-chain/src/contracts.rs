//! The compiled Nitro contracts from the npm package `@statechannels/nitro-protocol`
//! (`dist/artifacts/contracts/<Name>.sol/<Name>.json`, Hardhat artifacts with ABI and
//! bytecode), and their deployment.
//!
//! None of the three contracts has constructor arguments or library links (their artifacts'
//! `linkReferences` are empty), so deploying is sending the creation bytecode as is.

use std::path::{Path, PathBuf};

use alloy::json_abi::JsonAbi;
use alloy_primitives::{Address, Bytes};
use serde::Deserialize;

use crate::{bindings, error::ArtifactError, locate, ChainError, EthClient};

/// Where the artifacts are, relative to a directory holding `node_modules`.
const ARTIFACTS: &str = "node_modules/@statechannels/nitro-protocol/dist/artifacts";

/// One compiled contract.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The contract's name.
    pub name: String,
    /// The file it was read from.
    pub path: PathBuf,
    /// Its ABI.
    pub abi: JsonAbi,
    /// Its creation bytecode.
    pub bytecode: Bytes,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct HardhatArtifact {
    contract_name: String,
    abi: JsonAbi,
    bytecode: String,
    #[serde(default)]
    link_references: serde_json::Map<String, serde_json::Value>,
}

/// The artifact directory (`.../dist/artifacts`).
#[derive(Clone, Debug)]
pub struct Artifacts {
    dir: PathBuf,
}

impl Artifacts {
    /// `NITRO_ARTIFACTS` if set, else the nearest
    /// `node_modules/@statechannels/nitro-protocol/dist/artifacts` above the current
    /// directory or this crate.
    pub fn locate() -> Result<Self, ArtifactError> {
        if let Some(dir) = std::env::var_os("NITRO_ARTIFACTS") {
            let dir = PathBuf::from(dir);
            return if dir.is_dir() {
                Ok(Self { dir })
            } else {
                Err(ArtifactError::NotInstalled { searched: vec![dir] })
            };
        }
        locate::find_up(Path::new(ARTIFACTS))
            .map(|dir| Self { dir })
            .map_err(|searched| ArtifactError::NotInstalled { searched })
    }

    /// Artifacts in `dir` (the package's `dist/artifacts`).
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `contracts/<name>.sol/<name>.json`.
    pub fn load(&self, name: &str) -> Result<Artifact, ArtifactError> {
        let path = self.dir.join("contracts").join(format!("{name}.sol")).join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path)
            .map_err(|e| ArtifactError::Read { path: path.clone(), message: e.to_string() })?;
        parse_artifact(path, name, &text)
    }

    /// Reads the `NitroAdjudicator` and checks it has every function and event declared in
    /// [`bindings::INitroAdjudicator`].
    pub fn adjudicator(&self) -> Result<Artifact, ArtifactError> {
        let artifact = self.load("NitroAdjudicator")?;
        bindings::verify_against_abi(&artifact.abi)
            .map_err(|mismatch| ArtifactError::Mismatch { path: artifact.path.clone(), mismatch })?;
        Ok(artifact)
    }
}

/// The addresses of a deployment of the Nitro contracts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contracts {
    /// `NitroAdjudicator`: holdings, challenges, payouts.
    pub adjudicator: Address,
    /// `ConsensusApp`: the app of ledger channels.
    pub consensus_app: Address,
    /// `VirtualPaymentApp`: the app of virtual payment channels.
    pub virtual_payment_app: Address,
}

impl Contracts {
    /// Deploys the three contracts from `artifacts` with `client`'s account.
    pub async fn deploy(client: &EthClient, artifacts: &Artifacts) -> Result<Self, ChainError> {
        let adjudicator = client.deploy(&artifacts.adjudicator()?).await?;
        let consensus_app = client.deploy(&artifacts.load("ConsensusApp")?).await?;
        let virtual_payment_app = client.deploy(&artifacts.load("VirtualPaymentApp")?).await?;
        Ok(Self { adjudicator, consensus_app, virtual_payment_app })
    }
}

/// Parses the Hardhat-shaped artifact `text` of contract `name` read from `path`: an ABI and
/// non-empty creation bytecode needing no library links. Shared with the test tokens
/// ([`crate::tokens`]), whose compile script writes the same shape.
pub(crate) fn parse_artifact(path: PathBuf, name: &str, text: &str) -> Result<Artifact, ArtifactError> {
    let malformed = |message: String| ArtifactError::Malformed { path: path.clone(), message };
    let raw: HardhatArtifact = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
    if raw.contract_name != name {
        return Err(malformed(format!("contract name is {}", raw.contract_name)));
    }
    if !raw.link_references.is_empty() {
        return Err(malformed("needs library linking, which this loader does not do".into()));
    }
    let bytecode: Bytes = raw.bytecode.parse().map_err(|e| malformed(format!("bytecode: {e}")))?;
    if bytecode.is_empty() {
        return Err(malformed("empty bytecode (an interface?)".into()));
    }
    Ok(Artifact { name: raw.contract_name, path, abi: raw.abi, bytecode })
}
