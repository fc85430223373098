//! A follower fed fuzzed proposals (well or badly signed, at any turn, or arbitrary JSON)
//! interleaved with countersigning, rejecting and policy decisions. After every operation
//! money is conserved in its latest and consensus outcomes, a refused operation leaves the
//! channel unchanged, and at the end its own events replay to the same channel.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nitro_core::{Approval, FollowerChannel, LedgerMessage, Proposal, SignedProposal, SignedState, U256, U48};
use nitro_fuzz::{agreed_credits, credits, follower_key, forge, initial_outcome, initial_state, sum, Reader};

struct Fixture {
    initial: SignedState,
    follower: FollowerChannel,
    total: U256,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let initial = initial_state();
        let follower = FollowerChannel::new(follower_key(), &initial).unwrap().with_reorder_capacity(8);
        Fixture { initial, follower, total: sum(&initial_outcome()) }
    })
}

fuzz_target!(|data: &[u8]| {
    let fx = fixture();
    let mut follower = fx.follower.clone();
    let id = follower.channel_id();
    let mut r = Reader::new(data);
    let mut events = Vec::new();
    for _ in 0..64 {
        if r.is_empty() {
            break;
        }
        let before = follower.clone();
        let result = match r.u8() % 10 {
            0..=3 => {
                let sp = forge::signed_proposal(
                    &mut r,
                    id,
                    follower.latest_outcome(),
                    follower.consensus_turn(),
                    follower.latest_turn(),
                );
                follower.receive_proposal(&sp)
            }
            4 => {
                let bytes = r.chunk();
                if let Ok(m) = serde_json::from_slice::<LedgerMessage>(bytes) {
                    follower.receive(&m)
                } else if let Ok(sp) = serde_json::from_slice::<SignedProposal>(bytes) {
                    follower.receive_proposal(&sp)
                } else {
                    continue;
                }
            }
            5 => follower.countersign_all(),
            6 => {
                let turn = forge::turn(&mut r, follower.consensus_turn(), follower.latest_turn());
                follower.countersign_through(turn)
            }
            7 => {
                let expected = match follower.pending().next() {
                    Some(head) if r.u8() % 4 != 0 && !head.proposals.is_empty() => head.proposals[0],
                    _ => forge::proposal(&mut r),
                };
                follower.countersign_next(&expected)
            }
            8 => {
                let reason = String::from_utf8_lossy(r.chunk()).into_owned();
                follower.reject_next(&reason)
            }
            _ => {
                let decisions = r.chunk();
                let mut i = 0;
                let mut policy = |_: &Proposal| {
                    let d = decisions.get(i).copied().unwrap_or(0);
                    i += 1;
                    match d % 4 {
                        0 | 1 => Approval::Approve,
                        2 => Approval::Reject(format!("no {d}")),
                        _ => Approval::Defer,
                    }
                };
                Ok(follower.decide(&mut policy))
            }
        };
        match result {
            Ok(step) => events.extend(step.events),
            Err(e) => assert!(follower == before, "refused ({e}) but changed the channel"),
        }
        // Money is conserved: only a credited top-up (money deposited on chain) adds to it.
        let agreed = agreed_credits(&events);
        let queued = credits(follower.pending().flat_map(|p| &p.proposals));
        assert_eq!(sum(follower.consensus_outcome()), fx.total + agreed, "money is conserved (consensus)");
        assert_eq!(sum(follower.latest_outcome()), fx.total + agreed + queued, "money is conserved (latest)");
        assert!(follower.consensus_turn() <= follower.latest_turn());
        assert!(follower.consensus_turn() >= U48::from(1));
    }
    let replayed = FollowerChannel::replay(follower_key(), &fx.initial, &events).expect("the follower's events replay");
    assert!(replayed == follower, "replaying the events gives the same channel");
});
