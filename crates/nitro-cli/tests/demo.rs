//! `nitro demo` and `nitro simulate`, run as a user would: the demo on its own anvil chain
//! (its money accounted for to the wei), the simulation over a few seeds, and their bad input.

use std::process::{Command, Output, Stdio};

use alloy_primitives::U256;
use serde_json::Value;

fn nitro(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nitro")).args(args).stdin(Stdio::null()).output().unwrap()
}

fn succeeded(args: &[&str]) -> String {
    let out = nitro(args);
    assert!(
        out.status.success(),
        "nitro {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Exit status 2 and one line on stderr, which is returned.
fn refused(args: &[&str]) -> String {
    let out = nitro(args);
    assert_eq!(out.status.code(), Some(2), "nitro {args:?}: {}", String::from_utf8_lossy(&out.stdout));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.trim().lines().count(), 1, "one line on stderr: {err:?}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

fn wei(v: &Value) -> U256 {
    v.as_str().unwrap_or_else(|| panic!("not a wei string: {v}")).parse().unwrap()
}

const MILLI: u64 = 1_000_000_000_000_000;

/// What the demo's summary must say for `n` virtual channels and `payments` of 7 mETH each.
fn check_summary(summary: &Value, n: u64, payments: u64) {
    assert_eq!(summary["ledgers_funded"], 2);
    assert_eq!(summary["virtual_channels"], n);
    // The hub leads both ledgers: one guarantee in each per virtual channel, all released.
    assert_eq!(summary["guarantees_added"], 2 * n);
    assert_eq!(summary["guarantees_removed"], 2 * n);
    assert_eq!(summary["ledgers_defunded"], 2);
    assert_eq!(wei(&summary["leftover_holdings_wei"]), U256::ZERO);
    let per_ledger = U256::from(MILLI) * U256::from(1000 * (n + 1));
    let paid = U256::from(MILLI) * U256::from(7 * payments * n);
    let deposited = &summary["deposited_wei"];
    let withdrawn = &summary["withdrawn_wei"];
    // Bob withdraws half of his ETH from L(hub, bob) while the channels are open (paid out at
    // once, the rest at the close): his ETH totals are unchanged by it.
    assert_eq!(wei(&deposited["alice"]), per_ledger);
    assert_eq!(wei(&deposited["bob"]), per_ledger);
    assert_eq!(wei(&deposited["hub"]), per_ledger * U256::from(2));
    assert_eq!(wei(&withdrawn["alice"]), per_ledger - paid, "alice gets back what she did not pay");
    assert_eq!(wei(&withdrawn["bob"]), per_ledger + paid, "bob gets his deposit and the payments");
    assert_eq!(wei(&withdrawn["hub"]), per_ledger * U256::from(2), "the hub gets its deposits back");
    assert_eq!(
        summary["resized_ledgers"], 2,
        "one top-up (in the token) credited, one ledger migrated by a withdrawal"
    );
    // Per asset: ETH as above, and the token ledgers' deposits all paid back.
    let assets = summary["assets"].as_object().expect("assets");
    assert_eq!(assets.len(), 2, "ETH and the token: {assets:?}");
    let eth = &assets["0x0000000000000000000000000000000000000000"];
    assert_eq!(eth["deposited_wei"], *deposited);
    assert_eq!(eth["withdrawn_wei"], *withdrawn);
    for (asset, a) in assets {
        assert_eq!(wei(&a["leftover_holdings_wei"]), U256::ZERO, "{asset} left in the adjudicator");
        if asset.as_str() != "0x0000000000000000000000000000000000000000" {
            // The same two ledgers hold 400,000 units from each side; Alice tops hers up by
            // 200,000 while the channels are open; nobody pays in the token.
            let units = |n: u64| Value::String(n.to_string());
            assert_eq!(a["deposited_wei"]["alice"], units(600_000), "{a}");
            assert_eq!(a["deposited_wei"]["hub"], units(800_000), "{a}");
            assert_eq!(a["deposited_wei"]["bob"], units(400_000), "{a}");
            for party in ["alice", "hub", "bob"] {
                assert_eq!(a["deposited_wei"][party], a["withdrawn_wei"][party], "{party} in {asset}");
            }
        }
    }
}

#[test]
fn demo_with_stores_on_disk_narrates_and_settles_every_wei() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().to_str().unwrap();
    let text = succeeded(&["demo", "--virtual-channels", "2", "--payments", "2", "--store-dir", store_dir]);
    let lines: Vec<&str> = text.lines().collect();
    let summary: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    check_summary(&summary, 2, 2);
    let narration = text.as_str();
    for expected in [
        "anvil started at",
        "deployed NitroAdjudicator",
        &format!("stores on disk in {store_dir}"),
        "opening L(hub, alice) and L(hub, bob)",
        "funding 2 virtual channels alice → hub → bob",
        "2 virtual channels funded in",
        "alice paid bob 2 × 0.007000000000000000 ETH in each channel",
        "2 virtual channels closed: 4 guarantees released",
        "concluded and paid out: on-chain holdings 0.000000000000000000 ETH",
        "done: every state above was signed by its parties and settled on chain",
    ] {
        assert!(narration.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // Every progress line is stamped with the elapsed time.
    assert!(lines[0].starts_with('[') && lines[0].contains("s] anvil started at"), "{}", lines[0]);
    for name in ["alice", "hub", "bob"] {
        assert!(dir.path().join(format!("{name}.db")).exists(), "{name}'s store on disk");
    }

    // The stores of that run are refused: the demo starts a fresh chain.
    let err = refused(&["demo", "--virtual-channels", "1", "--store-dir", store_dir]);
    assert!(err.contains("exists: the demo starts a fresh chain"), "{err}");
}

#[test]
fn demo_json_prints_one_summary_object() {
    let text = succeeded(&["demo", "--virtual-channels", "1", "--payments", "3", "--json"]);
    assert_eq!(text.trim().lines().count(), 1, "only the summary: {text}");
    check_summary(&serde_json::from_str(text.trim()).unwrap(), 1, 3);
}

#[test]
fn demo_refuses_a_channel_count_out_of_range() {
    for count in ["0", "1001"] {
        let err = refused(&["demo", "--virtual-channels", count]);
        assert!(err.contains("--virtual-channels must be between 1 and 1000"), "{err}");
    }
}

#[test]
fn simulate_runs_consecutive_seeds_and_sums_their_reports() {
    let args = ["simulate", "--seed", "7", "--seeds", "2", "--virtual-channels", "2", "--fault-steps", "300"];
    let report: Value = serde_json::from_str(succeeded(&args).trim()).unwrap();
    assert_eq!(report["seeds"], 2);
    assert_eq!(report["first_seed"], 7);
    assert_eq!(report["virtual_channels"], 2);
    assert_eq!(report["all_completed"], true);
    assert_eq!(report["double_signed"], 0);
    let count = |k: &str| report[k].as_u64().unwrap_or_else(|| panic!("{k} is not a count: {report}"));
    assert!(count("messages_delivered") > 0, "{report}");
    assert!(count("states_signed") > 0, "{report}");
    assert!(count("transactions") > 0, "{report}");
    assert!(report["elapsed_s"].as_f64().unwrap() >= 0.0);

    // The same seed gives the same run: the sum over seeds 7 and 8 is the sum of each alone.
    let one = |seed: &str| -> Value {
        let args = ["simulate", "--seed", seed, "--virtual-channels", "2", "--fault-steps", "300"];
        serde_json::from_str(succeeded(&args).trim()).unwrap()
    };
    let (seven, eight) = (one("7"), one("8"));
    for k in ["messages_delivered", "messages_dropped", "messages_duplicated", "restarts", "states_signed"] {
        assert_eq!(
            report[k].as_u64().unwrap(),
            seven[k].as_u64().unwrap() + eight[k].as_u64().unwrap(),
            "{k}: {report} vs {seven} + {eight}"
        );
    }
}
