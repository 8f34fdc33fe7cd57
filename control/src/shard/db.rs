//! The sharded store as a database under test: every daemon of the [`Layout`] is a `node`
//! process addressed by its own pid file, and a [`Db`] operation on a node acts on every
//! daemon there (a node that crashes takes all its processes with it).
//!
//! Files per daemon in the node's directory: `<daemon>.toml` (its config), `self-<daemon>.toml`
//! (the readiness probe's cluster file), `<daemon>.pid`, `<daemon>.log`, `data-<daemon>/`, and
//! `certs/<daemon>.{pem,key}`; the node's logs are therefore collected in one sweep.

use std::collections::BTreeMap;
use std::fs;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::cluster::{Cluster, Node};
use crate::daemon::{self, DaemonSpec, ProcessState};
use crate::db::{Db, DbError};
use crate::ssh::Remote as _;

use super::layout::{Daemon, Layout, Role, CLIENT_NAME};

/// The run's CA and every daemon's certificate, made once the nodes are known.
#[derive(Debug)]
pub struct ShardCerts {
    dir: tempfile::TempDir,
    made: Mutex<bool>,
}

impl ShardCerts {
    pub fn new() -> Result<ShardCerts, String> {
        let dir = tempfile::Builder::new()
            .prefix("rj-shard-certs-")
            .tempdir()
            .map_err(|e| format!("creating a certificate directory: {e}"))?;
        Ok(ShardCerts {
            dir,
            made: Mutex::new(false),
        })
    }

    /// Makes (once) a CA, a certificate per daemon (its name and its node's IP) and the
    /// control's client certificate.
    pub fn ensure(&self, layout: &Layout) -> Result<(), String> {
        use transport::certs;
        let mut made = self
            .made
            .lock()
            .map_err(|_| "certificate lock poisoned".to_string())?;
        if *made {
            return Ok(());
        }
        let ca = certs::generate_ca().map_err(|e| e.to_string())?;
        let mut issued = Vec::new();
        for daemon in &layout.daemons {
            issued.push(
                certs::issue_node_cert(&ca, &daemon.name, &[IpAddr::V4(daemon.ip)])
                    .map_err(|e| e.to_string())?,
            );
        }
        issued.push(certs::issue_client_cert(&ca, CLIENT_NAME).map_err(|e| e.to_string())?);
        certs::write_pem_files(self.dir.path(), &ca, &issued).map_err(|e| e.to_string())?;
        *made = true;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, DbError> {
        let path = self.dir.path().join(name);
        fs::read(&path).map_err(|source| DbError::Io {
            what: format!("reading {}", path.display()),
            source,
        })
    }
}

/// Controller and replica groups on a cluster.
#[derive(Debug)]
pub struct ShardDb {
    pub layout: Layout,
    pub certs: ShardCerts,
    /// The `node` binary uploaded to every node.
    pub node_binary: PathBuf,
    /// Start groups with the keep-serving mutation (a group serves shards it handed over).
    pub keep_serving: bool,
    pub stop_grace_ms: u64,
    /// Whose leader the next [`Db::leader`] names (controller, g1, g2, ... in turn).
    pub leader_turn: AtomicUsize,
}

impl ShardDb {
    pub fn new(
        layout: Layout,
        certs: ShardCerts,
        node_binary: PathBuf,
        keep_serving: bool,
    ) -> Self {
        ShardDb {
            layout,
            certs,
            node_binary,
            keep_serving,
            stop_grace_ms: 3_000,
            leader_turn: AtomicUsize::new(0),
        }
    }

