//! The shard controller as Lab 4 runs it: a Raft group of servers hosting
//! `shardctrler::ShardCtrler`, and a sans-IO clerk that finds the leader,
//! retries, and keeps one sequence number per request so a retried Join,
//! Leave or Move is applied once (the controller's session table).
//!
//! Every request, queries included, goes through the log, as the lab's
//! shardmaster does: a query answered by a leader of the current term is
//! linearizable.

use std::collections::BTreeMap;

use raft::{Index, NodeId, ProposeError, Ready, Role, Snapshot, Term};
use shardctrler::{ClientId, CtrlCommand, CtrlOp, CtrlResult, Seq, ShardCtrler};

use sim::host::{Addr, Node, SnapshotTaken};

/// A request is answered `Timeout` after this many ticks without its entry
/// applying (the clerk then tries another server).
const PENDING_TIMEOUT_TICKS: u64 = 40;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtrlRequest {
    pub client_id: ClientId,
    pub seq: Seq,
    pub op: CtrlOp,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtrlResponse {
    Ok(CtrlResult),
    WrongLeader {
        leader_hint: Option<NodeId>,
    },
    /// Leadership changed before the entry applied: the outcome is unknown
    /// to this server; the clerk retries elsewhere with the same seq.
    LeadershipLost,
    Timeout,
}

/// What a controller server sends: a reply to the request tagged `attempt`.
pub trait CtrlMessages: Sized {
    fn ctrl_reply(attempt: u64, response: CtrlResponse) -> Self;
}

struct Pending {
    from: Addr,
    attempt: u64,
    term: Term,
    client_id: ClientId,
    seq: Seq,
    deadline_tick: u64,
}

/// One controller replica.
pub struct CtrlServer {
    state: ShardCtrler,
    max_raft_state_bytes: Option<usize>,
    last_snapshot_index: Index,
    now_ticks: u64,
    pending: BTreeMap<Index, Pending>,
}

impl CtrlServer {
    pub fn new(
        max_raft_state_bytes: Option<usize>,
        snapshot: Option<&Snapshot>,
    ) -> Result<Self, String> {
        let mut server = Self {
            state: ShardCtrler::new(),
            max_raft_state_bytes,
            last_snapshot_index: 0,
            now_ticks: 0,
            pending: BTreeMap::new(),
        };
        if let Some(snapshot) = snapshot {
            server.restore(snapshot)?;
        }
        Ok(server)
    }

    fn restore(&mut self, snapshot: &Snapshot) -> Result<(), String> {
        self.state
            .restore(&snapshot.data)
            .map_err(|e| format!("controller snapshot at {}: {e}", snapshot.meta.index))?;
        self.last_snapshot_index = snapshot.meta.index;
        Ok(())
    }

    pub fn state(&self) -> &ShardCtrler {
        &self.state
    }

    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// Whether this server proposed a request of `client_id` and waits for it.
    pub fn is_waiting_for(&self, client_id: ClientId) -> bool {
        self.pending.values().any(|p| p.client_id == client_id)
    }

    pub fn receive<M: CtrlMessages>(
        &mut self,
        node: &mut Node<'_, M>,
        from: Addr,
        attempt: u64,
        request: CtrlRequest,
    ) {
        let status = node.raw.status();
        if status.role != Role::Leader {
            let response = CtrlResponse::WrongLeader {
                leader_hint: status.leader,
            };
            node.send(from, M::ctrl_reply(attempt, response));
            return;
        }
        let command = CtrlCommand {
            client_id: request.client_id,
            seq: request.seq,
            op: request.op,
        };
        match node.raw.propose(command.encode()) {
            Ok(index) => {
                let pending = Pending {
                    from,
                    attempt,
                    term: status.term,
                    client_id: request.client_id,
                    seq: request.seq,
                    deadline_tick: self.now_ticks + PENDING_TIMEOUT_TICKS,
                };
                if let Some(previous) = self.pending.insert(index, pending) {
                    let lost = M::ctrl_reply(previous.attempt, CtrlResponse::LeadershipLost);
                    node.send(previous.from, lost);
                }
            }
            Err(ProposeError::NotLeader { leader_hint }) => node.send(
                from,
                M::ctrl_reply(attempt, CtrlResponse::WrongLeader { leader_hint }),
            ),
            Err(_) => node.send(from, M::ctrl_reply(attempt, CtrlResponse::LeadershipLost)),
        }
    }

    fn fail<M: CtrlMessages>(
        &mut self,
        node: &mut Node<'_, M>,
        index: Index,
        response: CtrlResponse,
    ) {
        if let Some(p) = self.pending.remove(&index) {
            node.send(p.from, M::ctrl_reply(p.attempt, response));
        }
    }

    pub fn apply<M: CtrlMessages>(
        &mut self,
        node: &mut Node<'_, M>,
        ready: &Ready,
    ) -> Result<(), String> {
        if let Some(snapshot) = ready
            .snapshot
            .as_ref()
            .filter(|s| s.meta.index > self.state.applied_index())
        {
            self.restore(snapshot)?;
            let covered: Vec<Index> = self
                .pending
                .range(..=snapshot.meta.index)
                .map(|(i, _)| *i)
                .collect();
            for index in covered {
                self.fail(node, index, CtrlResponse::LeadershipLost);
            }
        }
        for entry in &ready.committed_entries {
            if entry.index <= self.state.applied_index() {
                continue;
            }
            let applied = self.state.apply_entry(entry.index, &entry.data);
            let Some(pending) = self.pending.remove(&entry.index) else {
                continue;
            };
            let response = match applied {
                Some((command, outcome))
                    if entry.term == pending.term
                        && command.client_id == pending.client_id
                        && command.seq == pending.seq =>
                {
                    match outcome.result() {
                        Some(result) => CtrlResponse::Ok(result.clone()),
                        None => CtrlResponse::LeadershipLost,
                    }
                }
                _ => CtrlResponse::LeadershipLost,
            };
            node.send(pending.from, M::ctrl_reply(pending.attempt, response));
        }
        self.observe_leadership(node);
        Ok(())
    }

    fn observe_leadership<M: CtrlMessages>(&mut self, node: &mut Node<'_, M>) {
        let status = node.raw.status();
        let lost: Vec<Index> = self
            .pending
            .iter()
            .filter(|(_, p)| !(status.role == Role::Leader && p.term == status.term))
            .map(|(i, _)| *i)
            .collect();
        for index in lost {
            self.fail(node, index, CtrlResponse::LeadershipLost);
        }
    }

    pub fn tick<M: CtrlMessages>(&mut self, node: &mut Node<'_, M>) {
        self.now_ticks += 1;
        let now = self.now_ticks;
        let expired: Vec<Index> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_tick <= now)
            .map(|(i, _)| *i)
            .collect();
        for index in expired {
            self.fail(node, index, CtrlResponse::Timeout);
        }
        self.observe_leadership(node);
    }

    pub fn maybe_snapshot<M>(
        &mut self,
        node: &mut Node<'_, M>,
        raft_state_bytes: usize,
    ) -> Result<Option<SnapshotTaken>, String> {
        let Some(max_bytes) = self.max_raft_state_bytes else {
            return Ok(None);
        };
        let index = self.state.applied_index();
        if raft_state_bytes < max_bytes || index <= self.last_snapshot_index {
            return Ok(None);
        }
        let data = self.state.snapshot();
        node.raw
            .compact(index, data.clone())
            .map_err(|e| format!("controller compaction at {index}: {e}"))?;
        self.last_snapshot_index = index;
        Ok(Some(SnapshotTaken { index, data }))
    }
}

