//! The runtime's handle on a Raft node: feed it ticks, messages and
//! proposals; collect a [`Ready`]; carry it out; call `advance`.

use crate::config::{Config, ConfigError};
use crate::errors::{CompactError, ProposeError, StepError};
use crate::message::{Message, MessageBody};
use crate::progress::ProgressState;
use crate::raft::{Counters, Raft, ReadState, Role};
use crate::types::{Entry, HardState, Index, NodeId, Restored, Snapshot, Term};

/// What the runtime must do next. Handle it in this order:
///
/// 1. Persist `snapshot` (if any; then discard the **whole** stored log — the
///    core only installs a snapshot whose last entry its log does not hold, so
///    every stored entry is covered by it or conflicts with it), then
///    `entries` (truncating the stored suffix from `entries[0].index` first),
///    then `hard_state` (if any). One fsync covers all three.
/// 2. Send `messages` — only now, because they promise what step 1 stored
///    (a vote, an acknowledged entry).
/// 3. Restore the state machine from `snapshot` (if any), then apply
///    `committed_entries` in order.
/// 4. Serve each of `read_states` once the state machine has applied at
///    least its `index`.
/// 5. Call [`RawNode::advance`].
///
/// Do not call `step`, `tick`, `propose` or `read_index` between `ready()`
/// and `advance()`.
///
/// With [`Config::async_storage_writes`](crate::Config::async_storage_writes)
/// the order relaxes (thesis §10.2.1, etcd-raft's asynchronous storage
/// writes): send `early_messages` at once; start the write of step 1 and
/// keep `messages` until it is durable; apply `committed_entries` and serve
/// reads without waiting (every committed entry is durable on a majority);
/// call `advance`. Writes of later Readies may be started before earlier ones
/// finish, but must become durable in order. When a write is durable, send
/// its `messages` and call [`RawNode::on_persisted`] with the (index, term)
/// of the last entry it held (or of its snapshot): only then does the
/// leader count itself toward the commit quorum for those entries.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Persist if Some: changed since the last Ready.
    pub hard_state: Option<HardState>,
    /// Append to the stored log; if `entries[0].index` is at or below the
    /// last stored index, the stored suffix from that index goes first.
    pub entries: Vec<Entry>,
    /// Received from the leader: persist it, discard the stored log, restore
    /// the state machine from it before applying `committed_entries`.
    pub snapshot: Option<Snapshot>,
    /// Send only after `hard_state`, `entries` and `snapshot` are durable.
    pub messages: Vec<Message>,
    /// May be sent before this Ready's writes are durable: the leader's
    /// Appends and heartbeats, which promise nothing about its own disk.
    /// Always empty unless `Config::async_storage_writes`.
    pub early_messages: Vec<Message>,
    /// Apply in order (after restoring `snapshot`, if any).
    pub committed_entries: Vec<Entry>,
    /// Serve each read once applied >= its index.
    pub read_states: Vec<ReadState>,
}

impl Ready {
    pub fn is_empty(&self) -> bool {
        self.hard_state.is_none()
            && self.entries.is_empty()
            && self.snapshot.is_none()
            && self.messages.is_empty()
            && self.early_messages.is_empty()
            && self.committed_entries.is_empty()
            && self.read_states.is_empty()
    }
}

/// What the leader knows about one follower (empty on other roles).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FollowerStatus {
    pub id: NodeId,
    pub match_index: Index,
    pub next_index: Index,
    pub state: ProgressState,
    pub inflight_messages: usize,
    pub recent_active: bool,
}

