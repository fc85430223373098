//! Every vector of `../shared/vectors/nitro-vectors.json` (computed by the official
//! `@statechannels/nitro-protocol` package) reproduced byte for byte.

use std::path::PathBuf;

use alloy_primitives::{keccak256, Address, Bytes, B256, U256};
use alloy_sol_types::SolValue;
use nitro_core::{
    abi, challenge_hash, destination_of, ethereum_message_hash, json, recover_signer, Allocation, AllocationType,
    AssetMetadata, Balance, Exit, FixedPart, Guarantee, GuaranteeMetadata, LedgerOutcome, ProposalError, Signature,
    SignedState, SigningKey, SingleAssetExit, State, VariablePart, Voucher,
};
use serde_json::Value;

/// Where the shared vectors live: `$NITRO_VECTORS`, or `shared/vectors/` beside the repository.
fn vectors_path() -> PathBuf {
    std::env::var_os("NITRO_VECTORS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/nitro-vectors.json"))
}

fn load() -> Value {
    let path = vectors_path();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("cannot read the Nitro test vectors at {}: {e} (set NITRO_VECTORS to their path)", path.display())
    });
    serde_json::from_str(&text).expect("nitro-vectors.json is not valid JSON")
}

fn vectors_of(all: &Value, kind: &str) -> Vec<Value> {
    let list: Vec<Value> =
        all["vectors"].as_array().expect("vectors").iter().filter(|v| v["kind"] == kind).cloned().collect();
    assert!(!list.is_empty(), "no vectors of kind {kind}");
    list
}

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn hex(v: &Value) -> Vec<u8> {
    json::decode_hex(s(v)).unwrap()
}

fn b256(v: &Value) -> B256 {
    B256::from_slice(&hex(v))
}

fn addr(v: &Value) -> Address {
    json::parse_address(s(v)).unwrap()
}

fn key(v: &Value) -> SigningKey {
    SigningKey::from_hex(s(v)).unwrap()
}

fn check_signature(id: &str, sig: &Signature, expected: &Value) {
    assert_eq!(sig.r(), b256(&expected["r"]), "{id}: r");
    assert_eq!(sig.s(), b256(&expected["s"]), "{id}: s");
    assert_eq!(json::format_uint(U256::from(sig.v())), s(&expected["v"]), "{id}: v");
    assert_eq!(json::format_uint(U256::from(sig.v() - 27)), s(&expected["recoveryParam"]), "{id}: recoveryParam");
    assert_eq!(sig.to_bytes().as_slice(), hex(&expected["flat"]), "{id}: flat");
}

#[test]
fn channel_ids() {
    for v in vectors_of(&load(), "channel_id") {
        let id = s(&v["id"]);
        let fixed: FixedPart = serde_json::from_value(v["input"]["fixedPart"].clone()).unwrap();
        assert_eq!(fixed.encode(), hex(&v["expected"]["encoded"]), "{id}: encoded");
        assert_eq!(fixed.channel_id(), b256(&v["expected"]["channelId"]), "{id}: channelId");
        assert_eq!(serde_json::to_value(&fixed).unwrap(), v["input"]["fixedPart"], "{id}: JSON round trip");
    }
}

#[test]
fn state_hashes() {
    for v in vectors_of(&load(), "state_hash") {
        let id = s(&v["id"]);
        let e = &v["expected"];
        let state: State = serde_json::from_value(v["input"]["state"].clone()).unwrap();
        assert_eq!(state.channel_id(), b256(&e["channelId"]), "{id}: channelId");
        assert_eq!(state.outcome.encode(), hex(&e["encodedOutcome"]), "{id}: encodedOutcome");
        assert_eq!(state.outcome.hash(), b256(&e["outcomeHash"]), "{id}: outcomeHash");
        assert_eq!(state.encode(), hex(&e["encodedState"]), "{id}: encodedState");
        assert_eq!(state.hash(), b256(&e["stateHash"]), "{id}: stateHash");
        let app_part = (U256::from(state.challenge_duration), state.app_definition, state.app_data.clone());
        assert_eq!(keccak256(app_part.abi_encode_params()), b256(&e["appPartHash"]), "{id}: appPartHash");
        assert_eq!(State::new(state.fixed_part(), state.variable_part()), state, "{id}: parts");
        assert_eq!(serde_json::to_value(&state).unwrap(), v["input"]["state"], "{id}: JSON round trip");
        for g in v["input"]["guaranteeData"].as_array().unwrap() {
            let asset = g["assetIndex"].as_u64().unwrap() as usize;
            let index = g["allocationIndex"].as_u64().unwrap() as usize;
            let allocation = &state.outcome.0[asset].allocations[index];
            let metadata = GuaranteeMetadata::decode(&allocation.metadata).expect("guarantee metadata");
            assert_eq!(metadata.left, b256(&g["left"]), "{id}: guarantee left");
            assert_eq!(metadata.right, b256(&g["right"]), "{id}: guarantee right");
            assert_eq!(json::format_uint(U256::from(allocation.allocation_type.0)), s(&g["allocationType"]));
        }
    }
}

