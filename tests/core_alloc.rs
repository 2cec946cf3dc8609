//! The heartbeat cycle never allocates: 1000 steady-state cycles at 2048 slots, 0 allocations.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

#[path = "../benches/common/core_fixture.rs"]
mod fixture;

/// Counts allocations made by the current thread only (the test harness has other threads).
struct Counting;

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    let _ = COUNT.try_with(|c| c.set(c.get() + 1));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn steady_state_cycles_do_not_allocate() {
    let mut f = fixture::Fixture::new();
    f.warm_up();
    let before = COUNT.with(Cell::get);
    let mut events = 0;
    for _ in 0..1000 {
        f.cycle();
        events += f.drain();
    }
    let allocs = COUNT.with(Cell::get) - before;
    assert_eq!(events, 0, "steady state emits no events");
    assert_eq!(allocs, 0, "{allocs} allocations in 1000 cycles at {} slots", fixture::SLOTS);
    // The allocator really counts: a Vec does allocate.
    let v = std::hint::black_box(vec![1u8; 10]);
    assert!(COUNT.with(Cell::get) > before + allocs, "{v:?}");
}
