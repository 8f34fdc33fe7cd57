//! The in-memory log: a snapshot offset followed by entries, plus the
//! cursors that say what the runtime has persisted and applied.
//!
//! Indexes: `snapshot_index` is covered by the snapshot; `entries[0]` has
//! index `snapshot_index + 1`. Terms never decrease along the log, which
//! lets lookups by term use binary search.

use crate::types::{Entry, Index, Snapshot, Term};

#[derive(Clone, Debug)]
pub(crate) struct RaftLog {
    pub(crate) snapshot_index: Index,
    pub(crate) snapshot_term: Term,
    entries: Vec<Entry>,
    /// Highest index known to be committed.
    pub(crate) committed: Index,
    /// Highest index the application confirmed applied (by `advance`).
    pub(crate) applied: Index,
    /// Highest index handed to the application to apply (in a Ready).
    pub(crate) applying: Index,
    /// First index not yet handed to the runtime for persistence.
    pub(crate) unstable_from: Index,
    /// Highest index whose entry, and every entry before it, the runtime
    /// reported durable (`RawNode::on_persisted`) and that still matches
    /// this log. Only the leader's commit rule under
    /// `Config::async_storage_writes` reads it.
    pub(crate) persisted: Index,
    /// A snapshot received from the leader, not yet handed out in a Ready.
    pub(crate) pending_snapshot: Option<Snapshot>,
}

impl RaftLog {
    /// A log restored from storage: everything in it is already stable.
    pub(crate) fn restored(
        snapshot_index: Index,
        snapshot_term: Term,
        entries: Vec<Entry>,
        committed: Index,
    ) -> Self {
        let last = snapshot_index + entries.len() as u64;
        RaftLog {
            snapshot_index,
            snapshot_term,
            entries,
            committed,
            applied: snapshot_index,
            applying: snapshot_index,
            unstable_from: last + 1,
            persisted: last,
            pending_snapshot: None,
        }
    }

    /// The runtime made durable everything it was handed up to `index`,
    /// whose term was `term`. A report for an entry this log no longer
    /// holds (truncated since, or replaced by a different term) proves
    /// nothing about the current log and is ignored; a later write's report
    /// will cover it. Reports for compacted indexes are ignored too.
    pub(crate) fn on_persisted(&mut self, index: Index, term: Term) {
        if index > self.persisted && self.term(index) == Some(term) {
            self.persisted = index;
        }
    }

    pub(crate) fn first_index(&self) -> Index {
        self.snapshot_index + 1
    }

    pub(crate) fn last_index(&self) -> Index {
        self.snapshot_index + self.entries.len() as u64
    }

    pub(crate) fn last_term(&self) -> Term {
        self.entries.last().map_or(self.snapshot_term, |e| e.term)
    }

    /// The term of the entry at `index`; None if compacted away or beyond
    /// the end.
    pub(crate) fn term(&self, index: Index) -> Option<Term> {
        if index == self.snapshot_index {
            return Some(self.snapshot_term);
        }
        if index < self.snapshot_index || index > self.last_index() {
            return None;
        }
        Some(self.entries[self.offset(index)].term)
    }

    fn offset(&self, index: Index) -> usize {
        (index - self.snapshot_index - 1) as usize
    }

    /// Entries `[from, to]`, both within the log (after the snapshot).
    pub(crate) fn slice(&self, from: Index, to: Index) -> &[Entry] {
        assert!(
            from > self.snapshot_index,
            "slice from {from} at or below snapshot {}",
            self.snapshot_index
        );
        assert!(
            to <= self.last_index(),
            "slice to {to} beyond last index {}",
            self.last_index()
        );
        if from > to {
            return &[];
        }
        &self.entries[self.offset(from)..=self.offset(to)]
    }

