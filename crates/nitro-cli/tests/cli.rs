//! The `nitro` protocol tools, run as a user would, against every shared vector and bad input.

use std::{
    io::Write,
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

fn vectors() -> Value {
    let path = std::env::var_os("NITRO_VECTORS").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/vectors/nitro-vectors.json")
    });
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read the Nitro test vectors at {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn nitro(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_nitro"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // From a thread (so a child that writes before reading cannot deadlock us), closing stdin
    // when done. A child that exits without reading (bad arguments, a missing file) closes the
    // pipe first: that broken pipe is not the test's concern, its exit status and stderr are.
    let mut pipe = child.stdin.take().unwrap();
    let input = stdin.as_bytes().to_vec();
    let writer = std::thread::spawn(move || match pipe.write_all(&input) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.unwrap(),
    });
    let output = child.wait_with_output().unwrap();
    writer.join().unwrap();
    output
}

fn ok_json(args: &[&str], stdin: &str) -> Value {
    let out = nitro(args, stdin);
    assert!(out.status.success(), "nitro {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "one JSON object on one line");
    serde_json::from_str(&text).unwrap()
}

fn bad(args: &[&str], stdin: &str) -> String {
    let out = nitro(args, stdin);
    assert_eq!(out.status.code(), Some(2), "nitro {args:?} should exit 2");
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "one line on stderr, got {err:?}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err}");
    err
}

fn of_kind<'a>(all: &'a Value, kinds: &[&str]) -> Vec<&'a Value> {
    all["vectors"].as_array().unwrap().iter().filter(|v| kinds.contains(&v["kind"].as_str().unwrap())).collect()
}

#[test]
fn state_hash_matches_every_vector() {
    let all = vectors();
    for v in of_kind(&all, &["state_hash"]) {
        let out = ok_json(&["state", "hash", "-"], &v["input"]["state"].to_string());
        for field in ["channelId", "encodedOutcome", "outcomeHash", "stateHash"] {
            assert_eq!(out[field], v["expected"][field], "{}: {field}", v["id"]);
        }
    }
    for v in of_kind(&all, &["ledger_outcome", "ledger_outcome_onchain"]) {
        let out = ok_json(&["state", "hash", "-"], &v["expected"]["state"].to_string());
        for field in ["channelId", "encodedOutcome", "outcomeHash", "stateHash"] {
            assert_eq!(out[field], v["expected"][field], "{}: {field}", v["id"]);
        }
    }
}

#[test]
fn state_sign_and_recover_match_every_vector() {
    let all = vectors();
    for v in of_kind(&all, &["signature"]) {
        let key = v["input"]["privateKey"].as_str().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state.json");
        std::fs::write(&file, v["input"]["state"].to_string()).unwrap();
        let out = ok_json(&["state", "sign", "--key", key, file.to_str().unwrap()], "");
        assert_eq!(out["stateHash"], v["expected"]["stateHash"]);
        assert_eq!(out["signer"], v["expected"]["signer"]);
        for part in ["r", "s", "v", "flat"] {
            assert_eq!(out["signature"][part], v["expected"]["signature"][part], "{}: {part}", v["id"]);
        }
        let flat = v["expected"]["signature"]["flat"].as_str().unwrap();
        let out = ok_json(&["state", "recover", "--signature", flat, file.to_str().unwrap()], "");
        assert_eq!(out["signer"], v["expected"]["recoveredSigner"]);
    }
}

#[test]
fn channel_id_matches_every_vector() {
    let all = vectors();
    for v in of_kind(&all, &["channel_id"]) {
        let out = ok_json(&["channel-id", "-"], &v["input"]["fixedPart"].to_string());
        assert_eq!(out["channelId"], v["expected"]["channelId"], "{}", v["id"]);
    }
    for v in of_kind(&all, &["state_hash"]) {
        let out = ok_json(&["channel-id", "-"], &v["input"]["state"].to_string());
        assert_eq!(out["channelId"], v["expected"]["channelId"], "{}: a full state works too", v["id"]);
    }
}

