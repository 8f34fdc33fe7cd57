//! The log's shape after a snapshot, and the rules every store applies to a
//! Ready before writing it. Both the disk store (which keeps only terms in
//! memory) and the in-memory store (which keeps whole entries) use these,
//! so they accept and refuse exactly the same inputs.

use std::collections::VecDeque;

use raft::{Entry, HardState, Index, Snapshot, Term};

use crate::error::StorageError;
use crate::ENTRY_BYTES_MAX;

/// Something with a term: a whole entry, or just its term.
pub(crate) trait HasTerm {
    fn term(&self) -> Term;
}

impl HasTerm for Entry {
    fn term(&self) -> Term {
        self.term
    }
}

impl HasTerm for Term {
    fn term(&self) -> Term {
        *self
    }
}

/// A snapshot point followed by consecutive log items.
///
/// In the stores `first_index() == snapshot_index + 1` always holds. During
/// recovery the first segments may have been deleted by compaction, so an
/// empty log accepts its next item at any index; [`SuffixLog::is_anchored`]
/// tells whether the result lines up with the snapshot.
#[derive(Debug, Clone)]
pub(crate) struct SuffixLog<T> {
    pub(crate) snapshot_index: Index,
    pub(crate) snapshot_term: Term,
    /// Index of `items[0]`; meaningless while `items` is empty.
    first: Index,
    pub(crate) items: VecDeque<T>,
}

impl<T> Default for SuffixLog<T> {
    fn default() -> Self {
        SuffixLog {
            snapshot_index: 0,
            snapshot_term: 0,
            first: 0,
            items: VecDeque::new(),
        }
    }
}

impl<T: HasTerm> SuffixLog<T> {
    /// An empty log right after the snapshot point (`index`, `term`).
    pub(crate) fn after_snapshot(index: Index, term: Term) -> Self {
        SuffixLog {
            snapshot_index: index,
            snapshot_term: term,
            ..SuffixLog::default()
        }
    }

    pub(crate) fn first_index(&self) -> Index {
        if self.items.is_empty() {
            self.snapshot_index + 1
        } else {
            self.first
        }
    }

    pub(crate) fn last_index(&self) -> Index {
        if self.items.is_empty() {
            self.snapshot_index
        } else {
            self.first + self.items.len() as u64 - 1
        }
    }

    /// The term at `index`: the snapshot's term at its index, `0` at index 0
    /// (the empty prefix), `None` where the log has nothing.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if self.items.is_empty() || index < self.first {
            return None;
        }
        self.items
            .get((index - self.first) as usize)
            .map(HasTerm::term)
    }

    /// Drops every item with index >= `from_index`.
    pub(crate) fn truncate_from(&mut self, from_index: Index) {
        if self.items.is_empty() || from_index > self.last_index() {
            return;
        }
        let keep = from_index.saturating_sub(self.first);
        self.items.truncate(keep as usize);
    }

    /// Moves the snapshot point to (`index`, `term`) and drops every item
    /// at or below it. Items above are kept; a caller that replaces the log
    /// truncates them first. An older snapshot point is ignored (segments
    /// repeat the snapshot they started under).
    pub(crate) fn compact_to(&mut self, index: Index, term: Term) {
        if index < self.snapshot_index {
            return;
        }
        self.snapshot_index = index;
        self.snapshot_term = term;
        while !self.items.is_empty() && self.first <= index {
            self.items.pop_front();
            self.first += 1;
        }
    }

    /// Appends `item` at `index`; false if that would leave a hole (the
    /// caller reports it). An empty log takes any index above the snapshot.
    pub(crate) fn push(&mut self, index: Index, item: T) -> bool {
        if self.items.is_empty() {
            if index <= self.snapshot_index {
                return false;
            }
            self.first = index;
        } else if index != self.last_index() + 1 {
            return false;
        }
        self.items.push_back(item);
        true
    }

    /// True when the items start right after the snapshot point.
    pub(crate) fn is_anchored(&self) -> bool {
        self.items.is_empty() || self.first == self.snapshot_index + 1
    }
}

