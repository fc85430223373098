//! JSON round trips and rejections, and properties of encoding and signatures.

use nitro_core::{
    Address, Allocation, AllocationType, AssetMetadata, Bytes, Exit, FixedPart, SignedState, SignedStateError,
    SigningKey, SingleAssetExit, State, VariablePart, B256, U256, U48,
};
use proptest::prelude::*;
use serde_json::json;

fn sample_state() -> serde_json::Value {
    json!({
        "participants": ["0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266", "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"],
        "channelNonce": "0x2a",
        "appDefinition": "0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512",
        "challengeDuration": "0x3c",
        "outcome": [{
            "asset": "0x0000000000000000000000000000000000000000",
            "assetMetadata": {"assetType": "0x0", "metadata": "0x"},
            "allocations": [{
                "destination": "0x000000000000000000000000f39fd6e51aad88f6f4ce6ab8827279cfffb92266",
                "amount": "0x64", "allocationType": "0x0", "metadata": "0x"
            }]
        }],
        "appData": "0x",
        "turnNum": "0x5",
        "isFinal": false
    })
}

#[test]
fn state_json_round_trips() {
    let value = sample_state();
    let state: State = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(serde_json::to_value(&state).unwrap(), value);
    assert_eq!(state.turn_num, U48::from(5));
}

#[test]
fn state_json_rejections() {
    type Mutation = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(&str, Mutation)> = vec![
        ("unknown field", Box::new(|v| v["extra"] = json!(1))),
        ("missing field", Box::new(|v| drop(v.as_object_mut().unwrap().remove("turnNum")))),
        ("turnNum > 2^48-1", Box::new(|v| v["turnNum"] = json!("0x1000000000000"))),
        ("nonce > 2^64-1", Box::new(|v| v["channelNonce"] = json!("0x10000000000000000"))),
        ("challengeDuration > 2^48-1", Box::new(|v| v["challengeDuration"] = json!("0x1000000000000"))),
        ("integer as number", Box::new(|v| v["turnNum"] = json!(5))),
        ("decimal string", Box::new(|v| v["turnNum"] = json!("5"))),
        ("empty 0x integer", Box::new(|v| v["turnNum"] = json!("0x"))),
        ("isFinal as string", Box::new(|v| v["isFinal"] = json!("false"))),
        ("short address", Box::new(|v| v["appDefinition"] = json!("0xe7f1725E7734CE288F8367e1Bb143E90bb3F05"))),
        ("bad checksum", Box::new(|v| v["appDefinition"] = json!("0xE7f1725E7734CE288F8367e1Bb143E90bb3F0512"))),
        ("odd hex", Box::new(|v| v["appData"] = json!("0x123"))),
        ("non-hex", Box::new(|v| v["appData"] = json!("0xzz"))),
        ("no 0x", Box::new(|v| v["appData"] = json!("12"))),
        ("short destination", Box::new(|v| v["outcome"][0]["allocations"][0]["destination"] = json!("0x00"))),
        (
            "amount > 2^256-1",
            Box::new(|v| v["outcome"][0]["allocations"][0]["amount"] = json!(format!("0x1{}", "0".repeat(64)))),
        ),
        ("allocationType > 255", Box::new(|v| v["outcome"][0]["allocations"][0]["allocationType"] = json!("0x100"))),
        ("unknown allocation field", Box::new(|v| v["outcome"][0]["allocations"][0]["x"] = json!(0))),
        ("unknown exit field", Box::new(|v| v["outcome"][0]["x"] = json!(0))),
        ("negative", Box::new(|v| v["turnNum"] = json!("-0x1"))),
    ];
    for (name, mutate) in cases {
        let mut value = sample_state();
        mutate(&mut value);
        assert!(serde_json::from_value::<State>(value).is_err(), "{name} should be rejected");
    }
}

#[test]
fn leading_zeros_are_accepted_but_normalized() {
    let mut value = sample_state();
    value["turnNum"] = json!("0x0005");
    let state: State = serde_json::from_value(value).unwrap();
    assert_eq!(serde_json::to_value(&state).unwrap()["turnNum"], json!("0x5"));
}

fn key(n: u8) -> SigningKey {
    let mut b = [0u8; 32];
    b[31] = n;
    SigningKey::from_bytes(&b).unwrap()
}

