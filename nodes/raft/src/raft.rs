//! Roles and message handling: the Raft protocol proper. `RawNode` wraps
//! this with the Ready/advance handshake; this file never does I/O either.

use crate::config::{Config, ConfigError, ReadMode};
use crate::errors::{CompactError, ProposeError, StepError};
use crate::log::RaftLog;
use crate::message::{entry_size_bytes, Message, MessageBody, MAX_SENSIBLE_INDEX};
use crate::prng::Prng;
use crate::progress::{Progress, ProgressState};
use crate::quorum::majority_value;
use crate::types::{
    Entry, EntryKind, HardState, Index, NodeId, Restored, Snapshot, SnapshotMeta, Term,
};
use std::collections::{BTreeMap, VecDeque};

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Follower,
    /// Asking for pre-votes (§9.6) without having raised its term.
    PreCandidate,
    Candidate,
    Leader,
}

/// Monotonic counts of what happened, for tests, metrics and the simulator.
/// Every dropped message increments exactly one `dropped_*` field.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    pub messages_received: u64,
    pub messages_sent: u64,
    pub dropped_wrong_recipient: u64,
    pub dropped_unknown_sender: u64,
    pub dropped_stale_term: u64,
    pub dropped_malformed: u64,
    pub dropped_unexpected: u64,
    pub dropped_conflicting_committed: u64,
    pub dropped_snapshot_chunks: u64,
    pub votes_ignored_in_lease: u64,
    pub pre_votes_started: u64,
    pub elections_started: u64,
    pub leaderships_won: u64,
    pub check_quorum_step_downs: u64,
    pub append_messages_sent: u64,
    pub entries_sent: u64,
    pub append_rejections_sent: u64,
    pub append_rejections_received: u64,
    pub snapshots_sent: u64,
    pub snapshot_chunks_sent: u64,
    pub snapshots_installed: u64,
    pub transfers_started: u64,
    pub transfers_aborted: u64,
    pub reads_dropped: u64,
}

/// The answer to a read request: the read may be served from the state
/// machine once it has applied everything up to `index`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadState {
    pub ctx: Vec<u8>,
    pub index: Index,
}

/// A ReadIndex request waiting for a heartbeat round to confirm leadership.
#[derive(Clone, Debug)]
struct PendingRead {
    round: u64,
    index: Index,
    ctx: Vec<u8>,
    requester: NodeId,
}

/// An InstallSnapshot transfer being assembled on a follower.
#[derive(Clone, Debug)]
struct IncomingSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

pub(crate) struct Raft {
    pub(crate) cfg: Config,
    pub(crate) id: NodeId,
    pub(crate) term: Term,
    pub(crate) vote: Option<NodeId>,
    pub(crate) leader: Option<NodeId>,
    pub(crate) role: Role,
    pub(crate) log: RaftLog,
    /// Progress of every voter except this node.
    pub(crate) progress: BTreeMap<NodeId, Progress>,
    votes: BTreeMap<NodeId, bool>,
    election_elapsed_ticks: u32,
    heartbeat_elapsed_ticks: u32,
    randomized_election_timeout_ticks: u32,
    pub(crate) lead_transferee: Option<NodeId>,
    transfer_elapsed_ticks: u32,
    rng: Prng,
    pub(crate) messages: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    /// The ReadIndex round the next heartbeat carries (leader only).
    read_round: u64,
    pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    reads_awaiting_commit: Vec<(NodeId, Vec<u8>)>,
    read_heartbeat_pending: bool,
    /// Proposals appended since the last flush: send them in one batch.
    pub(crate) append_broadcast_pending: bool,
    /// The latest snapshot: taken here, installed from a leader, or restored.
    snapshot: Option<Snapshot>,
    incoming_snapshot: Option<IncomingSnapshot>,
    pub(crate) counters: Counters,
}

