//! The KV server's logic, independent of any runtime: it turns client
//! requests into Raft proposals or ReadIndex calls, keeps track of what it is
//! waiting for, and answers when the log (or a confirmed read index) says so.
//!
//! Sans-I/O like the Raft core: the runtime (simulator or tokio node) owns the
//! Raft node, storage, transport and clock, and calls in with inputs:
//!
//! * [`KvServer::handle_request`] for each client request (answered at once or later);
//! * [`KvServer::on_ready`] with the parts of a Raft `Ready` that concern the
//!   application (snapshot to restore, committed entries, read states),
//!   after the Ready's persistence and message sending (steps 3 and 4 of the
//!   Ready order);
//! * [`KvServer::tick`] once per Raft tick (expires requests, notices lost leadership);
//! * [`KvServer::maybe_snapshot`] after `advance()`, with the persisted Raft
//!   state's size in bytes;
//!
//! and after each call drains [`KvServer::take_replies`] and sends each
//! [`Reply`] to the client whose request carried that [`RequestId`].
//!
//! Reads are linearizable by default: through ReadIndex (or a lease, if the
//! Raft node is configured for lease reads), or through the log. They are never
//! answered from local state alone, except in the explicitly unsafe
//! `unsafe_stale_reads` mode that exists so the test harness can prove the
//! checker catches stale reads.

use std::collections::BTreeMap;

use raft::{Entry, Index, NodeId, Snapshot, Term};

use crate::command::{ClientId, Command, Op, OpResult, Seq};
use crate::message::{KvRequest, KvResponse};
use crate::state_machine::{ApplyError, ApplyOutcome, KvStateMachine, RestoreError};

/// The runtime's handle for one client request, echoed in its [`Reply`].
pub type RequestId = u64;

/// An answer to route back to the client that sent request `request_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub request_id: RequestId,
    pub response: KvResponse,
}

/// How gets are served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReadMode {
    /// Each get is a log entry, answered when applied. Slowest, simplest.
    Log,
    /// Raft's ReadIndex: the leader confirms it still leads with a heartbeat
    /// round, then the get is answered once the state machine has applied up
    /// to the read index (Raft thesis §6.4).
    #[default]
    ReadIndex,
    /// Same calls as `ReadIndex`; the Raft node must be configured with its
    /// lease read mode, so it confirms leadership from its lease instead of a
    /// heartbeat round. Relies on bounded clock drift.
    Lease,
}

/// Server settings. `Default` is the safe configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    pub read_mode: ReadMode,
    /// DANGER: any replica answers gets from its local state at once, so a
    /// partitioned or lagging replica returns stale values. Not linearizable;
    /// exists only so the harness can prove its checker catches stale reads.
    pub unsafe_stale_reads: bool,
    /// Take a snapshot and compact the log when the persisted Raft state
    /// reaches this many bytes (the lab's maxraftstate). `None`: never.
    pub max_raft_state_bytes: Option<usize>,
    /// A request still pending after this many ticks is answered `Timeout`.
    pub pending_timeout_ticks: u64,
    /// At most this many requests pending; more are refused with `Busy`.
    pub max_pending_requests: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            read_mode: ReadMode::ReadIndex,
            unsafe_stale_reads: false,
            max_raft_state_bytes: None,
            pending_timeout_ticks: 100,
            max_pending_requests: 10_000,
        }
    }
}

/// Who leads, as the local Raft node sees it now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leadership {
    pub term: Term,
    pub is_leader: bool,
    pub leader_hint: Option<NodeId>,
}

/// Raft refused a proposal or read before accepting it (definite).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not the leader; `leader_hint` is the known leader, if any.
    NotLeader { leader_hint: Option<NodeId> },
    /// Any other refusal (e.g. leadership transfer in progress, queue full).
    Busy,
}

/// What the server needs from the Raft node. Implemented for
/// `raft::RawNode`; unit tests use a fake.
pub trait Consensus {
    /// Appends `data` to the leader's log; returns its index (the entry's
    /// term is the current term).
    fn propose(&mut self, data: Vec<u8>) -> Result<Index, Refusal>;
    /// Starts a ReadIndex round tagged `ctx`; its `(ctx, index)` comes back
    /// in a later Ready's read states.
    fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), Refusal>;
    /// The application has a snapshot of everything up to `index`.
    fn compact(&mut self, index: Index, snapshot_data: Vec<u8>) -> Result<(), String>;
    fn leadership(&self) -> Leadership;
}

