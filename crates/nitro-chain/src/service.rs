//! The chain service: carries out the core's [`ChainTransaction`]s on a `NitroAdjudicator`
//! and answers the questions objectives ask of the chain.

use std::future::Future;

use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_sol_types::SolCall;
use nitro_core::{
    chain::{ChainTransaction, ChannelStatus},
    ChannelId, SignedState,
};
use tokio::time::{sleep, Instant};

use crate::{
    bindings::{self, INitroAdjudicator},
    ChainError, EthClient, EventWatcher, TxReceipt,
};

/// What the engine needs from a chain. Implementations must never panic on a failing node:
/// every failure is a [`ChainError`].
pub trait ChainService: Send + Sync {
    /// Validates `tx` ([`ChainTransaction::validate`]), sends it and waits until it is
    /// confirmed. A deposit is refused without sending when the channel does not hold exactly
    /// its `expected_held`.
    fn submit(&self, tx: &ChainTransaction) -> impl Future<Output = Result<TxReceipt, ChainError>> + Send;

    /// What the adjudicator holds of `asset` (zero address: ETH) for `channel_id`.
    fn holdings(&self, asset: Address, channel_id: ChannelId) -> impl Future<Output = Result<U256, ChainError>> + Send;

    /// The channel's on-chain status (turn number record, finalization time, fingerprint).
    fn status_of(&self, channel_id: ChannelId) -> impl Future<Output = Result<ChannelStatus, ChainError>> + Send;

    /// Waits until the channel holds exactly `expected_held` of `asset` (the deposits due
    /// before ours), then deposits `amount`. Holdings above `expected_held` are an
    /// [`ChainError::UnexpectedHoldings`] at once; never reaching it is a
    /// [`ChainError::Timeout`].
    fn deposit(
        &self,
        channel_id: ChannelId,
        asset: Address,
        expected_held: U256,
        amount: U256,
    ) -> impl Future<Output = Result<TxReceipt, ChainError>> + Send;

    /// The latest block's timestamp: the "now" against which [`ChannelStatus::mode`] is judged.
    fn chain_time(&self) -> impl Future<Output = Result<u64, ChainError>> + Send;
}

/// [`ChainService`] over JSON-RPC, as one account, against one deployed `NitroAdjudicator`.
#[derive(Clone, Debug)]
pub struct EthChainService {
    client: EthClient,
    adjudicator: Address,
}

impl EthChainService {
    /// The service of `client`'s account on the adjudicator at `adjudicator`.
    pub fn new(client: EthClient, adjudicator: Address) -> Self {
        Self { client, adjudicator }
    }

    /// The account's client.
    pub fn client(&self) -> &EthClient {
        &self.client
    }

    /// The adjudicator's address.
    pub fn adjudicator(&self) -> Address {
        self.adjudicator
    }

    /// An event watcher on the same node and adjudicator, starting at `from_block`.
    pub fn watcher(&self, from_block: u64) -> EventWatcher {
        EventWatcher::new(self.client.provider().clone(), self.adjudicator, from_block)
    }

    async fn view<C: SolCall>(&self, function: &'static str, input: Vec<u8>) -> Result<C::Return, ChainError> {
        let output = self.client.call(function, self.adjudicator, Bytes::from(input)).await?;
        C::abi_decode_returns(&output).map_err(|e| ChainError::Decode { what: function, message: e.to_string() })
    }

    /// Asks the adjudicator (and through it the channel's app) whether `state` is supported on
    /// its own (empty proof): `(true, "")`, or `(false, reason)`; an app that reverts instead
    /// of answering (the `ConsensusApp` does) is `(false, revert reason)`.
    pub async fn state_is_supported(&self, state: &SignedState) -> Result<(bool, String), ChainError> {
        let input = bindings::state_is_supported_calldata(state);
        match self.view::<INitroAdjudicator::stateIsSupportedCall>("stateIsSupported", input).await {
            Ok(r) => Ok((r.supported, r.reason)),
            Err(ChainError::Reverted { reason, .. }) => Ok((false, reason.unwrap_or_default())),
            Err(e) => Err(e),
        }
    }

    /// What the adjudicator held of `asset` for `channel_id` after block `block`.
    pub async fn holdings_at(&self, asset: Address, channel_id: ChannelId, block: u64) -> Result<U256, ChainError> {
        let input = INitroAdjudicator::holdingsCall { asset, channelId: channel_id }.abi_encode();
        let output = self.client.call_at("holdings", self.adjudicator, Bytes::from(input), block).await?;
        INitroAdjudicator::holdingsCall::abi_decode_returns(&output)
            .map_err(|e| ChainError::Decode { what: "holdings", message: e.to_string() })
    }

    /// `statusOf(channelId)` after block `block`.
    pub async fn status_at(&self, channel_id: ChannelId, block: u64) -> Result<ChannelStatus, ChainError> {
        let input = INitroAdjudicator::statusOfCall { channelId: channel_id }.abi_encode();
        let output = self.client.call_at("statusOf", self.adjudicator, Bytes::from(input), block).await?;
        let word: B256 = INitroAdjudicator::statusOfCall::abi_decode_returns(&output)
            .map_err(|e| ChainError::Decode { what: "statusOf", message: e.to_string() })?;
        Ok(ChannelStatus::from_word(word))
    }

