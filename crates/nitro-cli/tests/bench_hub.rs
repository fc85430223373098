//! `nitro bench hub` run as a user would: three `nitro node` processes and anvil, virtual
//! channels through the hub, one JSON object on the last line of stdout (or text), the
//! temporary directory removed (or kept with `--keep`); bad arguments refused at once.

#![cfg(unix)]

use std::{
    path::Path,
    process::{Command, Output, Stdio},
};

use serde_json::Value;

/// Runs `nitro bench hub ARGS` with its temporary files under `tmp`.
fn bench_hub(args: &[&str], tmp: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nitro"))
        .args(["bench", "hub"])
        .args(args)
        .env("TMPDIR", tmp)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn succeeded(out: &Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nitro bench hub failed ({}):\n{stderr}", out.status);
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Whether `a` and `b` agree within `relative`, or within the report's rounding (rates are
/// printed to one decimal: 2.96/s shows as 3.0).
fn close(a: f64, b: f64, relative: f64) -> bool {
    (a - b).abs() <= (relative * a.abs().max(b.abs())).max(0.05 + 1e-9)
}

#[test]
fn five_virtual_channels_two_in_flight_through_three_node_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bench_hub(&["--virtual-channels", "5", "--concurrency", "2", "--json"], tmp.path());
    let stdout = succeeded(&out);
    let last = stdout.lines().last().expect("a last line");
    let v: Value = serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"));
    let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "concurrency",
            "durable",
            "elapsed_ms",
            "floor_ms",
            "fund_p50_ms",
            "fund_p99_ms",
            "ledger_changes_per_s",
            "lifecycles_per_s",
            "processes",
            "ratio",
            "virtual_channels"
        ]
    );
    assert_eq!(v["virtual_channels"], 5);
    assert_eq!(v["concurrency"], 2);
    assert_eq!(v["durable"], true);
    assert_eq!(v["processes"], 3);
    let number = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} is not a number: {v}"));
    let (elapsed, floor) = (number("elapsed_ms"), number("floor_ms"));
    assert!(elapsed > 0.0 && floor > 0.0, "{v}");
    let per_s = number("lifecycles_per_s");
    assert!(close(per_s, 5.0 / (elapsed / 1e3), 0.01), "lifecycles_per_s ≈ N / elapsed: {v}");
    assert!(
        close(number("ledger_changes_per_s"), 4.0 * 5.0 / (elapsed / 1e3), 0.01),
        "4 ledger changes per lifecycle: {v}"
    );
    assert!(close(number("ratio"), elapsed / floor, 0.01), "ratio = elapsed / floor: {v}");
    let (p50, p99) = (number("fund_p50_ms"), number("fund_p99_ms"));
    assert!(0.0 < p50 && p50 <= p99 && p99 <= elapsed, "0 < p50 ≤ p99 ≤ elapsed: {v}");
    // Nothing is left behind without --keep.
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.iter().all(|name| !name.to_string_lossy().starts_with("nitro-bench-hub-")), "left behind: {left:?}");
}

#[test]
fn text_output_and_keep() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bench_hub(&["--virtual-channels", "1", "--keep"], tmp.path());
    let stdout = succeeded(&out);
    assert!(stdout.contains("lifecycles/s") && stdout.contains("elapsed / floor"), "{stdout}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let kept = stderr
        .lines()
        .find_map(|l| l.strip_prefix("bench hub: kept "))
        .unwrap_or_else(|| panic!("--keep says where: {stderr}"));
    for name in ["alice", "hub", "bob"] {
        for ext in ["toml", "key", "db", "log", "token"] {
            let file = Path::new(kept).join(format!("{name}.{ext}"));
            assert!(file.exists(), "kept {}", file.display());
        }
    }
}

#[test]
fn bad_arguments_are_refused_before_anything_starts() {
    let tmp = tempfile::tempdir().unwrap();
    for args in [
        &["--virtual-channels", "0"][..],
        &["--virtual-channels", "100001"],
        &["--virtual-channels", "5", "--concurrency", "0"],
        &["--virtual-channels", "5", "--concurrency", "1001"],
        &["--virtual-channels", "-3"],
        &["--virtual-channels", "many"],
        &["--concurrency", "2"],
    ] {
        let out = bench_hub(args, tmp.path());
        assert_eq!(out.status.code(), Some(2), "{args:?} exits with status 2");
        assert!(out.stdout.is_empty(), "{args:?}: nothing on stdout");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: one line on stderr, got {err:?}");
        assert!(!err.contains("panicked"), "{err}");
    }
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "nothing started");
}
