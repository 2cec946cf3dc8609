//! Planner benchmarks: tolerated bounds and restart plans on large synthetic pools.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use diskbeat::planner::synth::{synthetic_pool, SynthSpec};
use diskbeat::planner::{restart_plan, tolerance, Budget};

fn spec(hosts: usize, vms: usize, vcpu_limits: bool) -> SynthSpec {
    SynthSpec { hosts, vms, fill: 0.7, vcpu_limits, seed: 1 }
}

fn bench(c: &mut Criterion) {
    for (hosts, vms, limits) in [(16, 800, false), (64, 5000, false), (64, 5000, true)] {
        let pool = synthetic_pool(spec(hosts, vms, limits));
        let t = tolerance(&pool, Budget::default());
        eprintln!(
            "{hosts}x{vms} vcpu_limits={limits}: tolerated {}..={} exact={} closed-form {}..={} sets={} nodes={}",
            t.tolerated_min, t.tolerated_max, t.exact, t.sufficient_bound, t.necessary_bound, t.sets_searched, t.nodes
        );
        let tag = if limits { "_vcpu" } else { "" };
        c.bench_function(&format!("tolerance_{hosts}h_{vms}vm{tag}"), |b| {
            b.iter(|| tolerance(black_box(&pool), Budget::default()))
        });
        c.bench_function(&format!("restart_plan_1_failed_{hosts}h_{vms}vm{tag}"), |b| {
            b.iter(|| restart_plan(black_box(&pool), &[0], Budget::default()))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
