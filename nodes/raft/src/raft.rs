//! Roles and message handling: the Raft protocol proper. `RawNode` wraps
//! this with the Ready/advance handshake; this file never does I/O either.

use crate::config::{Config, ConfigError};
use crate::errors::{CompactError, StepError};
use crate::log::RaftLog;
use crate::message::{Message, MessageBody, MAX_SENSIBLE_INDEX};
use crate::prng::Prng;
use crate::progress::Progress;
use crate::types::{Entry, HardState, Index, NodeId, Restored, Snapshot, SnapshotMeta, Term};
use std::collections::{BTreeMap, VecDeque};

/// The role a node plays in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Role {
    Follower,
    /// Asking for pre-votes (§9.6) without having raised its term.
    PreCandidate,
    Candidate,
    Leader,
}

/// Monotonic counts of what happened, for tests, metrics and the simulator.
/// Every dropped message increments exactly one `dropped_*` field.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
pub(crate) struct PendingRead {
    pub(crate) round: u64,
    pub(crate) index: Index,
    pub(crate) ctx: Vec<u8>,
    pub(crate) requester: NodeId,
}

/// An InstallSnapshot transfer being assembled on a follower.
#[derive(Clone, Debug)]
pub(crate) struct IncomingSnapshot {
    pub(crate) meta: SnapshotMeta,
    pub(crate) data: Vec<u8>,
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
    pub(crate) votes: BTreeMap<NodeId, bool>,
    pub(crate) election_elapsed_ticks: u32,
    pub(crate) heartbeat_elapsed_ticks: u32,
    pub(crate) randomized_election_timeout_ticks: u32,
    pub(crate) lead_transferee: Option<NodeId>,
    pub(crate) transfer_elapsed_ticks: u32,
    pub(crate) rng: Prng,
    pub(crate) messages: Vec<Message>,
    pub(crate) read_states: Vec<ReadState>,
    /// The ReadIndex round the next heartbeat carries (leader only).
    pub(crate) read_round: u64,
    /// Ticks since this node started; only differences are used.
    pub(crate) now_ticks: u64,
    /// Lease mode: (round, tick) of recent heartbeat broadcasts, oldest
    /// first, to know when an acknowledged round was sent.
    pub(crate) heartbeat_sent_ticks: VecDeque<(u64, u64)>,
    /// TimeoutNow was sent in this term: no more lease reads.
    pub(crate) lease_revoked: bool,
    /// The current campaign answers a TimeoutNow (resent requests keep the flag).
    pub(crate) campaign_is_transfer: bool,
    pub(crate) pending_reads: VecDeque<PendingRead>,
    /// Reads that arrived before this leader committed an entry of its term.
    pub(crate) reads_awaiting_commit: Vec<(NodeId, Vec<u8>)>,
    pub(crate) read_heartbeat_pending: bool,
    /// Proposals appended since the last flush: send them in one batch.
    pub(crate) append_broadcast_pending: bool,
    /// The latest snapshot: taken here, installed from a leader, or restored.
    pub(crate) snapshot: Option<Snapshot>,
    pub(crate) incoming_snapshot: Option<IncomingSnapshot>,
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
            now_ticks: 0,
            heartbeat_sent_ticks: VecDeque::new(),
            lease_revoked: false,
            campaign_is_transfer: false,
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

    pub(crate) fn reset_election_timer(&mut self) {
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
            self.now_ticks += 1;
            self.election_elapsed_ticks = self.election_elapsed_ticks.saturating_add(1);
            if self.election_elapsed_ticks >= self.randomized_election_timeout_ticks {
                self.campaign(self.cfg.pre_vote, false);
            } else if matches!(self.role, Role::PreCandidate | Role::Candidate) {
                self.heartbeat_elapsed_ticks += 1;
                if self.heartbeat_elapsed_ticks >= self.cfg.heartbeat_interval_ticks {
                    self.heartbeat_elapsed_ticks = 0;
                    self.request_votes();
                }
            }
        }
    }

    /// Whether a majority (counting this leader) was heard from within the
    /// last `election_timeout_ticks_min` ticks.
    pub(crate) fn quorum_recently_active(&self) -> bool {
        let active = self
            .progress
            .values()
            .filter(|p| self.recently_active(p))
            .count();
        active + 1 >= self.cfg.quorum()
    }

    pub(crate) fn recently_active(&self, progress: &Progress) -> bool {
        let window = u64::from(self.cfg.election_timeout_ticks_min);
        progress
            .last_active_tick
            .is_some_and(|t| self.now_ticks - t < window)
    }

    pub(crate) fn tick_leader(&mut self) {
        self.now_ticks += 1;
        self.heartbeat_elapsed_ticks += 1;
        self.election_elapsed_ticks += 1;
        if self.cfg.check_quorum && !self.quorum_recently_active() {
            // Check-quorum: no majority heard from within an election
            // timeout, so a new leader may exist; stop acting as leader.
            self.counters.check_quorum_step_downs += 1;
            self.become_follower(self.term, None);
            return;
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

    pub(crate) fn peer_ids(&self) -> Vec<NodeId> {
        self.progress.keys().copied().collect()
    }

    pub(crate) fn send(&mut self, to: NodeId, body: MessageBody) {
        self.send_with_term(to, self.term, body);
    }

    pub(crate) fn send_with_term(&mut self, to: NodeId, term: Term, body: MessageBody) {
        self.counters.messages_sent += 1;
        self.messages.push(Message {
            from: self.id,
            to,
            term,
            body,
        });
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

    pub(crate) fn unexpected(&self, m: &Message) -> StepError {
        StepError::Unexpected {
            from: m.from,
            kind: m.kind(),
            role: self.role,
            term: self.term,
        }
    }

    pub(crate) fn step_inner(&mut self, m: Message) -> Result<(), StepError> {
        self.check_envelope(&m)?;
        if !self.reconcile_term(&m)? {
            return Ok(());
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

    /// Addressed to us, from a peer, with indexes and term in range.
    pub(crate) fn check_envelope(&self, m: &Message) -> Result<(), StepError> {
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
            let reason = "index or term beyond 2^62";
            return Err(StepError::Malformed {
                from: m.from,
                reason,
            });
        }
        Ok(())
    }

    /// §5.1: a higher term makes us a follower of it (except pre-votes,
    /// and vote requests while we hear from a healthy leader); a lower term
    /// is refused, telling a stale leader or pre-candidate our term.
    /// Returns whether the message should be handled further.
    pub(crate) fn reconcile_term(&mut self, m: &Message) -> Result<bool, StepError> {
        let from_leader = matches!(
            m.body,
            MessageBody::Append { .. }
                | MessageBody::Heartbeat { .. }
                | MessageBody::InstallSnapshot { .. }
        );
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
                    return Ok(false);
                }
                _ => self.become_follower(m.term, from_leader.then_some(m.from)),
            }
        } else if m.term < self.term {
            if from_leader {
                let body = MessageBody::AppendResponse {
                    success: false,
                    index: 0,
                    conflict_term: None,
                    conflict_index: 0,
                };
                self.send(m.from, body);
            } else if matches!(m.body, MessageBody::PreVote { .. }) {
                self.send(m.from, MessageBody::PreVoteResponse { granted: false });
            }
            return Err(StepError::StaleTerm {
                from: m.from,
                message_term: m.term,
                term: self.term,
            });
        }
        Ok(true)
    }
}
