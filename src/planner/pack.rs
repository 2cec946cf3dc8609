//! Exact two-dimensional bin-packing feasibility (memory, vCPUs) with branch and bound.
//!
//! Items are VMs to restart; bins are the free capacity of surviving hosts. The search is
//! exact: `Infeasible` is a proof, `Packed` carries a placement. A node budget bounds the
//! work; when it runs out the answer is `Unknown` (never a guess).

/// Something to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Item {
    /// Memory needed.
    pub memory_mib: u64,
    /// vCPUs needed.
    pub vcpus: u64,
    /// Anti-affinity group (only used when the packer is asked to honor groups).
    pub group: Option<u32>,
}

/// Free capacity of one host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bin {
    /// Free memory.
    pub memory_mib: u64,
    /// Free vCPUs; `None` when the host does not limit vCPUs.
    pub vcpus: Option<u64>,
    /// Anti-affinity groups already present on the host.
    pub groups: Vec<u32>,
}

/// Result of a packing attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PackOutcome {
    /// A placement: `bins[i]` is the bin index of item `i` (input order).
    Packed(Vec<usize>),
    /// Proven impossible.
    Infeasible,
    /// The node budget ran out before an answer.
    Unknown,
}

const UNLIMITED: u64 = u64::MAX;

struct State {
    mem: Vec<u64>,
    cpu: Vec<u64>,
    groups: Vec<Vec<u32>>,
}

impl State {
    fn fits(&self, b: usize, it: &Item, honor_groups: bool) -> bool {
        self.mem[b] >= it.memory_mib
            && self.cpu[b] >= it.vcpus
            && !(honor_groups && it.group.is_some_and(|g| self.groups[b].contains(&g)))
    }
    fn put(&mut self, b: usize, it: &Item) {
        self.mem[b] -= it.memory_mib;
        if self.cpu[b] != UNLIMITED {
            self.cpu[b] -= it.vcpus;
        }
        if let Some(g) = it.group {
            self.groups[b].push(g);
        }
    }
    fn take(&mut self, b: usize, it: &Item) {
        self.mem[b] += it.memory_mib;
        if self.cpu[b] != UNLIMITED {
            self.cpu[b] += it.vcpus;
        }
        if it.group.is_some() {
            self.groups[b].pop();
        }
    }
}

/// Decides whether `items` fit into `bins`, spending at most `node_limit` search nodes.
///
/// Returns the outcome and the nodes spent (greedy attempts count one node per item).
/// With `honor_groups`, no two items of one group share a bin, nor an item and a bin
/// already holding its group.
pub fn pack(items: &[Item], bins: &[Bin], honor_groups: bool, node_limit: u64) -> (PackOutcome, u64) {
    let mut order: Vec<usize> = (0..items.len()).collect();
    // Largest first: big items constrain most, and the pruning bounds assume it.
    order.sort_by(|&a, &b| {
        let (x, y) = (&items[a], &items[b]);
        (y.memory_mib, y.vcpus, x.group).cmp(&(x.memory_mib, x.vcpus, y.group))
    });
    let sorted: Vec<Item> = order.iter().map(|&i| items[i]).collect();
    let state = State {
        mem: bins.iter().map(|b| b.memory_mib).collect(),
        cpu: bins.iter().map(|b| b.vcpus.unwrap_or(UNLIMITED)).collect(),
        groups: bins.iter().map(|b| b.groups.clone()).collect(),
    };
    let all_cpu_limited = bins.iter().all(|b| b.vcpus.is_some());
    // Exact totals: u64 sizes never wrap in u128.
    let sum = |it: &mut dyn Iterator<Item = u64>| it.map(u128::from).sum::<u128>();
    let total_mem = sum(&mut sorted.iter().map(|i| i.memory_mib));
    let total_cpu = sum(&mut sorted.iter().map(|i| i.vcpus));
    if total_mem > sum(&mut state.mem.iter().copied())
        || (all_cpu_limited && total_cpu > sum(&mut state.cpu.iter().copied()))
    {
        return (PackOutcome::Infeasible, 1);
    }
    let unsort = |assign: Vec<usize>| {
        let mut out = vec![0; items.len()];
        for (pos, &i) in order.iter().enumerate() {
            out[i] = assign[pos];
        }
        out
    };
    let mut spent = 0u64;
    // Greedy first: it answers almost every realistic instance at once.
    for best_fit in [false, true] {
        spent += sorted.len() as u64;
        if let Some(a) = greedy(&sorted, state_clone(&state), honor_groups, best_fit) {
            return (PackOutcome::Packed(unsort(a)), spent);
        }
    }
    let mut search = Search {
        items: &sorted,
        state,
        honor_groups,
        all_cpu_limited,
        suffix_mem: suffix_sums(sorted.iter().map(|i| i.memory_mib)),
        suffix_cpu: suffix_sums(sorted.iter().map(|i| i.vcpus)),
        suffix_min_cpu: suffix_mins(sorted.iter().map(|i| i.vcpus)),
        assign: vec![0; sorted.len()],
        nodes: 0,
        limit: node_limit.saturating_sub(spent),
        tried: vec![Vec::new(); sorted.len()],
    };
    let found = search.dfs(0);
    spent += search.nodes;
    match found {
        Some(true) => (PackOutcome::Packed(unsort(search.assign)), spent),
        Some(false) => (PackOutcome::Infeasible, spent),
        None => (PackOutcome::Unknown, spent),
    }
}

fn state_clone(s: &State) -> State {
    State { mem: s.mem.clone(), cpu: s.cpu.clone(), groups: s.groups.clone() }
}

