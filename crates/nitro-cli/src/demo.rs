//! `nitro demo`: a guided run of a ledger channel.

use clap::Args;
use nitro_core::{
    destination_of, Address, Balance, FixedPart, FollowerChannel, LeaderChannel, LedgerMessage, LedgerOutcome,
    SignedState, SigningKey, B256, U256, U48,
};
use serde_json::{json, Value};

use crate::UsageError;

/// Options of `nitro demo`.
#[derive(Args)]
pub struct DemoArgs {
    /// Number of guarantees to lock and release.
    #[arg(long, default_value_t = 10)]
    virtual_channels: usize,
    /// End with one JSON object summarizing the run.
    #[arg(long)]
    json: bool,
}

fn fail(e: impl std::fmt::Display) -> UsageError {
    UsageError(e.to_string())
}

/// Runs the demo: a funded ledger between the leader and the follower locks and releases one
/// guarantee per virtual channel, every state signed by both.
pub fn run(args: DemoArgs) -> Result<Value, UsageError> {
    let leader_key =
        SigningKey::from_hex("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80").map_err(fail)?;
    let follower_key =
        SigningKey::from_hex("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d").map_err(fail)?;
    let (l, f) = (destination_of(leader_key.address()), destination_of(follower_key.address()));
    let fixed = FixedPart {
        participants: vec![leader_key.address(), follower_key.address()],
        channel_nonce: 1,
        app_definition: Address::ZERO,
        challenge_duration: U48::from(86_400),
    };
    let funds = U256::from(1_000_000u64);
    let outcome = LedgerOutcome::new(
        Address::ZERO,
        Balance { destination: l, amount: funds },
        Balance { destination: f, amount: funds },
    )
    .map_err(fail)?;
    let mut initial = SignedState::new(outcome.to_state(&fixed, U48::from(1)));
    initial.sign(&leader_key).map_err(fail)?;
    initial.sign(&follower_key).map_err(fail)?;
    let mut leader = LeaderChannel::new(leader_key, &initial).map_err(fail)?;
    let mut follower = FollowerChannel::new(follower_key, &initial).map_err(fail)?;
    let say = |s: String| {
        if !args.json {
            println!("{s}");
        }
    };
    say(format!("ledger {} funded with {funds} each, turn 1", leader.channel_id()));
    let (mut added, mut removed) = (0, 0);
    for remove in [false, true] {
        for i in 0..args.virtual_channels {
            let target = B256::from(U256::from(i + 1));
            let step = if remove {
                leader.remove_guarantee(target, U256::from(60)).map_err(fail)?
            } else {
                leader.add_guarantee(target, U256::from(100), l, f, U256::from(50)).map_err(fail)?
            };
            for m in &step.messages {
                let _ = follower.receive(m).map_err(fail)?;
            }
            let LedgerMessage::Proposal(sp) = &step.messages[0] else { return Err(fail("expected a proposal")) };
            let reply = follower.countersign_next(&sp.proposal).map_err(fail)?;
            for m in &reply.messages {
                let _ = leader.receive(m).map_err(fail)?;
            }
            if remove {
                removed += 1;
            } else {
                added += 1;
            }
            let o = leader.consensus_outcome();
            say(format!(
                "turn {:>3}: {} guarantee {target:.10}…  leader {} follower {} locked {}",
                leader.consensus_turn(),
                if remove { "released" } else { "locked  " },
                o.leader().amount,
                o.follower().amount,
                o.guarantees().len()
            ));
        }
    }
    let o = leader.consensus_outcome();
    let summary = json!({
        "ledgers_funded": 1,
        "virtual_channels": args.virtual_channels,
        "guarantees_added": added,
        "guarantees_removed": removed,
        "final_turn": leader.consensus_turn().to::<u64>(),
        "leader_balance": o.leader().amount.to_string(),
        "follower_balance": o.follower().amount.to_string(),
        "consensus_state_hash": leader.consensus_state().hash().to_string(),
    });
    if args.json {
        Ok(summary)
    } else {
        Ok(Value::String("done: every state above is signed by both parties".into()))
    }
}
