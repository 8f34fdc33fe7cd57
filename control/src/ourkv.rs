//! Our KV service as a database under test: the `node` daemon as a [`ProcessDb`], clients
//! built on `node::client::KvClient`, and the `kv` and `register` workloads.
//!
//! Certificates: a fresh cluster CA per run, node certificates (server + client usage, with
//! the node's IP), one client certificate shared by the control's clients and by the readiness
//! probe on each node. They live in a temporary directory of the control process and are
//! uploaded with each node's config.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv::client::{ClerkConfig, FailReason, Outcome, UnknownReason};
use kv::command::{Op as KvOp, OpResult};
use node::client::{Connection, KvClient};
use node::ClusterFile;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::Value;

use crate::client::{Client, ClientFactory, Completion, Generator, Op, Workload};
use crate::cluster::{Cluster, Node};
use crate::daemon::ProcessState;
use crate::db::{Db, DbError, ProcessDb, ReadyFn};
use crate::ssh::Remote as _;
use crate::workload::KvGenerator;

/// The UDP port every node daemon listens on.
pub const NODE_PORT: u16 = 7000;
/// The name of the control's client certificate.
const CLIENT_NAME: &str = "control";

/// The cluster's certificates, made once per run, when the nodes are known.
#[derive(Debug)]
pub struct Certs {
    dir: tempfile::TempDir,
    made: Mutex<bool>,
}

impl Certs {
    pub fn new() -> Result<Certs, String> {
        let dir = tempfile::Builder::new()
            .prefix("rj-kv-certs-")
            .tempdir()
            .map_err(|e| format!("creating a certificate directory: {e}"))?;
        Ok(Certs {
            dir,
            made: Mutex::new(false),
        })
    }

    /// Makes (once) a CA, a certificate per node (by name, with its IP), and the control's
    /// client certificate.
    pub fn ensure(&self, nodes: &[Node]) -> Result<(), String> {
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
        for node in nodes {
            let ip = std::net::IpAddr::V4(node.ip);
            issued.push(certs::issue_node_cert(&ca, &node.name, &[ip]).map_err(|e| e.to_string())?);
        }
        issued.push(certs::issue_client_cert(&ca, CLIENT_NAME).map_err(|e| e.to_string())?);
        certs::write_pem_files(self.dir.path(), &ca, &issued).map_err(|e| e.to_string())?;
        *made = true;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn read(&self, name: &str) -> Vec<u8> {
        std::fs::read(self.dir.path().join(name)).unwrap_or_default()
    }
}

/// Node ids are positions in the cluster's node list, from 1.
fn node_id(node: &Node, nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .position(|n| n.name == node.name)
        .map_or(0, |i| i as u64 + 1)
}

/// The cluster file the control's clients use (certificates in the local cert dir).
pub fn cluster_file(certs_dir: &Path, nodes: &[Node]) -> ClusterFile {
    ClusterFile::new(
        certs_dir,
        CLIENT_NAME,
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    i as u64 + 1,
                    n.name.clone(),
                    SocketAddr::from((n.ip, NODE_PORT)),
                )
            })
            .collect(),
    )
}

fn node_config(node: &Node, nodes: &[Node], max_raft_state_bytes: usize) -> String {
    let mut text = format!(
        "id = {id}\nname = \"{name}\"\nlisten = \"{ip}:{NODE_PORT}\"\ndata_dir = \"data\"\n\
         service = \"kv\"\n\n[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{name}.pem\"\n\
         key = \"certs/{name}.key\"\n\n[kv]\nmax_raft_state_bytes = {max_raft_state_bytes}\n",
        id = node_id(node, nodes),
        name = node.name,
        ip = node.ip,
    );
    for peer in nodes.iter().filter(|p| p.name != node.name) {
        text.push_str(&format!(
            "\n[[peers]]\nid = {}\nname = \"{}\"\naddr = \"{}:{NODE_PORT}\"\n",
            node_id(peer, nodes),
            peer.name,
            peer.ip
        ));
    }
    text
}

