//! Independent validator for restart plans: recomputes everything from the pool itself and
//! shares no code with the planner beyond the data types.

use super::plan::{RestartPlan, UnplacedReason};
use super::pool::{Pool, Protection};

/// A rule a restart plan breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A placement or failure entry refers to something outside the pool.
    #[error("index out of range: {0}")]
    BadIndex(String),
    /// A VM appears more than once in placements/unplaced.
    #[error("vm `{0}` appears more than once in the plan")]
    Duplicate(String),
    /// A VM that had to be considered is missing.
    #[error("vm `{0}` must be placed or listed as unplaced, but is missing")]
    Missing(String),
    /// A VM that should not be in the plan is placed.
    #[error("vm `{0}` is placed but was not affected by the failure or is not restartable")]
    NotEligible(String),
    /// A placement targets a failed or disabled host.
    #[error("vm `{vm}` is placed on host `{host}`, which failed or accepts no restarts")]
    BadTarget {
        /// VM name.
        vm: String,
        /// Host name.
        host: String,
    },
    /// A host exceeds its capacity.
    #[error("host `{host}` exceeds its {unit}: {used} > {capacity}")]
    OverCapacity {
        /// Host name.
        host: String,
        /// "memory" or "vCPUs".
        unit: &'static str,
        /// Total after the plan.
        used: u64,
        /// Capacity.
        capacity: u64,
    },
    /// A protected VM is left out while best-effort VMs took room it could have used.
    #[error("protected vm `{0}` is unplaced although it would fit on a host in place of best-effort VMs")]
    Priority(String),
    /// A VM is listed unplaced although it fits somewhere after the plan.
    #[error("vm `{0}` is unplaced although a host still has room for it")]
    NotMaximal(String),
    /// Placements are not sorted by level then order, or carry the wrong order.
    #[error("placements are not in restart order at vm `{0}`")]
    Order(String),
    /// A placement claims anti-affinity is honored but shares a host with its group.
    #[error("vm `{0}` claims anti-affinity is honored but shares its host with its group")]
    AntiAffinity(String),
    /// The `protected_complete` flag disagrees with the lists.
    #[error("protected_complete flag is wrong")]
    CompleteFlag,
}

