//! etcd 3.4 as a database under test: one `etcd` member per node as a [`ProcessDb`], clients
//! built on the `etcd-client` crate, and the `kv` and `register` workloads.
//!
//! Why etcd: it is the yardstick. A run against etcd with the same generators, nemesis and
//! checker shows the harness finds nothing in a correct system, and its serializable
//! (member-local) reads are a known way to read stale data, which the checker must catch.
//!
//! **Clients talk only to their own node.** The runner spreads processes over the nodes; each
//! process's client has one endpoint, its node's client URL. Reads are then served by that
//! member: a linearizable read there waits for the leader (ReadIndex) and times out in a
//! minority, while a serializable read answers from the member's local state — stale in a
//! minority, which is what the serializable-read test must see. Writes from a minority time
//! out (`info`) and the process is replaced; that costs throughput under partitions, and the
//! numbers are not comparable with a client that follows the leader.
//!
//! **Namespaces.** Each client owns a current-thread tokio runtime built in `open`, on the
//! client thread that has already entered the control namespace. tonic's balanced channel
//! spawns its connection tasks on that runtime, and a current-thread runtime polls them only
//! inside `block_on` on that same thread, so every socket is created inside the namespace.
//!
//! **Outcomes.** etcd's client cannot tell "never sent" from "sent, no answer": the balanced
//! channel waits for a ready connection, so a refused connection also ends in the timeout.
//! So every write that errs or times out is `info`; a read that errs or times out is `fail`
//! (a read has no effect, so dropping it from the history loses nothing); a transaction whose
//! compare was false is a definite `fail`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use serde_json::Value;

use crate::client::{Client, ClientFactory, Completion, Generator, Op, Workload};
use crate::cluster::{Cluster, Node};
use crate::db::{ProcessDb, ReadyFn};
use crate::ourkv::RegisterGenerator;
use crate::ssh::Remote as _;
use crate::workload::KvGenerator;

/// etcd's client port.
pub const CLIENT_PORT: u16 = 2379;
/// etcd's peer port.
pub const PEER_PORT: u16 = 2380;
/// Where the Debian package `etcd-server` installs etcd.
pub const DEFAULT_BINARY: &str = "/usr/bin/etcd";
/// Where the Debian package `etcd-client` installs etcdctl (used by the readiness probe).
pub const ETCDCTL: &str = "/usr/bin/etcdctl";

/// How reads are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReadMode {
    /// etcd's default: a read goes through the leader (ReadIndex). Linearizable.
    #[default]
    Linearizable,
    /// Member-local reads (`serializable: true`): may be stale; the checker should catch them.
    Serializable,
}

impl std::str::FromStr for ReadMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "linearizable" | "" => Ok(ReadMode::Linearizable),
            "serializable" => Ok(ReadMode::Serializable),
            other => Err(format!(
                "unknown read mode `{other}` (available: linearizable, serializable)"
            )),
        }
    }
}

fn client_url(node: &Node) -> String {
    format!("http://{}:{CLIENT_PORT}", node.ip)
}

fn peer_url(node: &Node) -> String {
    format!("http://{}:{PEER_PORT}", node.ip)
}

/// The arguments of one member. `--initial-cluster*` are read only when the data directory is
/// empty, so the same arguments restart a killed member with its data.
pub fn member_args(node: &Node, nodes: &[Node], token: &str) -> Vec<String> {
    let initial_cluster = nodes
        .iter()
        .map(|n| format!("{}={}", n.name, peer_url(n)))
        .collect::<Vec<_>>()
        .join(",");
    vec![
        "--name".into(),
        node.name.clone(),
        "--data-dir".into(),
        "etcd-data".into(),
        "--listen-peer-urls".into(),
        peer_url(node),
        "--initial-advertise-peer-urls".into(),
        peer_url(node),
        "--listen-client-urls".into(),
        client_url(node),
        "--advertise-client-urls".into(),
        client_url(node),
        "--initial-cluster".into(),
        initial_cluster,
        "--initial-cluster-state".into(),
        "new".into(),
        "--initial-cluster-token".into(),
        token.to_string(),
        // Faster elections than the 1 s default suit short tests on one machine.
        "--heartbeat-interval".into(),
        "100".into(),
        "--election-timeout".into(),
        "1000".into(),
        "--log-outputs".into(),
        "stderr".into(),
    ]
}