/// The cluster file a node uses to probe itself (readiness), with paths on the node.
fn self_cluster_file(node: &Node, nodes: &[Node]) -> String {
    format!(
        "[tls]\nca = \"certs/ca.pem\"\ncert = \"certs/{CLIENT_NAME}.pem\"\nkey = \"certs/{CLIENT_NAME}.key\"\n\n\
         [[nodes]]\nid = {}\nname = \"{}\"\naddr = \"{}:{NODE_PORT}\"\n",
        node_id(node, nodes),
        node.name,
        node.ip
    )
}

/// Settings of the KV database under test.
#[derive(Debug, Clone)]
pub struct KvDbOptions {
    /// The `node` binary to upload.
    pub node_binary: PathBuf,
    /// Start every node with `--unsafe-stale-reads` (the stale-reads mutation).
    pub unsafe_stale_reads: bool,
    /// The nodes' snapshot threshold (maxraftstate).
    pub max_raft_state_bytes: usize,
}

/// Our KV service's Db: the `node` daemon on every node, plus a leader query.
#[derive(Debug)]
pub struct KvDb {
    pub process: ProcessDb,
    pub certs: Arc<Certs>,
}

impl KvDb {
    pub fn new(options: &KvDbOptions, certs: Arc<Certs>) -> KvDb {
        KvDb {
            process: process_db(options, certs.clone()),
            certs,
        }
    }
}

impl Db for KvDb {
    fn name(&self) -> &str {
        self.process.name()
    }
    fn setup(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.certs
            .ensure(cluster.nodes())
            .map_err(|message| DbError::NotReady {
                node: node.name.clone(),
                message,
            })?;
        self.process.setup(cluster, node)
    }
    fn start(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.process.start(cluster, node)
    }
    fn stop(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.process.stop(cluster, node)
    }
    fn kill(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.process.kill(cluster, node)
    }
    fn pause(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.process.pause(cluster, node)
    }
    fn resume(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.process.resume(cluster, node)
    }
    fn state(&self, cluster: &dyn Cluster, node: &Node) -> Result<ProcessState, DbError> {
        self.process.state(cluster, node)
    }
    fn teardown(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), DbError> {
        self.process.teardown(cluster, node)
    }
    fn log_dir(&self, cluster: &dyn Cluster, node: &Node) -> String {
        self.process.log_dir(cluster, node)
    }
    fn leader(&self, cluster: &dyn Cluster) -> Option<String> {
        leader(cluster, self.certs.path())
    }
}

/// The `node` daemon as a [`ProcessDb`], with the cluster's certificates uploaded.
fn process_db(options: &KvDbOptions, certs: Arc<Certs>) -> ProcessDb {
    let unsafe_stale_reads = options.unsafe_stale_reads;
    let max_raft_state_bytes = options.max_raft_state_bytes;
    let files_certs = certs.clone();
    ProcessDb {
        name: "node".into(),
        local_binary: options.node_binary.clone(),
        args: Arc::new(move |_node: &Node, _nodes: &[Node]| {
            let mut args = vec!["run".to_string(), "--config".into(), "node.toml".into()];
            if unsafe_stale_reads {
                args.push("--unsafe-stale-reads".into());
            }
            args
        }),
        files: Arc::new(move |node: &Node, nodes: &[Node]| {
            let certs = &files_certs;
            if let Err(e) = certs.ensure(nodes) {
                tracing::error!("making certificates: {e}");
            }
            vec![
                (
                    "node.toml".to_string(),
                    node_config(node, nodes, max_raft_state_bytes).into_bytes(),
                ),
                (
                    "self.toml".to_string(),
                    self_cluster_file(node, nodes).into_bytes(),
                ),
                ("certs/ca.pem".to_string(), certs.read("ca.pem")),
                (
                    format!("certs/{}.pem", node.name),
                    certs.read(&format!("{}.pem", node.name)),
                ),
                (
                    format!("certs/{}.key", node.name),
                    certs.read(&format!("{}.key", node.name)),
                ),
                (
                    format!("certs/{CLIENT_NAME}.pem"),
                    certs.read(&format!("{CLIENT_NAME}.pem")),
                ),
                (
                    format!("certs/{CLIENT_NAME}.key"),
                    certs.read(&format!("{CLIENT_NAME}.key")),
                ),
            ]
        }),
        ready: Some(ready_probe()),
        stop_grace_ms: 5_000,
    }
}

