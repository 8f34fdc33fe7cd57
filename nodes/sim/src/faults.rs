//! Fault maths: which nodes end up on which side of a partition, and random
//! fault schedules. Pure functions of a seeded RNG and the membership, kept
//! apart from the code that applies them (`Sim::apply_fault`), so a schedule
//! can be printed, replayed and reasoned about on its own.

use crate::network::NetConfig;
use crate::rng::SimRng;
use raft::NodeId;

/// One thing the nemesis can do to the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Stop the node; unpersisted state is lost (nothing is: persistence
    /// completes at the end of each Ready).
    Crash(NodeId),
    /// Crash the node while it holds its next Ready, before that Ready is
    /// persisted: the writes it asked for are lost and its messages never
    /// leave.
    CrashBeforePersist(NodeId),
    /// Start a crashed node again from what it persisted.
    Restart(NodeId),
    Disconnect(NodeId),
    Connect(NodeId),
    /// Only nodes within the same group can talk.
    Partition(Vec<Vec<NodeId>>),
    /// Reconnect everyone and remove every cut.
    Heal,
    SetNetwork(NetConfig),
}

/// Splits `nodes` into a random minority and majority (Jepsen's
/// `partition-random-halves`).
pub fn random_halves(rng: &mut SimRng, nodes: &[NodeId]) -> Vec<Vec<NodeId>> {
    let mut shuffled = nodes.to_vec();
    rng.shuffle(&mut shuffled);
    let minority = shuffled.len() / 2;
    let majority = shuffled.split_off(minority);
    vec![shuffled, majority]
}

/// `node` alone on one side, everyone else on the other.
pub fn isolate(node: NodeId, nodes: &[NodeId]) -> Vec<Vec<NodeId>> {
    let rest = nodes.iter().copied().filter(|&n| n != node).collect();
    vec![vec![node], rest]
}

/// A random subset of `count` distinct nodes.
pub fn random_subset(rng: &mut SimRng, nodes: &[NodeId], count: usize) -> Vec<NodeId> {
    let mut shuffled = nodes.to_vec();
    rng.shuffle(&mut shuffled);
    shuffled.truncate(count);
    shuffled
}

/// Which faults a random schedule draws from, and how often.
#[derive(Clone, Debug, PartialEq)]
pub struct NemesisConfig {
    /// Virtual time between two nemesis actions.
    pub interval_us_min: u64,
    pub interval_us_max: u64,
    pub crash_probability: f64,
    pub crash_before_persist_probability: f64,
    pub partition_probability: f64,
    pub disconnect_probability: f64,
    /// At most this many nodes down at once (a majority must be able to
    /// recover for the final liveness phase to mean anything).
    pub max_crashed: usize,
}

impl NemesisConfig {
    /// Crashes, lost unsynced writes and partitions every 50-500 ms, never
    /// more than a minority down.
    pub fn chaos(nodes: usize) -> Self {
        Self {
            interval_us_min: 50_000,
            interval_us_max: 500_000,
            crash_probability: 0.3,
            crash_before_persist_probability: 0.2,
            partition_probability: 0.3,
            disconnect_probability: 0.2,
            max_crashed: nodes.saturating_sub(1) / 2,
        }
    }
}

/// Draws the next batch of faults given who is currently down. Every batch
/// first undoes some earlier damage (restart one crashed node, heal with some
/// probability) so the schedule does not drift into a permanent outage.
pub fn next_faults(
    rng: &mut SimRng,
    config: &NemesisConfig,
    nodes: &[NodeId],
    crashed: &[NodeId],
) -> Vec<Fault> {
    let mut faults = Vec::new();
    let mut down = crashed.len();
    if let Some(&node) = rng.pick(crashed) {
        if rng.chance(0.6) {
            faults.push(Fault::Restart(node));
            down -= 1;
        }
    }
    if rng.chance(0.4) {
        faults.push(Fault::Heal);
    }
    let alive: Vec<NodeId> = nodes
        .iter()
        .copied()
        .filter(|n| !crashed.contains(n))
        .collect();
    if down < config.max_crashed {
        if let Some(&node) = rng.pick(&alive) {
            if rng.chance(config.crash_probability) {
                faults.push(Fault::Crash(node));
            } else if rng.chance(config.crash_before_persist_probability) {
                faults.push(Fault::CrashBeforePersist(node));
            }
        }
    }
    if rng.chance(config.partition_probability) {
        faults.push(Fault::Partition(random_halves(rng, nodes)));
    } else if rng.chance(config.disconnect_probability) {
        if let Some(&node) = rng.pick(nodes) {
            faults.push(Fault::Disconnect(node));
        }
    }
    faults
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_halves_is_a_minority_and_a_majority_covering_everyone() {
        let mut rng = SimRng::new(9);
        for _ in 0..100 {
            let halves = random_halves(&mut rng, &[1, 2, 3, 4, 5]);
            assert_eq!(halves.len(), 2);
            assert_eq!(halves[0].len(), 2);
            assert_eq!(halves[1].len(), 3);
            let mut all: Vec<_> = halves.concat();
            all.sort();
            assert_eq!(all, vec![1, 2, 3, 4, 5]);
        }
    }

    #[test]
    fn nemesis_never_crashes_more_than_the_limit() {
        let mut rng = SimRng::new(11);
        let config = NemesisConfig::chaos(5);
        let nodes = [1, 2, 3, 4, 5];
        let mut crashed: Vec<NodeId> = Vec::new();
        for _ in 0..1000 {
            for fault in next_faults(&mut rng, &config, &nodes, &crashed) {
                match fault {
                    Fault::Crash(n) | Fault::CrashBeforePersist(n) => crashed.push(n),
                    Fault::Restart(n) => crashed.retain(|&c| c != n),
                    _ => {}
                }
            }
            assert!(crashed.len() <= 2, "{crashed:?}");
        }
    }
}