/// How a snapshot is written into the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SnapshotPlan {
    pub(crate) index: Index,
    pub(crate) term: Term,
    /// True when the log has no entry (`index`, `term`): the whole log is
    /// discarded (Raft §7: "otherwise discard the entire log"). False when
    /// it has that entry: the entries after it are kept.
    pub(crate) replaces_log: bool,
}

/// What one append will write, after validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan<'a> {
    pub(crate) snapshot: Option<SnapshotPlan>,
    /// Set when the new entries overwrite a stored suffix (the Ready rule:
    /// "if entries[0].index <= last stored index, the stored suffix from
    /// that index is truncated first").
    pub(crate) truncate_from: Option<Index>,
    pub(crate) entries: &'a [Entry],
    pub(crate) hard_state: Option<&'a HardState>,
}

impl Plan<'_> {
    pub(crate) fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }

    /// Applies the plan to an in-memory log (`make` turns an entry into
    /// the item the log keeps).
    pub(crate) fn apply_to<T: HasTerm>(&self, log: &mut SuffixLog<T>, make: impl Fn(&Entry) -> T) {
        if let Some(s) = self.snapshot {
            if s.replaces_log {
                log.truncate_from(s.index + 1);
            }
            log.compact_to(s.index, s.term);
        }
        if let Some(from) = self.truncate_from {
            log.truncate_from(from);
        }
        for e in self.entries {
            let pushed = log.push(e.index, make(e));
            debug_assert!(pushed, "plan validated entry {} as contiguous", e.index);
        }
    }
}