/// A node is ready when it answers a status request over its own authenticated transport.
fn ready_probe() -> ReadyFn {
    Arc::new(|cluster: &dyn Cluster, node: &Node| {
        let dir = cluster.node_dir(node);
        let script = format!(
            "cd {dir} && i=0; while [ $i -lt 100 ]; do ./bin/node status --cluster self.toml \
             --timeout-ms 200 >/dev/null 2>&1 && exit 0; i=$((i+1)); sleep 0.1; done; \
             echo 'no status answer within 30 s'; tail -n 20 node.log 2>/dev/null; exit 1"
        );
        cluster
            .ssh()
            .exec(node, &script)
            .map(|_| ())
            .map_err(|e| DbError::NotReady {
                node: node.name.clone(),
                message: e.to_string(),
            })
    })
}

/// Which node leads, asked from the control namespace (for isolate-leader).
pub fn leader(cluster: &dyn Cluster, certs_dir: &Path) -> Option<String> {
    let file = cluster_file(certs_dir, cluster.nodes());
    let netns = cluster.client_netns();
    crate::netns::run_in(netns.as_deref(), move || -> Option<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let connection = Connection::open(file).ok()?;
            let mut best: Option<(u64, String)> = None;
            for node in connection.cluster.nodes.clone() {
                if let Ok(report) = connection.status(node.id, Duration::from_millis(300)).await {
                    if report.role == "leader"
                        && best.as_ref().is_none_or(|(t, _)| report.term > *t)
                    {
                        best = Some((report.term, report.name));
                    }
                }
            }
            best.map(|(_, name)| name)
        })
    })
    .ok()
    .flatten()
}

/// Opens [`KvClient`]s. The first `open` (on a client thread already inside the control
/// namespace) creates the shared transport socket, so every client's traffic stays there.
pub struct KvClients {
    cluster: ClusterFile,
    runtime: tokio::runtime::Runtime,
    connection: Mutex<Option<Connection>>,
    op_timeout: Duration,
}

impl std::fmt::Debug for KvClients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvClients").finish_non_exhaustive()
    }
}

impl KvClients {
    pub fn new(cluster: ClusterFile, op_timeout: Duration) -> Result<KvClients, String> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| format!("starting the client runtime: {e}"))?;
        Ok(KvClients {
            cluster,
            runtime,
            connection: Mutex::new(None),
            op_timeout,
        })
    }

    fn connection(&self) -> Result<Connection, String> {
        let mut guard = self
            .connection
            .lock()
            .map_err(|_| "client lock poisoned".to_string())?;
        if let Some(connection) = guard.as_ref() {
            return Ok(connection.clone());
        }
        let _enter = self.runtime.enter();
        let connection = Connection::open(self.cluster.clone())
            .map_err(|e| format!("opening the client: {e}"))?;
        *guard = Some(connection.clone());
        Ok(connection)
    }
}

impl ClientFactory for KvClients {
    fn open(&self, node: &Node, process: u64) -> Result<Box<dyn Client>, String> {
        let mut connection = self.connection()?;
        // Each process starts at its own node (the runner spreads processes over nodes), and
        // follows leader hints from there.
        if let Some(first) = connection
            .cluster
            .nodes
            .iter()
            .position(|n| n.name == node.name)
        {
            connection.cluster.nodes.rotate_left(first);
        }
        let config = ClerkConfig {
            attempt_timeout: Duration::from_millis(500).min(self.op_timeout),
            op_timeout: Some(self.op_timeout),
            ..ClerkConfig::default()
        };
        // Client ids must never repeat within a cluster: every run provisions a fresh cluster
        // and process ids are unique within a run.
        let client_id = process + 1;
        let home = connection.cluster.nodes.first().map(|n| n.id);
        Ok(Box::new(NodeKvClient {
            client: KvClient::new(connection, client_id, config, process),
            home,
            handle: self.runtime.handle().clone(),
        }))
    }
}

