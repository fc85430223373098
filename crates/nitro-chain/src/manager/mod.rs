//! The transaction manager: lands what the objectives need on chain.
//!
//! Each requested transaction is owned by the manager from [`TxManager::submit`] until it is
//! mined and still canonical at the confirmation depth (reported as [`TxOutcome::Confirmed`]
//! or [`TxOutcome::Reverted`]), or it can never be (reported [`TxOutcome::Failed`] with the
//! reason: refused before sending, reverting at estimation, its nonce taken by another
//! transaction, its deadline passed), or it is no longer needed ([`TxManager::cancel`]; if
//! it was sent, a no-op at its nonce takes its place). Meanwhile:
//!
//! - **Failed sends are retried** with exponential backoff, with the same signed bytes while
//!   the node's answer may have been lost ("already known"/"nonce too low" then mean *sent*).
//! - **Stuck transactions are re-priced**: not mined after [`TxManagerConfig::bump_after_blocks`]
//!   blocks (or [`TxManagerConfig::bump_after`] without a block), the same call is signed again
//!   at the same nonce with fees from the current base fee and at least
//!   [`TxManagerConfig::bump_percent`] more on both fees, within a cap ([`fees`]).
//! - **Deadlines** (the chain time by which an answer to a challenge must be mined) make the
//!   pricing harder as they near: from half of the time left, re-priced every block, with
//!   more base fees and tips allowed, up to [`TxManagerConfig::deadline_max_fee_per_gas`]; an
//!   alarm is logged (and counted, [`TxManagerStats::deadline_alarms`]) while the margin
//!   shrinks unmined.
//! - **Nonces** are assigned locally, in order, from the node's pending count and the highest
//!   one in use, so that several transactions of one key are in flight at once; a nonce left
//!   empty (a transaction given up, one taken out by a deep reorg) is filled with a no-op so
//!   that later ones are not stuck behind it.
//! - **Reorgs**: a receipt counts only once its block is deep enough and still canonical; a
//!   transaction taken out is sent again (same bytes, same nonce).
//! - An identical request while one is in flight joins it: the core's own retries never send a
//!   transaction twice.
//! - **Token deposits** are checked first by simulation (a token that takes a fee on transfer
//!   or whose `transfer` returns `false` is refused: [`ChainError::UnsafeToken`]); the
//!   `approve` a deposit needs is a transaction of its own, landed like every other one before
//!   the deposit is signed; one deposit (or approval) per token is in flight at a time, so
//!   approvals cannot race each other.
//!
//! Alloy's pieces used: the signer and transaction builder ([`EthClient`]), the EIP-1559 tip
//! estimator (`eip1559_default_estimator`) over `eth_feeHistory`. Not used, and why: the
//! `NonceFiller`/`CachedNonceManager` (it "does not resynchronize automatically" after a failed
//! submission or a reorg, and knows nothing of replacements at one nonce), the `GasFiller`
//! (fills once; re-pricing needs the previous price), and `PendingTransactionBuilder`'s
//! confirmations (its heartbeat notices a reorg only when block heights jump, not when a block
//! is replaced at the same height, and it has no re-pricing).

pub mod fees;
mod landing;
mod step;

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use alloy_primitives::B256;
use nitro_core::chain::ChainTransaction;
use tokio::{sync::mpsc, task::JoinHandle, time::Instant};

use crate::{ChainError, EthChainService, TxReceipt};
use fees::Fees;

/// Settings of a [`TxManager`].
#[derive(Clone, Debug)]
pub struct TxManagerConfig {
    /// How often the manager looks at its transactions (receipts, depth, stuck ones).
    pub poll_interval: Duration,
    /// First delay before a failed send (or a read it needs) is tried again; doubled after
    /// each failure up to `max_backoff`.
    pub initial_backoff: Duration,
    /// Longest delay between tries.
    pub max_backoff: Duration,
    /// A transaction not mined after this many new blocks is re-priced (every block once its
    /// deadline is near).
    pub bump_after_blocks: u64,
    /// … or after this long without being mined, whatever the blocks (a chain that stopped
    /// making blocks, an automining dev chain, a transaction the node dropped).
    pub bump_after: Duration,
    /// Least raise of both fees of a replacement, in percent (nodes refuse less than 10).
    pub bump_percent: u64,
    /// Highest `maxFeePerGas`, in wei, of a transaction without a deadline.
    pub max_fee_per_gas: u128,
    /// Highest `maxFeePerGas` of an answer to a challenge (a transaction with a deadline):
    /// missing the deadline costs the channel, far more than gas.
    pub deadline_max_fee_per_gas: u128,
    /// An unmined transaction with less chain time than this before its deadline is critical:
    /// priced hardest, and an alarm is raised.
    pub alarm_margin_secs: u64,
    /// How often the alarm about one transaction is repeated.
    pub alarm_every: Duration,
    /// Refusals by the node (not transport failures) before a transaction the node never
    /// accepted is given up.
    pub max_refusals: u32,
    /// Most transactions tracked at once; a request beyond fails at once.
    pub max_tracked: usize,
    /// Retries of one JSON-RPC request within a poll (the next poll tries again anyway).
    pub rpc_retries: u32,
}

