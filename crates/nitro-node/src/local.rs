//! Several parties in one process, on one chain.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use nitro_chain::{
    ChainConfig, ChainError, ChainService, Contracts, EthChainService, EthClient, EventWatcher, TxEvent, TxManager,
    TxManagerConfig, TxOutcome, WatcherConfig,
};
use nitro_core::{
    chain::ChainTransaction,
    party::{Clock, Effects, Envelope, ObjectiveId, Party, PartyConfig, PartyError, PartyEvent, TransactionRequest},
    ConsensusChannel, LedgerEvent, SigningKey,
};
use thiserror::Error;
use tokio::sync::mpsc::UnboundedReceiver;

/// Why a run stopped.
#[derive(Debug, Error)]
pub enum NetworkError {
    /// A party refused a request.
    #[error("{party}: {error}")]
    Party {
        /// Who refused.
        party: String,
        /// Why.
        error: Box<PartyError>,
    },
    /// The chain failed in a way retries did not cure.
    #[error(transparent)]
    Chain(#[from] ChainError),
    /// The goal was not reached in time; says what each unfinished objective waits for.
    #[error("not done after {elapsed:?}:\n{report}")]
    Timeout {
        /// How long it ran.
        elapsed: Duration,
        /// Every unfinished objective and what it waits for.
        report: String,
    },
}

/// One party of the network, with its account on the chain.
pub struct Participant {
    /// A name for people ("alice", "hub", …).
    pub name: String,
    /// The sans-IO party.
    pub party: Party,
    /// Its account on the chain.
    pub chain: EthChainService,
    /// Lands its transactions.
    pub transactions: TxManager,
    /// Wei it paid in transaction fees.
    pub fees_paid: U256,
    /// Wei it deposited into channels.
    pub deposited: U256,
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages delivered between parties.
    pub messages: u64,
    /// Messages lost to the filter.
    pub lost_messages: u64,
    /// Messages a party refused (duplicates of settled rounds, stale branches).
    pub refused_messages: u64,
    /// Transactions confirmed.
    pub transactions: u64,
    /// Transactions that failed (reverted or refused before sending).
    pub failed_transactions: u64,
    /// Adjudicator events delivered.
    pub chain_events: u64,
    /// Guarantees that reached a ledger's consensus state (counted once per ledger).
    pub guarantees_locked: u64,
    /// Guarantees released from a ledger's consensus state (once per ledger).
    pub guarantees_released: u64,
    /// Stale challenges answered with a checkpoint.
    pub challenges_answered: u64,
    /// Retractions of reported chain events (reorgs deeper than the depth).
    pub retractions: u64,
    /// Transactions cancelled because their objective no longer needed them.
    pub cancelled_transactions: u64,
}

/// How the parties of a [`LocalNetwork`] use the chain.
#[derive(Clone, Debug)]
pub struct LocalChainSettings {
    /// The confirmation depth (`None`: the chain's default, 1 on anvil).
    pub confirmations: Option<u64>,
    /// The transaction managers' settings.
    pub manager: TxManagerConfig,
    /// The accounts' client settings (`confirmations` is replaced by the depth).
    pub client: ChainConfig,
}

impl Default for LocalChainSettings {
    fn default() -> Self {
        let manager = TxManagerConfig {
            poll_interval: Duration::from_millis(100),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            ..TxManagerConfig::default()
        };
        Self { confirmations: None, manager, client: ChainConfig::default() }
    }
}

/// Parties in one process: messages between them are delivered in order, each party's
/// transactions go to its own [`TxManager`] (several in flight, each landed at the
/// confirmation depth), and events final at that depth are fed back to every party.
pub struct LocalNetwork {
    /// The parties.
    pub participants: Vec<Participant>,
    /// Counters.
    pub stats: Stats,
    watcher: EventWatcher,
    messages: VecDeque<(usize, Envelope)>,
    /// Transactions handed to a party's manager and not settled: (party, request) by id.
    transactions: BTreeMap<u64, (usize, TransactionRequest)>,
    next_transaction: u64,
    outcomes: Vec<UnboundedReceiver<TxEvent>>,
    resend_every: Duration,
    /// When the parties' timers last ran (kept across runs, so that short runs still tick).
    last_tick: Instant,
    observer: Option<Observer>,
    filter: Option<MessageFilter>,
    /// Parties gone for good: they receive, send, tick and submit nothing.
    gone: Vec<bool>,
}

/// Sees every event a party persists, with the party's name.
pub type Observer = Box<dyn FnMut(&str, &PartyEvent) + Send>;

/// Decides whether a message from party `from` gets through (false: it is lost).
pub type MessageFilter = Box<dyn Fn(usize, &Envelope) -> bool + Send>;

impl LocalNetwork {
    /// Connects one account per `(name, key)` to the node at `url` and the deployed `contracts`,
    /// at the chain's default confirmation depth (1 on anvil).
    pub async fn connect(
        url: &str,
        contracts: &Contracts,
        parties: Vec<(String, SigningKey)>,
        config: PartyConfig,
    ) -> Result<Self, NetworkError> {
        Self::connect_with(url, contracts, parties, config, LocalChainSettings::default()).await
    }

