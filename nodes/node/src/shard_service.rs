//! The sharded store's services on the node daemon: a shard controller
//! replica (`service = "shardctrler"`) and a member of a shardkv replica
//! group (`service = "shardkv"`).
//!
//! Servers in the controller's configurations are strings; on real nodes
//! they are `name@ip:port` ([`server_string`]): the name is the node's
//! certificate name (its TLS server name), the address where it listens. A
//! group's leader reaches the controller and other groups through the
//! runtime's outbound calls; every node's certificate comes from the one
//! cluster CA, so a node accepts another group's node as a caller.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Duration;

use raft::{Index, RawNode, Ready};
use shardctrler::{CtrlOp, CtrlRequest, CtrlResponse, CtrlResult, CtrlServer};
use shardkv::{Outbound, ShardKvServer};

use crate::config::PeerConfig;
use crate::service::{unsupported, OutboundCall, RequestId, Service, ServiceError, TakenSnapshot};
use crate::wire::{NodeRequest, NodeResponse};

/// How a node appears among a group's servers in a configuration.
pub fn server_string(name: &str, addr: SocketAddr) -> String {
    format!("{name}@{addr}")
}

/// The certificate name and address in a [`server_string`]; `None` if it is
/// not one.
pub fn parse_server(server: &str) -> Option<(String, SocketAddr)> {
    let (name, addr) = server.split_once('@')?;
    if name.is_empty() {
        return None;
    }
    Some((name.to_string(), addr.parse().ok()?))
}

/// A shard controller replica.
pub struct CtrlService {
    server: CtrlServer,
    refused: Vec<(RequestId, NodeResponse)>,
}

impl CtrlService {
    pub fn new(server: CtrlServer) -> Self {
        CtrlService {
            server,
            refused: Vec::new(),
        }
    }
}

impl Service for CtrlService {
    fn name(&self) -> &'static str {
        "shardctrler"
    }

    fn restore_snapshot(&mut self, index: Index, data: &[u8]) -> Result<(), ServiceError> {
        Ok(self.server.restore_snapshot(index, data)?)
    }

    fn handle_request(&mut self, raw: &mut RawNode, request_id: RequestId, request: NodeRequest) {
        match request {
            NodeRequest::Ctrl(request) => self.server.handle_request(raw, request_id, request),
            other => self
                .refused
                .push((request_id, unsupported(self.name(), &other))),
        }
    }

    fn tick(&mut self, raw: &mut RawNode) {
        self.server.tick(raw);
    }

    fn on_ready(&mut self, raw: &mut RawNode, ready: &Ready) -> Result<(), ServiceError> {
        Ok(self
            .server
            .on_ready(raw, ready.snapshot.as_ref(), &ready.committed_entries)?)
    }

    fn maybe_snapshot(
        &mut self,
        raw: &mut RawNode,
        log_bytes: usize,
    ) -> Result<Option<TakenSnapshot>, ServiceError> {
        Ok(self.server.maybe_snapshot(raw, log_bytes)?)
    }

    fn take_replies(&mut self) -> Vec<(RequestId, NodeResponse)> {
        let mut replies = std::mem::take(&mut self.refused);
        replies.extend(
            self.server
                .take_replies()
                .into_iter()
                .map(|reply| (reply.request_id, NodeResponse::Ctrl(reply.response))),
        );
        replies
    }
}

/// What an outbound call was for; at most one call per key is in flight,
/// so a slow peer does not pile up a call per poll round.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum CallKey {
    Query,
    Pull { shard: usize, server: String },
    Delete { shard: usize, server: String },
}

/// A member of a shardkv replica group.
pub struct ShardKvService {
    server: ShardKvServer,
    controllers: Vec<PeerConfig>,
    /// Index into `controllers` of the presumed controller leader.
    ctrl_leader: usize,
    /// Identifies this node's queries at the controller (queries are not
    /// deduplicated, so any id works; this one is distinct per node).
    ctrl_client_id: u64,
    attempt_timeout: Duration,
    next_tag: u64,
    in_flight: HashMap<u64, CallKey>,
    busy: HashSet<CallKey>,
    outbound: Vec<OutboundCall>,
    replies: Vec<(RequestId, NodeResponse)>,
}

impl ShardKvService {
    pub fn new(server: ShardKvServer, controllers: Vec<PeerConfig>, node_id: u64) -> Self {
        ShardKvService {
            server,
            controllers,
            ctrl_leader: 0,
            ctrl_client_id: (1 << 62) | node_id,
            attempt_timeout: Duration::from_millis(500),
            next_tag: 1,
            in_flight: HashMap::new(),
            busy: HashSet::new(),
            outbound: Vec::new(),
            replies: Vec::new(),
        }
    }

    fn call(&mut self, key: CallKey, name: String, addr: SocketAddr, request: NodeRequest) {
        if !self.busy.insert(key.clone()) {
            return;
        }
        let tag = self.next_tag;
        self.next_tag += 1;
        self.in_flight.insert(tag, key);
        self.outbound.push(OutboundCall {
            tag,
            name,
            addr,
            request,
            timeout: self.attempt_timeout,
        });
    }

