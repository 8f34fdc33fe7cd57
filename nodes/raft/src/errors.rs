//! One error enum per operation. Step errors are normal under faults: the
//! message was dropped (and counted) and the node is unharmed.

use crate::types::{Index, NodeId, Term};
use crate::Role;
use thiserror::Error;

/// Why a message was dropped by [`crate::RawNode::step`]. The peer (or the
/// network) caused every one of these; the node's state is unchanged except
/// for the counter, and possibly a reply that tells a stale peer the term.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum StepError {
    #[error("message addressed to {to} arrived at node {id}")]
    WrongRecipient { to: NodeId, id: NodeId },
    #[error("message from {from}, which is not a peer of this cluster")]
    UnknownSender { from: NodeId },
    #[error("message from {from} carries stale term {message_term} < current term {term}")]
    StaleTerm {
        from: NodeId,
        message_term: Term,
        term: Term,
    },
    #[error("malformed message from {from}: {reason}")]
    Malformed { from: NodeId, reason: &'static str },
    #[error("{kind} from {from} is not expected by a {role:?} in term {term}")]
    Unexpected {
        from: NodeId,
        kind: &'static str,
        role: Role,
        term: Term,
    },
    #[error("append from {from} would overwrite entry {index}, but commit index is {commit}")]
    ConflictsWithCommitted {
        from: NodeId,
        index: Index,
        commit: Index,
    },
    #[error("snapshot chunk from {from} at offset {offset}, expected offset {expected}")]
    SnapshotChunkOffset {
        from: NodeId,
        offset: u64,
        expected: u64,
    },
}

/// Why a proposal, read, or leadership transfer was refused. All definite:
/// nothing was appended to the log.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ProposeError {
    /// Retry at the hinted leader, if any (the hint may be stale).
    #[error("not the leader (leader hint: {leader_hint:?})")]
    NotLeader { leader_hint: Option<NodeId> },
    #[error("leadership is being transferred to {to}")]
    TransferInProgress { to: NodeId },
    #[error("{uncommitted} entries not yet committed (limit {limit})")]
    TooManyUncommitted { uncommitted: usize, limit: usize },
    #[error("{pending} reads pending (limit {limit})")]
    TooManyPendingReads { pending: usize, limit: usize },
    #[error("node {id} is not a voter")]
    UnknownNode { id: NodeId },
}

/// Why [`crate::RawNode::compact`] was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CompactError {
    #[error("cannot compact to {index}: only {applied} entries are applied")]
    NotApplied { index: Index, applied: Index },
    #[error("log is already compacted to {snapshot_index}, cannot compact to {index}")]
    AlreadyCompacted { index: Index, snapshot_index: Index },
}