/// One process's client of our KV service.
pub struct NodeKvClient {
    client: KvClient,
    /// The node this process is bound to: reads are asked there first (a follower in a safe
    /// read mode redirects to the leader; a replica that answers on its own is caught).
    home: Option<u64>,
    handle: tokio::runtime::Handle,
}

impl std::fmt::Debug for NodeKvClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKvClient").finish_non_exhaustive()
    }
}

/// A register value as the KV store holds it: the integer's decimal text; "" is nil.
fn register_text(value: &Value) -> Option<String> {
    value.as_i64().map(|v| v.to_string())
}

fn register_value(text: &str) -> Value {
    if text.is_empty() {
        return Value::Null;
    }
    text.parse::<i64>()
        .map_or_else(|_| Value::String(text.to_string()), Value::from)
}

/// How a register or kv operation maps onto the service.
fn to_kv_op(op: &Op) -> Result<KvOp, String> {
    let key = op.key.clone().unwrap_or_default();
    let text = |v: &Value| v.as_str().map(str::to_string).or_else(|| register_text(v));
    match (op.f.as_str(), &op.value) {
        ("get" | "read", _) => Ok(KvOp::Get { key }),
        ("put" | "write", v) => Ok(KvOp::Put {
            key,
            value: text(v).ok_or_else(|| format!("cannot write {v}"))?,
        }),
        ("append", v) => Ok(KvOp::Append {
            key,
            value: text(v).ok_or_else(|| format!("cannot append {v}"))?,
        }),
        ("cas", Value::Array(pair)) if pair.len() == 2 => Ok(KvOp::Cas {
            key,
            expected: register_text(&pair[0]).unwrap_or_default(),
            new: register_text(&pair[1]).ok_or_else(|| format!("cannot cas to {}", pair[1]))?,
        }),
        (f, v) => Err(format!("unsupported operation {f} {v}")),
    }
}

impl Client for NodeKvClient {
    fn invoke(&mut self, op: &Op, timeout: Duration) -> Completion {
        let kv_op = match to_kv_op(op) {
            Ok(kv_op) => kv_op,
            Err(e) => return Completion::Fail(e),
        };
        let register = matches!(op.f.as_str(), "read" | "write" | "cas");
        let first = if matches!(kv_op, KvOp::Get { .. }) {
            self.home
        } else {
            None
        };
        let call = self.client.call_at(kv_op, first);
        // The clerk has its own operation timeout; this outer one is a safety net.
        let outcome = self
            .handle
            .block_on(async { tokio::time::timeout(timeout + Duration::from_secs(1), call).await });
        match outcome {
            Ok(Outcome::Ok(OpResult::Value(text))) if register => {
                Completion::Ok(register_value(&text))
            }
            Ok(Outcome::Ok(OpResult::Value(text))) => Completion::Ok(Value::String(text)),
            Ok(Outcome::Ok(_)) => Completion::Ok(op.value.clone()),
            Ok(Outcome::Fail(FailReason::CasMismatch)) => Completion::Fail("cas mismatch".into()),
            Ok(Outcome::Fail(reason)) => Completion::Fail(format!("{reason:?}")),
            Ok(Outcome::Unknown(UnknownReason::GaveUp)) => Completion::Info("timeout".into()),
            Ok(Outcome::Unknown(reason)) => Completion::Info(format!("{reason:?}")),
            Err(_) => Completion::Info("timeout".into()),
        }
    }
}

