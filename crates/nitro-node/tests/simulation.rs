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
    }
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
