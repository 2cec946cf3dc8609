//! Sizes near the top of the integer range: totals never wrap. A pool whose totals the planner
//! cannot compute with is refused when parsed; the packer's own sums are exact (128-bit).

use diskbeat::planner::pack::{pack, Bin, Item, PackOutcome};
use diskbeat::planner::{restart_plan, tolerance, validate_plan, Budget, Pool, PoolError};
use proptest::prelude::*;

const BIG: i64 = i64::MAX;

#[test]
fn vms_whose_memory_wraps_to_a_small_total_are_refused() {
    // 2 * (2^63 - 1) + 2 = 2^64: a wrapping sum makes this host look nearly empty.
    let text = format!(
        r#"
        [[host]]
        name = "h0"
        memory_mib = {BIG}
        [[vm]]
        name = "a"
        memory_mib = {BIG}
        protection = "protect"
        host = "h0"
        [[vm]]
        name = "b"
        memory_mib = {BIG}
        protection = "protect"
        host = "h0"
        [[vm]]
        name = "c"
        memory_mib = 2
        protection = "protect"
        host = "h0"
        "#
    );
    let err = Pool::parse(&text).expect_err("a pool whose totals overflow must be refused");
    assert!(matches!(err, PoolError::TotalTooLarge { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("memory") && msg.contains("MiB"), "{msg}");
}

#[test]
fn host_capacities_that_wrap_are_refused() {
    let hosts: String =
        (0..3).map(|i| format!("[[host]]\nname = \"h{i}\"\nmemory_mib = 8\nmax_vcpus = {BIG}\n")).collect();
    let text =
        format!("{hosts}[[vm]]\nname = \"v\"\nmemory_mib = 4\nprotection = \"protect\"\nhost = \"h0\"\n");
    let err = Pool::parse(&text).expect_err("vCPU totals overflow");
    assert!(matches!(err, PoolError::TotalTooLarge { .. }), "{err:?}");
    assert!(err.to_string().contains("vCPU"), "{err}");
}

#[test]
fn packing_sums_near_u64_max_are_exact() {
    let half = u64::MAX / 2 + 1;
    let items = [Item { memory_mib: half, vcpus: 1, group: None }; 2];
    let bins = [
        Bin { memory_mib: u64::MAX, vcpus: None, groups: vec![] },
        Bin { memory_mib: u64::MAX, vcpus: None, groups: vec![] },
    ];
    let (out, _) = pack(&items, &bins, false, 1000);
    assert!(matches!(out, PackOutcome::Packed(_)), "{out:?}");
    // Three halves do not fit in one u64::MAX bin plus a small one (a wrapped total would say yes).
    let items = [Item { memory_mib: half, vcpus: 1, group: None }; 3];
    let bins = [
        Bin { memory_mib: u64::MAX, vcpus: Some(u64::MAX), groups: vec![] },
        Bin { memory_mib: 1, vcpus: Some(u64::MAX), groups: vec![] },
    ];
    let (out, _) = pack(&items, &bins, false, 1000);
    assert_eq!(out, PackOutcome::Infeasible);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Any pool of huge sizes is either refused at parse time or planned without overflow.
    #[test]
    fn huge_pools_are_refused_or_planned(
        hosts in prop::collection::vec((1i64..=BIG / 8, prop::option::of(1i64..=BIG / 8)), 1..4),
        vms in prop::collection::vec((1i64..=BIG / 8, 1i64..=BIG / 8, 0usize..4), 0..5),
    ) {
        let mut text = String::new();
        for (i, (mem, cpu)) in hosts.iter().enumerate() {
            text += &format!("[[host]]\nname = \"h{i}\"\nmemory_mib = {mem}\n");
            if let Some(c) = cpu {
                text += &format!("max_vcpus = {c}\n");
            }
        }
        for (i, (mem, cpu, h)) in vms.iter().enumerate() {
            text += &format!("[[vm]]\nname = \"v{i}\"\nmemory_mib = {mem}\nvcpus = {cpu}\nprotection = \"protect\"\n");
            if *h < hosts.len() {
                text += &format!("host = \"h{h}\"\n");
            }
        }
        if let Ok(pool) = Pool::parse(&text) {
            let budget = Budget { max_nodes: 10_000, max_nodes_per_set: 1_000 };
            let t = tolerance(&pool, budget);
            prop_assert!(t.tolerated_min <= t.tolerated_max);
            let plan = restart_plan(&pool, &[0], budget);
            prop_assert_eq!(validate_plan(&pool, &plan), vec![]);
        }
    }
}
