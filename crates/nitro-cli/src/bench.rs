//! `nitro bench`: the dispatcher. `nitro bench ledger` (here): a leader and a follower in one
//! process, against the floor measured in the same run; `nitro bench hub` (`bench_hub`): three
//! node processes and anvil, virtual channels through the hub, against their floor.

use std::time::Duration;

use clap::{Args, Subcommand};
use nitro_core::bench::LedgerWorkload;
use serde_json::{json, Value};

use crate::UsageError;

/// `nitro bench` subcommands.
#[derive(Subcommand)]
pub enum BenchCommand {
    /// N add proposals then N removes, each countersigned and acknowledged, versus the floor.
    Ledger(LedgerArgs),
    /// N virtual channels funded, paid and closed through a hub: three `nitro node` processes
    /// and anvil on loopback, durable, versus the floor of the virtual channels' cryptography.
    Hub(crate::bench_hub::HubArgs),
}

/// Options of `nitro bench ledger`.
#[derive(Args)]
pub struct LedgerArgs {
    /// Add proposals (as many removes follow).
    #[arg(long, default_value_t = 100)]
    proposals: usize,
    /// Changes per state (ADR-0018): 1 proposes each change on its own, K > 1 puts K changes
    /// into each signed state (at most 256).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Guarantees the ledger holds throughout (each makes every state 256 bytes longer).
    #[arg(long, default_value_t = 0)]
    standing_guarantees: usize,
    /// Repetitions; the fastest of each measurement is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// Runs a `nitro bench` subcommand.
pub fn run(cmd: BenchCommand) -> Result<Value, UsageError> {
    match cmd {
        BenchCommand::Ledger(args) => run_ledger(args),
        BenchCommand::Hub(args) => crate::bench_hub::run(args),
    }
}

/// Runs `nitro bench ledger`.
fn run_ledger(args: LedgerArgs) -> Result<Value, UsageError> {
    if args.proposals == 0 || args.repeat == 0 {
        return Err(UsageError("--proposals and --repeat must be at least 1".into()));
    }
    if args.proposals > 1_000_000 || args.standing_guarantees > 1_000_000 {
        return Err(UsageError("--proposals and --standing-guarantees are limited to 1,000,000".into()));
    }
    if args.batch == 0 || args.batch > nitro_core::MAX_BATCH {
        return Err(UsageError(format!("--batch must be between 1 and {}", nitro_core::MAX_BATCH)));
    }
    let workload = LedgerWorkload::new(args.proposals, args.standing_guarantees);
    let states = workload.batched_states(args.batch);
    let (mut elapsed, mut floor) = (Duration::MAX, Duration::MAX);
    for _ in 0..args.repeat {
        floor = floor.min(workload.run_floor(&states));
        let run = if args.batch == 1 { workload.run_channels().0 } else { workload.run_batched(args.batch).0 };
        elapsed = elapsed.min(run);
    }
    let changes = workload.rounds();
    let changes_per_s = (changes as f64 / elapsed.as_secs_f64()).round();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let ratio = (elapsed.as_secs_f64() / floor.as_secs_f64() * 1000.0).round() / 1000.0;
    if args.json {
        Ok(json!({
            "proposals": args.proposals,
            "batch": args.batch,
            "states": states.len(),
            "changes": changes,
            "changes_per_s": changes_per_s,
            "standing_guarantees": args.standing_guarantees,
            "elapsed_ms": ms(elapsed),
            "floor_ms": ms(floor),
            "ratio": ratio,
        }))
    } else {
        let rounds = states.len() as f64;
        Ok(Value::String(format!(
            "{} adds + {} removes in batches of {} ({} states) over {} standing guarantees: {:.1} ms \
             ({:.1} µs/state, {changes_per_s} changes/s); floor {:.1} ms ({:.1} µs/state); ratio {:.3}",
            args.proposals,
            args.proposals,
            args.batch,
            states.len(),
            args.standing_guarantees,
            ms(elapsed),
            elapsed.as_secs_f64() * 1e6 / rounds,
            ms(floor),
            floor.as_secs_f64() * 1e6 / rounds,
            ratio
        )))
    }
}
