//! The network-partition decision rule: which hosts keep running when the hosts stop hearing each
//! other on the network (docs/PARTITIONS.md argues it). Pure functions, no I/O, no clock, no
//! allocation.
//!
//! [`decide`] (the heartbeat disk still works): the survivors are the best clique of the MUTUAL
//! hearing graph (a–b is an edge iff a hears b and b hears a), ranked by
//! 1. most hosts,
//! 2. most hosts that are not isolated (configured isolation addresses, none reachable),
//! 3. most total weight,
//! 4. the lexicographically smallest sorted slot list.
//!
//! [`decide_lun_lost`] (the whole heartbeat LUN is lost, the network works): the best clique of the
//! hosts of the last known membership survives only if it holds a strict majority of that
//! membership, or exactly half of it including its lowest slot. Otherwise nobody survives.
//!
//! Up to [`MAX_HOSTS`] participants: slots are mapped to indices 0..n in slot order and every set
//! is one `u64`. Above that, or on malformed input, the answer is [`NoDecision`]: the caller keeps
//! the behaviour it has without this rule (disk intact: fence nobody for a partition; LUN lost:
//! the storage-lost self-fence stands).

use crate::format::record::NetView;
use crate::format::MAX_SLOTS;

/// Most participating hosts the rule decides for (one `u64` bitset).
pub const MAX_HOSTS: usize = 64;

/// Search nodes after which [`decide`] gives up ([`NoDecision::SearchLimit`]). The count depends
/// only on the input, so every host computing from the same views gives up alike. The worst input
/// measured at 64 hosts needed about 13,000 nodes, ~80 times fewer (docs/PARTITIONS.md, "Cost").
pub const MAX_SEARCH_NODES: u64 = 1 << 20;

const SLOT_WORDS: usize = (MAX_SLOTS / 64) as usize;

/// A set of slots (0..MAX_SLOTS), fixed size: building and copying one never allocates.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SlotSet([u64; SLOT_WORDS]);

impl SlotSet {
    pub const EMPTY: SlotSet = SlotSet([0; SLOT_WORDS]);

    pub fn insert(&mut self, slot: u32) {
        assert!(slot < MAX_SLOTS, "slot {slot} out of range");
        self.0[(slot / 64) as usize] |= 1 << (slot % 64);
    }
    pub fn remove(&mut self, slot: u32) {
        if slot < MAX_SLOTS {
            self.0[(slot / 64) as usize] &= !(1 << (slot % 64));
        }
    }
    pub fn contains(&self, slot: u32) -> bool {
        slot < MAX_SLOTS && self.0[(slot / 64) as usize] & (1 << (slot % 64)) != 0
    }
    pub fn len(&self) -> u32 {
        self.0.iter().map(|w| w.count_ones()).sum()
    }
    pub fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
    #[must_use]
    pub fn union(&self, other: &SlotSet) -> SlotSet {
        let mut out = *self;
        for (a, b) in out.0.iter_mut().zip(other.0.iter()) {
            *a |= b;
        }
        out
    }
    pub fn intersects(&self, other: &SlotSet) -> bool {
        self.0.iter().zip(other.0.iter()).any(|(a, b)| a & b != 0)
    }
    /// The lowest slot in the set.
    pub fn lowest(&self) -> Option<u32> {
        self.0.iter().enumerate().find(|(_, &w)| w != 0).map(|(i, w)| i as u32 * 64 + w.trailing_zeros())
    }
    /// Slots in the set, in order.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.iter().enumerate().flat_map(|(i, &w)| {
            let mut w = w;
            std::iter::from_fn(move || {
                if w == 0 {
                    return None;
                }
                let bit = w.trailing_zeros();
                w &= w - 1;
                Some(i as u32 * 64 + bit)
            })
        })
    }
    pub fn from_slots(slots: impl IntoIterator<Item = u32>) -> SlotSet {
        let mut set = SlotSet::EMPTY;
        for slot in slots {
            set.insert(slot);
        }
        set
    }
}

