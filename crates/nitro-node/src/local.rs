//! Several parties in one process, on one chain: each an [`Engine`] over its own SQLite store
//! (in memory, or files in a directory), driven exactly as the node drives it. Requests,
//! messages, chain events, failed transactions, reconnections and timer ticks all reach a
//! party as engine [`Input`]s, each step durable before anything it produced leaves. Each
//! party's transactions go to its own [`TxManager`], as in the node.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use alloy_primitives::{Address, U256};
use nitro_chain::{
    ChainConfig, ChainError, ChainService, Contracts, EthChainService, EthClient, EventWatcher, TxEvent, TxManager,
    TxManagerConfig, TxOutcome, WatcherConfig,
};
use nitro_core::{
    chain::ChainTransaction,
    party::{Envelope, ObjectiveId, Party, PartyConfig, PartyError, PartyEvent, TransactionRequest},
    ConsensusChannel, LedgerEvent, SigningKey,
};
use thiserror::Error;
use tokio::sync::mpsc::UnboundedReceiver;

use crate::{
    engine::{Engine, EngineError, Input, Output, Request},
    store::{Store, StoreError},
};

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
    /// A party's engine or store failed (the step did not happen).
    #[error("{party}: {error}")]
    Engine {
        /// Whose.
        party: String,
        /// What failed.
        error: Box<EngineError>,
    },
    /// A request that starts an objective started none.
    #[error("{party}: the request started no objective")]
    NoObjective {
        /// Who was asked.
        party: String,
    },
    /// The directory for the stores could not be made.
    #[error("store directory {path}: {error}")]
    StoreDirectory {
        /// The directory.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
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

/// Where the participants' stores live.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Stores {
    /// SQLite in memory (fast; gone with the process).
    #[default]
    InMemory,
    /// One SQLite file per participant, `<directory>/<name>.db` (durable: a later run opens
    /// them again).
    Directory(PathBuf),
}

/// One party of the network, with its account on the chain.
pub struct Participant {
    /// A name for people ("alice", "hub", …).
    pub name: String,
    /// The party and its store.
    pub engine: Engine,
    /// Its account on the chain.
    pub chain: EthChainService,
    /// Its transaction manager.
    pub transactions: TxManager,
    /// Wei it paid in transaction fees.
    pub fees_paid: U256,
    /// Wei it deposited into channels (ETH only).
    pub deposited: U256,
    /// What it deposited into channels, per asset (the zero address: ETH, as `deposited`).
    pub deposits: std::collections::BTreeMap<Address, U256>,
}

impl Participant {
    /// The party (read-only: it changes only through engine inputs).
    pub fn party(&self) -> &Party {
        self.engine.party()
    }
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Messages delivered between parties.
    pub messages: u64,
    /// Messages lost to the filter, or sent to a party gone.
    pub lost_messages: u64,
    /// Messages a party refused (duplicates of settled rounds, stale branches).
    pub refused_messages: u64,
    /// Connections that came back after a loss (both ends resynced).
    pub reconnections: u64,
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
    /// Reported events a reorg took back.
    pub retractions: u64,
    /// Transactions cancelled because their objective no longer needed them.
    pub cancelled_transactions: u64,
    /// Ledgers resized in place: a top-up credited, or a migration to a successor by a partial
    /// withdrawal (each counted once, by the ledger's leader).
    pub resized_ledgers: u64,
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
/// confirmation depth), and events final at that depth are fed back to every party. A message the filter loses breaks its connection: at the next tick
/// both ends get [`Input::PeerConnected`] and resync, as with the real transport.
pub struct LocalNetwork {
    /// The parties.
    pub participants: Vec<Participant>,
    /// Counters.
    pub stats: Stats,
    watcher: EventWatcher,
    messages: VecDeque<(usize, Envelope)>,
    /// Transactions handed to a party's manager and not settled, by (party, id in its store).
    transactions: BTreeMap<(usize, u64), TransactionRequest>,
    /// Each party's manager reports.
    outcomes: Vec<UnboundedReceiver<TxEvent>>,
    tick_every: Duration,
    /// When the parties' timers last ran (kept across runs, so that short runs still tick).
    last_tick: Instant,
    observer: Option<Observer>,
    filter: Option<MessageFilter>,
    /// Parties gone for good: they receive, send, tick and submit nothing.
    gone: Vec<bool>,
    /// Connections a lost message broke (the lower index first).
    broken: BTreeSet<(usize, usize)>,
}

/// Sees every event a party persists, with the party's name.
pub type Observer = Box<dyn FnMut(&str, &PartyEvent) + Send>;

/// Decides whether a message from party `from` gets through (false: it is lost).
pub type MessageFilter = Box<dyn Fn(usize, &Envelope) -> bool + Send>;

impl LocalNetwork {
    /// Connects one account per `(name, key)` to the node at `url` and the deployed
    /// `contracts`, each party on a store in memory, at the chain's default confirmation depth
    /// (1 on anvil).
    pub async fn connect(
        url: &str,
        contracts: &Contracts,
        parties: Vec<(String, SigningKey)>,
        config: PartyConfig,
    ) -> Result<Self, NetworkError> {
        Self::connect_with(url, contracts, parties, config, &Stores::InMemory, LocalChainSettings::default()).await
    }

