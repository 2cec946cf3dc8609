//! Host failures tolerated: closed-form bounds, then exact search between them.
//!
//! See docs/PLANNER.md for the proofs. In short, for a failure set F:
//! - sufficient (a packing exists): for every size group [a, b] of protected VMs,
//!   `D≥a(F) − a < Σ_{survivors} u_h(b)`, where `u_h(s)` is the least memory that first-fit
//!   decreasing must have placed on h before h rejects a VM of size s. Additive in F, so the
//!   worst k-set is the top k hosts by a per-host weight.
//! - necessary (else provably impossible): VMs of at least s MiB fit only on hosts with
//!   at least s MiB free, in total memory and in count; total vCPUs fit when every host limits them.
//! - between the two: every k-set the sufficient test cannot certify is packed exactly.

use super::pack::{pack, Bin, Item, PackOutcome};
use super::pool::{Pool, Protection};

/// Search effort allowed, counted in nodes (never in time: the library reads no clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Total nodes (failure sets examined + packing search nodes).
    pub max_nodes: u64,
    /// Nodes one failure set's packing search may use before it is left undecided.
    pub max_nodes_per_set: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget { max_nodes: 20_000_000, max_nodes_per_set: 200_000 }
    }
}

/// What the worst-case failure set is evidence of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorstCaseKind {
    /// Restarting after this set is proven impossible (it has `tolerated_max + 1` hosts).
    Infeasible,
    /// The pool tolerates losing every host; this is the set with the largest demand.
    MaxDemand,
}

/// How many simultaneous host failures the pool tolerates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tolerance {
    /// Number of hosts in the pool.
    pub hosts: usize,
    /// Proven: every set of this many failing hosts can be absorbed.
    pub tolerated_min: usize,
    /// Proven: some set of `tolerated_max + 1` failing hosts cannot (or it equals `hosts`).
    pub tolerated_max: usize,
    /// `tolerated_min == tolerated_max`.
    pub exact: bool,
    /// Protected VMs provably cannot all run even with no failure.
    pub overcommitted: bool,
    /// Host indices of the evidence set.
    pub worst_case: Vec<usize>,
    /// What `worst_case` shows.
    pub worst_case_kind: WorstCaseKind,
    /// Memory of the protected VMs that must restart after `worst_case` fails.
    pub worst_case_demand_mib: u64,
    /// Largest k the closed-form sufficient condition alone proves.
    pub sufficient_bound: usize,
    /// Largest k the closed-form necessary conditions allow.
    pub necessary_bound: usize,
    /// Failure sets that needed a packing search.
    pub sets_searched: u64,
    /// Nodes spent (sets + packing search nodes).
    pub nodes: u64,
}

/// Answer to "does the pool tolerate k failures?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Proven.
    Yes,
    /// Proven not: restarting after this failure set (host indices) is impossible.
    No(Vec<usize>),
    /// The budget ran out before a proof either way.
    Unknown,
}

/// Per-host weights and a bound: a failure set F satisfies the condition iff
/// `Σ_{h∈F} weight[h] <= bound`.
struct Linear {
    weight: Vec<i128>,
    bound: i128,
    /// `top[r]` = sum of the r largest weights.
    top: Vec<i128>,
    /// Hosts by decreasing weight.
    order: Vec<usize>,
}

impl Linear {
    fn new(weight: Vec<i128>, bound: i128) -> Linear {
        let mut order: Vec<usize> = (0..weight.len()).collect();
        order.sort_by(|&a, &b| weight[b].cmp(&weight[a]).then(a.cmp(&b)));
        let mut top = vec![0i128; weight.len() + 1];
        for (r, &h) in order.iter().enumerate() {
            top[r + 1] = top[r] + weight[h];
        }
        Linear { weight, bound, top, order }
    }
    /// Whether every k-set satisfies the condition.
    fn holds_for_all(&self, k: usize) -> bool {
        self.top[k] <= self.bound
    }
}

/// Precomputed view of a pool for failure analysis.
pub(crate) struct Model {
    n: usize,
    /// Free capacity of each host for restarts.
    bins: Vec<Bin>,
    /// Protected VMs running on each host.
    on_host: Vec<Vec<Item>>,
    /// Protected VMs not running anywhere: they must be placed in every scenario.
    orphans: Vec<Item>,
    /// Closed-form sufficient conditions (all must hold).
    sufficient: Vec<Linear>,
    /// Closed-form necessary conditions (each must hold).
    necessary: Vec<Linear>,
}

