//! An async KV client over the transport: drives the sans-I/O `kv::client::Clerk`
//! (leader hints, retries with backoff, timeouts, outcome classification) with
//! real requests. Used by the `kv` CLI and the control process's workloads.
//!
//! Clients are cheap to create on one shared [`transport::Client`] (one UDP
//! socket and one connection per node for many logical clients).

use std::time::{Duration, Instant};

use kv::client::{Clerk, ClerkConfig, Outcome, Step, UnknownReason};
use kv::command::Op;
use transport::ClientOptions;

use crate::cluster::ClusterFile;
use crate::wire::{NodeRequest, NodeResponse, StatusReport};

/// A transport client plus the cluster's addresses: shared by many [`KvClient`]s.
#[derive(Clone)]
pub struct Connection {
    pub transport: transport::Client,
    pub cluster: ClusterFile,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("nodes", &self.cluster.nodes.len())
            .finish()
    }
}

impl Connection {
    /// Loads the cluster's client certificate and binds a UDP socket.
    /// Must be called inside a tokio runtime.
    pub fn open(cluster: ClusterFile) -> Result<Connection, transport::EndpointError> {
        let transport = transport::Client::from_files(
            &cluster.tls.cert,
            &cluster.tls.key,
            &cluster.tls.ca,
            ClientOptions::default(),
        )?;
        Ok(Connection { transport, cluster })
    }

    /// Asks one node for its status.
    pub async fn status(
        &self,
        node_id: u64,
        timeout: Duration,
    ) -> Result<StatusReport, StatusError> {
        let node = self
            .cluster
            .node(node_id)
            .ok_or(StatusError::UnknownNode(node_id))?;
        let response: NodeResponse = self
            .transport
            .request(node.addr, &node.name, &NodeRequest::Status, timeout)
            .await
            .map_err(StatusError::Request)?;
        match response {
            NodeResponse::Status(report) => Ok(report),
            other => Err(StatusError::Unexpected(format!("{other:?}"))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error("node {0} is not in the cluster file")]
    UnknownNode(u64),
    #[error(transparent)]
    Request(transport::RequestError),
    #[error("unexpected answer: {0}")]
    Unexpected(String),
}

/// One logical client: one operation at a time, exactly-once across retries.
#[derive(Debug)]
pub struct KvClient {
    connection: Connection,
    clerk: Clerk,
    started: Instant,
}

impl KvClient {
    /// `client_id` must be unique among all clients of the cluster (the
    /// servers deduplicate by it); `seed` drives the backoff jitter.
    pub fn new(connection: Connection, client_id: u64, config: ClerkConfig, seed: u64) -> KvClient {
        let servers = connection.cluster.nodes.iter().map(|n| n.id).collect();
        KvClient {
            connection,
            clerk: Clerk::new(client_id, servers, config, seed),
            started: Instant::now(),
        }
    }

    /// Runs one operation to its outcome: `Ok`, `Fail` (certainly not
    /// applied) or `Unknown` (may have been applied).
    pub async fn call(&mut self, op: Op) -> Outcome {
        self.call_at(op, None).await
    }

    /// [`KvClient::call`] whose first attempt goes to node `first` rather than the presumed
    /// leader (clients bound to a node, as in Jepsen); later attempts follow leader hints.
    pub async fn call_at(&mut self, op: Op, first: Option<u64>) -> Outcome {
        let mut send = match self.clerk.begin_at(op, first, self.started.elapsed()) {
            Ok(send) => send,
            // Unreachable through `&mut self`; never guess an outcome.
            Err(_) => return Outcome::Unknown(UnknownReason::GaveUp),
        };
        loop {
            let now = self.started.elapsed();
            if send.send_at > now {
                tokio::time::sleep(send.send_at - now).await;
            }
            let seq = send.request.seq;
            let attempt = send.attempt;
            let timeout = send
                .timeout_at
                .saturating_sub(self.started.elapsed())
                .max(Duration::from_millis(1));
            let step = match self.connection.cluster.node(send.to) {
                None => self
                    .clerk
                    .on_unreachable(seq, attempt, self.started.elapsed()),
                Some(node) => {
                    let result: Result<NodeResponse, _> = self
                        .connection
                        .transport
                        .request(
                            node.addr,
                            &node.name,
                            &NodeRequest::Kv(send.request),
                            timeout,
                        )
                        .await;
                    let now = self.started.elapsed();
                    match result {
                        Ok(NodeResponse::Kv(response)) => {
                            self.clerk.on_response(seq, attempt, send.to, response, now)
                        }
                        // A node that does not run kv did nothing with it.
                        Ok(_) => self.clerk.on_unreachable(seq, attempt, now),
                        Err(error) if error.is_definite() => {
                            tracing::debug!(%error, "attempt not delivered");
                            self.clerk.on_unreachable(seq, attempt, now)
                        }
                        Err(error) => {
                            tracing::debug!(%error, "attempt outcome unknown");
                            self.clerk.on_timeout(seq, attempt, now)
                        }
                    }
                }
            };
            match step {
                Step::Send(next) => send = next,
                Step::Done(outcome) => return outcome,
                // Only inputs about older attempts are ignored; ours is current.
                Step::Ignored => return Outcome::Unknown(UnknownReason::GaveUp),
            }
        }
    }
}
