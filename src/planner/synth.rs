//! Deterministic synthetic pools for benchmarks, documentation figures and tests.
//!
//! The figures in docs/PLANNER.md were measured with this file's earlier hand-written xorshift64*
//! stream: since the switch to `rand_xoshiro` the same seed gives a different pool of the same shape.

use super::pool::{Host, Pool, Protection, Vm};
use rand_xoshiro::rand_core::{Rng as _, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

/// Shape of a synthetic pool.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SynthSpec {
    /// Number of hosts.
    pub hosts: usize,
    /// Number of VMs.
    pub vms: usize,
    /// Target fraction of host memory used by running VMs (0..1).
    pub fill: f64,
    /// Give every host a vCPU limit (2-dimensional capacity).
    pub vcpu_limits: bool,
    /// Seed of the pseudo-random generator.
    pub seed: u64,
}

/// Seeded draws for the generator (xoshiro256++; not on any daemon path).
struct Rng(Xoshiro256PlusPlus);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0.next_u64() % n
    }
}

/// A mixed-size pool: VM sizes 1–64 GiB (mostly small, some odd sizes), 60% protected,
/// 25% best-effort, 15% unprotected, hosts sized so running VMs fill about `fill` of memory.
pub fn synthetic_pool(spec: SynthSpec) -> Pool {
    let mut rng = Rng(Xoshiro256PlusPlus::seed_from_u64(spec.seed));
    // (size in MiB, weight): a realistic long tail of VM sizes.
    const SIZES: [(u64, u64); 11] = [
        (1024, 18),
        (1536, 4),
        (2048, 22),
        (3072, 4),
        (4096, 20),
        (6144, 3),
        (8192, 14),
        (12288, 3),
        (16384, 7),
        (32768, 4),
        (65536, 1),
    ];
    let total_weight: u64 = SIZES.iter().map(|s| s.1).sum();
    let mut vms = Vec::with_capacity(spec.vms);
    for i in 0..spec.vms {
        let mut r = rng.below(total_weight);
        let memory_mib = SIZES
            .iter()
            .find(|(_, w)| {
                if r < *w {
                    true
                } else {
                    r -= w;
                    false
                }
            })
            .map_or(1024, |s| s.0);
        let vcpus = (memory_mib / 2048).clamp(1, 16);
        let protection = match rng.below(100) {
            0..60 => Protection::Protect,
            60..85 => Protection::BestEffort,
            _ => Protection::None,
        };
        let order = if rng.below(3) == 0 { Some(rng.below(4) as i64) } else { None };
        vms.push(Vm {
            name: format!("vm{i:05}"),
            memory_mib,
            vcpus,
            protection,
            order,
            host: None,
            anti_affinity: if rng.below(10) == 0 { Some(format!("group{}", rng.below(20))) } else { None },
        });
    }
    let total: u64 = vms.iter().map(|v| v.memory_mib).sum();
    let per_host = (total as f64 / (spec.hosts.max(1) as f64 * spec.fill)) as u64;
    let step = 65536;
    let memory_mib = per_host.div_ceil(step).max(1) * step;
    let max_vcpus = spec.vcpu_limits.then_some(memory_mib / 2048);
    let hosts: Vec<Host> = (0..spec.hosts)
        .map(|i| Host { name: format!("host{i:03}"), memory_mib, max_vcpus, accepts_restarts: true })
        .collect();
    let mut used = vec![(0u64, 0u64); hosts.len()];
    for vm in vms.iter_mut() {
        if hosts.is_empty() {
            break;
        }
        let start = rng.below(hosts.len() as u64) as usize;
        let fits = |h: usize, used: &[(u64, u64)]| {
            used[h].0 + vm.memory_mib <= hosts[h].memory_mib
                && hosts[h].max_vcpus.is_none_or(|c| used[h].1 + vm.vcpus <= c)
        };
        if let Some(h) = (0..hosts.len()).map(|d| (start + d) % hosts.len()).find(|&h| fits(h, &used)) {
            used[h].0 += vm.memory_mib;
            used[h].1 += vm.vcpus;
            vm.host = Some(h);
        }
    }
    Pool { hosts, vms }
}