    /// Whether `tx` may be sent now, the chain's head being `head`: `true` for anything but a
    /// deposit; for a deposit, whether the channel holds exactly its `expected_held` both now
    /// and at the confirmation depth (`head - confirmations + 1`): never a deposit on top of
    /// holdings a reorg can take back. `false`: not yet (an earlier deposit is not mined, or
    /// not deep enough); [`ChainError::UnexpectedHoldings`]: never (more is held than
    /// expected).
    pub async fn deposit_ready(&self, tx: &ChainTransaction, head: u64) -> Result<bool, ChainError> {
        let ChainTransaction::Deposit { channel_id, asset, expected_held, .. } = tx else { return Ok(true) };
        let latest = self.holdings(*asset, *channel_id).await?;
        let depth = self.client.config().confirmations.max(1);
        let confirmed = match head.checked_sub(depth - 1) {
            Some(block) => self.holdings_at(*asset, *channel_id, block).await?,
            None => U256::ZERO,
        };
        let actual = latest.max(confirmed);
        if actual > *expected_held {
            return Err(ChainError::UnexpectedHoldings {
                channel_id: *channel_id,
                asset: *asset,
                expected: *expected_held,
                actual,
            });
        }
        Ok(latest == *expected_held && confirmed == *expected_held)
    }

    /// `unpackStatus(channelId)`, decoded by the contract (the same as [`ChainService::status_of`],
    /// which unpacks `statusOf` locally).
    pub async fn unpack_status(&self, channel_id: ChannelId) -> Result<ChannelStatus, ChainError> {
        let input = INitroAdjudicator::unpackStatusCall { channelId: channel_id }.abi_encode();
        let r = self.view::<INitroAdjudicator::unpackStatusCall>("unpackStatus", input).await?;
        let fingerprint: [u8; 20] = r.fingerprint.to_be_bytes();
        Ok(ChannelStatus { turn_num_record: r.turnNumRecord, finalizes_at: r.finalizesAt.to::<u64>(), fingerprint })
    }
}

impl ChainService for EthChainService {
    async fn submit(&self, tx: &ChainTransaction) -> Result<TxReceipt, ChainError> {
        tx.validate()?;
        if let ChainTransaction::Deposit { channel_id, asset, expected_held, .. } = tx {
            let actual = self.holdings(*asset, *channel_id).await?;
            if actual != *expected_held {
                return Err(ChainError::UnexpectedHoldings {
                    channel_id: *channel_id,
                    asset: *asset,
                    expected: *expected_held,
                    actual,
                });
            }
            // Held now; also deep enough that a reorg cannot take the deposits before ours back.
            let config = self.client.config();
            let deadline = Instant::now() + config.deposit_timeout;
            while !self.deposit_ready(tx, self.client.block_number().await?).await? {
                if Instant::now() >= deadline {
                    return Err(ChainError::Timeout {
                        what: format!("the holdings of {channel_id} to be {} deep", config.confirmations),
                        after: config.deposit_timeout,
                    });
                }
                sleep(config.poll_interval).await;
            }
        }
        self.check_token(tx).await?;
        if let Some(approve) = self.approval_needed(tx).await? {
            let input = Bytes::from(bindings::calldata(&approve));
            let to = bindings::target(&approve, self.adjudicator);
            self.client.transact(approve.function_name(), to, input, U256::ZERO).await?;
        }
        let input = Bytes::from(bindings::calldata(tx));
        let to = bindings::target(tx, self.adjudicator);
        self.client.transact(tx.function_name(), to, input, tx.value()).await
    }

    async fn holdings(&self, asset: Address, channel_id: ChannelId) -> Result<U256, ChainError> {
        let input = INitroAdjudicator::holdingsCall { asset, channelId: channel_id }.abi_encode();
        self.view::<INitroAdjudicator::holdingsCall>("holdings", input).await
    }

    async fn status_of(&self, channel_id: ChannelId) -> Result<ChannelStatus, ChainError> {
        let input = INitroAdjudicator::statusOfCall { channelId: channel_id }.abi_encode();
        let word: B256 = self.view::<INitroAdjudicator::statusOfCall>("statusOf", input).await?;
        Ok(ChannelStatus::from_word(word))
    }

    async fn deposit(
        &self,
        channel_id: ChannelId,
        asset: Address,
        expected_held: U256,
        amount: U256,
    ) -> Result<TxReceipt, ChainError> {
        let tx = ChainTransaction::Deposit { channel_id, asset, expected_held, amount };
        tx.validate()?;
        let config = self.client.config();
        let deadline = Instant::now() + config.deposit_timeout;
        loop {
            let actual = self.holdings(asset, channel_id).await?;
            if actual == expected_held {
                break;
            }
            if actual > expected_held {
                return Err(ChainError::UnexpectedHoldings { channel_id, asset, expected: expected_held, actual });
            }
            if Instant::now() >= deadline {
                return Err(ChainError::Timeout {
                    what: format!("holdings of {channel_id} to reach {expected_held} (they are {actual})"),
                    after: config.deposit_timeout,
                });
            }
            sleep(config.poll_interval).await;
        }
        self.submit(&tx).await
    }

    async fn chain_time(&self) -> Result<u64, ChainError> {
        self.client.latest_timestamp().await
    }
}
