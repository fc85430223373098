//! `nitro bench hub`: three real `nitro node` processes (Alice, a hub, Bob) and anvil on
//! loopback; N virtual channels Alice → hub → Bob funded, paid once and closed through the
//! nodes' JSON-RPC APIs, at most C at a time, every step durable in each node's SQLite file;
//! against the cryptographic floor of the same workload, measured in the same run.
//!
//! - [`cluster`]: anvil, the contracts, the three node processes, their readiness and stop;
//! - [`load`]: the ledgers and the N lifecycles (the measured part);
//! - [`floor`]: the signatures, recoveries and hashes no implementation can avoid.

mod cluster;
mod floor;
mod load;

use std::{fmt, time::Duration};

use clap::Args;
use serde_json::{json, Value};

use crate::UsageError;

/// Most virtual channels one run takes (each lifecycle writes ≈ 20 durable steps over the
/// three nodes; a larger run belongs in several runs).
pub const MAX_VIRTUAL_CHANNELS: usize = 100_000;

/// Most lifecycles in flight (each holds one long-poll connection to Alice's API).
pub const MAX_CONCURRENCY: usize = 1_000;

/// Options of `nitro bench hub`.
#[derive(Args)]
pub struct HubArgs {
    /// Virtual channels to fund, pay once and close, Alice → hub → Bob.
    #[arg(long)]
    virtual_channels: usize,
    /// Lifecycles in flight at most (default: min(N, 100)).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Keep the temporary directory (configurations, keys, node logs, SQLite files) and print
    /// where it is.
    #[arg(long)]
    keep: bool,
    /// Print one JSON object (the last line of stdout) instead of text.
    #[arg(long)]
    json: bool,
}

/// Why `nitro bench hub` could not run or finish.
#[derive(Debug)]
pub enum HubBenchError {
    /// Bad arguments.
    Args(String),
    /// Anvil, the contracts, the temporary directory or the configurations.
    Setup(String),
    /// A node failed to start, answer, or stop cleanly; `log` is where its log is.
    Node {
        /// `alice`, `hub` or `bob`.
        name: &'static str,
        /// What went wrong.
        what: String,
        /// The node's log file (kept when the run fails).
        log: std::path::PathBuf,
    },
    /// The workload failed (a refused call, a failed or stuck objective, wrong balances).
    Workload(String),
}

impl fmt::Display for HubBenchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Args(why) => write!(f, "{why}"),
            Self::Setup(why) => write!(f, "bench hub setup: {why}"),
            Self::Node { name, what, log } => write!(f, "bench hub: node {name}: {what} (log: {})", log.display()),
            Self::Workload(why) => write!(f, "bench hub workload: {why}"),
        }
    }
}

impl std::error::Error for HubBenchError {}

/// The checked options of one run.
#[derive(Clone, Copy, Debug)]
struct Plan {
    virtual_channels: usize,
    concurrency: usize,
    keep: bool,
    quiet: bool,
}

impl Plan {
    fn of(args: &HubArgs) -> Result<Self, HubBenchError> {
        let n = args.virtual_channels;
        if n == 0 || n > MAX_VIRTUAL_CHANNELS {
            return Err(HubBenchError::Args(format!(
                "--virtual-channels must be between 1 and {MAX_VIRTUAL_CHANNELS}"
            )));
        }
        let concurrency = match args.concurrency {
            None => n.min(100),
            Some(c) if c == 0 || c > MAX_CONCURRENCY => {
                return Err(HubBenchError::Args(format!("--concurrency must be between 1 and {MAX_CONCURRENCY}")));
            }
            // More in flight than there are channels is the same as all of them.
            Some(c) => c.min(n),
        };
        Ok(Self { virtual_channels: n, concurrency, keep: args.keep, quiet: args.json })
    }

