//! The coordinator's cost (docs/FAILOVER.md): from the moment a host is proven gone to the plan
//! the coordinator publishes, for pools of 4, 16 and 64 hosts with 50 VMs each (mixed protection,
//! orders and anti-affinity groups). Includes the planner's packing and the host-state encoding
//! the daemon writes; the heartbeat loop does none of this (the VM thread does).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use diskbeat::core::failover::{ExtentWriter, Failover, FailoverAction, FailoverConfig, SlotView};
use diskbeat::core::{GoneProof, NotProven, PeerState};
use diskbeat::format::host_state::{HostCapacity, HostState, VmEntry, VmState};
use diskbeat::planner::Protection;
use diskbeat::vm::{Capacity, Inventory};
use std::time::Duration;

const VMS_PER_HOST: usize = 50;

fn entry(host: usize, i: usize) -> VmEntry {
    let protection = match i % 5 {
        0..=2 => Protection::Protect,
        3 => Protection::BestEffort,
        _ => Protection::None,
    };
    VmEntry {
        uuid: uuid::Uuid::from_u128(((host as u128) << 32) | i as u128 | 1 << 100),
        name: format!("h{host}-vm{i}"),
        memory_mib: 1024 + 512 * (i % 7) as u64,
        vcpus: 1 + (i % 4) as u32,
        state: VmState::Running,
        protection,
        order: (i % 3 != 0).then_some((i % 4) as i64),
        anti_affinity: (i % 10 == 0).then(|| format!("g{}", i % 30)),
        claim: 1,
        attempt: 0,
        failure: None,
        definition: vec![b'x'; 3000],
    }
}

fn state(host: usize) -> HostState {
    HostState {
        hb_addrs: vec![],
        capacity: Some(HostCapacity { memory_mib: 200 * 1024, vcpus: 256, accepts_restarts: true }),
        vms: (0..VMS_PER_HOST).map(|i| entry(host, i)).collect(),
        plan: None,
    }
}

/// Slot `s`'s daemon: the writer its extent names and its record's host uuid.
fn host_uuid(s: usize) -> uuid::Uuid {
    uuid::Uuid::from_u128(0x4057_0000 + s as u128)
}

fn views(n: usize, gone: bool) -> Vec<SlotView> {
    (0..n)
        .map(|s| {
            let dead = gone && s == n - 1;
            SlotView {
                state: if dead { PeerState::Fenced } else { PeerState::Live },
                host_uuid: host_uuid(s),
                generation: 1,
                extent_sequence: 1,
                gone: if dead { Ok(GoneProof::FencedMark) } else { Err(NotProven::Alive) },
                lists: None,
            }
        })
        .collect()
}

/// Performs reads until the next publish, and returns it.
fn until_publish(fo: &mut Failover, extents: &[HostState]) -> HostState {
    loop {
        match fo.poll_action(0) {
            Some(FailoverAction::PollInventory) => fo.handle_inventory(
                0,
                Ok(Inventory { capacity: Capacity { memory_mib: 200 * 1024, vcpus: 256 }, vms: vec![] }),
            ),
            Some(FailoverAction::ReadExtent { slot, .. }) => {
                let writer = ExtentWriter { host_uuid: Some(host_uuid(slot as usize)), generation: 1 };
                fo.handle_extent(slot, 1, writer, Ok(Some(extents[slot as usize].clone())))
            }
            Some(FailoverAction::Publish(st)) => {
                fo.handle_published(0, Ok(1));
                return st;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// A coordinator (slot 0) that has read and published everything while all hosts were live,
/// then learns that slot `n - 1` is proven gone (fenced).
fn coordinator(n: usize, extents: &[HostState]) -> Failover {
    let cfg = FailoverConfig {
        slot: 0,
        slot_count: n as u32,
        inventory_interval_ms: 1_000_000,
        driver: true,
        capacity_limit: None,
        hb_addrs: vec![],
        tolerance_target: None,
        start_landing_ms: 4_000_000,
    };
    let mut fo = Failover::new(cfg, 0);
    fo.handle_slots(&views(n, false), 1, true);
    fo.handle_previous(0, Ok(None));
    let st = until_publish(&mut fo, extents);
    assert!(st.plan.is_none());
    fo.handle_slots(&views(n, true), 1, true);
    fo
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("failover_plan");
    g.measurement_time(Duration::from_secs(5)).sample_size(20);
    for n in [4usize, 16, 64] {
        let extents: Vec<HostState> = (0..n).map(state).collect();
        g.bench_with_input(BenchmarkId::new("hosts", n), &n, |b, &n| {
            b.iter_batched(
                || coordinator(n, &extents),
                |mut fo| {
                    // The gone host's final extent is read, the plan computed and published.
                    let st = until_publish(&mut fo, &extents);
                    let plan = st.plan.as_ref().expect("a plan for the gone host");
                    assert!(!plan.assignments.is_empty());
                    let mut encoded = Vec::new();
                    st.encode(&mut encoded).expect("encodes");
                    encoded.len()
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
