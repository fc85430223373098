//! The seeded network simulation (see `nitro_node::sim`): a handful of seeds here; the big
//! sweep (1,000 seeds × 100 virtual channels) is `nitro simulate`, figures in
//! docs/RELIABILITY.md.

use nitro_node::sim::{simulate, SimConfig};

#[test]
fn every_objective_completes_under_loss_duplication_reordering_and_restarts() {
    for seed in 1..=4 {
        let mut config = SimConfig::harsh(seed, 4);
        config.fault_steps = 500;
        let report = simulate(config).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.delivered > 0 && report.signed_states > 0, "{report:?}");
        assert_state_not_history(&report, 4);
    }
}

/// Once every channel is closed, each store keeps its party record and the archive (one row
/// per finished objective) and nothing else; idle ticks add nothing.
fn assert_state_not_history(report: &nitro_node::sim::SimReport, virtual_channels: u64) {
    assert_eq!(report.live_state.len(), 3, "{report:?}");
    for (rows, bytes) in &report.live_state {
        assert_eq!(*rows, 1, "only the party record is left: {report:?}");
        assert!(*bytes < 4_096, "{report:?}");
    }
    // Alice: 2 per virtual channel + her ledger's fund and defund; the hub: both ledgers; Bob
    // like Alice.
    let expected = [2 * virtual_channels + 2, 2 * virtual_channels + 4, 2 * virtual_channels + 2];
    assert_eq!(report.archived, expected, "{report:?}");
    assert_eq!(report.idle_growth, vec![0, 0, 0], "{report:?}");
}

#[test]
fn the_worst_case_loss_still_completes() {
    let mut config = SimConfig::harsh(42, 5);
    config.drop_rate = 0.5;
    config.duplicate_rate = 0.2;
    config.restart_rate = 0.01;
    config.fault_steps = 800;
    let report = simulate(config).unwrap_or_else(|e| panic!("{e}"));
    assert!(report.dropped > 0, "faults were on: {report:?}");
}

#[test]
fn a_seed_replays_exactly() {
    let run = || simulate(SimConfig { fault_steps: 300, ..SimConfig::harsh(7, 3) }).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run(), run());
}

#[test]
fn top_ups_complete_under_the_same_faults_and_pay_out_exactly() {
    for seed in 11..=13 {
        let config = SimConfig { fault_steps: 500, top_ups: true, ..SimConfig::harsh(seed, 3) };
        let report = simulate(config).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.delivered > 0 && report.signed_states > 0, "{report:?}");
        // Everything closed leaves only the party records; the archive holds one TopUp more
        // for Alice and Bob, two for the hub.
        for (rows, _) in &report.live_state {
            assert_eq!(*rows, 1, "only the party record is left: {report:?}");
        }
        assert_eq!(report.archived, vec![2 * 3 + 3, 2 * 3 + 6, 2 * 3 + 3], "{report:?}");
    }
}