/// A snapshot the server took; the runtime persists it (snapshot file) — the
/// Raft node already has it in memory for lagging followers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TakenSnapshot {
    pub index: Index,
    pub data: Vec<u8>,
}

/// Errors that mean the runtime broke the calling contract or handed corrupt data.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Apply(#[from] ApplyError),
    #[error("restoring snapshot at index {index}: {source}")]
    Restore { index: Index, source: RestoreError },
    #[error("raft refused to compact at index {index}: {reason}")]
    Compact { index: Index, reason: String },
}

/// Counts of what the server did, for tests and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerCounters {
    pub proposals: u64,
    pub read_index_calls: u64,
    pub replies_ok: u64,
    pub replies_wrong_leader: u64,
    pub replies_lost: u64,
    pub replies_timeout: u64,
    pub stale_local_reads: u64,
    pub snapshots_taken: u64,
    pub snapshots_restored: u64,
}

/// A request proposed into the log, waiting for its entry to apply.
#[derive(Clone, Debug)]
struct PendingWrite {
    request_id: RequestId,
    term: Term,
    client_id: ClientId,
    seq: Seq,
    deadline_tick: u64,
}

/// A get waiting for its read index, or for the state machine to reach it.
#[derive(Clone, Debug)]
struct PendingRead {
    request_id: RequestId,
    key: String,
    term: Term,
    deadline_tick: u64,
}

/// The KV server logic for one replica. See the module docs for the calls.
pub struct KvServer {
    id: NodeId,
    config: ServerConfig,
    state: KvStateMachine,
    /// Ties read ctxs to this incarnation of the server, so a read state
    /// answering a request from before a restart cannot match a new one.
    incarnation: u64,
    next_read_token: u64,
    now_ticks: u64,
    writes: BTreeMap<Index, PendingWrite>,
    reads_unconfirmed: BTreeMap<u64, PendingRead>,
    /// Keyed by (read index, token): served in index order once applied.
    reads_confirmed: BTreeMap<(Index, u64), PendingRead>,
    last_snapshot_index: Index,
    replies: Vec<Reply>,
    counters: ServerCounters,
}

impl std::fmt::Debug for KvServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvServer")
            .field("id", &self.id)
            .field("applied_index", &self.state.applied_index())
            .field("pending_writes", &self.writes.len())
            .field(
                "pending_reads",
                &(self.reads_unconfirmed.len() + self.reads_confirmed.len()),
            )
            .finish()
    }
}

impl KvServer {
    /// A server with an empty state machine. `incarnation` must differ on
    /// every start of the same node (a boot counter, or a number from the
    /// runtime's seeded RNG).
    pub fn new(id: NodeId, config: ServerConfig, incarnation: u64) -> Self {
        if config.unsafe_stale_reads {
            tracing::warn!(
                node = id,
                "UNSAFE STALE READS ENABLED: this replica answers gets from local state; \
                 reads are NOT linearizable. Use only to test the checker."
            );
        }
        Self {
            id,
            config,
            state: KvStateMachine::new(),
            incarnation,
            next_read_token: 0,
            now_ticks: 0,
            writes: BTreeMap::new(),
            reads_unconfirmed: BTreeMap::new(),
            reads_confirmed: BTreeMap::new(),
            last_snapshot_index: 0,
            replies: Vec::new(),
            counters: ServerCounters::default(),
        }
    }

    /// On start: restores the snapshot the runtime recovered from storage
    /// (before the first Ready).
    pub fn restore_snapshot(&mut self, index: Index, data: &[u8]) -> Result<(), ServerError> {
        self.state
            .restore(data, index)
            .map_err(|source| ServerError::Restore { index, source })?;
        self.last_snapshot_index = index;
        self.counters.snapshots_restored += 1;
        Ok(())
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The replicated state as applied here so far.
    pub fn state(&self) -> &KvStateMachine {
        &self.state
    }

    pub fn counters(&self) -> &ServerCounters {
        &self.counters
    }

    /// Requests waiting for the log or a read index.
    pub fn pending_requests(&self) -> usize {
        self.writes.len() + self.reads_unconfirmed.len() + self.reads_confirmed.len()
    }

    /// Answers produced since the last call, to send to their clients.
    pub fn take_replies(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.replies)
    }