/// Validates one Ready against the stored log and decides which records it
/// becomes. Refuses (without writing anything) what would break the log:
/// a term that goes backwards, a stale snapshot, a gap, entries that are
/// not consecutive, entries at or below the snapshot, oversized entries.
pub(crate) fn plan<'a, T: HasTerm>(
    log: &SuffixLog<T>,
    current: &HardState,
    hard_state: Option<&'a HardState>,
    entries: &'a [Entry],
    snapshot: Option<&Snapshot>,
) -> Result<Plan<'a>, StorageError> {
    if let Some(hs) = hard_state {
        if hs.term < current.term {
            return Err(StorageError::InvalidAppend {
                detail: format!(
                    "hard state term goes back from {} to {}",
                    current.term, hs.term
                ),
            });
        }
    }
    let mut snapshot_plan = None;
    let (mut snapshot_index, mut last_index) = (log.snapshot_index, log.last_index());
    if let Some(s) = snapshot {
        let (index, term) = (s.meta.index, s.meta.term);
        if index < log.snapshot_index || (index == log.snapshot_index && index > 0) {
            if index == log.snapshot_index && term == log.snapshot_term {
                // The same snapshot again: nothing to write for it.
            } else {
                return Err(StorageError::StaleSnapshot {
                    index,
                    term,
                    stored_index: log.snapshot_index,
                });
            }
        } else if index > 0 {
            let replaces_log = log.term(index) != Some(term);
            snapshot_plan = Some(SnapshotPlan {
                index,
                term,
                replaces_log,
            });
            snapshot_index = index;
            last_index = if replaces_log {
                index
            } else {
                last_index.max(index)
            };
        }
    }
    let mut truncate_from = None;
    if let Some(first) = entries.first() {
        for pair in entries.windows(2) {
            if pair[1].index != pair[0].index + 1 {
                return Err(StorageError::InvalidAppend {
                    detail: format!(
                        "entries not consecutive: {} followed by {}",
                        pair[0].index, pair[1].index
                    ),
                });
            }
        }
        if let Some(e) = entries.iter().find(|e| e.data.len() > ENTRY_BYTES_MAX) {
            return Err(StorageError::EntryTooLarge {
                index: e.index,
                bytes: e.data.len(),
                limit_bytes: ENTRY_BYTES_MAX,
            });
        }
        if first.index <= snapshot_index {
            return Err(StorageError::InvalidAppend {
                detail: format!(
                    "entry {} is at or below the snapshot index {snapshot_index}",
                    first.index
                ),
            });
        }
        if first.index > last_index + 1 {
            return Err(StorageError::InvalidAppend {
                detail: format!("gap: entry {} follows last index {last_index}", first.index),
            });
        }
        if first.index <= last_index {
            truncate_from = Some(first.index);
        }
    }
    Ok(Plan {
        snapshot: snapshot_plan,
        truncate_from,
        entries,
        hard_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{EntryKind, SnapshotMeta};

    fn e(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![],
        }
    }

    fn snap(index: Index, term: Term) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                voters: vec![1],
            },
            data: vec![],
        }
    }

    fn log_of(terms: &[Term]) -> SuffixLog<Term> {
        let mut log = SuffixLog::default();
        for (i, t) in terms.iter().enumerate() {
            assert!(log.push(i as u64 + 1, *t));
        }
        log
    }

    #[test]
    fn overlapping_entries_truncate_the_stored_suffix() {
        let log = log_of(&[1, 1, 1]);
        let entries = [e(2, 2), e(3, 2), e(4, 2)];
        let p = plan(&log, &HardState::default(), None, &entries, None).expect("valid");
        assert_eq!(p.truncate_from, Some(2));
        let mut applied = log.clone();
        p.apply_to(&mut applied, |e| e.term);
        assert_eq!(applied.items, [1, 2, 2, 2]);
    }

    #[test]
    fn gaps_and_entries_below_the_snapshot_are_refused() {
        let mut log = log_of(&[1, 1, 1]);
        let gap = [e(5, 1)];
        assert!(plan(&log, &HardState::default(), None, &gap, None).is_err());
        log.compact_to(2, 1);
        let below = [e(2, 1)];
        assert!(plan(&log, &HardState::default(), None, &below, None).is_err());
        let holes = [e(3, 1), e(5, 1)];
        assert!(plan(&log, &HardState::default(), None, &holes, None).is_err());
    }

    #[test]
    fn a_snapshot_matching_the_log_keeps_the_suffix_and_a_foreign_one_replaces_it() {
        let log = log_of(&[1, 1, 2, 2]);
        let keep = plan(&log, &HardState::default(), None, &[], Some(&snap(2, 1))).expect("valid");
        assert_eq!(keep.snapshot.map(|s| s.replaces_log), Some(false));
        let mut kept = log.clone();
        keep.apply_to(&mut kept, |e| e.term);
        assert_eq!((kept.first_index(), kept.last_index()), (3, 4));

        let replace =
            plan(&log, &HardState::default(), None, &[], Some(&snap(3, 5))).expect("valid");
        assert_eq!(replace.snapshot.map(|s| s.replaces_log), Some(true));
        let mut replaced = log.clone();
        replace.apply_to(&mut replaced, |e| e.term);
        assert_eq!((replaced.first_index(), replaced.last_index()), (4, 3));
        assert_eq!(replaced.term(3), Some(5));
    }

    #[test]
    fn stale_snapshots_and_backward_terms_are_refused() {
        let mut log = log_of(&[1, 1, 1]);
        log.compact_to(2, 1);
        assert!(matches!(
            plan(&log, &HardState::default(), None, &[], Some(&snap(1, 1))),
            Err(StorageError::StaleSnapshot { .. })
        ));
        // The same snapshot again is accepted and writes nothing.
        let again = plan(&log, &HardState::default(), None, &[], Some(&snap(2, 1))).expect("ok");
        assert!(again.is_empty());
        let current = HardState {
            term: 5,
            vote: None,
            commit: 0,
        };
        let back = HardState {
            term: 4,
            vote: None,
            commit: 0,
        };
        assert!(plan(&log, &current, Some(&back), &[], None).is_err());
    }
}