/// Ready when the member answers a status request (served locally, so it answers before the
/// cluster has a quorum; members start in parallel and a health check would wait for all).
fn ready_probe() -> ReadyFn {
    Arc::new(|cluster: &dyn Cluster, node: &Node| {
        let dir = cluster.node_dir(node);
        let script = format!(
            "i=0; while [ $i -lt 150 ]; do ETCDCTL_API=3 {ETCDCTL} --endpoints {url} \
             --dial-timeout 200ms --command-timeout 300ms endpoint status >/dev/null 2>&1 \
             && exit 0; i=$((i+1)); sleep 0.1; done; echo 'no status answer within ~60 s'; \
             tail -n 20 {dir}/*.log 2>/dev/null; exit 1",
            url = client_url(node)
        );
        cluster
            .ssh()
            .exec(node, &script)
            .map(|_| ())
            .map_err(|e| crate::db::DbError::NotReady {
                node: node.name.clone(),
                message: e.to_string(),
            })
    })
}

/// An etcd cluster, one member per node.
#[derive(Debug)]
pub struct EtcdDb {
    pub process: ProcessDb,
}

impl EtcdDb {
    /// `binary` is uploaded to every node; `token` keeps members of other runs out.
    pub fn new(binary: PathBuf, token: &str) -> EtcdDb {
        let token = token.to_string();
        EtcdDb {
            process: ProcessDb {
                name: "etcd".into(),
                local_binary: binary,
                args: Arc::new(move |node: &Node, nodes: &[Node]| member_args(node, nodes, &token)),
                files: Arc::new(|_, _| Vec::new()),
                ready: Some(ready_probe()),
                stop_grace_ms: 5_000,
            },
        }
    }
}

impl crate::db::Db for EtcdDb {
    fn name(&self) -> &str {
        "etcd"
    }
    fn setup(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), crate::db::DbError> {
        self.process.setup(cluster, node)
    }
    fn start(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), crate::db::DbError> {
        self.process.start(cluster, node)
    }
    fn stop(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), crate::db::DbError> {
        self.process.stop(cluster, node)
    }
    fn kill(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), crate::db::DbError> {
        self.process.kill(cluster, node)
    }
    fn pause(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), crate::db::DbError> {
        self.process.pause(cluster, node)
    }
    fn resume(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), crate::db::DbError> {
        self.process.resume(cluster, node)
    }
    fn state(
        &self,
        cluster: &dyn Cluster,
        node: &Node,
    ) -> Result<crate::daemon::ProcessState, crate::db::DbError> {
        self.process.state(cluster, node)
    }
    /// Stops the member and removes its data directory.
    fn teardown(&self, cluster: &dyn Cluster, node: &Node) -> Result<(), crate::db::DbError> {
        self.process.stop(cluster, node)?;
        let dir = cluster.node_dir(node);
        cluster
            .ssh()
            .exec(node, &format!("rm -rf {dir}/etcd-data"))
            .map(|_| ())
            .map_err(|e| crate::db::DbError::NotReady {
                node: node.name.clone(),
                message: format!("removing the data directory: {e}"),
            })
    }
    fn leader(&self, cluster: &dyn Cluster) -> Option<String> {
        leader(cluster)
    }
}

/// Which member leads, asked from the control namespace: every member's status names its own
/// id and the leader's id it knows, with its term; the answer with the highest term wins.
pub fn leader(cluster: &dyn Cluster) -> Option<String> {
    let nodes = cluster.nodes().to_vec();
    let netns = cluster.client_netns();
    crate::netns::run_in(netns.as_deref(), move || -> Option<String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        runtime.block_on(async {
            let mut ids = Vec::new();
            let mut best: Option<(u64, u64)> = None;
            for node in &nodes {
                let Some(status) = status_of(node).await else {
                    continue;
                };
                if let Some(header) = status.header() {
                    ids.push((header.member_id(), node.name.clone()));
                }
                if status.leader() != 0 && best.is_none_or(|(term, _)| status.raft_term() > term) {
                    best = Some((status.raft_term(), status.leader()));
                }
            }
            let (_, leader) = best?;
            ids.into_iter()
                .find(|(id, _)| *id == leader)
                .map(|(_, name)| name)
        })
    })
    .ok()
    .flatten()
}

async fn status_of(node: &Node) -> Option<etcd_client::StatusResponse> {
    let limit = Duration::from_millis(500);
    let options = ConnectOptions::new().with_connect_timeout(limit);
    let mut client = etcd_client::Client::connect([client_url(node)], Some(options))
        .await
        .ok()?;
    tokio::time::timeout(limit, client.status())
        .await
        .ok()?
        .ok()
}

/// The `kv` (get/put/append, unique values) or `register` (cas-register) workload on etcd.
#[derive(Debug, Clone)]
pub struct EtcdWorkload {
    pub kind: crate::ourkv::WorkloadKind,
    pub reads: ReadMode,
    /// Keys in use at a time per generator. Few keys mean many reads of each key, so a stale
    /// read meets a recent write often enough to be caught.
    pub keys: usize,
}