fn ceil_mul_div(v: u64, num: u64, den: u64) -> u64 {
    let r = (v as u128 * num as u128).div_ceil(den as u128);
    u64::try_from(r).unwrap_or(u64::MAX)
}

/// Sum of memory of items of at least `s` MiB.
fn mem_at_least(items: &[Item], s: u64) -> i128 {
    items.iter().filter(|i| i.memory_mib >= s).map(|i| i.memory_mib as i128).sum()
}

fn count_at_least(items: &[Item], s: u64) -> i128 {
    items.iter().filter(|i| i.memory_mib >= s).count() as i128
}

/// At most this many size groups / thresholds, to bound the closed-form cost.
const MAX_GROUPS: usize = 48;

impl Model {
    pub(crate) fn new(pool: &Pool) -> Model {
        let n = pool.hosts.len();
        let (used_mem, used_cpu) = pool.used();
        let bins: Vec<Bin> = (0..n).map(|h| pool.free_bin(h, &used_mem, &used_cpu)).collect();
        let mut on_host = vec![Vec::new(); n];
        let mut orphans = Vec::new();
        for vm in pool.vms.iter().filter(|v| v.protection == Protection::Protect) {
            let it = Item { memory_mib: vm.memory_mib, vcpus: vm.vcpus, group: None };
            match vm.host {
                Some(h) => on_host[h].push(it),
                None => orphans.push(it),
            }
        }
        let all: Vec<Item> = on_host.iter().flatten().chain(orphans.iter()).copied().collect();
        let mut sizes: Vec<u64> = all.iter().map(|i| i.memory_mib).collect();
        sizes.sort_unstable();
        sizes.dedup();

        let mut sufficient = Vec::new();
        let mut necessary = Vec::new();
        if !all.is_empty() {
            // Sufficient: groups of consecutive distinct sizes [a, b] covering every size.
            let cpu_max = all.iter().map(|i| i.vcpus).max().unwrap_or(1);
            // Least memory per vCPU among VMs to place (as a fraction), to turn a
            // vCPU-blocked host into a memory lower bound.
            let q = all
                .iter()
                .map(|i| (i.memory_mib, i.vcpus))
                .min_by(|x, y| (u128::from(x.0) * u128::from(y.1)).cmp(&(u128::from(y.0) * u128::from(x.1))))
                .unwrap_or((1, 1));
            let chunk = sizes.len().div_ceil(MAX_GROUPS);
            for g in sizes.chunks(chunk) {
                let (a, b) = (g[0], g[g.len() - 1]);
                let u: Vec<i128> = bins
                    .iter()
                    .map(|bin| {
                        let mem_term = (u128::from(bin.memory_mib) + 1).saturating_sub(u128::from(b));
                        let cpu_term = match bin.vcpus {
                            None => u128::from(u64::MAX),
                            Some(c) => u128::from(ceil_mul_div(
                                c.saturating_add(1).saturating_sub(cpu_max),
                                q.0,
                                q.1,
                            )),
                        };
                        mem_term.min(cpu_term) as i128
                    })
                    .collect();
                let u_all: i128 = u.iter().sum();
                let weight = (0..n).map(|h| mem_at_least(&on_host[h], a) + u[h]).collect();
                // Σ_F w < u_all + a − D0  ⇔  Σ_F w <= u_all + a − D0 − 1
                sufficient.push(Linear::new(weight, u_all + a as i128 - mem_at_least(&orphans, a) - 1));
            }
            // Necessary: any subset of thresholds is sound; sample the distinct sizes.
            let step = sizes.len().div_ceil(MAX_GROUPS);
            let mut thresholds: Vec<u64> = sizes.iter().copied().step_by(step).collect();
            if thresholds.last() != sizes.last() {
                thresholds.push(sizes[sizes.len() - 1]);
            }
            for &s in &thresholds {
                let f: Vec<i128> =
                    bins.iter().map(|b| if b.memory_mib >= s { b.memory_mib as i128 } else { 0 }).collect();
                let f_all: i128 = f.iter().sum();
                let weight = (0..n).map(|h| mem_at_least(&on_host[h], s) + f[h]).collect();
                necessary.push(Linear::new(weight, f_all - mem_at_least(&orphans, s)));
                let c: Vec<i128> = bins.iter().map(|b| (b.memory_mib / s) as i128).collect();
                let c_all: i128 = c.iter().sum();
                let weight = (0..n).map(|h| count_at_least(&on_host[h], s) + c[h]).collect();
                necessary.push(Linear::new(weight, c_all - count_at_least(&orphans, s)));
            }
            if n > 0 && bins.iter().all(|b| b.vcpus.is_some()) {
                let fc: Vec<i128> = bins.iter().map(|b| b.vcpus.unwrap_or(0) as i128).collect();
                let fc_all: i128 = fc.iter().sum();
                let vc = |items: &[Item]| items.iter().map(|i| i.vcpus as i128).sum::<i128>();
                let weight = (0..n).map(|h| vc(&on_host[h]) + fc[h]).collect();
                necessary.push(Linear::new(weight, fc_all - vc(&orphans)));
            }
        }
        Model { n, bins, on_host, orphans, sufficient, necessary }
    }

