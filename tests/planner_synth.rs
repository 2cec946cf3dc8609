//! Large synthetic pools: sanity checks, plus (ignored) figures for docs/PLANNER.md.

use diskbeat::planner::synth::{synthetic_pool, SynthSpec};
use diskbeat::planner::{restart_plan, tolerance, validate_plan, Budget};

#[test]
fn synthetic_16x800_is_exact_and_plans_validate() {
    let pool = synthetic_pool(SynthSpec { hosts: 16, vms: 800, fill: 0.7, vcpu_limits: false, seed: 7 });
    let t = tolerance(&pool, Budget::default());
    assert!(t.tolerated_min <= t.tolerated_max);
    assert!(t.sufficient_bound <= t.tolerated_min && t.tolerated_max <= t.necessary_bound);
    let plan = restart_plan(&pool, &[0, 1], Budget::default());
    assert_eq!(validate_plan(&pool, &plan), vec![]);
}

/// Bound gaps on realistic pools: `cargo test --release --test planner_synth -- --ignored --nocapture`.
#[test]
#[ignore]
fn report_gaps() {
    println!("| hosts | VMs | vCPU limits | fill | seed | sufficient | tolerated | necessary | exact | sets searched | ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (hosts, vms) in [(16, 800), (32, 2000), (64, 5000)] {
        for vcpu_limits in [false, true] {
            for fill in [0.5, 0.7, 0.85] {
                for seed in 1..=3 {
                    let pool = synthetic_pool(SynthSpec { hosts, vms, fill, vcpu_limits, seed });
                    let start = std::time::Instant::now();
                    let t = tolerance(&pool, Budget::default());
                    let ms = start.elapsed().as_secs_f64() * 1e3;
                    let tol = if t.exact {
                        format!("{}", t.tolerated_min)
                    } else {
                        format!("{}..={}", t.tolerated_min, t.tolerated_max)
                    };
                    println!(
                        "| {hosts} | {vms} | {vcpu_limits} | {fill} | {seed} | {} | {tol} | {} | {} | {} | {ms:.1} |",
                        t.sufficient_bound, t.necessary_bound, t.exact, t.sets_searched
                    );
                }
            }
        }
    }
}
