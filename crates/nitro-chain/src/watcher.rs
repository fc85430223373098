//! Watching the adjudicator's events by polling `eth_getLogs` over block ranges from a cursor,
//! reporting only blocks final at the confirmation depth, and retracting what a deeper reorg
//! takes back.
//!
//! The cursor is the next block to scan. A poll scans `[cursor, head - confirmations + 1]` in
//! ranges of at most `max_block_range` blocks and moves the cursor past each range only once
//! its logs are decoded and returned, so no event is skipped between polls, and a failing node
//! (down, restarted, slow) only delays delivery: the next poll resumes at the cursor.
//!
//! **Reorgs.** The watcher keeps the hash of the last block of every scan and of every block
//! it reported events from, for [`WatcherConfig::reorg_window`] blocks. Each poll first checks
//! that the last block it scanned is still canonical (one header: a block's hash commits to
//! all its ancestors). If not, it finds the newest kept block that still is, and everything
//! reported above it is void: for each channel with events there, a
//! [`ChainEvent::Retracted`] carries the channel's holdings and status re-read at that last
//! shared block, and the cursor goes back so that the new branch's events are reported again.
//! A scan is consistent: the range's last block has the same hash before and after the logs
//! are read, and every log's block hash is the canonical one; a deposit's reported holdings
//! are checked against the holdings re-read at the end of the range. Persist
//! [`EventWatcher::state`] with the events handled to resume after a restart.

use std::{collections::BTreeSet, time::Duration};

use alloy::{
    eips::{BlockId, BlockNumberOrTag},
    network::TransactionBuilder,
    providers::{Provider, RootProvider},
    rpc::types::{Filter, Log, TransactionRequest},
};
use alloy_primitives::{Address, Bytes, B256, U256};
use alloy_sol_types::SolCall;
use nitro_core::{
    chain::{ChainEvent, ChannelStatus},
    ChannelId,
};
use serde::{Deserialize, Serialize};
use tokio::time::{sleep, timeout, Instant};

use crate::{
    bindings::{self, INitroAdjudicator},
    client::http_provider,
    ChainError,
};

/// Settings of an [`EventWatcher`].
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// The confirmation depth: an event is reported once its block has `confirmations - 1`
    /// blocks on top (1 = as soon as mined; see [`default_confirmations`](crate::default_confirmations)).
    pub confirmations: u64,
    /// Most blocks asked for in one `eth_getLogs`.
    pub max_block_range: u64,
    /// Timeout of one JSON-RPC request.
    pub rpc_timeout: Duration,
    /// How many blocks below the latest scanned one the hashes of reported blocks are kept: a
    /// reorg reaching deeper than the depth is detected (and retracted) within this window.
    pub reorg_window: u64,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self { confirmations: 1, max_block_range: 2_000, rpc_timeout: Duration::from_secs(10), reorg_window: 128 }
    }
}

/// What a watcher remembers: its cursor, and what it needs to detect and retract reorgs.
/// Serializable, so that a restarted node resumes with it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatcherState {
    /// The next block to scan.
    pub cursor: u64,
    /// `(block, hash)` of the last block of each scan and of each block events were reported
    /// from, ascending, within the reorg window.
    pub blocks: Vec<(u64, B256)>,
    /// `(block, channel, asset)` of each reported event, ascending, within the reorg window.
    pub reported: Vec<(u64, ChannelId, Address)>,
}

/// Most entries kept in a [`WatcherState`] list (bounded memory on a busy adjudicator).
const MAX_KEPT: usize = 4096;

/// Polls the adjudicator's logs and turns them into [`ChainEvent`]s, in chain order.
#[derive(Clone, Debug)]
pub struct EventWatcher {
    provider: RootProvider,
    adjudicator: Address,
    state: WatcherState,
    channels: Vec<ChannelId>,
    config: WatcherConfig,
    undecodable: u64,
    reorgs: u64,
}

impl EventWatcher {
    /// A watcher of every channel on `adjudicator`, scanning from block `from_block`.
    pub fn new(provider: RootProvider, adjudicator: Address, from_block: u64) -> Self {
        Self {
            provider,
            adjudicator,
            state: WatcherState { cursor: from_block, ..WatcherState::default() },
            channels: Vec::new(),
            config: WatcherConfig::default(),
            undecodable: 0,
            reorgs: 0,
        }
    }