impl Default for TxManagerConfig {
    fn default() -> Self {
        const GWEI: u128 = 1_000_000_000;
        Self {
            poll_interval: Duration::from_millis(500),
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(8),
            bump_after_blocks: 3,
            bump_after: Duration::from_secs(30),
            bump_percent: 25,
            max_fee_per_gas: 500 * GWEI,
            deadline_max_fee_per_gas: 5_000 * GWEI,
            alarm_margin_secs: 600,
            alarm_every: Duration::from_secs(10),
            max_refusals: 20,
            max_tracked: 1024,
            rpc_retries: 1,
        }
    }
}

/// How a transaction given to the manager ended.
#[derive(Debug)]
pub enum TxOutcome {
    /// Mined, successful, and still canonical at the confirmation depth.
    Confirmed(TxReceipt),
    /// Mined and confirmed, but it reverted on chain (its fee is paid).
    Reverted {
        /// Its receipt.
        receipt: TxReceipt,
        /// The revert reason, found by replaying the call on the block's state.
        reason: Option<String>,
    },
    /// No longer needed: nothing was sent, or a no-op took its nonce (`Some`: the no-op's
    /// receipt, whose fee is paid).
    Cancelled(Option<TxReceipt>),
    /// It never will be mined: refused before sending, reverting at estimation, its nonce
    /// taken by another transaction, or its deadline passed unmined.
    Failed(ChainError),
}

impl TxOutcome {
    /// `Some(why)` when the transaction was refused for good before anything was sent because
    /// its token would lose money ([`ChainError::UnsafeToken`]): asking again cannot help.
    pub fn refusal(&self) -> Option<String> {
        match self {
            Self::Failed(error @ ChainError::UnsafeToken { .. }) => Some(error.to_string()),
            _ => None,
        }
    }
}

/// What the manager reports: how one transaction ended, for every request it stood for.
#[derive(Debug)]
pub struct TxEvent {
    /// The ids of the requests (several when identical requests were joined; none for a no-op
    /// filling a nonce gap, or for a transaction whose requests were told earlier that its
    /// deadline passed).
    pub ids: Vec<u64>,
    /// The call (`None` for a no-op filling a nonce gap).
    pub transaction: Option<ChainTransaction>,
    /// How it ended.
    pub outcome: TxOutcome,
}

/// Counters of a [`TxManager`] (for logs and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TxManagerStats {
    /// Signed transactions sent (first attempts, replacements and no-ops).
    pub sent: u64,
    /// Replacements at a nonce already used (re-pricing).
    pub replaced: u64,
    /// Sends of bytes already sent (after a transport failure, a reorg, or at the fee cap).
    pub rebroadcast: u64,
    /// Attempts found mined (again after a reorg took one out), before the depth.
    pub mined: u64,
    /// Transactions confirmed at depth (reverted ones included).
    pub confirmed: u64,
    /// Transactions that failed for good.
    pub failed: u64,
    /// Requests joined to an identical one in flight.
    pub joined: u64,
    /// Transactions taken out of the chain by a reorg and sent again.
    pub reorged: u64,
    /// Transactions cancelled (no longer needed).
    pub cancelled: u64,
    /// Alarms about a deadline nearing with the transaction unmined.
    pub deadline_alarms: u64,
    /// The smallest margin (chain seconds before the deadline) seen of an unmined transaction
    /// with a deadline, if any.
    pub lowest_deadline_margin_secs: Option<u64>,
    /// Transactions tracked now.
    pub tracked: u64,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    replaced: AtomicU64,
    rebroadcast: AtomicU64,
    mined: AtomicU64,
    confirmed: AtomicU64,
    failed: AtomicU64,
    joined: AtomicU64,
    reorged: AtomicU64,
    cancelled: AtomicU64,
    deadline_alarms: AtomicU64,
    /// `u64::MAX`: none seen.
    lowest_margin: AtomicU64,
    tracked: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> TxManagerStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let lowest = get(&self.lowest_margin);
        TxManagerStats {
            sent: get(&self.sent),
            replaced: get(&self.replaced),
            rebroadcast: get(&self.rebroadcast),
            mined: get(&self.mined),
            confirmed: get(&self.confirmed),
            failed: get(&self.failed),
            joined: get(&self.joined),
            reorged: get(&self.reorged),
            cancelled: get(&self.cancelled),
            deadline_alarms: get(&self.deadline_alarms),
            lowest_deadline_margin_secs: (lowest != u64::MAX).then_some(lowest),
            tracked: get(&self.tracked),
        }
    }
}

enum Command {
    Submit { id: u64, transaction: Box<ChainTransaction>, deadline: Option<u64> },
    Cancel { id: u64 },
}

