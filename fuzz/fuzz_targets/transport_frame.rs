//! The transport's frame decoder, on what an authenticated peer can make a connection's
//! decrypted stream hold: the first 4 bytes cut the rest into records, the rest is the stream
//! (`nitro_node::transport::decode_frames_for_fuzzing`, the transport's own reassembly and
//! decoder). It never panics, and every frame it accepts re-encodes to bytes that decode, alone
//! in a record, to the same bytes again — unless the frame is a `MSG` whose JSON body holds a
//! non-integer number: serde_json without its `float_roundtrip` feature may move a float by one
//! ulp on the way through. Nitro payloads carry no floats (amounts and ids are hex strings), so
//! this is harmless; see RELIABILITY.md.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nitro_node::transport::decode_frames_for_fuzzing;
use serde_json::Value;

/// The frame limit of the fuzzed decoder (small, so that the limit itself is reached).
const MAX_FRAME: usize = 1 << 16;

/// Whether any number in the JSON is not an integer.
fn has_float(v: &Value) -> bool {
    match v {
        Value::Number(n) => n.is_f64(),
        Value::Array(a) => a.iter().any(has_float),
        Value::Object(o) => o.values().any(has_float),
        _ => false,
    }
}

/// Whether `frame` (a whole encoded frame) is a `MSG` whose body holds a float.
fn msg_with_float(frame: &[u8]) -> bool {
    frame.get(4) == Some(&0x02)
        && frame.get(21..).map_or(true, |body| serde_json::from_slice::<Value>(body).map_or(true, |v| has_float(&v)))
}

fuzz_target!(|data: &[u8]| {
    let Ok(frames) = decode_frames_for_fuzzing(data, MAX_FRAME) else { return };
    for frame in frames {
        // The cut bytes 0xff: records of 15,556 bytes, so a lone frame ends its last record.
        let again = decode_frames_for_fuzzing(&[&[0xff; 4][..], &frame].concat(), MAX_FRAME)
            .expect("a re-encoded frame decodes");
        assert_eq!(again.len(), 1, "one frame in, one frame out");
        if !msg_with_float(&frame) {
            assert_eq!(again[0], frame, "re-encoding is stable");
        }
    }
});
