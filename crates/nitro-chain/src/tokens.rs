//! Real ERC-20 tokens on a test chain: nitro-protocol's `Token` and two misbehaving tokens of
//! ours ([`TestToken`]), compiled at setup by `scripts/compile-contracts.js` into
//! `build/contracts/<Name>.json` (never committed), their deployment, and the few ERC-20 calls
//! tests and the demo need to fund accounts ([`transfer_tokens`], [`approve_tokens`],
//! [`token_balance`]).
//!
//! The calls use the ERC-20 bindings of [`crate::bindings::IERC20`].

use std::path::{Path, PathBuf};

use alloy_primitives::{Address, Bytes, U256};
use alloy_sol_types::{SolCall, SolValue};

use crate::{bindings::IERC20, contracts, error::ArtifactError, locate, Artifact, ChainError, EthClient, TxReceipt};

/// Where the compiled tokens are, relative to the repository root.
const TOKEN_ARTIFACTS: &str = "build/contracts";

/// The ERC-20 tokens `scripts/compile-contracts.js` builds. Each has the constructor
/// `(address owner)` minting its whole supply to `owner`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TestToken {
    /// nitro-protocol's `contracts/Token.sol`: a plain OpenZeppelin ERC-20 ("TEST") minting
    /// 10,000,000,000 units — the well-behaved token deposits are made in.
    Token,
    /// `contracts/test-tokens/FalseToken.sol`: `transfer` returns `false` and moves nothing,
    /// `transferFrom` works. The adjudicator pays out with an unchecked `transfer`, so its
    /// payouts in this token are silently lost. Mints 10^30 units.
    FalseToken,
    /// `contracts/test-tokens/FeeToken.sol`: every transfer burns 1% (rounded down) of the
    /// amount, so the adjudicator credits a deposit with more than it received. Mints 10^30
    /// units.
    FeeToken,
    /// `contracts/test-tokens/NoReturnToken.sol`: `transfer`, `transferFrom` and `approve`
    /// return no value; the adjudicator's payouts in it revert.
    NoReturnToken,
}

impl TestToken {
    /// Every test token.
    pub const ALL: [TestToken; 4] =
        [TestToken::Token, TestToken::FalseToken, TestToken::FeeToken, TestToken::NoReturnToken];

    /// The contract's name, which is also its artifact's file name.
    pub fn name(self) -> &'static str {
        match self {
            TestToken::Token => "Token",
            TestToken::FalseToken => "FalseToken",
            TestToken::FeeToken => "FeeToken",
            TestToken::NoReturnToken => "NoReturnToken",
        }
    }

    /// The supply the constructor mints to its owner.
    pub fn initial_supply(self) -> U256 {
        match self {
            TestToken::Token => U256::from(10_000_000_000u64),
            TestToken::FalseToken | TestToken::FeeToken | TestToken::NoReturnToken => {
                U256::from(10u64).pow(U256::from(30))
            }
        }
    }
}

/// The directory of the compiled test tokens (`build/contracts`).
#[derive(Clone, Debug)]
pub struct TokenArtifacts {
    dir: PathBuf,
}

impl TokenArtifacts {
    /// `NITRO_TOKEN_ARTIFACTS` if set, else the nearest `build/contracts` above the current
    /// directory or this crate; [`ArtifactError::TokensNotBuilt`] (naming `scripts/setup.sh`)
    /// when there is none.
    pub fn locate() -> Result<Self, ArtifactError> {
        if let Some(dir) = std::env::var_os("NITRO_TOKEN_ARTIFACTS") {
            let dir = PathBuf::from(dir);
            return if dir.is_dir() {
                Ok(Self { dir })
            } else {
                Err(ArtifactError::TokensNotBuilt { searched: vec![dir] })
            };
        }
        locate::find_up(Path::new(TOKEN_ARTIFACTS))
            .map(|dir| Self { dir })
            .map_err(|searched| ArtifactError::TokensNotBuilt { searched })
    }

