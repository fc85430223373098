//! Criterion view of `nitro bench ledger`: 20 rounds (10 adds, 10 removes) through a real
//! leader and follower, next to the cryptographic floor of the same states, at G = 0 and
//! G = 1000 standing guarantees.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use nitro_core::bench::LedgerWorkload;

fn ledger_round(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_20_rounds");
    group.sample_size(10);
    for g in [0usize, 1000] {
        let workload = LedgerWorkload::new(10, g);
        let states = workload.states();
        group.bench_with_input(BenchmarkId::new("channels", g), &workload, |b, w| b.iter(|| w.run_channels().0));
        group.bench_with_input(BenchmarkId::new("floor", g), &workload, |b, w| b.iter(|| w.run_floor(&states)));
    }
    group.finish();
}

criterion_group!(benches, ledger_round);
criterion_main!(benches);