    /// Like [`LocalNetwork::connect`], with the stores in `stores` and the chain `settings`.
    /// Stores that hold a party already are opened as after a restart: its recent outbox is
    /// delivered again, and its unsettled transactions go to its manager again if it still
    /// needs them (as the node does).
    pub async fn connect_with(
        url: &str,
        contracts: &Contracts,
        parties: Vec<(String, SigningKey)>,
        config: PartyConfig,
        stores: &Stores,
        settings: LocalChainSettings,
    ) -> Result<Self, NetworkError> {
        let mut participants = Vec::new();
        let mut messages = VecDeque::new();
        let mut outcomes = Vec::new();
        let mut transactions = BTreeMap::new();
        let mut depth = settings.confirmations.unwrap_or(1);
        for (name, key) in parties {
            let store = open_store(stores, &name)?;
            let engine_error =
                |error: EngineError| NetworkError::Engine { party: name.clone(), error: Box::new(error) };
            let (engine, recovery) = Engine::open(store, key.clone(), config.clone()).map_err(engine_error)?;
            let client = EthClient::connect(url, &key, settings.client.clone()).await?;
            depth = settings.confirmations.unwrap_or_else(|| nitro_chain::default_confirmations(client.chain_id()));
            let client = client.with_config(ChainConfig { confirmations: depth, ..settings.client.clone() });
            let chain = EthChainService::new(client, contracts.adjudicator);
            let (manager, events) = TxManager::spawn(chain.clone(), settings.manager.clone());
            let i = participants.len();
            messages.extend(recovery.messages.into_iter().map(|(_, envelope)| (i, envelope)));
            for (id, request) in recovery.transactions {
                if engine.party().needs(&request)
                    && manager.submit(id, request.transaction.clone(), request.deadline).is_ok()
                {
                    transactions.insert((i, id), request);
                } else {
                    engine.store().transaction_done(id).map_err(|e| engine_error(EngineError::Store(e)))?;
                }
            }
            outcomes.push(events);
            participants.push(Participant {
                name,
                engine,
                chain,
                transactions: manager,
                fees_paid: U256::ZERO,
                deposited: U256::ZERO,
                deposits: std::collections::BTreeMap::new(),
            });
        }
        let from_block = match participants.first() {
            Some(p) => p.chain.client().block_number().await?,
            None => 0,
        };
        let watcher_config = WatcherConfig { confirmations: depth, ..WatcherConfig::default() };
        let watcher = EventWatcher::connect(url, contracts.adjudicator, from_block)?.with_config(watcher_config);
        let gone = vec![false; participants.len()];
        Ok(Self {
            participants,
            stats: Stats::default(),
            watcher,
            messages,
            transactions,
            outcomes,
            tick_every: Duration::from_millis(300),
            last_tick: Instant::now(),
            observer: None,
            filter: None,
            gone,
            broken: BTreeSet::new(),
        })
    }

    /// Calls `observer` with every event a party persists (for progress output).
    pub fn observe(&mut self, observer: impl FnMut(&str, &PartyEvent) + Send + 'static) {
        self.observer = Some(Box::new(observer));
    }

    /// Loses every message `filter` refuses (a party gone silent, a partition), until the
    /// filter is removed with `None`. A lost message breaks its connection: both ends resync
    /// at the next tick (and the filter judges what they send again).
    pub fn set_filter(&mut self, filter: Option<MessageFilter>) {
        self.filter = filter;
    }

