//! Clients of the sharded store from the control process: the kv clients the workload uses
//! and the controller client the reconfiguration nemesis uses, over the node transport
//! (QUIC, mutual TLS with the run's CA).
//!
//! The kv client drives the sans-I/O [`shardkv::ShardClerk`] (which group owns the key, when
//! to refresh the configuration) and carries its actions out; the controller client finds the
//! controller's leader by hint and retries with the same sequence number, which the controller
//! deduplicates. Server names resolve to addresses through the run's [`Layout`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kv::command::{Op as KvOp, OpResult};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shardctrler::{CtrlOp, CtrlResult};
use shardkv::{ClerkAction, ShardClerk, ShardKvRequest, ShardKvResponse};

use crate::client::{Client, ClientFactory, Completion, Op};
use crate::cluster::Node;

use super::db::ShardCerts;
use super::layout::{Gid, Layout, Role, CLIENT_NAME};
use super::reconfig::{ConfigView, Controller, CtrlOutcome};
use super::run::ShardBackend;

/// A controller request as the node daemon reads it (`node::wire::NodeRequest::Ctrl`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtrlRequest {
    pub client_id: u64,
    pub seq: u64,
    pub op: CtrlOp,
}

/// A controller replica's answer (`node::wire::NodeResponse::Ctrl`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtrlResponse {
    Ok(CtrlResult),
    /// Not the leader; not proposed. Definite.
    WrongLeader {
        leader_hint: Option<u64>,
    },
    /// Proposed, then leadership was lost: may still commit. Indefinite.
    LeadershipLost,
    /// Gave up waiting for the commit. Indefinite.
    Timeout,
    /// Not proposed. Definite.
    Busy,
    /// Older than the client's latest answered request; nothing applied.
    Stale,
}

/// The node daemon's request frame, restricted to the variants this client sends. Serde
/// names the variant in the frame, so these encode exactly as the daemon's own
/// `NodeRequest::{Ctrl, ShardKv}` do; the control depends on the daemon's wire format, not on
/// its crate's internals.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum NodeRequest {
    Ctrl(CtrlRequest),
    ShardKv(ShardKvRequest),
}

/// The daemon's answers this client understands; anything else fails to decode and counts
/// as no answer.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub enum NodeResponse {
    Ctrl(CtrlResponse),
    ShardKv(ShardKvResponse),
    /// The daemon does not serve this kind of request (definite).
    Unsupported(String),
}

/// How long one request to one server may take before the next is tried.
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);
/// Pause after a refusal (busy, not the leader) before retrying.
const BACKOFF: Duration = Duration::from_millis(50);
/// How long a controller request keeps trying.
const CTRL_TIMEOUT: Duration = Duration::from_secs(5);

/// Server name -> address, for every daemon of the layout.
type Directory = BTreeMap<String, SocketAddr>;

fn directory(layout: &Layout) -> Directory {
    layout
        .daemons
        .iter()
        .map(|d| (d.name.clone(), d.addr()))
        .collect()
}

/// The transport, created lazily on a thread inside the client namespace.
struct Shared {
    runtime: tokio::runtime::Runtime,
    transport: Mutex<Option<transport::Client>>,
    certs: std::path::PathBuf,
    directory: Directory,
    controllers: Vec<(u64, String)>,
}

impl Shared {
    fn transport(&self) -> Result<transport::Client, String> {
        let mut guard = self
            .transport
            .lock()
            .map_err(|_| "client lock poisoned".to_string())?;
        if let Some(t) = guard.as_ref() {
            return Ok(t.clone());
        }
        let _enter = self.runtime.enter();
        let t = transport::Client::from_files(
            &self.certs.join(format!("{CLIENT_NAME}.pem")),
            &self.certs.join(format!("{CLIENT_NAME}.key")),
            &self.certs.join("ca.pem"),
            transport::ClientOptions::default(),
        )
        .map_err(|e| format!("opening the client transport: {e}"))?;
        *guard = Some(t.clone());
        Ok(t)
    }
}

/// The backend over the real daemons.
pub struct NodeBackend {
    shared: std::sync::Arc<Shared>,
}

/// Makes the real backend (the [`super::run::BackendFn`] the CLI passes).
pub fn node_backend(
    layout: &Layout,
    certs: &ShardCerts,
    // Each operation carries its own timeout (`Client::invoke`).
    _op_timeout: Duration,
) -> Result<Box<dyn ShardBackend>, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the client runtime: {e}"))?;
    let controllers = layout
        .members(Role::Controller)
        .iter()
        .map(|d| (d.raft_id, d.name.clone()))
        .collect();
    Ok(Box::new(NodeBackend {
        shared: std::sync::Arc::new(Shared {
            runtime,
            transport: Mutex::new(None),
            certs: certs.path().to_path_buf(),
            directory: directory(layout),
            controllers,
        }),
    }))
}