/// The handle of a running transaction manager (a tokio task, stopped when every handle is
/// dropped or by [`TxManager::shutdown`]).
#[derive(Clone, Debug)]
pub struct TxManager {
    commands: mpsc::UnboundedSender<Command>,
    counters: Arc<Counters>,
    task: Arc<JoinHandle<()>>,
}

impl TxManager {
    /// Starts a manager sending from `service`'s account to its adjudicator. Outcomes arrive on
    /// the returned receiver, one [`TxEvent`] per transaction.
    pub fn spawn(service: EthChainService, config: TxManagerConfig) -> (Self, mpsc::UnboundedReceiver<TxEvent>) {
        let (commands, receiver) = mpsc::unbounded_channel();
        let (events, outcomes) = mpsc::unbounded_channel();
        let counters = Arc::new(Counters { lowest_margin: AtomicU64::new(u64::MAX), ..Counters::default() });
        let worker = step::Worker::new(service, config, events, counters.clone());
        let task = tokio::spawn(worker.run(receiver));
        (Self { commands, counters, task: Arc::new(task) }, outcomes)
    }

    /// Hands over a transaction to land, under the caller's request `id`, with the chain time
    /// by which it must be mined (`None`: no deadline). Never blocks; an error only when the
    /// manager has stopped.
    pub fn submit(&self, id: u64, transaction: ChainTransaction, deadline: Option<u64>) -> Result<(), ChainError> {
        self.commands.send(Command::Submit { id, transaction: Box::new(transaction), deadline }).map_err(|_| stopped())
    }

    /// The request `id` is no longer needed: its transaction is not sent, or — once sent and
    /// unless another request joined it — replaced by a no-op at its nonce (whichever is mined
    /// first ends it).
    pub fn cancel(&self, id: u64) -> Result<(), ChainError> {
        self.commands.send(Command::Cancel { id }).map_err(|_| stopped())
    }

    /// The counters so far.
    pub fn stats(&self) -> TxManagerStats {
        self.counters.snapshot()
    }

    /// Stops the manager's task at once (what is in flight stays in the node's pool).
    pub fn shutdown(&self) {
        self.task.abort();
    }
}

fn stopped() -> ChainError {
    ChainError::Rpc { operation: "transaction manager", message: "the transaction manager has stopped".into() }
}

/// One signed attempt at a transaction's nonce.
#[derive(Clone, Debug)]
struct Attempt {
    hash: B256,
    raw: alloy_primitives::Bytes,
    fees: Fees,
    /// A 0-value transfer to ourselves, taking the nonce back.
    noop: bool,
}

/// An attempt found mined, waiting for the confirmation depth.
#[derive(Clone, Debug)]
struct Mined {
    hash: B256,
    block_number: u64,
    block_hash: B256,
    receipt: TxReceipt,
    success: bool,
    noop: bool,
}

/// A transaction the manager owns.
#[derive(Debug)]
struct Tracked {
    /// The requests it stands for (cancelled ones are removed).
    ids: Vec<u64>,
    /// No longer needed (every request cancelled, or its deadline passed): it ends with
    /// whatever takes its nonce, a no-op if we send one.
    cancelled: bool,
    /// `None`: a no-op filling a nonce gap.
    transaction: Option<ChainTransaction>,
    deadline: Option<u64>,
    /// Chain seconds left before the deadline when first seen.
    initial_margin: Option<u64>,
    created: Instant,
    gas: Option<u64>,
    nonce: Option<u64>,
    attempts: Vec<Attempt>,
    mined: Option<Mined>,
    /// No earlier than this, the next send (after a failure).
    retry_at: Instant,
    backoff: Duration,
    /// When, and at which head, an attempt was last sent.
    last_sent: Option<(Instant, u64)>,
    /// The chain's head when the nonce was first used (the search for what took it starts
    /// there).
    sent_above: u64,
    /// The last send may not have arrived: send the newest attempt again.
    resend: bool,
    /// Some attempt may have reached the node.
    may_have_arrived: bool,
    /// The node refused the price: re-price at once.
    reprice: bool,
    refusals: u32,
    nonce_moved_at: Option<Instant>,
    last_search: Option<Instant>,
    last_alarm: Option<Instant>,
    /// For a token deposit: the approvals asked for it so far.
    approvals: u32,
    outcome: Option<TxOutcome>,
}

impl Tracked {
    fn new(id: Option<u64>, transaction: Option<ChainTransaction>, deadline: Option<u64>, backoff: Duration) -> Self {
        let now = Instant::now();
        Self {
            ids: id.into_iter().collect(),
            cancelled: false,
            transaction,
            deadline,
            initial_margin: None,
            created: now,
            gas: None,
            nonce: None,
            attempts: Vec::new(),
            mined: None,
            retry_at: now,
            backoff,
            last_sent: None,
            sent_above: 0,
            resend: false,
            may_have_arrived: false,
            reprice: false,
            refusals: 0,
            nonce_moved_at: None,
            last_search: None,
            last_alarm: None,
            approvals: 0,
            outcome: None,
        }
    }
}