/// Read/write/cas on small integers over a few registers at a time (Jepsen's cas-register
/// workload with independent keys). Keys rotate like [`KvGenerator`]'s so each key's history
/// stays small enough to check exhaustively.
#[derive(Debug)]
pub struct RegisterGenerator {
    rng: ChaCha8Rng,
    keys: usize,
    counter: u64,
}

impl RegisterGenerator {
    pub const OPS_PER_KEY_WINDOW: u64 = 100;

    pub fn new(seed: u64, keys: usize) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            keys: keys.max(1),
            counter: 0,
        }
    }
}

impl Generator for RegisterGenerator {
    fn next_op(&mut self, _process: u64) -> Op {
        let window = self.counter / Self::OPS_PER_KEY_WINDOW;
        self.counter += 1;
        let key = format!(
            "r{}",
            window * self.keys as u64 + self.rng.gen_range(0..self.keys as u64)
        );
        match self.rng.gen_range(0..10) {
            0..=3 => Op {
                f: "read".into(),
                key: Some(key),
                value: Value::Null,
            },
            4..=6 => Op {
                f: "write".into(),
                key: Some(key),
                value: Value::from(self.rng.gen_range(0..5)),
            },
            _ => Op {
                f: "cas".into(),
                key: Some(key),
                value: Value::Array(vec![
                    Value::from(self.rng.gen_range(0..5)),
                    Value::from(self.rng.gen_range(0..5)),
                ]),
            },
        }
    }
}

/// The `kv` (get/put/append, unique values) or `register` (cas-register) workload against
/// our KV service.
#[derive(Debug, Clone)]
pub struct KvWorkload {
    pub kind: WorkloadKind,
    pub certs: Arc<Certs>,
    pub op_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkloadKind {
    Kv,
    Register,
}

impl Workload for KvWorkload {
    fn name(&self) -> &str {
        match self.kind {
            WorkloadKind::Kv => "kv",
            WorkloadKind::Register => "register",
        }
    }

    fn model(&self) -> &str {
        match self.kind {
            WorkloadKind::Kv => "kv",
            WorkloadKind::Register => "cas-register",
        }
    }

    fn generator(&self, seed: u64) -> Box<dyn Generator> {
        match self.kind {
            WorkloadKind::Kv => Box::new(KvGenerator::new(seed, 5)),
            WorkloadKind::Register => Box::new(RegisterGenerator::new(seed, 5)),
        }
    }

    fn clients(&self, nodes: &[Node]) -> Arc<dyn ClientFactory> {
        if let Err(e) = self.certs.ensure(nodes) {
            return Arc::new(BrokenClients(e));
        }
        let file = cluster_file(self.certs.path(), nodes);
        match KvClients::new(file, self.op_timeout) {
            Ok(clients) => Arc::new(clients),
            Err(e) => Arc::new(BrokenClients(e)),
        }
    }
}

/// A factory that could not be built: every open reports why.
#[derive(Debug)]
struct BrokenClients(String);

impl ClientFactory for BrokenClients {
    fn open(&self, _node: &Node, _process: u64) -> Result<Box<dyn Client>, String> {
        Err(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_ops_map_onto_the_service() {
        let cas = Op {
            f: "cas".into(),
            key: Some("r1".into()),
            value: serde_json::json!([null, 3]),
        };
        assert_eq!(
            to_kv_op(&cas).unwrap(),
            KvOp::Cas {
                key: "r1".into(),
                expected: String::new(),
                new: "3".into()
            }
        );
        assert_eq!(register_value(""), Value::Null);
        assert_eq!(register_value("4"), Value::from(4));
        let bad = Op {
            f: "frobnicate".into(),
            key: None,
            value: Value::Null,
        };
        assert!(to_kv_op(&bad).is_err());
    }

    #[test]
    fn register_generator_replays_from_its_seed() {
        let mut a = RegisterGenerator::new(9, 3);
        let mut b = RegisterGenerator::new(9, 3);
        for _ in 0..300 {
            assert_eq!(a.next_op(1), b.next_op(1));
        }
    }
}