impl std::fmt::Debug for SlotSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// One participating host (disk: its record is live and advancing; LUN lost: it was in the last
/// membership and its packets arrive).
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    pub slot: u32,
    /// The slots it hears on the network (bit for its own slot ignored).
    pub view: &'a NetView,
    /// From configuration (default 1).
    pub weight: u32,
    /// It reaches none of its configured isolation addresses.
    pub isolated: bool,
    /// It has isolation addresses configured. Without any it never counts as isolated.
    pub has_isolation_addresses: bool,
}

impl Host<'_> {
    /// Counted as isolated by criterion 2.
    pub fn counts_isolated(&self) -> bool {
        self.isolated && self.has_isolation_addresses
    }
}

/// Why no decision was made: the caller must act as if this rule did not exist (disk intact: fence
/// nobody for a partition; LUN lost: the storage-lost self-fence stands).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NoDecision {
    #[error("no participating host")]
    NoHosts,
    #[error("{hosts} participating hosts: the partition rule decides for at most {MAX_HOSTS}")]
    TooManyHosts { hosts: usize },
    #[error("slot {slot} appears twice among the participating hosts")]
    DuplicateSlot { slot: u32 },
    #[error("slot {slot} is out of range (at most {MAX_SLOTS} slots)")]
    SlotOutOfRange { slot: u32 },
    #[error("clique search stopped after {nodes} nodes without an answer")]
    SearchLimit { nodes: u64 },
}

/// The criterion that set the survivors apart from the best other clique (for status and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum Reason {
    /// Everyone mutually hears everyone: no partition.
    Whole { hosts: u32 },
    /// No other clique is as large.
    Largest { size: u32, rival_size: u32 },
    /// As large as another clique, with fewer isolated hosts.
    LessIsolated { isolated: u32, rival_isolated: u32 },
    /// Tied on size and isolation, heavier.
    Heavier { weight: u64, rival_weight: u64 },
    /// Tied on size, isolation and weight: the lexicographically smallest slot list wins.
    LowestSlot,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// A clique of the mutual hearing graph, never empty.
    pub survivors: SlotSet,
    pub reason: Reason,
    /// The survivors' figures for criteria 1-3.
    pub size: u32,
    pub isolated: u32,
    pub weight: u64,
}

impl Decision {
    /// Whether `slot` must fence itself: every slot outside the survivors (a host that was not
    /// among the participants has no claim either).
    pub fn must_fence(&self, slot: u32) -> bool {
        !self.survivors.contains(slot)
    }
}

/// Why a part survives a whole-LUN loss, or why none does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum LunReason {
    /// The survivors hold a strict majority of the last membership.
    Majority { size: u32, membership: u32 },
    /// Exactly half of the last membership, including its lowest slot.
    HalfWithLowestSlot { size: u32, membership: u32, lowest_slot: u32 },
    /// No mutual clique holds a quorum: everyone fences.
    NoQuorum { best_size: u32, membership: u32 },
}

/// The outcome of [`decide_lun_lost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LunDecision {
    /// Empty when no part holds a quorum.
    pub survivors: SlotSet,
    pub reason: LunReason,
}

impl LunDecision {
    pub fn must_fence(&self, slot: u32) -> bool {
        !self.survivors.contains(slot)
    }
}

/// The mutual hearing graph over hosts in slot order (index i = i-th lowest slot).
struct Graph {
    n: usize,
    slots: [u32; MAX_HOSTS],
    adj: [u64; MAX_HOSTS],
    /// Criteria 1-3 as one number: ordering values orders (size, not isolated, weight)
    /// lexicographically, and values add without carrying between fields (64 × 1 < 2^48,
    /// 64 × u32::MAX < 2^48).
    value: [u128; MAX_HOSTS],
}

const SIZE_SHIFT: u32 = 96;
const NOT_ISOLATED_SHIFT: u32 = 48;
const FIELD_MASK: u128 = (1 << 48) - 1;

fn size_of(value: u128) -> u32 {
    (value >> SIZE_SHIFT) as u32
}
fn not_isolated_of(value: u128) -> u32 {
    ((value >> NOT_ISOLATED_SHIFT) & FIELD_MASK) as u32
}
fn weight_of(value: u128) -> u64 {
    (value & FIELD_MASK) as u64
}

fn bit(i: usize) -> u64 {
    1 << i
}
fn all(n: usize) -> u64 {
    if n == 64 {
        u64::MAX
    } else {
        bit(n) - 1
    }
}

