//! One replica of the Raft-replicated coordinator: a small event loop in the
//! shape of the node daemon's (nodes/node/src/runtime.rs), hosting the
//! coordinator state machine instead of KV.
//!
//! I/O side. Everything touching the Raft node runs on one task: ticks,
//! peer messages and worker requests in; each Ready handled in the order
//! `raft::Ready` prescribes (persist with one fdatasync, send, apply,
//! advance), then a snapshot when enough entries were applied. The leader
//! stamps each worker command with its wall clock (`now_ms`) before
//! proposing, so every replica assigns the same tasks; the state machine
//! never lets time run backwards across leaders.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use raft::{EntryKind, Index, Message, RawNode, Ready, Role, Snapshot, SnapshotMeta, Term};
use storage::{DiskOptions, DiskStorage, LogStore};
use transport::{
    request_channel, Endpoint, EndpointConfig, PeerAddress, PendingRequest, Responder,
};

use crate::coordinator::{Command, Coordinator, JobSpec};
use crate::net::{command_for, Request, Response};

/// Worker requests queued in the transport before their streams wait.
const REQUEST_QUEUE_MAX: usize = 4096;
/// Inputs taken per wake-up before the Ready is handled.
const INPUT_BATCH_MAX: usize = 1024;

/// A coordinator replica's identity and its peers.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub id: u64,
    /// Certificate name (`c<id>`).
    pub name: String,
    pub listen: SocketAddr,
    /// Every replica, this one included: (id, name, address).
    pub replicas: Vec<(u64, String, SocketAddr)>,
    pub data_dir: PathBuf,
    pub certs: PathBuf,
    /// The job every replica was started with; the first leader proposes it.
    pub job: JobSpec,
    pub tick: Duration,
    pub snapshot_every_entries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Storage(#[from] storage::StorageError),
    #[error("raft configuration: {0}")]
    Raft(#[from] raft::ConfigError),
    #[error("certificates: {0}")]
    Cert(#[from] transport::certs::CertError),
    #[error("transport: {0}")]
    Endpoint(#[from] transport::EndpointError),
    #[error("snapshot at index {index}: the log has no entry there")]
    SnapshotTerm { index: Index },
    #[error("stored snapshot does not decode: {0}")]
    Snapshot(String),
}

type Requests = tokio::sync::mpsc::Receiver<PendingRequest<Request, Response>>;

struct Replica {
    config: ReplicaConfig,
    raw: RawNode,
    store: DiskStorage,
    endpoint: Endpoint<Message>,
    coordinator: Coordinator,
    applied: Index,
    applied_at_snapshot: Index,
    /// Proposals waiting for their entry: index -> (term proposed in, answer).
    waiting: HashMap<Index, (Term, Responder<Response>)>,
    /// The term in which this replica last proposed the job's start.
    start_proposed_term: Option<Term>,
    id_to_name: HashMap<u64, String>,
    name_to_id: HashMap<String, u64>,
}

/// Runs the replica until `shutdown` completes or the job is done and
/// `linger` has passed (workers still polling then learn `Exit`).
pub async fn run_replica(
    config: ReplicaConfig,
    linger: Duration,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ReplicaError> {
    let (mut replica, incoming, requests) = Replica::start(config)?;
    let result = replica.serve(incoming, requests, linger, shutdown).await;
    replica.endpoint.shutdown().await;
    result
}

fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Replica {
    fn start(
        config: ReplicaConfig,
    ) -> Result<(Replica, transport::Incoming<Message>, Requests), ReplicaError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ReplicaError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let (store, recovered) =
            DiskStorage::open(&config.data_dir.join("raft"), DiskOptions::default())?;
        let mut coordinator = Coordinator::new();
        let mut applied = 0;
        if let Some(snapshot) = &recovered.snapshot {
            coordinator = Coordinator::decode_snapshot(&snapshot.data)
                .map_err(|e| ReplicaError::Snapshot(e.to_string()))?;
            applied = snapshot.meta.index;
        }
        let voters: Vec<u64> = config.replicas.iter().map(|r| r.0).collect();
        let mut raft_config = raft::Config::new(config.id, voters);
        raft_config.election_timeout_ticks_min = 30;
        raft_config.election_timeout_ticks_max = 60;
        raft_config.heartbeat_interval_ticks = 5;
        raft_config.seed = wall_clock_ms() ^ config.id;
        let raw = RawNode::new(raft_config, recovered.restored())?;

        let mut endpoint_config = EndpointConfig::from_files(
            &config.certs.join(format!("{}.pem", config.name)),
            &config.certs.join(format!("{}.key", config.name)),
            &config.certs.join("ca.pem"),
            config.listen,
        )?;
        endpoint_config.peers = config
            .replicas
            .iter()
            .filter(|r| r.0 != config.id)
            .map(|r| PeerAddress {
                name: r.1.clone(),
                addr: r.2,
            })
            .collect();
        let (handler, requests) = request_channel::<Request, Response>(REQUEST_QUEUE_MAX);
        let (endpoint, incoming) =
            Endpoint::<Message>::bind_with_handler(endpoint_config, handler)?;
        let id_to_name = config.replicas.iter().map(|r| (r.0, r.1.clone())).collect();
        let name_to_id = config.replicas.iter().map(|r| (r.1.clone(), r.0)).collect();
        tracing::info!(
            id = config.id,
            applied,
            "coordinator replica listening on {}",
            endpoint.local_addr()
        );
        Ok((
            Replica {
                config,
                raw,
                store,
                endpoint,
                coordinator,
                applied,
                applied_at_snapshot: applied,
                waiting: HashMap::new(),
                start_proposed_term: None,
                id_to_name,
                name_to_id,
            },
            incoming,
            requests,
        ))
    }

    async fn serve(
        &mut self,
        mut incoming: transport::Incoming<Message>,
        mut requests: Requests,
        linger: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ReplicaError> {
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let mut done_at: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => return Ok(()),
                _ = ticker.tick() => {
                    self.raw.tick();
                    self.maybe_propose_start();
                    if self.coordinator.is_done() {
                        let at = *done_at.get_or_insert_with(tokio::time::Instant::now);
                        if at.elapsed() >= linger {
                            return Ok(());
                        }
                    }
                }
                Some((from, message)) = incoming.recv() => {
                    self.step_peer(&from, message);
                    for _ in 1..INPUT_BATCH_MAX {
                        let Some((from, message)) = incoming.try_recv() else { break };
                        self.step_peer(&from, message);
                    }
                }
                Some(pending) = requests.recv() => {
                    self.handle_request(pending);
                    for _ in 1..INPUT_BATCH_MAX {
                        let Ok(pending) = requests.try_recv() else { break };
                        self.handle_request(pending);
                    }
                }
            }
            self.handle_readies()?;
            if self.raw.status().role != Role::Leader && !self.waiting.is_empty() {
                // Deposed: what we proposed may or may not commit; the
                // worker retries at the new leader (commands are idempotent
                // enough: a duplicate request only costs a timeout).
                let hint = self.leader_name();
                for (_, (_, responder)) in self.waiting.drain() {
                    responder.respond(Response::NotLeader {
                        leader: hint.clone(),
                    });
                }
            }
        }
    }

    fn leader_name(&self) -> Option<String> {
        self.raw
            .status()
            .leader
            .and_then(|id| self.id_to_name.get(&id).cloned())
    }

    fn step_peer(&mut self, from: &str, message: Message) {
        if self.name_to_id.get(from) != Some(&message.from) {
            tracing::warn!(
                from,
                claimed = message.from,
                "dropping a spoofed peer message"
            );
            return;
        }
        if let Err(error) = self.raw.step(message) {
            tracing::debug!(from, %error, "raft dropped a message");
        }
    }

    fn maybe_propose_start(&mut self) {
        let status = self.raw.status();
        if status.role != Role::Leader
            || self.coordinator.job().is_some()
            || self.start_proposed_term == Some(status.term)
        {
            return;
        }
        if self
            .raw
            .propose(Command::Start(self.config.job.clone()).encode())
            .is_ok()
        {
            self.start_proposed_term = Some(status.term);
        }
    }

    fn handle_request(&mut self, pending: PendingRequest<Request, Response>) {
        let status = self.raw.status();
        let Some(mut command) = command_for(&pending.request) else {
            let response = match pending.request {
                Request::Role => Response::Role {
                    leader: status.role == Role::Leader,
                    term: status.term,
                },
                _ => Response::Progress(self.coordinator.progress()),
            };
            pending.responder.respond(response);
            return;
        };
        if status.role != Role::Leader {
            pending.responder.respond(Response::NotLeader {
                leader: self.leader_name(),
            });
            return;
        }
        match &mut command {
            Command::RequestTask { now_ms, .. } | Command::Complete { now_ms, .. } => {
                *now_ms = wall_clock_ms();
            }
            Command::Start(_) => {}
        }
        match self.raw.propose(command.encode()) {
            Ok(index) => {
                self.waiting.insert(index, (status.term, pending.responder));
            }
            Err(_) => {
                pending.responder.respond(Response::NotLeader {
                    leader: self.leader_name(),
                });
            }
        }
    }

    fn handle_readies(&mut self) -> Result<(), ReplicaError> {
        while self.raw.has_ready() {
            let ready = self.raw.ready();
            self.persist(&ready)?;
            self.send(&ready.messages);
            self.apply(&ready)?;
            self.raw.advance();
            self.maybe_snapshot()?;
        }
        Ok(())
    }

    fn persist(&mut self, ready: &Ready) -> Result<(), ReplicaError> {
        if ready.hard_state.is_none() && ready.entries.is_empty() && ready.snapshot.is_none() {
            return Ok(());
        }
        self.store.save_ready(
            ready.hard_state.as_ref(),
            &ready.entries,
            ready.snapshot.as_ref(),
        )?;
        Ok(())
    }

    fn send(&mut self, messages: &[Message]) {
        for message in messages {
            if let Some(name) = self.id_to_name.get(&message.to) {
                // A full queue or a down peer loses the message; Raft retransmits.
                let _ = self.endpoint.send(name, message);
            }
        }
    }

    fn apply(&mut self, ready: &Ready) -> Result<(), ReplicaError> {
        if let Some(snapshot) = &ready.snapshot {
            self.coordinator = Coordinator::decode_snapshot(&snapshot.data)
                .map_err(|e| ReplicaError::Snapshot(e.to_string()))?;
            self.applied = snapshot.meta.index;
            self.applied_at_snapshot = snapshot.meta.index;
        }
        for entry in &ready.committed_entries {
            if entry.index <= self.applied {
                continue;
            }
            self.applied = entry.index;
            let reply = match entry.kind {
                EntryKind::Normal => Command::decode(&entry.data)
                    .ok()
                    .map(|command| self.coordinator.apply(&command)),
                EntryKind::Noop => None,
            };
            if let Some((term, responder)) = self.waiting.remove(&entry.index) {
                let response = match reply {
                    Some(reply) if term == entry.term => Response::Reply(reply),
                    _ => Response::NotLeader {
                        leader: self.leader_name(),
                    },
                };
                responder.respond(response);
            }
        }
        Ok(())
    }

    fn maybe_snapshot(&mut self) -> Result<(), ReplicaError> {
        if self.applied < self.applied_at_snapshot + self.config.snapshot_every_entries {
            return Ok(());
        }
        let index = self.applied;
        let term = self
            .store
            .term(index)
            .ok_or(ReplicaError::SnapshotTerm { index })?;
        let data = self.coordinator.encode_snapshot();
        if self.raw.compact(index, data.clone()).is_err() {
            return Ok(());
        }
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                voters: self.config.replicas.iter().map(|r| r.0).collect(),
            },
            data,
        };
        self.store.save_snapshot(&snapshot)?;
        self.applied_at_snapshot = index;
        Ok(())
    }
}
