//! JSON decoding of states and messages: never panics, and whatever decodes re-encodes to
//! JSON that decodes to an equal value (which re-encodes to the same bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nitro_core::{
    chain::ChainEvent, party::Payload, FixedPart, LedgerEvent, LedgerMessage, SignedProposal, SignedState, State,
};
use serde::{de::DeserializeOwned, Serialize};
use std::fmt::Debug;

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + Debug>(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<T>(data) else { return };
    let json = serde_json::to_vec(&value).expect("a decoded value encodes");
    let again: T = serde_json::from_slice(&json)
        .unwrap_or_else(|e| panic!("re-encoded {} does not decode: {e}", String::from_utf8_lossy(&json)));
    assert_eq!(again, value, "round trip of {}", String::from_utf8_lossy(&json));
    assert_eq!(serde_json::to_vec(&again).unwrap(), json, "encoding is stable");
}

fuzz_target!(|data: &[u8]| {
    round_trip::<State>(data);
    round_trip::<SignedState>(data);
    round_trip::<FixedPart>(data);
    round_trip::<LedgerMessage>(data);
    round_trip::<SignedProposal>(data);
    round_trip::<LedgerEvent>(data);
    round_trip::<Payload>(data);
    round_trip::<ChainEvent>(data);
});
