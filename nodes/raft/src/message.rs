//! Messages between Raft nodes. Every message is one-way: a "response" is
//! just another message, and nothing in the core waits for one.

use crate::types::{Entry, Index, NodeId, SnapshotMeta, Term};
use serde::{Deserialize, Serialize};

/// One message on the wire. `term` is the sender's current term, except for
/// `PreVote` (the term the sender would campaign in) and a granted
/// `PreVoteResponse` (echoes that term).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub from: NodeId,
    pub to: NodeId,
    pub term: Term,
    pub body: MessageBody,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MessageBody {
    /// §9.6: "would you vote for me in `term`?" Changes no one's term.
    PreVote {
        last_log_index: Index,
        last_log_term: Term,
    },
    PreVoteResponse {
        granted: bool,
    },
    /// §5.2 RequestVote. `leadership_transfer` is set when the candidate
    /// campaigns because the leader sent it `TimeoutNow`; voters then ignore
    /// their check-quorum lease.
    Vote {
        last_log_index: Index,
        last_log_term: Term,
        leadership_transfer: bool,
    },
    VoteResponse {
        granted: bool,
    },
    /// §5.3 AppendEntries with a batch of entries (possibly empty).
    Append {
        prev_log_index: Index,
        prev_log_term: Term,
        entries: Vec<Entry>,
        leader_commit: Index,
    },
    /// On success `index` is the last index now known to match the leader.
    /// On rejection `index` is the rejected `prev_log_index`, and the hint
    /// lets the leader skip a whole term at once: `conflict_term` is the
    /// follower's term at `prev_log_index` (None if its log is shorter), and
    /// `conflict_index` the first index of that term (or last index + 1).
    AppendResponse {
        success: bool,
        index: Index,
        conflict_term: Option<Term>,
        conflict_index: Index,
    },
    /// Leader liveness; `commit` is at most what the follower is known to
    /// hold. `read_round` confirms pending ReadIndex requests (§6.4).
    Heartbeat {
        commit: Index,
        read_round: u64,
    },
    HeartbeatResponse {
        read_round: u64,
    },
    /// §7 InstallSnapshot, one chunk of `data` starting at byte `offset`.
    InstallSnapshot {
        meta: SnapshotMeta,
        offset: u64,
        #[serde(with = "crate::bytes")]
        data: Vec<u8>,
        done: bool,
    },
    /// `next_offset` is the byte the follower expects next (0 restarts the
    /// transfer); `done` says the snapshot at `snapshot_index` is in place.
    SnapshotResponse {
        snapshot_index: Index,
        next_offset: u64,
        done: bool,
    },
    /// Leadership transfer: "start an election now".
    TimeoutNow,
    /// A follower forwards a read request to the leader.
    ReadIndex {
        #[serde(with = "crate::bytes")]
        ctx: Vec<u8>,
    },
    /// The leader's answer: serve the read once applied >= `index`.
    ReadIndexResponse {
        #[serde(with = "crate::bytes")]
        ctx: Vec<u8>,
        index: Index,
    },
}

/// No real log reaches this index (2^62 entries); larger indexes in a
/// message are malformed, which keeps all index arithmetic overflow-free.
pub const MAX_SENSIBLE_INDEX: Index = 1 << 62;

/// Fixed per-entry overhead counted by [`Entry`] byte accounting (term,
/// index, kind, length prefix).
pub(crate) const ENTRY_OVERHEAD_BYTES: usize = 24;
const HEADER_BYTES: usize = 32;

pub(crate) fn entry_size_bytes(entry: &Entry) -> usize {
    entry.data.len() + ENTRY_OVERHEAD_BYTES
}

impl Message {
    /// A cheap estimate of the encoded size, for byte accounting in the
    /// simulator and for batching limits. Not the exact CBOR size.
    pub fn approx_size_bytes(&self) -> usize {
        HEADER_BYTES
            + match &self.body {
                MessageBody::Append { entries, .. } => {
                    24 + entries.iter().map(entry_size_bytes).sum::<usize>()
                }
                MessageBody::InstallSnapshot { meta, data, .. } => {
                    32 + meta.voters.len() * 8 + data.len()
                }
                MessageBody::ReadIndex { ctx } => 8 + ctx.len(),
                MessageBody::ReadIndexResponse { ctx, .. } => 16 + ctx.len(),
                MessageBody::AppendResponse { .. } => 32,
                MessageBody::SnapshotResponse { .. } => 24,
                MessageBody::PreVote { .. } | MessageBody::Vote { .. } => 17,
                MessageBody::Heartbeat { .. } => 16,
                MessageBody::HeartbeatResponse { .. } => 8,
                MessageBody::PreVoteResponse { .. } | MessageBody::VoteResponse { .. } => 1,
                MessageBody::TimeoutNow => 0,
            }
    }

    /// The largest index the message mentions, checked against
    /// [`MAX_SENSIBLE_INDEX`] before anything else looks at it.
    pub(crate) fn max_index(&self) -> Index {
        match &self.body {
            MessageBody::PreVote { last_log_index, .. }
            | MessageBody::Vote { last_log_index, .. } => *last_log_index,
            MessageBody::Append {
                prev_log_index,
                entries,
                leader_commit,
                ..
            } => {
                let last_entry = entries.last().map_or(0, |e| e.index);
                (*prev_log_index).max(last_entry).max(*leader_commit)
            }
            MessageBody::AppendResponse {
                index,
                conflict_index,
                ..
            } => (*index).max(*conflict_index),
            MessageBody::Heartbeat { commit, .. } => *commit,
            MessageBody::InstallSnapshot { meta, .. } => meta.index,
            MessageBody::SnapshotResponse { snapshot_index, .. } => *snapshot_index,
            MessageBody::ReadIndexResponse { index, .. } => *index,
            MessageBody::PreVoteResponse { .. }
            | MessageBody::VoteResponse { .. }
            | MessageBody::HeartbeatResponse { .. }
            | MessageBody::TimeoutNow
            | MessageBody::ReadIndex { .. } => 0,
        }
    }

    /// A short name of the body's kind, for counters and errors.
    pub fn kind(&self) -> &'static str {
        match self.body {
            MessageBody::PreVote { .. } => "PreVote",
            MessageBody::PreVoteResponse { .. } => "PreVoteResponse",
            MessageBody::Vote { .. } => "Vote",
            MessageBody::VoteResponse { .. } => "VoteResponse",
            MessageBody::Append { .. } => "Append",
            MessageBody::AppendResponse { .. } => "AppendResponse",
            MessageBody::Heartbeat { .. } => "Heartbeat",
            MessageBody::HeartbeatResponse { .. } => "HeartbeatResponse",
            MessageBody::InstallSnapshot { .. } => "InstallSnapshot",
            MessageBody::SnapshotResponse { .. } => "SnapshotResponse",
            MessageBody::TimeoutNow => "TimeoutNow",
            MessageBody::ReadIndex { .. } => "ReadIndex",
            MessageBody::ReadIndexResponse { .. } => "ReadIndexResponse",
        }
    }
}
