//! The replicated service a node hosts on its Raft group, seen from the
//! runtime's loop.
//!
//! The runtime owns the Raft node, storage, transport and clock; a
//! [`Service`] owns the state machine and the bookkeeping of client
//! requests (all sans-I/O). The runtime calls, in the order of
//! `raft::Ready`'s contract:
//!
//! * [`Service::handle_request`] per client request (answers come back
//!   later through [`Service::take_replies`]);
//! * [`Service::tick`] after each Raft tick;
//! * [`Service::on_ready`] with each Ready (after persisting it and sending
//!   its messages, before `advance()`);
//! * [`Service::maybe_snapshot`] after `advance()`;
//! * [`Service::on_outbound_result`] with the answer to a request the service
//!   asked the runtime to send to another node ([`Service::take_outbound`]).
//!
//! One trait object per node keeps the loop itself service-agnostic: the KV
//! store, the shard controller and a shardkv replica group only differ here.

use std::net::SocketAddr;
use std::time::Duration;

use raft::{Index, RawNode, Ready};

use crate::config::{NodeConfig, Service as ServiceKind};
use crate::wire::{NodeRequest, NodeResponse};

/// The runtime's handle for one client request.
pub type RequestId = u64;

/// A snapshot the service took; the runtime makes it durable. Every service's
/// server already returns the KV server's type, so the runtime uses it as is.
pub use kv::server::TakenSnapshot;

/// A request the service wants sent to another node (a different Raft
/// group, e.g. the shard controller or another replica group). The runtime
/// sends it on its own client connection and hands the outcome back to
/// [`Service::on_outbound_result`] with the same `tag`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboundCall {
    pub tag: u64,
    /// Certificate (TLS server) name of the node.
    pub name: String,
    pub addr: SocketAddr,
    pub request: NodeRequest,
    pub timeout: Duration,
}