/// A snapshot of the node's state for routing, metrics and tests.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Status {
    pub id: NodeId,
    pub role: Role,
    pub term: Term,
    pub vote: Option<NodeId>,
    /// The leader of `term` as far as this node knows: itself when leader,
    /// the sender of the last valid Append/Heartbeat when follower, None
    /// while campaigning or after a timeout. Use it as the client's hint.
    pub leader: Option<NodeId>,
    pub commit: Index,
    /// Confirmed applied by `advance`.
    pub applied: Index,
    pub first_index: Index,
    pub last_index: Index,
    /// Highest index reported durable by `on_persisted` (or restored).
    pub persisted_index: Index,
    pub snapshot_index: Index,
    pub snapshot_term: Term,
    pub lead_transferee: Option<NodeId>,
    pub followers: Vec<FollowerStatus>,
}

/// A Raft node without I/O. See the crate docs and [`Ready`].
pub struct RawNode {
    raft: Raft,
    /// The hard state last handed out in a Ready (the true one, even when a
    /// mutation reported something else).
    previous_hard_state: HardState,
    /// Term, vote and commit after the previous input, for the invariants.
    observed: HardState,
}

impl std::fmt::Debug for RawNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RawNode")
            .field("status", &self.status())
            .finish()
    }
}

impl RawNode {
    /// Starts a node from its configuration and what storage recovered
    /// (`Restored::default()` for a new node). After a restart, committed
    /// entries after the snapshot are handed out again for applying.
    pub fn new(config: Config, restored: Restored) -> Result<RawNode, ConfigError> {
        let previous_hard_state = restored.hard_state.clone();
        let raft = Raft::new(config, restored)?;
        let observed = raft.hard_state();
        Ok(RawNode {
            raft,
            previous_hard_state,
            observed,
        })
    }

    /// One logical clock tick.
    pub fn tick(&mut self) {
        self.raft.tick();
        self.check_invariants();
    }

    /// Feeds one message from a peer. An `Err` means it was dropped and
    /// counted (stale, unknown sender, malformed...): normal under faults.
    pub fn step(&mut self, message: Message) -> Result<(), StepError> {
        let result = self.raft.step(message);
        self.check_invariants();
        result
    }

    /// Appends `data` to the log if this node is the leader; returns its
    /// index. Committing is not guaranteed: watch `committed_entries` for
    /// an entry with this index *and the term of the leader that took it*.
    pub fn propose(&mut self, data: Vec<u8>) -> Result<Index, ProposeError> {
        let result = self.raft.propose(data);
        self.check_invariants();
        result
    }

