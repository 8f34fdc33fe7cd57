//! Partition maths: who drops traffic from whom. Pure functions of node names and an RNG;
//! applying a [`Grudge`] (iptables) is `apply`'s business.

use std::collections::{BTreeMap, BTreeSet};

use rand::seq::SliceRandom;
use rand::Rng;

/// node -> the nodes whose packets it drops. Nodes absent (or with an empty set) drop nothing.
pub type Grudge = BTreeMap<String, BTreeSet<String>>;

/// Each node drops traffic from every node outside its own component. Nodes in no component
/// keep full connectivity.
pub fn complete_grudge(components: &[Vec<String>]) -> Grudge {
    let mut grudge = Grudge::new();
    for (i, component) in components.iter().enumerate() {
        let others: BTreeSet<String> = components
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .flat_map(|(_, c)| c.iter().cloned())
            .filter(|n| !component.contains(n))
            .collect();
        for node in component {
            grudge
                .entry(node.clone())
                .or_default()
                .extend(others.iter().cloned());
        }
    }
    grudge.retain(|_, drops| !drops.is_empty());
    grudge
}

/// Splits the nodes into a random minority half and majority half (`n/2` and the rest).
pub fn random_halves<R: Rng>(nodes: &[String], rng: &mut R) -> Grudge {
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    let (minority, majority) = shuffled.split_at(nodes.len() / 2);
    complete_grudge(&[minority.to_vec(), majority.to_vec()])
}

/// Cuts `node` off from every other node, both ways.
pub fn isolate(nodes: &[String], node: &str) -> Grudge {
    let rest: Vec<String> = nodes.iter().filter(|n| *n != node).cloned().collect();
    complete_grudge(&[vec![node.to_string()], rest])
}

/// Two halves that cannot talk to each other, plus one node that talks to both (Jepsen's
/// `bridge`). Needs at least 3 nodes; fewer gives no partition.
pub fn bridge<R: Rng>(nodes: &[String], rng: &mut R) -> Grudge {
    if nodes.len() < 3 {
        return Grudge::new();
    }
    let mut shuffled = nodes.to_vec();
    shuffled.shuffle(rng);
    let middle = shuffled.len() / 2;
    let left = &shuffled[..middle];
    let right = &shuffled[middle + 1..];
    complete_grudge(&[left.to_vec(), right.to_vec()])
}

/// Every node hears from a majority (itself and its nearest neighbours on a random ring), but
/// no two nodes hear from the same majority, so every node is cut off from someone.
///
/// With 4 nodes or more the ring is symmetric: a node hears from the nodes within the
/// smallest radius that holds a majority (a hears b iff b hears a). With 3 nodes no symmetric
/// grudge can do it (each node would need exactly one partner, and 3 nodes cannot pair up),
/// so the ring is directed: each node hears from itself and its successor and drops its
/// predecessor. Note that a one-way drop breaks a connection-based link (QUIC, TCP) both
/// ways, because the handshake needs both directions; over such transports the directed ring
/// on 3 nodes cuts every link. With 2 nodes or fewer a majority is everyone: no partition.
pub fn majorities_ring<R: Rng>(nodes: &[String], rng: &mut R) -> Grudge {
    let n = nodes.len();
    let mut ring = nodes.to_vec();
    ring.shuffle(rng);
    let majority = n / 2 + 1;
    if majority >= n {
        return Grudge::new();
    }
    // A window of radius r holds 2r+1 nodes; the smallest r that still holds a majority.
    let radius = (majority - 1).div_ceil(2);
    let symmetric = 2 * radius + 1 < n;
    let mut grudge = Grudge::new();
    for (i, node) in ring.iter().enumerate() {
        let hears = |j: usize| {
            if symmetric {
                let distance = i.abs_diff(j).min(n - i.abs_diff(j));
                distance <= radius
            } else {
                // Forward along the ring: itself and the next majority - 1 nodes.
                (j + n - i) % n < majority
            }
        };
        let drops: BTreeSet<String> = ring
            .iter()
            .enumerate()
            .filter(|(j, _)| !hears(*j))
            .map(|(_, other)| other.clone())
            .collect();
        if !drops.is_empty() {
            grudge.insert(node.clone(), drops);
        }
    }
    grudge
}