    /// Largest k the sufficient conditions prove for every k-set.
    fn sufficient_bound(&self) -> Option<usize> {
        (0..=self.n).rev().find(|&k| self.sufficient.iter().all(|c| c.holds_for_all(k)))
    }

    /// Smallest k for which some necessary condition fails, with the failing set.
    fn necessary_failure(&self) -> Option<(usize, Vec<usize>)> {
        let mut best: Option<(usize, Vec<usize>)> = None;
        for c in &self.necessary {
            if let Some(k) = (0..=self.n).find(|&k| !c.holds_for_all(k)) {
                if best.as_ref().is_none_or(|(bk, _)| k < *bk) {
                    best = Some((k, c.order[..k].to_vec()));
                }
            }
        }
        best
    }

    /// Memory of protected VMs that must restart when `failed` fail.
    pub(crate) fn demand_mib(&self, failed: &[usize]) -> u64 {
        let d: u128 = failed
            .iter()
            .flat_map(|&h| &self.on_host[h])
            .chain(&self.orphans)
            .map(|i| u128::from(i.memory_mib))
            .sum();
        // Validated pools stay far below (`pool::MAX_TOTAL`).
        u64::try_from(d).unwrap_or(u64::MAX)
    }

    /// Exact feasibility of one failure set.
    fn set_feasible(&self, failed: &[usize], limit: u64) -> (PackOutcome, u64) {
        let items: Vec<Item> =
            failed.iter().flat_map(|&h| self.on_host[h].iter()).chain(self.orphans.iter()).copied().collect();
        if items.is_empty() {
            return (PackOutcome::Packed(vec![]), 1);
        }
        let mut is_failed = vec![false; self.n];
        for &h in failed {
            is_failed[h] = true;
        }
        let bins: Vec<Bin> = (0..self.n).filter(|&h| !is_failed[h]).map(|h| self.bins[h].clone()).collect();
        pack(&items, &bins, false, limit)
    }
}

/// Search state for deciding one k.
struct KSearch<'a> {
    model: &'a Model,
    k: usize,
    /// Hosts in enumeration order (heaviest first, so impossible sets show up early).
    hosts: Vec<usize>,
    chosen: Vec<usize>,
    partial: Vec<i128>,
    budget: Budget,
    nodes: &'a mut u64,
    sets: &'a mut u64,
    unknown: bool,
}

impl KSearch<'_> {
    /// `Some(set)` if an impossible set is found; sets `unknown` when something is undecided.
    fn dfs(&mut self, next: usize) -> Option<Vec<usize>> {
        if *self.nodes >= self.budget.max_nodes {
            self.unknown = true;
            return None;
        }
        *self.nodes += 1;
        let r = self.k - self.chosen.len();
        // Prune: every completion is certified by the sufficient conditions.
        // (`top[r]` over all hosts overestimates the best completion, so this is sound.)
        if self.model.sufficient.iter().zip(&self.partial).all(|(c, p)| p + c.top[r] <= c.bound) {
            return None;
        }
        if r == 0 {
            *self.sets += 1;
            let limit = self.budget.max_nodes_per_set.min(self.budget.max_nodes - *self.nodes);
            let (out, spent) = self.model.set_feasible(&self.chosen, limit);
            *self.nodes += spent;
            return match out {
                PackOutcome::Packed(_) => None,
                PackOutcome::Infeasible => Some(self.chosen.clone()),
                PackOutcome::Unknown => {
                    self.unknown = true;
                    None
                }
            };
        }
        for i in next..=self.hosts.len() - r {
            let h = self.hosts[i];
            self.chosen.push(h);
            for (p, c) in self.partial.iter_mut().zip(&self.model.sufficient) {
                *p += c.weight[h];
            }
            let found = self.dfs(i + 1);
            for (p, c) in self.partial.iter_mut().zip(&self.model.sufficient) {
                *p -= c.weight[h];
            }
            self.chosen.pop();
            if found.is_some() {
                return found;
            }
            if *self.nodes >= self.budget.max_nodes {
                self.unknown = true;
                return None;
            }
        }
        None
    }
}

