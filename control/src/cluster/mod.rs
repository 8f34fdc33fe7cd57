//! Clusters: the machines a test runs on, reached only through [`Remote`] (SSH).
//!
//! * [`local::LocalCluster`] builds one network namespace per node on a private bridge, each
//!   with its own sshd, so a single root machine looks like N hosts.
//! * [`hosts::SshCluster`] is a list of real hosts with a user and a key.
//!
//! Both hand out the same [`Ssh`] layer, so everything above (Db, nemesis, runner) cannot tell
//! them apart.

pub mod hosts;
pub mod local;
pub mod stale;

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::cmd::CmdError;
use crate::net::NetError;
use crate::ssh::{RemoteError, Ssh};

/// Where every run keeps its files: control-side state under `<BASE>/<tag>/`, and on each node
/// `<BASE>/<tag>/nodes/<name>/`.
pub const BASE_DIR: &str = "/var/tmp/rj";

/// One machine of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Short name used in histories, logs and file names (`n1`).
    pub name: String,
    /// What `ssh` connects to.
    pub host: String,
    /// The address other nodes see this node's traffic come from (iptables `-s`).
    pub ip: Ipv4Addr,
}

/// A provisioned set of nodes.
pub trait Cluster: Send + Sync {
    /// The run's tag: part of every namespace, directory and chain we create.
    fn tag(&self) -> &str;
    fn nodes(&self) -> &[Node];
    fn ssh(&self) -> &Ssh;
    /// The node's working directory on the node (exists after provisioning).
    fn node_dir(&self, node: &Node) -> String {
        format!("{BASE_DIR}/{}/nodes/{}", self.tag(), node.name)
    }
    /// A control-side scratch directory for generated files (configs before upload).
    fn staging_dir(&self) -> PathBuf {
        PathBuf::from(format!("{BASE_DIR}/{}/staging", self.tag()))
    }
    /// The network namespace clients must create their sockets in to reach the nodes
    /// (`None`: reachable from here).
    fn client_netns(&self) -> Option<String> {
        None
    }
    fn node(&self, name: &str) -> Option<&Node> {
        self.nodes().iter().find(|n| n.name == name)
    }
    /// Removes everything this cluster created. Idempotent.
    fn teardown(&mut self) -> Result<(), ClusterError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("missing prerequisite: {what} ({hint})")]
    Prerequisite { what: String, hint: String },
    #[error("bad cluster option: {0}")]
    BadOption(String),
    #[error(transparent)]
    Net(#[from] NetError),
    #[error(transparent)]
    Cmd(#[from] CmdError),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Timeout(String),
    #[error("teardown left things behind: {0}")]
    Leftovers(String),
}

impl ClusterError {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
        let what = what.into();
        move |source| ClusterError::Io { what, source }
    }
}

/// A fresh run tag: 6 lowercase letters and digits from the OS RNG (not seeded on purpose:
/// two runs with the same test seed must still not collide).
pub fn new_tag() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rngs::OsRng;
    (0..6)
        .map(|_| char::from(ALPHABET[rng.gen_range(0..ALPHABET.len())]))
        .collect()
}

/// Tags name namespaces and directories: keep them short and harmless.
pub fn validate_tag(tag: &str) -> Result<(), ClusterError> {
    let ok = !tag.is_empty()
        && tag.len() <= 12
        && tag
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(ClusterError::BadOption(format!(
            "tag `{tag}` must be 1-12 lowercase letters or digits"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_valid_and_differ() {
        let a = new_tag();
        let b = new_tag();
        validate_tag(&a).unwrap();
        assert_ne!(a, b);
        assert!(validate_tag("x/y").is_err());
        assert!(validate_tag("").is_err());
        assert!(validate_tag("ABC").is_err());
    }
}
