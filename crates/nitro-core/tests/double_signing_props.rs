//! "Never two different states signed by us at one turn": a malicious counterparty that keeps
//! every signature it ever received tries, over random schedules of proposals, rejections,
//! drops, duplicates, reorders, restarts (replays of the honest side's event log) and a close,
//! to hold our signatures on two different states at one turn — with its own signature on
//! both, that would be two fully signed states at one turn, and it could pick which one the
//! adjudicator enforces. It must never succeed.
//!
//! What the honest side signed is reconstructed independently, from the wire: every state
//! hash is recomputed from the messages and checked to recover to the honest key.

use std::collections::{BTreeMap, HashMap, HashSet};

use nitro_core::{
    destination_of, recover_signer, Address, Approval, Balance, ChannelId, Countersignature, FixedPart,
    FollowerChannel, Guarantee, LeaderChannel, LedgerEvent, LedgerMessage, LedgerOutcome, Proposal, Rejection,
    SignedProposal, SignedState, SigningKey, TurnNum, B256, U256, U48,
};
use proptest::prelude::*;

fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b).unwrap()
}

fn fixed() -> FixedPart {
    FixedPart {
        participants: vec![key(1).address(), key(2).address()],
        channel_nonce: 7,
        app_definition: Address::repeat_byte(0xca),
        challenge_duration: U48::from(60),
    }
}

fn initial() -> (SignedState, LedgerOutcome) {
    let outcome = LedgerOutcome::new(
        Address::ZERO,
        Balance { destination: destination_of(key(1).address()), amount: U256::from(100) },
        Balance { destination: destination_of(key(2).address()), amount: U256::from(100) },
    )
    .unwrap();
    let mut s = SignedState::new(outcome.to_state(&fixed(), U48::from(1)));
    s.sign(&key(1)).unwrap();
    s.sign(&key(2)).unwrap();
    (s, outcome)
}

fn proposal(target: u8, amount: u64, add: bool, leader_is_left: bool) -> Proposal {
    let (l, f) = (destination_of(key(1).address()), destination_of(key(2).address()));
    let (left, right) = if leader_is_left { (l, f) } else { (f, l) };
    if add {
        let guarantee = Guarantee::new(B256::repeat_byte(target), U256::from(amount.max(1)), left, right).unwrap();
        Proposal::Add { guarantee, left_deposit: U256::from(amount / 2), asset: nitro_core::Address::ZERO }
    } else {
        Proposal::Remove { target: B256::repeat_byte(target), left_amount: U256::from(amount / 3) }
    }
}

/// The final state a closing party signs at `turn` (what `DirectDefund` signs).
fn final_hash(outcome: &LedgerOutcome, turn: TurnNum) -> B256 {
    let mut state = outcome.to_state(&fixed(), turn);
    state.is_final = true;
    state.hash()
}

/// Every state a key signed, by turn, as an adversary holding the signatures sees it.
#[derive(Default)]
struct Signatures(BTreeMap<TurnNum, HashSet<B256>>);

impl Signatures {
    fn record(&mut self, signer: Address, turn: TurnNum, hash: B256, signature: &nitro_core::Signature) {
        assert_eq!(recover_signer(&hash, signature).unwrap(), signer, "a signature the adversary holds");
        let at_turn = self.0.entry(turn).or_default();
        at_turn.insert(hash);
        assert!(at_turn.len() == 1, "two different states signed at turn {turn}: {at_turn:?}");
    }
}

// ---------------------------------------------------------------------------------------
// A malicious follower against an honest leader.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum FollowerAttack {
    Propose {
        target: u8,
        amount: u64,
        add: bool,
        leader_is_left: bool,
    },
    /// Countersign the leader's state at the turn picked (any turn it ever signed).
    Countersign(usize),
    /// Refuse the leader's state at the turn picked.
    Reject(usize),
    /// Deliver (and keep for later replays) one of the adversary's messages.
    Deliver(usize),
    Drop(usize),
    Duplicate(usize),
    Resend,
    Restart,
    Close,
}

