//! `nitro`: protocol tools for Nitro ledger channels (like `cast`, for Nitro), benchmarks,
//! the demo, the node and the deployment of its contracts.

mod bench;
mod bench_hub;
mod demo;
mod deploy;
mod node;
mod simulate;
mod tools;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Nitro protocol ledger channels: tools, benchmarks, demo and node.
#[derive(Parser)]
#[command(name = "nitro", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hash, sign and recover signers of channel states.
    #[command(subcommand)]
    State(tools::StateCommand),
    /// Run a node: ledgers and virtual channels with peers, a JSON-RPC API, a SQLite store.
    Node(node::NodeArgs),
    /// Call a running node's JSON-RPC API.
    Rpc(node::RpcArgs),
    /// Deploy the NitroAdjudicator, ConsensusApp and VirtualPaymentApp to a chain and print
    /// their addresses (a TOML snippet for a node's configuration, then JSON on the last line).
    Deploy(deploy::DeployArgs),
    /// Run the seeded network simulation (loss, duplication, reordering, restarts) over seeds.
    Simulate(simulate::SimulateArgs),
    /// Run the demo.
    Demo(demo::DemoArgs),
    /// Measure the ledger, or three nodes and a hub, against their cryptographic floor.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Compute the channel id of a fixed part (or of a full state).
    ChannelId {
        /// JSON file with the fixed part, or `-` for stdin.
        file: String,
    },
}

/// A failure the user caused (bad input): exit status 2, one line on stderr.
#[derive(Debug)]
pub struct UsageError(pub String);

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version.
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("{}", first.trim());
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::State(cmd) => tools::run_state(cmd),
        Command::ChannelId { file } => tools::channel_id(&file),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Demo(args) => demo::run(args),
        Command::Simulate(args) => simulate::run(args),
        Command::Node(args) => node::run_node(args),
        Command::Rpc(args) => node::run_rpc(args),
        Command::Deploy(args) => deploy::run(args),
    };
    match result {
        Ok(serde_json::Value::String(text)) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        Ok(output) => {
            println!("{output}");
            ExitCode::SUCCESS
        }
        Err(UsageError(message)) => {
            eprintln!("error: {}", message.replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
