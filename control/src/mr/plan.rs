//! The MapReduce nemesis plan: which fault comes next, as a pure function of a seed.
//!
//! Pure side of the I/O line (no clock, no SSH): [`Plan`] hands out faults in rounds; every
//! round holds each enabled kind exactly once in a seeded random order, so a short job still
//! sees every kind (a kill of a worker *and* of the coordinator's leader) and the same seed
//! replays the same sequence. Which worker or replica a fault hits is decided by the runner at
//! the moment it acts (it depends on who is alive and who leads), from [`Plan::pick`].

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// One kind of fault the MapReduce nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MrFault {
    /// `kill -9` a random live worker; a replacement starts at once.
    KillWorker,
    /// `kill -9` the coordinator replica that leads; it restarts from its WAL after a while.
    KillLeader,
    /// SIGSTOP a random worker for a while (its task times out and is re-issued), then SIGCONT.
    PauseWorker,
    /// SIGSTOP the leading replica for a while (it is deposed), then SIGCONT.
    PauseLeader,
    /// Cut the leader's node off from every other node (iptables), then heal.
    PartitionLeader,
}

impl MrFault {
    pub const ALL: [MrFault; 5] = [
        MrFault::KillWorker,
        MrFault::KillLeader,
        MrFault::PauseWorker,
        MrFault::PauseLeader,
        MrFault::PartitionLeader,
    ];

    pub fn name(self) -> &'static str {
        match self {
            MrFault::KillWorker => "kill-worker",
            MrFault::KillLeader => "kill-leader",
            MrFault::PauseWorker => "pause-worker",
            MrFault::PauseLeader => "pause-leader",
            MrFault::PartitionLeader => "partition-leader",
        }
    }

    /// Whether the fault lasts (and has a stop event) or is a single act.
    pub fn lasts(self) -> bool {
        !matches!(self, MrFault::KillWorker)
    }
}

/// Parses `kill-worker,kill-leader,...`, `kill` (both kills), `all` or `none`.
pub fn parse_faults(text: &str) -> Result<BTreeSet<MrFault>, String> {
    let mut faults = BTreeSet::new();
    for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        match word {
            "none" => {}
            "all" => faults.extend(MrFault::ALL),
            "kill" => faults.extend([MrFault::KillWorker, MrFault::KillLeader]),
            "pause" => faults.extend([MrFault::PauseWorker, MrFault::PauseLeader]),
            "partition" => {
                faults.insert(MrFault::PartitionLeader);
            }
            other => {
                let fault = MrFault::ALL
                    .into_iter()
                    .find(|f| f.name() == other)
                    .ok_or_else(|| {
                        format!(
                            "unknown fault `{other}` (known: {}, kill, pause, partition, all, none)",
                            MrFault::ALL.map(MrFault::name).join(", ")
                        )
                    })?;
                faults.insert(fault);
            }
        }
    }
    Ok(faults)
}

/// The seeded sequence of faults.
#[derive(Debug, Clone)]
pub struct Plan {
    rng: ChaCha8Rng,
    kinds: Vec<MrFault>,
    round: Vec<MrFault>,
}

impl Plan {
    pub fn new(seed: u64, kinds: &BTreeSet<MrFault>) -> Plan {
        Plan {
            rng: ChaCha8Rng::seed_from_u64(seed),
            kinds: kinds.iter().copied().collect(),
            round: Vec::new(),
        }
    }

    /// The next fault, or `None` when no kind is enabled. Within a round the two kills come
    /// first (in seeded order): they are the faults the harness exists for, and a short job
    /// may end before a round does.
    pub fn next_fault(&mut self) -> Option<MrFault> {
        if self.kinds.is_empty() {
            return None;
        }
        if self.round.is_empty() {
            let (mut kills, mut others): (Vec<MrFault>, Vec<MrFault>) = self
                .kinds
                .iter()
                .partition(|f| matches!(f, MrFault::KillWorker | MrFault::KillLeader));
            kills.shuffle(&mut self.rng);
            others.shuffle(&mut self.rng);
            // Popped from the back: others go first into the vector.
            others.reverse();
            kills.reverse();
            self.round = others;
            self.round.extend(kills);
        }
        self.round.pop()
    }

    /// A seeded choice among `candidates` (who to hit), `None` when there are none.
    pub fn pick<'a, T>(&mut self, candidates: &'a [T]) -> Option<&'a T> {
        if candidates.is_empty() {
            return None;
        }
        let index = self.rng.gen_range(0..candidates.len());
        candidates.get(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_round_holds_each_kind_once_kills_first() {
        let kinds = parse_faults("all").unwrap();
        let mut plan = Plan::new(7, &kinds);
        for _ in 0..3 {
            let round: Vec<MrFault> = (0..kinds.len())
                .map(|_| plan.next_fault().unwrap())
                .collect();
            let distinct: BTreeSet<MrFault> = round.iter().copied().collect();
            assert_eq!(distinct, kinds, "round {round:?}");
            let kills: BTreeSet<MrFault> = round[..2].iter().copied().collect();
            assert_eq!(
                kills,
                BTreeSet::from([MrFault::KillWorker, MrFault::KillLeader]),
                "round {round:?}"
            );
        }
    }

    #[test]
    fn same_seed_same_sequence_and_picks() {
        let kinds = parse_faults("kill,pause").unwrap();
        let run = |seed| {
            let mut plan = Plan::new(seed, &kinds);
            let targets = ["w1", "w2", "w3", "w4"];
            (0..12)
                .map(|_| (plan.next_fault(), plan.pick(&targets).copied()))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4), "different seeds should differ somewhere");
    }

    #[test]
    fn parse_names_groups_and_errors() {
        assert!(parse_faults("none").unwrap().is_empty());
        assert_eq!(parse_faults("all").unwrap().len(), 5);
        assert_eq!(
            parse_faults("kill-leader, pause-worker").unwrap(),
            BTreeSet::from([MrFault::KillLeader, MrFault::PauseWorker])
        );
        let error = parse_faults("kill,flood").unwrap_err();
        assert!(error.contains("flood"), "{error}");
        assert_eq!(Plan::new(1, &BTreeSet::new()).next_fault(), None);
        assert_eq!(Plan::new(1, &BTreeSet::new()).pick::<u8>(&[]), None);
    }

    #[test]
    fn only_kills_make_single_act_faults() {
        assert!(!MrFault::KillWorker.lasts());
        assert!(
            MrFault::KillLeader.lasts(),
            "the killed leader restarts later"
        );
        assert!(MrFault::PartitionLeader.lasts());
    }
}