    fn reply(&mut self, request_id: RequestId, response: KvResponse) {
        match &response {
            KvResponse::Ok(_) => self.counters.replies_ok += 1,
            KvResponse::WrongLeader { .. } => self.counters.replies_wrong_leader += 1,
            KvResponse::LeadershipLost { .. } => self.counters.replies_lost += 1,
            KvResponse::Timeout => self.counters.replies_timeout += 1,
            _ => {}
        }
        self.replies.push(Reply {
            request_id,
            response,
        });
    }

    /// Takes a client request. Its answer appears in [`Self::take_replies`],
    /// at once (refusals, unsafe local reads) or when the log or a read index
    /// allows.
    pub fn handle_request<C: Consensus>(
        &mut self,
        node: &mut C,
        request_id: RequestId,
        request: KvRequest,
    ) {
        if let Err(invalid) = request.op.validate() {
            self.reply(request_id, KvResponse::Invalid(invalid));
            return;
        }
        if let Op::Get { key } = &request.op {
            if self.config.unsafe_stale_reads {
                self.counters.stale_local_reads += 1;
                let value = self.state.read(key);
                self.reply(request_id, KvResponse::Ok(OpResult::Value(value)));
                return;
            }
        }
        if self.pending_requests() >= self.config.max_pending_requests {
            self.reply(request_id, KvResponse::Busy);
            return;
        }
        let leadership = node.leadership();
        if !leadership.is_leader {
            self.reply(
                request_id,
                KvResponse::WrongLeader {
                    leader_hint: leadership.leader_hint,
                },
            );
            return;
        }
        match (&request.op, self.config.read_mode) {
            (Op::Get { key }, ReadMode::ReadIndex | ReadMode::Lease) => {
                let key = key.clone();
                self.start_read(node, request_id, key, leadership.term)
            }
            _ => self.start_write(node, request_id, request, leadership.term),
        }
    }

    fn deadline(&self) -> u64 {
        self.now_ticks + self.config.pending_timeout_ticks
    }

    fn start_write<C: Consensus>(
        &mut self,
        node: &mut C,
        request_id: RequestId,
        request: KvRequest,
        term: Term,
    ) {
        let command = Command {
            client_id: request.client_id,
            seq: request.seq,
            op: request.op,
        };
        match node.propose(command.encode()) {
            Ok(index) => {
                self.counters.proposals += 1;
                let pending = PendingWrite {
                    request_id,
                    term,
                    client_id: command.client_id,
                    seq: command.seq,
                    deadline_tick: self.deadline(),
                };
                // Raft never hands out the same index twice in one term; an older
                // waiter for this index belongs to a previous term and has lost its slot.
                if let Some(previous) = self.writes.insert(index, pending) {
                    let hint = node.leadership().leader_hint;
                    self.reply(
                        previous.request_id,
                        KvResponse::LeadershipLost { leader_hint: hint },
                    );
                }
            }
            Err(refusal) => self.refused(request_id, refusal),
        }
    }

    fn start_read<C: Consensus>(
        &mut self,
        node: &mut C,
        request_id: RequestId,
        key: String,
        term: Term,
    ) {
        let token = self.next_read_token;
        self.next_read_token += 1;
        match node.read_index(self.read_ctx(token)) {
            Ok(()) => {
                self.counters.read_index_calls += 1;
                let deadline_tick = self.deadline();
                self.reads_unconfirmed.insert(
                    token,
                    PendingRead {
                        request_id,
                        key,
                        term,
                        deadline_tick,
                    },
                );
            }
            Err(refusal) => self.refused(request_id, refusal),
        }
    }

    fn refused(&mut self, request_id: RequestId, refusal: Refusal) {
        let response = match refusal {
            Refusal::NotLeader { leader_hint } => KvResponse::WrongLeader { leader_hint },
            Refusal::Busy => KvResponse::Busy,
        };
        self.reply(request_id, response);
    }

