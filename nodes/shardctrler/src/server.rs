//! A controller replica's request handling, runtime-independent (like
//! `kv::server`): the node daemon hosts it on its Raft group.
//!
//! Every request, queries included, is proposed to the log and answered when
//! its entry applies, so an answer reflects every request committed before
//! it (linearizable). A request is answered only if the entry at its log
//! index is the one proposed for it (same term, client and sequence number);
//! if another leader's entry took that slot the clerk hears
//! `LeadershipLost` and retries with the same sequence number, which the
//! state machine deduplicates.

use std::collections::BTreeMap;

use kv::server::{Consensus, Refusal, RequestId, TakenSnapshot};
use raft::{Entry, Index, NodeId, Snapshot, Term};
use serde::{Deserialize, Serialize};

use crate::state_machine::{
    ApplyOutcome, ClientId, CtrlCommand, CtrlOp, CtrlResult, DecodeError, Seq, ShardCtrler,
};

/// A clerk's request; a retry carries the same `client_id` and `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CtrlRequest {
    pub client_id: ClientId,
    pub seq: Seq,
    pub op: CtrlOp,
}

/// A controller replica's answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CtrlResponse {
    /// Applied (or a retry of the applied request): its result.
    Ok(CtrlResult),
    /// Not the leader; not proposed. Definite.
    WrongLeader { leader_hint: Option<NodeId> },
    /// Proposed, then leadership was lost: may still commit. Indefinite.
    LeadershipLost,
    /// Gave up waiting for the commit. Indefinite.
    Timeout,
    /// Too many pending requests, or Raft refused; not proposed. Definite.
    Busy,
    /// Older than the client's latest request, which the client has already
    /// had answered; nothing applied.
    Stale,
}

/// Server settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerConfig {
    /// Snapshot when the persisted Raft state reaches this many bytes. `None`: never.
    pub max_raft_state_bytes: Option<usize>,
    /// A pending request is answered `Timeout` after this many ticks.
    pub pending_timeout_ticks: u64,
    pub max_pending_requests: usize,
    /// Shards of the deployment (configuration 0's size).
    pub shards: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            shards: crate::NSHARDS,
            max_raft_state_bytes: None,
            pending_timeout_ticks: 100,
            max_pending_requests: 10_000,
        }
    }
}

/// A reply to route to the clerk whose request had `request_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    pub request_id: RequestId,
    pub response: CtrlResponse,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("restoring snapshot at index {index}: {source}")]
    Restore { index: Index, source: DecodeError },
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

/// One controller replica.
#[derive(Debug)]
pub struct CtrlServer {
    config: ServerConfig,
    state: ShardCtrler,
    now_ticks: u64,
    pending: BTreeMap<Index, Pending>,
    replies: Vec<Reply>,
    last_snapshot_index: Index,
}

impl CtrlServer {
    pub fn new(config: ServerConfig) -> Self {
        Self {
            state: ShardCtrler::with_shards(config.shards),
            config,
            now_ticks: 0,
            pending: BTreeMap::new(),
            replies: Vec::new(),
            last_snapshot_index: 0,
        }
    }

    pub fn state(&self) -> &ShardCtrler {
        &self.state
    }

    pub fn pending_requests(&self) -> usize {
        self.pending.len()
    }

    /// On start, before the first Ready: the snapshot recovered from disk.
    pub fn restore_snapshot(&mut self, index: Index, data: &[u8]) -> Result<(), ServerError> {
        self.state
            .restore(data)
            .map_err(|source| ServerError::Restore { index, source })?;
        self.last_snapshot_index = index;
        Ok(())
    }

    pub fn take_replies(&mut self) -> Vec<Reply> {
        std::mem::take(&mut self.replies)
    }

    fn reply(&mut self, request_id: RequestId, response: CtrlResponse) {
        self.replies.push(Reply {
            request_id,
            response,
        });
    }

    pub fn handle_request<C: Consensus>(
        &mut self,
        node: &mut C,
        request_id: RequestId,
        request: CtrlRequest,
    ) {
        if self.pending.len() >= self.config.max_pending_requests {
            self.reply(request_id, CtrlResponse::Busy);
            return;
        }
        let leadership = node.leadership();
        if !leadership.is_leader {
            let leader_hint = leadership.leader_hint;
            self.reply(request_id, CtrlResponse::WrongLeader { leader_hint });
            return;
        }
        let command = CtrlCommand {
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
                    self.reply(previous.request_id, CtrlResponse::LeadershipLost);
                }
            }
            Err(Refusal::NotLeader { leader_hint }) => {
                self.reply(request_id, CtrlResponse::WrongLeader { leader_hint })
            }
            Err(Refusal::Busy) => self.reply(request_id, CtrlResponse::Busy),
        }
    }

    /// Step 3 of a Ready: restore `snapshot` if any, apply the committed
    /// entries, answer the requests they carry.
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
                        self.reply(p.request_id, CtrlResponse::LeadershipLost);
                    }
                }
            }
        }
        for entry in committed_entries {
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
                    match outcome {
                        ApplyOutcome::Applied(result) | ApplyOutcome::Duplicate(result) => {
                            CtrlResponse::Ok(result)
                        }
                        ApplyOutcome::Stale { .. } => CtrlResponse::Stale,
                    }
                }
                _ => CtrlResponse::LeadershipLost,
            };
            self.reply(pending.request_id, response);
        }
        self.observe_leadership(node);
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
                self.reply(p.request_id, CtrlResponse::LeadershipLost);
            }
        }
    }

    /// One Raft tick: expire requests, notice lost leadership.
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
                self.reply(p.request_id, CtrlResponse::Timeout);
            }
        }
        self.observe_leadership(node);
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
mod tests {
    use super::*;
    use kv::server::Leadership;
    use raft::EntryKind;
    use std::collections::BTreeMap;