fn follower_attack() -> impl Strategy<Value = FollowerAttack> {
    prop_oneof![
        4 => (1u8..8, 1u64..30, any::<bool>(), any::<bool>()).prop_map(|(target, amount, add, leader_is_left)| {
            FollowerAttack::Propose { target, amount, add, leader_is_left }
        }),
        2 => any::<usize>().prop_map(FollowerAttack::Countersign),
        3 => any::<usize>().prop_map(FollowerAttack::Reject),
        4 => any::<usize>().prop_map(FollowerAttack::Deliver),
        1 => any::<usize>().prop_map(FollowerAttack::Drop),
        2 => any::<usize>().prop_map(FollowerAttack::Duplicate),
        1 => Just(FollowerAttack::Resend),
        2 => Just(FollowerAttack::Restart),
        1 => Just(FollowerAttack::Close),
    ]
}

struct HonestLeader {
    channel: LeaderChannel,
    log: Vec<LedgerEvent>,
    initial: SignedState,
    /// The adversary's view: every state of the leader's it learned from the wire.
    known: HashMap<TurnNum, (LedgerOutcome, B256)>,
    signed: Signatures,
    outbox: Vec<LedgerMessage>,
}

impl HonestLeader {
    fn observe(&mut self, step: nitro_core::Step) {
        self.log.extend(step.events);
        for m in step.messages {
            self.observe_message(&m);
        }
    }

    /// The adversary recomputes the state every proposal produces from the state it names.
    fn observe_message(&mut self, m: &LedgerMessage) {
        let LedgerMessage::Proposal(sp) = m else { return };
        let (base, _) = self.known.get(&sp.previous_turn).cloned().expect("the leader builds on states it sent");
        let mut outcome = base;
        for p in &sp.proposals {
            outcome.apply(p).expect("the leader proposes what applies");
        }
        let hash = outcome.state_hash(sp.channel_id, sp.turn_num);
        self.signed.record(key(1).address(), sp.turn_num, hash, &sp.signature);
        self.known.insert(sp.turn_num, (outcome, hash));
    }
}