/// What the runtime should do for a [`CtrlClerk`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtrlAction {
    /// Send `request` to controller server `to`; call
    /// [`CtrlClerk::on_timeout`] if no answer comes in time.
    Send {
        to: NodeId,
        attempt: u64,
        request: CtrlRequest,
    },
    /// Pause briefly, then [`CtrlClerk::resend`].
    Backoff {
        attempt: u64,
    },
    Done(CtrlResult),
    Ignored,
}

/// A controller client with one request in flight: sticks to the server
/// that answered last, follows leader hints, moves on after refusals and
/// timeouts, and never gives up (as the lab's clerk).
#[derive(Clone, Debug)]
pub struct CtrlClerk {
    client_id: ClientId,
    seq: Seq,
    servers: Vec<NodeId>,
    leader: usize,
    attempt: u64,
    current: Option<CtrlOp>,
}

impl CtrlClerk {
    pub fn new(client_id: ClientId, servers: Vec<NodeId>) -> Self {
        assert!(!servers.is_empty(), "a controller clerk needs servers");
        Self {
            client_id,
            seq: 0,
            servers,
            leader: 0,
            attempt: 0,
            current: None,
        }
    }

    pub fn client_id(&self) -> ClientId {
        self.client_id
    }

    /// The attempt number of the last action handed out.
    pub fn attempt(&self) -> u64 {
        self.attempt
    }

    pub fn busy(&self) -> bool {
        self.current.is_some()
    }

    /// Starts `op` with the next sequence number (the clerk must be idle).
    pub fn begin(&mut self, op: CtrlOp) -> CtrlAction {
        assert!(
            self.current.is_none(),
            "controller clerk {} busy",
            self.client_id
        );
        self.seq += 1;
        self.current = Some(op);
        self.send()
    }

    fn send(&mut self) -> CtrlAction {
        let Some(op) = self.current.clone() else {
            return CtrlAction::Ignored;
        };
        self.attempt += 1;
        CtrlAction::Send {
            to: self.servers[self.leader % self.servers.len()],
            attempt: self.attempt,
            request: CtrlRequest {
                client_id: self.client_id,
                seq: self.seq,
                op,
            },
        }
    }

    fn current_attempt(&self, attempt: u64) -> bool {
        self.current.is_some() && attempt == self.attempt
    }

    fn next_server(&mut self) {
        self.leader = (self.leader + 1) % self.servers.len();
    }

    pub fn on_response(&mut self, attempt: u64, response: CtrlResponse) -> CtrlAction {
        if !self.current_attempt(attempt) {
            return CtrlAction::Ignored;
        }
        match response {
            CtrlResponse::Ok(result) => {
                self.current = None;
                CtrlAction::Done(result)
            }
            CtrlResponse::WrongLeader { leader_hint } => {
                match leader_hint.and_then(|h| self.servers.iter().position(|s| *s == h)) {
                    Some(index) if index != self.leader % self.servers.len() => {
                        self.leader = index;
                        self.send()
                    }
                    _ => {
                        self.next_server();
                        self.attempt += 1;
                        CtrlAction::Backoff {
                            attempt: self.attempt,
                        }
                    }
                }
            }
            CtrlResponse::LeadershipLost | CtrlResponse::Timeout => {
                self.next_server();
                self.attempt += 1;
                CtrlAction::Backoff {
                    attempt: self.attempt,
                }
            }
        }
    }

    pub fn on_timeout(&mut self, attempt: u64) -> CtrlAction {
        if !self.current_attempt(attempt) {
            return CtrlAction::Ignored;
        }
        self.next_server();
        self.send()
    }

    pub fn resend(&mut self, attempt: u64) -> CtrlAction {
        if !self.current_attempt(attempt) {
            return CtrlAction::Ignored;
        }
        self.send()
    }
}