    fn read_ctx(&self, token: u64) -> Vec<u8> {
        let mut ctx = Vec::with_capacity(24);
        ctx.extend_from_slice(&self.id.to_be_bytes());
        ctx.extend_from_slice(&self.incarnation.to_be_bytes());
        ctx.extend_from_slice(&token.to_be_bytes());
        ctx
    }

    /// The token of a ctx this incarnation issued, or `None` for anyone else's.
    fn parse_read_ctx(&self, ctx: &[u8]) -> Option<u64> {
        let (id, rest) = ctx.split_first_chunk::<8>()?;
        let (incarnation, token) = rest.split_first_chunk::<8>()?;
        let token: [u8; 8] = token.try_into().ok()?;
        (u64::from_be_bytes(*id) == self.id && u64::from_be_bytes(*incarnation) == self.incarnation)
            .then_some(u64::from_be_bytes(token))
    }

    /// Steps 3 and 4 of a Ready: restore `snapshot` if any, apply
    /// `committed_entries` in order, then take the read states
    /// (`(ctx, index)` pairs). Call after the Ready's entries are durable and
    /// its messages sent, before `advance()`. Also notices a change of
    /// leadership (call even when the Ready has nothing for the application).
    pub fn on_ready<C: Consensus>(
        &mut self,
        node: &C,
        snapshot: Option<&Snapshot>,
        committed_entries: &[Entry],
        read_states: &[(Vec<u8>, Index)],
    ) -> Result<(), ServerError> {
        if let Some(snapshot) = snapshot {
            self.install_snapshot(node, snapshot)?;
        }
        for entry in committed_entries {
            self.apply(node, entry)?;
        }
        for (ctx, index) in read_states {
            self.on_read_state(ctx, *index);
        }
        self.serve_confirmed_reads();
        self.observe_leadership(node.leadership());
        Ok(())
    }

    /// A snapshot from the leader replaces the state machine. Waiters for
    /// entries it covers cannot learn their results here: they are told to
    /// retry (the dedup table answers the retry).
    fn install_snapshot<C: Consensus>(
        &mut self,
        node: &C,
        snapshot: &Snapshot,
    ) -> Result<(), ServerError> {
        let index = snapshot.meta.index;
        if index <= self.state.applied_index() {
            return Ok(());
        }
        self.restore_snapshot(index, &snapshot.data)?;
        let covered: Vec<Index> = self.writes.range(..=index).map(|(i, _)| *i).collect();
        let hint = node.leadership().leader_hint;
        for i in covered {
            if let Some(pending) = self.writes.remove(&i) {
                self.reply(
                    pending.request_id,
                    KvResponse::LeadershipLost { leader_hint: hint },
                );
            }
        }
        Ok(())
    }

    fn apply<C: Consensus>(&mut self, node: &C, entry: &Entry) -> Result<(), ServerError> {
        let applied = self.state.apply_entry(entry)?;
        let Some(pending) = self.writes.remove(&entry.index) else {
            return Ok(());
        };
        let response = match applied {
            Some((command, outcome))
                if entry.term == pending.term
                    && command.client_id == pending.client_id
                    && command.seq == pending.seq =>
            {
                match outcome {
                    ApplyOutcome::Applied(result) | ApplyOutcome::Duplicate(result) => {
                        KvResponse::Ok(result)
                    }
                    ApplyOutcome::Stale { .. } => KvResponse::Stale,
                }
            }
            // Another entry took the slot: ours was not committed there.
            _ => KvResponse::LeadershipLost {
                leader_hint: node.leadership().leader_hint,
            },
        };
        self.reply(pending.request_id, response);
        Ok(())
    }

    fn on_read_state(&mut self, ctx: &[u8], index: Index) {
        let Some(token) = self.parse_read_ctx(ctx) else {
            return;
        };
        if let Some(read) = self.reads_unconfirmed.remove(&token) {
            self.reads_confirmed.insert((index, token), read);
        }
    }

