//! Applying faults to a real cluster, over SSH as root on each node, as on real hosts.
//!
//! Partitions are iptables rules in a chain of our own, [`CHAIN`], jumped to from INPUT:
//! `iptables -A RJ-NEMESIS -s <peer> -j DROP` on the node that drops the peer's packets. Heal
//! flushes the chain; teardown removes it. Nothing outside our chain is touched. Kills and
//! pauses go through the [`Db`] (by pid file).

use std::collections::BTreeSet;
use std::thread;

use super::{Fault, Grudge, Nemesis, NemesisError};
use crate::cluster::{Cluster, Node};
use crate::daemon::ProcessState;
use crate::db::Db;
use crate::ssh::Remote;

/// Our iptables chain.
pub const CHAIN: &str = "RJ-NEMESIS";

/// Creates the chain and the INPUT jump, idempotently.
pub fn install_chain_script() -> String {
    format!(
        "iptables -w -N {CHAIN} 2>/dev/null || true; \
         iptables -w -C INPUT -j {CHAIN} 2>/dev/null || iptables -w -I INPUT 1 -j {CHAIN}"
    )
}

/// Replaces the chain's rules with drops of `sources`.
pub fn drop_from_script(sources: &[std::net::Ipv4Addr]) -> String {
    let mut script = format!("iptables -w -F {CHAIN}");
    for ip in sources {
        script.push_str(&format!(" && iptables -w -A {CHAIN} -s {ip} -j DROP"));
    }
    script
}

pub fn heal_script() -> String {
    format!("iptables -w -F {CHAIN}")
}

/// Removes the jump and the chain (best effort: absent is fine).
pub fn remove_chain_script() -> String {
    format!(
        "iptables -w -D INPUT -j {CHAIN} 2>/dev/null; iptables -w -F {CHAIN} 2>/dev/null; \
         iptables -w -X {CHAIN} 2>/dev/null; true"
    )
}

/// The source addresses `node` must drop under `grudge`.
pub fn drops_for(
    nodes: &[Node],
    grudge: &Grudge,
    node: &Node,
) -> Result<Vec<std::net::Ipv4Addr>, NemesisError> {
    let Some(names) = grudge.get(&node.name) else {
        return Ok(Vec::new());
    };
    names
        .iter()
        .map(|name| {
            nodes
                .iter()
                .find(|n| &n.name == name)
                .map(|n| n.ip)
                .ok_or_else(|| NemesisError::UnknownNode(name.clone()))
        })
        .collect()
}

/// Faults on a cluster: iptables over SSH, kill/pause through the Db.
pub struct ClusterNemesis<'a> {
    pub cluster: &'a dyn Cluster,
    pub db: &'a dyn Db,
}

impl<'a> ClusterNemesis<'a> {
    pub fn new(cluster: &'a dyn Cluster, db: &'a dyn Db) -> Self {
        Self { cluster, db }
    }

    fn node(&self, name: &str) -> Result<&'a Node, NemesisError> {
        let cluster: &'a dyn Cluster = self.cluster;
        cluster
            .node(name)
            .ok_or_else(|| NemesisError::UnknownNode(name.to_string()))
    }

    /// Runs `script_for(node)` on every node in parallel; the first error wins.
    fn on_every_node(
        &self,
        script_for: impl Fn(&Node) -> Result<String, NemesisError> + Sync,
    ) -> Result<(), NemesisError> {
        let ssh = self.cluster.ssh();
        let results: Vec<Result<(), NemesisError>> = thread::scope(|scope| {
            let handles: Vec<_> = self
                .cluster
                .nodes()
                .iter()
                .map(|node| {
                    let script_for = &script_for;
                    scope.spawn(move || {
                        let script = script_for(node)?;
                        ssh.exec(node, &script)
                            .map(|_| ())
                            .map_err(|e| NemesisError::Node {
                                node: node.name.clone(),
                                message: e.to_string(),
                            })
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(NemesisError::Node {
                            node: "?".into(),
                            message: "nemesis worker panicked".into(),
                        })
                    })
                })
                .collect()
        });
        results.into_iter().collect()
    }

    /// Installs `grudge` (replacing any partition in effect).
    pub fn partition(&self, grudge: &Grudge) -> Result<(), NemesisError> {
        let nodes = self.cluster.nodes();
        self.on_every_node(|node| Ok(drop_from_script(&drops_for(nodes, grudge, node)?)))
    }

    /// Flushes our chain everywhere.
    pub fn heal(&self) -> Result<(), NemesisError> {
        self.on_every_node(|_| Ok(heal_script()))
    }

    /// Removes our chain everywhere (end of test).
    pub fn remove(&self) -> Result<(), NemesisError> {
        self.on_every_node(|_| Ok(remove_chain_script()))
    }

    fn db_call(
        &self,
        names: &[String],
        call: impl Fn(&dyn Db, &dyn Cluster, &Node) -> Result<(), crate::db::DbError>,
    ) -> Result<(), NemesisError> {
        for name in names {
            let node = self.node(name)?;
            call(self.db, self.cluster, node).map_err(|e| NemesisError::Node {
                node: name.clone(),
                message: e.to_string(),
            })?;
        }
        Ok(())
    }
}

