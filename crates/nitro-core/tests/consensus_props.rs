//! Random interleavings of proposals, countersignatures, rejections, drops, duplicates and
//! reorderings: money is conserved in every state, both sides converge once delivery
//! resumes, and the follower never signs two different states at the same turn.

use std::collections::HashMap;

use nitro_core::{
    destination_of, Address, Balance, FollowerChannel, Guarantee, LeaderChannel, LedgerMessage, LedgerOutcome,
    Proposal, SignedState, SigningKey, B256, U256, U48,
};
use proptest::prelude::*;

fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b).unwrap()
}

#[derive(Clone, Debug)]
enum Op {
    Add { target: u8, amount: u64, leader_is_left: bool, left_deposit: u64 },
    Remove { target: u8, left_amount: u64 },
    DeliverToFollower(usize),
    DeliverToLeader(usize),
    DropToFollower(usize),
    DropToLeader(usize),
    DuplicateToFollower(usize),
    Countersign,
    Reject,
    Resend,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (1u8..12, 1u64..40, any::<bool>(), 0u64..40).prop_map(|(target, amount, leader_is_left, d)| Op::Add {
            target, amount, leader_is_left, left_deposit: d.min(amount)
        }),
        2 => (1u8..12, 0u64..40).prop_map(|(target, left_amount)| Op::Remove { target, left_amount }),
        4 => any::<usize>().prop_map(Op::DeliverToFollower),
        3 => any::<usize>().prop_map(Op::DeliverToLeader),
        1 => any::<usize>().prop_map(Op::DropToFollower),
        1 => any::<usize>().prop_map(Op::DropToLeader),
        1 => any::<usize>().prop_map(Op::DuplicateToFollower),
        2 => Just(Op::Countersign),
        1 => Just(Op::Reject),
        1 => Just(Op::Resend),
    ]
}

struct World {
    leader: LeaderChannel,
    follower: FollowerChannel,
    to_follower: Vec<LedgerMessage>,
    to_leader: Vec<LedgerMessage>,
    total: U256,
    /// Every state the follower signed, by turn.
    follower_signed: HashMap<U48, B256>,
}

impl World {
    fn new() -> Self {
        let fixed = nitro_core::FixedPart {
            participants: vec![key(1).address(), key(2).address()],
            channel_nonce: 1,
            app_definition: Address::repeat_byte(0xca),
            challenge_duration: U48::from(60),
        };
        let outcome = LedgerOutcome::new(
            Address::ZERO,
            Balance { destination: destination_of(key(1).address()), amount: U256::from(200) },
            Balance { destination: destination_of(key(2).address()), amount: U256::from(200) },
        )
        .unwrap();
        let mut s = SignedState::new(outcome.to_state(&fixed, U48::from(1)));
        s.sign(&key(1)).unwrap();
        s.sign(&key(2)).unwrap();
        Self {
            leader: LeaderChannel::new(key(1), &s).unwrap(),
            follower: FollowerChannel::new(key(2), &s).unwrap().with_reorder_capacity(16),
            to_follower: vec![],
            to_leader: vec![],
            total: U256::from(400),
            follower_signed: HashMap::new(),
        }
    }

    fn record_follower_messages(&mut self, messages: Vec<LedgerMessage>) {
        for m in messages {
            if let LedgerMessage::Countersignature(c) = &m {
                let hash = self.follower.consensus_state().hash();
                if c.turn_num == self.follower.consensus_turn() {
                    let previous = self.follower_signed.insert(c.turn_num, hash);
                    assert!(previous.is_none_or(|p| p == hash), "follower signed two states at turn {}", c.turn_num);
                }
            }
            self.to_leader.push(m);
        }
    }

