//! `nitro simulate`: the seeded network simulation over many seeds.

use std::time::Instant;

use clap::Args;
use nitro_node::sim::{simulate, SimConfig};
use serde_json::{json, Value};

use crate::UsageError;

/// Options of `nitro simulate`.
#[derive(Args)]
pub struct SimulateArgs {
    /// First seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How many consecutive seeds to run.
    #[arg(long, default_value_t = 1)]
    seeds: u64,
    /// Virtual channels per run.
    #[arg(long, default_value_t = 10)]
    virtual_channels: usize,
    /// Steps of each phase with faults on.
    #[arg(long, default_value_t = 2000)]
    fault_steps: u64,
}

/// Runs the seeds; the first failure is an error naming its seed (rerun with `--seed S`).
pub fn run(args: SimulateArgs) -> Result<Value, UsageError> {
    let start = Instant::now();
    let (mut delivered, mut dropped, mut duplicated, mut restarts, mut signed) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut reconnections, mut transactions, mut reverted, mut overflowed) = (0u64, 0u64, 0u64, 0u64);
    for seed in args.seed..args.seed.saturating_add(args.seeds) {
        let config = SimConfig { fault_steps: args.fault_steps, ..SimConfig::harsh(seed, args.virtual_channels) };
        let report = simulate(config).map_err(|e| {
            UsageError(format!(
                "{e} (replay: nitro simulate --seed {seed} --virtual-channels {} --fault-steps {})",
                args.virtual_channels, args.fault_steps
            ))
        })?;
        delivered += report.delivered;
        dropped += report.dropped;
        duplicated += report.duplicated;
        restarts += report.restarts;
        signed += report.signed_states;
        reconnections += report.reconnections;
        transactions += report.transactions;
        reverted += report.reverted;
        overflowed += report.overflowed;
    }
    Ok(json!({
        "seeds": args.seeds,
        "first_seed": args.seed,
        "virtual_channels": args.virtual_channels,
        "all_completed": true,
        "messages_delivered": delivered,
        "messages_dropped": dropped,
        "messages_dropped_from_full_queues": overflowed,
        "messages_duplicated": duplicated,
        "restarts": restarts,
        "reconnections": reconnections,
        "transactions": transactions,
        "transactions_reverted": reverted,
        "states_signed": signed,
        "double_signed": 0,
        "elapsed_s": (start.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    }))
}
