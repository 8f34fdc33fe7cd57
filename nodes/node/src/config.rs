//! `node.toml`: everything a node daemon needs to start, validated up front so
//! a mistake is reported with the name of the field, before anything runs.
//!
//! ```toml
//! id = 1
//! name = "n1"
//! listen = "10.77.0.11:7000"
//! data_dir = "/var/lib/rj/n1"
//! service = "kv"
//! pid_file = "/var/lib/rj/n1/node.pid"   # optional
//!
//! [tls]
//! ca = "certs/ca.pem"
//! cert = "certs/n1.pem"
//! key = "certs/n1.key"
//!
//! [[peers]]
//! id = 2
//! name = "n2"
//! addr = "10.77.0.12:7000"
//!
//! [raft]          # all optional
//! tick_ms = 10
//! election_timeout_ticks_min = 30
//! election_timeout_ticks_max = 60
//! heartbeat_interval_ticks = 5
//!
//! [kv]            # all optional
//! read_mode = "read-index"          # log | read-index | lease
//! max_raft_state_bytes = 8388608    # also used by shardctrler and shardkv
//! unsafe_stale_reads = false
//! ```
//!
//! `service = "shardctrler"` runs a shard controller replica; optional
//! `[shardctrler] shards = 10` sets the deployment's shard count (the same
//! on every controller). `service = "shardkv"` runs a member of a replica group; the
//! peers are the group's other members, and it needs:
//!
//! ```toml
//! [shardkv]
//! gid = 100
//! poll_ms = 100                  # optional
//! unsafe_keep_serving = false    # optional, DANGER (tests only)
//! [[shardkv.controllers]]
//! id = 1
//! name = "c1"
//! addr = "10.77.0.21:7000"
//! ```
//!
//! Relative paths are resolved against the directory of the config file.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// A config that could not be read or is invalid; the message names the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config {path}: field `{field}`: {reason}")]
    Invalid {
        path: PathBuf,
        field: String,
        reason: String,
    },
}

/// Which replicated service this node runs on top of Raft.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Service {
    Kv,
    /// The shard controller (Lab 4A): one Raft group of controllers.
    Shardctrler,
    /// One replica group of the sharded KV store (Lab 4B); needs `[shardkv]`.
    Shardkv,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    pub id: u64,
    /// The name in the peer's certificate (also its TLS server name).
    pub name: String,
    pub addr: SocketAddr,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    pub tick_ms: u64,
    pub election_timeout_ticks_min: u32,
    pub election_timeout_ticks_max: u32,
    pub heartbeat_interval_ticks: u32,
    pub pre_vote: bool,
    pub check_quorum: bool,
    pub max_inflight_messages: usize,
    pub max_message_bytes: usize,
    pub snapshot_chunk_bytes: usize,
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            tick_ms: 10,
            election_timeout_ticks_min: 30,
            election_timeout_ticks_max: 60,
            heartbeat_interval_ticks: 5,
            pre_vote: true,
            check_quorum: true,
            max_inflight_messages: 64,
            max_message_bytes: 1024 * 1024,
            snapshot_chunk_bytes: 256 * 1024,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ReadModeName {
    Log,
    #[default]
    ReadIndex,
    Lease,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvSection {
    pub read_mode: ReadModeName,
    /// Snapshot when the persisted Raft state passes this size (maxraftstate).
    pub max_raft_state_bytes: Option<usize>,
    /// DANGER: answer gets from local state on any replica (not linearizable).
    pub unsafe_stale_reads: bool,
}

impl Default for KvSection {
    fn default() -> Self {
        KvSection {
            read_mode: ReadModeName::ReadIndex,
            max_raft_state_bytes: Some(8 * 1024 * 1024),
            unsafe_stale_reads: false,
        }
    }
}

/// `[shardctrler]`: settings of a shard controller replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtrlSection {
    /// Shards of the deployment (default 10). Every controller replica must
    /// have the same count; the groups and clients learn it from the
    /// configurations.
    #[serde(default = "default_shards")]
    pub shards: usize,
}

fn default_shards() -> usize {
    shardctrler::NSHARDS
}

/// `[shardkv]`: which replica group this node belongs to and where the
/// controllers are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardKvSection {
    /// The replica group id (not 0); the peers are the group's other members.
    pub gid: u64,
    /// The shard controller group's members.
    pub controllers: Vec<PeerConfig>,
    /// The leader asks the controller for the next configuration (and
    /// re-sends pulls and deletes) this often.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
    /// DANGER: keep serving a shard after handing it over to another group
    /// (not linearizable; exists so the harness can prove it catches it).
    #[serde(default)]
    pub unsafe_keep_serving: bool,
}

fn default_poll_ms() -> u64 {
    100
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u64,
    pub name: String,
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub service: Service,
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    pub tls: TlsConfig,
    #[serde(default)]
    pub peers: Vec<PeerConfig>,
    #[serde(default)]
    pub raft: RaftSection,
    /// Also holds `max_raft_state_bytes` for the shardctrler and shardkv services.
    #[serde(default)]
    pub kv: KvSection,
    /// Optional for `service = "shardctrler"`, refused otherwise.
    #[serde(default)]
    pub shardctrler: Option<CtrlSection>,
    /// Required for `service = "shardkv"`, refused otherwise.
    #[serde(default)]
    pub shardkv: Option<ShardKvSection>,
}

