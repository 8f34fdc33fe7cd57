//! `cluster.toml`: how a client finds a cluster and proves who it is.
//!
//! ```toml
//! [tls]
//! ca = "certs/ca.pem"
//! cert = "certs/client.pem"
//! key = "certs/client.key"
//!
//! [[nodes]]
//! id = 1
//! name = "n1"
//! addr = "10.77.0.11:7000"
//! ```

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, PeerConfig, TlsConfig};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    pub tls: TlsConfig,
    pub nodes: Vec<PeerConfig>,
}

impl ClusterFile {
    /// Reads and validates a cluster file; relative paths are resolved
    /// against its directory.
    pub fn load(path: &Path) -> Result<ClusterFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cluster: ClusterFile =
            toml::from_str(&text).map_err(|error| ConfigError::Parse {
                path: path.to_path_buf(),
                message: error.to_string(),
            })?;
        let invalid = |field: String, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            field,
            reason,
        };
        if cluster.nodes.is_empty() {
            return Err(invalid(
                "nodes".into(),
                "at least one node is needed".into(),
            ));
        }
        let mut ids = BTreeSet::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            if node.id == 0 || !ids.insert(node.id) {
                return Err(invalid(
                    format!("nodes[{i}].id"),
                    format!("{} is zero or listed twice", node.id),
                ));
            }
        }
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cluster.tls.ca,
            &mut cluster.tls.cert,
            &mut cluster.tls.key,
        ] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cluster)
    }

    /// The node with this id.
    pub fn node(&self, id: u64) -> Option<&PeerConfig> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// Writes the file (used by the control process and tests).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    /// A cluster file for these nodes with certificates in `cert_dir`
    /// (`ca.pem`, `<client>.pem`, `<client>.key`).
    pub fn new(cert_dir: &Path, client_name: &str, nodes: Vec<(u64, String, SocketAddr)>) -> Self {
        let file = |name: String| -> PathBuf { cert_dir.join(name) };
        ClusterFile {
            tls: TlsConfig {
                ca: file("ca.pem".into()),
                cert: file(format!("{client_name}.pem")),
                key: file(format!("{client_name}.key")),
            },
            nodes: nodes
                .into_iter()
                .map(|(id, name, addr)| PeerConfig { id, name, addr })
                .collect(),
        }
    }
}
