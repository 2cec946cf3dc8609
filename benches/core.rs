//! The node's per-cycle cost at 2048 slots, driven like the daemon (poll, sweep, write): decode +
//! verify + update of every record, plus our own slot, mailbox and superblock checks. Target:
//! under 200 µs per cycle, no allocation per cycle.

use criterion::{criterion_group, criterion_main, Criterion};
use std::sync::atomic::Ordering;

#[path = "common/core_fixture.rs"]
mod fixture;

#[path = "common/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{Counting, ALLOCS};

#[global_allocator]
static GLOBAL: Counting = Counting;

fn bench(c: &mut Criterion) {
    let mut f = fixture::Fixture::new();
    f.warm_up();
    // Allocations per steady-state cycle (measured outside criterion, which allocates itself).
    const N: u64 = 10_000;
    let before = ALLOCS.load(Ordering::Relaxed);
    for _ in 0..N {
        f.cycle();
    }
    let allocs = ALLOCS.load(Ordering::Relaxed) - before;
    eprintln!("allocations per 2048-slot cycle: {} ({allocs} in {N} cycles)", allocs as f64 / N as f64);
    assert_eq!(allocs, 0, "the heartbeat cycle must not allocate");
    assert_eq!(f.drain(), 0);

    c.bench_function("node_cycle_2048_slots", |b| {
        b.iter(|| {
            f.cycle();
            f.drain()
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