impl NodeConfig {
    /// Reads, parses and validates `path`; relative paths inside are resolved
    /// against the config file's directory.
    pub fn load(path: &Path) -> Result<NodeConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config = Self::parse(&text, path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        config.resolve_paths(base);
        Ok(config)
    }

    /// Parses and validates config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<NodeConfig, ConfigError> {
        let config: NodeConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            message: error.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        resolve(&mut self.data_dir);
        resolve(&mut self.tls.ca);
        resolve(&mut self.tls.cert);
        resolve(&mut self.tls.key);
        if let Some(pid) = self.pid_file.as_mut() {
            resolve(pid);
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |field: &str, reason: String| {
            Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                field: field.to_string(),
                reason,
            })
        };
        if self.id == 0 {
            return bad("id", "0 is not a valid node id".into());
        }
        if self.name.is_empty() {
            return bad("name", "must not be empty".into());
        }
        let mut ids = BTreeSet::new();
        ids.insert(self.id);
        for (i, peer) in self.peers.iter().enumerate() {
            if peer.id == 0 {
                return bad(&format!("peers[{i}].id"), "0 is not a valid node id".into());
            }
            if !ids.insert(peer.id) {
                return bad(
                    &format!("peers[{i}].id"),
                    format!("id {} appears twice (or is this node's own id)", peer.id),
                );
            }
            if peer.name.is_empty() {
                return bad(&format!("peers[{i}].name"), "must not be empty".into());
            }
        }
        let r = &self.raft;
        if r.tick_ms == 0 || r.tick_ms > 10_000 {
            return bad(
                "raft.tick_ms",
                format!("{} is outside 1..=10000", r.tick_ms),
            );
        }
        if let Err(error) = self.raft_config().validate() {
            return bad("raft", error.to_string());
        }
        match (&self.service, &self.shardkv) {
            (Service::Shardkv, None) => {
                return bad(
                    "shardkv",
                    "service \"shardkv\" needs a [shardkv] section".into(),
                )
            }
            (Service::Shardkv, Some(section)) => {
                if section.gid == 0 {
                    return bad("shardkv.gid", "0 is reserved for unassigned shards".into());
                }
                if section.controllers.is_empty() {
                    return bad(
                        "shardkv.controllers",
                        "at least one controller is needed".into(),
                    );
                }
                if section.poll_ms == 0 {
                    return bad("shardkv.poll_ms", "must be positive".into());
                }
            }
            (_, Some(_)) => {
                return bad(
                    "shardkv",
                    "only a node with service = \"shardkv\" takes this section".into(),
                )
            }
            (_, None) => {}
        }
        match (&self.service, &self.shardctrler) {
            (Service::Shardctrler, Some(section)) if !(1..=4096).contains(&section.shards) => {
                return bad(
                    "shardctrler.shards",
                    format!("{} is outside 1..=4096", section.shards),
                )
            }
            (Service::Shardctrler, _) | (_, None) => {}
            (_, Some(_)) => {
                return bad(
                    "shardctrler",
                    "only a node with service = \"shardctrler\" takes this section".into(),
                )
            }
        }
        if let Some(0) = self.kv.max_raft_state_bytes {
            return bad(
                "kv.max_raft_state_bytes",
                "must be positive (omit it to never snapshot)".into(),
            );
        }
        Ok(())
    }

    /// The ids of every voter (this node and its peers), sorted.
    pub fn voters(&self) -> Vec<u64> {
        let mut voters: Vec<u64> = self.peers.iter().map(|p| p.id).collect();
        voters.push(self.id);
        voters.sort_unstable();
        voters
    }

    /// The Raft core's configuration.
    pub fn raft_config(&self) -> raft::Config {
        let mut config = raft::Config::new(self.id, self.voters());
        let r = &self.raft;
        config.election_timeout_ticks_min = r.election_timeout_ticks_min;
        config.election_timeout_ticks_max = r.election_timeout_ticks_max;
        config.heartbeat_interval_ticks = r.heartbeat_interval_ticks;
        config.pre_vote = r.pre_vote;
        config.check_quorum = r.check_quorum;
        config.max_inflight_messages = r.max_inflight_messages;
        config.max_message_bytes = r.max_message_bytes;
        config.snapshot_chunk_bytes = r.snapshot_chunk_bytes;
        if self.kv.read_mode == ReadModeName::Lease {
            config.read_mode = raft::ReadMode::Lease;
        }
        config
    }

    /// The shard controller replica's configuration.
    pub fn ctrl_server_config(&self) -> shardctrler::server::ServerConfig {
        shardctrler::server::ServerConfig {
            max_raft_state_bytes: self.kv.max_raft_state_bytes,
            pending_timeout_ticks: (2000 / self.raft.tick_ms).max(1),
            shards: self
                .shardctrler
                .as_ref()
                .map_or(shardctrler::NSHARDS, |s| s.shards),
            ..shardctrler::server::ServerConfig::default()
        }
    }

    /// The shardkv replica's configuration (`None` without `[shardkv]`).
    pub fn shardkv_server_config(&self) -> Option<shardkv::ServerConfig> {
        let section = self.shardkv.as_ref()?;
        Some(shardkv::ServerConfig {
            max_raft_state_bytes: self.kv.max_raft_state_bytes,
            poll_interval_ticks: (section.poll_ms / self.raft.tick_ms).max(1),
            pending_timeout_ticks: (2000 / self.raft.tick_ms).max(1),
            keep_serving_handed_over_shards: section.unsafe_keep_serving,
            ..shardkv::ServerConfig::default()
        })
    }

    /// The KV server's configuration.
    pub fn kv_server_config(&self) -> kv::server::ServerConfig {
        kv::server::ServerConfig {
            read_mode: match self.kv.read_mode {
                ReadModeName::Log => kv::server::ReadMode::Log,
                ReadModeName::ReadIndex => kv::server::ReadMode::ReadIndex,
                ReadModeName::Lease => kv::server::ReadMode::Lease,
            },
            unsafe_stale_reads: self.kv.unsafe_stale_reads,
            max_raft_state_bytes: self.kv.max_raft_state_bytes,
            // A request waits at most ~2 s (in ticks) before it is answered Timeout.
            pending_timeout_ticks: (2000 / self.raft.tick_ms).max(1),
            ..kv::server::ServerConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
id = 1
name = "n1"
listen = "127.0.0.1:7001"
data_dir = "data"
service = "kv"
[tls]
ca = "ca.pem"
cert = "n1.pem"
key = "n1.key"
[[peers]]
id = 2
name = "n2"
addr = "127.0.0.1:7002"
"#;

    #[test]
    fn a_good_config_parses_with_defaults() {
        let config = NodeConfig::parse(GOOD, Path::new("node.toml")).unwrap();
        assert_eq!(config.voters(), vec![1, 2]);
        assert_eq!(config.raft.tick_ms, 10);
        assert!(!config.kv.unsafe_stale_reads);
    }

    fn error_of(text: &str) -> String {
        NodeConfig::parse(text, Path::new("node.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_field() {
        let text = GOOD.replace("id = 2", "id = 1");
        assert!(
            error_of(&text).contains("peers[0].id"),
            "{}",
            error_of(&text)
        );
        let text = GOOD.replace("127.0.0.1:7001", "not an address");
        assert!(error_of(&text).contains("listen"), "{}", error_of(&text));
        let text = format!("{GOOD}\n[raft]\nheartbeat_interval_ticks = 0\n");
        assert!(
            error_of(&text).contains("heartbeat_interval_ticks"),
            "{}",
            error_of(&text)
        );
        let text = GOOD.replace("service = \"kv\"", "service = \"nope\"");
        assert!(error_of(&text).contains("service"), "{}", error_of(&text));
        let text = format!("{GOOD}\nbogus = 3\n");
        assert!(error_of(&text).contains("bogus"), "{}", error_of(&text));
    }

    #[test]
    fn shardkv_needs_its_section_and_only_it_takes_one() {
        let shardkv = GOOD.replace("service = \"kv\"", "service = \"shardkv\"");
        assert!(
            error_of(&shardkv).contains("[shardkv]"),
            "{}",
            error_of(&shardkv)
        );
        let section = "\n[shardkv]\ngid = 7\nunsafe_keep_serving = true\n\
            [[shardkv.controllers]]\nid = 1\nname = \"c1\"\naddr = \"127.0.0.1:7100\"\n";
        let config =
            NodeConfig::parse(&format!("{shardkv}{section}"), Path::new("n.toml")).unwrap();
        let server = config.shardkv_server_config().unwrap();
        assert!(server.keep_serving_handed_over_shards);
        assert_eq!(server.poll_interval_ticks, 10);
        let zero = format!("{shardkv}{}", section.replace("gid = 7", "gid = 0"));
        assert!(
            error_of(&zero).contains("shardkv.gid"),
            "{}",
            error_of(&zero)
        );
        let ctrl = GOOD.replace("service = \"kv\"", "service = \"shardctrler\"");
        let config = NodeConfig::parse(
            &format!("{ctrl}\n[shardctrler]\nshards = 4\n"),
            Path::new("n"),
        )
        .unwrap();
        assert_eq!(config.ctrl_server_config().shards, 4);
        let zero = format!("{ctrl}\n[shardctrler]\nshards = 0\n");
        assert!(
            error_of(&zero).contains("shardctrler.shards"),
            "{}",
            error_of(&zero)
        );
        let kv_with_section = format!("{GOOD}{section}");
        assert!(
            error_of(&kv_with_section).contains("shardkv"),
            "{}",
            error_of(&kv_with_section)
        );
    }
}