    /// Party `i` is gone for good from now on: it receives, sends, ticks and submits nothing.
    pub fn vanish(&mut self, i: usize) {
        if let Some(gone) = self.gone.get_mut(i) {
            *gone = true;
        }
        self.messages.retain(|(from, _)| *from != i);
        self.transactions.retain(|(from, _), _| *from != i);
        self.participants[i].transactions.shutdown();
    }

    fn is_gone(&self, i: usize) -> bool {
        self.gone.get(i).copied().unwrap_or(false)
    }

    fn present(&self) -> Vec<usize> {
        (0..self.participants.len()).filter(|i| !self.is_gone(*i)).collect()
    }

    /// Index of the party with `address`.
    pub fn index_of(&self, address: Address) -> Option<usize> {
        self.participants.iter().position(|p| p.party().address() == address)
    }

    /// Address of party `i`.
    pub fn address(&self, i: usize) -> Address {
        self.participants[i].party().address()
    }

    /// Makes a request of party `i` (open a ledger, fund a virtual channel, pay, …); returns
    /// the objective it started, if any.
    pub fn request(&mut self, i: usize, request: Request) -> Result<Option<ObjectiveId>, NetworkError> {
        let party = self.participants[i].name.clone();
        match self.participants[i].engine.step(Input::Request(request)) {
            Ok(output) => {
                let started = output.started;
                self.absorb(i, output);
                Ok(started)
            }
            Err(EngineError::Party(error)) => Err(NetworkError::Party { party, error: Box::new(error) }),
            Err(EngineError::Declined { error, output }) => {
                self.absorb(i, *output);
                Err(NetworkError::Party { party, error: Box::new(error) })
            }
            Err(error) => Err(NetworkError::Engine { party, error: Box::new(error) }),
        }
    }

    /// Like [`LocalNetwork::request`], for requests that start an objective.
    pub fn start(&mut self, i: usize, request: Request) -> Result<ObjectiveId, NetworkError> {
        self.request(i, request)?.ok_or_else(|| NetworkError::NoObjective { party: self.participants[i].name.clone() })
    }

    /// Steps party `i` with an input that is not a request: a refusal changes nothing (and
    /// is counted for messages); a store failure stops the run.
    fn step(&mut self, i: usize, input: Input) -> Result<(), NetworkError> {
        let is_message = matches!(input, Input::Message { .. });
        match self.participants[i].engine.step(input) {
            Ok(output) => self.absorb(i, output),
            Err(EngineError::Party(error)) => {
                if is_message {
                    self.stats.refused_messages += 1;
                }
                tracing::debug!(party = %self.participants[i].name, %error, "input refused");
            }
            Err(EngineError::Declined { error, output }) => {
                self.stats.refused_messages += 1;
                tracing::debug!(party = %self.participants[i].name, %error, "objective declined");
                self.absorb(i, *output);
            }
            Err(error) => {
                return Err(NetworkError::Engine { party: self.participants[i].name.clone(), error: Box::new(error) })
            }
        }
        Ok(())
    }

    fn absorb(&mut self, i: usize, output: Output) {
        if self.is_gone(i) {
            return;
        }
        let name = self.participants[i].name.clone();
        for event in &output.events {
            if let PartyEvent::Ledger { channel_id, event } = event {
                let party = self.participants[i].party();
                let leads = matches!(party.ledger(channel_id), Some(ConsensusChannel::Leader(_)));
                match event {
                    LedgerEvent::GuaranteeLocked { .. } if leads => self.stats.guarantees_locked += 1,
                    LedgerEvent::GuaranteeReleased { .. } if leads => self.stats.guarantees_released += 1,
                    LedgerEvent::TopUpAgreed { proposal: nitro_core::Proposal::Credit { .. } } if leads => {
                        self.stats.resized_ledgers += 1
                    }
                    _ => {}
                }
            }
            if matches!(event, PartyEvent::ChallengeAnswered { .. }) {
                self.stats.challenges_answered += 1;
            }
            if let PartyEvent::LedgerMigrated { to, .. } = event {
                // Counted once per ledger: by its leader.
                if matches!(self.participants[i].party().ledger(to), Some(ConsensusChannel::Leader(_))) {
                    self.stats.resized_ledgers += 1;
                }
            }
            if let Some(observer) = self.observer.as_mut() {
                observer(&name, event);
            }
        }
        self.messages.extend(output.messages.into_iter().map(|(_, m)| (i, m)));
        for (id, request) in output.transactions {
            match self.participants[i].transactions.submit(id, request.transaction.clone(), request.deadline) {
                Ok(()) => {
                    self.transactions.insert((i, id), request);
                }
                Err(error) => tracing::warn!(%error, "transaction not handed to the manager"),
            }
        }
    }