    /// Like [`LocalNetwork::connect`], with the given chain settings.
    pub async fn connect_with(
        url: &str,
        contracts: &Contracts,
        parties: Vec<(String, SigningKey)>,
        config: PartyConfig,
        settings: LocalChainSettings,
    ) -> Result<Self, NetworkError> {
        let mut participants = Vec::new();
        let mut outcomes = Vec::new();
        let mut depth = settings.confirmations.unwrap_or(1);
        for (name, key) in parties {
            let client = EthClient::connect(url, &key, settings.client.clone()).await?;
            depth = settings.confirmations.unwrap_or_else(|| nitro_chain::default_confirmations(client.chain_id()));
            let client = client.with_config(ChainConfig { confirmations: depth, ..settings.client.clone() });
            let chain = EthChainService::new(client, contracts.adjudicator);
            let (transactions, events) = TxManager::spawn(chain.clone(), settings.manager.clone());
            outcomes.push(events);
            participants.push(Participant {
                name,
                party: Party::new(key, config.clone()),
                chain,
                transactions,
                fees_paid: U256::ZERO,
                deposited: U256::ZERO,
            });
        }
        let from_block = match participants.first() {
            Some(p) => p.chain.client().block_number().await?,
            None => 0,
        };
        let watcher_config = WatcherConfig { confirmations: depth, ..WatcherConfig::default() };
        let watcher = EventWatcher::connect(url, contracts.adjudicator, from_block)?.with_config(watcher_config);
        Ok(Self {
            participants,
            stats: Stats::default(),
            watcher,
            messages: VecDeque::new(),
            transactions: BTreeMap::new(),
            next_transaction: 0,
            outcomes,
            resend_every: Duration::from_millis(300),
            last_tick: Instant::now(),
            observer: None,
            filter: None,
            gone: Vec::new(),
        })
    }

    /// Calls `observer` with every event a party persists (for progress output).
    pub fn observe(&mut self, observer: impl FnMut(&str, &PartyEvent) + Send + 'static) {
        self.observer = Some(Box::new(observer));
    }

    /// Loses every message `filter` refuses (a party gone silent, a partition), until the
    /// filter is removed with `None`.
    pub fn set_filter(&mut self, filter: Option<MessageFilter>) {
        self.filter = filter;
    }

    /// Party `i` is gone for good from now on: it receives, sends, ticks and submits nothing.
    pub fn vanish(&mut self, i: usize) {
        if self.gone.len() < self.participants.len() {
            self.gone.resize(self.participants.len(), false);
        }
        self.gone[i] = true;
        self.messages.retain(|(from, _)| *from != i);
        self.transactions.retain(|_, (from, _)| *from != i);
        self.participants[i].transactions.shutdown();
    }

    fn is_gone(&self, i: usize) -> bool {
        self.gone.get(i).copied().unwrap_or(false)
    }

    /// Index of the party with `address`.
    pub fn index_of(&self, address: Address) -> Option<usize> {
        self.participants.iter().position(|p| p.party.address() == address)
    }

    /// Address of party `i`.
    pub fn address(&self, i: usize) -> Address {
        self.participants[i].party.address()
    }

    /// Makes a request of party `i` (open a ledger, fund a virtual channel, …).
    pub fn request<T>(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Party) -> Result<(T, Effects), PartyError>,
    ) -> Result<T, NetworkError> {
        let (value, effects) = f(&mut self.participants[i].party).map_err(|error| NetworkError::Party {
            party: self.participants[i].name.clone(),
            error: Box::new(error),
        })?;
        self.absorb(i, effects);
        Ok(value)
    }

    /// Like [`LocalNetwork::request`], for requests that only produce effects.
    pub fn request_effects(
        &mut self,
        i: usize,
        f: impl FnOnce(&mut Party) -> Result<Effects, PartyError>,
    ) -> Result<(), NetworkError> {
        self.request(i, |p| f(p).map(|e| ((), e)))
    }

