//! Restart plans: where the VMs of failed hosts restart.
//!
//! Protected VMs first (exact packing, so they are all placed whenever that is possible),
//! then best-effort VMs while capacity remains; `none` never. Anti-affinity is honored
//! when some placement of the protected VMs allows it, and reported where it is not.

use super::pack::{pack, Bin, Item, PackOutcome};
use super::pool::{Pool, Protection};
use super::tolerance::Budget;
use std::collections::HashMap;

/// One VM restarted on one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Index into [`Pool::vms`].
    pub vm: usize,
    /// Index into [`Pool::hosts`].
    pub host: usize,
    /// The VM's restart order (lower first; `None` after all ordered VMs of its level).
    pub order: Option<i64>,
    /// The VM's protection level.
    pub protection: Protection,
    /// False when the VM shares the host with another VM of its anti-affinity group.
    pub anti_affinity_honored: bool,
}

/// Why a VM is not restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnplacedReason {
    /// Its protection is `none`.
    NotProtected,
    /// No surviving host has room for it (after higher-priority restarts).
    NoCapacity,
}

impl UnplacedReason {
    /// Short machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            UnplacedReason::NotProtected => "not-protected",
            UnplacedReason::NoCapacity => "no-capacity",
        }
    }
    /// Sentence for people.
    pub fn message(self) -> &'static str {
        match self {
            UnplacedReason::NotProtected => "protection is none: never restarted",
            UnplacedReason::NoCapacity => {
                "no surviving host has enough free memory/vCPUs left after higher-priority restarts"
            }
        }
    }
}

/// A VM left out of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unplaced {
    /// Index into [`Pool::vms`].
    pub vm: usize,
    /// Why.
    pub reason: UnplacedReason,
}

/// The restart plan for one failure set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPlan {
    /// Failed host indices.
    pub failed: Vec<usize>,
    /// Restarts, protected first, then by order.
    pub placements: Vec<Placement>,
    /// VMs of failed hosts (and unstarted protected VMs) left out.
    pub unplaced: Vec<Unplaced>,
    /// Every protected VM is placed.
    pub protected_complete: bool,
}

/// What is wrong with a failure set.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// A failed host name is not in the pool.
    #[error("host `{0}` is not in the pool; list hosts by the names in the pool file")]
    UnknownHost(String),
    /// A host is listed twice.
    #[error("host `{0}` is listed twice in the failure set; list each host once")]
    DuplicateHost(String),
}

/// Resolves host names to indices.
pub fn failure_set<S: AsRef<str>>(pool: &Pool, names: &[S]) -> Result<Vec<usize>, PlanError> {
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        let name = name.as_ref();
        let h = pool.host_index(name).ok_or_else(|| PlanError::UnknownHost(name.to_string()))?;
        if out.contains(&h) {
            return Err(PlanError::DuplicateHost(name.to_string()));
        }
        out.push(h);
    }
    Ok(out)
}

/// Sort key for restart order within a level: ordered VMs first (ascending), then unordered.
pub(crate) fn order_key(order: Option<i64>) -> (bool, i64) {
    (order.is_none(), order.unwrap_or(0))
}

