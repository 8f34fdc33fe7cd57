//! Where the sharded store's daemons run: pure maths from the node list to daemons, ports,
//! Raft ids and config files. Nothing here touches a node.
//!
//! One controller group (up to [`CONTROLLER_MEMBERS`] members, on the first nodes) and
//! `groups` replica groups of up to [`GROUP_MEMBERS`] members each, placed round-robin so that
//! the groups overlap on nodes: with 5 nodes and 3 groups of 3, `g1` is on n1-n3, `g2` on n4,
//! n5, n1 and `g3` on n2-n4. Several daemons therefore share a node: each has its own name
//! (`ctrl-n1`, `g2-n4`), UDP port, data directory, pid file and log (all named after the
//! daemon, in the node's directory), and its own certificate from the run's one CA. A fault on
//! a node (partition, kill, pause) hits every daemon on it, controller and groups alike.

use std::net::{Ipv4Addr, SocketAddr};

use crate::cluster::Node;

/// Replica group id, as the controller numbers groups (never 0).
pub type Gid = u64;

/// Members of the controller's Raft group (fewer when the cluster has fewer nodes).
pub const CONTROLLER_MEMBERS: usize = 3;
/// Members of each replica group's Raft group (fewer when the cluster has fewer nodes).
pub const GROUP_MEMBERS: usize = 3;
/// The controller's UDP port; group `gid` listens on `CONTROLLER_PORT + gid`.
pub const CONTROLLER_PORT: u16 = 7100;
/// Most replica groups a layout holds (ports stay below 7100 + 64).
pub const MAX_GROUPS: usize = 63;
/// The name of the control's client certificate (and of the probes' on each node).
pub const CLIENT_NAME: &str = "control";

/// What a daemon serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Controller,
    Group(Gid),
}

/// One daemon of the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Daemon {
    /// Unique in the cluster; its certificate, config, pid, log and data dir are named after it.
    pub name: String,
    pub role: Role,
    /// The node it runs on.
    pub node: String,
    pub ip: Ipv4Addr,
    pub port: u16,
    /// Its Raft id within its own group (1-based).
    pub raft_id: u64,
}

impl Daemon {
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }
    /// The config file in the node's directory.
    pub fn config_file(&self) -> String {
        format!("{}.toml", self.name)
    }
    /// The cluster file a probe on the node uses to ask this daemon for its status.
    pub fn self_file(&self) -> String {
        format!("self-{}.toml", self.name)
    }
}

/// Every daemon of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub daemons: Vec<Daemon>,
    pub groups: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error("a sharded store needs at least one node")]
    NoNodes,
    #[error("{0} replica groups requested; between 1 and {MAX_GROUPS} are supported")]
    Groups(usize),
}

impl Layout {
    pub fn new(nodes: &[Node], groups: usize) -> Result<Layout, LayoutError> {
        if nodes.is_empty() {
            return Err(LayoutError::NoNodes);
        }
        if groups == 0 || groups > MAX_GROUPS {
            return Err(LayoutError::Groups(groups));
        }
        let mut daemons = Vec::new();
        for (i, node) in nodes.iter().take(CONTROLLER_MEMBERS).enumerate() {
            daemons.push(Daemon {
                name: format!("ctrl-{}", node.name),
                role: Role::Controller,
                node: node.name.clone(),
                ip: node.ip,
                port: CONTROLLER_PORT,
                raft_id: i as u64 + 1,
            });
        }
        let members = GROUP_MEMBERS.min(nodes.len());
        for g in 0..groups {
            let gid = g as Gid + 1;
            for m in 0..members {
                let node = &nodes[(g * members + m) % nodes.len()];
                daemons.push(Daemon {
                    name: format!("g{gid}-{}", node.name),
                    role: Role::Group(gid),
                    node: node.name.clone(),
                    ip: node.ip,
                    port: CONTROLLER_PORT + gid as u16,
                    raft_id: m as u64 + 1,
                });
            }
        }
        Ok(Layout { daemons, groups })
    }

    pub fn gids(&self) -> Vec<Gid> {
        (1..=self.groups as Gid).collect()
    }

    /// Every Raft group of the layout: the controller, then the replica groups by gid.
    pub fn roles(&self) -> Vec<Role> {
        std::iter::once(Role::Controller)
            .chain(self.gids().into_iter().map(Role::Group))
            .collect()
    }

    /// The daemons of one group (or the controller), by Raft id.
    pub fn members(&self, role: Role) -> Vec<&Daemon> {
        self.daemons.iter().filter(|d| d.role == role).collect()
    }

    /// The daemons on one node.
    pub fn on_node(&self, node: &str) -> Vec<&Daemon> {
        self.daemons.iter().filter(|d| d.node == node).collect()
    }

    pub fn daemon(&self, name: &str) -> Option<&Daemon> {
        self.daemons.iter().find(|d| d.name == name)
    }

    /// The servers of group `gid` as a Join names them: `name@ip:port` (the certificate name
    /// and the address, which is all a group or a clerk needs to reach a server).
    pub fn servers(&self, gid: Gid) -> Vec<String> {
        self.members(Role::Group(gid))
            .iter()
            .map(|d| format!("{}@{}", d.name, d.addr()))
            .collect()
    }