/// The nodes `node` can still hear from (itself included).
pub fn visible(nodes: &[String], grudge: &Grudge, node: &str) -> BTreeSet<String> {
    let drops = grudge.get(node);
    nodes
        .iter()
        .filter(|other| drops.is_none_or(|d| !d.contains(*other)))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("n{i}")).collect()
    }

    fn symmetric(grudge: &Grudge) -> bool {
        grudge.iter().all(|(a, drops)| {
            drops
                .iter()
                .all(|b| grudge.get(b).is_some_and(|d| d.contains(a)))
        })
    }

    #[test]
    fn halves_split_minority_from_majority() {
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let nodes = names(5);
            let g = random_halves(&nodes, &mut rng);
            assert!(symmetric(&g), "SEED={seed} {g:?}");
            let mut sizes: Vec<usize> =
                nodes.iter().map(|n| visible(&nodes, &g, n).len()).collect();
            sizes.sort();
            assert_eq!(sizes, [2, 2, 3, 3, 3], "SEED={seed} {g:?}");
            assert!(g.values().all(|d| !d.is_empty()));
        }
    }

    #[test]
    fn isolate_cuts_one_node_both_ways() {
        let nodes = names(5);
        let g = isolate(&nodes, "n3");
        assert_eq!(g["n3"].len(), 4);
        for other in ["n1", "n2", "n4", "n5"] {
            assert_eq!(g[other], BTreeSet::from(["n3".to_string()]));
        }
        assert_eq!(
            visible(&nodes, &g, "n3"),
            BTreeSet::from(["n3".to_string()])
        );
    }

    #[test]
    fn bridge_node_sees_everyone_and_halves_do_not_see_each_other() {
        for seed in 0..50 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let nodes = names(5);
            let g = bridge(&nodes, &mut rng);
            assert!(symmetric(&g));
            let bridges: Vec<&String> = nodes.iter().filter(|n| !g.contains_key(*n)).collect();
            assert_eq!(bridges.len(), 1, "SEED={seed} {g:?}");
            for (node, drops) in &g {
                assert_eq!(drops.len(), 2, "SEED={seed} {node} {g:?}");
                assert!(!drops.contains(bridges[0]));
            }
        }
    }

    #[test]
    fn majorities_ring_gives_each_node_a_distinct_majority() {
        for n in [3usize, 4, 5, 6, 7, 9] {
            for seed in 0..20 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let nodes = names(n);
                let g = majorities_ring(&nodes, &mut rng);
                // Symmetric wherever a symmetric ring exists (4 nodes or more).
                assert_eq!(symmetric(&g), n >= 4, "n={n} SEED={seed} {g:?}");
                let views: Vec<BTreeSet<String>> =
                    nodes.iter().map(|x| visible(&nodes, &g, x)).collect();
                for view in &views {
                    assert!(view.len() > n / 2, "n={n} SEED={seed} view {view:?}");
                    assert!(view.len() < n, "n={n} SEED={seed}: someone sees everyone");
                }
                let distinct: BTreeSet<&BTreeSet<String>> = views.iter().collect();
                assert_eq!(distinct.len(), n, "n={n} SEED={seed}");
            }
        }
    }

    #[test]
    fn majorities_ring_on_two_nodes_or_fewer_is_no_partition() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for n in 0..=2 {
            assert!(majorities_ring(&names(n), &mut rng).is_empty(), "n={n}");
        }
    }

    /// Nodes that hear from everyone under `grudge`.
    fn uncut(nodes: &[String], grudge: &Grudge) -> Vec<String> {
        nodes
            .iter()
            .filter(|n| visible(nodes, grudge, n).len() == nodes.len())
            .cloned()
            .collect()
    }

    /// Every partition shape on 3, 4 and 5 nodes is a real partition: every node is cut off
    /// from someone (but the bridge node, which by definition hears both sides), and the
    /// grudge is symmetric for every shape but the 3-node majorities ring.
    #[test]
    fn every_shape_cuts_every_node_on_3_4_and_5_nodes() {
        for n in [3usize, 4, 5] {
            let nodes = names(n);
            for seed in 0..30 {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let halves = random_halves(&nodes, &mut rng);
                assert!(symmetric(&halves), "halves n={n} SEED={seed} {halves:?}");
                assert!(
                    uncut(&nodes, &halves).is_empty(),
                    "halves n={n} SEED={seed}"
                );
                let mut sizes: Vec<usize> = nodes
                    .iter()
                    .map(|x| visible(&nodes, &halves, x).len())
                    .collect();
                sizes.sort();
                assert_eq!(sizes[0], n / 2, "halves n={n} SEED={seed}");
                assert_eq!(sizes[n - 1], n - n / 2, "halves n={n} SEED={seed}");

                let target = nodes[seed as usize % n].clone();
                let isolated = isolate(&nodes, &target);
                assert!(symmetric(&isolated), "isolate n={n}");
                assert!(uncut(&nodes, &isolated).is_empty(), "isolate n={n}");
                assert_eq!(visible(&nodes, &isolated, &target).len(), 1);

                let bridged = bridge(&nodes, &mut rng);
                assert!(symmetric(&bridged), "bridge n={n} SEED={seed} {bridged:?}");
                let middle = uncut(&nodes, &bridged);
                assert_eq!(middle.len(), 1, "bridge n={n} SEED={seed} {bridged:?}");
                for node in nodes.iter().filter(|x| **x != middle[0]) {
                    assert!(
                        visible(&nodes, &bridged, node).contains(&middle[0]),
                        "bridge n={n} SEED={seed}: {node} must hear the bridge"
                    );
                }

                let ring = majorities_ring(&nodes, &mut rng);
                assert_eq!(symmetric(&ring), n >= 4, "ring n={n} SEED={seed} {ring:?}");
                assert!(
                    uncut(&nodes, &ring).is_empty(),
                    "ring n={n} SEED={seed} {ring:?}"
                );
            }
        }
    }

    #[test]
    fn same_seed_same_partition() {
        let nodes = names(5);
        let a = random_halves(&nodes, &mut ChaCha8Rng::seed_from_u64(7));
        let b = random_halves(&nodes, &mut ChaCha8Rng::seed_from_u64(7));
        assert_eq!(a, b);
    }
}