    fn apply(&mut self, op: &Op) {
        let l = destination_of(key(1).address());
        let f = destination_of(key(2).address());
        match *op {
            Op::Add { target, amount, leader_is_left, left_deposit } => {
                let (left, right) = if leader_is_left { (l, f) } else { (f, l) };
                let g = Guarantee::new(B256::repeat_byte(target), U256::from(amount), left, right).unwrap();
                if let Ok(step) = self.leader.propose(Proposal::Add {
                    guarantee: g,
                    left_deposit: U256::from(left_deposit),
                    asset: nitro_core::Address::ZERO,
                }) {
                    self.to_follower.extend(step.messages);
                }
            }
            Op::Remove { target, left_amount } => {
                let p = Proposal::Remove { target: B256::repeat_byte(target), left_amount: U256::from(left_amount) };
                if let Ok(step) = self.leader.propose(p) {
                    self.to_follower.extend(step.messages);
                }
            }
            Op::DeliverToFollower(i) if !self.to_follower.is_empty() => {
                let m = self.to_follower.remove(i % self.to_follower.len());
                if let Ok(step) = self.follower.receive(&m) {
                    self.record_follower_messages(step.messages);
                }
            }
            Op::DeliverToLeader(i) if !self.to_leader.is_empty() => {
                let m = self.to_leader.remove(i % self.to_leader.len());
                if let Ok(step) = self.leader.receive(&m) {
                    self.to_follower.extend(step.messages);
                }
            }
            Op::DropToFollower(i) if !self.to_follower.is_empty() => {
                self.to_follower.remove(i % self.to_follower.len());
            }
            Op::DropToLeader(i) if !self.to_leader.is_empty() => {
                self.to_leader.remove(i % self.to_leader.len());
            }
            Op::DuplicateToFollower(i) if !self.to_follower.is_empty() => {
                let m = self.to_follower[i % self.to_follower.len()].clone();
                self.to_follower.push(m);
            }
            Op::Countersign => {
                if let Ok(step) = self.follower.countersign_all() {
                    self.record_follower_messages(step.messages);
                }
            }
            Op::Reject => {
                if let Ok(step) = self.follower.reject_next("policy") {
                    self.record_follower_messages(step.messages);
                }
            }
            Op::Resend => self.to_follower.extend(self.leader.resend()),
            _ => {}
        }
        self.check_conservation();
    }

    fn check_conservation(&self) {
        for o in [
            self.leader.consensus_outcome(),
            self.leader.latest_outcome(),
            self.follower.consensus_outcome(),
            self.follower.latest_outcome(),
        ] {
            assert_eq!(o.total(), Some(self.total), "money is conserved");
        }
    }

    /// Reliable, in-order delivery with the follower approving everything.
    fn heal(&mut self) {
        self.to_follower.clear();
        self.to_leader.clear();
        for _ in 0..10 {
            if self.leader.queue().is_empty() {
                break;
            }
            for m in self.leader.resend() {
                if let Ok(step) = self.follower.receive(&m) {
                    self.record_follower_messages(step.messages);
                }
            }
            if let Ok(step) = self.follower.countersign_all() {
                self.record_follower_messages(step.messages);
            }
            for m in std::mem::take(&mut self.to_leader) {
                let step = self.leader.receive(&m).unwrap_or_default();
                self.to_follower.extend(step.messages);
            }
            self.to_follower.clear();
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_interleavings_conserve_money_and_converge(ops in prop::collection::vec(op(), 1..120)) {
        let mut w = World::new();
        for op in &ops {
            w.apply(op);
        }
        w.heal();
        prop_assert!(w.leader.queue().is_empty(), "the leader's queue drains once delivery resumes");
        prop_assert_eq!(w.leader.consensus_turn(), w.follower.consensus_turn());
        prop_assert_eq!(w.leader.consensus_state(), w.follower.consensus_state());
        prop_assert_eq!(w.leader.consensus_outcome(), w.follower.latest_outcome());
        w.check_conservation();
    }

    #[test]
    fn applying_any_proposal_conserves_money(
        leader in 0u64..1000, follower in 0u64..1000,
        ops in prop::collection::vec((any::<bool>(), 1u8..6, 0u64..600, any::<bool>(), 0u64..600), 1..40),
    ) {
        let (l, f) = (B256::repeat_byte(1), B256::repeat_byte(2));
        let mut o = LedgerOutcome::new(
            Address::ZERO,
            Balance { destination: l, amount: U256::from(leader) },
            Balance { destination: f, amount: U256::from(follower) },
        ).unwrap();
        let total = o.total();
        for (add, target, amount, leader_left, x) in ops {
            let p = if add {
                let (left, right) = if leader_left { (l, f) } else { (f, l) };
                match Guarantee::new(B256::repeat_byte(target), U256::from(amount), left, right) {
                    Ok(guarantee) => Proposal::Add { guarantee, left_deposit: U256::from(x), asset: nitro_core::Address::ZERO },
                    Err(_) => continue,
                }
            } else {
                Proposal::Remove { target: B256::repeat_byte(target), left_amount: U256::from(x) }
            };
            let before = o.clone();
            if o.apply(&p).is_err() {
                prop_assert_eq!(&o, &before);
            }
            prop_assert_eq!(o.total(), total);
        }
    }
}