    /// Answers confirmed reads whose read index the state machine has reached.
    fn serve_confirmed_reads(&mut self) {
        let applied = self.state.applied_index();
        while let Some(entry) = self.reads_confirmed.first_entry() {
            if entry.key().0 > applied {
                break;
            }
            let read = entry.remove();
            let value = self.state.read(&read.key);
            self.reply(read.request_id, KvResponse::Ok(OpResult::Value(value)));
        }
    }

    /// Fails requests that were started under another term or while this
    /// node was leader, once it no longer is. Confirmed reads stay: their
    /// read index was confirmed while they were outstanding, so serving them
    /// later is still linearizable.
    fn observe_leadership(&mut self, now: Leadership) {
        let still_valid = |term: Term| now.is_leader && term == now.term;
        let hint = now.leader_hint;
        let lost_writes: Vec<Index> = self
            .writes
            .iter()
            .filter(|(_, w)| !still_valid(w.term))
            .map(|(i, _)| *i)
            .collect();
        for index in lost_writes {
            if let Some(write) = self.writes.remove(&index) {
                self.reply(
                    write.request_id,
                    KvResponse::LeadershipLost { leader_hint: hint },
                );
            }
        }
        let lost_reads: Vec<u64> = self
            .reads_unconfirmed
            .iter()
            .filter(|(_, r)| !still_valid(r.term))
            .map(|(t, _)| *t)
            .collect();
        for token in lost_reads {
            if let Some(read) = self.reads_unconfirmed.remove(&token) {
                self.reply(
                    read.request_id,
                    KvResponse::LeadershipLost { leader_hint: hint },
                );
            }
        }
    }

    /// One Raft tick passed: requests past their deadline are answered
    /// `Timeout`, and a loss of leadership is noticed even without a Ready.
    pub fn tick<C: Consensus>(&mut self, node: &C) {
        self.now_ticks += 1;
        let now = self.now_ticks;
        let expired_writes: Vec<Index> = self
            .writes
            .iter()
            .filter(|(_, w)| w.deadline_tick <= now)
            .map(|(i, _)| *i)
            .collect();
        for index in expired_writes {
            if let Some(write) = self.writes.remove(&index) {
                self.reply(write.request_id, KvResponse::Timeout);
            }
        }
        let expired_reads: Vec<u64> = self
            .reads_unconfirmed
            .iter()
            .filter(|(_, r)| r.deadline_tick <= now)
            .map(|(t, _)| *t)
            .collect();
        for token in expired_reads {
            if let Some(read) = self.reads_unconfirmed.remove(&token) {
                self.reply(read.request_id, KvResponse::Timeout);
            }
        }
        let expired_confirmed: Vec<(Index, u64)> = self
            .reads_confirmed
            .iter()
            .filter(|(_, r)| r.deadline_tick <= now)
            .map(|(k, _)| *k)
            .collect();
        for key in expired_confirmed {
            if let Some(read) = self.reads_confirmed.remove(&key) {
                self.reply(read.request_id, KvResponse::Timeout);
            }
        }
        self.observe_leadership(node.leadership());
    }

    /// Call after `advance()` with the size in bytes of the persisted Raft
    /// state (hard state + log). When it has reached `max_raft_state_bytes`,
    /// snapshots the state machine, hands it to Raft to compact the log, and
    /// returns it for the runtime to persist.
    pub fn maybe_snapshot<C: Consensus>(
        &mut self,
        node: &mut C,
        raft_state_bytes: usize,
    ) -> Result<Option<TakenSnapshot>, ServerError> {
        let Some(max_bytes) = self.config.max_raft_state_bytes else {
            return Ok(None);
        };
        let index = self.state.applied_index();
        if raft_state_bytes < max_bytes || index <= self.last_snapshot_index {
            return Ok(None);
        }
        let data = self.state.snapshot();
        node.compact(index, data.clone())
            .map_err(|reason| ServerError::Compact { index, reason })?;
        self.last_snapshot_index = index;
        self.counters.snapshots_taken += 1;
        Ok(Some(TakenSnapshot { index, data }))
    }

    /// The state machine's snapshot now (e.g. for a test or a manual snapshot).
    pub fn snapshot_now(&self) -> TakenSnapshot {
        TakenSnapshot {
            index: self.state.applied_index(),
            data: self.state.snapshot(),
        }
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