fn decide_k(model: &Model, k: usize, budget: Budget, nodes: &mut u64, sets: &mut u64) -> Verdict {
    // Heaviest hosts first: restart demand plus free capacity lost.
    let mut hosts: Vec<usize> = (0..model.n).collect();
    let key = |h: usize| {
        model.on_host[h].iter().map(|i| u128::from(i.memory_mib)).sum::<u128>()
            + u128::from(model.bins[h].memory_mib)
    };
    hosts.sort_by_key(|&h| std::cmp::Reverse(key(h)));
    let mut s = KSearch {
        model,
        k,
        hosts,
        chosen: Vec::with_capacity(k),
        partial: vec![0; model.sufficient.len()],
        budget,
        nodes,
        sets,
        unknown: false,
    };
    match s.dfs(0) {
        Some(set) => Verdict::No(set),
        None if s.unknown => Verdict::Unknown,
        None => Verdict::Yes,
    }
}

/// Decides whether the pool tolerates `k` simultaneous host failures.
pub fn tolerates(pool: &Pool, k: usize, budget: Budget) -> Verdict {
    let model = Model::new(pool);
    if k > model.n {
        return Verdict::No((0..model.n).collect());
    }
    if model.sufficient_bound().is_some_and(|lo| k <= lo) {
        return Verdict::Yes;
    }
    if let Some((kf, set)) = model.necessary_failure() {
        if k >= kf {
            // Any k-set containing the witness is also impossible (monotone).
            let mut set = set;
            for h in 0..model.n {
                if set.len() >= k {
                    break;
                }
                if !set.contains(&h) {
                    set.push(h);
                }
            }
            return Verdict::No(set);
        }
    }
    let (mut nodes, mut sets) = (0, 0);
    decide_k(&model, k, budget, &mut nodes, &mut sets)
}

/// Computes the failures tolerated, exactly where the budget allows, bounds otherwise.
pub fn tolerance(pool: &Pool, budget: Budget) -> Tolerance {
    let model = Model::new(pool);
    let n = model.n;
    let (mut nodes, mut sets) = (0u64, 0u64);
    let sufficient_bound = model.sufficient_bound();
    let necessary = model.necessary_failure();
    // hi_fail: smallest k proven impossible, with its witness.
    let mut hi_fail: Option<(usize, Vec<usize>)> = necessary.clone();
    let necessary_bound = necessary.as_ref().map_or(n, |(k, _)| k.saturating_sub(1));
    let mut overcommitted = matches!(necessary, Some((0, _)));
    // lo: largest k proven; None when not even k = 0 is proven.
    let mut lo: Option<usize> = sufficient_bound;
    let first = lo.map_or(0, |l| l + 1);
    let last = hi_fail.as_ref().map_or(n, |(k, _)| k.saturating_sub(1));
    if !overcommitted {
        for k in first..=last {
            match decide_k(&model, k, budget, &mut nodes, &mut sets) {
                // Monotone: proving k proves every smaller k, whatever was undecided.
                Verdict::Yes => lo = Some(k),
                Verdict::No(set) => {
                    hi_fail = Some((k, set));
                    overcommitted = k == 0;
                    break;
                }
                Verdict::Unknown => {}
            }
        }
    }
    let tolerated_min = lo.unwrap_or(0);
    let tolerated_max = hi_fail.as_ref().map_or(n, |(k, _)| k.saturating_sub(1));
    let (worst_case, worst_case_kind) = match hi_fail {
        Some((_, set)) => (set, WorstCaseKind::Infeasible),
        None => ((0..n).collect(), WorstCaseKind::MaxDemand),
    };
    let worst_case_demand_mib = model.demand_mib(&worst_case);
    Tolerance {
        hosts: n,
        tolerated_min,
        tolerated_max,
        // Overcommitted pools tolerate 0 by definition, proven.
        exact: tolerated_min == tolerated_max,
        overcommitted,
        worst_case,
        worst_case_kind,
        worst_case_demand_mib,
        sufficient_bound: sufficient_bound.unwrap_or(0),
        necessary_bound,
        sets_searched: sets,
        nodes,
    }
}
