//! The workload, through the nodes' JSON-RPC APIs: the hub opens a ledger with Alice and one
//! with Bob; then N lifecycles, at most C in flight, each `virtual_fund` at Alice (waited
//! until done there), one `virtual_pay`, `virtual_defund` (waited until done there); the run
//! ends when the hub and Bob have completed every close too.

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use alloy_primitives::U256;
use nitro_core::party::ObjectiveId;
use nitro_node::api::{LedgerSummary, ObjectiveStarted, ObjectiveStatus, WaitResult};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use super::{
    cluster::{Cluster, Handle},
    HubBenchError, Plan,
};

/// What each virtual channel is funded with, by Alice (Bob puts in nothing), in wei.
pub(super) const VIRTUAL_AMOUNT: u64 = 1_000_000_000_000;

/// What Alice pays Bob in each virtual channel, in wei.
pub(super) const PAYMENT: u64 = 100_000_000_000;

/// How long one objective may take before the run fails (generous: a loaded machine with
/// 1,000 in flight is slow, not stuck).
const OBJECTIVE_DEADLINE: Duration = Duration::from_secs(300);

/// Ids per `objectives_wait` call (the API's limit).
const WAIT_IDS: usize = 1_000;

/// What the measured part of a run gives.
pub(super) struct Run {
    /// First `virtual_fund` request to the last close done at all three nodes.
    pub elapsed: Duration,
    /// Per virtual channel: `virtual_fund` request to the objective done at Alice.
    pub fund_latencies: Vec<Duration>,
}

impl Handle {
    /// Calls `method` and reads its result as `T`.
    async fn call<T: DeserializeOwned>(&self, method: &str, params: Value) -> Result<T, HubBenchError> {
        self.client.call_as(method, params).await.map_err(|e| self.error(format!("{method}: {e}")))
    }

    /// Waits until every objective in `ids` is done; an error if one fails or `deadline`
    /// passes first (naming what it waits for).
    async fn wait_done(&self, ids: &[ObjectiveId], deadline: Duration) -> Result<(), HubBenchError> {
        let until = Instant::now() + deadline;
        loop {
            let remaining = until.saturating_duration_since(Instant::now());
            let timeout_ms = remaining.as_millis().min(30_000) as u64;
            let wait: WaitResult =
                self.call("objectives_wait", json!({"objective_ids": ids, "timeout_ms": timeout_ms})).await?;
            if let Some(failed) = wait.failed.first() {
                let status = self.status(failed).await?;
                let why = status.failed.unwrap_or(status.waiting_for);
                return Err(self.error(format!("objective {failed} failed: {why}")));
            }
            let Some(pending) = wait.pending.first() else { return Ok(()) };
            if Instant::now() >= until {
                let status = self.status(pending).await?;
                return Err(self.error(format!(
                    "{} objective(s) not done after {} s; {pending}: {}",
                    wait.pending.len(),
                    deadline.as_secs(),
                    status.waiting_for
                )));
            }
        }
    }

    async fn status(&self, id: &ObjectiveId) -> Result<ObjectiveStatus, HubBenchError> {
        self.call("objective_get", json!({"objective_id": id})).await
    }
}

/// Runs the workload on a started cluster.
pub(super) async fn run(cluster: &Cluster, plan: &Plan) -> Result<Run, HubBenchError> {
    let handles = cluster.nodes.iter().map(|n| n.handle()).collect::<Result<Vec<_>, _>>()?;
    let [alice, hub, bob] = handles.as_slice() else {
        return Err(HubBenchError::Setup(format!("expected 3 nodes, have {}", handles.len())));
    };
    let n = plan.virtual_channels;
    // Enough for every channel at once; a run locks at most C of them at a time.
    let deposit = U256::from(VIRTUAL_AMOUNT) * U256::from(n as u64 + 1);
    let ledgers = open_ledgers(hub, [alice, bob], deposit).await?;
    plan.say(format!(
        "ledgers open: {} wei from each side; running {n} lifecycles, {} in flight",
        deposit, plan.concurrency
    ));

    let next = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for _ in 0..plan.concurrency {
        let (alice, hub, bob, plan) = (alice.clone(), hub.address, bob.address, *plan);
        let (next, finished) = (next.clone(), finished.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < plan.virtual_channels {
                done.push(lifecycle(&alice, hub, bob).await?);
                let count = finished.fetch_add(1, Ordering::Relaxed) + 1;
                let step = (plan.virtual_channels / 10).max(1);
                if count % step == 0 {
                    plan.say(format!("  {count} / {} closed at alice", plan.virtual_channels));
                }
            }
            Ok::<_, HubBenchError>(done)
        });
    }
    let mut fund_latencies = Vec::with_capacity(n);
    let mut closes = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        let done = match joined {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => return Err(e), // dropping `tasks` aborts the other workers
            Err(e) => return Err(HubBenchError::Workload(format!("a lifecycle task ended: {e}"))),
        };
        for (latency, close) in done {
            fund_latencies.push(latency);
            closes.push(close);
        }
    }
    // The hub and Bob release their guarantees after Alice: the run ends when every ledger
    // change is durable at both of its ends.
    for node in [hub, bob] {
        for chunk in closes.chunks(WAIT_IDS) {
            node.wait_done(chunk, OBJECTIVE_DEADLINE).await?;
        }
    }
    let elapsed = started.elapsed();
    check_ledgers(hub, ledgers, deposit, n).await?;
    Ok(Run { elapsed, fund_latencies })
}

