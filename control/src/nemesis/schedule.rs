//! Which fault comes next and for how long: a pure, seeded schedule.
//!
//! Jepsen's default rhythm: a fault for `faulty` time, then `healed` time with none, the fault
//! drawn uniformly among the enabled kinds. The same seed and node list give the same faults.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::grudge;
use super::{Fault, NemesisKind, PartitionKind};

#[derive(Debug, Clone)]
pub struct Schedule {
    rng: ChaCha8Rng,
    kinds: Vec<NemesisKind>,
    nodes: Vec<String>,
    pub faulty: Duration,
    pub healed: Duration,
}

impl Schedule {
    pub fn new(seed: u64, kinds: &BTreeSet<NemesisKind>, nodes: &[String]) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            kinds: kinds.iter().copied().collect(),
            nodes: nodes.to_vec(),
            faulty: Duration::from_secs(10),
            healed: Duration::from_secs(10),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.kinds.is_empty() || self.nodes.is_empty()
    }

    /// A random minority (at least one node, at most `(n-1)/2`, and one when n < 3).
    fn minority(&mut self) -> Vec<String> {
        let most = (self.nodes.len().saturating_sub(1) / 2).max(1);
        let count = self.rng.gen_range(1..=most);
        let mut chosen: Vec<String> = self
            .nodes
            .choose_multiple(&mut self.rng, count)
            .cloned()
            .collect();
        chosen.sort();
        chosen
    }

    /// Draws the next fault; `leader` (when the database knows one) is the target of
    /// isolate-leader. `None` when no kind is enabled.
    pub fn next_fault(&mut self, leader: Option<&str>) -> Option<Fault> {
        if self.is_empty() {
            return None;
        }
        let kind = *self.kinds.choose(&mut self.rng)?;
        Some(match kind {
            NemesisKind::Partition => {
                let shapes = [
                    PartitionKind::RandomHalves,
                    PartitionKind::IsolateLeader,
                    PartitionKind::MajoritiesRing,
                    PartitionKind::Bridge,
                ];
                let shape = *shapes.choose(&mut self.rng)?;
                let grudge = match shape {
                    PartitionKind::RandomHalves => {
                        grudge::random_halves(&self.nodes, &mut self.rng)
                    }
                    PartitionKind::IsolateLeader => {
                        let target = match leader.filter(|l| self.nodes.iter().any(|n| n == l)) {
                            Some(leader) => leader.to_string(),
                            None => self.nodes.choose(&mut self.rng)?.clone(),
                        };
                        grudge::isolate(&self.nodes, &target)
                    }
                    PartitionKind::MajoritiesRing => {
                        grudge::majorities_ring(&self.nodes, &mut self.rng)
                    }
                    PartitionKind::Bridge => grudge::bridge(&self.nodes, &mut self.rng),
                };
                Fault::Partition { shape, grudge }
            }
            NemesisKind::Kill => Fault::Kill {
                nodes: self.minority(),
            },
            NemesisKind::Pause => Fault::Pause {
                nodes: self.minority(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<String> {
        (1..=5).map(|i| format!("n{i}")).collect()
    }

    #[test]
    fn same_seed_same_faults() {
        let kinds = BTreeSet::from(NemesisKind::ALL);
        let mut a = Schedule::new(42, &kinds, &nodes());
        let mut b = Schedule::new(42, &kinds, &nodes());
        for _ in 0..30 {
            assert_eq!(a.next_fault(None), b.next_fault(None));
        }
    }

    #[test]
    fn only_enabled_kinds_and_minorities_are_drawn() {
        let kinds = BTreeSet::from([NemesisKind::Kill, NemesisKind::Pause]);
        let mut schedule = Schedule::new(3, &kinds, &nodes());
        let mut seen = BTreeSet::new();
        for _ in 0..100 {
            let fault = schedule.next_fault(None).unwrap();
            seen.insert(fault.kind());
            let count = fault.nodes().len();
            assert!((1..=2).contains(&count), "{fault:?}");
        }
        assert_eq!(seen, kinds);
    }

    #[test]
    fn isolate_leader_targets_the_leader() {
        let kinds = BTreeSet::from([NemesisKind::Partition]);
        let mut schedule = Schedule::new(9, &kinds, &nodes());
        let mut isolated = 0;
        for _ in 0..100 {
            if let Some(Fault::Partition {
                shape: PartitionKind::IsolateLeader,
                grudge,
            }) = schedule.next_fault(Some("n4"))
            {
                assert_eq!(grudge["n4"].len(), 4);
                isolated += 1;
            }
        }
        assert!(isolated > 0);
    }

    #[test]
    fn nothing_enabled_draws_nothing() {
        let mut schedule = Schedule::new(1, &BTreeSet::new(), &nodes());
        assert!(schedule.next_fault(None).is_none());
    }
}