    /// §5.4.1: is a log ending at (`last_index`, `last_term`) at least as
    /// up-to-date as ours?
    pub(crate) fn is_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        last_term > self.last_term()
            || (last_term == self.last_term() && last_index >= self.last_index())
    }

    /// First index whose term is at least `term` (binary search; terms never
    /// decrease along the log). Used for the conflict hint.
    pub(crate) fn first_index_of_term(&self, term: Term) -> Index {
        let position = self.entries.partition_point(|e| e.term < term);
        self.snapshot_index + 1 + position as u64
    }

    /// Last index whose term is exactly `term`, if any entry of that term is
    /// still in the log. Used by the leader to skip a conflicting term.
    pub(crate) fn last_index_of_term(&self, term: Term) -> Option<Index> {
        let position = self.entries.partition_point(|e| e.term <= term);
        if position == 0 {
            return (self.snapshot_term == term && self.snapshot_index > 0)
                .then_some(self.snapshot_index);
        }
        let index = self.snapshot_index + position as u64;
        (self.entries[position - 1].term == term).then_some(index)
    }

    /// Leader-side append of a new entry at the end.
    pub(crate) fn append(&mut self, entry: Entry) {
        assert_eq!(
            entry.index,
            self.last_index() + 1,
            "appended entry must follow the last index"
        );
        assert!(
            entry.term >= self.last_term(),
            "term {} after {} in log",
            entry.term,
            self.last_term()
        );
        self.entries.push(entry);
    }

    /// Follower-side: drop entries from `index` on (they conflict with the
    /// leader). Never touches committed entries.
    pub(crate) fn truncate_from(&mut self, index: Index) {
        assert!(
            index > self.committed,
            "truncating from {index} would drop committed {}",
            self.committed
        );
        assert!(
            index > self.snapshot_index,
            "truncating from {index} into snapshot {}",
            self.snapshot_index
        );
        let keep = self.offset(index);
        self.entries.truncate(keep);
        self.unstable_from = self.unstable_from.min(index);
        self.persisted = self.persisted.min(index - 1);
    }

    pub(crate) fn commit_to(&mut self, index: Index) {
        if index <= self.committed {
            return;
        }
        assert!(
            index <= self.last_index(),
            "commit {index} beyond last index {}",
            self.last_index()
        );
        self.committed = index;
    }

    /// Drops entries up to `index`, which the application has been handed
    /// for applying (it may snapshot before calling `advance`).
    pub(crate) fn compact_to(&mut self, index: Index) {
        assert!(
            index > self.snapshot_index && index <= self.applying,
            "compact to {index} outside ({}, {}]",
            self.snapshot_index,
            self.applying
        );
        let term = self.term(index).unwrap_or(self.snapshot_term);
        let drop = self.offset(index) + 1;
        self.entries.drain(..drop);
        self.snapshot_index = index;
        self.snapshot_term = term;
        self.unstable_from = self.unstable_from.max(index + 1);
    }

    /// Replaces the whole log with a snapshot received from the leader.
    pub(crate) fn install_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        assert!(
            index > self.committed,
            "installing snapshot {index} at or below commit {}",
            self.committed
        );
        self.entries.clear();
        self.snapshot_index = index;
        self.snapshot_term = snapshot.meta.term;
        self.committed = index;
        self.applying = index;
        self.unstable_from = index + 1;
        // Durable once the runtime reports the snapshot's (index, term).
        self.persisted = self.persisted.min(index);
        self.pending_snapshot = Some(snapshot);
    }

    pub(crate) fn unstable_entries(&self) -> &[Entry] {
        if self.unstable_from > self.last_index() {
            return &[];
        }
        self.slice(self.unstable_from, self.last_index())
    }

    pub(crate) fn has_committed_to_apply(&self) -> bool {
        self.committed > self.applying
    }

    pub(crate) fn committed_to_apply(&self) -> &[Entry] {
        if !self.has_committed_to_apply() {
            return &[];
        }
        self.slice(self.applying + 1, self.committed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::EntryKind;

    fn log_with_terms(terms: &[Term]) -> RaftLog {
        let entries = terms
            .iter()
            .enumerate()
            .map(|(i, &term)| Entry {
                term,
                index: i as u64 + 1,
                kind: EntryKind::Normal,
                data: vec![],
            })
            .collect();
        RaftLog::restored(0, 0, entries, 0)
    }

    #[test]
    fn term_lookups_by_binary_search() {
        let log = log_with_terms(&[1, 1, 2, 2, 2, 4, 5]);
        assert_eq!(log.first_index_of_term(2), 3);
        assert_eq!(log.first_index_of_term(4), 6);
        assert_eq!(log.first_index_of_term(3), 6);
        assert_eq!(log.last_index_of_term(2), Some(5));
        assert_eq!(log.last_index_of_term(3), None);
        assert_eq!(log.last_index_of_term(5), Some(7));
        assert_eq!(log.term(0), Some(0));
        assert_eq!(log.term(8), None);
    }

    #[test]
    fn compaction_keeps_terms_and_indexes() {
        let mut log = log_with_terms(&[1, 1, 2, 3]);
        log.commit_to(3);
        log.applying = 3;
        log.applied = 3;
        log.compact_to(2);
        assert_eq!((log.first_index(), log.last_index()), (3, 4));
        assert_eq!(log.term(2), Some(1));
        assert_eq!(log.term(1), None);
        assert_eq!(log.last_index_of_term(1), Some(2));
        assert_eq!(log.slice(3, 4).len(), 2);
    }

    #[test]
    fn truncation_marks_the_suffix_unstable() {
        let mut log = log_with_terms(&[1, 1, 2, 2]);
        assert!(log.unstable_entries().is_empty());
        log.truncate_from(3);
        assert_eq!(log.last_index(), 2);
        log.append(Entry {
            term: 3,
            index: 3,
            kind: EntryKind::Noop,
            data: vec![],
        });
        assert_eq!(log.unstable_entries().len(), 1);
        assert!(log.is_up_to_date(3, 3));
        assert!(!log.is_up_to_date(9, 2));
    }
}