fn suffix_sums(it: impl DoubleEndedIterator<Item = u64> + ExactSizeIterator) -> Vec<u64> {
    let mut out = vec![0u64; it.len() + 1];
    for (i, v) in it.enumerate().rev() {
        // Saturating keeps the pruning sound: a saturated sum never proves "does not fit".
        out[i] = out[i + 1].saturating_add(v);
    }
    out
}

fn suffix_mins(it: impl DoubleEndedIterator<Item = u64> + ExactSizeIterator) -> Vec<u64> {
    let mut out = vec![u64::MAX; it.len() + 1];
    for (i, v) in it.enumerate().rev() {
        out[i] = out[i + 1].min(v);
    }
    out
}

fn greedy(items: &[Item], mut st: State, honor_groups: bool, best_fit: bool) -> Option<Vec<usize>> {
    let mut assign = Vec::with_capacity(items.len());
    for it in items {
        let candidates = (0..st.mem.len()).filter(|&b| st.fits(b, it, honor_groups));
        let b = if best_fit { candidates.min_by_key(|&b| st.mem[b]) } else { candidates.into_iter().next() }?;
        st.put(b, it);
        assign.push(b);
    }
    Some(assign)
}

struct Search<'a> {
    items: &'a [Item],
    state: State,
    honor_groups: bool,
    all_cpu_limited: bool,
    suffix_mem: Vec<u64>,
    suffix_cpu: Vec<u64>,
    suffix_min_cpu: Vec<u64>,
    assign: Vec<usize>,
    nodes: u64,
    limit: u64,
    /// Per depth: bin states already tried (symmetry), reused to avoid allocation.
    tried: Vec<Vec<(u64, u64)>>,
}

impl Search<'_> {
    /// `Some(true)` packed, `Some(false)` proven impossible, `None` budget exhausted.
    fn dfs(&mut self, i: usize) -> Option<bool> {
        if i == self.items.len() {
            return Some(true);
        }
        self.nodes += 1;
        if self.nodes > self.limit {
            return None;
        }
        // Waste bound: capacity no remaining item can use is lost.
        let min_mem = self.items[self.items.len() - 1].memory_mib;
        let min_cpu = self.suffix_min_cpu[i];
        let (mut usable_mem, mut usable_cpu) = (0u64, 0u64);
        for b in 0..self.state.mem.len() {
            if self.state.mem[b] >= min_mem && self.state.cpu[b] >= min_cpu {
                usable_mem = usable_mem.saturating_add(self.state.mem[b]);
                usable_cpu = usable_cpu.saturating_add(self.state.cpu[b]);
            }
        }
        if usable_mem < self.suffix_mem[i] || (self.all_cpu_limited && usable_cpu < self.suffix_cpu[i]) {
            return Some(false);
        }
        let it = self.items[i];
        // Identical consecutive items go to non-decreasing bins (symmetry breaking).
        let start = if i > 0 && self.items[i - 1] == it { self.assign[i - 1] } else { 0 };
        let symmetric = !self.honor_groups || self.items.iter().all(|x| x.group.is_none());
        self.tried[i].clear();
        for b in start..self.state.mem.len() {
            if !self.state.fits(b, &it, self.honor_groups) {
                continue;
            }
            // Bins with identical free capacity are interchangeable for the rest of the search.
            let key = (self.state.mem[b], self.state.cpu[b]);
            if symmetric {
                if self.tried[i].contains(&key) {
                    continue;
                }
                self.tried[i].push(key);
            }
            self.state.put(b, &it);
            self.assign[i] = b;
            let r = self.dfs(i + 1);
            self.state.take(b, &it);
            match r {
                Some(false) => {}
                other => return other,
            }
        }
        Some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(m: u64) -> Item {
        Item { memory_mib: m, vcpus: 1, group: None }
    }
    fn bin(m: u64) -> Bin {
        Bin { memory_mib: m, vcpus: None, groups: vec![] }
    }

    #[test]
    fn greedy_fails_but_exact_packs() {
        // First-fit and best-fit decreasing both strand the last 2; 5+3+2 and 4+4+2 fit.
        let items: Vec<Item> = [5, 4, 4, 3, 2, 2].iter().map(|&m| item(m)).collect();
        let bins = vec![bin(10), bin(10)];
        let (out, nodes) = pack(&items, &bins, false, 1000);
        assert!(matches!(out, PackOutcome::Packed(_)), "{out:?}");
        assert!(nodes > 2 * items.len() as u64, "the exact search must have run");
    }

    #[test]
    fn proves_infeasible() {
        let items: Vec<Item> = [6, 6, 6].iter().map(|&m| item(m)).collect();
        let bins = vec![bin(10), bin(10)];
        assert_eq!(pack(&items, &bins, false, 1000).0, PackOutcome::Infeasible);
    }

    #[test]
    fn vcpus_bind() {
        let items = vec![Item { memory_mib: 1, vcpus: 3, group: None }; 2];
        let bins = vec![Bin { memory_mib: 100, vcpus: Some(4), groups: vec![] }];
        assert_eq!(pack(&items, &bins, false, 1000).0, PackOutcome::Infeasible);
    }

    #[test]
    fn groups_honored() {
        let items = vec![Item { memory_mib: 1, vcpus: 1, group: Some(0) }; 2];
        let bins = vec![bin(10), Bin { memory_mib: 10, vcpus: None, groups: vec![0] }];
        assert_eq!(pack(&items, &bins, true, 1000).0, PackOutcome::Infeasible);
        assert!(matches!(pack(&items, &bins, false, 1000).0, PackOutcome::Packed(_)));
    }
}