fn run_malicious_follower(attacks: &[FollowerAttack]) {
    let (initial, outcome) = initial();
    let channel_id: ChannelId = initial.channel_id();
    let mut known = HashMap::new();
    known.insert(U48::from(1), (outcome, initial.hash()));
    let mut h = HonestLeader {
        channel: LeaderChannel::new(key(1), &initial).unwrap(),
        log: Vec::new(),
        initial,
        known,
        signed: Signatures::default(),
        outbox: Vec::new(),
    };
    let turns = |h: &HonestLeader| -> Vec<TurnNum> {
        let mut t: Vec<_> = h.known.keys().copied().collect();
        t.sort();
        t
    };
    for attack in attacks {
        match attack {
            FollowerAttack::Propose { target, amount, add, leader_is_left } => {
                if let Ok(step) = h.channel.propose(proposal(*target, *amount, *add, *leader_is_left)) {
                    h.observe(step);
                }
            }
            FollowerAttack::Countersign(i) => {
                let ts = turns(&h);
                let turn = ts[i % ts.len()];
                let (_, hash) = h.known[&turn];
                let c = Countersignature { channel_id, turn_num: turn, signature: key(2).sign(&hash) };
                h.outbox.push(LedgerMessage::Countersignature(c));
            }
            FollowerAttack::Reject(i) => {
                let ts = turns(&h);
                let turn = ts[i % ts.len()];
                let (_, hash) = h.known[&turn];
                let signature = key(2).sign(&Rejection::signing_hash(channel_id, turn, hash, &[]));
                let r = Rejection {
                    channel_id,
                    turn_num: turn,
                    state_hash: hash,
                    refused: vec![],
                    reason: "no".into(),
                    signature,
                };
                h.outbox.push(LedgerMessage::Rejection(r));
            }
            FollowerAttack::Deliver(i) if !h.outbox.is_empty() => {
                let m = h.outbox[i % h.outbox.len()].clone();
                if let Ok(step) = h.channel.receive(&m) {
                    h.observe(step);
                }
            }
            FollowerAttack::Drop(i) if !h.outbox.is_empty() => {
                let n = h.outbox.len();
                h.outbox.remove(i % n);
            }
            FollowerAttack::Duplicate(i) if !h.outbox.is_empty() => {
                let m = h.outbox[i % h.outbox.len()].clone();
                h.outbox.push(m);
            }
            FollowerAttack::Resend => {
                for m in h.channel.resend() {
                    h.observe_message(&m);
                }
            }
            FollowerAttack::Restart => {
                let rebuilt = LeaderChannel::replay(key(1), &h.initial, &h.log).expect("its own log replays");
                assert!(rebuilt == h.channel, "a restart rebuilds the same leader");
                h.channel = rebuilt;
            }
            FollowerAttack::Close if h.channel.closing().is_none() => {
                let turn = h.channel.highest_signed() + U48::from(1);
                let step = h.channel.reserve_final_turn(turn).unwrap();
                h.log.extend(step.events);
                // The leader signs the final state, as DirectDefund does.
                let hash = final_hash(h.channel.consensus_outcome(), turn);
                h.signed.record(key(1).address(), turn, hash, &key(1).sign(&hash));
                assert!(h.channel.propose(proposal(9, 1, true, true)).is_err(), "nothing proposed once closing");
            }
            _ => {}
        }
        let total = h.channel.latest_outcome().total();
        assert_eq!(total, Some(U256::from(200)), "money is conserved");
    }
}

// ---------------------------------------------------------------------------------------
// A malicious leader against an honest follower.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum LeaderAttack {
    /// Sign and send a proposal on a known state, at a turn some steps above it (possibly a
    /// turn already used for another state).
    Propose {
        base: usize,
        ahead: u8,
        target: u8,
        amount: u64,
        add: bool,
        leader_is_left: bool,
    },
    Deliver(usize),
    Duplicate(usize),
    Decide {
        approve: bool,
    },
    Restart,
    Close,
}

fn leader_attack() -> impl Strategy<Value = LeaderAttack> {
    prop_oneof![
        5 => (any::<usize>(), 1u8..4, 1u8..8, 1u64..30, any::<bool>(), any::<bool>()).prop_map(
            |(base, ahead, target, amount, add, leader_is_left)| LeaderAttack::Propose {
                base, ahead, target, amount, add, leader_is_left
            }
        ),
        5 => any::<usize>().prop_map(LeaderAttack::Deliver),
        2 => any::<usize>().prop_map(LeaderAttack::Duplicate),
        4 => any::<bool>().prop_map(|approve| LeaderAttack::Decide { approve }),
        2 => Just(LeaderAttack::Restart),
        1 => Just(LeaderAttack::Close),
    ]
}

