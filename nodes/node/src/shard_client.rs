//! Async clients of the sharded store over the transport:
//!
//! * [`CtrlClient`]: Join / Leave / Move / Query at the shard controller
//!   group, finding its leader, retrying with the same sequence number (the
//!   controller applies each request once);
//! * [`ShardKvClient`]: Get / Put / Append, driving the sans-I/O
//!   `shardkv::ShardClerk` (which group owns the key, when to refresh the
//!   configuration) with bounded timeouts, and classifying each outcome as
//!   `kv::Outcome` does for [`crate::client::KvClient`]: `Ok`, `Fail`
//!   (certainly not applied) or `Unknown` (may have been applied).
//!
//! Both are cheap to create on one shared [`transport::Client`]. The
//! cluster file of a sharded deployment lists the controllers; replica
//! groups are found through the controller's configurations, whose servers
//! are `name@ip:port` strings (see [`crate::shard_service::server_string`]).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use kv::client::{FailReason, Outcome, UnknownReason};
use kv::{Op, OpResult};
use shardctrler::{Config, CtrlOp, CtrlRequest, CtrlResponse, CtrlResult, Gid, ShardId};
use shardkv::{ClerkAction, ShardClerk, ShardKvResponse};

use crate::client::Connection;
use crate::config::PeerConfig;
use crate::shard_service::{parse_server, server_string};
use crate::wire::{NodeRequest, NodeResponse};

/// Timeouts and pauses of both clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardClientConfig {
    /// How long one attempt (one request to one node) may take.
    pub attempt_timeout: Duration,
    /// Give up on an operation after this long.
    pub op_timeout: Duration,
    /// Pause after a refusal or a full round of controllers; doubles up to
    /// `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for ShardClientConfig {
    fn default() -> Self {
        ShardClientConfig {
            attempt_timeout: Duration::from_millis(500),
            op_timeout: Duration::from_secs(10),
            backoff_min: Duration::from_millis(10),
            backoff_max: Duration::from_millis(200),
        }
    }
}

/// Why a controller request did not succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CtrlError {
    /// Refused as malformed (unknown gid, shard out of range ...): nothing changed.
    #[error("refused: {0}")]
    Invalid(String),
    /// Gave up; every attempt was refused before being proposed: nothing changed.
    #[error("gave up; not applied")]
    Failed,
    /// Gave up after an attempt that may have been applied.
    #[error("gave up; may have been applied")]
    Unknown,
}

impl CtrlError {
    /// True when the request certainly did not take effect.
    pub fn is_definite(&self) -> bool {
        !matches!(self, CtrlError::Unknown)
    }
}

/// One logical client of the shard controller: one request at a time.
#[derive(Clone, Debug)]
pub struct CtrlClient {
    transport: transport::Client,
    controllers: Vec<PeerConfig>,
    client_id: u64,
    seq: u64,
    leader: usize,
    config: ShardClientConfig,
}

impl CtrlClient {
    /// `client_id` must be unique among the controller's clients (it
    /// deduplicates by it).
    pub fn new(
        transport: transport::Client,
        controllers: Vec<PeerConfig>,
        client_id: u64,
        config: ShardClientConfig,
    ) -> CtrlClient {
        CtrlClient {
            transport,
            controllers,
            client_id,
            seq: 0,
            leader: 0,
            config,
        }
    }

    /// A client of the controllers listed in `connection`'s cluster file.
    pub fn from_connection(
        connection: &Connection,
        client_id: u64,
        config: ShardClientConfig,
    ) -> CtrlClient {
        Self::new(
            connection.transport.clone(),
            connection.cluster.nodes.clone(),
            client_id,
            config,
        )
    }

    /// New groups; each server is its certificate name and listen address.
    pub async fn join(
        &mut self,
        groups: BTreeMap<Gid, Vec<(String, SocketAddr)>>,
    ) -> Result<(), CtrlError> {
        let groups = groups
            .into_iter()
            .map(|(gid, servers)| {
                let servers = servers
                    .iter()
                    .map(|(name, addr)| server_string(name, *addr))
                    .collect();
                (gid, servers)
            })
            .collect();
        self.call(CtrlOp::Join { groups }).await.map(|_| ())
    }

    pub async fn leave(&mut self, gids: Vec<Gid>) -> Result<(), CtrlError> {
        self.call(CtrlOp::Leave { gids }).await.map(|_| ())
    }

    pub async fn move_shard(&mut self, shard: ShardId, gid: Gid) -> Result<(), CtrlError> {
        self.call(CtrlOp::Move { shard, gid }).await.map(|_| ())
    }

