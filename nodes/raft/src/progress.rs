//! What a leader knows about each follower (etcd's "progress"): how much of
//! the log matches, what to send next, and how much is in flight.

use crate::types::Index;
use std::collections::VecDeque;

/// How the leader is sending to one follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ProgressState {
    /// We do not know where the follower's log diverges: send one Append at a
    /// time and wait for its answer (or the next heartbeat answer).
    Probe,
    /// The follower's log matches: stream Appends optimistically, up to the
    /// in-flight window.
    Replicate,
    /// The follower needs entries we have compacted away: an InstallSnapshot
    /// transfer of the snapshot at `index` is in progress.
    Snapshot { index: Index },
}

/// The bounded pipelining window: the last index of each Append in flight,
/// oldest first. Acknowledging index `i` frees every message ending at or
/// before `i`.
#[derive(Clone, Debug)]
pub(crate) struct Inflights {
    last_indexes: VecDeque<Index>,
    capacity: usize,
}

impl Inflights {
    pub(crate) fn new(capacity: usize) -> Self {
        Inflights {
            last_indexes: VecDeque::with_capacity(capacity.min(1024)),
            capacity,
        }
    }
    pub(crate) fn full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }
    pub(crate) fn len(&self) -> usize {
        self.last_indexes.len()
    }
    pub(crate) fn add(&mut self, last_index: Index) {
        assert!(
            !self.full(),
            "inflight window of {} overflowed",
            self.capacity
        );
        if let Some(&back) = self.last_indexes.back() {
            assert!(
                back < last_index,
                "inflight indexes must grow: {back} then {last_index}"
            );
        }
        self.last_indexes.push_back(last_index);
    }
    pub(crate) fn free_to(&mut self, index: Index) {
        while self
            .last_indexes
            .front()
            .is_some_and(|&front| front <= index)
        {
            self.last_indexes.pop_front();
        }
    }
    pub(crate) fn free_first_one(&mut self) {
        self.last_indexes.pop_front();
    }
    pub(crate) fn reset(&mut self) {
        self.last_indexes.clear();
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Progress {
    /// Highest index known to match the leader's log.
    pub(crate) match_index: Index,
    /// Next index to send.
    pub(crate) next_index: Index,
    pub(crate) state: ProgressState,
    /// In Probe: an Append is outstanding, do not send another until an
    /// answer or a heartbeat answer arrives.
    pub(crate) probe_sent: bool,
    pub(crate) inflights: Inflights,
    /// Heard from since the last check-quorum round.
    /// When the leader last heard from this follower (leader's ticks), for
    /// check-quorum.
    pub(crate) last_active_tick: Option<u64>,
    /// Highest ReadIndex round this follower confirmed in the current term.
    pub(crate) read_round_acked: u64,
    /// Lease mode: when the newest heartbeat this follower acknowledged was
    /// sent (leader's ticks). It will not vote for another candidate for an
    /// election timeout after receiving it.
    pub(crate) lease_acked_sent_tick: Option<u64>,
    /// InstallSnapshot: next byte to send, and whether a chunk is in flight.
    pub(crate) snapshot_offset: u64,
    pub(crate) snapshot_chunk_sent: bool,
}

impl Progress {
    pub(crate) fn new(next_index: Index, inflight_capacity: usize) -> Self {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(inflight_capacity),
            last_active_tick: None,
            read_round_acked: 0,
            lease_acked_sent_tick: None,
            snapshot_offset: 0,
            snapshot_chunk_sent: false,
        }
    }

    pub(crate) fn become_probe(&mut self) {
        // After a snapshot the follower holds at least the snapshot's index.
        if let ProgressState::Snapshot { index } = self.state {
            self.next_index = self.match_index.max(index) + 1;
        } else {
            self.next_index = self.match_index + 1;
        }
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.next_index = self.match_index + 1;
        self.probe_sent = false;
        self.inflights.reset();
    }

    pub(crate) fn become_snapshot(&mut self, index: Index) {
        self.state = ProgressState::Snapshot { index };
        self.probe_sent = false;
        self.inflights.reset();
        self.snapshot_offset = 0;
        self.snapshot_chunk_sent = false;
    }

    /// Whether the leader may send another Append now.
    pub(crate) fn is_paused(&self) -> bool {
        match self.state {
            ProgressState::Probe => self.probe_sent,
            ProgressState::Replicate => self.inflights.full(),
            ProgressState::Snapshot { .. } => true,
        }
    }

    /// An Append ending at `last_index` went out.
    pub(crate) fn sent_entries(&mut self, last_index: Index, entry_count: usize) {
        match self.state {
            ProgressState::Replicate => {
                if entry_count > 0 {
                    self.next_index = last_index + 1;
                    self.inflights.add(last_index);
                }
            }
            ProgressState::Probe => self.probe_sent = true,
            ProgressState::Snapshot { .. } => {}
        }
    }

    /// The follower acknowledged `index`. Returns false for a stale answer.
    pub(crate) fn maybe_update(&mut self, index: Index) -> bool {
        let updated = index > self.match_index;
        if updated {
            self.match_index = index;
            self.probe_sent = false;
        }
        self.next_index = self.next_index.max(index + 1);
        updated
    }

    /// The follower rejected an Append whose previous index was `rejected`;
    /// `hint` is where the leader computed it should retry. Returns false if
    /// the rejection is stale (answers an older Append).
    pub(crate) fn maybe_decrease_to(&mut self, rejected: Index, hint: Index) -> bool {
        match self.state {
            ProgressState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.next_index = hint.min(rejected).max(self.match_index + 1);
                self.state = ProgressState::Probe;
                self.inflights.reset();
                self.probe_sent = false;
                true
            }
            ProgressState::Probe => {
                // Rejecting what it acknowledged earlier: a reordered answer.
                if rejected <= self.match_index || rejected + 1 != self.next_index {
                    return false;
                }
                self.next_index = hint.min(rejected).max(self.match_index + 1);
                self.probe_sent = false;
                true
            }
            ProgressState::Snapshot { .. } => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inflight_window_is_bounded_and_freed_by_acknowledgement() {
        let mut w = Inflights::new(3);
        w.add(5);
        w.add(9);
        w.add(12);
        assert!(w.full());
        w.free_to(9);
        assert_eq!(w.len(), 1);
        assert!(!w.full());
        w.free_first_one();
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(11, 4);
        p.become_replicate();
        p.maybe_update(8);
        p.sent_entries(12, 4);
        assert_eq!(p.next_index, 13);
        // Rejection of an Append at or below the match index is stale.
        assert!(!p.maybe_decrease_to(8, 3));
        assert!(p.maybe_decrease_to(12, 10));
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next_index, 10);
        // In Probe only the rejection of exactly next-1 counts.
        assert!(!p.maybe_decrease_to(11, 9));
        assert!(p.maybe_decrease_to(9, 2));
        // Never below match + 1.
        assert_eq!(p.next_index, 9);
    }
}