#[test]
fn signatures() {
    for v in vectors_of(&load(), "signature") {
        let id = s(&v["id"]);
        let e = &v["expected"];
        let key = key(&v["input"]["privateKey"]);
        assert_eq!(key.address(), addr(&e["signer"]), "{id}: signer");
        let state: State = serde_json::from_value(v["input"]["state"].clone()).unwrap();
        assert_eq!(state.channel_id(), b256(&e["channelId"]), "{id}: channelId");
        let hash = state.hash();
        assert_eq!(hash, b256(&e["stateHash"]), "{id}: stateHash");
        assert_eq!(ethereum_message_hash(&hash), b256(&e["ethSignedMessageHash"]), "{id}: ethSignedMessageHash");
        let sig = key.sign(&hash);
        check_signature(id, &sig, &e["signature"]);
        let parsed = Signature::from_bytes(&hex(&e["signature"]["flat"])).unwrap();
        assert_eq!(recover_signer(&hash, &parsed).unwrap(), addr(&e["recoveredSigner"]), "{id}: recovered");
        assert_ne!(recover_signer(&hash, &parsed).unwrap(), addr(&e["recoveredFromUnprefixedStateHash_WRONG"]));
        let mut signed = SignedState::new(state);
        let index = signed.state().participants.iter().position(|p| *p == key.address());
        assert_eq!(Some(signed.add_signature(parsed).unwrap()), index, "{id}: signer's index");
    }
}

#[test]
fn challenge_signatures() {
    for v in vectors_of(&load(), "challenge_signature") {
        let id = s(&v["id"]);
        let e = &v["expected"];
        let state: State = serde_json::from_value(v["input"]["state"].clone()).unwrap();
        assert_eq!(state.hash(), b256(&e["stateHash"]), "{id}: stateHash");
        let encoded = (state.hash(), String::from("forceMove")).abi_encode_params();
        assert_eq!(encoded, hex(&e["challengeMessageEncoded"]), "{id}: challenge message");
        let challenge = challenge_hash(&state.hash());
        assert_eq!(challenge, b256(&e["challengeHash"]), "{id}: challengeHash");
        assert_eq!(ethereum_message_hash(&challenge), b256(&e["ethSignedMessageHash"]), "{id}");
        let key = key(&v["input"]["privateKey"]);
        check_signature(id, &key.sign(&challenge), &e["signature"]);
        assert_eq!(key.address(), addr(&e["signer"]), "{id}: signer");
    }
}

#[test]
fn guarantee_metadata() {
    for v in vectors_of(&load(), "guarantee_metadata") {
        let m = GuaranteeMetadata { left: b256(&v["input"]["left"]), right: b256(&v["input"]["right"]) };
        assert_eq!(m.encode().as_ref(), hex(&v["expected"]["metadata"]).as_slice(), "{}", s(&v["id"]));
        assert_eq!(GuaranteeMetadata::decode(&m.encode()), Some(m));
    }
}

#[test]
fn vouchers() {
    for v in vectors_of(&load(), "voucher") {
        let id = s(&v["id"]);
        let e = &v["expected"];
        let channel_id = b256(&v["input"]["channelId"]);
        let amount = json::parse_uint(s(&v["input"]["amount"]), 256).unwrap();
        assert_eq!(Voucher::hash_of(channel_id, amount), b256(&e["voucherHash"]), "{id}: voucherHash");
        let voucher = Voucher::sign(channel_id, amount, &key(&v["input"]["privateKey"]));
        check_signature(id, &voucher.signature, &e["signature"]);
        assert_eq!(voucher.signer().unwrap(), addr(&e["signer"]), "{id}: signer");
        assert_eq!(voucher.app_data(), Bytes::from(hex(&e["appData"])), "{id}: appData");
    }
}

/// The ledger state of a `ledger_outcome*` vector, built from its parts.
fn ledger_state(input: &Value, guarantee_type: AllocationType) -> State {
    let fixed: FixedPart = serde_json::from_value(input["fixedPart"].clone()).unwrap();
    let lo = &input["ledgerOutcome"];
    let amount = |v: &Value| json::parse_uint(s(v), 256).unwrap();
    let mut guarantees: Vec<(B256, Allocation)> = lo["guarantees_unordered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            let target = b256(&g["target"]);
            let metadata = GuaranteeMetadata { left: b256(&g["left"]), right: b256(&g["right"]) };
            let allocation = Allocation {
                destination: target,
                amount: amount(&g["amount"]),
                allocation_type: guarantee_type,
                metadata: metadata.encode(),
            };
            (target, allocation)
        })
        .collect();
    guarantees.sort_by_key(|(target, _)| *target);
    let mut allocations = vec![
        Allocation::simple(b256(&lo["leader"]["destination"]), amount(&lo["leader"]["amount"])),
        Allocation::simple(b256(&lo["follower"]["destination"]), amount(&lo["follower"]["amount"])),
    ];
    allocations.extend(guarantees.into_iter().map(|(_, a)| a));
    let outcome = Exit(vec![SingleAssetExit {
        asset: addr(&lo["asset"]),
        asset_metadata: AssetMetadata::default(),
        allocations,
    }]);
    let turn_num = json::parse_uint(s(&input["turnNum"]), 48).unwrap().to::<u64>();
    State::new(
        fixed,
        VariablePart { outcome, app_data: Bytes::new(), turn_num: nitro_core::U48::from(turn_num), is_final: false },
    )
}