impl Raft {
    pub(crate) fn new(cfg: Config, restored: Restored) -> Result<Raft, ConfigError> {
        cfg.validate()?;
        let bad = |reason: String| Err(ConfigError::Restored { reason });
        let Restored {
            hard_state,
            snapshot,
            entries,
            snapshot_data,
        } = restored;
        let (snapshot_index, snapshot_term) =
            snapshot.as_ref().map_or((0, 0), |m| (m.index, m.term));
        if snapshot_term > hard_state.term {
            return bad(format!(
                "snapshot term {snapshot_term} above hard state term {}",
                hard_state.term
            ));
        }
        let entries: Vec<Entry> = entries
            .into_iter()
            .filter(|e| e.index > snapshot_index)
            .collect();
        let mut previous_term = snapshot_term;
        for (offset, entry) in entries.iter().enumerate() {
            let expected = snapshot_index + 1 + offset as u64;
            if entry.index != expected {
                return bad(format!(
                    "entry index {} where {expected} was expected",
                    entry.index
                ));
            }
            if entry.term < previous_term || entry.term > hard_state.term {
                return bad(format!(
                    "entry {} has term {} (previous {previous_term}, hard state term {})",
                    entry.index, entry.term, hard_state.term
                ));
            }
            previous_term = entry.term;
        }
        let last_index = snapshot_index + entries.len() as u64;
        let committed = hard_state.commit.max(snapshot_index);
        if committed > last_index {
            return bad(format!(
                "commit {committed} beyond last stored index {last_index}"
            ));
        }
        if let Some(vote) = hard_state.vote {
            if !cfg.voters.contains(&vote) {
                return bad(format!("voted for {vote}, which is not a voter"));
            }
        }
        let progress = cfg
            .voters
            .iter()
            .filter(|&&v| v != cfg.id)
            .map(|&v| (v, Progress::new(last_index + 1, cfg.max_inflight_messages)))
            .collect();
        let mut raft = Raft {
            id: cfg.id,
            term: hard_state.term,
            vote: hard_state.vote,
            leader: None,
            role: Role::Follower,
            log: RaftLog::restored(snapshot_index, snapshot_term, entries, committed),
            progress,
            votes: BTreeMap::new(),
            election_elapsed_ticks: 0,
            heartbeat_elapsed_ticks: 0,
            randomized_election_timeout_ticks: cfg.election_timeout_ticks_min,
            lead_transferee: None,
            transfer_elapsed_ticks: 0,
            rng: Prng::new(cfg.seed),
            messages: Vec::new(),
            read_states: Vec::new(),
            read_round: 1,
            pending_reads: VecDeque::new(),
            reads_awaiting_commit: Vec::new(),
            read_heartbeat_pending: false,
            append_broadcast_pending: false,
            snapshot: snapshot.map(|meta| Snapshot {
                meta,
                data: snapshot_data,
            }),
            incoming_snapshot: None,
            counters: Counters::default(),
            cfg,
        };
        raft.reset_election_timer();
        Ok(raft)
    }

    pub(crate) fn read_heartbeat_pending_flag(&self) -> bool {
        self.role == Role::Leader && self.read_heartbeat_pending
    }

