//! The seed's example: a leader adds a guarantee of 50 for a virtual channel, the follower
//! countersigns, and both hold the same consensus state with the guarantee locked.
//!
//! Run with `cargo run -p nitro-core --example consensus_channel`.

use nitro_core::{
    destination_of, Address, Balance, FixedPart, FollowerChannel, LeaderChannel, LedgerMessage, LedgerOutcome,
    SignedState, SigningKey, B256, U256, U48,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Two parties (the hardhat/anvil development keys #0 and #1).
    let leader_key = SigningKey::from_hex("0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80")?;
    let follower_key = SigningKey::from_hex("0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d")?;
    let (leader_dest, follower_dest) = (destination_of(leader_key.address()), destination_of(follower_key.address()));

    // A funded ledger: 100 each, signed by both at turn 1 (what DirectFund produces).
    let fixed = FixedPart {
        participants: vec![leader_key.address(), follower_key.address()],
        channel_nonce: 1,
        app_definition: "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512".parse()?, // ConsensusApp
        challenge_duration: U48::from(86_400),
    };
    let outcome = LedgerOutcome::new(
        Address::ZERO,
        Balance { destination: leader_dest, amount: U256::from(100) },
        Balance { destination: follower_dest, amount: U256::from(100) },
    )?;
    let mut ledger = SignedState::new(outcome.to_state(&fixed, U48::from(1)));
    ledger.sign(&leader_key)?;
    ledger.sign(&follower_key)?;

    let mut leader = LeaderChannel::new(leader_key, &ledger)?;
    let mut follower = FollowerChannel::new(follower_key, &ledger)?;

    // Leader adds a guarantee of 50 for a virtual channel: 30 from the leader (left), 20 from the follower.
    let virtual_id = B256::repeat_byte(0x5e);
    let step = leader.add_guarantee(virtual_id, U256::from(50), leader_dest, follower_dest, U256::from(30))?;
    println!("leader proposes: {}", serde_json::to_string(&step.messages[0])?);

    // "Send" to the follower, which verifies and countersigns exactly what it expects.
    let LedgerMessage::Proposal(proposal) = &step.messages[0] else { unreachable!() };
    let _ = follower.receive_proposal(proposal)?;
    let countersigned = follower.countersign_next(&proposal.proposals[0])?;
    println!("follower countersigns: {}", serde_json::to_string(&countersigned.messages[0])?);

    // Back to the leader: consensus advances and the guarantee is locked on both sides.
    let step = leader.receive(&countersigned.messages[0])?;
    for event in &step.events {
        println!("leader event: {}", serde_json::to_string(event)?);
    }
    assert!(leader.is_locked(&virtual_id) && follower.is_locked(&virtual_id));
    assert_eq!(leader.consensus_state(), follower.consensus_state());
    let o = leader.consensus_outcome();
    println!(
        "consensus at turn {}: leader {} follower {} guarantee {} (state hash {})",
        leader.consensus_turn(),
        o.leader().amount,
        o.follower().amount,
        o.guarantee(&virtual_id).map(|g| g.amount()).unwrap_or_default(),
        leader.consensus_state().hash()
    );
    Ok(())
}
