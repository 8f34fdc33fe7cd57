//! Configuration of one Raft node, validated before the node starts.

use crate::types::NodeId;
use thiserror::Error;

/// How the leader confirms it is still the leader before answering a read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ReadMode {
    /// §6.4 of the Raft thesis: the read waits for a heartbeat round in which a
    /// majority still accepts this leader. Safe without any clock assumption.
    #[default]
    ReadIndex,
    /// The leader answers at once while it holds a lease: a majority
    /// acknowledged a heartbeat sent less than `election_timeout_ticks_min - 1`
    /// ticks ago, and followers (with `check_quorum`) refuse to vote for
    /// anyone else for `election_timeout_ticks_min` ticks after hearing from a
    /// leader. Without a valid lease (new term, lost heartbeats, after a
    /// leadership transfer) the read falls back to ReadIndex. Assumes the
    /// nodes' tick rates differ by less than one tick per election timeout.
    Lease,
}

/// Test-only switches that break Raft on purpose, so the simulator can prove
/// its invariant checker notices. All false in every real configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Mutations {
    /// Count replicas for entries of earlier terms when advancing the commit
    /// index (the bug of Figure 8), and do not append the Noop a new leader
    /// normally appends (otherwise the Noop masks the bug almost always).
    pub break_figure8_commit_rule: bool,
    /// Report `vote: None` in `Ready::hard_state`, so a crash forgets whom
    /// this node voted for and it may vote twice in one term.
    pub forget_to_persist_vote: bool,
    /// With `async_storage_writes`: the leader counts its whole log toward
    /// the commit quorum before its own write is durable (the bug that
    /// §10.2.1 of the thesis warns about: a leader crash then loses an
    /// entry that was reported committed).
    pub count_self_before_persist: bool,
}

/// Everything a node needs to know before it starts. Build with
/// [`Config::new`] and adjust fields; [`Config::validate`] names a bad field.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Config {
    /// This node's id; never 0.
    pub id: NodeId,
    /// All voting members including this node.
    pub voters: Vec<NodeId>,
    /// Election timeouts are drawn uniformly from `[min, max)` per election.
    pub election_timeout_ticks_min: u32,
    pub election_timeout_ticks_max: u32,
    /// A leader sends heartbeats this often; must be below the election timeout.
    pub heartbeat_interval_ticks: u32,
    /// §9.6 of the thesis: ask for votes without raising the term first, so a
    /// node returning from a partition cannot disrupt a healthy leader.
    pub pre_vote: bool,
    /// A leader steps down when it has not heard from a majority within an
    /// election timeout, and followers ignore vote requests while they hear
    /// from a leader.
    pub check_quorum: bool,
    /// Pipelining window: AppendEntries messages in flight per follower.
    pub max_inflight_messages: usize,
    /// Cap on the entry payload of one AppendEntries (one entry is always sent
    /// even if it alone is larger).
    pub max_message_bytes: usize,
    /// Size of one InstallSnapshot chunk.
    pub snapshot_chunk_bytes: usize,
    /// Limit on entries the leader holds that are not committed yet; further
    /// proposals are refused until the followers catch up.
    pub max_uncommitted_entries: usize,
    /// Limit on read requests waiting for confirmation at the leader.
    pub max_pending_reads: usize,
    pub read_mode: ReadMode,
    /// Thesis §10.2.1: the leader may write its log to disk in parallel with
    /// replicating it. When true, `Ready::early_messages` holds the leader's
    /// Appends and heartbeats, which may be sent before (or while) the
    /// Ready's entries are persisted, and the leader counts itself toward the
    /// commit quorum only for entries the runtime reported durable with
    /// [`crate::RawNode::on_persisted`]. Everything else is unchanged:
    /// `Ready::messages` (votes, acknowledgements) still wait for the write.
    /// Because commitment then never relies on an unpersisted write, the
    /// runtime may also apply `committed_entries` before the Ready's writes
    /// are durable, and keep several Readies' writes in flight (in order).
    /// False (the default) keeps the classic contract: persist, then send,
    /// then apply, and the core counts its own log as if already durable.
    pub async_storage_writes: bool,
    /// Seed of the core's own PRNG (election timeouts). No global RNG is used.
    pub seed: u64,
    pub mutations: Mutations,
}

