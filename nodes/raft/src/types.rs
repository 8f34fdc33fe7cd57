//! The data that crosses the boundary between the Raft core and its runtime:
//! log entries, the hard state, snapshots. Storage and transport depend on
//! these types only, never on the core's internals.

use serde::{Deserialize, Serialize};

/// A server's identity in the cluster. Never 0 (0 means "none" on the wire
/// in other Raft implementations; we use `Option<NodeId>` instead).
pub type NodeId = u64;
/// A Raft term (§5.1). Never decreases on any server.
pub type Term = u64;
/// A log index; the first real entry has index 1, index 0 is the empty prefix.
pub type Index = u64;

/// What a log entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EntryKind {
    /// Application command, handed to the state machine when committed.
    Normal,
    /// Appended by a new leader at the start of its term so that entries of
    /// earlier terms can be committed (§5.4.2, §8). Carries no data.
    Noop,
}

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub kind: EntryKind,
    #[serde(with = "crate::bytes")]
    pub data: Vec<u8>,
}

/// The state that must be on stable storage before a server answers any
/// message that depends on it (Figure 2, "Persistent state on all servers"),
/// plus the commit index, persisted so a restart does not re-apply from zero
/// more than it must.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HardState {
    pub term: Term,
    pub vote: Option<NodeId>,
    pub commit: Index,
}

/// Describes the state a snapshot stands for: everything up to and including
/// `index` (whose term is `term`), with the cluster membership at that point.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SnapshotMeta {
    pub index: Index,
    pub term: Term,
    pub voters: Vec<NodeId>,
}

/// A snapshot of the application's state machine, opaque to Raft.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Snapshot {
    pub meta: SnapshotMeta,
    #[serde(with = "crate::bytes")]
    pub data: Vec<u8>,
}

/// What the runtime recovered from stable storage; `Restored::default()` for
/// a brand-new node.
///
/// `entries` are the stored log entries after the snapshot (entries at or
/// below the snapshot's index are skipped). `snapshot_data` is the stored
/// snapshot's bytes: the core needs them to bring lagging followers up to
/// date with InstallSnapshot after this node becomes leader.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub hard_state: HardState,
    pub snapshot: Option<SnapshotMeta>,
    pub entries: Vec<Entry>,
    pub snapshot_data: Vec<u8>,
}