    /// A watcher on the node at `url`.
    pub fn connect(url: &str, adjudicator: Address, from_block: u64) -> Result<Self, ChainError> {
        Ok(Self::new(http_provider(url)?, adjudicator, from_block))
    }

    /// Replaces the settings.
    pub fn with_config(mut self, config: WatcherConfig) -> Self {
        self.config = config;
        self
    }

    /// Resumes from a saved state (cursor and reorg records).
    pub fn with_state(mut self, state: WatcherState) -> Self {
        self.state = state;
        self
    }

    /// Only report events of these channels (all channels when empty).
    pub fn only_channels(mut self, channels: impl IntoIterator<Item = ChannelId>) -> Self {
        self.channels = channels.into_iter().collect();
        self
    }

    /// The next block to scan.
    pub fn cursor(&self) -> u64 {
        self.state.cursor
    }

    /// What to persist to resume after a restart.
    pub fn state(&self) -> &WatcherState {
        &self.state
    }

    /// Logs with a tracked topic that did not decode (skipped; should stay zero).
    pub fn undecodable_logs(&self) -> u64 {
        self.undecodable
    }

    /// Reorgs that took back reported events.
    pub fn reorgs(&self) -> u64 {
        self.reorgs
    }

    async fn rpc<T>(
        &self,
        operation: &'static str,
        request: impl std::future::Future<
            Output = Result<T, alloy::transports::RpcError<alloy::transports::TransportErrorKind>>,
        >,
    ) -> Result<T, ChainError> {
        match timeout(self.config.rpc_timeout, request).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(ChainError::from_rpc(operation, "", e)),
            Err(_) => Err(ChainError::Timeout {
                what: format!("the node to answer {operation}"),
                after: self.config.rpc_timeout,
            }),
        }
    }

    /// First retracts what a reorg took back (if the last block scanned is no longer
    /// canonical), then scans from the cursor to the latest block final at the depth and
    /// returns the events found, in chain order. On a node error nothing is lost: events
    /// already read are returned (the cursor stops after them) or, if none were, the error is;
    /// either way the next poll resumes at the cursor.
    pub async fn poll(&mut self) -> Result<Vec<ChainEvent>, ChainError> {
        let head = self.rpc("eth_blockNumber", async { self.provider.get_block_number().await }).await?;
        if self.state.blocks.is_empty() && self.state.cursor > 0 && self.state.cursor <= head.saturating_add(1) {
            // The block below the first scan: where a reorg of the first scanned blocks forks.
            if let Some(hash) = self.block_hash(self.state.cursor - 1).await? {
                self.state.blocks.push((self.state.cursor - 1, hash));
            }
        }
        let mut events = self.retract_reorged().await?;
        let Some(last) = head.checked_sub(self.config.confirmations.saturating_sub(1)) else {
            return Ok(events);
        };
        while self.state.cursor <= last {
            let from = self.state.cursor;
            let to = last.min(from.saturating_add(self.config.max_block_range.max(1) - 1));
            match self.scan(from, to).await {
                Ok(mut found) => {
                    events.append(&mut found);
                    self.state.cursor = to + 1;
                }
                Err(e) if events.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
        self.prune();
        Ok(events)
    }

    /// Polls every `interval` until at least one event arrives or `wait` has passed (then
    /// returns what it has, possibly nothing). Node errors are retried until the deadline, and
    /// the last one is returned if nothing arrived.
    pub async fn next_events(&mut self, interval: Duration, wait: Duration) -> Result<Vec<ChainEvent>, ChainError> {
        let deadline = Instant::now() + wait;
        loop {
            let result = self.poll().await;
            match &result {
                Ok(events) if !events.is_empty() => return result,
                _ if Instant::now() >= deadline => return result,
                _ => sleep(interval).await,
            }
        }
    }

    async fn block_hash(&self, number: u64) -> Result<Option<B256>, ChainError> {
        let block = self
            .rpc("eth_getBlockByNumber", async {
                self.provider.get_block_by_number(BlockNumberOrTag::Number(number)).await
            })
            .await?;
        Ok(block.map(|b| b.header.hash))
    }

    /// If the last block scanned is no longer canonical: the retractions of every channel
    /// with events above the newest kept block that still is, and the cursor back there.
    async fn retract_reorged(&mut self) -> Result<Vec<ChainEvent>, ChainError> {
        let Some(&(tip, tip_hash)) = self.state.blocks.last() else { return Ok(Vec::new()) };
        match self.block_hash(tip).await? {
            Some(hash) if hash == tip_hash => return Ok(Vec::new()),
            // The node is below the last block scanned: a backend that lags (common behind a
            // load balancer), or a reorg to a shorter branch, which shows once the chain grows
            // past it again. Nothing is retracted on a node's lag.
            None => return Ok(Vec::new()),
            Some(_) => {}
        }
        let mut shared = None;
        for &(block, hash) in self.state.blocks.iter().rev().skip(1) {
            if self.block_hash(block).await? == Some(hash) {
                shared = Some(block);
                break;
            }
        }
        let from_block = match shared {
            Some(block) => block + 1,
            None => {
                let oldest = self.state.blocks.first().map_or(tip, |(b, _)| *b);
                tracing::error!(
                    oldest_kept = oldest,
                    "a reorg reaches below the watcher's reorg window: retracting everything it kept"
                );
                oldest
            }
        };
        let at = from_block.saturating_sub(1);
        // Every asset reported for a channel with events taken back is re-read, one
        // retraction each: a multi-asset ledger's events name (or imply) several assets, and a
        // payout's asset is only guessed here (ADR-0022 §1).
        let mut affected: Vec<(ChannelId, Address)> = Vec::new();
        for (block, channel, _) in &self.state.reported {
            if *block < from_block || affected.iter().any(|(c, _)| c == channel) {
                continue;
            }
            for (_, c, asset) in &self.state.reported {
                if c == channel && !affected.contains(&(*c, *asset)) {
                    affected.push((*c, *asset));
                }
            }
        }
        // Re-read everything before changing anything: a failing node leaves the state as it
        // was, and the next poll detects the same reorg again.
        let mut retractions = Vec::with_capacity(affected.len());
        for (channel_id, asset) in affected {
            let held = self.holdings_at(asset, channel_id, at).await?;
            let status = self.status_at(channel_id, at).await?;
            retractions.push(ChainEvent::Retracted {
                channel_id,
                from_block,
                block_number: at,
                asset,
                held,
                turn_num_record: status.turn_num_record,
                finalizes_at: status.finalizes_at,
            });
        }
        self.state.blocks.retain(|(b, _)| *b < from_block);
        self.state.reported.retain(|(b, _, _)| *b < from_block);
        self.state.cursor = self.state.cursor.min(from_block);
        self.reorgs += 1;
        Ok(retractions)
    }

    async fn view(&self, input: Vec<u8>, block: u64) -> Result<Bytes, ChainError> {
        let request = TransactionRequest::default().with_to(self.adjudicator).with_input(Bytes::from(input));
        self.rpc("eth_call", async { self.provider.call(request.clone()).block(BlockId::number(block)).await }).await
    }

    async fn holdings_at(&self, asset: Address, channel_id: ChannelId, block: u64) -> Result<U256, ChainError> {
        let input = INitroAdjudicator::holdingsCall { asset, channelId: channel_id }.abi_encode();
        let output = self.view(input, block).await?;
        INitroAdjudicator::holdingsCall::abi_decode_returns(&output)
            .map_err(|e| ChainError::Decode { what: "holdings", message: e.to_string() })
    }

    async fn status_at(&self, channel_id: ChannelId, block: u64) -> Result<ChannelStatus, ChainError> {
        let input = INitroAdjudicator::statusOfCall { channelId: channel_id }.abi_encode();
        let output = self.view(input, block).await?;
        let word: B256 = INitroAdjudicator::statusOfCall::abi_decode_returns(&output)
            .map_err(|e| ChainError::Decode { what: "statusOf", message: e.to_string() })?;
        Ok(ChannelStatus::from_word(word))
    }

    async fn scan(&mut self, from: u64, to: u64) -> Result<Vec<ChainEvent>, ChainError> {
        let mut filter = Filter::new()
            .address(self.adjudicator)
            .from_block(from)
            .to_block(to)
            .event_signature(bindings::event_topics());
        if !self.channels.is_empty() {
            filter = filter.topic1(self.channels.clone());
        }
        let changed = || ChainError::Rpc {
            operation: "eth_getLogs",
            message: format!("the chain changed while blocks {from}..={to} were read; reading them again"),
        };
        let before = self.block_hash(to).await?.ok_or_else(changed)?;
        let mut logs: Vec<Log> = self.rpc("eth_getLogs", async { self.provider.get_logs(&filter).await }).await?;
        logs.retain(|l| !l.removed);
        logs.sort_by_key(|l| (l.block_number, l.log_index));
        // Every log's block must be the canonical one, and the range's end unchanged.
        let blocks: BTreeSet<(u64, B256)> =
            logs.iter().filter_map(|l| Some((l.block_number?, l.block_hash?))).collect();
        for &(number, hash) in &blocks {
            if number != to && self.block_hash(number).await? != Some(hash) {
                return Err(changed());
            }
        }
        if self.block_hash(to).await? != Some(before) || blocks.iter().any(|(n, h)| *n == to && *h != before) {
            return Err(changed());
        }
        let mut events = Vec::with_capacity(logs.len());
        let mut reported = Vec::new();
        for log in logs {
            let topics: &[B256] = log.topics();
            let block = log.block_number.unwrap_or(to);
            match bindings::decode_log(topics, &log.data().data, block) {
                Ok(Some(event)) => {
                    let asset = match &event {
                        ChainEvent::Deposited { asset, .. } => *asset,
                        other => self.asset_of(&other.channel_id()),
                    };
                    reported.push((block, event.channel_id(), asset));
                    events.push(event);
                }
                Ok(None) => {}
                Err(_) => self.undecodable += 1,
            }
        }
        self.check_holdings(&events, to).await?;
        self.state.blocks.extend(blocks.iter().copied().filter(|(n, _)| *n != to));
        self.state.blocks.push((to, before));
        self.state.blocks.sort_unstable();
        self.state.blocks.dedup();
        self.state.reported.extend(reported);
        Ok(events)
    }

    /// The holdings a range's last deposit of each channel reports must be what the channel
    /// holds at the range's end (unless a payout followed): the events the parties act on are
    /// cross-checked with a re-read of the chain.
    async fn check_holdings(&self, events: &[ChainEvent], to: u64) -> Result<(), ChainError> {
        let mut last: Vec<(ChannelId, Address, Option<U256>)> = Vec::new();
        for event in events {
            let channel = event.channel_id();
            let entry = match last.iter_mut().find(|(c, _, _)| *c == channel) {
                Some(entry) => entry,
                None => {
                    last.push((channel, Address::ZERO, None));
                    let Some(entry) = last.last_mut() else { continue };
                    entry
                }
            };
            match event {
                ChainEvent::Deposited { asset, now_held, .. } => *entry = (channel, *asset, Some(*now_held)),
                ChainEvent::AllocationUpdated { .. } => entry.2 = None,
                _ => {}
            }
        }
        for (channel_id, asset, reported) in last {
            let Some(reported) = reported else { continue };
            let held = self.holdings_at(asset, channel_id, to).await?;
            if held != reported {
                return Err(ChainError::Rpc {
                    operation: "holdings",
                    message: format!(
                        "{channel_id} holds {held} at block {to}, its deposit events say {reported}; reading again"
                    ),
                });
            }
        }
        Ok(())
    }

    /// The asset a channel's earlier events named (ETH when none did).
    fn asset_of(&self, channel: &ChannelId) -> Address {
        self.state.reported.iter().rev().find(|(_, c, _)| c == channel).map_or(Address::ZERO, |(_, _, a)| *a)
    }

    /// Forgets what is below the reorg window (and bounds the lists).
    fn prune(&mut self) {
        let Some(&(tip, _)) = self.state.blocks.last() else { return };
        let keep_from = tip.saturating_sub(self.config.reorg_window);
        self.state.blocks.retain(|(b, _)| *b >= keep_from);
        self.state.reported.retain(|(b, _, _)| *b >= keep_from);
        if self.state.blocks.len() > MAX_KEPT {
            let excess = self.state.blocks.len() - MAX_KEPT;
            self.state.blocks.drain(..excess);
        }
        if self.state.reported.len() > MAX_KEPT {
            let excess = self.state.reported.len() - MAX_KEPT;
            self.state.reported.drain(..excess);
        }
    }
}