    /// `node.toml` of one daemon: its group's other members are its Raft peers.
    pub fn node_config(&self, daemon: &Daemon, keep_serving: bool) -> String {
        let service = match daemon.role {
            Role::Controller => "shardctrler",
            Role::Group(_) => "shardkv",
        };
        let mut text = format!(
            "id = {id}\nname = \"{name}\"\nlisten = \"{addr}\"\ndata_dir = \"data-{name}\"\n\
             service = \"{service}\"\n\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{name}.pem\"\n\
             key = \"certs/{name}.key\"\n",
            id = daemon.raft_id,
            name = daemon.name,
            addr = daemon.addr(),
        );
        if let Role::Group(gid) = daemon.role {
            text.push_str(&format!("\n[shardkv]\ngid = {gid}\n"));
            if keep_serving {
                text.push_str("unsafe_keep_serving = true\n");
            }
            for ctrl in self.members(Role::Controller) {
                text.push_str(&format!(
                    "\n[[shardkv.controllers]]\nid = {}\nname = \"{}\"\naddr = \"{}\"\n",
                    ctrl.raft_id,
                    ctrl.name,
                    ctrl.addr()
                ));
            }
        }
        for peer in self.members(daemon.role) {
            if peer.name == daemon.name {
                continue;
            }
            text.push_str(&format!(
                "\n[[peers]]\nid = {}\nname = \"{}\"\naddr = \"{}\"\n",
                peer.raft_id,
                peer.name,
                peer.addr()
            ));
        }
        text
    }

    /// The cluster file a probe on the daemon's node uses (paths on the node).
    pub fn self_cluster_file(&self, daemon: &Daemon) -> String {
        format!(
            "[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{CLIENT_NAME}.pem\"\nkey = \"certs/{CLIENT_NAME}.key\"\n\n\
             [[nodes]]\nid = {}\nname = \"{}\"\naddr = \"{}\"\n",
            daemon.raft_id,
            daemon.name,
            daemon.addr()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u8) -> Vec<Node> {
        (1..=n)
            .map(|i| Node {
                name: format!("n{i}"),
                host: format!("10.9.0.{i}"),
                ip: Ipv4Addr::new(10, 9, 0, i),
            })
            .collect()
    }

    #[test]
    fn five_nodes_three_groups_spread_and_never_share_a_port_on_a_node() {
        let layout = Layout::new(&nodes(5), 3).unwrap();
        assert_eq!(layout.members(Role::Controller).len(), 3);
        assert_eq!(
            layout.servers(1),
            [
                "g1-n1@10.9.0.1:7101",
                "g1-n2@10.9.0.2:7101",
                "g1-n3@10.9.0.3:7101"
            ]
        );
        let names = |gid| -> Vec<String> {
            layout
                .members(Role::Group(gid))
                .iter()
                .map(|d| d.name.clone())
                .collect()
        };
        assert_eq!(names(2), ["g2-n4", "g2-n5", "g2-n1"]);
        assert_eq!(names(3), ["g3-n2", "g3-n3", "g3-n4"]);
        for node in nodes(5) {
            let here = layout.on_node(&node.name);
            let mut ports: Vec<u16> = here.iter().map(|d| d.port).collect();
            ports.sort_unstable();
            ports.dedup();
            assert_eq!(ports.len(), here.len(), "{here:?}");
        }
        let mut names: Vec<&str> = layout.daemons.iter().map(|d| d.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), 3 + 9);
        assert_eq!(
            layout.roles(),
            [
                Role::Controller,
                Role::Group(1),
                Role::Group(2),
                Role::Group(3)
            ]
        );
    }

    #[test]
    fn configs_name_only_their_own_group_as_peers() {
        let layout = Layout::new(&nodes(5), 2).unwrap();
        let g2 = layout.daemon("g2-n1").unwrap();
        let text = layout.node_config(g2, false);
        assert!(text.contains("service = \"shardkv\""), "{text}");
        assert!(text.contains("gid = 2"), "{text}");
        assert!(text.contains("listen = \"10.9.0.1:7102\""), "{text}");
        assert!(text.contains("name = \"g2-n4\""), "{text}");
        assert!(text.contains("[[shardkv.controllers]]"), "{text}");
        assert!(!text.contains("unsafe_keep_serving"), "{text}");
        let peers = text.split("[[peers]]").count() - 1;
        assert_eq!(peers, 2, "{text}");
        let ctrl = layout.daemon("ctrl-n2").unwrap();
        let text = layout.node_config(ctrl, true);
        assert!(text.contains("service = \"shardctrler\""), "{text}");
        assert!(!text.contains("[shardkv]"), "{text}");
        assert!(layout
            .node_config(g2, true)
            .contains("unsafe_keep_serving = true"));
    }

    #[test]
    fn small_clusters_and_bad_sizes() {
        let layout = Layout::new(&nodes(1), 2).unwrap();
        assert_eq!(layout.daemons.len(), 3);
        assert_eq!(Layout::new(&[], 1), Err(LayoutError::NoNodes));
        assert_eq!(Layout::new(&nodes(3), 0), Err(LayoutError::Groups(0)));
    }
}