    fn absorb(&mut self, i: usize, effects: Effects) {
        if self.is_gone(i) {
            return;
        }
        let name = self.participants[i].name.clone();
        for channel in &effects.force_close_due {
            if let Ok((_, started)) = self.participants[i].party.force_close(*channel) {
                self.absorb(i, started);
            }
        }
        for event in &effects.events {
            if let PartyEvent::Ledger { channel_id, event } = event {
                let leads = matches!(self.participants[i].party.ledger(channel_id), Some(ConsensusChannel::Leader(_)));
                match event {
                    LedgerEvent::GuaranteeLocked { .. } if leads => self.stats.guarantees_locked += 1,
                    LedgerEvent::GuaranteeReleased { .. } if leads => self.stats.guarantees_released += 1,
                    _ => {}
                }
            }
            if matches!(event, PartyEvent::ChallengeAnswered { .. }) {
                self.stats.challenges_answered += 1;
            }
            if let Some(observer) = self.observer.as_mut() {
                observer(&name, event);
            }
        }
        self.messages.extend(effects.messages.into_iter().map(|m| (i, m)));
        for request in effects.transactions {
            let id = self.next_transaction;
            self.next_transaction += 1;
            let manager = &self.participants[i].transactions;
            match manager.submit(id, request.transaction.clone(), request.deadline) {
                Ok(()) => {
                    self.transactions.insert(id, (i, request));
                }
                Err(error) => tracing::warn!(%error, "transaction not handed to the manager"),
            }
        }
    }

    /// Delivers every queued message (and what they cause), in order.
    fn deliver_messages(&mut self) -> bool {
        let mut any = false;
        while let Some((from, envelope)) = self.messages.pop_front() {
            any = true;
            let sender = self.address(from);
            let Some(to) = self.index_of(envelope.to) else { continue };
            if self.is_gone(to) || self.filter.as_ref().is_some_and(|f| !f(from, &envelope)) {
                self.stats.lost_messages += 1;
                continue;
            }
            self.stats.messages += 1;
            match self.participants[to].party.handle_message(sender, envelope.payload) {
                Ok(effects) => self.absorb(to, effects),
                Err(PartyError::Refused { error, answer }) => {
                    self.stats.refused_messages += 1;
                    tracing::debug!(to = %self.participants[to].name, %error, "objective declined");
                    self.absorb(to, *answer);
                }
                Err(error) => {
                    self.stats.refused_messages += 1;
                    tracing::debug!(to = %self.participants[to].name, %error, "message refused");
                }
            }
        }
        any
    }

    /// Takes what the transaction managers report: fees and deposits counted, failures told
    /// to the objectives that asked (they ask again on their timers if still needed).
    fn settle_transactions(&mut self) -> bool {
        let mut any = false;
        for i in 0..self.outcomes.len() {
            while let Ok(event) = self.outcomes[i].try_recv() {
                any = true;
                self.settle(i, event);
            }
        }
        any
    }

    fn settle(&mut self, i: usize, event: TxEvent) {
        let participant = &mut self.participants[i];
        let failed = match &event.outcome {
            TxOutcome::Confirmed(receipt) => {
                self.stats.transactions += 1;
                participant.fees_paid += receipt.fee();
                if let Some(ChainTransaction::Deposit { amount, .. }) = &event.transaction {
                    participant.deposited += *amount;
                }
                false
            }
            TxOutcome::Reverted { receipt, reason } => {
                participant.fees_paid += receipt.fee();
                self.stats.failed_transactions += 1;
                tracing::debug!(party = %participant.name, ?reason, "transaction reverted on chain");
                true
            }
            TxOutcome::Cancelled(receipt) => {
                if let Some(receipt) = receipt {
                    participant.fees_paid += receipt.fee();
                }
                false
            }
            TxOutcome::Failed(error) => {
                self.stats.failed_transactions += 1;
                tracing::debug!(party = %participant.name, %error, "transaction failed");
                true
            }
        };
        for id in event.ids {
            let Some((_, request)) = self.transactions.remove(&id) else { continue };
            if let (true, Some(objective)) = (failed, request.objective) {
                if !self.is_gone(i) {
                    let effects = self.participants[i].party.transaction_failed(objective);
                    self.absorb(i, effects);
                }
            }
        }
    }

