//! The transport's frame decoder on arbitrary payloads: it never panics, and a frame it
//! accepts re-encodes to bytes it accepts again, unchanged (unless the frame carries a
//! floating-point number in a `msg` body: serde_json without its `float_roundtrip` feature
//! may move a float by one ulp on the way through; Nitro payloads carry no floats).
#![no_main]

use libfuzzer_sys::fuzz_target;
use nitro_node::transport::decode_frame_for_fuzzing;

fuzz_target!(|data: &[u8]| {
    if let Ok(encoded) = decode_frame_for_fuzzing(data) {
        let again = decode_frame_for_fuzzing(&encoded).expect("a re-encoded frame decodes");
        if !encoded.contains(&b'.') {
            assert_eq!(again, encoded, "re-encoding is stable");
        }
    }
});