impl Graph {
    /// `include(host)`: whether the host takes part (all for `decide`; the last membership for
    /// `decide_lun_lost`).
    fn build(hosts: &[Host<'_>], include: impl Fn(&Host<'_>) -> bool) -> Result<Graph, NoDecision> {
        let mut order = [(0u32, 0usize); MAX_HOSTS];
        let mut n = 0;
        for (i, host) in hosts.iter().enumerate() {
            if host.slot >= MAX_SLOTS {
                return Err(NoDecision::SlotOutOfRange { slot: host.slot });
            }
            if !include(host) {
                continue;
            }
            if n == MAX_HOSTS {
                return Err(NoDecision::TooManyHosts { hosts: hosts.iter().filter(|&h| include(h)).count() });
            }
            order[n] = (host.slot, i);
            n += 1;
        }
        if n == 0 {
            return Err(NoDecision::NoHosts);
        }
        let order = &mut order[..n];
        order.sort_unstable();
        if let Some(w) = order.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(NoDecision::DuplicateSlot { slot: w[0].0 });
        }
        let mut g = Graph { n, slots: [0; MAX_HOSTS], adj: [0; MAX_HOSTS], value: [0; MAX_HOSTS] };
        for (i, &(slot, host)) in order.iter().enumerate() {
            let h = &hosts[host];
            g.slots[i] = slot;
            g.value[i] = (1 << SIZE_SHIFT)
                | (u128::from(!h.counts_isolated()) << NOT_ISOLATED_SHIFT)
                | u128::from(h.weight);
        }
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = (&hosts[order[i].1], &hosts[order[j].1]);
                // Only mutual hearing counts.
                if a.view.get(b.slot) && b.view.get(a.slot) {
                    g.adj[i] |= bit(j);
                    g.adj[j] |= bit(i);
                }
            }
        }
        Ok(g)
    }

    fn value_of(&self, set: u64) -> u128 {
        let mut v = 0;
        let mut s = set;
        while s != 0 {
            v += self.value[s.trailing_zeros() as usize];
            s &= s - 1;
        }
        v
    }

    fn slots_of(&self, set: u64) -> SlotSet {
        let mut out = SlotSet::EMPTY;
        let mut s = set;
        while s != 0 {
            out.insert(self.slots[s.trailing_zeros() as usize]);
            s &= s - 1;
        }
        out
    }

    /// Upper bound on the value of any clique inside `p`: greedy colouring into independent sets
    /// (a clique holds at most one host of each), summing each set's largest value.
    fn colour_bound(&self, p: u64) -> u128 {
        let mut bound = 0;
        let mut uncoloured = p;
        while uncoloured != 0 {
            let mut candidates = uncoloured;
            let mut top = 0;
            while candidates != 0 {
                let v = candidates.trailing_zeros() as usize;
                candidates &= !self.adj[v] & !bit(v);
                uncoloured &= !bit(v);
                top = top.max(self.value[v]);
            }
            bound += top;
        }
        bound
    }
}

/// Exact branch and bound over cliques in lexicographic order of their sorted index lists
/// (Carraghan–Pardalos with a colouring bound). A clique R is extended only by hosts above its
/// highest, lowest first, so cliques are visited in the order of criterion 4 among equal sizes:
/// the first clique reaching a value is the winner among those of that value, and a subtree
/// whose bound does not EXCEED the best value so far can be skipped whole (ties lose to what was
/// found first).
struct Search<'g> {
    g: &'g Graph,
    /// Never recorded as best (finding the runner-up).
    exclude: Option<u64>,
    best: u64,
    best_value: u128,
    nodes: u64,
}

impl Search<'_> {
    fn run(g: &Graph, candidates: u64, exclude: Option<u64>) -> Result<(u64, u128), NoDecision> {
        let mut s = Search { g, exclude, best: 0, best_value: 0, nodes: 0 };
        s.expand(0, 0, candidates)?;
        Ok((s.best, s.best_value))
    }

    fn expand(&mut self, r: u64, r_value: u128, p: u64) -> Result<(), NoDecision> {
        self.nodes += 1;
        if self.nodes > MAX_SEARCH_NODES {
            return Err(NoDecision::SearchLimit { nodes: self.nodes - 1 });
        }
        if r_value > self.best_value && self.exclude != Some(r) {
            self.best = r;
            self.best_value = r_value;
        }
        let mut q = p;
        while q != 0 {
            if r_value + self.g.colour_bound(q) <= self.best_value {
                return Ok(());
            }
            let v = q.trailing_zeros() as usize;
            q &= q - 1;
            // Hosts above v only (q holds exactly those of p), adjacent to v.
            self.expand(r | bit(v), r_value + self.g.value[v], q & self.g.adj[v])?;
        }
        Ok(())
    }
}