impl Nemesis for ClusterNemesis<'_> {
    fn setup(&mut self) -> Result<(), NemesisError> {
        self.on_every_node(|_| Ok(install_chain_script()))
    }

    fn start(&mut self, fault: &Fault) -> Result<(), NemesisError> {
        match fault {
            Fault::Partition { grudge, .. } => self.partition(grudge),
            Fault::Kill { nodes } => self.db_call(nodes, |db, c, n| db.kill(c, n)),
            Fault::Pause { nodes } => self.db_call(nodes, |db, c, n| db.pause(c, n)),
        }
    }

    fn stop(&mut self, fault: &Fault) -> Result<(), NemesisError> {
        match fault {
            Fault::Partition { .. } => self.heal(),
            Fault::Kill { nodes } => self.db_call(nodes, |db, c, n| db.start(c, n)),
            Fault::Pause { nodes } => self.db_call(nodes, |db, c, n| db.resume(c, n)),
        }
    }

    /// Heals partitions, resumes paused nodes, restarts dead ones; reports the first failure
    /// after trying every node.
    fn heal_all(&mut self) -> Result<(), NemesisError> {
        let mut first_error = self.heal().err();
        let names: BTreeSet<String> = self
            .cluster
            .nodes()
            .iter()
            .map(|n| n.name.clone())
            .collect();
        for name in names {
            let node = self.node(&name)?;
            let result = match self.db.state(self.cluster, node) {
                Ok(ProcessState::Paused(_)) => self.db.resume(self.cluster, node),
                Ok(ProcessState::NotRunning) => self.db.start(self.cluster, node),
                Ok(ProcessState::Running(_)) => Ok(()),
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                first_error.get_or_insert(NemesisError::Node {
                    node: name,
                    message: e.to_string(),
                });
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn scripts_touch_only_our_chain() {
        let script = drop_from_script(&[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]);
        assert_eq!(
            script,
            "iptables -w -F RJ-NEMESIS && iptables -w -A RJ-NEMESIS -s 10.0.0.1 -j DROP \
             && iptables -w -A RJ-NEMESIS -s 10.0.0.2 -j DROP"
        );
        for script in [heal_script(), remove_chain_script(), install_chain_script()] {
            assert!(script.contains(CHAIN));
            assert!(!script.contains("-P "), "never changes policies: {script}");
        }
    }

    #[test]
    fn drops_follow_the_grudge() {
        let nodes: Vec<Node> = (1..=3)
            .map(|i| Node {
                name: format!("n{i}"),
                host: format!("10.0.0.{i}"),
                ip: Ipv4Addr::new(10, 0, 0, i),
            })
            .collect();
        let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
        let grudge = super::super::grudge::isolate(&names, "n2");
        assert_eq!(
            drops_for(&nodes, &grudge, &nodes[0]).unwrap(),
            [Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert_eq!(drops_for(&nodes, &grudge, &nodes[1]).unwrap().len(), 2);
        let mut bad = Grudge::new();
        bad.insert("n1".into(), BTreeSet::from(["n9".to_string()]));
        assert!(drops_for(&nodes, &bad, &nodes[0]).is_err());
    }
}
