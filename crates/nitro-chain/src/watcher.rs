//! Watching the adjudicator's events by polling `eth_getLogs` over block ranges from a cursor.
//!
//! The cursor is the next block to scan. A poll scans `[cursor, head - confirmations + 1]` in
//! ranges of at most `max_block_range` blocks and moves the cursor past each range only once
//! its logs are decoded and returned, so no event is skipped between polls, and a failing node
//! (down, restarted, slow) only delays delivery: the next poll resumes at the cursor. Persist
//! [`EventWatcher::cursor`] with the events handled to resume after a restart.

use std::time::Duration;

use alloy::{
    providers::{Provider, RootProvider},
    rpc::types::{Filter, Log},
};
use alloy_primitives::{Address, B256};
use nitro_core::{chain::ChainEvent, ChannelId};
use tokio::time::{sleep, timeout, Instant};

use crate::{bindings, client::http_provider, ChainError};

/// Settings of an [`EventWatcher`].
#[derive(Clone, Debug)]
pub struct WatcherConfig {
    /// Blocks an event must be buried under before delivery (1 = as soon as mined).
    pub confirmations: u64,
    /// Most blocks asked for in one `eth_getLogs`.
    pub max_block_range: u64,
    /// Timeout of one JSON-RPC request.
    pub rpc_timeout: Duration,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self { confirmations: 1, max_block_range: 2_000, rpc_timeout: Duration::from_secs(10) }
    }
}

/// Polls the adjudicator's logs and turns them into [`ChainEvent`]s, in chain order.
#[derive(Clone, Debug)]
pub struct EventWatcher {
    provider: RootProvider,
    adjudicator: Address,
    cursor: u64,
    channels: Vec<ChannelId>,
    config: WatcherConfig,
    undecodable: u64,
}

impl EventWatcher {
    /// A watcher of every channel on `adjudicator`, scanning from block `from_block`.
    pub fn new(provider: RootProvider, adjudicator: Address, from_block: u64) -> Self {
        Self {
            provider,
            adjudicator,
            cursor: from_block,
            channels: Vec::new(),
            config: WatcherConfig::default(),
            undecodable: 0,
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

    /// Only report events of these channels (all channels when empty).
    pub fn only_channels(mut self, channels: impl IntoIterator<Item = ChannelId>) -> Self {
        self.channels = channels.into_iter().collect();
        self
    }

    /// The next block to scan.
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Logs with a tracked topic that did not decode (skipped; should stay zero).
    pub fn undecodable_logs(&self) -> u64 {
        self.undecodable
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

    /// Scans from the cursor to the latest confirmed block and returns the events found, in
    /// chain order. On a node error nothing is lost: events already read are returned (the
    /// cursor stops after them) or, if none were, the error is; either way the next poll
    /// resumes at the cursor.
    pub async fn poll(&mut self) -> Result<Vec<ChainEvent>, ChainError> {
        let head = self.rpc("eth_blockNumber", async { self.provider.get_block_number().await }).await?;
        let Some(last) = head.checked_sub(self.config.confirmations.saturating_sub(1)) else {
            return Ok(Vec::new());
        };
        let mut events = Vec::new();
        while self.cursor <= last {
            let to = last.min(self.cursor.saturating_add(self.config.max_block_range.max(1) - 1));
            match self.scan(self.cursor, to).await {
                Ok(mut found) => {
                    events.append(&mut found);
                    self.cursor = to + 1;
                }
                Err(e) if events.is_empty() => return Err(e),
                Err(_) => break,
            }
        }
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

    async fn scan(&mut self, from: u64, to: u64) -> Result<Vec<ChainEvent>, ChainError> {
        let mut filter = Filter::new()
            .address(self.adjudicator)
            .from_block(from)
            .to_block(to)
            .event_signature(bindings::event_topics());
        if !self.channels.is_empty() {
            filter = filter.topic1(self.channels.clone());
        }
        let mut logs: Vec<Log> = self.rpc("eth_getLogs", async { self.provider.get_logs(&filter).await }).await?;
        logs.retain(|l| !l.removed);
        logs.sort_by_key(|l| (l.block_number, l.log_index));
        let mut events = Vec::with_capacity(logs.len());
        for log in logs {
            let topics: &[B256] = log.topics();
            match bindings::decode_log(topics, &log.data().data, log.block_number.unwrap_or(to)) {
                Ok(Some(event)) => events.push(event),
                Ok(None) => {}
                Err(_) => self.undecodable += 1,
            }
        }
        Ok(events)
    }
}
