//! The transport's frame decoder on arbitrary payloads: it never panics, and a frame it
//! accepts re-encodes to bytes it accepts again, unchanged — unless the frame carries a
//! floating-point number (`1.5`, `3e+81`) in a `msg` body: serde_json without its
//! `float_roundtrip` feature may move a float by one ulp on the way through. Nitro payloads
//! carry no floats (amounts and ids are hex strings), so this is harmless; see RELIABILITY.md.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nitro_node::transport::decode_frame_for_fuzzing;
use serde_json::Value;

/// Whether any number in the JSON is not an integer.
fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(encoded) = decode_frame_for_fuzzing(data) {
        let again = decode_frame_for_fuzzing(&encoded).expect("a re-encoded frame decodes");
        let floats = serde_json::from_slice::<Value>(&encoded).map_or(true, |v| has_float(&v));
        if !floats {
            assert_eq!(again, encoded, "re-encoding is stable");
        }
    }
});