impl Workload for EtcdWorkload {
    fn name(&self) -> &str {
        match self.kind {
            crate::ourkv::WorkloadKind::Kv => "kv",
            crate::ourkv::WorkloadKind::Register => "register",
        }
    }

    fn model(&self) -> &str {
        match self.kind {
            crate::ourkv::WorkloadKind::Kv => "kv",
            crate::ourkv::WorkloadKind::Register => "cas-register",
        }
    }

    fn generator(&self, seed: u64) -> Box<dyn Generator> {
        match self.kind {
            crate::ourkv::WorkloadKind::Kv => Box::new(KvGenerator::new(seed, self.keys)),
            crate::ourkv::WorkloadKind::Register => {
                Box::new(RegisterGenerator::new(seed, self.keys))
            }
        }
    }

    fn clients(&self, _nodes: &[Node]) -> Arc<dyn ClientFactory> {
        Arc::new(EtcdClients {
            register: self.kind == crate::ourkv::WorkloadKind::Register,
            reads: self.reads,
        })
    }
}

/// Opens one [`EtcdClient`] per process, bound to the process's node.
#[derive(Debug)]
pub struct EtcdClients {
    register: bool,
    reads: ReadMode,
}

impl ClientFactory for EtcdClients {
    fn open(&self, node: &Node, _process: u64) -> Result<Box<dyn Client>, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("starting a client runtime: {e}"))?;
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_millis(500));
        let url = client_url(node);
        // Lazy: no connection is made until the first request, so this does not wait.
        let client = runtime
            .block_on(etcd_client::Client::connect([url.clone()], Some(options)))
            .map_err(|e| format!("connecting to {url}: {e}"))?;
        Ok(Box::new(EtcdClient {
            kv: client.kv_client(),
            runtime,
            register: self.register,
            reads: self.reads,
        }))
    }
}

/// One process's etcd client.
pub struct EtcdClient {
    kv: etcd_client::KvClient,
    runtime: tokio::runtime::Runtime,
    register: bool,
    reads: ReadMode,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("register", &self.register)
            .field("reads", &self.reads)
            .finish_non_exhaustive()
    }
}

/// A register's integer as stored text; anything else as JSON text.
fn register_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Stored text back to a register value: missing is null, integers are integers.
fn register_value(text: Option<&str>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => t
            .parse::<i64>()
            .map_or_else(|_| Value::String(t.to_string()), Value::from),
    }
}

/// How a call that did not answer in time ended.
#[derive(Debug)]
enum CallError {
    TimedOut,
    Etcd(etcd_client::Error),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::TimedOut => write!(f, "timeout"),
            CallError::Etcd(e) => write!(f, "{e}"),
        }
    }
}

impl EtcdClient {
    fn get_options(&self) -> Option<GetOptions> {
        match self.reads {
            ReadMode::Linearizable => None,
            ReadMode::Serializable => Some(GetOptions::new().with_serializable()),
        }
    }

    /// Reads `key`: its value (None when missing) and mod revision (0 when missing).
    fn read(&mut self, key: &str, deadline: Instant) -> Result<(Option<String>, i64), CallError> {
        let options = self.get_options();
        let mut kv = self.kv.clone();
        let key = key.to_string();
        let response = self.call(deadline, async move { kv.get(key, options).await })?;
        Ok(first_value(response.kvs()))
    }

    fn call<T>(
        &self,
        deadline: Instant,
        future: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, CallError> {
        let left = deadline.saturating_duration_since(Instant::now());
        match self
            .runtime
            .block_on(async { tokio::time::timeout(left, future).await })
        {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(CallError::Etcd(e)),
            Err(_) => Err(CallError::TimedOut),
        }
    }

    /// Appends by read-modify-write: a transaction that puts `old + value` only if the key's
    /// mod revision is still the one read, retried (same logical operation) while the compare
    /// fails. A false compare is definite, so giving up after only false compares is `fail`.
    fn append(&mut self, key: &str, value: &str, deadline: Instant) -> Completion {
        let (mut current, mut revision) = match self.read(key, deadline) {
            Ok(read) => read,
            Err(e) => return Completion::Fail(format!("read before append: {e}")),
        };
        loop {
            if Instant::now() >= deadline {
                return Completion::Fail("append: compare kept failing until the timeout".into());
            }
            let new = format!("{}{value}", current.as_deref().unwrap_or(""));
            let txn = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
                .and_then([TxnOp::put(key, new, None)])
                .or_else([TxnOp::get(key, None)]);
            let mut kv = self.kv.clone();
            match self.call(deadline, async move { kv.txn(txn).await }) {
                Ok(response) if response.succeeded() => {
                    return Completion::Ok(Value::String(value.to_string()))
                }
                Ok(response) => {
                    let fresh = response.op_responses().into_iter().find_map(|r| match r {
                        TxnOpResponse::Get(get) => Some(first_value(get.kvs())),
                        _ => None,
                    });
                    match fresh {
                        Some((c, r)) => {
                            current = c;
                            revision = r;
                        }
                        None => return Completion::Fail("append: compare failed".into()),
                    }
                }
                Err(e) => return Completion::Info(format!("append: {e}")),
            }
        }
    }

    /// Compare-and-set: put `new` only if the value is `old` (or the key is missing, for null).
    fn cas(&mut self, key: &str, old: &Value, new: &Value, deadline: Instant) -> Completion {
        let compare = if old.is_null() {
            Compare::version(key, CompareOp::Equal, 0)
        } else {
            Compare::value(key, CompareOp::Equal, register_text(old))
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(key, register_text(new), None)]);
        let mut kv = self.kv.clone();
        match self.call(deadline, async move { kv.txn(txn).await }) {
            Ok(response) if response.succeeded() => {
                Completion::Ok(Value::Array(vec![old.clone(), new.clone()]))
            }
            Ok(_) => Completion::Fail("cas mismatch".into()),
            Err(e) => Completion::Info(format!("cas: {e}")),
        }
    }
}