impl ShardBackend for NodeBackend {
    fn clients(&self) -> std::sync::Arc<dyn ClientFactory> {
        std::sync::Arc::new(KvClients {
            shared: self.shared.clone(),
        })
    }

    fn controller(&self, client_id: u64) -> Result<Box<dyn Controller>, String> {
        let transport = self.shared.transport()?;
        Ok(Box::new(CtrlClient {
            shared: self.shared.clone(),
            transport,
            client_id,
            seq: 0,
            leader: 0,
        }))
    }
}

struct KvClients {
    shared: std::sync::Arc<Shared>,
}

impl ClientFactory for KvClients {
    fn open(&self, _node: &Node, process: u64) -> Result<Box<dyn Client>, String> {
        let transport = self.shared.transport()?;
        let ctrl = CtrlClient {
            shared: self.shared.clone(),
            transport: transport.clone(),
            // Controller queries need no deduplication, but ids stay unique anyway.
            client_id: 3_000_000_000 + process,
            seq: 0,
            leader: 0,
        };
        Ok(Box::new(ShardKvClient {
            clerk: ShardClerk::new(process + 1),
            transport,
            ctrl,
        }))
    }
}

/// One process's client of the sharded store.
struct ShardKvClient {
    clerk: ShardClerk,
    transport: transport::Client,
    ctrl: CtrlClient,
}

fn to_kv_op(op: &Op) -> Result<KvOp, String> {
    let key = op.key.clone().unwrap_or_default();
    let text = || {
        op.value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("cannot write {}", op.value))
    };
    match op.f.as_str() {
        "get" => Ok(KvOp::Get { key }),
        "put" => Ok(KvOp::Put {
            key,
            value: text()?,
        }),
        "append" => Ok(KvOp::Append {
            key,
            value: text()?,
        }),
        f => Err(format!("the shardkv workload has no operation {f}")),
    }
}

impl Client for ShardKvClient {
    fn invoke(&mut self, op: &Op, timeout: Duration) -> Completion {
        let kv_op = match to_kv_op(op) {
            Ok(o) => o,
            Err(e) => return Completion::Fail(e),
        };
        let mut action = match self.clerk.begin(kv_op) {
            Ok(a) => a,
            Err(e) => return Completion::Info(e.to_string()),
        };
        let deadline = Instant::now() + timeout;
        let handle = self.ctrl.shared.runtime.handle().clone();
        loop {
            if Instant::now() >= deadline {
                // The clerk keeps its operation in flight; this process is retired after
                // `info`, and its clerk with it.
                return Completion::Info("timeout".into());
            }
            let remaining = deadline - Instant::now();
            action = match action {
                ClerkAction::Done(Ok(OpResult::Value(v))) => {
                    return Completion::Ok(Value::String(v))
                }
                ClerkAction::Done(Ok(_)) => return Completion::Ok(op.value.clone()),
                ClerkAction::Done(Err(reason)) => return Completion::Fail(reason),
                ClerkAction::Ignored => {
                    return Completion::Info("clerk ignored its own answer".into())
                }
                ClerkAction::Backoff { attempt } => {
                    std::thread::sleep(BACKOFF.min(remaining));
                    self.clerk.resend(attempt)
                }
                ClerkAction::QueryConfig { attempt } => match self.ctrl.query_config(remaining) {
                    Ok(config) => self.clerk.on_config(config),
                    Err(_) => {
                        std::thread::sleep(BACKOFF.min(remaining));
                        self.clerk.on_timeout(attempt)
                    }
                },
                ClerkAction::Send {
                    attempt,
                    server,
                    request,
                } => {
                    // Configurations name servers `name@ip:port`; bare names resolve through
                    // the layout.
                    let (server, addr) = match server.split_once('@') {
                        Some((name, addr)) => (name.to_string(), addr.parse().ok()),
                        None => {
                            let addr = self.ctrl.shared.directory.get(&server).copied();
                            (server, addr)
                        }
                    };
                    let Some(addr) = addr else {
                        return Completion::Fail(format!("unknown server {server}"));
                    };
                    let frame = NodeRequest::ShardKv(request);
                    let call = self.transport.request::<NodeRequest, NodeResponse>(
                        addr,
                        &server,
                        &frame,
                        ATTEMPT_TIMEOUT.min(remaining),
                    );
                    match handle.block_on(call) {
                        Ok(NodeResponse::ShardKv(response)) => {
                            self.clerk.on_response(attempt, response)
                        }
                        Ok(_) => self.clerk.on_response(attempt, ShardKvResponse::WrongGroup),
                        Err(_) => self.clerk.on_timeout(attempt),
                    }
                }
            };
        }
    }
}