    /// A progress line on stderr (not with `--json`).
    fn say(&self, text: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", text.as_ref());
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
struct Figures {
    elapsed: Duration,
    fund_latencies: Vec<Duration>,
    floor: Duration,
}

/// The `q` quantile (0..=1) of `sorted` by nearest rank; zero for no samples.
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds, rounded to the microsecond.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn report(plan: &Plan, figures: &Figures) -> Value {
    let n = plan.virtual_channels as f64;
    let secs = figures.elapsed.as_secs_f64().max(1e-9);
    let mut sorted = figures.fund_latencies.clone();
    sorted.sort();
    let (p50, p99) = (quantile(&sorted, 0.50), quantile(&sorted, 0.99));
    let lifecycles_per_s = (n / secs * 10.0).round() / 10.0;
    // Each lifecycle adds a guarantee to, and removes it from, L(hub, alice) and L(hub, bob).
    let ledger_changes_per_s = (4.0 * n / secs * 10.0).round() / 10.0;
    let ratio = (secs / figures.floor.as_secs_f64().max(1e-9) * 1000.0).round() / 1000.0;
    if plan.quiet {
        return json!({
            "virtual_channels": plan.virtual_channels,
            "concurrency": plan.concurrency,
            "elapsed_ms": ms(figures.elapsed),
            "lifecycles_per_s": lifecycles_per_s,
            "ledger_changes_per_s": ledger_changes_per_s,
            "fund_p50_ms": ms(p50),
            "fund_p99_ms": ms(p99),
            "floor_ms": ms(figures.floor),
            "ratio": ratio,
            "durable": true,
            "processes": 3,
        });
    }
    Value::String(format!(
        "{} virtual channels alice → hub → bob, {} in flight, 3 nitro node processes (durable SQLite) and anvil\n\
         elapsed            {:.1} ms (first virtual_fund to the last close done at all three nodes)\n\
         lifecycles/s       {lifecycles_per_s} (fund, pay once, close)\n\
         ledger changes/s   {ledger_changes_per_s} (a guarantee added and removed in each of the two ledgers)\n\
         fund latency       p50 {:.1} ms, p99 {:.1} ms (virtual_fund request to done at alice)\n\
         floor              {:.1} ms (the virtual channels' signatures, recoveries and hashes, one thread)\n\
         elapsed / floor    {ratio}",
        plan.virtual_channels,
        plan.concurrency,
        ms(figures.elapsed),
        ms(p50),
        ms(p99),
        ms(figures.floor),
    ))
}

/// Runs `nitro bench hub`.
pub fn run(args: HubArgs) -> Result<Value, UsageError> {
    let plan = Plan::of(&args).map_err(|e| UsageError(e.to_string()))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| UsageError(format!("bench hub: cannot start the async runtime: {e}")))?;
    let figures = runtime.block_on(measure(plan)).map_err(|e| UsageError(e.to_string()))?;
    Ok(report(&plan, &figures))
}

/// Starts the cluster, runs the workload, stops the cluster, then times the floor.
async fn measure(plan: Plan) -> Result<Figures, HubBenchError> {
    plan.say("starting anvil, deploying the contracts, starting alice, hub and bob");
    let mut cluster = cluster::Cluster::start().await?;
    let virtual_payment_app = cluster.contracts.virtual_payment_app;
    let outcome = load::run(&cluster, &plan).await;
    let stopped = cluster.stop().await;
    let kept = cluster.finish(plan.keep || outcome.is_err() || stopped.is_err());
    if let Some(dir) = &kept {
        eprintln!("bench hub: kept {}", dir.display());
    }
    let run = outcome?;
    stopped?;
    plan.say("timing the floor");
    let floor = floor::HubFloor::new(virtual_payment_app, plan.virtual_channels)?.time()?;
    Ok(Figures { elapsed: run.elapsed, fund_latencies: run.fund_latencies, floor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(n: usize, c: Option<usize>) -> HubArgs {
        HubArgs { virtual_channels: n, concurrency: c, keep: false, json: true }
    }

    #[test]
    fn plans_refuse_bad_sizes_and_default_the_concurrency() {
        assert!(matches!(Plan::of(&args(0, None)), Err(HubBenchError::Args(_))));
        assert!(matches!(Plan::of(&args(MAX_VIRTUAL_CHANNELS + 1, None)), Err(HubBenchError::Args(_))));
        assert!(matches!(Plan::of(&args(5, Some(0))), Err(HubBenchError::Args(_))));
        assert!(matches!(Plan::of(&args(5, Some(MAX_CONCURRENCY + 1))), Err(HubBenchError::Args(_))));
        assert_eq!(Plan::of(&args(5, None)).map(|p| p.concurrency).ok(), Some(5));
        assert_eq!(Plan::of(&args(1000, None)).map(|p| p.concurrency).ok(), Some(100));
        assert_eq!(Plan::of(&args(5, Some(50))).map(|p| p.concurrency).ok(), Some(5));
    }

    #[test]
    fn quantiles_by_nearest_rank() {
        let d: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&d, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&d, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&d[..1], 0.99), Duration::from_millis(1));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }
}
