//! Brute force on random small pools: an oracle independent of the planner code
//! (enumerate every failure set, pack with a plain exhaustive search) must agree with it.

use diskbeat::planner::{
    restart_plan, tolerance, tolerates, validate_plan, Budget, Host, Pool, Protection, Verdict, Vm,
    WorstCaseKind,
};
use proptest::prelude::*;
use std::collections::HashSet;

/// Exhaustive packing: try every bin for every item; failed states are memoized
/// (state = item index + sorted multiset of remaining capacities).
fn oracle_fits(items: &[(u64, u64)], bins: Vec<(u64, u64)>) -> bool {
    let mut items = items.to_vec();
    items.sort_unstable_by(|a, b| b.cmp(a));
    fn go(
        i: usize,
        items: &[(u64, u64)],
        bins: &mut Vec<(u64, u64)>,
        dead: &mut HashSet<(usize, Vec<(u64, u64)>)>,
    ) -> bool {
        if i == items.len() {
            return true;
        }
        let mut key = bins.clone();
        key.sort_unstable();
        if dead.contains(&(i, key.clone())) {
            return false;
        }
        let (m, c) = items[i];
        for b in 0..bins.len() {
            if bins[b].0 >= m && bins[b].1 >= c {
                bins[b].0 -= m;
                bins[b].1 -= c;
                let ok = go(i + 1, items, bins, dead);
                bins[b].0 += m;
                bins[b].1 += c;
                if ok {
                    return true;
                }
            }
        }
        dead.insert((i, key));
        false
    }
    let mut bins = bins;
    go(0, &items, &mut bins, &mut HashSet::new())
}

/// Whether restarting after `failed` (bitmask) is possible, computed from the raw pool.
fn oracle_set_ok(pool: &Pool, failed: u32) -> bool {
    let n = pool.hosts.len();
    let mut used = vec![(0u64, 0u64); n];
    for vm in &pool.vms {
        if let Some(h) = vm.host {
            used[h].0 += vm.memory_mib;
            used[h].1 += vm.vcpus;
        }
    }
    let bins: Vec<(u64, u64)> = (0..n)
        .filter(|h| failed & (1 << h) == 0)
        .map(|h| {
            (
                pool.hosts[h].memory_mib - used[h].0,
                pool.hosts[h].max_vcpus.map_or(u64::MAX / 2, |c| c - used[h].1),
            )
        })
        .collect();
    let items: Vec<(u64, u64)> = pool
        .vms
        .iter()
        .filter(|v| v.protection == Protection::Protect && v.host.is_none_or(|h| failed & (1 << h) != 0))
        .map(|v| (v.memory_mib, v.vcpus))
        .collect();
    oracle_fits(&items, bins)
}

/// The true number of failures tolerated (0 when overcommitted), and whether k=0 fails.
fn oracle_tolerated(pool: &Pool) -> (usize, bool) {
    let n = pool.hosts.len();
    let mut ok_k = vec![true; n + 1];
    for mask in 0u32..(1 << n) {
        if !oracle_set_ok(pool, mask) {
            ok_k[mask.count_ones() as usize] = false;
        }
    }
    if !ok_k[0] {
        return (0, true);
    }
    ((0..=n).take_while(|&k| ok_k[k]).last().unwrap(), false)
}