    /// Configuration `num`, or the latest for `None`.
    pub async fn query(&mut self, num: Option<u64>) -> Result<Config, CtrlError> {
        match self.call(CtrlOp::Query { num }).await? {
            CtrlResult::Config(config) => Ok(config),
            other => Err(CtrlError::Invalid(format!("a query answered {other:?}"))),
        }
    }

    /// Runs one request to its outcome within the configured `op_timeout`.
    pub async fn call(&mut self, op: CtrlOp) -> Result<CtrlResult, CtrlError> {
        let deadline = Instant::now() + self.config.op_timeout;
        self.call_until(op, deadline).await
    }

    /// [`CtrlClient::call`] that gives up at `deadline`.
    pub async fn call_until(
        &mut self,
        op: CtrlOp,
        deadline: Instant,
    ) -> Result<CtrlResult, CtrlError> {
        if self.controllers.is_empty() {
            return Err(CtrlError::Failed);
        }
        self.seq += 1;
        let request = NodeRequest::Ctrl(CtrlRequest {
            client_id: self.client_id,
            seq: self.seq,
            op,
        });
        let mut maybe_applied = false;
        let mut backoff = self.config.backoff_min;
        let mut tried_this_round = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(if maybe_applied {
                    CtrlError::Unknown
                } else {
                    CtrlError::Failed
                });
            }
            let timeout = self.config.attempt_timeout.min(deadline - now);
            let node = &self.controllers[self.leader % self.controllers.len()];
            let result: Result<NodeResponse, transport::RequestError> = self
                .transport
                .request(node.addr, &node.name, &request, timeout)
                .await;
            let mut pause = false;
            match result {
                Ok(NodeResponse::Ctrl(CtrlResponse::Ok(CtrlResult::Invalid(reason)))) => {
                    return Err(CtrlError::Invalid(reason))
                }
                Ok(NodeResponse::Ctrl(CtrlResponse::Ok(result))) => return Ok(result),
                Ok(NodeResponse::Ctrl(CtrlResponse::WrongLeader { leader_hint })) => {
                    match leader_hint
                        .and_then(|id| self.controllers.iter().position(|c| c.id == id))
                    {
                        Some(index) if index != self.leader => {
                            self.leader = index;
                            continue;
                        }
                        _ => self.leader += 1,
                    }
                }
                Ok(NodeResponse::Ctrl(CtrlResponse::Busy)) => {
                    pause = true;
                    self.leader += 1;
                }
                // A newer request of this client id was applied: two clients
                // share the id. Nothing is known about this one.
                Ok(NodeResponse::Ctrl(CtrlResponse::Stale)) => return Err(CtrlError::Unknown),
                Ok(NodeResponse::Ctrl(CtrlResponse::LeadershipLost | CtrlResponse::Timeout)) => {
                    maybe_applied = true;
                    self.leader += 1;
                }
                Ok(other) => {
                    tracing::debug!(?other, "not a controller's answer");
                    self.leader += 1;
                }
                Err(error) => {
                    maybe_applied |= !error.is_definite();
                    tracing::debug!(%error, "controller attempt failed");
                    self.leader += 1;
                }
            }
            self.leader %= self.controllers.len();
            tried_this_round += 1;
            if pause || tried_this_round >= self.controllers.len() {
                tried_this_round = 0;
                let now = Instant::now();
                tokio::time::sleep(backoff.min(deadline.saturating_duration_since(now))).await;
                backoff = (backoff * 2).min(self.config.backoff_max);
            }
        }
    }
}

/// One logical client of the sharded store: one operation at a time,
/// exactly-once across retries and shard moves.
#[derive(Debug)]
pub struct ShardKvClient {
    transport: transport::Client,
    ctrl: CtrlClient,
    clerk: ShardClerk,
    config: ShardClientConfig,
}

impl ShardKvClient {
    /// `client_id` must be unique among all clients of the store (groups
    /// deduplicate by it).
    pub fn new(
        transport: transport::Client,
        controllers: Vec<PeerConfig>,
        client_id: u64,
        config: ShardClientConfig,
    ) -> ShardKvClient {
        let ctrl = CtrlClient::new(transport.clone(), controllers, client_id, config.clone());
        ShardKvClient {
            transport,
            ctrl,
            clerk: ShardClerk::new(client_id),
            config,
        }
    }

    /// A client whose controllers are the nodes of `connection`'s cluster file.
    pub fn from_connection(
        connection: &Connection,
        client_id: u64,
        config: ShardClientConfig,
    ) -> ShardKvClient {
        Self::new(
            connection.transport.clone(),
            connection.cluster.nodes.clone(),
            client_id,
            config,
        )
    }

    /// The configuration the client routes by (the latest it has seen).
    pub fn cached_config(&self) -> &Config {
        self.clerk.config()
    }

    pub async fn get(&mut self, key: &str) -> Outcome {
        self.call(Op::Get { key: key.into() }).await
    }