/// Checks a restart plan against the pool; returns every violation found (empty = valid).
pub fn validate_plan(pool: &Pool, plan: &RestartPlan) -> Vec<Violation> {
    let mut out = Vec::new();
    let n = pool.hosts.len();
    let mut failed = vec![false; n];
    for &h in &plan.failed {
        if h >= n {
            out.push(Violation::BadIndex(format!("failed host {h}")));
            return out;
        }
        failed[h] = true;
    }
    let mut seen = vec![0u32; pool.vms.len()];
    for v in plan.placements.iter().map(|p| p.vm).chain(plan.unplaced.iter().map(|u| u.vm)) {
        if v >= pool.vms.len() {
            out.push(Violation::BadIndex(format!("vm {v}")));
            return out;
        }
        seen[v] += 1;
    }
    for p in &plan.placements {
        if p.host >= n {
            out.push(Violation::BadIndex(format!("host {}", p.host)));
            return out;
        }
    }
    for (v, vm) in pool.vms.iter().enumerate() {
        let affected = match vm.host {
            Some(h) => failed[h],
            None => vm.protection == Protection::Protect,
        };
        if seen[v] > 1 {
            out.push(Violation::Duplicate(vm.name.clone()));
        }
        if affected && seen[v] == 0 {
            out.push(Violation::Missing(vm.name.clone()));
        }
    }
    // Capacity, from scratch: running VMs on survivors plus placements.
    let mut mem = vec![0u64; n];
    let mut cpu = vec![0u64; n];
    let mut groups: Vec<Vec<&str>> = vec![Vec::new(); n];
    for vm in &pool.vms {
        if let Some(h) = vm.host {
            if !failed[h] {
                mem[h] = mem[h].saturating_add(vm.memory_mib);
                cpu[h] = cpu[h].saturating_add(vm.vcpus);
                groups[h].extend(vm.anti_affinity.as_deref());
            }
        }
    }
    let mut be_mem = vec![0u64; n];
    let mut be_cpu = vec![0u64; n];
    for p in &plan.placements {
        let vm = &pool.vms[p.vm];
        let eligible = match vm.protection {
            Protection::None => false,
            Protection::BestEffort => vm.host.is_some_and(|h| failed[h]),
            Protection::Protect => vm.host.is_none_or(|h| failed[h]),
        };
        if !eligible {
            out.push(Violation::NotEligible(vm.name.clone()));
        }
        if failed[p.host] || !pool.hosts[p.host].accepts_restarts {
            out.push(Violation::BadTarget { vm: vm.name.clone(), host: pool.hosts[p.host].name.clone() });
        }
        // Saturating: an over-full host stays over capacity.
        mem[p.host] = mem[p.host].saturating_add(vm.memory_mib);
        cpu[p.host] = cpu[p.host].saturating_add(vm.vcpus);
        groups[p.host].extend(vm.anti_affinity.as_deref());
        if vm.protection == Protection::BestEffort {
            be_mem[p.host] = be_mem[p.host].saturating_add(vm.memory_mib);
            be_cpu[p.host] = be_cpu[p.host].saturating_add(vm.vcpus);
        }
    }
    for (h, host) in pool.hosts.iter().enumerate() {
        if mem[h] > host.memory_mib {
            out.push(Violation::OverCapacity {
                host: host.name.clone(),
                unit: "memory",
                used: mem[h],
                capacity: host.memory_mib,
            });
        }
        if let Some(c) = host.max_vcpus {
            if cpu[h] > c {
                out.push(Violation::OverCapacity {
                    host: host.name.clone(),
                    unit: "vCPUs",
                    used: cpu[h],
                    capacity: c,
                });
            }
        }
    }
    let room = |h: usize, extra_mem: u64, extra_cpu: u64, m: u64, c: u64| {
        let host = &pool.hosts[h];
        !failed[h]
            && host.accepts_restarts
            && host.memory_mib.saturating_sub(mem[h]).saturating_add(extra_mem) >= m
            && host.max_vcpus.is_none_or(|cap| cap.saturating_sub(cpu[h]).saturating_add(extra_cpu) >= c)
    };
    for u in &plan.unplaced {
        let vm = &pool.vms[u.vm];
        match (u.reason, vm.protection) {
            (UnplacedReason::NotProtected, Protection::None) => {}
            (UnplacedReason::NotProtected, _) | (_, Protection::None) => {
                out.push(Violation::NotEligible(vm.name.clone()))
            }
            (UnplacedReason::NoCapacity, level) => {
                if (0..n).any(|h| room(h, 0, 0, vm.memory_mib, vm.vcpus)) {
                    out.push(Violation::NotMaximal(vm.name.clone()));
                } else if level == Protection::Protect
                    && (0..n).any(|h| room(h, be_mem[h], be_cpu[h], vm.memory_mib, vm.vcpus))
                {
                    out.push(Violation::Priority(vm.name.clone()));
                }
            }
        }
    }
    let key = |p: &super::plan::Placement| (p.protection, p.order.is_none(), p.order.unwrap_or(0));
    for w in plan.placements.windows(2) {
        if key(&w[0]) > key(&w[1]) {
            out.push(Violation::Order(pool.vms[w[1].vm].name.clone()));
        }
    }
    for p in &plan.placements {
        let vm = &pool.vms[p.vm];
        if p.order != vm.order || p.protection != vm.protection {
            out.push(Violation::Order(vm.name.clone()));
        }
        if let Some(g) = vm.anti_affinity.as_deref() {
            let shared = groups[p.host].iter().filter(|&&x| x == g).count() > 1;
            if p.anti_affinity_honored && shared {
                out.push(Violation::AntiAffinity(vm.name.clone()));
            }
        }
    }
    let complete = plan.unplaced.iter().all(|u| pool.vms[u.vm].protection != Protection::Protect);
    if complete != plan.protected_complete {
        out.push(Violation::CompleteFlag);
    }
    out
}