    /// A fake Raft node: records proposals; leadership set by the test.
    struct Fake {
        leadership: Leadership,
        log: Vec<Vec<u8>>,
    }

    impl Consensus for Fake {
        fn propose(&mut self, data: Vec<u8>) -> Result<Index, Refusal> {
            if !self.leadership.is_leader {
                return Err(Refusal::NotLeader { leader_hint: None });
            }
            self.log.push(data);
            Ok(self.log.len() as Index)
        }
        fn read_index(&mut self, _ctx: Vec<u8>) -> Result<(), Refusal> {
            Err(Refusal::Busy)
        }
        fn compact(&mut self, _index: Index, _data: Vec<u8>) -> Result<(), String> {
            Ok(())
        }
        fn leadership(&self) -> Leadership {
            self.leadership
        }
    }

    fn leader(term: Term) -> Fake {
        Fake {
            leadership: Leadership {
                term,
                is_leader: true,
                leader_hint: Some(1),
            },
            log: Vec::new(),
        }
    }

    fn entry(term: Term, index: Index, data: &[u8]) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: data.to_vec(),
        }
    }

    fn join(gid: u64) -> CtrlOp {
        CtrlOp::Join {
            groups: BTreeMap::from([(gid, vec![format!("s{gid}")])]),
        }
    }

    #[test]
    fn requests_are_answered_when_applied_and_retries_are_deduplicated() {
        let mut node = leader(1);
        let mut server = CtrlServer::new(ServerConfig::default());
        let request = CtrlRequest {
            client_id: 9,
            seq: 1,
            op: join(1),
        };
        server.handle_request(&mut node, 10, request.clone());
        server.handle_request(&mut node, 11, request);
        assert!(server.take_replies().is_empty());
        let entries: Vec<Entry> = node
            .log
            .iter()
            .enumerate()
            .map(|(i, d)| entry(1, i as Index + 1, d))
            .collect();
        server.on_ready(&node, None, &entries).unwrap();
        let replies = server.take_replies();
        assert_eq!(replies.len(), 2);
        for reply in &replies {
            assert_eq!(reply.response, CtrlResponse::Ok(CtrlResult::Done));
        }
        // Applied once: one configuration after the empty one.
        assert_eq!(server.state().latest().num, 1);
    }

    #[test]
    fn a_follower_refuses_and_a_lost_slot_is_indefinite() {
        let mut follower = leader(1);
        follower.leadership.is_leader = false;
        let mut server = CtrlServer::new(ServerConfig::default());
        let query = CtrlRequest {
            client_id: 1,
            seq: 1,
            op: CtrlOp::Query { num: None },
        };
        server.handle_request(&mut follower, 1, query.clone());
        assert!(matches!(
            server.take_replies()[0].response,
            CtrlResponse::WrongLeader { .. }
        ));
        let mut node = leader(1);
        server.handle_request(&mut node, 2, query);
        // Another leader's entry (term 2) took index 1.
        node.leadership.term = 2;
        let other = CtrlCommand {
            client_id: 5,
            seq: 1,
            op: join(3),
        }
        .encode();
        server
            .on_ready(&node, None, &[entry(2, 1, &other)])
            .unwrap();
        assert_eq!(
            server.take_replies()[0].response,
            CtrlResponse::LeadershipLost
        );
    }

    #[test]
    fn snapshots_restore_the_configurations() {
        let mut node = leader(1);
        let mut server = CtrlServer::new(ServerConfig {
            max_raft_state_bytes: Some(1),
            ..ServerConfig::default()
        });
        let data = CtrlCommand {
            client_id: 1,
            seq: 1,
            op: join(4),
        }
        .encode();
        server.on_ready(&node, None, &[entry(1, 1, &data)]).unwrap();
        let taken = server.maybe_snapshot(&mut node, 100).unwrap().unwrap();
        assert_eq!(taken.index, 1);
        let mut restored = CtrlServer::new(ServerConfig::default());
        restored.restore_snapshot(taken.index, &taken.data).unwrap();
        assert_eq!(restored.state().latest(), server.state().latest());
        assert!(restored.restore_snapshot(2, b"junk").is_err());
    }
}
