//! The simulated network: who can reach whom (links), and what happens to a
//! message on a working link (delay, loss, duplication, long reordering).
//!
//! Both are plain values; the simulator consults them when a message is sent
//! and again when it would arrive, so a partition that starts while a message
//! is in flight drops it, as an `iptables DROP` rule would.

use crate::rng::SimRng;
use raft::NodeId;

/// labrpc's long reordering (Figure 8 unreliable): with some probability a
/// message is held back `base + uniform(0..uniform(0..extra_max))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LongReorder {
    pub probability: f64,
    pub base_us: u64,
    pub extra_us_max: u64,
}

/// What happens to a message on a working link.
#[derive(Clone, Debug, PartialEq)]
pub struct NetConfig {
    /// One-way delay, uniform in `[delay_us_min, delay_us_max]`.
    pub delay_us_min: u64,
    pub delay_us_max: u64,
    /// Probability that a message is lost.
    pub drop_probability: f64,
    /// Probability that a delivered message arrives a second time (with its
    /// own delay), as a retransmitting transport can cause.
    pub duplicate_probability: f64,
    pub long_reorder: Option<LongReorder>,
    /// Messages on one link arrive in the order they were sent, as on the
    /// node runtime's long-lived QUIC stream per peer. Off for the lab's
    /// unreliable network (labrpc runs every RPC in its own goroutine).
    pub fifo_links: bool,
}

impl NetConfig {
    /// A healthy LAN: 0.1-1 ms, nothing lost, in order per link.
    pub fn reliable() -> Self {
        Self {
            delay_us_min: 100,
            delay_us_max: 1_000,
            drop_probability: 0.0,
            duplicate_probability: 0.0,
            long_reorder: None,
            fifo_links: true,
        }
    }

    /// labrpc's `Reliable(false)`: 0-26 ms delay and 10% loss. labrpc drops
    /// 10% of requests and 10% of replies; every message here is one-way, so
    /// each message is dropped with probability 10%.
    pub fn unreliable() -> Self {
        Self {
            delay_us_min: 0,
            delay_us_max: 26_000,
            drop_probability: 0.10,
            duplicate_probability: 0.0,
            long_reorder: None,
            fifo_links: false,
        }
    }

    /// labrpc's `LongReordering(true)`: 600 of 900 replies wait an extra
    /// 200 ms + rand(0..rand(2000)) ms. Our messages are one-way, and about
    /// half of them are replies, so a third of all messages are held back.
    pub fn with_long_reordering(mut self) -> Self {
        self.long_reorder = Some(LongReorder {
            probability: 1.0 / 3.0,
            base_us: 200_000,
            extra_us_max: 2_000_000,
        });
        self
    }

    pub fn with_duplication(mut self, probability: f64) -> Self {
        self.duplicate_probability = probability;
        self
    }

    /// When each copy of a message arrives, as delays from now: none if the
    /// message is lost, two if it is duplicated.
    pub fn plan(&self, rng: &mut SimRng) -> [Option<u64>; 2] {
        if rng.chance(self.drop_probability) {
            return [None, None];
        }
        let first = Some(self.one_delay_us(rng));
        let second = if rng.chance(self.duplicate_probability) {
            Some(self.one_delay_us(rng))
        } else {
            None
        };
        [first, second]
    }

    fn one_delay_us(&self, rng: &mut SimRng) -> u64 {
        let mut delay_us = rng.between(self.delay_us_min, self.delay_us_max);
        if let Some(long) = self.long_reorder {
            if rng.chance(long.probability) {
                let cap = rng.below(long.extra_us_max);
                delay_us += long.base_us + rng.below(cap);
            }
        }
        delay_us
    }
}

/// Who can send to whom. Node ids are `1..=n`.
///
/// A link `a -> b` works iff both nodes are connected (labrpc's
/// `connect`/`disconnect` of a whole server) and the link itself is not cut
/// (partitions, which may be asymmetric or non-transitive).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Links {
    nodes: usize,
    connected: Vec<bool>,
    /// `cut[(from - 1) * nodes + (to - 1)]`
    cut: Vec<bool>,
}

impl Links {
    pub fn fully_connected(nodes: usize) -> Self {
        Self {
            nodes,
            connected: vec![true; nodes],
            cut: vec![false; nodes * nodes],
        }
    }

