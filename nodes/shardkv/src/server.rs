//! The replica server's logic, runtime-independent (like `kv::server`).
//!
//! The runtime owns the Raft node, storage, transport and clock and calls:
//!
//! * [`ShardKvServer::handle_request`] per clerk request;
//! * [`ShardKvServer::on_ready`] with a Ready's snapshot and committed
//!   entries (after persisting it and sending its messages, before `advance()`);
//! * [`ShardKvServer::tick`] per Raft tick (timeouts, lost leadership, and on
//!   the leader every `poll_interval_ticks` the next round of [`Outbound`]s);
//! * [`ShardKvServer::on_config`], [`ShardKvServer::on_pull_reply`],
//!   [`ShardKvServer::on_delete_reply`] with answers to those outbounds;
//! * [`ShardKvServer::handle_pull`], [`ShardKvServer::handle_delete`] for
//!   other groups' requests;
//! * [`ShardKvServer::maybe_snapshot`] after `advance()`;
//!
//! then drains [`ShardKvServer::take_replies`] and [`ShardKvServer::take_outbound`].
//!
//! Internal requests (pull, delete, next configuration) are not tracked
//! per request: the leader re-sends them every poll round until the log
//! shows the effect, and every log command is idempotent.
//!
//! Client operations, gets included, go through the log, and whether the
//! group serves the key's shard is decided when the entry applies: a
//! request that raced with a configuration change is answered from the
//! state at its log position, never from a stale check.

use std::collections::BTreeMap;

use kv::server::{Consensus, Refusal, RequestId, TakenSnapshot};
use kv::{ClientId, Seq};
use raft::{Entry, Index, NodeId, Snapshot, Term};
use shardctrler::{Config, Gid, ShardId};

use crate::command::{
    DeleteReply, DeleteRequest, GroupCommand, PullReply, PullRequest, ShardKvRequest,
    ShardKvResponse,
};
use crate::state_machine::{ApplyResult, ShardKvState, ShardStatus};

/// Server settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Snapshot when the persisted Raft state reaches this many bytes (the
    /// lab's maxraftstate). `None`: never.
    pub max_raft_state_bytes: Option<usize>,
    /// Leader polls the controller and re-sends pulls/deletes this often
    /// (the lab: about every 100 ms).
    pub poll_interval_ticks: u64,
    /// A pending client request is answered `Timeout` after this many ticks.
    pub pending_timeout_ticks: u64,
    pub max_pending_requests: usize,
    /// DANGER, tests only: serve shards after handing them over.
    pub keep_serving_handed_over_shards: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_raft_state_bytes: None,
            poll_interval_ticks: 2,
            pending_timeout_ticks: 40,
            max_pending_requests: 10_000,
            keep_serving_handed_over_shards: false,
        }
    }
}

/// A message the leader wants sent on its behalf.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outbound {
    /// Ask the controller for configuration `num`; hand the answer to
    /// [`ShardKvServer::on_config`].
    QueryConfig { num: u64 },
    /// Send to the servers of group `gid`; answers go to
    /// [`ShardKvServer::on_pull_reply`].
    Pull {
        gid: Gid,
        servers: Vec<String>,
        request: PullRequest,
    },
    /// Send to the servers of group `gid`; answers go to
    /// [`ShardKvServer::on_delete_reply`].
    Delete {
        gid: Gid,
        servers: Vec<String>,
        request: DeleteRequest,
    },
}

/// A reply to route to the clerk whose request had `request_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub request_id: RequestId,
    pub response: ShardKvResponse,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("restoring snapshot at index {index}: {source}")]
    Restore {
        index: Index,
        source: crate::command::DecodeError,
    },
    #[error("raft refused to compact at index {index}: {reason}")]
    Compact { index: Index, reason: String },
}

#[derive(Clone, Debug)]
struct Pending {
    request_id: RequestId,
    term: Term,
    client_id: ClientId,
    seq: Seq,
    deadline_tick: u64,
}

/// One replica of a group.
pub struct ShardKvServer {
    id: NodeId,
    config: ServerConfig,
    state: ShardKvState,
    now_ticks: u64,
    last_poll_tick: u64,
    pending: BTreeMap<Index, Pending>,
    replies: Vec<Reply>,
    outbound: Vec<Outbound>,
    last_snapshot_index: Index,
}

impl std::fmt::Debug for ShardKvServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardKvServer")
            .field("id", &self.id)
            .field("gid", &self.state.gid())
            .field("config", &self.state.config().num)
            .field("applied_index", &self.state.applied_index())
            .finish()
    }
}

impl ShardKvServer {
    pub fn new(id: NodeId, gid: Gid, config: ServerConfig) -> Self {
        let mut state = ShardKvState::new(gid);
        state.set_keep_serving_handed_over_shards(config.keep_serving_handed_over_shards);
        Self {
            id,
            config,
            state,
            now_ticks: 0,
            last_poll_tick: 0,
            pending: BTreeMap::new(),
            replies: Vec::new(),
            outbound: Vec::new(),
            last_snapshot_index: 0,
        }
    }

