//! Properties of the partition rule (src/core/partition.rs, docs/PARTITIONS.md) over random view
//! matrices, checked against a brute force over every subset of hosts.

use diskbeat::core::partition::{decide, decide_lun_lost, Decision, Host, LunReason, Reason, SlotSet};
use diskbeat::format::record::NetView;
use proptest::prelude::*;

/// A random network: distinct slots, one-way hearing, weights, isolation.
#[derive(Debug, Clone)]
struct Net {
    slots: Vec<u32>,
    /// hears[i][j]: host i hears host j.
    hears: Vec<Vec<bool>>,
    weights: Vec<u32>,
    isolated: Vec<bool>,
    has_isolation_addresses: Vec<bool>,
}

impl Net {
    fn n(&self) -> usize {
        self.slots.len()
    }
    fn views(&self) -> Vec<NetView> {
        (0..self.n())
            .map(|i| {
                let mut v = NetView::EMPTY;
                for j in 0..self.n() {
                    v.set(self.slots[j], self.hears[i][j]);
                }
                v
            })
            .collect()
    }
    fn hosts<'a>(&self, views: &'a [NetView]) -> Vec<Host<'a>> {
        (0..self.n())
            .map(|i| Host {
                slot: self.slots[i],
                view: &views[i],
                weight: self.weights[i],
                isolated: self.isolated[i],
                has_isolation_addresses: self.has_isolation_addresses[i],
            })
            .collect()
    }
    fn decide(&self) -> Decision {
        let views = self.views();
        decide(&self.hosts(&views)).expect("at most 12 hosts always decide")
    }
    fn mutual(&self, i: usize, j: usize) -> bool {
        self.hears[i][j] && self.hears[j][i]
    }
    fn is_clique(&self, set: u32) -> bool {
        (0..self.n()).all(|i| {
            (i + 1..self.n()).all(|j| set & (1 << i) == 0 || set & (1 << j) == 0 || self.mutual(i, j))
        })
    }
    fn slot_set(&self, set: u32) -> SlotSet {
        SlotSet::from_slots((0..self.n()).filter(|&i| set & (1 << i) != 0).map(|i| self.slots[i]))
    }
    fn sorted_slots(&self, set: u32) -> Vec<u32> {
        let mut s: Vec<u32> = (0..self.n()).filter(|&i| set & (1 << i) != 0).map(|i| self.slots[i]).collect();
        s.sort();
        s
    }
    /// (size, not isolated, weight) of a subset, written independently of the library.
    fn figures(&self, set: u32) -> (u32, u32, u64) {
        let members = (0..self.n()).filter(|&i| set & (1 << i) != 0);
        let mut f = (0, 0, 0);
        for i in members {
            f.0 += 1;
            f.1 += u32::from(!(self.isolated[i] && self.has_isolation_addresses[i]));
            f.2 += u64::from(self.weights[i]);
        }
        f
    }
    /// `a` ranks above `b` (criteria 1-4).
    fn better(&self, a: u32, b: u32) -> bool {
        let (fa, fb) = (self.figures(a), self.figures(b));
        fa > fb || (fa == fb && self.sorted_slots(a) < self.sorted_slots(b))
    }
    /// Every clique (non-empty) in ranking order, best first, by brute force.
    fn ranked_cliques(&self) -> Vec<u32> {
        let mut cliques: Vec<u32> = (1..1u32 << self.n()).filter(|&s| self.is_clique(s)).collect();
        cliques.sort_by(|&a, &b| {
            if a == b {
                std::cmp::Ordering::Equal
            } else if self.better(a, b) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        cliques
    }
    fn permuted(&self, perm: &[usize]) -> Net {
        Net {
            slots: perm.iter().map(|&p| self.slots[p]).collect(),
            hears: perm.iter().map(|&p| perm.iter().map(|&q| self.hears[p][q]).collect()).collect(),
            weights: perm.iter().map(|&p| self.weights[p]).collect(),
            isolated: perm.iter().map(|&p| self.isolated[p]).collect(),
            has_isolation_addresses: perm.iter().map(|&p| self.has_isolation_addresses[p]).collect(),
        }
    }
}

/// `hear_chance`: probability that one host hears another (one way).
fn net(max_hosts: usize, hear_chance: f64) -> impl Strategy<Value = Net> {
    (1..=max_hosts)
        .prop_flat_map(move |n| {
            (
                // Distinct slots anywhere in the table, in any order: the rule maps them to indices.
                proptest::sample::subsequence((0..2048u32).step_by(37).collect::<Vec<_>>(), n).prop_shuffle(),
                prop::collection::vec(prop::collection::vec(prop::bool::weighted(hear_chance), n), n),
                // Small weights: ties on weight are common.
                prop::collection::vec(prop_oneof![3 => Just(1u32), 1 => 0u32..4, 1 => Just(u32::MAX)], n),
                prop::collection::vec(prop::bool::weighted(0.3), n),
                prop::collection::vec(any::<bool>(), n),
            )
        })
        .prop_map(|(slots, hears, weights, isolated, has_isolation_addresses)| Net {
            slots,
            hears,
            weights,
            isolated,
            has_isolation_addresses,
        })
}

fn net_and_permutation(max_hosts: usize) -> impl Strategy<Value = (Net, Vec<usize>)> {
    net(max_hosts, 0.7).prop_flat_map(|net| {
        let n = net.n();
        (Just(net), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// (1) The survivors form a mutual clique; (4) no two hosts that do not hear each other both
    /// ways both survive (checked on the raw views, not on the library's graph).
    #[test]
    fn survivors_are_a_mutual_clique(net in net(12, 0.7)) {
        let d = net.decide();
        let views = net.views();
        prop_assert!(!d.survivors.is_empty());
        for (i, &a) in net.slots.iter().enumerate() {
            prop_assert_eq!(d.must_fence(a), !d.survivors.contains(a));
            for (j, &b) in net.slots.iter().enumerate() {
                if i != j && d.survivors.contains(a) && d.survivors.contains(b) {
                    prop_assert!(views[i].get(b) && views[j].get(a), "{a} and {b} survive without mutual hearing");
                }
            }
        }
        for s in d.survivors.iter() {
            prop_assert!(net.slots.contains(&s), "survivor {s} was not participating");
        }
    }

    /// (2) Deterministic and independent of the order the hosts are given in.
    #[test]
    fn independent_of_input_order((net, perm) in net_and_permutation(12)) {
        let d = net.decide();
        prop_assert_eq!(d, net.decide());
        prop_assert_eq!(d, net.permuted(&perm).decide());
    }

    /// (3) The survivors are the best clique by the ranking (a maximum clique first), and the
    /// reason names the criterion separating them from the best other clique.
    #[test]
    fn best_clique_by_brute_force(net in net(10, 0.7)) {
        let d = net.decide();
        let ranked = net.ranked_cliques();
        let best = ranked[0];
        prop_assert_eq!(d.survivors, net.slot_set(best));
        let (size, not_isolated, weight) = net.figures(best);
        prop_assert_eq!((d.size, d.size - d.isolated, d.weight), (size, not_isolated, weight));
        let max_size = ranked.iter().map(|&c| c.count_ones()).max().unwrap();
        prop_assert_eq!(size, max_size);
        let expected = match ranked.get(1) {
            // Only one clique: a single host.
            None => Reason::Whole { hosts: 1 },
            Some(_) if best == (1 << net.n()) - 1 => Reason::Whole { hosts: size },
            Some(&rival) => {
                let (r_size, r_not_isolated, r_weight) = net.figures(rival);
                if r_size < size {
                    Reason::Largest { size, rival_size: r_size }
                } else if r_not_isolated < not_isolated {
                    Reason::LessIsolated { isolated: size - not_isolated, rival_isolated: r_size - r_not_isolated }
                } else if r_weight < weight {
                    Reason::Heavier { weight, rival_weight: r_weight }
                } else {
                    Reason::LowestSlot
                }
            }
        };
        prop_assert_eq!(d.reason, expected);
    }

    /// Whole-LUN rule against a brute force: survivors iff a clique of the present members holds a
    /// strict majority, or exactly half including the membership's lowest slot.
    #[test]
    fn lun_lost_by_brute_force(net in net(10, 0.8), extra in prop::collection::vec(0u32..2048, 0..3)) {
        // The last membership: the hosts plus a few silent ones.
        let membership = SlotSet::from_slots(net.slots.iter().copied().chain(extra.iter().copied()));
        let m = membership.len();
        let lowest = membership.lowest().unwrap();
        let views = net.views();
        let d = decide_lun_lost(&membership, &net.hosts(&views)).unwrap();
        let quorate = |c: u32| {
            let size = c.count_ones();
            2 * size > m || (2 * size == m && net.sorted_slots(c).contains(&lowest))
        };
        let ranked = net.ranked_cliques();
        match ranked.iter().find(|&&c| quorate(c)) {
            None => {
                prop_assert!(d.survivors.is_empty());
                let is_no_quorum = matches!(d.reason, LunReason::NoQuorum { .. });
                prop_assert!(is_no_quorum);
            }
            Some(&c) => {
                prop_assert!(!d.survivors.is_empty());
                prop_assert!(net.is_clique(c));
                // The size is forced; which clique of that size follows the ranking (and the
                // lowest slot on an even split).
                prop_assert_eq!(d.survivors.len(), c.count_ones());
                prop_assert_eq!(d.survivors, net.slot_set(c));
            }
        }
    }

    /// (5) Two hosts computing from different graphs over the same last membership (different
    /// views, different hosts heard) never get two disjoint surviving parts.
    #[test]
    fn lun_lost_two_views_never_two_sides(
        a in net(12, 0.85),
        b in net(12, 0.85),
        silent in prop::collection::vec(0u32..2048, 0..3),
    ) {
        // Same membership for both: every slot either graph names plus some silent hosts. Each
        // graph hears only its own hosts.
        let membership = SlotSet::from_slots(
            a.slots.iter().chain(b.slots.iter()).chain(silent.iter()).copied(),
        );
        let (va, vb) = (a.views(), b.views());
        let da = decide_lun_lost(&membership, &a.hosts(&va)).unwrap();
        let db = decide_lun_lost(&membership, &b.hosts(&vb)).unwrap();
        for d in [&da, &db] {
            for s in d.survivors.iter() {
                prop_assert!(membership.contains(s));
            }
        }
        if !da.survivors.is_empty() && !db.survivors.is_empty() {
            prop_assert!(
                da.survivors.intersects(&db.survivors),
                "two disjoint sides survive: {:?} and {:?} of {:?}", da.survivors, db.survivors, membership
            );
        }
    }

    /// (5), the likely case: one network, two hosts' slightly different copies of it (a few
    /// hearing bits flipped).
    #[test]
    fn lun_lost_perturbed_views_never_two_sides(
        a in net(12, 0.75),
        flips in prop::collection::vec((0usize..12, 0usize..12), 1..6),
    ) {
        let mut b = a.clone();
        for (i, j) in flips {
            let (i, j) = (i % a.n(), j % a.n());
            b.hears[i][j] = !b.hears[i][j];
        }
        let membership = SlotSet::from_slots(a.slots.iter().copied());
        let (va, vb) = (a.views(), b.views());
        let da = decide_lun_lost(&membership, &a.hosts(&va)).unwrap();
        let db = decide_lun_lost(&membership, &b.hosts(&vb)).unwrap();
        if !da.survivors.is_empty() && !db.survivors.is_empty() {
            prop_assert!(da.survivors.intersects(&db.survivors));
        }
    }
}