/// The first key-value's text and mod revision; (None, 0) when the key is missing.
fn first_value(kvs: &[etcd_client::KeyValue]) -> (Option<String>, i64) {
    kvs.first().map_or((None, 0), |kv| {
        (
            Some(String::from_utf8_lossy(kv.value()).into_owned()),
            kv.mod_revision(),
        )
    })
}

impl Client for EtcdClient {
    fn invoke(&mut self, op: &Op, timeout: Duration) -> Completion {
        let deadline = Instant::now() + timeout;
        let Some(key) = op.key.clone() else {
            return Completion::Fail(format!("{} without a key", op.f));
        };
        match (op.f.as_str(), &op.value) {
            ("get" | "read", _) => match self.read(&key, deadline) {
                Ok((text, _)) if self.register => Completion::Ok(register_value(text.as_deref())),
                Ok((text, _)) => Completion::Ok(Value::String(text.unwrap_or_default())),
                // A read has no effect: one that did not answer can be dropped.
                Err(e) => Completion::Fail(format!("read: {e}")),
            },
            ("put" | "write", value) => {
                let text = register_text(value);
                let mut kv = self.kv.clone();
                match self.call(deadline, async move { kv.put(key, text, None).await }) {
                    Ok(_) => Completion::Ok(value.clone()),
                    Err(e) => Completion::Info(format!("put: {e}")),
                }
            }
            ("append", Value::String(value)) => {
                let value = value.clone();
                self.append(&key, &value, deadline)
            }
            ("cas", Value::Array(pair)) if pair.len() == 2 => {
                let (old, new) = (pair[0].clone(), pair[1].clone());
                self.cas(&key, &old, &new, deadline)
            }
            (f, v) => Completion::Fail(format!("unsupported operation {f} {v}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn node(name: &str, last: u8) -> Node {
        Node {
            name: name.into(),
            host: format!("10.0.0.{last}"),
            ip: Ipv4Addr::new(10, 0, 0, last),
        }
    }

    #[test]
    fn member_args_name_every_peer_and_listen_on_the_node() {
        let nodes = vec![node("n1", 11), node("n2", 12), node("n3", 13)];
        let args = member_args(&nodes[1], &nodes, "rj-abc");
        let at = |flag: &str| {
            let i = args.iter().position(|a| a == flag).unwrap();
            args[i + 1].clone()
        };
        assert_eq!(at("--name"), "n2");
        assert_eq!(at("--listen-client-urls"), "http://10.0.0.12:2379");
        assert_eq!(at("--listen-peer-urls"), "http://10.0.0.12:2380");
        assert_eq!(
            at("--initial-cluster"),
            "n1=http://10.0.0.11:2380,n2=http://10.0.0.12:2380,n3=http://10.0.0.13:2380"
        );
        assert_eq!(at("--initial-cluster-token"), "rj-abc");
    }

    #[test]
    fn read_modes_parse() {
        assert_eq!(
            "serializable".parse::<ReadMode>(),
            Ok(ReadMode::Serializable)
        );
        assert_eq!(
            "linearizable".parse::<ReadMode>(),
            Ok(ReadMode::Linearizable)
        );
        assert!("stale".parse::<ReadMode>().is_err());
    }

    #[test]
    fn register_values_round_trip_through_text() {
        assert_eq!(register_value(None), Value::Null);
        assert_eq!(
            register_value(Some(&register_text(&Value::from(3)))),
            Value::from(3)
        );
    }
}
