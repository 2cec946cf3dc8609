//! The partition rule's cost (docs/PARTITIONS.md, "Cost"): random mutual-hearing graphs of 16, 32
//! and 64 hosts, and dense worst-case-ish graphs at 64. `decide` must not allocate.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use diskbeat::core::partition::{decide, Host};
use diskbeat::format::record::NetView;
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use std::sync::atomic::Ordering;
use std::time::Duration;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{Counting, ALLOCS};

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Reproducible random graphs: an edge with probability `p`. The figures in docs/PARTITIONS.md were
/// measured with this file's earlier hand-written xorshift64* graphs (other graphs, same shapes).
fn chance(rng: &mut Xoshiro256PlusPlus, p: f64) -> bool {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
}

/// Views of `n` hosts on slots 0, 5, 10, ...: `edge(i, j)` says whether i and j hear each other.
fn views(n: usize, mut edge: impl FnMut(usize, usize) -> bool) -> Vec<NetView> {
    let mut v = vec![NetView::EMPTY; n];
    for i in 0..n {
        for j in i + 1..n {
            if edge(i, j) {
                v[i].set(5 * j as u32, true);
                v[j].set(5 * i as u32, true);
            }
        }
    }
    v
}

fn hosts(views: &[NetView]) -> Vec<Host<'_>> {
    views
        .iter()
        .enumerate()
        .map(|(i, view)| Host {
            slot: 5 * i as u32,
            view,
            weight: 1,
            isolated: false,
            has_isolation_addresses: false,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut cases: Vec<(String, Vec<NetView>)> = Vec::new();
    for n in [16, 32, 64] {
        for p in [0.5, 0.9] {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(n as u64);
            cases.push((format!("random_{n}_p{p}"), views(n, |_, _| chance(&mut rng, p))));
        }
    }
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    cases.push(("random_64_p0.97".into(), views(64, |_, _| chance(&mut rng, 0.97))));
    // Complement of 21 triangles (+1 host): 3^21 maximum cliques, all tied on every criterion.
    cases.push(("moon_moser_64".into(), views(64, |i, j| i / 3 != j / 3)));
    // Two halves that do not hear each other: a tie on size, decided on the slot list.
    cases.push(("halves_32_32".into(), views(64, |i, j| (i < 32) == (j < 32))));
    cases.push(("full_mesh_64".into(), views(64, |_, _| true)));

    // The slowest of many random graphs at 64 hosts (one timed run each, outside criterion).
    for p in [0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97] {
        let mut worst = (Duration::ZERO, 0);
        for seed in 1..=20u64 {
            let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
            let v = views(64, |_, _| chance(&mut rng, p));
            let hosts = hosts(&v);
            let start = std::time::Instant::now();
            let d = decide(&hosts).expect("64 hosts decide");
            worst = worst.max((start.elapsed(), d.size));
        }
        eprintln!("random_64_p{p}: slowest of 20 seeds {:?} ({} survivors)", worst.0, worst.1);
    }

    let mut group = c.benchmark_group("partition_decide");
    group.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500)).sample_size(20);
    for (name, v) in &cases {
        let hosts = hosts(v);
        let before = ALLOCS.load(Ordering::Relaxed);
        let d = decide(&hosts).expect("64 hosts decide");
        assert_eq!(ALLOCS.load(Ordering::Relaxed) - before, 0, "decide must not allocate");
        eprintln!("{name}: {} survivors, {:?}", d.size, d.reason);
        group
            .bench_with_input(BenchmarkId::from_parameter(name), &hosts, |b, hosts| b.iter(|| decide(hosts)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