/// Builds the restart plan for the failure of hosts `failed` (indices, assumed distinct).
pub fn restart_plan(pool: &Pool, failed: &[usize], budget: Budget) -> RestartPlan {
    let n = pool.hosts.len();
    let mut is_failed = vec![false; n];
    for &h in failed {
        is_failed[h] = true;
    }
    let mut group_ids: HashMap<&str, u32> = HashMap::new();
    let mut vm_group: Vec<Option<u32>> = Vec::with_capacity(pool.vms.len());
    for vm in &pool.vms {
        vm_group.push(vm.anti_affinity.as_deref().map(|g| {
            let next = group_ids.len() as u32;
            *group_ids.entry(g).or_insert(next)
        }));
    }
    let survivors: Vec<usize> = (0..n).filter(|&h| !is_failed[h]).collect();
    let (used_mem, used_cpu) = pool.used();
    let mut bins: Vec<Bin> = survivors.iter().map(|&h| pool.free_bin(h, &used_mem, &used_cpu)).collect();
    let bin_of: HashMap<usize, usize> = survivors.iter().enumerate().map(|(b, &h)| (h, b)).collect();
    for (v, vm) in pool.vms.iter().enumerate() {
        if let (Some(h), Some(g)) = (vm.host, vm_group[v]) {
            if let Some(&b) = bin_of.get(&h) {
                bins[b].groups.push(g);
            }
        }
    }

    let affected = |v: usize| pool.vms[v].host.is_some_and(|h| is_failed[h]);
    let by_priority = |list: &mut Vec<usize>| {
        list.sort_by(|&a, &b| {
            let (x, y) = (&pool.vms[a], &pool.vms[b]);
            order_key(x.order)
                .cmp(&order_key(y.order))
                .then(y.memory_mib.cmp(&x.memory_mib))
                .then(x.name.cmp(&y.name))
        })
    };
    let mut protected: Vec<usize> = (0..pool.vms.len())
        .filter(|&v| {
            pool.vms[v].protection == Protection::Protect && (pool.vms[v].host.is_none() || affected(v))
        })
        .collect();
    let mut best_effort: Vec<usize> = (0..pool.vms.len())
        .filter(|&v| pool.vms[v].protection == Protection::BestEffort && affected(v))
        .collect();
    let mut unplaced: Vec<Unplaced> = (0..pool.vms.len())
        .filter(|&v| pool.vms[v].protection == Protection::None && affected(v))
        .map(|vm| Unplaced { vm, reason: UnplacedReason::NotProtected })
        .collect();
    by_priority(&mut protected);
    by_priority(&mut best_effort);

    let item =
        |v: usize| Item { memory_mib: pool.vms[v].memory_mib, vcpus: pool.vms[v].vcpus, group: vm_group[v] };
    let items: Vec<Item> = protected.iter().map(|&v| item(v)).collect();
    // Exact packing of all protected VMs: with anti-affinity if possible, else without.
    let mut assignment = None;
    if let (PackOutcome::Packed(a), _) = pack(&items, &bins, true, budget.max_nodes_per_set) {
        assignment = Some(a);
    }
    if assignment.is_none() && items.iter().any(|i| i.group.is_some()) {
        // Anti-affinity cannot hold for all: a greedy that prefers clean hosts keeps most of it.
        assignment = greedy_all(&bins, &items);
    }
    if assignment.is_none() {
        if let (PackOutcome::Packed(a), _) = pack(&items, &bins, false, budget.max_nodes_per_set) {
            assignment = Some(a);
        }
    }
    let mut state = bins;
    let mut placed: Vec<(usize, usize)> = Vec::new();
    let mut put = |state: &mut Vec<Bin>, v: usize, b: usize| {
        let it = item(v);
        state[b].memory_mib -= it.memory_mib;
        if let Some(c) = state[b].vcpus.as_mut() {
            *c -= it.vcpus;
        }
        if let Some(g) = it.group {
            state[b].groups.push(g);
        }
        placed.push((v, b));
    };
    match assignment {
        Some(a) => {
            for (i, &v) in protected.iter().enumerate() {
                put(&mut state, v, a[i]);
            }
        }
        None => {
            // Not all fit: place by priority so higher-priority VMs keep their places.
            for &v in &protected {
                match choose(&state, &item(v)) {
                    Some(b) => put(&mut state, v, b),
                    None => unplaced.push(Unplaced { vm: v, reason: UnplacedReason::NoCapacity }),
                }
            }
        }
    }
    for &v in &best_effort {
        match choose(&state, &item(v)) {
            Some(b) => put(&mut state, v, b),
            None => unplaced.push(Unplaced { vm: v, reason: UnplacedReason::NoCapacity }),
        }
    }

    // Anti-affinity is honored when no other VM of the group ended up on the host.
    let mut count: HashMap<(usize, u32), usize> = HashMap::new();
    for (b, bin) in state.iter().enumerate() {
        for &g in &bin.groups {
            *count.entry((b, g)).or_insert(0) += 1;
        }
    }
    let protected_complete = unplaced.iter().all(|u| pool.vms[u.vm].protection != Protection::Protect);
    let mut placements: Vec<Placement> = placed
        .into_iter()
        .map(|(v, b)| Placement {
            vm: v,
            host: survivors[b],
            order: pool.vms[v].order,
            protection: pool.vms[v].protection,
            anti_affinity_honored: vm_group[v].is_none_or(|g| count[&(b, g)] <= 1),
        })
        .collect();
    placements.sort_by(|x, y| {
        (x.protection, order_key(x.order), &pool.vms[x.vm].name).cmp(&(
            y.protection,
            order_key(y.order),
            &pool.vms[y.vm].name,
        ))
    });
    unplaced.sort_by(|x, y| {
        let (a, b) = (&pool.vms[x.vm], &pool.vms[y.vm]);
        (a.protection, order_key(a.order), &a.name).cmp(&(b.protection, order_key(b.order), &b.name))
    });
    RestartPlan { failed: failed.to_vec(), placements, unplaced, protected_complete }
}

/// Host for one VM: the one with most free memory among those that keep anti-affinity,
/// else among all that fit (spreading load leaves room for later restarts of other sizes).
fn choose(state: &[Bin], it: &Item) -> Option<usize> {
    let fits = |b: &Bin| b.memory_mib >= it.memory_mib && b.vcpus.is_none_or(|c| c >= it.vcpus);
    let clean = |b: &Bin| it.group.is_none_or(|g| !b.groups.contains(&g));
    let best = |pred: &dyn Fn(&Bin) -> bool| {
        (0..state.len())
            .filter(|&b| fits(&state[b]) && pred(&state[b]))
            .max_by_key(|&b| (state[b].memory_mib, std::cmp::Reverse(b)))
    };
    best(&clean).or_else(|| best(&|_| true))
}

/// Places every item in order with [`choose`]; `None` if one does not fit.
fn greedy_all(bins: &[Bin], items: &[Item]) -> Option<Vec<usize>> {
    let mut state = bins.to_vec();
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let b = choose(&state, it)?;
        state[b].memory_mib -= it.memory_mib;
        if let Some(c) = state[b].vcpus.as_mut() {
            *c -= it.vcpus;
        }
        state[b].groups.extend(it.group);
        out.push(b);
    }
    Some(out)
}