    /// Token artifacts in `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `<dir>/<name>.json`. A missing file is [`ArtifactError::Read`] saying to run
    /// `scripts/setup.sh`.
    pub fn load(&self, name: &str) -> Result<Artifact, ArtifactError> {
        let path = self.dir.join(format!("{name}.json"));
        let text = std::fs::read_to_string(&path).map_err(|e| ArtifactError::Read {
            path: path.clone(),
            message: format!("{e} (run `scripts/setup.sh` to compile the test tokens)"),
        })?;
        contracts::parse_artifact(path, name, &text)
    }

    /// Reads the artifact of `token`.
    pub fn token(&self, token: TestToken) -> Result<Artifact, ArtifactError> {
        self.load(token.name())
    }
}

/// Deploys the token `artifact` with the constructor argument `owner` (who receives the minted
/// supply) and returns its address. The artifact's constructor must be `(address)`: anything
/// else is [`ArtifactError::Malformed`], rather than a deployment with garbage arguments.
pub async fn deploy_token(client: &EthClient, artifact: &Artifact, owner: Address) -> Result<Address, ChainError> {
    let inputs: Vec<&str> =
        artifact.abi.constructor.iter().flat_map(|c| c.inputs.iter().map(|p| p.ty.as_str())).collect();
    if inputs != ["address"] {
        return Err(ArtifactError::Malformed {
            path: artifact.path.clone(),
            message: format!("constructor takes ({}), a test token's takes (address owner)", inputs.join(", ")),
        }
        .into());
    }
    client.deploy_with_args(artifact, &owner.abi_encode()).await
}

/// The `balanceOf(account)` of `token`, at the latest block.
pub async fn token_balance(client: &EthClient, token: Address, account: Address) -> Result<U256, ChainError> {
    let input = IERC20::balanceOfCall { account }.abi_encode();
    let output = client.call("balanceOf", token, Bytes::from(input)).await?;
    IERC20::balanceOfCall::abi_decode_returns(&output)
        .map_err(|e| ChainError::Decode { what: "balanceOf", message: e.to_string() })
}

/// Sends `amount` of `token` from `client`'s account to `to` (`transfer`) and waits until it
/// is confirmed; to fund test accounts. The call is first simulated: a token answering
/// `false` is [`ChainError::TokenRefused`] and nothing is sent.
pub async fn transfer_tokens(
    client: &EthClient,
    token: Address,
    to: Address,
    amount: U256,
) -> Result<TxReceipt, ChainError> {
    let input = Bytes::from(IERC20::transferCall { to, amount }.abi_encode());
    checked_send::<IERC20::transferCall>(client, "transfer", token, input).await
}

/// Lets `spender` (e.g. the adjudicator, before a token deposit) pull up to `amount` of
/// `token` from `client`'s account (`approve`), and waits until it is confirmed. A token
/// answering `false` is [`ChainError::TokenRefused`] and nothing is sent.
pub async fn approve_tokens(
    client: &EthClient,
    token: Address,
    spender: Address,
    amount: U256,
) -> Result<TxReceipt, ChainError> {
    let input = Bytes::from(IERC20::approveCall { spender, amount }.abi_encode());
    checked_send::<IERC20::approveCall>(client, "approve", token, input).await
}

/// `eth_call` of a bool-returning ERC-20 function, then, if it answered `true`, the
/// transaction. An empty answer (a pre-ERC-20 token returning nothing) counts as `true`.
async fn checked_send<C: SolCall<Return = bool>>(
    client: &EthClient,
    function: &'static str,
    token: Address,
    input: Bytes,
) -> Result<TxReceipt, ChainError> {
    let output = client.call(function, token, input.clone()).await?;
    if !output.is_empty() {
        let ok = C::abi_decode_returns(&output)
            .map_err(|e| ChainError::Decode { what: function, message: e.to_string() })?;
        if !ok {
            return Err(ChainError::TokenRefused { token, function });
        }
    }
    client.transact(function, token, input, U256::ZERO).await
}