impl Config {
    /// Defaults that suit a 100 ms tick on a LAN as well as the simulator:
    /// elections after 10..20 ticks, heartbeats every 2 ticks.
    pub fn new(id: NodeId, voters: Vec<NodeId>) -> Self {
        Config {
            id,
            voters,
            election_timeout_ticks_min: 10,
            election_timeout_ticks_max: 20,
            heartbeat_interval_ticks: 2,
            pre_vote: true,
            check_quorum: true,
            max_inflight_messages: 64,
            max_message_bytes: 256 * 1024,
            snapshot_chunk_bytes: 64 * 1024,
            max_uncommitted_entries: 8192,
            max_pending_reads: 4096,
            read_mode: ReadMode::ReadIndex,
            async_storage_writes: false,
            seed: id.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5EED,
            mutations: Mutations::default(),
        }
    }

    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, reason: String| Err(ConfigError::Invalid { field, reason });
        if self.id == 0 {
            return bad("id", "0 is not a valid node id".into());
        }
        if self.voters.contains(&0) {
            return bad("voters", "0 is not a valid node id".into());
        }
        if !self.voters.contains(&self.id) {
            return bad("voters", format!("must contain this node's id {}", self.id));
        }
        let mut sorted = self.voters.clone();
        sorted.sort_unstable();
        if sorted.windows(2).any(|w| w[0] == w[1]) {
            return bad("voters", format!("duplicate id in {:?}", self.voters));
        }
        if self.heartbeat_interval_ticks == 0 {
            return bad("heartbeat_interval_ticks", "must be at least 1".into());
        }
        if self.election_timeout_ticks_min <= self.heartbeat_interval_ticks {
            return bad(
                "election_timeout_ticks_min",
                format!(
                    "{} must exceed heartbeat_interval_ticks {}",
                    self.election_timeout_ticks_min, self.heartbeat_interval_ticks
                ),
            );
        }
        if self.election_timeout_ticks_max <= self.election_timeout_ticks_min {
            return bad(
                "election_timeout_ticks_max",
                format!(
                    "{} must exceed election_timeout_ticks_min {}",
                    self.election_timeout_ticks_max, self.election_timeout_ticks_min
                ),
            );
        }
        for (field, value) in [
            ("max_inflight_messages", self.max_inflight_messages),
            ("max_message_bytes", self.max_message_bytes),
            ("snapshot_chunk_bytes", self.snapshot_chunk_bytes),
            ("max_uncommitted_entries", self.max_uncommitted_entries),
            ("max_pending_reads", self.max_pending_reads),
        ] {
            if value == 0 {
                return bad(field, "must be at least 1".into());
            }
        }
        if self.read_mode == ReadMode::Lease && !self.check_quorum {
            return bad("read_mode", "Lease reads need check_quorum = true".into());
        }
        Ok(())
    }

    /// Votes needed for a majority of the voters.
    pub(crate) fn quorum(&self) -> usize {
        self.voters.len() / 2 + 1
    }
}

/// A configuration or restored state that the node cannot start from.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config field `{field}` is invalid: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("restored state is inconsistent: {reason}")]
    Restored { reason: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        assert_eq!(Config::new(1, vec![1, 2, 3]).validate(), Ok(()));
    }

    #[test]
    fn bad_fields_are_named() {
        let mut c = Config::new(4, vec![1, 2, 3]);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "voters",
                ..
            })
        ));
        c.voters.push(4);
        c.election_timeout_ticks_max = c.election_timeout_ticks_min;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "election_timeout_ticks_max",
                ..
            })
        ));
        c.election_timeout_ticks_max = 30;
        c.check_quorum = false;
        c.read_mode = ReadMode::Lease;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "read_mode",
                ..
            })
        ));
        c.voters.push(2);
        c.read_mode = ReadMode::ReadIndex;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "voters",
                ..
            })
        ));
    }
}