    /// Cancels the transactions whose party no longer needs them.
    fn cancel_unneeded(&mut self) {
        let unneeded: Vec<(u64, usize)> = self
            .transactions
            .iter()
            .filter(|(_, (i, request))| !self.participants[*i].party.needs(request))
            .map(|(id, (i, _))| (*id, *i))
            .collect();
        for (id, i) in unneeded {
            let _ = self.participants[i].transactions.cancel(id);
            self.transactions.remove(&id);
            self.stats.cancelled_transactions += 1;
        }
    }

    /// Waits (up to `timeout`) until every present party's manager has reported every
    /// transaction it holds, so that fees and deposits are counted in full. Returns whether
    /// they all did.
    pub async fn settle_in_flight_within(&mut self, timeout: Duration) -> bool {
        self.settle_in_flight(Instant::now() + timeout).await;
        (0..self.participants.len()).all(|i| self.is_gone(i) || self.participants[i].transactions.stats().tracked == 0)
    }

    /// Waits (until `deadline` at most) for every present party's manager to have reported
    /// every transaction it holds, so that fees and deposits are counted in full.
    async fn settle_in_flight(&mut self, deadline: Instant) {
        loop {
            self.settle_transactions();
            let busy = (0..self.participants.len())
                .any(|i| !self.is_gone(i) && self.participants[i].transactions.stats().tracked > 0);
            if !busy || Instant::now() >= deadline {
                self.settle_transactions();
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Transactions handed to a manager and not settled.
    pub fn transactions_in_flight(&self) -> usize {
        self.transactions.len()
    }

    /// Feeds newly confirmed adjudicator events to every party.
    async fn deliver_chain_events(&mut self) -> Result<bool, NetworkError> {
        let events = match self.watcher.poll().await {
            Ok(events) => events,
            Err(error) => {
                tracing::debug!(%error, "watcher poll failed; will retry");
                return Ok(false);
            }
        };
        for event in &events {
            self.stats.chain_events += 1;
            if event.retracted_from().is_some() {
                self.stats.retractions += 1;
            }
            for i in (0..self.participants.len()).filter(|i| !self.is_gone(*i)).collect::<Vec<_>>() {
                let effects = self.participants[i].party.handle_chain_event(event);
                self.absorb(i, effects);
            }
        }
        Ok(!events.is_empty())
    }

    /// Runs until `done` holds, or fails after `timeout` with a report of what every
    /// unfinished objective waits for.
    pub async fn run_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Participant]) -> bool,
    ) -> Result<(), NetworkError> {
        let start = Instant::now();
        loop {
            let delivered = self.deliver_messages();
            let submitted = self.settle_transactions();
            let observed = self.deliver_chain_events().await?;
            if done(&self.participants) {
                self.settle_in_flight(start + timeout).await;
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(NetworkError::Timeout { elapsed: start.elapsed(), report: self.report() });
            }
            if !(delivered || submitted || observed) {
                if self.last_tick.elapsed() >= self.resend_every {
                    self.last_tick = Instant::now();
                    let chain_time = match self.participants.first() {
                        Some(p) => p.chain.chain_time().await.ok(),
                        None => None,
                    };
                    let unix_secs =
                        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
                    let clock = Clock { unix_secs, chain_time };
                    for i in (0..self.participants.len()).filter(|i| !self.is_gone(*i)).collect::<Vec<_>>() {
                        let effects = self.participants[i].party.tick(clock);
                        self.absorb(i, effects);
                    }
                    self.cancel_unneeded();
                } else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }

    /// Runs for `duration` (messages, transactions, chain events, timers), whatever happens.
    pub async fn run_for(&mut self, duration: Duration) -> Result<(), NetworkError> {
        match self.run_until(duration, |_| false).await {
            Err(NetworkError::Timeout { .. }) | Ok(()) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Runs until every listed objective completed at every party that has it.
    pub async fn run_objectives(&mut self, ids: &[ObjectiveId], timeout: Duration) -> Result<(), NetworkError> {
        let ids = ids.to_vec();
        self.run_until(timeout, move |ps| {
            ids.iter().all(|id| ps.iter().all(|p| p.party.objective(id).is_none() || p.party.is_complete(id)))
        })
        .await
    }

    /// Every unfinished objective of every party and what it waits for.
    pub fn report(&self) -> String {
        let mut lines = Vec::new();
        for p in &self.participants {
            for (id, done) in p.party.objectives() {
                if !done {
                    let waiting = p.party.waiting_for(&id).map(|w| w.to_string()).unwrap_or_default();
                    lines.push(format!("  {}: {id}: {waiting}", p.name));
                }
            }
        }
        lines.join("\n")
    }
}