/// The same state built through [`LedgerOutcome`], the consensus-channel type, and parsed back.
fn check_ledger_outcome_type(id: &str, input: &Value, state: &State, guarantee_type: AllocationType) {
    let lo = &input["ledgerOutcome"];
    let amount = |v: &Value| json::parse_uint(s(v), 256).unwrap();
    let balance = |v: &Value| Balance { destination: b256(&v["destination"]), amount: amount(&v["amount"]) };
    let guarantees: Result<Vec<Guarantee>, _> = lo["guarantees_unordered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| Guarantee::new(b256(&g["target"]), amount(&g["amount"]), b256(&g["left"]), b256(&g["right"])))
        .collect();
    match guarantees {
        Ok(guarantees) => {
            let outcome = LedgerOutcome::with_guarantees(
                addr(&lo["asset"]),
                balance(&lo["leader"]),
                balance(&lo["follower"]),
                guarantees,
            )
            .unwrap();
            assert_eq!(outcome.to_exit_with(guarantee_type), state.outcome, "{id}: LedgerOutcome exit");
            assert_eq!(LedgerOutcome::from_exit_with(&state.outcome, guarantee_type).unwrap(), outcome, "{id}: parse");
            if guarantee_type == AllocationType::GUARANTEE {
                let fixed = state.fixed_part();
                assert_eq!(outcome.to_state(&fixed, state.turn_num), *state, "{id}: to_state");
                assert_eq!(outcome.state_hash(fixed.channel_id(), state.turn_num), state.hash(), "{id}: state_hash");
            }
        }
        // go-nitro accepts zero-amount guarantees; this crate's `Guarantee` refuses them, and so
        // does parsing such an exit as a ledger outcome.
        Err(ProposalError::ZeroAmount(_)) => {
            assert!(LedgerOutcome::from_exit_with(&state.outcome, guarantee_type).is_err(), "{id}: zero guarantee");
        }
        Err(e) => panic!("{id}: {e}"),
    }
}

fn check_ledger_vectors(kind: &str, guarantee_type: AllocationType) {
    for v in vectors_of(&load(), kind) {
        let id = s(&v["id"]);
        let e = &v["expected"];
        let input = &v["input"];
        let state = ledger_state(input, guarantee_type);
        check_ledger_outcome_type(id, input, &state, guarantee_type);
        assert_eq!(serde_json::to_value(&state).unwrap(), e["state"], "{id}: state");
        assert_eq!(state.channel_id(), b256(&e["channelId"]), "{id}: channelId");
        assert_eq!(state.outcome.encode(), hex(&e["encodedOutcome"]), "{id}: encodedOutcome");
        assert_eq!(state.outcome.hash(), b256(&e["outcomeHash"]), "{id}: outcomeHash");
        assert_eq!(state.hash(), b256(&e["stateHash"]), "{id}: stateHash");
        assert_eq!(ethereum_message_hash(&state.hash()), b256(&e["ethSignedMessageHash"]), "{id}");
        let (leader, follower) = (key(&input["leader"]["privateKey"]), key(&input["follower"]["privateKey"]));
        assert_eq!(leader.address(), addr(&input["leader"]["address"]));
        assert_eq!(follower.address(), addr(&input["follower"]["address"]));
        let mut signed = SignedState::new(state);
        check_signature(id, &signed.sign(&leader).unwrap(), &e["leaderSignature"]);
        check_signature(id, &signed.sign(&follower).unwrap(), &e["followerSignature"]);
        assert!(signed.is_fully_signed());
        assert_eq!(abi::checkpoint_calldata(&signed), hex(&e["checkpointCalldata"]), "{id}: checkpoint calldata");
    }
}

#[test]
fn ledger_outcomes_go_nitro_guarantee_type() {
    check_ledger_vectors("ledger_outcome", AllocationType::WITHDRAW_HELPER);
}

#[test]
fn ledger_outcomes_on_chain_guarantee_type() {
    check_ledger_vectors("ledger_outcome_onchain", AllocationType::GUARANTEE);
}

#[test]
fn every_vector_kind_is_checked() {
    let all = load();
    let known = [
        "channel_id",
        "state_hash",
        "signature",
        "challenge_signature",
        "guarantee_metadata",
        "voucher",
        "ledger_outcome",
        "ledger_outcome_onchain",
    ];
    for v in all["vectors"].as_array().unwrap() {
        assert!(known.contains(&s(&v["kind"])), "vector {} has a kind no test checks", v["id"]);
    }
    let _ = destination_of(Address::ZERO);
}
