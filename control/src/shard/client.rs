//! The control's side of the sharded store's clients: [`node::shard_client`]'s
//! [`ShardKvClient`] and [`CtrlClient`] (the daemon's own clients, which own the wire format,
//! leader finding and the definite / indefinite classification) behind the harness's
//! synchronous [`Client`] and [`Controller`] seams.
//!
//! The transport is created lazily on the first client thread, which is already inside the
//! cluster's client namespace, so every socket lives there; one multi-threaded runtime drives
//! all calls.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kv::client::{FailReason, Outcome, UnknownReason};
use kv::command::{Op as KvOp, OpResult};
use node::config::PeerConfig;
use node::shard_client::{CtrlClient, CtrlError, ShardClientConfig, ShardKvClient};
use serde_json::Value;
use shardctrler::{CtrlOp, CtrlResult};

use crate::client::{Client, ClientFactory, Completion, Op};
use crate::cluster::Node;

use super::db::ShardCerts;
use super::layout::{Gid, Layout, Role, CLIENT_NAME};
use super::reconfig::{ConfigView, Controller, CtrlOutcome};
use super::run::ShardBackend;

/// How long a controller request (Join / Leave / Move / Query) keeps trying.
const CTRL_TIMEOUT: Duration = Duration::from_secs(5);
/// Beyond the client's own operation timeout, before a call is abandoned as unknown.
const SAFETY_MARGIN: Duration = Duration::from_secs(1);

/// What every client of a run shares: the runtime, the transport, the controllers.
struct Shared {
    runtime: tokio::runtime::Runtime,
    transport: Mutex<Option<transport::Client>>,
    certs: std::path::PathBuf,
    controllers: Vec<PeerConfig>,
    op_timeout: Duration,
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

    fn config(&self, op_timeout: Duration) -> ShardClientConfig {
        ShardClientConfig {
            attempt_timeout: ShardClientConfig::default().attempt_timeout.min(op_timeout),
            op_timeout,
            ..ShardClientConfig::default()
        }
    }
}

/// The backend over the real daemons.
pub struct NodeBackend {
    shared: Arc<Shared>,
}

/// Makes the real backend (the [`super::run::BackendFn`] the CLI passes); kv operations give
/// up after `op_timeout`.
pub fn node_backend(
    layout: &Layout,
    certs: &ShardCerts,
    op_timeout: Duration,
) -> Result<Box<dyn ShardBackend>, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| format!("starting the client runtime: {e}"))?;
    let controllers = layout
        .members(Role::Controller)
        .iter()
        .map(|d| PeerConfig {
            id: d.raft_id,
            name: d.name.clone(),
            addr: d.addr(),
        })
        .collect();
    Ok(Box::new(NodeBackend {
        shared: Arc::new(Shared {
            runtime,
            transport: Mutex::new(None),
            certs: certs.path().to_path_buf(),
            controllers,
            op_timeout,
        }),
    }))
}

impl ShardBackend for NodeBackend {
    fn clients(&self) -> Arc<dyn ClientFactory> {
        Arc::new(KvClients {
            shared: self.shared.clone(),
        })
    }

    fn controller(&self, client_id: u64) -> Result<Box<dyn Controller>, String> {
        let client = CtrlClient::new(
            self.shared.transport()?,
            self.shared.controllers.clone(),
            client_id,
            self.shared.config(CTRL_TIMEOUT),
        );
        Ok(Box::new(NodeController {
            client,
            handle: self.shared.runtime.handle().clone(),
        }))
    }
}

struct KvClients {
    shared: Arc<Shared>,
}

impl ClientFactory for KvClients {
    fn open(&self, _node: &Node, process: u64) -> Result<Box<dyn Client>, String> {
        // Process ids are unique within a run and every run has a fresh cluster, so client
        // ids never repeat; they stay below the controller clients' (1e9 and up).
        let client = ShardKvClient::new(
            self.shared.transport()?,
            self.shared.controllers.clone(),
            process + 1,
            self.shared.config(self.shared.op_timeout),
        );
        Ok(Box::new(NodeShardKvClient {
            client,
            handle: self.shared.runtime.handle().clone(),
        }))
    }
}

/// One process's client of the sharded store.
struct NodeShardKvClient {
    client: ShardKvClient,
    handle: tokio::runtime::Handle,
}