/// The partition rule with the heartbeat disk intact (module docs; docs/PARTITIONS.md).
///
/// `hosts`: every participating host, in any order (the answer does not depend on it). Views may
/// name slots that are not participating; those bits are ignored.
pub fn decide(hosts: &[Host<'_>]) -> Result<Decision, NoDecision> {
    let g = Graph::build(hosts, |_| true)?;
    let everyone = all(g.n);
    let (best, value) = Search::run(&g, everyone, None)?;
    debug_assert!(best != 0 && g.value_of(best) == value);
    let size = size_of(value);
    let isolated = size - not_isolated_of(value);
    let weight = weight_of(value);
    let reason = if best == everyone {
        Reason::Whole { hosts: size }
    } else {
        // The best clique other than the survivors (there is one: a host outside them).
        let (_, rival) = Search::run(&g, everyone, Some(best))?;
        let rival_size = size_of(rival);
        let rival_isolated = rival_size - not_isolated_of(rival);
        if rival_size < size {
            Reason::Largest { size, rival_size }
        } else if rival_isolated > isolated {
            Reason::LessIsolated { isolated, rival_isolated }
        } else if weight_of(rival) < weight {
            Reason::Heavier { weight, rival_weight: weight_of(rival) }
        } else {
            Reason::LowestSlot
        }
    };
    Ok(Decision { survivors: g.slots_of(best), reason, size, isolated, weight })
}

/// The partition rule after the whole heartbeat LUN is lost with the network intact
/// (docs/PARTITIONS.md, "Whole-LUN loss").
///
/// `last_membership`: the participating set before the disk was lost (every host must use the same
/// one). `hosts`: the hosts heard on the network with the views of their packets; hosts outside
/// the last membership are ignored (and must fence). The best clique by the [`decide`] ranking
/// survives if it holds a strict majority of `last_membership`, or exactly half of it including its
/// lowest slot; otherwise nobody survives. Any two answers over the same membership, from any two
/// graphs, share a host.
pub fn decide_lun_lost(last_membership: &SlotSet, hosts: &[Host<'_>]) -> Result<LunDecision, NoDecision> {
    let membership = last_membership.len();
    if membership as usize > MAX_HOSTS {
        return Err(NoDecision::TooManyHosts { hosts: membership as usize });
    }
    let Some(lowest_slot) = last_membership.lowest() else {
        return Err(NoDecision::NoHosts);
    };
    let no_quorum = |best_size| LunDecision {
        survivors: SlotSet::EMPTY,
        reason: LunReason::NoQuorum { best_size, membership },
    };
    let g = match Graph::build(hosts, |h| last_membership.contains(h.slot)) {
        Ok(g) => g,
        Err(NoDecision::NoHosts) => return Ok(no_quorum(0)),
        Err(e) => return Err(e),
    };
    let everyone = all(g.n);
    let (best, value) = Search::run(&g, everyone, None)?;
    let size = size_of(value);
    if 2 * size > membership {
        return Ok(LunDecision {
            survivors: g.slots_of(best),
            reason: LunReason::Majority { size, membership },
        });
    }
    if 2 * size == membership {
        // Even split: only a half holding the membership's lowest slot survives. The best clique
        // among that host and its neighbours contains it (it extends any clique there).
        if let Some(l) = (0..g.n).find(|&i| g.slots[i] == lowest_slot) {
            let (half, half_value) = Search::run(&g, g.adj[l] | bit(l), None)?;
            if size_of(half_value) == size {
                debug_assert!(half & bit(l) != 0);
                return Ok(LunDecision {
                    survivors: g.slots_of(half),
                    reason: LunReason::HalfWithLowestSlot { size, membership, lowest_slot },
                });
            }
        }
    }
    Ok(no_quorum(size))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test network: slots, one-way hearing, weights, isolation.
    struct Net {
        slots: Vec<u32>,
        views: Vec<NetView>,
        weights: Vec<u32>,
        isolated: Vec<bool>,
        has_isolation_addresses: Vec<bool>,
    }

    impl Net {
        fn new(slots: &[u32]) -> Net {
            let n = slots.len();
            Net {
                slots: slots.to_vec(),
                views: vec![NetView::EMPTY; n],
                weights: vec![1; n],
                isolated: vec![false; n],
                has_isolation_addresses: vec![true; n],
            }
        }
        fn idx(&self, slot: u32) -> usize {
            self.slots.iter().position(|&s| s == slot).unwrap()
        }
        /// `a` hears `b` (one way).
        fn hears(mut self, a: u32, b: u32) -> Net {
            let i = self.idx(a);
            self.views[i].set(b, true);
            self
        }
        fn mutual(self, a: u32, b: u32) -> Net {
            self.hears(a, b).hears(b, a)
        }
        /// Every pair of `group` hears each other both ways.
        fn clique(mut self, group: &[u32]) -> Net {
            for &a in group {
                for &b in group {
                    if a != b {
                        self = self.hears(a, b);
                    }
                }
            }
            self
        }
        fn weight(mut self, slot: u32, weight: u32) -> Net {
            let i = self.idx(slot);
            self.weights[i] = weight;
            self
        }
        fn isolated(mut self, slot: u32) -> Net {
            let i = self.idx(slot);
            self.isolated[i] = true;
            self
        }
        fn no_isolation_addresses(mut self, slot: u32) -> Net {
            let i = self.idx(slot);
            self.has_isolation_addresses[i] = false;
            self
        }
        fn hosts(&self) -> Vec<Host<'_>> {
            (0..self.slots.len())
                .map(|i| Host {
                    slot: self.slots[i],
                    view: &self.views[i],
                    weight: self.weights[i],
                    isolated: self.isolated[i],
                    has_isolation_addresses: self.has_isolation_addresses[i],
                })
                .collect()
        }
        fn decide(&self) -> Decision {
            decide(&self.hosts()).unwrap()
        }
        fn lun_lost(&self, membership: &[u32]) -> LunDecision {
            decide_lun_lost(&SlotSet::from_slots(membership.iter().copied()), &self.hosts()).unwrap()
        }
    }

    fn set(slots: &[u32]) -> SlotSet {
        SlotSet::from_slots(slots.iter().copied())
    }

    #[test]
    fn full_mesh_is_whole() {
        let d = Net::new(&[0, 3, 7, 9, 2047]).clique(&[0, 3, 7, 9, 2047]).decide();
        assert_eq!(d.survivors, set(&[0, 3, 7, 9, 2047]));
        assert_eq!(d.reason, Reason::Whole { hosts: 5 });
        assert!(!d.must_fence(2047));
        assert!(d.must_fence(1), "a slot that was not participating has no claim");
    }

    #[test]
    fn three_two_split_keeps_the_three() {
        // The two hold the lowest slots and more weight per host: size comes first.
        let d = Net::new(&[0, 1, 2, 3, 4])
            .clique(&[0, 1])
            .clique(&[2, 3, 4])
            .weight(0, 100)
            .weight(1, 100)
            .decide();
        assert_eq!(d.survivors, set(&[2, 3, 4]));
        assert_eq!(d.reason, Reason::Largest { size: 3, rival_size: 2 });
        assert!(d.must_fence(0) && d.must_fence(1) && !d.must_fence(3));
    }

    #[test]
    fn two_two_one_lowest_slot_list() {
        let net = Net::new(&[0, 1, 2, 3, 4]).clique(&[1, 4]).clique(&[2, 3]);
        let d = net.decide();
        // [1, 4] < [2, 3]: the pair with the lowest slot (slot 0 is alone).
        assert_eq!(d.survivors, set(&[1, 4]));
        assert_eq!(d.reason, Reason::LowestSlot);
    }

    #[test]
    fn two_two_one_weight_decides() {
        let d = Net::new(&[0, 1, 2, 3, 4]).clique(&[1, 4]).clique(&[2, 3]).weight(3, 5).decide();
        assert_eq!(d.survivors, set(&[2, 3]));
        assert_eq!(d.reason, Reason::Heavier { weight: 6, rival_weight: 2 });
    }

    #[test]
    fn two_two_one_isolation_decides_before_weight() {
        let d = Net::new(&[0, 1, 2, 3, 4])
            .clique(&[1, 4])
            .clique(&[2, 3])
            .weight(1, 1000)
            .isolated(2)
            .isolated(4)
            .isolated(1)
            .decide();
        // {1,4}: two isolated; {2,3}: one.
        assert_eq!(d.survivors, set(&[2, 3]));
        assert_eq!(d.reason, Reason::LessIsolated { isolated: 1, rival_isolated: 2 });
    }

    #[test]
    fn two_hosts_the_isolated_one_loses_whatever_its_slot() {
        let d = Net::new(&[0, 1]).isolated(0).decide();
        assert_eq!(d.survivors, set(&[1]));
        assert_eq!(d.reason, Reason::LessIsolated { isolated: 0, rival_isolated: 1 });
        let d = Net::new(&[0, 1]).isolated(1).decide();
        assert_eq!(d.survivors, set(&[0]));
    }

    #[test]
    fn two_hosts_both_or_neither_isolated_lowest_slot() {
        for net in [Net::new(&[5, 9]), Net::new(&[5, 9]).isolated(5).isolated(9)] {
            let d = net.decide();
            assert_eq!(d.survivors, set(&[5]));
            assert_eq!(d.reason, Reason::LowestSlot);
        }
    }

    #[test]
    fn isolated_without_isolation_addresses_does_not_count() {
        let d = Net::new(&[0, 1]).isolated(0).no_isolation_addresses(0).isolated(1).decide();
        assert_eq!(d.survivors, set(&[0]));
        assert_eq!(d.isolated, 0);
    }

    #[test]
    fn asymmetric_hearing_is_no_edge() {
        let d = Net::new(&[0, 1]).hears(0, 1).decide();
        assert_eq!(d.survivors, set(&[0]));
        assert!(d.must_fence(1));
        // Whichever direction.
        let d = Net::new(&[0, 1]).hears(1, 0).weight(1, 2).decide();
        assert_eq!(d.survivors, set(&[1]));
        assert_eq!(d.reason, Reason::Heavier { weight: 2, rival_weight: 1 });
    }

    #[test]
    fn non_transitive_keeps_exactly_one_pair() {
        // 0–1, 1–2, not 0–2.
        let net = Net::new(&[0, 1, 2]).mutual(0, 1).mutual(1, 2);
        let d = net.decide();
        assert_eq!(d.survivors, set(&[0, 1]));
        assert_eq!(d.reason, Reason::LowestSlot);
        let d = Net::new(&[0, 1, 2]).mutual(0, 1).mutual(1, 2).weight(2, 3).decide();
        assert_eq!(d.survivors, set(&[1, 2]));
        let d = Net::new(&[0, 1, 2]).mutual(0, 1).mutual(1, 2).isolated(0).decide();
        assert_eq!(d.survivors, set(&[1, 2]));
        // One-way 0 → 2 changes nothing.
        let d = Net::new(&[0, 1, 2]).mutual(0, 1).mutual(1, 2).hears(0, 2).weight(2, 3).decide();
        assert_eq!(d.survivors, set(&[1, 2]));
    }

    #[test]
    fn weight_breaks_a_size_tie() {
        let d = Net::new(&[0, 1, 2, 3, 4, 5]).clique(&[0, 1, 2]).clique(&[3, 4, 5]).weight(5, 2).decide();
        assert_eq!(d.survivors, set(&[3, 4, 5]));
        assert_eq!(d.reason, Reason::Heavier { weight: 4, rival_weight: 3 });
    }

    #[test]
    fn views_naming_absent_slots_and_self_are_ignored() {
        let d = Net::new(&[1, 2]).mutual(1, 2).hears(1, 1).hears(1, 7).hears(2, 0).decide();
        assert_eq!(d.reason, Reason::Whole { hosts: 2 });
    }

    #[test]
    fn single_host_is_whole() {
        let d = Net::new(&[42]).decide();
        assert_eq!(d.survivors, set(&[42]));
        assert_eq!(d.reason, Reason::Whole { hosts: 1 });
    }

    #[test]
    fn malformed_inputs_give_no_decision() {
        assert_eq!(decide(&[]), Err(NoDecision::NoHosts));
        let net = Net::new(&[3, 3]);
        assert_eq!(decide(&net.hosts()), Err(NoDecision::DuplicateSlot { slot: 3 }));
        let v = NetView::EMPTY;
        let h =
            Host { slot: MAX_SLOTS, view: &v, weight: 1, isolated: false, has_isolation_addresses: false };
        assert_eq!(decide(&[h]), Err(NoDecision::SlotOutOfRange { slot: MAX_SLOTS }));
    }

    #[test]
    fn sixty_four_hosts_decide_sixty_five_do_not() {
        let slots: Vec<u32> = (0..65).map(|i| i * 31).collect();
        let net = Net::new(&slots).clique(&slots);
        let hosts = net.hosts();
        assert_eq!(decide(&hosts), Err(NoDecision::TooManyHosts { hosts: 65 }));
        let d = decide(&hosts[..64]).unwrap();
        assert_eq!(d.reason, Reason::Whole { hosts: 64 });
    }

    /// The complement of 21 disjoint triangles plus one host: 3^21 maximum cliques, all tied. The
    /// ordered search finds the lowest one and prunes the ties.
    #[test]
    fn moon_moser_64_is_quick() {
        let slots: Vec<u32> = (0..64).collect();
        let mut net = Net::new(&slots);
        for a in 0..64u32 {
            for b in 0..64u32 {
                if a != b && (a / 3 != b / 3) {
                    net = net.hears(a, b);
                }
            }
        }
        let d = net.decide();
        assert_eq!(d.survivors, SlotSet::from_slots((0..64).step_by(3)));
        assert_eq!(d.reason, Reason::LowestSlot);
    }

    #[test]
    fn lun_lost_strict_majority_survives() {
        let net = Net::new(&[0, 1, 2, 3, 4]).clique(&[0, 1]).clique(&[2, 3, 4]);
        let d = net.lun_lost(&[0, 1, 2, 3, 4]);
        assert_eq!(d.survivors, set(&[2, 3, 4]));
        assert_eq!(d.reason, LunReason::Majority { size: 3, membership: 5 });
        assert!(d.must_fence(0));
    }

    #[test]
    fn lun_lost_even_split_half_with_lowest_slot() {
        // The lowest slot's half survives even when the other half is heavier.
        let net = Net::new(&[1, 2, 3, 4]).clique(&[1, 4]).clique(&[2, 3]).weight(2, 9);
        let d = net.lun_lost(&[1, 2, 3, 4]);
        assert_eq!(d.survivors, set(&[1, 4]));
        assert_eq!(d.reason, LunReason::HalfWithLowestSlot { size: 2, membership: 4, lowest_slot: 1 });
    }

    #[test]
    fn lun_lost_no_quorum_everyone_fences() {
        // 2+2+1 of five: no majority.
        let net = Net::new(&[0, 1, 2, 3, 4]).clique(&[0, 1]).clique(&[2, 3]);
        let d = net.lun_lost(&[0, 1, 2, 3, 4]);
        assert!(d.survivors.is_empty());
        assert_eq!(d.reason, LunReason::NoQuorum { best_size: 2, membership: 5 });
        // Half of four without the lowest slot (it is silent).
        let net = Net::new(&[1, 2, 3]).clique(&[2, 3]);
        let d = net.lun_lost(&[0, 1, 2, 3]);
        assert!(d.survivors.is_empty());
    }

    #[test]
    fn lun_lost_hosts_outside_the_membership_do_not_count() {
        // 5 and 6 joined after the membership was fixed: they cannot make 0–5–6 a majority.
        let net = Net::new(&[0, 1, 2, 5, 6]).clique(&[0, 5, 6]).clique(&[1, 2]);
        let d = net.lun_lost(&[0, 1, 2]);
        assert_eq!(d.survivors, set(&[1, 2]));
        assert!(d.must_fence(5));
        assert_eq!(decide_lun_lost(&SlotSet::EMPTY, &net.hosts()), Err(NoDecision::NoHosts));
    }
}