fn arb_pool() -> impl Strategy<Value = Pool> {
    let hosts = prop::collection::vec((8u64..=96, prop::option::weighted(0.5, 2u64..=16)), 1..=7);
    let vms = prop::collection::vec(
        (
            prop::sample::select(vec![1u64, 1, 2, 2, 3, 4, 5, 6, 8, 8, 11, 16, 24]),
            1u64..=4,
            prop::sample::select(vec![
                Protection::Protect,
                Protection::Protect,
                Protection::BestEffort,
                Protection::None,
            ]),
            prop::option::weighted(0.4, 0i64..3),
            0usize..20,
            prop::option::weighted(0.3, 0u8..3),
        ),
        0..=30,
    );
    (hosts, vms, prop::bool::weighted(0.4)).prop_map(|(hosts, vms, limited)| {
        let hosts: Vec<Host> = hosts
            .into_iter()
            .enumerate()
            .map(|(i, (m, c))| Host {
                name: format!("h{i}"),
                memory_mib: m,
                max_vcpus: c.filter(|_| limited),
                accepts_restarts: true,
            })
            .collect();
        let mut used = vec![(0u64, 0u64); hosts.len()];
        let mut out = Vec::new();
        for (i, (m, c, p, order, h, g)) in vms.into_iter().enumerate() {
            let fits = |h: usize, used: &[(u64, u64)]| {
                used[h].0 + m <= hosts[h].memory_mib
                    && hosts[h].max_vcpus.is_none_or(|cap| used[h].1 + c <= cap)
            };
            if !(0..hosts.len()).any(|h| fits(h, &vec![(0, 0); hosts.len()])) {
                continue; // a VM larger than every host is a bad file, not a test case
            }
            // A few VMs are not running; the others run on the first host from h that has room.
            let n = hosts.len();
            let host = if h >= 18 { None } else { (0..n).map(|d| (h + d) % n).find(|&x| fits(x, &used)) };
            if let Some(h) = host {
                used[h].0 += m;
                used[h].1 += c;
            }
            out.push(Vm {
                name: format!("v{i}"),
                memory_mib: m,
                vcpus: c,
                protection: p,
                order,
                host,
                anti_affinity: g.map(|g| format!("g{g}")),
            });
        }
        Pool { hosts, vms: out }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn tolerance_agrees_with_brute_force(pool in arb_pool()) {
        let (truth, over) = oracle_tolerated(&pool);
        let t = tolerance(&pool, Budget::default());
        prop_assert!(t.tolerated_min <= truth && truth <= t.tolerated_max, "truth {truth}, planner {t:?}");
        prop_assert!(t.exact, "small pools must be answered exactly: {t:?}");
        prop_assert_eq!(t.tolerated_min, truth);
        prop_assert_eq!(t.overcommitted, over);
        if t.worst_case_kind == WorstCaseKind::Infeasible && !over {
            prop_assert_eq!(t.worst_case.len(), t.tolerated_max + 1);
            let mask = t.worst_case.iter().fold(0u32, |m, &h| m | 1 << h);
            prop_assert!(!oracle_set_ok(&pool, mask), "witness {:?} is feasible", t.worst_case);
        }
        for k in 0..=pool.hosts.len() {
            let v = tolerates(&pool, k, Budget::default());
            let expect = !over && k <= truth;
            match v {
                Verdict::Yes => prop_assert!(expect, "k={k} yes, truth {truth}"),
                Verdict::No(set) => {
                    prop_assert!(!expect, "k={k} no, truth {truth}");
                    prop_assert_eq!(set.len(), k);
                    let mask = set.iter().fold(0u32, |m, &h| m | 1 << h);
                    prop_assert!(!oracle_set_ok(&pool, mask));
                }
                Verdict::Unknown => prop_assert!(false, "unknown on a small pool"),
            }
        }
    }

    #[test]
    fn restart_plans_are_valid(pool in arb_pool(), mask in 0u32..128) {
        let n = pool.hosts.len();
        let failed: Vec<usize> = (0..n).filter(|h| mask & (1 << h) != 0).collect();
        let plan = restart_plan(&pool, &failed, Budget::default());
        let violations = validate_plan(&pool, &plan);
        prop_assert!(violations.is_empty(), "{violations:?}\n{plan:?}");
        let m = failed.iter().fold(0u32, |m, &h| m | 1 << h);
        prop_assert_eq!(plan.protected_complete, oracle_set_ok(&pool, m));
    }
}

#[test]
#[ignore]
fn stats() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut hist = std::collections::BTreeMap::new();
    for _ in 0..2000 {
        let pool = arb_pool().new_tree(&mut runner).unwrap().current();
        let t = tolerance(&pool, Budget::default());
        let key = (
            t.overcommitted,
            t.tolerated_min == pool.hosts.len(),
            t.sufficient_bound < t.tolerated_min || t.necessary_bound > t.tolerated_max,
            t.sets_searched > 0,
            pool.has_vcpu_limits(),
        );
        *hist.entry(key).or_insert(0) += 1;
    }
    println!("(over, all, gap, searched, vcpu): {hist:?}");
}