    pub async fn put(&mut self, key: &str, value: &str) -> Outcome {
        self.call(Op::Put {
            key: key.into(),
            value: value.into(),
        })
        .await
    }

    pub async fn append(&mut self, key: &str, value: &str) -> Outcome {
        self.call(Op::Append {
            key: key.into(),
            value: value.into(),
        })
        .await
    }

    /// Runs one operation to its outcome within `op_timeout`: `Ok`, `Fail`
    /// (certainly not applied) or `Unknown` (may have been applied).
    pub async fn call(&mut self, op: Op) -> Outcome {
        if let Err(invalid) = op.validate() {
            return Outcome::Fail(FailReason::Invalid(invalid));
        }
        let deadline = Instant::now() + self.config.op_timeout;
        let mut maybe_applied = false;
        let mut backoff = self.config.backoff_min;
        let mut action = match self.clerk.begin(op) {
            Ok(action) => action,
            // Unreachable through `&mut self`; never guess an outcome.
            Err(_) => return Outcome::Unknown(UnknownReason::GaveUp),
        };
        loop {
            let now = Instant::now();
            if now >= deadline {
                self.clerk.abandon();
                return if maybe_applied {
                    Outcome::Unknown(UnknownReason::GaveUp)
                } else {
                    Outcome::Fail(FailReason::GaveUp)
                };
            }
            let remaining = deadline - now;
            action = match action {
                ClerkAction::Done(Ok(result)) => return Outcome::Ok(result),
                ClerkAction::Done(Err(reason)) => {
                    // Only operations shardkv does not offer (cas) get here,
                    // since sizes were validated above; refused up front.
                    tracing::debug!(reason, "operation refused by the group");
                    return Outcome::Fail(FailReason::GaveUp);
                }
                ClerkAction::Ignored => {
                    self.clerk.abandon();
                    return if maybe_applied {
                        Outcome::Unknown(UnknownReason::GaveUp)
                    } else {
                        Outcome::Fail(FailReason::GaveUp)
                    };
                }
                ClerkAction::Backoff { attempt } => {
                    tokio::time::sleep(backoff.min(remaining)).await;
                    backoff = (backoff * 2).min(self.config.backoff_max);
                    self.clerk.resend(attempt)
                }
                ClerkAction::QueryConfig { attempt } => {
                    let query_deadline = now + remaining.min(self.config.attempt_timeout * 4);
                    match self
                        .ctrl
                        .call_until(CtrlOp::Query { num: None }, query_deadline)
                        .await
                    {
                        Ok(CtrlResult::Config(config)) => {
                            // A configuration no newer than the cached one
                            // means the owner is just busy; do not spin.
                            if config.num <= self.clerk.config().num {
                                tokio::time::sleep(backoff.min(remaining)).await;
                                backoff = (backoff * 2).min(self.config.backoff_max);
                            }
                            self.clerk.on_config(config)
                        }
                        _ => {
                            tokio::time::sleep(backoff.min(remaining)).await;
                            backoff = (backoff * 2).min(self.config.backoff_max);
                            self.clerk.on_timeout(attempt)
                        }
                    }
                }
                ClerkAction::Send {
                    attempt,
                    server,
                    request,
                } => {
                    let Some((name, addr)) = parse_server(&server) else {
                        tracing::debug!(server, "not a name@address server");
                        action = self.clerk.on_timeout(attempt);
                        continue;
                    };
                    let timeout = self.config.attempt_timeout.min(remaining);
                    let result: Result<NodeResponse, transport::RequestError> = self
                        .transport
                        .request(addr, &name, &NodeRequest::ShardKv(request), timeout)
                        .await;
                    match result {
                        Ok(NodeResponse::ShardKv(response)) => {
                            if matches!(
                                response,
                                ShardKvResponse::LeadershipLost | ShardKvResponse::Timeout
                            ) {
                                maybe_applied = true;
                            }
                            if matches!(response, ShardKvResponse::Ok(_)) {
                                backoff = self.config.backoff_min;
                            }
                            self.clerk.on_response(attempt, response)
                        }
                        Ok(other) => {
                            tracing::debug!(?other, "not a shardkv answer");
                            self.clerk.on_timeout(attempt)
                        }
                        Err(error) => {
                            maybe_applied |= !error.is_definite();
                            tracing::debug!(%error, "shardkv attempt failed");
                            self.clerk.on_timeout(attempt)
                        }
                    }
                }
            };
        }
    }
}

/// The value of a get, or `None` for any other outcome (a helper for
/// tools and tests).
pub fn value_of(outcome: &Outcome) -> Option<&str> {
    match outcome {
        Outcome::Ok(OpResult::Value(value)) => Some(value),
        _ => None,
    }
}