#[test]
fn bad_input_exits_2_with_one_line() {
    let all = vectors();
    let state = &of_kind(&all, &["signature"])[0]["input"]["state"];
    let mut wrong_turn = state.clone();
    wrong_turn["turnNum"] = "0x1000000000000".into();
    assert!(bad(&["state", "hash", "-"], &wrong_turn.to_string()).contains("uint48"));
    let mut extra = state.clone();
    extra["surprise"] = 1.into();
    assert!(bad(&["state", "hash", "-"], &extra.to_string()).contains("surprise"));
    let mut bad_nonce = state.clone();
    bad_nonce["channelNonce"] = "0x10000000000000000".into();
    assert!(bad(&["state", "hash", "-"], &bad_nonce.to_string()).contains("uint64"));
    let mut bad_duration = state.clone();
    bad_duration["challengeDuration"] = "0x1000000000000".into();
    assert!(bad(&["state", "hash", "-"], &bad_duration.to_string()).contains("uint48"));
    bad(&["state", "hash", "-"], "not json");
    bad(&["state", "hash", "-"], "");
    bad(&["state", "hash", "/definitely/not/here.json"], "");
    bad(&["state", "sign", "--key", "0x1234", "-"], &state.to_string());
    bad(&["state", "sign", "--key", &format!("0x{}", "00".repeat(32)), "-"], &state.to_string());
    bad(&["state", "recover", "--signature", "0x1234", "-"], &state.to_string());
    bad(&["state", "recover", "--signature", &format!("0x{}", "00".repeat(65)), "-"], &state.to_string());
    bad(&["channel-id", "-"], r#"{"participants":[]}"#);
    bad(&["state"], "");
    bad(&["frobnicate"], "");
}

#[test]
fn bench_ledger_reports_elapsed_floor_and_ratio() {
    let out =
        ok_json(&["bench", "ledger", "--proposals", "3", "--standing-guarantees", "5", "--repeat", "1", "--json"], "");
    assert_eq!(out["proposals"], 3);
    assert_eq!(out["standing_guarantees"], 5);
    for field in ["elapsed_ms", "floor_ms", "ratio"] {
        assert!(out[field].as_f64().unwrap() > 0.0, "{field} is a positive number: {out}");
    }
    bad(&["bench", "ledger", "--proposals", "0"], "");
}

#[test]
fn bench_ledger_batches_changes_into_fewer_states() {
    let out = ok_json(&["bench", "ledger", "--proposals", "10", "--batch", "4", "--repeat", "1", "--json"], "");
    assert_eq!(out["batch"], 4);
    assert_eq!(out["changes"], 20);
    assert_eq!(out["states"], 5, "20 changes in batches of 4: {out}");
    assert!(out["changes_per_s"].as_f64().unwrap() > 0.0, "{out}");
    bad(&["bench", "ledger", "--batch", "0"], "");
    bad(&["bench", "ledger", "--batch", "257"], "");
}

#[test]
fn bench_ledger_in_text_says_what_it_measured() {
    let out = nitro(
        &["bench", "ledger", "--proposals", "4", "--batch", "2", "--standing-guarantees", "1", "--repeat", "1"],
        "",
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.trim().lines().count(), 1, "{text}");
    assert!(text.starts_with("4 adds + 4 removes in batches of 2 (4 states) over 1 standing guarantees: "), "{text}");
    for part in ["µs/state", "changes/s); floor ", "; ratio "] {
        assert!(text.contains(part), "{part:?} in {text}");
    }
    assert!(bad(&["bench", "ledger", "--repeat", "0"], "").contains("at least 1"));
    assert!(bad(&["bench", "ledger", "--proposals", "1000001"], "").contains("1,000,000"));
    assert!(bad(&["bench", "ledger", "--standing-guarantees", "1000001"], "").contains("1,000,000"));
}

#[test]
fn help_and_version_go_to_stdout_and_succeed() {
    for (args, expected) in [
        (&["--version"][..], "nitro "),
        (&["--help"][..], "Usage: nitro"),
        (&["demo", "--help"][..], "--virtual-channels"),
    ] {
        let out = nitro(args, "");
        assert!(out.status.success(), "nitro {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(expected), "nitro {args:?}: {text}");
    }
}