    pub(crate) fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            vote: self.vote,
            commit: self.log.committed,
        }
    }

    // ---- timers -------------------------------------------------------

    fn reset_election_timer(&mut self) {
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.randomized_election_timeout_ticks = self.rng.range_u32(
            self.cfg.election_timeout_ticks_min,
            self.cfg.election_timeout_ticks_max,
        );
    }

    pub(crate) fn tick(&mut self) {
        if self.role == Role::Leader {
            self.tick_leader();
        } else {
            self.election_elapsed_ticks = self.election_elapsed_ticks.saturating_add(1);
            if self.election_elapsed_ticks >= self.randomized_election_timeout_ticks {
                self.campaign(self.cfg.pre_vote, false);
            }
        }
    }

    fn tick_leader(&mut self) {
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.election_elapsed_ticks >= self.cfg.election_timeout_ticks_min {
            self.election_elapsed_ticks = 0;
            if self.cfg.check_quorum {
                let active = 1 + self.progress.values().filter(|p| p.recent_active).count();
                if active < self.cfg.quorum() {
                    self.counters.check_quorum_step_downs += 1;
                    self.become_follower(self.term, None);
                    return;
                }
                for p in self.progress.values_mut() {
                    p.recent_active = false;
                }
            }
        }
        if self.lead_transferee.is_some() {
            self.transfer_elapsed_ticks += 1;
            if self.transfer_elapsed_ticks >= self.cfg.election_timeout_ticks_min {
                self.counters.transfers_aborted += 1;
                self.lead_transferee = None;
            }
        }
        if self.heartbeat_elapsed_ticks >= self.cfg.heartbeat_interval_ticks {
            self.heartbeat_elapsed_ticks = 0;
            self.broadcast_heartbeat();
        }
    }

    /// True while this node believes a leader is alive: it is the leader, or
    /// it heard from one less than an election timeout ago.
    fn in_lease(&self) -> bool {
        match self.role {
            Role::Leader => true,
            _ => {
                self.leader.is_some()
                    && self.election_elapsed_ticks < self.cfg.election_timeout_ticks_min
            }
        }
    }

    // ---- role changes -------------------------------------------------

    pub(crate) fn become_follower(&mut self, term: Term, leader: Option<NodeId>) {
        assert!(
            term >= self.term,
            "term must never decrease: {} -> {term}",
            self.term
        );
        if term > self.term {
            self.term = term;
            self.vote = None;
        }
        if self.role == Role::Leader {
            let dropped = self.pending_reads.len() + self.reads_awaiting_commit.len();
            self.counters.reads_dropped += dropped as u64;
            self.pending_reads.clear();
            self.reads_awaiting_commit.clear();
        }
        self.role = Role::Follower;
        self.leader = leader;
        self.lead_transferee = None;
        self.votes.clear();
        self.append_broadcast_pending = false;
        self.read_heartbeat_pending = false;
        self.reset_election_timer();
    }

    /// Starts an election: with pre-vote first if `pre_vote`, and with the
    /// leadership-transfer flag if a leader asked us to (TimeoutNow).
    pub(crate) fn campaign(&mut self, pre_vote: bool, transfer: bool) {
        let was_leader = self.role == Role::Leader;
        if was_leader {
            // Only reachable through RawNode::campaign on a leader: a no-op.
            return;
        }
        self.votes.clear();
        self.votes.insert(self.id, true);
        self.leader = None;
        self.reset_election_timer();
        let (last_log_index, last_log_term) = (self.log.last_index(), self.log.last_term());
        if pre_vote {
            self.role = Role::PreCandidate;
            self.counters.pre_votes_started += 1;
            let term = self.term + 1;
            for to in self.peer_ids() {
                self.send_with_term(
                    to,
                    term,
                    MessageBody::PreVote {
                        last_log_index,
                        last_log_term,
                    },
                );
            }
        } else {
            self.role = Role::Candidate;
            self.term += 1;
            self.vote = Some(self.id);
            self.counters.elections_started += 1;
            for to in self.peer_ids() {
                self.send(
                    to,
                    MessageBody::Vote {
                        last_log_index,
                        last_log_term,
                        leadership_transfer: transfer,
                    },
                );
            }
        }
        self.check_election_result();
    }

    fn check_election_result(&mut self) {
        let granted = self.votes.values().filter(|&&g| g).count();
        let rejected = self.votes.len() - granted;
        let quorum = self.cfg.quorum();
        if granted >= quorum {
            match self.role {
                Role::PreCandidate => self.campaign(false, false),
                Role::Candidate => self.become_leader(),
                _ => {}
            }
        } else if rejected > self.cfg.voters.len() - quorum {
            self.become_follower(self.term, None);
        }
    }

    fn become_leader(&mut self) {
        assert_eq!(
            self.vote,
            Some(self.id),
            "a leader of term {} must have voted for itself",
            self.term
        );
        self.role = Role::Leader;
        self.leader = Some(self.id);
        self.votes.clear();
        self.counters.leaderships_won += 1;
        self.election_elapsed_ticks = 0;
        self.heartbeat_elapsed_ticks = 0;
        self.lead_transferee = None;
        self.read_round = 1;
        let next_index = self.log.last_index() + 1;
        for p in self.progress.values_mut() {
            *p = Progress::new(next_index, self.cfg.max_inflight_messages);
        }
        if !self.cfg.mutations.break_figure8_commit_rule {
            // §8: commit an entry of this term at once, so that entries of
            // earlier terms get committed and ReadIndex can be answered.
            self.append_entry(EntryKind::Noop, Vec::new());
        }
        self.maybe_commit();
        for to in self.peer_ids() {
            self.send_append(to);
        }
    }

    fn peer_ids(&self) -> Vec<NodeId> {
        self.progress.keys().copied().collect()
    }

    // ---- sending ------------------------------------------------------

    fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.counters.messages_sent += 1;
        self.messages.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
    }

    /// Sends the next Append (or snapshot chunk) to `to` if its progress
    /// allows. Returns whether something was sent.
    fn send_append(&mut self, to: NodeId) -> bool {
        self.send_append_or_empty(to, false)
    }

    /// `allow_empty`: send even when there is nothing new, so a follower in
    /// Replicate whose Appends were lost rejects it and gets probed.
    fn send_append_or_empty(&mut self, to: NodeId, allow_empty: bool) -> bool {
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
    fn send_appends(&mut self, to: NodeId) {
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
        let round = self.read_round;
        if self.pending_reads.back().is_some_and(|r| r.round == round) {
            self.read_round += 1;
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

    fn start_snapshot_transfer(&mut self, to: NodeId) -> bool {
        let Some(index) = self.snapshot.as_ref().map(|s| s.meta.index) else {
            return false;
        };
        if let Some(progress) = self.progress.get_mut(&to) {
            progress.become_snapshot(index);
        }
        self.counters.snapshots_sent += 1;
        self.send_snapshot_chunk(to)
    }

    fn send_snapshot_chunk(&mut self, to: NodeId) -> bool {
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

    // ---- proposals and reads -----------------------------------------

    fn append_entry(&mut self, kind: EntryKind, data: Vec<u8>) -> Index {
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

    fn committed_in_current_term(&self) -> bool {
        self.log.term(self.log.committed) == Some(self.term)
    }

    pub(crate) fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), ProposeError> {
        match self.role {
            Role::Leader => self.leader_read(self.id, ctx),
            _ => match self.leader {
                Some(leader) => {
                    self.send(leader, MessageBody::ReadIndex { ctx });
                    Ok(())
                }
                None => Err(ProposeError::NotLeader { leader_hint: None }),
            },
        }
    }

    fn leader_read(&mut self, requester: NodeId, ctx: Vec<u8>) -> Result<(), ProposeError> {
        let pending = self.pending_reads.len() + self.reads_awaiting_commit.len();
        if pending >= self.cfg.max_pending_reads {
            return Err(ProposeError::TooManyPendingReads {
                pending,
                limit: self.cfg.max_pending_reads,
            });
        }
        if !self.committed_in_current_term() {
            // §6.4 step 1: until an entry of this term commits, this leader
            // does not know the latest commit index.
            self.reads_awaiting_commit.push((requester, ctx));
            return Ok(());
        }
        let index = self.log.committed;
        if self.cfg.voters.len() == 1 || self.cfg.read_mode == ReadMode::Lease {
            self.answer_read(requester, ctx, index);
            return Ok(());
        }
        self.pending_reads.push_back(PendingRead {
            round: self.read_round,
            index,
            ctx,
            requester,
        });
        self.read_heartbeat_pending = true;
        Ok(())
    }

    fn answer_read(&mut self, requester: NodeId, ctx: Vec<u8>, index: Index) {
        if requester == self.id {
            self.read_states.push(ReadState { ctx, index });
        } else {
            self.send(requester, MessageBody::ReadIndexResponse { ctx, index });
        }
    }

    /// Answers the reads whose round a majority has confirmed.
    fn confirm_reads(&mut self) {
        if self.pending_reads.is_empty() {
            return;
        }
        let mut rounds: Vec<u64> = self.progress.values().map(|p| p.read_round_acked).collect();
        rounds.push(u64::MAX);
        let confirmed = majority_value(&mut rounds, self.cfg.quorum());
        while self
            .pending_reads
            .front()
            .is_some_and(|r| r.round <= confirmed)
        {
            if let Some(read) = self.pending_reads.pop_front() {
                self.answer_read(read.requester, read.ctx, read.index);
            }
        }
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
            self.send(to, MessageBody::TimeoutNow);
        } else {
            self.send_appends(to);
        }
        Ok(())
    }

    pub(crate) fn compact(&mut self, index: Index, data: Vec<u8>) -> Result<(), CompactError> {
        if index <= self.log.snapshot_index {
            return Err(CompactError::AlreadyCompacted {
                index,
                snapshot_index: self.log.snapshot_index,
            });
        }
        if index > self.log.applying {
            return Err(CompactError::NotApplied {
                index,
                applied: self.log.applying,
            });
        }
        let term = self.log.term(index).unwrap_or(self.log.snapshot_term);
        self.log.compact_to(index);
        self.snapshot = Some(Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                voters: self.cfg.voters.clone(),
            },
            data,
        });
        Ok(())
    }

    /// Advances the leader's commit index to what a majority holds, counting
    /// only entries of the current term (§5.4.2, Figure 8).
    fn maybe_commit(&mut self) -> bool {
        let mut matches: Vec<Index> = self.progress.values().map(|p| p.match_index).collect();
        matches.push(self.log.last_index());
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

    // ---- receiving ----------------------------------------------------

    pub(crate) fn step(&mut self, m: Message) -> Result<(), StepError> {
        self.counters.messages_received += 1;
        let result = self.step_inner(m);
        if let Err(e) = &result {
            let counter = match e {
                StepError::WrongRecipient { .. } => &mut self.counters.dropped_wrong_recipient,
                StepError::UnknownSender { .. } => &mut self.counters.dropped_unknown_sender,
                StepError::StaleTerm { .. } => &mut self.counters.dropped_stale_term,
                StepError::Malformed { .. } => &mut self.counters.dropped_malformed,
                StepError::Unexpected { .. } => &mut self.counters.dropped_unexpected,
                StepError::ConflictsWithCommitted { .. } => {
                    &mut self.counters.dropped_conflicting_committed
                }
                StepError::SnapshotChunkOffset { .. } => &mut self.counters.dropped_snapshot_chunks,
            };
            *counter += 1;
        }
        result
    }

    fn unexpected(&self, m: &Message) -> StepError {
        StepError::Unexpected {
            from: m.from,
            kind: m.kind(),
            role: self.role,
            term: self.term,
        }
    }

    fn step_inner(&mut self, m: Message) -> Result<(), StepError> {
        if m.to != self.id {
            return Err(StepError::WrongRecipient {
                to: m.to,
                id: self.id,
            });
        }
        if !self.progress.contains_key(&m.from) {
            return Err(StepError::UnknownSender { from: m.from });
        }
        if m.max_index() > MAX_SENSIBLE_INDEX || m.term > MAX_SENSIBLE_INDEX {
            return Err(StepError::Malformed {
                from: m.from,
                reason: "index or term beyond 2^62",
            });
        }
        if m.term > self.term {
            match &m.body {
                MessageBody::PreVote { .. } | MessageBody::PreVoteResponse { granted: true } => {}
                MessageBody::Vote {
                    leadership_transfer,
                    ..
                } if self.cfg.check_quorum && !leadership_transfer && self.in_lease() => {
                    // A healthy leader exists: do not let a returning node
                    // raise our term or take our vote.
                    self.counters.votes_ignored_in_lease += 1;
                    return Ok(());
                }
                body => {
                    let leader = matches!(
                        body,
                        MessageBody::Append { .. }
                            | MessageBody::Heartbeat { .. }
                            | MessageBody::InstallSnapshot { .. }
                    )
                    .then_some(m.from);
                    self.become_follower(m.term, leader);
                }
            }
        } else if m.term < self.term {
            match m.body {
                MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. } => {
                    // Tell the stale leader our term so it steps down.
                    self.send(
                        m.from,
                        MessageBody::AppendResponse {
                            success: false,
                            index: 0,
                            conflict_term: None,
                            conflict_index: 0,
                        },
                    );
                }
                MessageBody::PreVote { .. } => {
                    self.send(m.from, MessageBody::PreVoteResponse { granted: false });
                }
                _ => {}
            }
            return Err(StepError::StaleTerm {
                from: m.from,
                message_term: m.term,
                term: self.term,
            });
        }
        match m.body {
            MessageBody::PreVote {
                last_log_index,
                last_log_term,
            } => {
                self.handle_vote_request(m.from, m.term, last_log_index, last_log_term, true);
                Ok(())
            }
            MessageBody::Vote {
                last_log_index,
                last_log_term,
                ..
            } => {
                self.handle_vote_request(m.from, m.term, last_log_index, last_log_term, false);
                Ok(())
            }
            _ => match self.role {
                Role::Leader => self.step_leader(m),
                Role::PreCandidate | Role::Candidate => self.step_candidate(m),
                Role::Follower => self.step_follower(m),
            },
        }
    }

    fn handle_vote_request(
        &mut self,
        from: NodeId,
        term: Term,
        last_index: Index,
        last_term: Term,
        pre_vote: bool,
    ) {
        let up_to_date = self.log.is_up_to_date(last_index, last_term);
        if pre_vote {
            // §9.6: grant only if we would vote in that term and have not
            // heard from a leader within the minimum election timeout.
            let granted = term > self.term && !self.in_lease() && up_to_date;
            let reply_term = if granted { term } else { self.term };
            self.send_with_term(from, reply_term, MessageBody::PreVoteResponse { granted });
            return;
        }
        // Here term == self.term (a higher term made us follow it above).
        let can_vote = self.vote == Some(from) || (self.vote.is_none() && self.leader.is_none());
        let granted = can_vote && up_to_date;
        if granted {
            self.vote = Some(from);
            self.reset_election_timer();
        }
        self.send(from, MessageBody::VoteResponse { granted });
    }

    fn step_follower(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                self.leader = Some(m.from);
                self.election_elapsed_ticks = 0;
                self.handle_from_leader(m)
            }
            MessageBody::TimeoutNow => {
                if self.leader != Some(m.from) {
                    return Err(self.unexpected(&m));
                }
                self.campaign(false, true);
                Ok(())
            }
            MessageBody::ReadIndexResponse { ctx, index } => {
                self.read_states.push(ReadState { ctx, index });
                Ok(())
            }
            _ => Err(self.unexpected(&m)),
        }
    }

    fn step_candidate(&mut self, m: Message) -> Result<(), StepError> {
        match m.body {
            MessageBody::Append { .. }
            | MessageBody::Heartbeat { .. }
            | MessageBody::InstallSnapshot { .. } => {
                // A leader of our term exists (§5.2): follow it.
                self.become_follower(m.term, Some(m.from));
                self.handle_from_leader(m)
            }
            MessageBody::PreVoteResponse { granted } if self.role == Role::PreCandidate => {
                let expected_term = if granted { self.term + 1 } else { self.term };
                if m.term != expected_term {
                    return Err(self.unexpected(&m));
                }
                self.votes.entry(m.from).or_insert(granted);
                self.check_election_result();
                Ok(())
            }
            MessageBody::VoteResponse { granted } if self.role == Role::Candidate => {
                self.votes.entry(m.from).or_insert(granted);
                self.check_election_result();
                Ok(())
            }
            _ => Err(self.unexpected(&m)),
        }
    }

    fn handle_from_leader(&mut self, m: Message) -> Result<(), StepError> {
        let from = m.from;
        let term = m.term;
        match m.body {
            MessageBody::Append {
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            } => self.handle_append(
                from,
                term,
                prev_log_index,
                prev_log_term,
                entries,
                leader_commit,
            ),
            MessageBody::Heartbeat { commit, read_round } => {
                if commit <= self.log.last_index() {
                    self.log.commit_to(commit);
                } else {
                    self.counters.dropped_malformed += 1;
                }
                self.send(from, MessageBody::HeartbeatResponse { read_round });
                Ok(())
            }
            MessageBody::InstallSnapshot {
                meta,
                offset,
                data,
                done,
            } => self.handle_snapshot_chunk(from, term, meta, offset, data, done),
            _ => Err(StepError::Malformed {
                from,
                reason: "not a leader message",
            }),
        }
    }

    fn handle_append(
        &mut self,
        from: NodeId,
        term: Term,
        mut prev_log_index: Index,
        mut prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    ) -> Result<(), StepError> {
        let malformed = |reason| Err(StepError::Malformed { from, reason });
        if prev_log_term > term {
            return malformed("previous log term above the message term");
        }
        let mut previous_term = prev_log_term;
        for (offset, entry) in entries.iter().enumerate() {
            if prev_log_index.checked_add(1 + offset as u64) != Some(entry.index) {
                return malformed("entries are not contiguous after the previous log index");
            }
            if entry.term < previous_term || entry.term > term {
                return malformed("entry terms decrease or exceed the message term");
            }
            previous_term = entry.term;
        }
        let committed = self.log.committed;
        let mut skip = 0;
        if prev_log_index < committed {
            // Entries up to our commit index are known to match (§5.3): skip
            // them and check the rest against our committed entry.
            skip = ((committed - prev_log_index) as usize).min(entries.len());
            prev_log_index = committed;
            let Some(term_at_commit) = self.log.term(committed) else {
                return malformed("commit index outside the log");
            };
            prev_log_term = term_at_commit;
        }
        if prev_log_index == committed && self.log.term(committed) != Some(prev_log_term) {
            // The leader disagrees with a committed entry: only possible if
            // Raft was broken (e.g. a test mutation). Do not answer, so the
            // two do not ping-pong rejections.
            return Err(StepError::ConflictsWithCommitted {
                from,
                index: committed,
                commit: committed,
            });
        }
        if self.log.term(prev_log_index) != Some(prev_log_term) {
            let last = self.log.last_index();
            let (conflict_term, conflict_index) = match self.log.term(prev_log_index) {
                Some(t) if prev_log_index <= last => {
                    (Some(t), self.log.first_index_of_term(t).max(committed + 1))
                }
                _ => (None, last + 1),
            };
            self.counters.append_rejections_sent += 1;
            self.send(
                from,
                MessageBody::AppendResponse {
                    success: false,
                    index: prev_log_index,
                    conflict_term,
                    conflict_index,
                },
            );
            return Ok(());
        }
        let new_entries = &entries[skip..];
        if new_entries.first().is_some_and(|e| e.term < prev_log_term) {
            return malformed("entry term below the term of our committed entry before it");
        }
        let last_new = prev_log_index + new_entries.len() as u64;
        let first_conflict = new_entries
            .iter()
            .position(|e| self.log.term(e.index) != Some(e.term));
        if let Some(position) = first_conflict {
            let conflict_index = new_entries[position].index;
            if conflict_index <= self.log.last_index() {
                if conflict_index <= committed {
                    return Err(StepError::ConflictsWithCommitted {
                        from,
                        index: conflict_index,
                        commit: committed,
                    });
                }
                self.log.truncate_from(conflict_index);
            }
            for entry in entries.into_iter().skip(skip + position) {
                self.log.append(entry);
            }
        }
        self.log.commit_to(leader_commit.min(last_new));
        self.send(
            from,
            MessageBody::AppendResponse {
                success: true,
                index: last_new,
                conflict_term: None,
                conflict_index: 0,
            },
        );
        Ok(())
    }

    fn handle_snapshot_chunk(
        &mut self,
        from: NodeId,
        term: Term,
        meta: SnapshotMeta,
        offset: u64,
        data: Vec<u8>,
        done: bool,
    ) -> Result<(), StepError> {
        if meta.index == 0 || meta.term == 0 || meta.term > term {
            return Err(StepError::Malformed {
                from,
                reason: "snapshot index or term impossible",
            });
        }
        let snapshot_index = meta.index;
        if snapshot_index <= self.log.committed {
            // We already have everything it covers.
            self.incoming_snapshot = None;
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    snapshot_index,
                    next_offset: 0,
                    done: true,
                },
            );
            return Ok(());
        }
        if offset == 0 {
            self.incoming_snapshot = Some(IncomingSnapshot {
                meta: meta.clone(),
                data: Vec::new(),
            });
        }
        let expected = match &self.incoming_snapshot {
            Some(incoming) if incoming.meta == meta => incoming.data.len() as u64,
            _ => 0,
        };
        if offset != expected {
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    snapshot_index,
                    next_offset: expected,
                    done: false,
                },
            );
            return Err(StepError::SnapshotChunkOffset {
                from,
                offset,
                expected,
            });
        }
        let Some(incoming) = self.incoming_snapshot.as_mut() else {
            return Err(StepError::SnapshotChunkOffset {
                from,
                offset,
                expected,
            });
        };
        incoming.data.extend_from_slice(&data);
        let next_offset = incoming.data.len() as u64;
        if !done {
            self.send(
                from,
                MessageBody::SnapshotResponse {
                    snapshot_index,
                    next_offset,
                    done: false,
                },
            );
            return Ok(());
        }
        let Some(IncomingSnapshot { meta, data }) = self.incoming_snapshot.take() else {
            return Err(StepError::SnapshotChunkOffset {
                from,
                offset,
                expected,
            });
        };
        if self.log.term(snapshot_index) == Some(meta.term) {
            // Our log already holds the snapshot's last entry (§7): keep the
            // entries after it and just commit.
            self.log.commit_to(snapshot_index);
        } else {
            let snapshot = Snapshot { meta, data };
            self.snapshot = Some(snapshot.clone());
            self.log.install_snapshot(snapshot);
            self.counters.snapshots_installed += 1;
        }
        self.send(
            from,
            MessageBody::SnapshotResponse {
                snapshot_index,
                next_offset,
                done: true,
            },
        );
        Ok(())
    }

    fn step_leader(&mut self, m: Message) -> Result<(), StepError> {
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
                    p.recent_active = true;
                }
                if success {
                    self.handle_append_success(from, index);
                } else {
                    self.handle_append_reject(from, index, conflict_term, conflict_index);
                }
                Ok(())
            }
            MessageBody::HeartbeatResponse { read_round } => {
                if read_round >= self.read_round.saturating_add(1) {
                    return Err(StepError::Malformed {
                        from,
                        reason: "read round never sent",
                    });
                }
                let last_index = self.log.last_index();
                let Some(p) = self.progress.get_mut(&from) else {
                    return Err(StepError::UnknownSender { from });
                };
                p.recent_active = true;
                p.read_round_acked = p.read_round_acked.max(read_round);
                p.probe_sent = false;
                match p.state {
                    ProgressState::Snapshot { .. } => {
                        // The chunk or its answer may be lost: resend it.
                        self.send_snapshot_chunk(from);
                    }
                    ProgressState::Replicate | ProgressState::Probe
                        if p.match_index < last_index =>
                    {
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

    fn handle_append_success(&mut self, from: NodeId, index: Index) {
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
            self.send(from, MessageBody::TimeoutNow);
        }
        self.send_appends(from);
    }

    fn handle_append_reject(
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

    fn handle_snapshot_response(
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
        p.recent_active = true;
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