    /// Requests a linearizable read. The answer arrives as a `ReadState`
    /// with the same `ctx` in a later Ready (on a follower: after the leader
    /// answers the forwarded request). A lost request is never answered:
    /// time out and retry with the same or a new ctx.
    pub fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), ProposeError> {
        self.raft.read_index(ctx)
    }

    /// Asks the leader to hand leadership to `to`: it catches `to` up, then
    /// sends TimeoutNow. Proposals are refused meanwhile; the transfer is
    /// abandoned after an election timeout.
    pub fn transfer_leadership(&mut self, to: NodeId) -> Result<(), ProposeError> {
        self.raft.transfer_leadership(to)
    }

    /// Starts an election now (skipping the timeout); a no-op on a leader.
    /// For tests and operators: it skips the wait that lease reads rely on
    /// (a restarted voter has forgotten its lease), so do not call it in a
    /// cluster that uses `ReadMode::Lease`.
    pub fn campaign(&mut self) {
        let pre_vote = self.raft.cfg.pre_vote;
        self.raft.campaign(pre_vote, false);
        self.check_invariants();
    }

    /// The application has a snapshot of everything applied up to `index`:
    /// the log up to `index` is dropped and the snapshot is kept to send to
    /// lagging followers. The runtime persists the snapshot itself.
    pub fn compact(&mut self, index: Index, snapshot_data: Vec<u8>) -> Result<(), CompactError> {
        self.raft.compact(index, snapshot_data)
    }

    pub fn has_ready(&self) -> bool {
        let r = &self.raft;
        r.hard_state() != self.previous_hard_state
            || !r.messages.is_empty()
            || !r.read_states.is_empty()
            || r.log.pending_snapshot.is_some()
            || !r.log.unstable_entries().is_empty()
            || r.log.has_committed_to_apply()
            || (r.role == Role::Leader && r.append_broadcast_pending)
            || r.read_heartbeat_pending_flag()
    }

    /// Collects everything to persist, send and apply. Each item is handed
    /// out once; see [`Ready`] for the order of handling.
    pub fn ready(&mut self) -> Ready {
        self.raft.flush();
        let hard_state = self.raft.hard_state();
        let hard_state = (hard_state != self.previous_hard_state).then(|| {
            self.previous_hard_state = hard_state.clone();
            if self.raft.cfg.mutations.forget_to_persist_vote {
                HardState {
                    vote: None,
                    ..hard_state
                }
            } else {
                hard_state
            }
        });
        let log = &mut self.raft.log;
        let snapshot = log.pending_snapshot.take();
        let entries = log.unstable_entries().to_vec();
        log.unstable_from = log.last_index() + 1;
        if !self.raft.cfg.async_storage_writes {
            // The classic contract: durable before anything else happens.
            log.persisted = log.last_index();
        }
        let committed_entries = log.committed_to_apply().to_vec();
        log.applying = log.applying.max(log.committed);
        let mut messages = std::mem::take(&mut self.raft.messages);
        let early_messages = if self.raft.cfg.async_storage_writes {
            let (early, held) = messages.into_iter().partition(may_precede_persistence);
            messages = held;
            early
        } else {
            Vec::new()
        };
        Ready {
            hard_state,
            entries,
            snapshot,
            messages,
            early_messages,
            committed_entries,
            read_states: std::mem::take(&mut self.raft.read_states),
        }
    }

    /// Under `Config::async_storage_writes`: everything handed out in
    /// Readies up to the entry at `index` with term `term` (or the snapshot
    /// there) is now durable. A leader may commit more now; check
    /// `has_ready`. Reports that no longer match the log (it was truncated
    /// or replaced since) are ignored. Harmless without async writes.
    pub fn on_persisted(&mut self, index: Index, term: Term) {
        self.raft.log.on_persisted(index, term);
        if self.raft.role == Role::Leader {
            self.raft.maybe_commit();
        }
        self.check_invariants();
    }

    /// The last Ready was handled: its committed entries are applied.
    pub fn advance(&mut self) {
        let log = &mut self.raft.log;
        log.applied = log.applying;
        self.check_invariants();
    }

    pub fn status(&self) -> Status {
        let r = &self.raft;
        let followers = if r.role == Role::Leader {
            r.progress
                .iter()
                .map(|(&id, p)| FollowerStatus {
                    id,
                    match_index: p.match_index,
                    next_index: p.next_index,
                    state: p.state,
                    inflight_messages: p.inflights.len(),
                    recent_active: r.recently_active(p),
                })
                .collect()
        } else {
            Vec::new()
        };
        Status {
            id: r.id,
            role: r.role,
            term: r.term,
            vote: r.vote,
            leader: r.leader,
            commit: r.log.committed,
            applied: r.log.applied,
            first_index: r.log.first_index(),
            last_index: r.log.last_index(),
            persisted_index: r.log.persisted,
            snapshot_index: r.log.snapshot_index,
            snapshot_term: r.log.snapshot_term,
            lead_transferee: r.lead_transferee,
            followers,
        }
    }

    pub fn counters(&self) -> &Counters {
        &self.raft.counters
    }

    /// Checked after every input: term and commit never decrease, one vote
    /// per term, applied <= commit <= last index.
    fn check_invariants(&mut self) {
        let now = self.raft.hard_state();
        let before = &self.observed;
        assert!(
            now.term >= before.term,
            "term decreased from {} to {}",
            before.term,
            now.term
        );
        assert!(
            now.commit >= before.commit,
            "commit decreased from {} to {}",
            before.commit,
            now.commit
        );
        if now.term == before.term && before.vote.is_some() {
            assert_eq!(
                now.vote, before.vote,
                "vote changed within term {}",
                now.term
            );
        }
        self.observed = now;
        let log = &self.raft.log;
        assert!(
            log.applied <= log.committed,
            "applied {} above commit {}",
            log.applied,
            log.committed
        );
        assert!(
            log.committed <= log.last_index(),
            "commit {} above last index {}",
            log.committed,
            log.last_index()
        );
        assert!(
            log.persisted <= log.last_index(),
            "persisted {} above last index {}",
            log.persisted,
            log.last_index()
        );
    }
}

