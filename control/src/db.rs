//! The `Db` seam (Jepsen's `db`): how a database is installed, started, stopped, killed,
//! paused and resumed on one node, and where its logs are.
//!
//! [`ProcessDb`] is the common case — one daemon per node, a binary plus generated files
//! (config, certificates) uploaded into the node's directory — built only on [`crate::daemon`]
//! and [`crate::ssh::Remote`], so it works on every cluster. The KV service's Db is a
//! `ProcessDb` with its own arguments and files; [`standin_db`] drives the stand-in daemon.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::cluster::{Cluster, Node};
use crate::daemon::{self, DaemonError, DaemonSpec, ProcessState};
use crate::ssh::Remote as _;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("node {node}: not ready: {message}")]
    NotReady { node: String, message: String },
}

/// A database's lifecycle on one node. Every method is idempotent where it can be (`start` on
/// a running node is an error the caller sees; `kill` on a dead node is Ok).
pub trait Db: Send + Sync {
    fn name(&self) -> &str;
    /// Installs on `node`: binary, config, certificates.
    fn setup(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError>;
    /// Starts the daemon and returns once it is up (or errs).
    fn start(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError>;
    /// Graceful stop (SIGTERM, then SIGKILL after a grace period).
    fn stop(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError>;
    /// `kill -9`.
    fn kill(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError>;
    /// SIGSTOP.
    fn pause(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError>;
    /// SIGCONT.
    fn resume(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError>;
    fn state(&self, cluster: &dyn Cluster, node: &Node) -> Result<ProcessState, DbError>;
    /// Stops the daemon and removes its data.
    fn teardown(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError>;
    /// The directory whose `*.log` files are the node's logs.
    fn log_dir(&self, cluster: &dyn Cluster, node: &Node) -> String {
        cluster.node_dir(node)
    }
    /// The node the database believes leads, for isolate-leader (None: unknown or leaderless).
    fn leader(&self, _cluster: &dyn Cluster) -> Option<String> {
        None
    }
}

/// Copies a node's logs into `dest` (created), returning the file names.
pub fn collect_logs(
    db: &dyn Db,
    cluster: &dyn Cluster,
    node: &Node,
    dest: &Path,
) -> Result<Vec<String>, DbError> {
    fs::create_dir_all(dest).map_err(|source| DbError::Io {
        what: format!("creating {}", dest.display()),
        source,
    })?;
    Ok(daemon::collect_logs(
        cluster.ssh(),
        node,
        &db.log_dir(cluster, node),
        dest,
    )?)
}

/// Arguments for a node's daemon, given the node and the whole cluster.
pub type ArgsFn = Arc<dyn Fn(&Node, &[Node]) -> Vec<String> + Send + Sync>;
/// Files (name relative to the node directory, content) to upload at setup.
pub type FilesFn = Arc<dyn Fn(&Node, &[Node]) -> Vec<(String, Vec<u8>)> + Send + Sync>;
/// Waits until a freshly started daemon serves.
pub type ReadyFn = Arc<dyn Fn(&dyn Cluster, &Node) -> Result<(), DbError> + Send + Sync>;

/// One daemon per node from a local binary.
#[derive(Clone)]
pub struct ProcessDb {
    pub name: String,
    pub local_binary: PathBuf,
    pub args: ArgsFn,
    pub files: FilesFn,
    pub ready: Option<ReadyFn>,
    pub stop_grace_ms: u64,
}

impl std::fmt::Debug for ProcessDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessDb")
            .field("name", &self.name)
            .field("local_binary", &self.local_binary)
            .finish_non_exhaustive()
    }
}

impl ProcessDb {
    /// The daemon as started on `node`: binary in `<node dir>/bin/`, pid and log beside.
    pub fn spec(&self, cluster: &dyn Cluster, node: &Node) -> DaemonSpec {
        let dir = cluster.node_dir(node);
        let file_name = self
            .local_binary
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.name.clone());
        DaemonSpec {
            name: self.name.clone(),
            binary: format!("{dir}/bin/{file_name}"),
            dir,
            args: (self.args)(node, cluster.nodes()),
            env: Vec::new(),
        }
    }
}

impl Db for ProcessDb {
    fn name(&self) -> &str {
        &self.name
    }

    fn setup(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        let spec = self.spec(cluster, node);
        daemon::upload(cluster.ssh(), node, &self.local_binary, &spec.binary)?;
        let staging = cluster.staging_dir().join(&node.name);
        for (name, content) in (self.files)(node, cluster.nodes()) {
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
            daemon::upload(cluster.ssh(), node, &local, &format!("{}/{name}", spec.dir))?;
        }
        Ok(())
    }

    fn start(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        daemon::start(cluster.ssh(), node, &self.spec(cluster, node))?;
        if let Some(ready) = &self.ready {
            ready(cluster, node)?;
        }
        Ok(())
    }

    fn stop(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        daemon::stop(
            cluster.ssh(),
            node,
            &self.spec(cluster, node),
            self.stop_grace_ms,
        )?;
        Ok(())
    }

    fn kill(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        daemon::kill(cluster.ssh(), node, &self.spec(cluster, node))?;
        Ok(())
    }

    fn pause(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        daemon::pause(cluster.ssh(), node, &self.spec(cluster, node))?;
        Ok(())
    }

    fn resume(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        daemon::resume(cluster.ssh(), node, &self.spec(cluster, node))?;
        Ok(())
    }

    fn state(&self, cluster: &dyn Cluster, node: &Node) -> Result<ProcessState, DbError> {
        Ok(daemon::state(
            cluster.ssh(),
            node,
            &self.spec(cluster, node),
        )?)
    }

    fn teardown(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.stop(cluster, node)
    }
}

/// The UDP port the stand-in daemon listens on.
pub const STANDIN_PORT: u16 = 7400;

/// The stand-in daemon (`src/bin/standin.rs`) as a Db: listens on the node's address, is ready
/// when a probe from the node itself gets an answer.
pub fn standin_db(local_binary: PathBuf) -> ProcessDb {
    let ready: ReadyFn = Arc::new(|cluster: &dyn Cluster, node: &Node| {
        let binary = format!("{}/bin/standin", cluster.node_dir(node));
        let script = format!(
            "i=0; while [ $i -lt 100 ]; do {binary} probe {ip}:{STANDIN_PORT} --timeout-ms 100 >/dev/null 2>&1 && exit 0; i=$((i+1)); done; exit 1",
            ip = node.ip
        );
        cluster
            .ssh()
            .exec(node, &script)
            .map(|_| ())
            .map_err(|e| DbError::NotReady {
                node: node.name.clone(),
                message: e.to_string(),
            })
    });
    ProcessDb {
        name: "standin".into(),
        local_binary,
        args: Arc::new(|node: &Node, _| {
            vec![
                "serve".into(),
                "--listen".into(),
                format!("{}:{STANDIN_PORT}", node.ip),
                "--name".into(),
                node.name.clone(),
            ]
        }),
        files: Arc::new(|node: &Node, nodes: &[Node]| {
            let peers: Vec<String> = nodes
                .iter()
                .map(|n| format!("{} {}", n.name, n.ip))
                .collect();
            vec![(
                "standin.conf".into(),
                format!("# node {}\n{}\n", node.name, peers.join("\n")).into_bytes(),
            )]
        }),
        ready: Some(ready),
        stop_grace_ms: 2000,
    }
}
