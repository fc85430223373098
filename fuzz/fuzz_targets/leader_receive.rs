//! A leader fed fuzzed proposals to make and fuzzed countersignatures and rejections (from the
//! real follower key or others, at any turn, or arbitrary JSON), interleaved with the answers
//! of an honest follower. After every operation money is conserved (only a credited top-up adds
//! to it), a refused operation
//! leaves the channel unchanged, and at the end its own events replay to the same channel.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nitro_core::{FollowerChannel, LeaderChannel, LedgerMessage, SignedState, Step, U256};
use nitro_fuzz::{
    agreed_credits, credits, follower_key, forge, initial_outcome, initial_state, leader_key, sum, Reader,
};

struct Fixture {
    initial: SignedState,
    leader: LeaderChannel,
    follower: FollowerChannel,
    total: U256,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let initial = initial_state();
        Fixture {
            leader: LeaderChannel::new(leader_key(), &initial).unwrap(),
            follower: FollowerChannel::new(follower_key(), &initial).unwrap(),
            initial,
            total: sum(&initial_outcome()),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let mut leader = fx.leader.clone();
    let mut follower = fx.follower.clone();
    let id = leader.channel_id();
    let mut r = Reader::new(data);
    let mut events = Vec::new();
    let mut signed_at = std::collections::HashMap::new();
    // Messages in flight, each way.
    let mut to_follower: Vec<LedgerMessage> = Vec::new();
    let mut to_leader: Vec<LedgerMessage> = Vec::new();
    for _ in 0..64 {
        if r.is_empty() {
            break;
        }
        let before = leader.clone();
        let result = match r.u8() % 10 {
            0 | 1 => leader.propose(forge::proposal(&mut r)),
            2 | 3 => {
                let c =
                    forge::countersignature(&mut r, id, leader.queue(), leader.consensus_turn(), leader.latest_turn());
                leader.receive_countersignature(&c)
            }
            4 => {
                let j = forge::rejection(&mut r, id, leader.queue(), leader.consensus_turn(), leader.latest_turn());
                leader.receive_rejection(&j)
            }
            5 => match serde_json::from_slice::<LedgerMessage>(r.chunk()) {
                Ok(m) => leader.receive(&m),
                Err(_) => continue,
            },
            6 => {
                // Deliver one message from the leader to the honest follower, or all (resent).
                let messages = match to_follower.is_empty() || r.u8() % 4 == 0 {
                    true => leader.resend(),
                    false => vec![to_follower.remove(usize::from(r.u8()) % to_follower.len())],
                };
                for m in messages {
                    let before = follower.clone();
                    match follower.receive(&m) {
                        Ok(step) => to_leader.extend(step.messages),
                        Err(_) => assert!(follower == before, "the follower refused but changed"),
                    }
                }
                continue;
            }
            7 => {
                // The honest follower decides on what it holds.
                let step = match r.u8() % 3 {
                    0 => follower.countersign_all(),
                    1 => follower.reject_next("fuzz"),
                    _ => follower.countersign_through(forge::turn(
                        &mut r,
                        follower.consensus_turn(),
                        follower.latest_turn(),
                    )),
                };
                if let Ok(step) = step {
                    to_leader.extend(step.messages);
                }
                continue;
            }
            _ => {
                // Deliver one of the follower's messages (maybe a stale or duplicate one).
                if to_leader.is_empty() {
                    continue;
                }
                let i = usize::from(r.u8()) % to_leader.len();
                let m = if r.u8() % 4 == 0 { to_leader[i].clone() } else { to_leader.remove(i) };
                leader.receive(&m)
            }
        };
        match result {
            Ok(Step { messages, events: e, signed }) => {
                for s in signed {
                    let before = signed_at.insert(s.turn_num, s.state_hash);
                    assert!(before.is_none_or(|h| h == s.state_hash), "two states signed at turn {}", s.turn_num);
                }
                to_follower.extend(messages);
                events.extend(e);
            }
            Err(e) => assert!(leader == before, "refused ({e}) but changed the channel"),
        }
        // Money is conserved: only a credited top-up (money deposited on chain) adds to it.
        let agreed = agreed_credits(&events);
        let queued = credits(leader.queue().iter().flat_map(|q| &q.signed.proposals));
        assert_eq!(sum(leader.consensus_outcome()), fx.total + agreed, "money is conserved (consensus)");
        assert_eq!(sum(leader.latest_outcome()), fx.total + agreed + queued, "money is conserved (latest)");
        let follower_queued = credits(follower.pending().flat_map(|p| &p.proposals));
        assert_eq!(
            sum(follower.latest_outcome()),
            sum(follower.consensus_outcome()) + follower_queued,
            "money is conserved (follower)"
        );
        assert!(leader.consensus_turn() <= leader.latest_turn());
    }
    let replayed = LeaderChannel::replay(leader_key(), &fx.initial, &events).expect("the leader's events replay");
    assert!(replayed == leader, "replaying the events gives the same channel");
});