/// Messages that promise nothing about the sender's own disk: a leader's
/// Appends carry entries the follower persists before it acknowledges, and
/// heartbeats carry a commit index that a majority already holds durably.
/// Votes, acknowledgements and snapshot answers must wait for the write.
fn may_precede_persistence(message: &Message) -> bool {
    matches!(
        message.body,
        MessageBody::Append { .. } | MessageBody::Heartbeat { .. }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{EntryKind, SnapshotMeta};

    fn entry(term: Term, index: Index) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![],
        }
    }

    fn restore(restored: Restored) -> Result<RawNode, ConfigError> {
        RawNode::new(Config::new(1, vec![1, 2, 3]), restored)
    }

    #[test]
    fn inconsistent_restored_state_is_refused_with_a_reason() {
        let hard_state = HardState {
            term: 3,
            vote: None,
            commit: 0,
        };
        let gap = Restored {
            hard_state: hard_state.clone(),
            entries: vec![entry(1, 1), entry(1, 3)],
            ..Restored::default()
        };
        assert!(matches!(restore(gap), Err(ConfigError::Restored { .. })));
        let commit_beyond = Restored {
            hard_state: HardState {
                commit: 5,
                ..hard_state.clone()
            },
            entries: vec![entry(1, 1)],
            ..Restored::default()
        };
        assert!(matches!(
            restore(commit_beyond),
            Err(ConfigError::Restored { .. })
        ));
        let future_term = Restored {
            hard_state: hard_state.clone(),
            entries: vec![entry(4, 1)],
            ..Restored::default()
        };
        assert!(matches!(
            restore(future_term),
            Err(ConfigError::Restored { .. })
        ));
        let stranger_vote = Restored {
            hard_state: HardState {
                vote: Some(9),
                ..hard_state
            },
            ..Restored::default()
        };
        assert!(matches!(
            restore(stranger_vote),
            Err(ConfigError::Restored { .. })
        ));
    }

    /// After a restart, the committed entries after the snapshot are handed
    /// out again (the state machine was rebuilt from the snapshot only), and
    /// nothing is re-persisted.
    #[test]
    fn restart_replays_committed_entries_after_the_snapshot() {
        let restored = Restored {
            hard_state: HardState {
                term: 2,
                vote: Some(2),
                commit: 6,
            },
            snapshot: Some(SnapshotMeta {
                index: 4,
                term: 1,
                voters: vec![1, 2, 3],
            }),
            // Entries at or below the snapshot index are skipped.
            entries: (3..=7)
                .map(|i| entry(if i < 6 { 1 } else { 2 }, i))
                .collect(),
            snapshot_data: b"state at 4".to_vec(),
        };
        let mut node = restore(restored).unwrap();
        let status = node.status();
        assert_eq!(
            (status.first_index, status.last_index, status.commit),
            (5, 7, 6)
        );
        assert_eq!(status.applied, 4);
        let ready = node.ready();
        assert_eq!(ready.hard_state, None);
        assert!(ready.entries.is_empty());
        let replayed: Vec<Index> = ready.committed_entries.iter().map(|e| e.index).collect();
        assert_eq!(replayed, vec![5, 6]);
        node.advance();
        assert_eq!(node.status().applied, 6);
        assert!(!node.has_ready());
    }
}