    fn slot(&self, id: NodeId) -> Option<usize> {
        let at = usize::try_from(id).ok()?.checked_sub(1)?;
        (at < self.nodes).then_some(at)
    }

    /// Whether a message from `from` to `to` gets through right now.
    pub fn can_deliver(&self, from: NodeId, to: NodeId) -> bool {
        match (self.slot(from), self.slot(to)) {
            (Some(f), Some(t)) => {
                self.connected[f] && self.connected[t] && !self.cut[f * self.nodes + t]
            }
            _ => false,
        }
    }

    /// labrpc `disconnect(i)`: nothing in or out of `node`.
    pub fn disconnect(&mut self, node: NodeId) {
        if let Some(at) = self.slot(node) {
            self.connected[at] = false;
        }
    }

    /// labrpc `connect(i)`: undoes [`Links::disconnect`] (cut links stay cut).
    pub fn connect(&mut self, node: NodeId) {
        if let Some(at) = self.slot(node) {
            self.connected[at] = true;
        }
    }

    pub fn is_connected(&self, node: NodeId) -> bool {
        self.slot(node).is_some_and(|at| self.connected[at])
    }

    /// Cuts every link between different groups; links inside a group work.
    /// Nodes named in no group are isolated from everyone.
    pub fn partition(&mut self, groups: &[Vec<NodeId>]) {
        let mut group_of = vec![usize::MAX; self.nodes];
        for (g, members) in groups.iter().enumerate() {
            for &m in members {
                if let Some(at) = self.slot(m) {
                    group_of[at] = g;
                }
            }
        }
        for f in 0..self.nodes {
            for t in 0..self.nodes {
                let same = group_of[f] != usize::MAX && group_of[f] == group_of[t];
                self.cut[f * self.nodes + t] = f != t && !same;
            }
        }
    }

    /// Cuts (or restores) the single directed link `from -> to`.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, works: bool) {
        if let (Some(f), Some(t)) = (self.slot(from), self.slot(to)) {
            self.cut[f * self.nodes + t] = !works;
        }
    }

    /// Every node connected, no link cut.
    pub fn heal(&mut self) {
        self.connected.iter_mut().for_each(|c| *c = true);
        self.cut.iter_mut().for_each(|c| *c = false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_cuts_between_groups_only() {
        let mut links = Links::fully_connected(5);
        links.partition(&[vec![1, 2], vec![3, 4, 5]]);
        assert!(links.can_deliver(1, 2));
        assert!(links.can_deliver(4, 5));
        assert!(!links.can_deliver(2, 3));
        assert!(!links.can_deliver(5, 1));
        links.heal();
        assert!(links.can_deliver(2, 3));
    }

    #[test]
    fn disconnect_isolates_in_both_directions() {
        let mut links = Links::fully_connected(3);
        links.disconnect(2);
        assert!(!links.can_deliver(1, 2));
        assert!(!links.can_deliver(2, 3));
        assert!(links.can_deliver(1, 3));
        links.connect(2);
        assert!(links.can_deliver(2, 1));
    }

    #[test]
    fn unknown_nodes_are_unreachable() {
        let links = Links::fully_connected(3);
        assert!(!links.can_deliver(0, 1));
        assert!(!links.can_deliver(1, 4));
    }

    #[test]
    fn unreliable_drops_about_ten_percent_and_delays_at_most_26ms() {
        let net = NetConfig::unreliable();
        let mut rng = SimRng::new(3);
        let mut dropped = 0;
        for _ in 0..10_000 {
            match net.plan(&mut rng) {
                [None, _] => dropped += 1,
                [Some(d), _] => assert!(d <= 26_000, "delay {d} us"),
            }
        }
        assert!((800..1200).contains(&dropped), "dropped {dropped} of 10000");
    }

    #[test]
    fn long_reordering_holds_some_messages_for_hundreds_of_ms() {
        let net = NetConfig::unreliable().with_long_reordering();
        let mut rng = SimRng::new(4);
        let delays: Vec<u64> = (0..3000).filter_map(|_| net.plan(&mut rng)[0]).collect();
        let long = delays.iter().filter(|&&d| d >= 200_000).count();
        assert!(long > 500, "only {long} long delays");
        assert!(delays.iter().all(|&d| d <= 26_000 + 2_200_000));
    }
}