/// The hub opens a ledger with each of `others`, both sides depositing `deposit`; returns
/// once each is funded at both of its ends.
async fn open_ledgers(hub: &Handle, others: [&Handle; 2], deposit: U256) -> Result<[ObjectiveId; 2], HubBenchError> {
    let mut ids = Vec::new();
    for other in others {
        let opened: ObjectiveStarted = hub
            .call(
                "ledger_open",
                json!({
                    "counterparty": other.address.to_string(),
                    "my_amount": deposit.to_string(),
                    "counterparty_amount": deposit.to_string(),
                }),
            )
            .await?;
        ids.push(opened.objective_id);
    }
    hub.wait_done(&ids, OBJECTIVE_DEADLINE).await?;
    for (other, id) in others.iter().zip(&ids) {
        other.wait_done(&[*id], OBJECTIVE_DEADLINE).await?;
    }
    Ok([ids[0], ids[1]])
}

/// One virtual channel at Alice: funded (waited), paid once, closed (waited). Returns the
/// funding latency and the close's objective.
async fn lifecycle(
    alice: &Handle,
    hub: alloy_primitives::Address,
    bob: alloy_primitives::Address,
) -> Result<(Duration, ObjectiveId), HubBenchError> {
    let requested = Instant::now();
    let fund: ObjectiveStarted = alice
        .call(
            "virtual_fund",
            json!({
                "counterparty": bob.to_string(),
                "intermediaries": [hub.to_string()],
                "amount": VIRTUAL_AMOUNT.to_string(),
            }),
        )
        .await?;
    alice.wait_done(&[fund.objective_id], OBJECTIVE_DEADLINE).await?;
    let latency = requested.elapsed();
    let _: Value =
        alice.call("virtual_pay", json!({"channel_id": fund.channel_id, "amount": PAYMENT.to_string()})).await?;
    let close: ObjectiveStarted = alice.call("virtual_defund", json!({"channel_id": fund.channel_id})).await?;
    alice.wait_done(&[close.objective_id], OBJECTIVE_DEADLINE).await?;
    Ok((latency, close.objective_id))
}

/// After the run, at the hub: no guarantee left in either ledger, and each shows the `n`
/// payments that crossed it (Alice → hub, hub → Bob).
async fn check_ledgers(hub: &Handle, ledgers: [ObjectiveId; 2], deposit: U256, n: usize) -> Result<(), HubBenchError> {
    let paid = U256::from(PAYMENT) * U256::from(n as u64);
    // (the hub's balance, its counterparty's) in L(hub, alice), then in L(hub, bob).
    let expected = [(deposit + paid, deposit - paid), (deposit - paid, deposit + paid)];
    for (ledger, (mine, theirs)) in ledgers.iter().zip(expected) {
        let summary: LedgerSummary = hub.call("ledger_get", json!({"channel_id": ledger.channel_id()})).await?;
        if !summary.guarantees.is_empty() || summary.my_balance != mine || summary.counterparty_balance != theirs {
            return Err(HubBenchError::Workload(format!(
                "ledger {} at the hub: {} guarantee(s) left, balances {} / {}, expected none and {mine} / {theirs}",
                ledger.channel_id(),
                summary.guarantees.len(),
                summary.my_balance,
                summary.counterparty_balance
            )));
        }
    }
    Ok(())
}