/// The workload's operation as a kv operation (shardkv offers get, put and append).
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

/// A client outcome as the history records it; `None` (the call was abandoned) is unknown.
fn completion(op: &Op, outcome: Option<Outcome>) -> Completion {
    match outcome {
        Some(Outcome::Ok(OpResult::Value(text))) => Completion::Ok(Value::String(text)),
        Some(Outcome::Ok(_)) => Completion::Ok(op.value.clone()),
        Some(Outcome::Fail(FailReason::GaveUp)) => Completion::Fail("gave up; not applied".into()),
        Some(Outcome::Fail(reason)) => Completion::Fail(format!("{reason:?}")),
        Some(Outcome::Unknown(UnknownReason::GaveUp)) | None => Completion::Info("timeout".into()),
        Some(Outcome::Unknown(reason)) => Completion::Info(format!("{reason:?}")),
    }
}

impl Client for NodeShardKvClient {
    fn invoke(&mut self, op: &Op, timeout: Duration) -> Completion {
        let kv_op = match to_kv_op(op) {
            Ok(o) => o,
            Err(e) => return Completion::Fail(e),
        };
        // The client gives up on its own after its operation timeout (and says whether the
        // operation may have been applied); this outer bound is a safety net, after which the
        // process is retired (Jepsen's rule for `info`) together with this client.
        let call = self.client.call(kv_op);
        let outcome = self
            .handle
            .block_on(async { tokio::time::timeout(timeout + SAFETY_MARGIN, call).await });
        completion(op, outcome.ok())
    }
}

/// The controller client of the reconfiguration nemesis and the benchmark.
struct NodeController {
    client: CtrlClient,
    handle: tokio::runtime::Handle,
}

impl NodeController {
    fn change(&mut self, op: CtrlOp) -> CtrlOutcome {
        let client = &mut self.client;
        match self.handle.block_on(client.call(op)) {
            Ok(CtrlResult::Done) => CtrlOutcome::Ok,
            Ok(other) => CtrlOutcome::Fail(format!("unexpected result {other:?}")),
            Err(e @ CtrlError::Unknown) => CtrlOutcome::Unknown(e.to_string()),
            Err(e) => CtrlOutcome::Fail(e.to_string()),
        }
    }
}

impl Controller for NodeController {
    /// `groups` name servers as the daemon expects them (`name@ip:port`, [`Layout::servers`]).
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
        let client = &mut self.client;
        let config = self
            .handle
            .block_on(client.query(None))
            .map_err(|e| e.to_string())?;
        Ok(ConfigView {
            num: config.num,
            shards: config.shards.clone(),
            groups: config.groups.keys().copied().collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(f: &str, value: Value) -> Op {
        Op {
            f: f.into(),
            key: Some("k".into()),
            value,
        }
    }

    #[test]
    fn workload_operations_map_onto_kv_operations() {
        assert_eq!(
            to_kv_op(&op("append", Value::from("x"))),
            Ok(KvOp::Append {
                key: "k".into(),
                value: "x".into()
            })
        );
        assert_eq!(
            to_kv_op(&op("get", Value::Null)),
            Ok(KvOp::Get { key: "k".into() })
        );
        assert!(to_kv_op(&op("cas", Value::Null)).is_err());
        assert!(to_kv_op(&op("put", Value::from(3))).is_err());
    }

    #[test]
    fn only_gave_up_before_any_proposal_is_a_failure() {
        let append = op("append", Value::from("x"));
        assert!(matches!(
            completion(&append, Some(Outcome::Fail(FailReason::GaveUp))),
            Completion::Fail(_)
        ));
        assert!(matches!(
            completion(&append, Some(Outcome::Unknown(UnknownReason::GaveUp))),
            Completion::Info(_)
        ));
        assert!(matches!(completion(&append, None), Completion::Info(_)));
        assert_eq!(
            completion(&append, Some(Outcome::Ok(OpResult::Done))),
            Completion::Ok(Value::from("x"))
        );
        assert_eq!(
            completion(
                &op("get", Value::Null),
                Some(Outcome::Ok(OpResult::Value("ab".into())))
            ),
            Completion::Ok(Value::from("ab"))
        );
    }
}