    /// Delivers every queued message (and what they cause), in order.
    fn deliver_messages(&mut self) -> Result<bool, NetworkError> {
        let mut any = false;
        while let Some((from, envelope)) = self.messages.pop_front() {
            any = true;
            let Some(to) = self.index_of(envelope.to) else { continue };
            if self.is_gone(to) {
                self.stats.lost_messages += 1;
                continue;
            }
            if self.filter.as_ref().is_some_and(|f| !f(from, &envelope)) {
                self.stats.lost_messages += 1;
                self.broken.insert((from.min(to), from.max(to)));
                continue;
            }
            self.stats.messages += 1;
            let sender = self.address(from);
            self.step(to, Input::Message { from: sender, payload: envelope.payload })?;
        }
        Ok(any)
    }

    /// Takes what the transaction managers report: fees and deposits counted, each settled in
    /// its party's store, failures told to the objectives that asked (they ask again on their
    /// timers if still needed).
    fn settle_transactions(&mut self) -> Result<bool, NetworkError> {
        let mut any = false;
        for i in 0..self.outcomes.len() {
            while let Ok(event) = self.outcomes[i].try_recv() {
                any = true;
                self.settle(i, event)?;
            }
        }
        Ok(any)
    }

    fn settle(&mut self, i: usize, event: TxEvent) -> Result<(), NetworkError> {
        let participant = &mut self.participants[i];
        let failed = match &event.outcome {
            TxOutcome::Confirmed(receipt) => {
                self.stats.transactions += 1;
                participant.fees_paid += receipt.fee();
                if let Some(ChainTransaction::Deposit { amount, asset, .. }) = &event.transaction {
                    if asset.is_zero() {
                        participant.deposited += *amount;
                    }
                    *participant.deposits.entry(*asset).or_default() += *amount;
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
        let refused = event.outcome.refusal();
        for id in event.ids {
            let Some(request) = self.transactions.remove(&(i, id)) else { continue };
            self.transaction_done(i, id)?;
            if let (true, Some(objective)) = (failed, request.objective) {
                if !self.is_gone(i) {
                    self.step(i, Input::TransactionFailed { objective, refused: refused.clone() })?;
                }
            }
        }
        Ok(())
    }

    /// Marks transaction `id` of party `i` settled in its store.
    fn transaction_done(&mut self, i: usize, id: u64) -> Result<(), NetworkError> {
        let participant = &self.participants[i];
        participant.engine.store().transaction_done(id).map_err(|error| NetworkError::Engine {
            party: participant.name.clone(),
            error: Box::new(EngineError::Store(error)),
        })
    }

    /// Cancels the transactions whose party no longer needs them.
    fn cancel_unneeded(&mut self) -> Result<(), NetworkError> {
        let unneeded: Vec<(usize, u64)> = self
            .transactions
            .iter()
            .filter(|((i, _), request)| !self.participants[*i].party().needs(request))
            .map(|(key, _)| *key)
            .collect();
        for (i, id) in unneeded {
            let _ = self.participants[i].transactions.cancel(id);
            self.transactions.remove(&(i, id));
            self.transaction_done(i, id)?;
            self.stats.cancelled_transactions += 1;
        }
        Ok(())
    }

    /// Waits (up to `timeout`) until every present party's manager has reported every
    /// transaction it holds, so that fees and deposits are counted in full. Returns whether
    /// they all did.
    pub async fn settle_in_flight_within(&mut self, timeout: Duration) -> Result<bool, NetworkError> {
        self.settle_in_flight(Instant::now() + timeout).await?;
        Ok((0..self.participants.len())
            .all(|i| self.is_gone(i) || self.participants[i].transactions.stats().tracked == 0))
    }

    /// Waits (until `deadline` at most) for every present party's manager to have reported
    /// every transaction it holds, so that fees and deposits are counted in full.
    async fn settle_in_flight(&mut self, deadline: Instant) -> Result<(), NetworkError> {
        loop {
            self.settle_transactions()?;
            let busy = (0..self.participants.len())
                .any(|i| !self.is_gone(i) && self.participants[i].transactions.stats().tracked > 0);
            if !busy || Instant::now() >= deadline {
                self.settle_transactions()?;
                return Ok(());
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
            for i in self.present() {
                self.step(i, Input::Chain(event.clone()))?;
            }
        }
        Ok(!events.is_empty())
    }

    /// Every party's timer, with the wall clock and the chain's clock; then the connections
    /// a lost message broke come back, and both ends of each resync.
    async fn tick(&mut self) -> Result<(), NetworkError> {
        let chain_time = match self.participants.first() {
            Some(p) => p.chain.chain_time().await.ok(),
            None => None,
        };
        let unix_secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        for i in self.present() {
            self.step(i, Input::Tick { unix_secs, chain_time })?;
        }
        for (a, b) in std::mem::take(&mut self.broken) {
            if self.is_gone(a) || self.is_gone(b) {
                continue;
            }
            self.stats.reconnections += 1;
            let (address_a, address_b) = (self.address(a), self.address(b));
            self.step(a, Input::PeerConnected { peer: address_b })?;
            self.step(b, Input::PeerConnected { peer: address_a })?;
        }
        self.cancel_unneeded()
    }

    /// Runs until `done` holds, or fails after `timeout` with a report of what every
    /// unfinished objective waits for. Parties tick whenever nothing happened for a while.
    pub async fn run_until(
        &mut self,
        timeout: Duration,
        done: impl Fn(&[Participant]) -> bool,
    ) -> Result<(), NetworkError> {
        let start = Instant::now();
        loop {
            // `done` is asked after each kind of work, so that a run stops as soon as it holds
            // (a test that makes a party vanish at a given moment relies on it).
            let delivered = self.deliver_messages()?;
            let mut finished = done(&self.participants);
            let (mut submitted, mut observed) = (false, false);
            if !finished {
                submitted = self.settle_transactions()?;
                finished = done(&self.participants);
            }
            if !finished {
                observed = self.deliver_chain_events().await?;
                finished = done(&self.participants);
            }
            if finished {
                self.settle_in_flight(start + timeout).await?;
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(NetworkError::Timeout { elapsed: start.elapsed(), report: self.report() });
            }
            if !(delivered || submitted || observed) {
                if self.last_tick.elapsed() >= self.tick_every {
                    self.last_tick = Instant::now();
                    self.tick().await?;
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

    /// Runs until every listed objective completed at every party that has it (or has let
    /// go of it).
    pub async fn run_objectives(&mut self, ids: &[ObjectiveId], timeout: Duration) -> Result<(), NetworkError> {
        let ids = ids.to_vec();
        self.run_until(timeout, move |ps| {
            ids.iter().all(|id| ps.iter().all(|p| p.party().objective(id).is_none() || p.party().is_complete(id)))
        })
        .await
    }

    /// Every unfinished objective of every party and what it waits for.
    pub fn report(&self) -> String {
        let mut lines = Vec::new();
        for p in &self.participants {
            for (id, done) in p.party().objectives() {
                if !done {
                    let waiting = p.party().waiting_for(&id).map(|w| w.to_string()).unwrap_or_default();
                    lines.push(format!("  {}: {id}: {waiting}", p.name));
                }
            }
        }
        lines.join("\n")
    }
}

/// Opens the store of participant `name`.
fn open_store(stores: &Stores, name: &str) -> Result<Store, NetworkError> {
    let store_error =
        |error: StoreError| NetworkError::Engine { party: name.to_owned(), error: Box::new(EngineError::Store(error)) };
    match stores {
        Stores::InMemory => Store::in_memory().map_err(store_error),
        Stores::Directory(dir) => {
            std::fs::create_dir_all(dir).map_err(|error| NetworkError::StoreDirectory { path: dir.clone(), error })?;
            Store::open(&store_path(dir, name)).map_err(store_error)
        }
    }
}

/// Where participant `name`'s store lives in `dir`.
pub fn store_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.db"))
}