    /// On start, before the first Ready: the snapshot recovered from disk.
    pub fn restore_snapshot(&mut self, index: Index, data: &[u8]) -> Result<(), ServerError> {
        self.state
            .restore(data)
            .map_err(|source| ServerError::Restore { index, source })?;
        self.last_snapshot_index = index;
        Ok(())
    }

    pub fn id(&self) -> NodeId {
        self.id
    }
    pub fn state(&self) -> &ShardKvState {
        &self.state
    }
    pub fn take_replies(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.replies)
    }
    pub fn take_outbound(&mut self) -> Vec<Outbound> {
        std::mem::take(&mut self.outbound)
    }

    fn reply(&mut self, request_id: RequestId, response: ShardKvResponse) {
        self.replies.push(Reply {
            request_id,
            response,
        });
    }

    pub fn handle_request<C: Consensus>(
        &mut self,
        node: &mut C,
        request_id: RequestId,
        request: ShardKvRequest,
    ) {
        if let Err(invalid) = request.op.validate() {
            self.reply(request_id, ShardKvResponse::Invalid(invalid.to_string()));
            return;
        }
        // Early refusal only; the authoritative check is at apply time.
        if !self
            .state
            .can_serve(self.state.config().shard_of(request.op.key()))
        {
            self.reply(request_id, ShardKvResponse::WrongGroup);
            return;
        }
        if self.pending.len() >= self.config.max_pending_requests {
            self.reply(request_id, ShardKvResponse::Busy);
            return;
        }
        let leadership = node.leadership();
        if !leadership.is_leader {
            let leader_hint = leadership.leader_hint;
            self.reply(request_id, ShardKvResponse::WrongLeader { leader_hint });
            return;
        }
        let command = GroupCommand::Client {
            client_id: request.client_id,
            seq: request.seq,
            op: request.op,
        };
        match node.propose(command.encode()) {
            Ok(index) => {
                let pending = Pending {
                    request_id,
                    term: leadership.term,
                    client_id: request.client_id,
                    seq: request.seq,
                    deadline_tick: self.now_ticks + self.config.pending_timeout_ticks,
                };
                if let Some(previous) = self.pending.insert(index, pending) {
                    self.reply(previous.request_id, ShardKvResponse::LeadershipLost);
                }
            }
            Err(Refusal::NotLeader { leader_hint }) => {
                self.reply(request_id, ShardKvResponse::WrongLeader { leader_hint })
            }
            Err(Refusal::Busy) => self.reply(request_id, ShardKvResponse::Busy),
        }
    }

    /// Steps 3 of a Ready: restore `snapshot` if any, apply the committed entries.
    pub fn on_ready<C: Consensus>(
        &mut self,
        node: &C,
        snapshot: Option<&Snapshot>,
        committed_entries: &[Entry],
    ) -> Result<(), ServerError> {
        if let Some(snapshot) = snapshot {
            if snapshot.meta.index > self.state.applied_index() {
                self.restore_snapshot(snapshot.meta.index, &snapshot.data)?;
                let covered: Vec<Index> = self
                    .pending
                    .range(..=snapshot.meta.index)
                    .map(|(i, _)| *i)
                    .collect();
                for index in covered {
                    if let Some(p) = self.pending.remove(&index) {
                        self.reply(p.request_id, ShardKvResponse::LeadershipLost);
                    }
                }
            }
        }
        let mut shards_changed = false;
        for entry in committed_entries {
            if entry.index <= self.state.applied_index() {
                continue;
            }
            let applied = self.state.apply_entry(entry.index, &entry.data);
            shards_changed |= matches!(applied, Some((_, ApplyResult::Internal(true))));
            let Some(pending) = self.pending.remove(&entry.index) else {
                continue;
            };
            let response = match applied {
                Some((GroupCommand::Client { client_id, seq, .. }, result))
                    if entry.term == pending.term
                        && client_id == pending.client_id
                        && seq == pending.seq =>
                {
                    match result {
                        ApplyResult::Client(value) => ShardKvResponse::Ok(value),
                        ApplyResult::WrongGroup => ShardKvResponse::WrongGroup,
                        _ => ShardKvResponse::Invalid("operation not offered by shardkv".into()),
                    }
                }
                _ => ShardKvResponse::LeadershipLost,
            };
            self.reply(pending.request_id, response);
        }
        self.observe_leadership(node);
        // A configuration or shard change starts the next step (pull,
        // delete, next configuration) now rather than at the next poll:
        // each migration takes several such steps.
        if shards_changed && node.leadership().is_leader {
            self.last_poll_tick = self.now_ticks;
            self.poll();
        }
        Ok(())
    }

    fn observe_leadership<C: Consensus>(&mut self, node: &C) {
        let now = node.leadership();
        let lost: Vec<Index> = self
            .pending
            .iter()
            .filter(|(_, p)| !(now.is_leader && p.term == now.term))
            .map(|(i, _)| *i)
            .collect();
        for index in lost {
            if let Some(p) = self.pending.remove(&index) {
                self.reply(p.request_id, ShardKvResponse::LeadershipLost);
            }
        }
    }

    /// One Raft tick: expire requests, notice lost leadership, and on the
    /// leader start the next poll round.
    pub fn tick<C: Consensus>(&mut self, node: &C) {
        self.now_ticks += 1;
        let now = self.now_ticks;
        let expired: Vec<Index> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline_tick <= now)
            .map(|(i, _)| *i)
            .collect();
        for index in expired {
            if let Some(p) = self.pending.remove(&index) {
                self.reply(p.request_id, ShardKvResponse::Timeout);
            }
        }
        self.observe_leadership(node);
        if node.leadership().is_leader
            && now.saturating_sub(self.last_poll_tick) >= self.config.poll_interval_ticks
        {
            self.last_poll_tick = now;
            self.poll();
        }
    }

    /// What the leader asks for this round: the next configuration once
    /// settled; the data of shards still to receive; deletion of shards
    /// received but not yet confirmed deleted at their previous owner.
    fn poll(&mut self) {
        let state = &self.state;
        let config_num = state.config().num;
        if state.settled() {
            self.outbound.push(Outbound::QueryConfig {
                num: config_num + 1,
            });
        }
        let previous = state.previous_config();
        let ask = |shard: ShardId| {
            let gid = previous.owner(shard);
            let servers = previous.groups.get(&gid).cloned().unwrap_or_default();
            (gid, servers)
        };
        for shard in state.shards_in(ShardStatus::Receiving) {
            let (gid, servers) = ask(shard);
            self.outbound.push(Outbound::Pull {
                gid,
                servers,
                request: PullRequest { config_num, shard },
            });
        }
        for shard in state.shards_in(ShardStatus::Confirming) {
            let (gid, servers) = ask(shard);
            self.outbound.push(Outbound::Delete {
                gid,
                servers,
                request: DeleteRequest { config_num, shard },
            });
        }
    }

    fn propose_if_leader<C: Consensus>(&mut self, node: &mut C, command: GroupCommand) {
        if node.leadership().is_leader {
            // A refusal is retried by the next poll round.
            let _ = node.propose(command.encode());
        }
    }

    /// The controller's answer to [`Outbound::QueryConfig`].
    pub fn on_config<C: Consensus>(&mut self, node: &mut C, config: Config) {
        if config.num == self.state.config().num + 1 && self.state.settled() {
            self.propose_if_leader(node, GroupCommand::Config(config));
        }
    }

    /// Another group asks for a shard this one handed over. Any replica that
    /// has applied the hand-over answers: the copy is frozen from then on.
    pub fn handle_pull(&self, request: &PullRequest) -> PullReply {
        match self.state.handed_over(request.config_num, request.shard) {
            Some(data) => PullReply::Data {
                config_num: request.config_num,
                shard: request.shard,
                data: data.clone(),
            },
            None => PullReply::NotReady,
        }
    }

    pub fn on_pull_reply<C: Consensus>(&mut self, node: &mut C, reply: PullReply) {
        let PullReply::Data {
            config_num,
            shard,
            data,
        } = reply
        else {
            return;
        };
        if self.state.config().num == config_num
            && self.state.status(shard) == Some(ShardStatus::Receiving)
        {
            let command = GroupCommand::InsertShard {
                config_num,
                shard,
                data,
            };
            self.propose_if_leader(node, command);
        }
    }

    /// The new owner of a shard this group handed over has installed it.
    /// Answers `Deleted` once the deletion is in this replica's applied
    /// state; otherwise the leader proposes it and the asker retries.
    pub fn handle_delete<C: Consensus>(
        &mut self,
        node: &mut C,
        request: &DeleteRequest,
    ) -> DeleteReply {
        let config_num = self.state.config().num;
        let still_held = self.state.status(request.shard) == Some(ShardStatus::HandingOver);
        if config_num > request.config_num || (config_num == request.config_num && !still_held) {
            return DeleteReply::Deleted {
                config_num: request.config_num,
                shard: request.shard,
            };
        }
        if config_num == request.config_num {
            let command = GroupCommand::DeleteShard {
                config_num,
                shard: request.shard,
            };
            self.propose_if_leader(node, command);
        }
        DeleteReply::NotYet
    }

    pub fn on_delete_reply<C: Consensus>(&mut self, node: &mut C, reply: DeleteReply) {
        let DeleteReply::Deleted { config_num, shard } = reply else {
            return;
        };
        if self.state.config().num == config_num
            && self.state.status(shard) == Some(ShardStatus::Confirming)
        {
            self.propose_if_leader(node, GroupCommand::ConfirmDeleted { config_num, shard });
        }
    }

    /// After `advance()`, with the persisted Raft state's size: snapshot and
    /// compact when it reached `max_raft_state_bytes`.
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
        Ok(Some(TakenSnapshot { index, data }))
    }
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