    /// Turns the server's wishes into calls: a configuration query to the
    /// presumed controller leader; pulls and deletes to every server of the
    /// other group (any replica answers a pull; the leader acts on a delete).
    fn collect_outbound(&mut self) {
        for wish in self.server.take_outbound() {
            match wish {
                Outbound::QueryConfig { num } => {
                    let Some(ctrl) = self.controllers.get(self.ctrl_leader).cloned() else {
                        continue;
                    };
                    let request = NodeRequest::Ctrl(CtrlRequest {
                        client_id: self.ctrl_client_id,
                        seq: 0,
                        op: CtrlOp::Query { num: Some(num) },
                    });
                    self.call(CallKey::Query, ctrl.name, ctrl.addr, request);
                }
                Outbound::Pull {
                    servers, request, ..
                } => {
                    for server in servers {
                        let Some((name, addr)) = parse_server(&server) else {
                            tracing::debug!(server, "not a name@address server; skipped");
                            continue;
                        };
                        let key = CallKey::Pull {
                            shard: request.shard,
                            server,
                        };
                        self.call(key, name, addr, NodeRequest::ShardPull(request.clone()));
                    }
                }
                Outbound::Delete {
                    servers, request, ..
                } => {
                    for server in servers {
                        let Some((name, addr)) = parse_server(&server) else {
                            tracing::debug!(server, "not a name@address server; skipped");
                            continue;
                        };
                        let key = CallKey::Delete {
                            shard: request.shard,
                            server,
                        };
                        self.call(key, name, addr, NodeRequest::ShardDelete(request.clone()));
                    }
                }
            }
        }
    }

    fn next_controller(&mut self) {
        if !self.controllers.is_empty() {
            self.ctrl_leader = (self.ctrl_leader + 1) % self.controllers.len();
        }
    }
}

impl Service for ShardKvService {
    fn name(&self) -> &'static str {
        "shardkv"
    }

    fn restore_snapshot(&mut self, index: Index, data: &[u8]) -> Result<(), ServiceError> {
        Ok(self.server.restore_snapshot(index, data)?)
    }

    fn handle_request(&mut self, raw: &mut RawNode, request_id: RequestId, request: NodeRequest) {
        match request {
            NodeRequest::ShardKv(request) => self.server.handle_request(raw, request_id, request),
            NodeRequest::ShardPull(request) => {
                let reply = self.server.handle_pull(&request);
                self.replies
                    .push((request_id, NodeResponse::ShardPull(reply)));
            }
            NodeRequest::ShardDelete(request) => {
                let reply = self.server.handle_delete(raw, &request);
                self.replies
                    .push((request_id, NodeResponse::ShardDelete(reply)));
            }
            other => self
                .replies
                .push((request_id, unsupported(self.name(), &other))),
        }
    }

    fn tick(&mut self, raw: &mut RawNode) {
        self.server.tick(raw);
    }

    fn on_ready(&mut self, raw: &mut RawNode, ready: &Ready) -> Result<(), ServiceError> {
        Ok(self
            .server
            .on_ready(raw, ready.snapshot.as_ref(), &ready.committed_entries)?)
    }

    fn maybe_snapshot(
        &mut self,
        raw: &mut RawNode,
        log_bytes: usize,
    ) -> Result<Option<TakenSnapshot>, ServiceError> {
        Ok(self.server.maybe_snapshot(raw, log_bytes)?)
    }

    fn take_replies(&mut self) -> Vec<(RequestId, NodeResponse)> {
        let mut replies = std::mem::take(&mut self.replies);
        replies.extend(
            self.server
                .take_replies()
                .into_iter()
                .map(|reply| (reply.request_id, NodeResponse::ShardKv(reply.response))),
        );
        replies
    }

    fn take_outbound(&mut self) -> Vec<OutboundCall> {
        self.collect_outbound();
        std::mem::take(&mut self.outbound)
    }

    fn on_outbound_result(
        &mut self,
        raw: &mut RawNode,
        tag: u64,
        result: Result<NodeResponse, transport::RequestError>,
    ) {
        let Some(key) = self.in_flight.remove(&tag) else {
            return;
        };
        self.busy.remove(&key);
        match (key, result) {
            (CallKey::Query, Ok(NodeResponse::Ctrl(CtrlResponse::Ok(CtrlResult::Config(c))))) => {
                self.server.on_config(raw, c);
            }
            (
                CallKey::Query,
                Ok(NodeResponse::Ctrl(CtrlResponse::WrongLeader {
                    leader_hint: Some(id),
                })),
            ) => match self.controllers.iter().position(|c| c.id == id) {
                Some(index) if index != self.ctrl_leader => self.ctrl_leader = index,
                _ => self.next_controller(),
            },
            (CallKey::Query, other) => {
                tracing::debug!(
                    ?other,
                    "controller query failed; trying the next controller"
                );
                self.next_controller();
            }
            (CallKey::Pull { .. }, Ok(NodeResponse::ShardPull(reply))) => {
                self.server.on_pull_reply(raw, reply);
            }
            (CallKey::Delete { .. }, Ok(NodeResponse::ShardDelete(reply))) => {
                self.server.on_delete_reply(raw, reply);
            }
            (key, other) => {
                tracing::debug!(?key, ?other, "shard call failed; the next poll retries");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_strings_round_trip_and_junk_is_refused() {
        let addr: SocketAddr = "127.0.0.1:7004".parse().unwrap();
        let s = server_string("g1n2", addr);
        assert_eq!(s, "g1n2@127.0.0.1:7004");
        assert_eq!(parse_server(&s), Some(("g1n2".to_string(), addr)));
        assert_eq!(parse_server("g1n2"), None);
        assert_eq!(parse_server("@127.0.0.1:7004"), None);
        assert_eq!(parse_server("x@not-an-address"), None);
    }
}
