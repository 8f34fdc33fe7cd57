//! The node daemon's event loop: drives the Raft core on tokio.
//!
//! Everything that touches the Raft node, the hosted service (see
//! `service.rs`: kv, shard controller, shardkv) and the store runs on
//! one task, so a request's path never hands off between threads (waking a
//! thread on the other core costs ~60 µs on these machines). The loop:
//!
//! 1. waits for a tick, peer messages or client requests, and takes every
//!    input already queued (batching: many proposals share one Ready);
//! 2. handles each Ready with Raft's async storage writes (thesis §10.2.1,
//!    `raft::Config::async_storage_writes`): sends the leader's Appends at
//!    once, hands the snapshot, entries and hard state to the storage thread
//!    (`storage::StorageWriter`: group commit, one fdatasync per wake-up),
//!    applies, serves reads, advances; then snapshots if the log has grown
//!    too large. The Ready's other messages (votes, acknowledgements) wait
//!    until the storage thread reports the write durable; then they go out
//!    and the core learns it (`RawNode::on_persisted`), so a leader counts
//!    its own copy only once it is on disk. The loop keeps receiving and
//!    sending while the disk syncs, and the leader's fsync runs in parallel
//!    with the followers' instead of before them;
//! 3. answers the client requests the service has finished and starts the
//!    requests it sends to other nodes (shardkv: controller, other groups).
//!
//! A storage error is fatal: a node that cannot persist must stop rather
//! than promise what it has not stored (fail-stop).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use raft::{Index, Message, RawNode, Ready, Restored, Role, Snapshot, SnapshotMeta};
use storage::{DiskOptions, DiskStorage, StorageWriter, Write, WriteOutcome};
use transport::{
    request_channel, Endpoint, EndpointConfig, Incoming, PeerAddress, PendingRequest, Responder,
};

use crate::config::NodeConfig;
use crate::service::{OutboundCall, Service, ServiceError};
use crate::wire::{NodeRequest, NodeResponse, StatusReport};

/// Inputs taken per wake-up before the Ready is handled: bounds the latency
/// one burst can add to everyone else.
const INPUT_BATCH_MAX: usize = 4096;
/// Client requests queued in the transport before their streams wait.
const REQUEST_QUEUE_MAX: usize = 8192;
/// Rough per-entry overhead on disk (record header, index, term, kind).
const ENTRY_OVERHEAD_BYTES: usize = 32;

/// Why the node stopped abnormally.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
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
    #[error("service: {0}")]
    Service(#[from] ServiceError),
    #[error("snapshot at index {index}: the log has no entry there")]
    SnapshotTerm { index: Index },
}

/// Bytes of the log entries the store holds after the last snapshot: the
/// "persisted Raft state" the KV server compares with maxraftstate. The WAL's
/// file size is no measure, since segments are only deleted whole.
#[derive(Debug, Default)]
struct LogSize {
    entries: VecDeque<(Index, usize)>,
    bytes: usize,
}

impl LogSize {
    fn append(&mut self, entries: &[raft::Entry]) {
        if let Some(first) = entries.first() {
            while matches!(self.entries.back(), Some(&(index, _)) if index >= first.index) {
                if let Some((_, bytes)) = self.entries.pop_back() {
                    self.bytes -= bytes;
                }
            }
        }
        for entry in entries {
            let bytes = entry.data.len() + ENTRY_OVERHEAD_BYTES;
            self.entries.push_back((entry.index, bytes));
            self.bytes += bytes;
        }
    }