/// Errors that stop the node: the runtime broke the calling contract, or a
/// snapshot or log entry is corrupt.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("kv: {0}")]
    Kv(#[from] kv::server::ServerError),
    #[error("shard controller: {0}")]
    Ctrl(#[from] shardctrler::server::ServerError),
    #[error("shardkv: {0}")]
    ShardKv(#[from] shardkv::ServerError),
    #[error("configuration: {0}")]
    Config(String),
}

/// A replicated service hosted on the node's Raft group.
pub trait Service {
    /// The service's name as `node status` reports it.
    fn name(&self) -> &'static str;

    /// On start, before the first Ready: the snapshot recovered from disk.
    fn restore_snapshot(&mut self, index: Index, data: &[u8]) -> Result<(), ServiceError>;

    /// One client request; the answer is queued for [`Service::take_replies`]
    /// (at once for a request refused up front).
    fn handle_request(&mut self, raw: &mut RawNode, request_id: RequestId, request: NodeRequest);

    /// After each Raft tick.
    fn tick(&mut self, raw: &mut RawNode);

    /// Steps 3 and 4 of a Ready: restore its snapshot, apply its committed
    /// entries, serve its read states.
    fn on_ready(&mut self, raw: &mut RawNode, ready: &Ready) -> Result<(), ServiceError>;

    /// After `advance()`: snapshot and compact Raft's log when the log on
    /// disk (`log_bytes`) has grown past the service's limit.
    fn maybe_snapshot(
        &mut self,
        raw: &mut RawNode,
        log_bytes: usize,
    ) -> Result<Option<TakenSnapshot>, ServiceError>;

    /// Answers ready to go back to clients.
    fn take_replies(&mut self) -> Vec<(RequestId, NodeResponse)>;

    /// Requests to send to other nodes. Most services send none.
    fn take_outbound(&mut self) -> Vec<OutboundCall> {
        Vec::new()
    }

    /// The outcome of an [`OutboundCall`]: the answer, or the transport's
    /// error (timeout, unreachable ...).
    fn on_outbound_result(
        &mut self,
        _raw: &mut RawNode,
        _tag: u64,
        _result: Result<NodeResponse, transport::RequestError>,
    ) {
    }
}

/// The KV store (`service = "kv"`).
pub struct KvService {
    server: kv::server::KvServer,
    refused: Vec<(RequestId, NodeResponse)>,
}

impl KvService {
    pub fn new(server: kv::server::KvServer) -> Self {
        KvService {
            server,
            refused: Vec::new(),
        }
    }
}

/// The definite refusal of a request meant for another service.
pub fn unsupported(service: &str, request: &NodeRequest) -> NodeResponse {
    let kind = match request {
        NodeRequest::Kv(_) => "kv",
        NodeRequest::Status => "status",
        NodeRequest::Ctrl(_) => "shardctrler",
        NodeRequest::ShardKv(_) | NodeRequest::ShardPull(_) | NodeRequest::ShardDelete(_) => {
            "shardkv"
        }
    };
    NodeResponse::Unsupported(format!("this node runs the {service} service, not {kind}"))
}

impl Service for KvService {
    fn name(&self) -> &'static str {
        "kv"
    }

    fn restore_snapshot(&mut self, index: Index, data: &[u8]) -> Result<(), ServiceError> {
        Ok(self.server.restore_snapshot(index, data)?)
    }

    fn handle_request(&mut self, raw: &mut RawNode, request_id: RequestId, request: NodeRequest) {
        match request {
            NodeRequest::Kv(request) => self.server.handle_request(raw, request_id, request),
            other => self.refused.push((request_id, unsupported("kv", &other))),
        }
    }

    fn tick(&mut self, raw: &mut RawNode) {
        self.server.tick(raw);
    }

    fn on_ready(&mut self, raw: &mut RawNode, ready: &Ready) -> Result<(), ServiceError> {
        Ok(self.server.on_raft_ready(raw, ready)?)
    }

    fn maybe_snapshot(
        &mut self,
        raw: &mut RawNode,
        log_bytes: usize,
    ) -> Result<Option<TakenSnapshot>, ServiceError> {
        Ok(self.server.maybe_snapshot(raw, log_bytes)?)
    }

    fn take_replies(&mut self) -> Vec<(RequestId, NodeResponse)> {
        let mut replies: Vec<(RequestId, NodeResponse)> = std::mem::take(&mut self.refused);
        replies.extend(
            self.server
                .take_replies()
                .into_iter()
                .map(|reply| (reply.request_id, NodeResponse::Kv(reply.response))),
        );
        replies
    }
}

/// The service `config.service` names, configured from `config`.
/// `incarnation` distinguishes this run's read contexts from a previous run's.
pub fn make_service(
    config: &NodeConfig,
    incarnation: u64,
) -> Result<Box<dyn Service>, ServiceError> {
    Ok(match config.service {
        ServiceKind::Kv => {
            if config.kv.unsafe_stale_reads {
                tracing::warn!(
                    "!!! UNSAFE: unsafe_stale_reads is on: every replica answers gets from its \
                     local state. This node is NOT linearizable. Use only to test the checker. !!!"
                );
            }
            Box::new(KvService::new(kv::server::KvServer::new(
                config.id,
                config.kv_server_config(),
                incarnation,
            )))
        }
        ServiceKind::Shardctrler => Box::new(crate::shard_service::CtrlService::new(
            shardctrler::CtrlServer::new(config.ctrl_server_config()),
        )),
        ServiceKind::Shardkv => {
            let (Some(section), Some(server_config)) =
                (&config.shardkv, config.shardkv_server_config())
            else {
                return Err(ServiceError::Config(
                    "service \"shardkv\" needs a [shardkv] section".into(),
                ));
            };
            if section.unsafe_keep_serving {
                tracing::warn!(
                    "!!! UNSAFE: unsafe_keep_serving is on: this group keeps serving shards it \
                     has handed over. NOT linearizable. Use only to test the checker. !!!"
                );
            }
            let server = shardkv::ShardKvServer::new(config.id, section.gid, server_config);
            Box::new(crate::shard_service::ShardKvService::new(
                server,
                section.controllers.clone(),
                config.id,
            ))
        }
    })
}
