//! The leader's side of log replication (§5.3, §5.4.2, §7): batched and
//! pipelined Appends, snapshot transfer, acknowledgements, the commit
//! rule, proposals and leadership transfer.

use crate::config::ReadMode;
use crate::errors::{ProposeError, StepError};
use crate::message::{entry_size_bytes, Message, MessageBody};
use crate::progress::ProgressState;
use crate::quorum::majority_value;
use crate::raft::{Raft, Role};
use crate::types::{Entry, EntryKind, Index, NodeId, Term};

/// Heartbeat rounds whose send time the leader remembers (lease mode).
const MAX_LEASE_ROUNDS_REMEMBERED: usize = 64;

impl Raft {
    /// Sends the next Append (or snapshot chunk) to `to` if its progress
    /// allows. Returns whether something was sent.
    pub(crate) fn send_append(&mut self, to: NodeId) -> bool {
        self.send_append_or_empty(to, false)
    }

    /// `allow_empty`: send even when there is nothing new, so a follower in
    /// Replicate whose Appends were lost rejects it and gets probed.
    pub(crate) fn send_append_or_empty(&mut self, to: NodeId, allow_empty: bool) -> bool {
        let Some(progress) = self.progress.get(&to) else {
            return false;
        };
        if progress.is_paused() {
            return false;
        }
        let probing = progress.state == ProgressState::Probe;
        let prev_log_index = progress.next_index - 1;
        let Some(prev_log_term) = self.log.term(prev_log_index) else {
            return self.start_snapshot_transfer(to);
        };
        let last_index = self.log.last_index();
        let mut entries = Vec::new();
        if prev_log_index < last_index {
            let mut bytes = 0;
            for entry in self.log.slice(prev_log_index + 1, last_index) {
                let size = entry_size_bytes(entry);
                if !entries.is_empty() && bytes + size > self.cfg.max_message_bytes {
                    break;
                }
                bytes += size;
                entries.push(entry.clone());
            }
        }
        if entries.is_empty() && !probing && !allow_empty {
            return false;
        }
        let count = entries.len();
        let last_sent = prev_log_index + count as u64;
        self.counters.append_messages_sent += 1;
        self.counters.entries_sent += count as u64;
        let leader_commit = self.log.committed;
        self.send(
            to,
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            },
        );
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.sent_entries(last_sent, count);
        }
        true
    }

    /// Sends Appends to `to` until its window is full or it is up to date.
    pub(crate) fn send_appends(&mut self, to: NodeId) {
        while self.send_append(to) {
            if self
                .progress
                .get(&to)
                .is_none_or(|p| p.state != ProgressState::Replicate)
            {
                break;
            }
        }
    }

    pub(crate) fn broadcast_append(&mut self) {
        self.append_broadcast_pending = false;
        for to in self.peer_ids() {
            self.send_appends(to);
        }
    }

    pub(crate) fn broadcast_heartbeat(&mut self) {
        self.read_heartbeat_pending = false;
        // Every heartbeat carries a fresh round: a read registered now gets
        // the next round, so only acknowledgements of heartbeats sent after
        // it can confirm it (an old round's acks prove nothing about now).
        let round = self.read_round;
        self.read_round += 1;
        if self.cfg.read_mode == ReadMode::Lease {
            self.heartbeat_sent_ticks.push_back((round, self.now_ticks));
            if self.heartbeat_sent_ticks.len() > MAX_LEASE_ROUNDS_REMEMBERED {
                self.heartbeat_sent_ticks.pop_front();
            }
        }
        for to in self.peer_ids() {
            let commit = self
                .progress
                .get(&to)
                .map_or(0, |p| p.match_index.min(self.log.committed));
            self.send(
                to,
                MessageBody::Heartbeat {
                    commit,
                    read_round: round,
                },
            );
        }
    }

    /// Sends queued appends and read heartbeats (batched per Ready).
    pub(crate) fn flush(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        if self.append_broadcast_pending {
            self.broadcast_append();
        }
        if self.read_heartbeat_pending {
            self.broadcast_heartbeat();
        }
    }

    pub(crate) fn start_snapshot_transfer(&mut self, to: NodeId) -> bool {
        let Some(index) = self.snapshot.as_ref().map(|s| s.meta.index) else {
            return false;
        };
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(index);
        }
        self.counters.snapshots_sent += 1;
        self.send_snapshot_chunk(to)
    }

    pub(crate) fn send_snapshot_chunk(&mut self, to: NodeId) -> bool {
        let Some(snapshot) = self.snapshot.as_ref() else {
            return false;
        };
        let Some(progress) = self.progress.get_mut(&to) else {
            return false;
        };
        let ProgressState::Snapshot { index } = progress.state else {
            return false;
        };
        if index != snapshot.meta.index {
            // A newer snapshot replaced the one being sent: start over.
            progress.become_snapshot(snapshot.meta.index);
        }
        let total = snapshot.data.len() as u64;
        let offset = progress.snapshot_offset.min(total);
        let end = (offset + self.cfg.snapshot_chunk_bytes as u64).min(total);
        let data = snapshot.data[offset as usize..end as usize].to_vec();
        let meta = snapshot.meta.clone();
        progress.snapshot_chunk_sent = true;
        self.counters.snapshot_chunks_sent += 1;
        self.send(
            to,
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done: end == total,
            },
        );
        true
    }

    pub(crate) fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> Index {
        let index = self.log.last_index() + 1;
        self.log.append(Entry {
            term: self.term,
            index,
            kind,
            data,
        });
        index
    }

    pub(crate) fn propose(&mut self, data: Vec<u8>) -> Result<Index, ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if let Some(to) = self.lead_transferee {
            return Err(ProposeError::TransferInProgress { to });
        }
        let uncommitted = (self.log.last_index() - self.log.committed) as usize;
        if uncommitted >= self.cfg.max_uncommitted_entries {
            return Err(ProposeError::TooManyUncommitted {
                uncommitted,
                limit: self.cfg.max_uncommitted_entries,
            });
        }
        let index = self.append_entry(EntryKind::Normal, data);
        self.maybe_commit();
        self.append_broadcast_pending = true;
        Ok(index)
    }

    /// Voters let the target of TimeoutNow bypass their lease, so this
    /// leader's lease means nothing for the rest of its term.
    pub(crate) fn send_timeout_now(&mut self, to: NodeId) {
        self.lease_revoked = true;
        self.send(to, MessageBody::TimeoutNow);
    }

    pub(crate) fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        if self.role != Role::Leader {
            return Err(ProposeError::NotLeader {
                leader_hint: self.leader,
            });
        }
        if to == self.id {
            self.lead_transferee = None;
            return Ok(());
        }
        let Some(progress) = self.progress.get(&to) else {
            return Err(ProposeError::UnknownNode { id: to });
        };
        let caught_up = progress.match_index == self.log.last_index();
        self.lead_transferee = Some(to);
        self.transfer_elapsed_ticks = 0;
        self.counters.transfers_started += 1;
        if caught_up {
            self.send_timeout_now(to);
        } else {
            self.send_appends(to);
        }
        Ok(())
    }

    /// Advances the leader's commit index to what a majority holds, counting
    /// only entries of the current term (§5.4.2, Figure 8).
    /// With `async_storage_writes` the leader's own vote is its durable
    /// index (thesis §10.2.1), not its last index.
    pub(crate) fn maybe_commit(&mut self) -> bool {
        let mut matches: Vec<Index> = self.progress.values().map(|p| p.match_index).collect();
        matches.push(self.own_match_index());
        let index = majority_value(&mut matches, self.cfg.quorum());
        if index <= self.log.committed {
            return false;
        }
        let current_term = self.log.term(index) == Some(self.term);
        if !current_term && !self.cfg.mutations.break_figure8_commit_rule {
            return false;
        }
        let was_committed_in_term = self.committed_in_current_term();
        self.log.commit_to(index);
        if !was_committed_in_term && self.committed_in_current_term() {
            for (requester, ctx) in std::mem::take(&mut self.reads_awaiting_commit) {
                // Cannot exceed the limit: these were already counted.
                let _ = self.leader_read(requester, ctx);
            }
        }
        true
    }

    /// What the leader counts for itself in the commit quorum.
    pub(crate) fn own_match_index(&self) -> Index {
        let last = self.log.last_index();
        if self.cfg.async_storage_writes && !self.cfg.mutations.count_self_before_persist {
            self.log.persisted.min(last)
        } else {
            last
        }
    }

    pub(crate) fn step_leader(&mut self, m: Message) -> Result<(), StepError> {
        let from = m.from;
        match m.body {
            MessageBody::AppendResponse {
                success,
                index,
                conflict_term,
                conflict_index,
            } => {
                if index > self.log.last_index() {
                    return Err(StepError::Malformed {
                        from,
                        reason: "acknowledged index beyond the leader's log",
                    });
                }
                if let Some(p) = self.progress.get_mut(&from) {
                    p.last_active_tick = Some(self.now_ticks);
                }
                if success {
                    self.handle_append_success(from, index);
                } else {
                    self.handle_append_reject(from, index, conflict_term, conflict_index);
                }
                Ok(())
            }
            MessageBody::HeartbeatResponse { read_round } => {
                self.handle_heartbeat_response(from, read_round)
            }
            MessageBody::SnapshotResponse {
                snapshot_index,
                next_offset,
                done,
            } => self.handle_snapshot_response(from, snapshot_index, next_offset, done),
            MessageBody::ReadIndex { ctx } => {
                // Refused reads are dropped: the follower's client times out.
                if self.leader_read(from, ctx).is_err() {
                    self.counters.reads_dropped += 1;
                }
                Ok(())
            }
            _ => Err(self.unexpected(&m)),
        }
    }

    /// A heartbeat answer proves the follower is alive (check-quorum),
    /// confirms ReadIndex rounds (and the lease), and is the moment to
    /// resume a paused probe or resend a snapshot chunk that may be lost.
    pub(crate) fn handle_heartbeat_response(
        &mut self,
        from: NodeId,
        read_round: u64,
    ) -> Result<(), StepError> {
        if read_round >= self.read_round {
            return Err(StepError::Malformed {
                from,
                reason: "read round never sent",
            });
        }
        let last_index = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return Err(StepError::UnknownSender { from });
        };
        p.last_active_tick = Some(self.now_ticks);
        p.read_round_acked = p.read_round_acked.max(read_round);
        if let Ok(at) = self
            .heartbeat_sent_ticks
            .binary_search_by_key(&read_round, |&(r, _)| r)
        {
            let sent = self.heartbeat_sent_ticks[at].1;
            p.lease_acked_sent_tick = p.lease_acked_sent_tick.max(Some(sent));
        }
        p.probe_sent = false;
        match p.state {
            ProgressState::Snapshot { .. } => {
                self.send_snapshot_chunk(from);
            }
            ProgressState::Replicate | ProgressState::Probe if p.match_index < last_index => {
                // Also recovers a full window whose Appends were all lost.
                if p.inflights.full() {
                    p.inflights.free_first_one();
                }
                if self.send_append_or_empty(from, true) {
                    self.send_appends(from);
                }
            }
            _ => {}
        }
        self.confirm_reads();
        Ok(())
    }

    pub(crate) fn handle_append_success(&mut self, from: NodeId, index: Index) {
        let last_index = self.log.last_index();
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        if !p.maybe_update(index) {
            if p.state == ProgressState::Replicate {
                p.inflights.free_to(index);
            }
            return;
        }
        match p.state {
            ProgressState::Probe => p.become_replicate(),
            ProgressState::Replicate => p.inflights.free_to(index),
            ProgressState::Snapshot {
                index: snapshot_index,
            } => {
                if p.match_index >= snapshot_index {
                    p.become_probe();
                    p.become_replicate();
                }
            }
        }
        let caught_up = p.match_index == last_index;
        self.maybe_commit();
        if self.lead_transferee == Some(from) && caught_up {
            self.send_timeout_now(from);
        }
        self.send_appends(from);
    }

    pub(crate) fn handle_append_reject(
        &mut self,
        from: NodeId,
        rejected: Index,
        conflict_term: Option<Term>,
        conflict_index: Index,
    ) {
        self.counters.append_rejections_received += 1;
        // Fast backtracking: skip the follower's whole conflicting term, or
        // jump to its end if its log is shorter.
        let hint = match conflict_term.and_then(|t| self.log.last_index_of_term(t)) {
            Some(last_of_term) => last_of_term + 1,
            None => conflict_index.max(1),
        };
        let Some(p) = self.progress.get_mut(&from) else {
            return;
        };
        if p.maybe_decrease_to(rejected, hint) {
            self.send_appends(from);
        }
    }

    pub(crate) fn handle_snapshot_response(
        &mut self,
        from: NodeId,
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
    ) -> Result<(), StepError> {
        let total = self.snapshot.as_ref().map_or(0, |s| s.data.len() as u64);
        let Some(p) = self.progress.get_mut(&from) else {
            return Err(StepError::UnknownSender { from });
        };
        p.last_active_tick = Some(self.now_ticks);
        let ProgressState::Snapshot { index } = p.state else {
            return Err(StepError::Unexpected {
                from,
                kind: "SnapshotResponse",
                role: self.role,
                term: self.term,
            });
        };
        if index != snapshot_index {
            return Err(StepError::Unexpected {
                from,
                kind: "SnapshotResponse",
                role: self.role,
                term: self.term,
            });
        }
        if done {
            p.match_index = p.match_index.max(snapshot_index);
            p.become_probe();
            self.maybe_commit();
            self.send_appends(from);
            return Ok(());
        }
        if next_offset > total {
            return Err(StepError::Malformed {
                from,
                reason: "snapshot offset beyond the snapshot",
            });
        }
        p.snapshot_offset = next_offset;
        p.snapshot_chunk_sent = false;
        self.send_snapshot_chunk(from);
        Ok(())
    }
}
