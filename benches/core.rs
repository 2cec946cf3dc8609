//! The node's per-cycle cost at 2048 slots, driven like the daemon (poll, sweep, write): decode +
//! verify + update of every record, plus our own slot, mailbox and superblock checks. Target:
//! under 200 µs per cycle, no allocation per cycle.

use criterion::{criterion_group, criterion_main, Criterion};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

#[path = "common/core_fixture.rs"]
mod fixture;

/// Counts every allocation of the bench binary.
struct Counting;
static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

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