#[test]
fn signed_state_collects_verifies_and_merges() {
    let state: State = serde_json::from_value(sample_state()).unwrap();
    let (a, b) = (key(1), key(2));
    let mut state = state;
    state.participants = vec![a.address(), b.address()];
    let mut mine = SignedState::new(state.clone());
    let mut theirs = SignedState::new(state.clone());
    mine.sign(&a).unwrap();
    theirs.sign(&b).unwrap();
    assert!(!mine.is_fully_signed());
    assert_eq!(mine.sign(&key(3)), Err(SignedStateError::NotAParticipant(key(3).address())));
    mine.merge(&theirs).unwrap();
    assert!(mine.is_fully_signed());
    let json = serde_json::to_string(&mine).unwrap();
    let back: SignedState = serde_json::from_str(&json).unwrap();
    assert_eq!(back, mine);

    let mut other_state = state.clone();
    other_state.turn_num = U48::from(6);
    let other = SignedState::new(other_state);
    assert_eq!(mine.clone().merge(&other), Err(SignedStateError::DifferentStates));

    // A signature moved to the wrong slot is refused when decoding.
    let mut value: serde_json::Value = serde_json::from_str(&json).unwrap();
    let sigs = value["signatures"].as_array_mut().unwrap();
    sigs.swap(0, 1);
    assert!(serde_json::from_value::<SignedState>(value.clone()).is_err());
    value["signatures"] = json!([null]);
    assert!(serde_json::from_value::<SignedState>(value).is_err());

    // A signature by someone else on this state is refused.
    let stranger = key(9).sign(&mine.hash());
    let mut fresh = SignedState::new(state);
    assert!(matches!(fresh.add_signature(stranger), Err(SignedStateError::NotAParticipant(_))));
    assert!(matches!(fresh.add_signature_of(0, stranger), Err(SignedStateError::NotAParticipant(_))));
    assert!(fresh.signatures().iter().all(Option::is_none));
}

fn arb_b256() -> impl Strategy<Value = B256> {
    any::<[u8; 32]>().prop_map(B256::from)
}

fn arb_state() -> impl Strategy<Value = State> {
    (
        prop::collection::vec(any::<[u8; 20]>().prop_map(Address::from), 1..4),
        any::<u64>(),
        any::<[u8; 20]>().prop_map(Address::from),
        0u64..(1 << 48),
        prop::collection::vec((arb_b256(), any::<[u8; 32]>(), 0u8..3, prop::collection::vec(any::<u8>(), 0..70)), 0..5),
        prop::collection::vec(any::<u8>(), 0..40),
        0u64..(1 << 48),
        any::<bool>(),
    )
        .prop_map(|(participants, nonce, app, cd, allocs, app_data, turn, is_final)| {
            let allocations = allocs
                .into_iter()
                .map(|(destination, amount, t, metadata)| Allocation {
                    destination,
                    amount: U256::from_be_bytes(amount),
                    allocation_type: AllocationType(t),
                    metadata: Bytes::from(metadata),
                })
                .collect();
            State::new(
                FixedPart {
                    participants,
                    channel_nonce: nonce,
                    app_definition: app,
                    challenge_duration: U48::from(cd),
                },
                VariablePart {
                    outcome: Exit(vec![SingleAssetExit {
                        asset: Address::ZERO,
                        asset_metadata: AssetMetadata::default(),
                        allocations,
                    }]),
                    app_data: Bytes::from(app_data),
                    turn_num: U48::from(turn),
                    is_final,
                },
            )
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn sign_then_recover_returns_the_signer(secret in any::<[u8; 32]>(), hash in arb_b256()) {
        if let Ok(key) = SigningKey::from_bytes(&secret) {
            let sig = key.sign(&hash);
            prop_assert_eq!(nitro_core::recover_signer(&hash, &sig).unwrap(), key.address());
        }
    }

    #[test]
    fn json_round_trips(state in arb_state()) {
        let text = serde_json::to_string(&state).unwrap();
        prop_assert_eq!(serde_json::from_str::<State>(&text).unwrap(), state);
    }

    #[test]
    fn encoding_is_injective_on_fields_that_matter(state in arb_state(), field in 0usize..8, salt in 1u64..1000) {
        let mut other = state.clone();
        match field {
            0 => other.participants[0] = Address::from_word(B256::from(U256::from_be_bytes(other.participants[0].into_word().0) ^ U256::from(salt))),
            1 => other.channel_nonce ^= salt,
            2 => other.app_definition.0[0] ^= salt as u8 | 1,
            3 => other.challenge_duration = U48::from(other.challenge_duration.to::<u64>() ^ salt),
            4 => other.turn_num = U48::from(other.turn_num.to::<u64>() ^ salt),
            5 => other.is_final = !other.is_final,
            6 => other.app_data = Bytes::from([other.app_data.to_vec(), vec![salt as u8]].concat()),
            _ => other.outcome.0[0].allocations.push(Allocation::simple(B256::ZERO, U256::from(salt))),
        }
        prop_assert_ne!(other.hash(), state.hash());
        prop_assert_ne!(other.encode(), state.encode());
    }
}