    /// The leader of every Raft group that has one (controller and replica groups): the
    /// daemon that says `leader` in the highest term, by a status request to every daemon
    /// from the control's client namespace.
    pub fn leaders(&self, cluster: &dyn Cluster) -> BTreeMap<Role, Daemon> {
        let daemons = self.layout.daemons.clone();
        // Ids only address daemons within this file, so they are positions, not Raft ids.
        let file = node::ClusterFile::new(
            self.certs.path(),
            CLIENT_NAME,
            daemons
                .iter()
                .enumerate()
                .map(|(i, d)| (i as u64 + 1, d.name.clone(), d.addr()))
                .collect(),
        );
        let netns = cluster.client_netns();
        let reports = crate::netns::run_in(netns.as_deref(), move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let connection = node::client::Connection::open(file).ok()?;
                let mut asks = tokio::task::JoinSet::new();
                for id in 1..=daemons.len() as u64 {
                    let connection = connection.clone();
                    asks.spawn(async move {
                        let report = connection.status(id, Duration::from_millis(300)).await;
                        (id, report.ok())
                    });
                }
                let mut leaders = BTreeMap::new();
                while let Some(Ok((id, Some(report)))) = asks.join_next().await {
                    let daemon = &daemons[id as usize - 1];
                    if report.role == "leader" {
                        leaders.insert(daemon.name.clone(), report.term);
                    }
                }
                Some((daemons, leaders))
            })
        });
        let Ok(Some((daemons, leaders))) = reports else {
            return BTreeMap::new();
        };
        let mut best: BTreeMap<Role, (u64, Daemon)> = BTreeMap::new();
        for daemon in daemons {
            if let Some(&term) = leaders.get(&daemon.name) {
                if best.get(&daemon.role).is_none_or(|(t, _)| term > *t) {
                    best.insert(daemon.role, (term, daemon));
                }
            }
        }
        best.into_iter().map(|(role, (_, d))| (role, d)).collect()
    }

    fn spec(&self, cluster: &dyn Cluster, node: &Node, daemon: &Daemon) -> DaemonSpec {
        let dir = cluster.node_dir(node);
        let mut args = vec!["run".to_string(), "--config".into(), daemon.config_file()];
        if self.keep_serving && matches!(daemon.role, super::layout::Role::Group(_)) {
            args.push("--unsafe-keep-serving".into());
        }
        DaemonSpec {
            name: daemon.name.clone(),
            binary: format!("{dir}/bin/node"),
            dir,
            args,
            env: Vec::new(),
        }
    }

    fn daemons_on(&self, node: &Node) -> Vec<&Daemon> {
        self.layout.on_node(&node.name)
    }

    /// Starts one daemon (if it is not running) and waits until it answers a status request.
    pub fn start_daemon(
        &self,
        cluster: &dyn Cluster,
        node: &Node,
        daemon: &Daemon,
    ) -> Result<(), DbError> {
        let spec = self.spec(cluster, node, daemon);
        match daemon::state(cluster.ssh(), node, &spec)? {
            ProcessState::Running(_) => return Ok(()),
            ProcessState::Paused(_) => {
                daemon::resume(cluster.ssh(), node, &spec)?;
                return Ok(());
            }
            ProcessState::NotRunning => {}
        }
        daemon::start(cluster.ssh(), node, &spec)?;
        self.wait_ready(cluster, node, daemon)
    }

    /// `kill -9` of one daemon.
    pub fn kill_daemon(
        &self,
        cluster: &dyn Cluster,
        node: &Node,
        daemon: &Daemon,
    ) -> Result<(), DbError> {
        daemon::kill(cluster.ssh(), node, &self.spec(cluster, node, daemon))?;
        Ok(())
    }

    fn wait_ready(
        &self,
        cluster: &dyn Cluster,
        node: &Node,
        daemon: &Daemon,
    ) -> Result<(), DbError> {
        let dir = cluster.node_dir(node);
        let script = format!(
            "cd {dir} && i=0; while [ $i -lt 100 ]; do ./bin/node status --cluster {file} \
             --timeout-ms 200 >/dev/null 2>&1 && exit 0; i=$((i+1)); sleep 0.1; done; \
             echo 'no status answer within 30 s'; tail -n 20 {name}.log 2>/dev/null; exit 1",
            file = daemon.self_file(),
            name = daemon.name,
        );
        cluster
            .ssh()
            .exec(node, &script)
            .map(|_| ())
            .map_err(|e| DbError::NotReady {
                node: format!("{} ({})", node.name, daemon.name),
                message: e.to_string(),
            })
    }

    fn each(
        &self,
        cluster: &dyn Cluster,
        node: &Node,
        call: impl Fn(&DaemonSpec) -> Result<(), DbError>,
    ) -> Result<(), DbError> {
        let mut first = None;
        for daemon in self.daemons_on(node) {
            if let Err(e) = call(&self.spec(cluster, node, daemon)) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn files(&self, node: &Node) -> Result<Vec<(String, Vec<u8>)>, DbError> {
        let mut files = vec![
            ("certs/ca.pem".to_string(), self.certs.read("ca.pem")?),
            (
                format!("certs/{CLIENT_NAME}.pem"),
                self.certs.read(&format!("{CLIENT_NAME}.pem"))?,
            ),
            (
                format!("certs/{CLIENT_NAME}.key"),
                self.certs.read(&format!("{CLIENT_NAME}.key"))?,
            ),
        ];
        for daemon in self.daemons_on(node) {
            files.push((
                daemon.config_file(),
                self.layout
                    .node_config(daemon, self.keep_serving)
                    .into_bytes(),
            ));
            files.push((
                daemon.self_file(),
                self.layout.self_cluster_file(daemon).into_bytes(),
            ));
            for ext in ["pem", "key"] {
                let name = format!("{}.{ext}", daemon.name);
                files.push((format!("certs/{name}"), self.certs.read(&name)?));
            }
        }
        Ok(files)
    }
}

impl Db for ShardDb {
    fn name(&self) -> &str {
        "shardkv"
    }

    fn setup(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.certs
            .ensure(&self.layout)
            .map_err(|message| DbError::NotReady {
                node: node.name.clone(),
                message,
            })?;
        let dir = cluster.node_dir(node);
        daemon::upload(
            cluster.ssh(),
            node,
            &self.node_binary,
            &format!("{dir}/bin/node"),
        )?;
        let staging = cluster.staging_dir().join(&node.name);
        for (name, content) in self.files(node)? {
            let local = staging.join(&name);
            if let Some(parent) = local.parent() {
                fs::create_dir_all(parent).map_err(|source| DbError::Io {
                    what: format!("creating {}", parent.display()),
                    source,
                })?;
            }
            fs::write(&local, content).map_err(|source| DbError::Io {
                what: format!("writing {}", local.display()),
                source,
            })?;
            daemon::upload(cluster.ssh(), node, &local, &format!("{dir}/{name}"))?;
        }
        Ok(())
    }

    /// Starts every daemon of the node that is not running (resumes paused ones).
    fn start(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        let mut first = None;
        for daemon in self.daemons_on(node) {
            if let Err(e) = self.start_daemon(cluster, node, daemon) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn stop(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.each(cluster, node, |spec| {
            daemon::stop(cluster.ssh(), node, spec, self.stop_grace_ms)
                .map(|_| ())
                .map_err(DbError::from)
        })
    }

    fn kill(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.each(cluster, node, |spec| {
            daemon::kill(cluster.ssh(), node, spec)
                .map(|_| ())
                .map_err(DbError::from)
        })
    }

    fn pause(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.each(cluster, node, |spec| {
            match daemon::state(cluster.ssh(), node, spec)? {
                ProcessState::Running(_) => daemon::pause(cluster.ssh(), node, spec).map(|_| ()),
                _ => Ok(()),
            }
            .map_err(DbError::from)
        })
    }

    fn resume(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.each(cluster, node, |spec| {
            match daemon::state(cluster.ssh(), node, spec)? {
                ProcessState::Paused(_) => daemon::resume(cluster.ssh(), node, spec).map(|_| ()),
                _ => Ok(()),
            }
            .map_err(DbError::from)
        })
    }

    /// Paused if any daemon is paused, not running if any is down (so a heal restarts or
    /// resumes exactly what a fault left behind), else running (the first daemon's pid).
    fn state(&self, cluster: &dyn Cluster, node: &Node) -> Result<ProcessState, DbError> {
        let mut states = Vec::new();
        for daemon in self.daemons_on(node) {
            states.push(daemon::state(
                cluster.ssh(),
                node,
                &self.spec(cluster, node, daemon),
            )?);
        }
        Ok(combined_state(&states))
    }

    fn teardown(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.stop(cluster, node)
    }

    /// The node of one group's leader, the controller's and each replica group's in turn, so
    /// isolate-leader cuts off every group's leader over a run.
    fn leader(&self, cluster: &dyn Cluster) -> Option<String> {
        let leaders = self.leaders(cluster);
        let roles = self.layout.roles();
        let turn = self.leader_turn.fetch_add(1, Ordering::Relaxed);
        let role = roles.get(turn % roles.len().max(1))?;
        leaders.get(role).map(|d| d.node.clone())
    }
}

/// One state for a node's daemons: a paused one wins (it needs a resume), then a dead one.
pub fn combined_state(states: &[ProcessState]) -> ProcessState {
    if let Some(paused) = states.iter().find(|s| matches!(s, ProcessState::Paused(_))) {
        return *paused;
    }
    if states.contains(&ProcessState::NotRunning) || states.is_empty() {
        return ProcessState::NotRunning;
    }
    states[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_is_as_healthy_as_its_sickest_daemon() {
        use ProcessState::*;
        assert_eq!(combined_state(&[Running(1), Running(2)]), Running(1));
        assert_eq!(combined_state(&[Running(1), NotRunning]), NotRunning);
        assert_eq!(combined_state(&[NotRunning, Paused(3)]), Paused(3));
        assert_eq!(combined_state(&[]), NotRunning);
    }
}