    fn compact(&mut self, index: Index) {
        while matches!(self.entries.front(), Some(&(i, _)) if i <= index) {
            if let Some((_, bytes)) = self.entries.pop_front() {
                self.bytes -= bytes;
            }
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

struct Node {
    config: NodeConfig,
    raw: RawNode,
    service: Box<dyn Service>,
    /// The storage thread; see `handle_readies`.
    store: StorageWriter,
    /// Where the storage thread reports finished writes.
    write_outcomes: Option<tokio::sync::mpsc::UnboundedReceiver<WriteOutcome>>,
    /// The hard state last handed to the storage thread.
    written_hard_state: raft::HardState,
    /// Messages waiting for a write: each batch may leave once the write
    /// with this id (the newest submitted before it) is done.
    held_messages: VecDeque<(u64, Vec<Message>)>,
    /// For `RawNode::on_persisted`: the last entry (or snapshot) of a write.
    persist_points: VecDeque<(u64, Index, raft::Term)>,
    /// Every write up to this id is done.
    writes_done_through: u64,
    endpoint: Endpoint<Message>,
    log_size: LogSize,
    name_to_id: HashMap<String, u64>,
    id_to_name: HashMap<u64, String>,
    responders: HashMap<u64, Responder<NodeResponse>>,
    next_request_id: u64,
    dropped_sends: u64,
    spoofed_messages: u64,
    /// Carries the outcomes of requests the service sent to other nodes
    /// from their tasks back into the loop.
    outbound_sender: tokio::sync::mpsc::UnboundedSender<(u64, OutboundResult)>,
    outbound_receiver: Option<tokio::sync::mpsc::UnboundedReceiver<(u64, OutboundResult)>>,
}

type OutboundResult = Result<NodeResponse, transport::RequestError>;

/// Runs the node until `shutdown` completes (then stops cleanly) or a fatal
/// error occurs. Must be called inside a tokio runtime.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let (mut node, incoming, requests) = Node::start(config)?;
    let result = node.serve(incoming, requests, shutdown).await;
    node.endpoint.shutdown().await;
    result
}

type Requests = tokio::sync::mpsc::Receiver<PendingRequest<NodeRequest, NodeResponse>>;

impl Node {
    fn start(config: NodeConfig) -> Result<(Node, Incoming<Message>, Requests), RunError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|source| RunError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
        let (store, recovered) =
            DiskStorage::open(&config.data_dir.join("raft"), DiskOptions::default())?;
        // Distinguishes this run's read contexts from a previous run's.
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
            ^ u64::from(std::process::id());
        let mut service = crate::service::make_service(&config, incarnation)?;
        if let Some(snapshot) = &recovered.snapshot {
            service
                .restore_snapshot(snapshot.meta.index, &snapshot.data)
                .map_err(RunError::Service)?;
        }
        let mut log_size = LogSize::default();
        log_size.append(&recovered.entries);
        tracing::info!(
            term = recovered.hard_state.term,
            commit = recovered.hard_state.commit,
            entries = recovered.entries.len(),
            snapshot_index = recovered
                .snapshot
                .as_ref()
                .map(|s| s.meta.index)
                .unwrap_or(0),
            "recovered from {}",
            config.data_dir.display()
        );
        let restored = Restored {
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot.as_ref().map(|s| s.meta.clone()),
            entries: recovered.entries,
            snapshot_data: recovered.snapshot.map(|s| s.data).unwrap_or_default(),
        };
        let written_hard_state = restored.hard_state.clone();
        let mut raft_config = config.raft_config();
        raft_config.async_storage_writes = true;
        let raw = RawNode::new(raft_config, restored)?;
        let (outcome_sender, write_outcomes) = tokio::sync::mpsc::unbounded_channel();
        let store = StorageWriter::spawn(store, move |outcome| {
            // The loop is gone only when the node stops.
            let _ = outcome_sender.send(outcome);
        })?;

        let mut endpoint_config = EndpointConfig::from_files(
            &config.tls.cert,
            &config.tls.key,
            &config.tls.ca,
            config.listen,
        )?;
        endpoint_config.peers = config
            .peers
            .iter()
            .map(|p| PeerAddress {
                name: p.name.clone(),
                addr: p.addr,
            })
            .collect();
        let (handler, requests) = request_channel::<NodeRequest, NodeResponse>(REQUEST_QUEUE_MAX);
        let (endpoint, incoming) =
            Endpoint::<Message>::bind_with_handler(endpoint_config, handler)?;
        tracing::info!(id = config.id, name = %config.name, listen = %endpoint.local_addr(), "node listening");
        let name_to_id = config
            .peers
            .iter()
            .map(|p| (p.name.clone(), p.id))
            .collect();
        let id_to_name = config
            .peers
            .iter()
            .map(|p| (p.id, p.name.clone()))
            .collect();
        let (outbound_sender, outbound_receiver) = tokio::sync::mpsc::unbounded_channel();
        let node = Node {
            config,
            raw,
            service,
            store,
            write_outcomes: Some(write_outcomes),
            written_hard_state,
            held_messages: VecDeque::new(),
            persist_points: VecDeque::new(),
            writes_done_through: 0,
            endpoint,
            log_size,
            name_to_id,
            id_to_name,
            responders: HashMap::new(),
            next_request_id: 1,
            dropped_sends: 0,
            spoofed_messages: 0,
            outbound_sender,
            outbound_receiver: Some(outbound_receiver),
        };
        Ok((node, incoming, requests))
    }

    async fn serve(
        &mut self,
        mut incoming: Incoming<Message>,
        mut requests: Requests,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), RunError> {
        let tick = Duration::from_millis(self.config.raft.tick_ms);
        let mut ticker = tokio::time::interval(tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let (_never_sent, idle) = tokio::sync::mpsc::unbounded_channel();
        let mut outbound = self.outbound_receiver.take().unwrap_or(idle);
        let (_never_done, no_writes) = tokio::sync::mpsc::unbounded_channel();
        let mut write_outcomes = self.write_outcomes.take().unwrap_or(no_writes);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    tracing::info!("shutting down");
                    return Ok(());
                }
                Some(outcome) = write_outcomes.recv() => {
                    let mut through = outcome?;
                    while let Ok(next) = write_outcomes.try_recv() {
                        through = through.max(next?);
                    }
                    self.on_writes_done(through);
                }
                _ = ticker.tick() => {
                    self.raw.tick();
                    self.service.tick(&mut self.raw);
                }
                Some((tag, result)) = outbound.recv() => {
                    self.service.on_outbound_result(&mut self.raw, tag, result);
                    while let Ok((tag, result)) = outbound.try_recv() {
                        self.service.on_outbound_result(&mut self.raw, tag, result);
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
            self.send_replies();
        }
    }

    /// Steps a peer's message, after checking that the sender's authenticated
    /// certificate name is the node the message claims to be from.
    fn step_peer(&mut self, from: &str, message: Message) {
        if self.name_to_id.get(from) != Some(&message.from) {
            self.spoofed_messages += 1;
            tracing::warn!(
                from,
                claimed = message.from,
                "dropping a peer message whose sender is not the certificate's holder"
            );
            return;
        }
        if let Err(error) = self.raw.step(message) {
            tracing::debug!(from, %error, "raft dropped a message");
        }
    }

    fn handle_request(&mut self, pending: PendingRequest<NodeRequest, NodeResponse>) {
        match pending.request {
            NodeRequest::Status => {
                pending
                    .responder
                    .respond(NodeResponse::Status(self.status_report()));
            }
            request => {
                let request_id = self.next_request_id;
                self.next_request_id += 1;
                self.responders.insert(request_id, pending.responder);
                self.service
                    .handle_request(&mut self.raw, request_id, request);
            }
        }
    }

    /// Raft's async storage writes: the leader's Appends leave now, the
    /// write goes to the storage thread, the other messages wait for it
    /// (`on_writes_done`), and committed entries are applied at once (the
    /// core commits only what a majority holds durably).
    fn handle_readies(&mut self) -> Result<(), RunError> {
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            self.send(&ready.early_messages);
            self.persist(&mut ready)?;
            let messages = std::mem::take(&mut ready.messages);
            if !messages.is_empty() {
                // Even a Ready that writes nothing may acknowledge entries
                // an earlier write still carries: wait for that write.
                let after = self.store.last_submitted();
                if after <= self.writes_done_through {
                    self.send(&messages);
                } else {
                    self.held_messages.push_back((after, messages));
                }
            }
            self.service.on_ready(&mut self.raw, &ready)?;
            self.raw.advance();
            self.maybe_snapshot()?;
        }
        Ok(())
    }

    /// The storage thread finished every write up to `through`: send what
    /// waited for them and tell Raft what is durable.
    fn on_writes_done(&mut self, through: u64) {
        self.writes_done_through = self.writes_done_through.max(through);
        while let Some((after, _)) = self.held_messages.front() {
            if *after > through {
                break;
            }
            if let Some((_, messages)) = self.held_messages.pop_front() {
                self.send(&messages);
            }
        }
        while let Some(&(id, index, term)) = self.persist_points.front() {
            if id > through {
                break;
            }
            self.persist_points.pop_front();
            self.raw.on_persisted(index, term);
        }
    }

    /// Step 1 of a Ready: hands snapshot, entries and hard state to the
    /// storage thread as one batch (it syncs once per wake-up).
    ///
    /// A Ready whose only change is the commit index is written but not synced (etcd's
    /// MustSync rule): the commit index is re-learned from the leader after a crash, and no
    /// message depends on it being durable. Half of a leader's fdatasyncs were such 50-byte
    /// records before.
    fn persist(&mut self, ready: &mut Ready) -> Result<(), RunError> {
        if ready.hard_state.is_none() && ready.entries.is_empty() && ready.snapshot.is_none() {
            return Ok(());
        }
        let commit_only = ready.entries.is_empty()
            && ready.snapshot.is_none()
            && ready.hard_state.as_ref().is_some_and(|hs| {
                let stored = &self.written_hard_state;
                hs.term == stored.term && hs.vote == stored.vote
            });
        if let Some(hard_state) = &ready.hard_state {
            self.written_hard_state = hard_state.clone();
        }
        if ready.snapshot.is_some() {
            self.log_size.clear();
        }
        self.log_size.append(&ready.entries);
        let point = ready
            .entries
            .last()
            .map(|e| (e.index, e.term))
            .or_else(|| ready.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)));
        let id = self.store.submit(Write::Ready {
            hard_state: ready.hard_state.clone(),
            entries: std::mem::take(&mut ready.entries),
            // The service restores from the Ready's copy.
            snapshot: ready.snapshot.clone(),
            sync: !commit_only,
        })?;
        if let Some((index, term)) = point {
            self.persist_points.push_back((id, index, term));
        }
        Ok(())
    }

    fn send(&mut self, messages: &[Message]) {
        for message in messages {
            let Some(name) = self.id_to_name.get(&message.to) else {
                self.dropped_sends += 1;
                continue;
            };
            // A full queue or a peer that is down loses the message; Raft
            // retransmits what matters.
            if self.endpoint.send(name, message).is_err() {
                self.dropped_sends += 1;
            }
        }
    }

    /// After `advance`: when the log has passed maxraftstate, the KV server
    /// snapshots its state and Raft compacts; the snapshot is then made durable.
    fn maybe_snapshot(&mut self) -> Result<(), RunError> {
        let Some(taken) = self
            .service
            .maybe_snapshot(&mut self.raw, self.log_size.bytes)?
        else {
            return Ok(());
        };
        // The service compacted Raft's log at `taken.index`.
        let status = self.raw.status();
        if status.snapshot_index != taken.index {
            return Err(RunError::SnapshotTerm { index: taken.index });
        }
        let term = status.snapshot_term;
        let snapshot = Snapshot {
            meta: SnapshotMeta {
                index: taken.index,
                term,
                voters: self.config.voters(),
            },
            data: taken.data,
        };
        let bytes = snapshot.data.len();
        // Behind the writes of the entries it covers, on the storage thread.
        self.store.submit(Write::Snapshot(snapshot))?;
        self.log_size.compact(taken.index);
        tracing::info!(index = taken.index, bytes, "snapshot taken");
        Ok(())
    }

    fn send_replies(&mut self) {
        for (request_id, response) in self.service.take_replies() {
            if let Some(responder) = self.responders.remove(&request_id) {
                responder.respond(response);
            }
        }
        for call in self.service.take_outbound() {
            self.start_outbound(call);
        }
    }

    /// Sends a service's request to another node on a task of its own; the
    /// outcome comes back through `outbound_results` into the loop.
    fn start_outbound(&self, call: OutboundCall) {
        let client = self.endpoint.client().clone();
        let sender = self.outbound_sender.clone();
        tokio::spawn(async move {
            let result = client
                .request(call.addr, &call.name, &call.request, call.timeout)
                .await;
            // The loop is gone only when the node stops.
            let _ = sender.send((call.tag, result));
        });
    }

    fn status_report(&self) -> StatusReport {
        let status = self.raw.status();
        StatusReport {
            id: self.config.id,
            name: self.config.name.clone(),
            service: self.service.name().into(),
            role: match status.role {
                Role::Follower => "follower",
                Role::PreCandidate => "pre-candidate",
                Role::Candidate => "candidate",
                Role::Leader => "leader",
            }
            .into(),
            term: status.term,
            leader: status.leader,
            commit_index: status.commit,
            applied_index: status.applied,
            first_index: status.first_index,
            last_index: status.last_index,
            snapshot_index: status.snapshot_index,
            log_bytes: self.store.wal_bytes(),
            unsafe_stale_reads: self.config.kv.unsafe_stale_reads,
            dropped_messages: {
                let c = self.raw.counters();
                c.dropped_wrong_recipient
                    + c.dropped_unknown_sender
                    + c.dropped_malformed
                    + c.dropped_unexpected
                    + c.dropped_conflicting_committed
                    + c.dropped_snapshot_chunks
            },
        }
    }
}
