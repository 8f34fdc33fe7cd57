//! Who can reach whom in a [`super::Host`]: partitions among nodes, which
//! nodes each client reaches, and the FIFO order of each link. Pure
//! bookkeeping (no clock, no randomness): the host asks it when a message
//! is sent and again when it arrives.

use std::collections::{BTreeMap, BTreeSet};

use raft::NodeId;

use super::{Addr, ClientId, Micros};

/// The reachability of a host's network; everything linked at the start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostLinks {
    /// Partition side per node; nodes on the same side (0 if not named) talk.
    sides: BTreeMap<NodeId, u32>,
    /// Nodes each client can reach; a client not listed reaches all.
    client_reach: BTreeMap<ClientId, BTreeSet<NodeId>>,
    /// Latest arrival planned per link, for FIFO links.
    last_arrival: BTreeMap<(Addr, Addr), Micros>,
}

impl HostLinks {
    /// Only nodes on the same side can talk; the nodes not named form one
    /// more side together (so `partition(&[vec![n]])` isolates `n`).
    /// Clients are not affected (see [`HostLinks::set_client_reach`]).
    pub fn partition(&mut self, sides: &[Vec<NodeId>]) {
        self.sides.clear();
        for (side, members) in sides.iter().enumerate() {
            for id in members {
                self.sides.insert(*id, side as u32 + 1);
            }
        }
    }

    pub fn heal(&mut self) {
        self.sides.clear();
    }

    /// Which nodes `client` can reach; `None`: all of them.
    pub fn set_client_reach(&mut self, client: ClientId, nodes: Option<Vec<NodeId>>) {
        match nodes {
            Some(nodes) => {
                self.client_reach
                    .insert(client, nodes.into_iter().collect());
            }
            None => {
                self.client_reach.remove(&client);
            }
        }
    }

    /// Whether a message between `a` and `b` gets through now (clients
    /// never talk to each other).
    pub fn linked(&self, a: Addr, b: Addr) -> bool {
        let side = |id: &NodeId| self.sides.get(id).copied().unwrap_or(0);
        let reaches = |c: &ClientId, n: &NodeId| {
            self.client_reach
                .get(c)
                .is_none_or(|reach| reach.contains(n))
        };
        match (a, b) {
            (Addr::Node(x), Addr::Node(y)) => side(&x) == side(&y),
            (Addr::Client(c), Addr::Node(n)) | (Addr::Node(n), Addr::Client(c)) => reaches(&c, &n),
            (Addr::Client(_), Addr::Client(_)) => false,
        }
    }

    /// A FIFO link delivers no message before an earlier one: the arrival
    /// time for a message planned to arrive at `at_us`.
    pub fn fifo_arrival(&mut self, from: Addr, to: Addr, at_us: Micros) -> Micros {
        let last = self.last_arrival.entry((from, to)).or_insert(0);
        *last = at_us.max(*last);
        *last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_nodes_share_a_side_and_clients_keep_their_reach() {
        let mut links = HostLinks::default();
        links.partition(&[vec![1]]);
        assert!(!links.linked(Addr::Node(1), Addr::Node(2)));
        assert!(links.linked(Addr::Node(2), Addr::Node(3)));
        assert!(links.linked(Addr::Client(0), Addr::Node(1)));
        links.set_client_reach(0, Some(vec![2]));
        assert!(!links.linked(Addr::Node(1), Addr::Client(0)));
        assert!(links.linked(Addr::Client(0), Addr::Node(2)));
        links.heal();
        assert!(links.linked(Addr::Node(1), Addr::Node(2)));
        assert!(!links.linked(Addr::Client(0), Addr::Client(0)));
    }

    #[test]
    fn fifo_arrivals_never_overtake() {
        let mut links = HostLinks::default();
        let (a, b) = (Addr::Node(1), Addr::Node(2));
        assert_eq!(links.fifo_arrival(a, b, 50), 50);
        assert_eq!(links.fifo_arrival(a, b, 20), 50);
        assert_eq!(links.fifo_arrival(b, a, 20), 20, "links are one-way");
        assert_eq!(links.fifo_arrival(a, b, 70), 70);
    }
}