/// The controller client: one request at a time, leader by hint, same seq on retry.
struct CtrlClient {
    shared: std::sync::Arc<Shared>,
    transport: transport::Client,
    client_id: u64,
    seq: u64,
    /// Index into `shared.controllers` of the presumed leader.
    leader: usize,
}

enum CtrlError {
    /// Certainly not applied.
    Definite(String),
    /// May have been applied.
    Indefinite(String),
}

impl CtrlClient {
    fn call(&mut self, op: CtrlOp, timeout: Duration) -> Result<CtrlResult, CtrlError> {
        self.seq += 1;
        let request = CtrlRequest {
            client_id: self.client_id,
            seq: self.seq,
            op,
        };
        let deadline = Instant::now() + timeout;
        let members = self.shared.controllers.clone();
        let handle = self.shared.runtime.handle().clone();
        let mut maybe_applied = false;
        let mut last = String::from("no controller answered");
        while Instant::now() < deadline && !members.is_empty() {
            let (_, name) = &members[self.leader % members.len()];
            let Some(addr) = self.shared.directory.get(name).copied() else {
                return Err(CtrlError::Definite(format!("unknown controller {name}")));
            };
            let remaining = deadline - Instant::now();
            let frame = NodeRequest::Ctrl(request.clone());
            let call = self.transport.request::<NodeRequest, NodeResponse>(
                addr,
                name,
                &frame,
                ATTEMPT_TIMEOUT.min(remaining),
            );
            let next = match handle.block_on(call) {
                Ok(NodeResponse::Ctrl(CtrlResponse::Ok(result))) => return Ok(result),
                Ok(NodeResponse::Ctrl(CtrlResponse::WrongLeader { leader_hint })) => {
                    last = format!("{name}: not the leader");
                    leader_hint.and_then(|id| members.iter().position(|(i, _)| *i == id))
                }
                Ok(NodeResponse::Ctrl(CtrlResponse::Stale)) => {
                    return Err(CtrlError::Definite("stale request".into()))
                }
                Ok(NodeResponse::Ctrl(other)) => {
                    if matches!(other, CtrlResponse::LeadershipLost | CtrlResponse::Timeout) {
                        maybe_applied = true;
                    }
                    last = format!("{name}: {other:?}");
                    None
                }
                Ok(other) => {
                    last = format!("{name}: unexpected answer {other:?}");
                    None
                }
                Err(e) => {
                    maybe_applied |= !e.is_definite();
                    last = format!("{name}: {e}");
                    None
                }
            };
            match next {
                Some(i) if i != self.leader % members.len() => self.leader = i,
                _ => {
                    self.leader += 1;
                    std::thread::sleep(
                        BACKOFF.min(deadline.saturating_duration_since(Instant::now())),
                    );
                }
            }
        }
        if maybe_applied {
            Err(CtrlError::Indefinite(last))
        } else {
            Err(CtrlError::Definite(last))
        }
    }

    fn query_config(&mut self, timeout: Duration) -> Result<shardctrler::Config, String> {
        match self.call(CtrlOp::Query { num: None }, timeout.min(CTRL_TIMEOUT)) {
            Ok(CtrlResult::Config(config)) => Ok(config),
            Ok(other) => Err(format!("query answered {other:?}")),
            Err(CtrlError::Definite(e) | CtrlError::Indefinite(e)) => Err(e),
        }
    }

    fn change(&mut self, op: CtrlOp) -> CtrlOutcome {
        match self.call(op, CTRL_TIMEOUT) {
            Ok(CtrlResult::Done) => CtrlOutcome::Ok,
            Ok(CtrlResult::Invalid(reason)) => CtrlOutcome::Fail(reason),
            Ok(other) => CtrlOutcome::Fail(format!("unexpected result {other:?}")),
            Err(CtrlError::Definite(e)) => CtrlOutcome::Fail(e),
            Err(CtrlError::Indefinite(e)) => CtrlOutcome::Unknown(e),
        }
    }
}

impl Controller for CtrlClient {
    fn join(&mut self, groups: &BTreeMap<Gid, Vec<String>>) -> CtrlOutcome {
        self.change(CtrlOp::Join {
            groups: groups.clone(),
        })
    }
    fn leave(&mut self, gids: &[Gid]) -> CtrlOutcome {
        self.change(CtrlOp::Leave {
            gids: gids.to_vec(),
        })
    }
    fn move_shard(&mut self, shard: usize, gid: Gid) -> CtrlOutcome {
        self.change(CtrlOp::Move { shard, gid })
    }
    fn query(&mut self) -> Result<ConfigView, String> {
        let config = self.query_config(CTRL_TIMEOUT)?;
        Ok(ConfigView {
            num: config.num,
            shards: config.shards.clone(),
            groups: config.groups.keys().copied().collect(),
        })
    }
}