fn run_malicious_leader(attacks: &[LeaderAttack]) {
    let (initial, outcome) = initial();
    let channel_id = initial.channel_id();
    let mut follower = FollowerChannel::new(key(2), &initial).unwrap().with_reorder_capacity(8);
    let mut log: Vec<LedgerEvent> = Vec::new();
    // Every state the adversary signed: turn → (hash → outcome).
    let mut states: BTreeMap<TurnNum, HashMap<B256, LedgerOutcome>> = BTreeMap::new();
    states.entry(U48::from(1)).or_default().insert(initial.hash(), outcome);
    let mut sent: Vec<SignedProposal> = Vec::new();
    let mut signed = Signatures::default();
    let observe = |step: nitro_core::Step,
                   log: &mut Vec<LedgerEvent>,
                   signed: &mut Signatures,
                   states: &BTreeMap<TurnNum, HashMap<B256, LedgerOutcome>>| {
        log.extend(step.events);
        for m in step.messages {
            if let LedgerMessage::Countersignature(c) = m {
                // Which of the adversary's states at that turn did the follower sign?
                let hashes: Vec<B256> =
                    states.get(&c.turn_num).map(|s| s.keys().copied().collect()).unwrap_or_default();
                let hash = hashes
                    .into_iter()
                    .find(|h| recover_signer(h, &c.signature).ok() == Some(key(2).address()))
                    .expect("a countersignature on a state the leader sent");
                signed.record(key(2).address(), c.turn_num, hash, &c.signature);
            }
        }
    };
    for attack in attacks {
        match *attack {
            LeaderAttack::Propose { base, ahead, target, amount, add, leader_is_left } => {
                let all: Vec<(TurnNum, LedgerOutcome)> =
                    states.iter().flat_map(|(t, s)| s.values().map(move |o| (*t, o.clone()))).collect();
                let (previous_turn, mut outcome) = all[base % all.len()].clone();
                let p = proposal(target, amount, add, leader_is_left);
                if outcome.apply(&p).is_err() {
                    continue;
                }
                let turn_num = previous_turn + U48::from(ahead);
                let hash = outcome.state_hash(channel_id, turn_num);
                states.entry(turn_num).or_default().insert(hash, outcome);
                sent.push(SignedProposal {
                    channel_id,
                    proposals: vec![p],
                    previous_turn,
                    turn_num,
                    signature: key(1).sign(&hash),
                });
            }
            LeaderAttack::Deliver(i) if !sent.is_empty() => {
                let sp = sent[i % sent.len()].clone();
                if let Ok(step) = follower.receive_proposal(&sp) {
                    observe(step, &mut log, &mut signed, &states);
                }
            }
            LeaderAttack::Duplicate(i) if !sent.is_empty() => {
                let sp = sent[i % sent.len()].clone();
                sent.push(sp);
            }
            LeaderAttack::Decide { approve } => {
                let mut policy = |_: &Proposal| if approve { Approval::Approve } else { Approval::Reject("no".into()) };
                let step = follower.decide(&mut policy);
                observe(step, &mut log, &mut signed, &states);
            }
            LeaderAttack::Restart => {
                let rebuilt = FollowerChannel::replay(key(2), &initial, &log).expect("its own log replays");
                assert!(rebuilt == follower, "a restart rebuilds the same follower");
                follower = rebuilt.with_reorder_capacity(8);
            }
            LeaderAttack::Close if follower.closing().is_none() && follower.pending().len() == 0 => {
                let turn = follower.highest_turn() + U48::from(1);
                let step = follower.reserve_final_turn(turn).unwrap();
                log.extend(step.events);
                let hash = final_hash(follower.consensus_outcome(), turn);
                signed.record(key(2).address(), turn, hash, &key(2).sign(&hash));
                assert!(follower.countersign_all().is_err(), "nothing countersigned once closing");
            }
            _ => {}
        }
        assert_eq!(follower.latest_outcome().total(), Some(U256::from(200)), "money is conserved");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn a_follower_keeping_every_signature_never_gets_two_leader_states_at_one_turn(
        attacks in prop::collection::vec(follower_attack(), 1..150)
    ) {
        run_malicious_follower(&attacks);
    }

    #[test]
    fn a_leader_keeping_every_signature_never_gets_two_follower_states_at_one_turn(
        attacks in prop::collection::vec(leader_attack(), 1..150)
    ) {
        run_malicious_leader(&attacks);
    }
}

/// The scenario the rule exists for, spelled out: the follower refuses turn k, the leader
/// re-proposes at fresh turns; 100 refusals later a retransmitted copy of the first refused
/// proposal is still answered with a refusal, never made pending again.
#[test]
fn refused_turns_stay_refused_after_any_number_of_rejections() {
    let (initial, outcome) = initial();
    let mut leader = LeaderChannel::new(key(1), &initial).unwrap();
    let mut follower = FollowerChannel::new(key(2), &initial).unwrap();
    let mut known = HashMap::new();
    known.insert(U48::from(1), (outcome, initial.hash()));
    let mut first_refused = None;
    let mut signed = Signatures::default();
    for round in 0..100u64 {
        let step = leader.propose(proposal((round % 7) as u8 + 1, 2 + round % 5, true, true)).unwrap();
        let LedgerMessage::Proposal(sp) = step.messages[0].clone() else { panic!() };
        first_refused.get_or_insert(sp.clone());
        for s in &step.signed {
            assert_eq!(s.turn_num, sp.turn_num);
            signed.record(key(1).address(), s.turn_num, s.state_hash, &sp.signature);
        }
        assert!(follower.receive_proposal(&sp).unwrap().messages.is_empty());
        let rejected = follower.reject_next("no").unwrap();
        let step = leader.receive(&rejected.messages[0]).unwrap();
        assert!(step.messages.is_empty());
        assert!(leader.queue().is_empty() && follower.pending().len() == 0);
    }
    let again = follower.receive_proposal(&first_refused.unwrap()).unwrap();
    assert!(matches!(again.messages.as_slice(), [LedgerMessage::Rejection(_)]));
    assert_eq!(follower.pending().len(), 0, "a refused turn never becomes pending again");
    assert!(follower.countersign_all().is_err());
    assert_eq!(leader.highest_signed(), U48::from(101));
}

/// A corrupt log is a typed error and signs nothing: forged state hashes, forged signatures,
/// a countersignature that does not verify, a rejection of someone else's.
#[test]
fn replay_refuses_a_forged_log() {
    let (initial, _) = initial();
    let mut leader = LeaderChannel::new(key(1), &initial).unwrap();
    let mut follower = FollowerChannel::new(key(2), &initial).unwrap();
    let mut log = Vec::new();
    let step = leader.propose(proposal(3, 10, true, true)).unwrap();
    let LedgerMessage::Proposal(sp) = step.messages[0].clone() else { panic!() };
    let fstep = follower.receive_proposal(&sp).unwrap();
    log.extend(fstep.events);
    let fstep = follower.countersign_all().unwrap();
    log.extend(fstep.events);
    assert!(FollowerChannel::replay(key(2), &initial, &log).unwrap() == follower);

    let forge = |f: &dyn Fn(&mut LedgerEvent)| {
        let mut bad = log.clone();
        for e in bad.iter_mut() {
            f(e);
        }
        bad
    };
    let cases: Vec<Vec<LedgerEvent>> = vec![
        forge(&|e| {
            if let LedgerEvent::ProposalQueued { state_hash, .. } = e {
                *state_hash = B256::repeat_byte(0x66);
            }
        }),
        forge(&|e| {
            if let LedgerEvent::ProposalQueued { signed, .. } = e {
                signed.signature = key(9).sign(&B256::ZERO);
            }
        }),
        forge(&|e| {
            if let LedgerEvent::ConsensusAdvanced { countersignature, .. } = e {
                *countersignature = key(9).sign(&B256::ZERO);
            }
        }),
        forge(&|e| {
            if let LedgerEvent::ConsensusAdvanced { state_hash, .. } = e {
                *state_hash = B256::repeat_byte(0x77);
            }
        }),
        forge(&|e| {
            if let LedgerEvent::ProposalQueued { signed, .. } = e {
                signed.proposals[0] = proposal(4, 10, true, true);
            }
        }),
    ];
    for bad in cases {
        for result in [
            FollowerChannel::replay(key(2), &initial, &bad).map(|_| ()),
            LeaderChannel::replay(key(1), &initial, &bad).map(|_| ()),
        ] {
            assert!(matches!(result, Err(nitro_core::ChannelError::Replay(_))), "{result:?}");
        }
    }
}
