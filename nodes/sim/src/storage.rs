//! What a simulated node has on "disk": the state that survives a crash.
//!
//! A Ready's writes land here all at once at the end of its handling (one
//! fsync); a crash before that loses all of them, never half.

use raft::{Entry, HardState, Index, Snapshot, Term};

/// Approximate bytes an entry takes on disk besides its data (term, index,
/// kind, length, checksum), for the persisted-size bounds of Lab 3/4.
const ENTRY_OVERHEAD_BYTES: usize = 32;
const HARD_STATE_BYTES: usize = 32;

/// One node's stable storage.
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub hard_state: HardState,
    /// The latest snapshot: written by the application through
    /// `RawNode::compact`, or received from the leader in a Ready.
    pub snapshot: Option<Snapshot>,
    /// Entries after the snapshot, contiguous by index.
    pub entries: Vec<Entry>,
}

impl Persisted {
    /// Index of the last entry covered by the snapshot (0 without one).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    pub fn last_index(&self) -> Index {
        self.entries
            .last()
            .map_or_else(|| self.snapshot_index(), |e| e.index)
    }

    /// The term of the entry at `index` if this node still knows it (index 0
    /// has term 0; the snapshot's last index has the snapshot's term).
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == 0 {
            return Some(0);
        }
        let snapshot_index = self.snapshot_index();
        if index == snapshot_index {
            return self.snapshot.as_ref().map(|s| s.meta.term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        let first = self.entries.first()?.index;
        let at = usize::try_from(index.checked_sub(first)?).ok()?;
        self.entries.get(at)
    }

    /// Appends entries from a Ready; if they start at or before the stored
    /// last index, the stored suffix from that index is replaced. Returns an
    /// error if they would leave a gap.
    pub fn append(&mut self, new: &[Entry]) -> Result<(), String> {
        let Some(first_new) = new.first() else {
            return Ok(());
        };
        let last = self.last_index();
        if first_new.index > last + 1 {
            return Err(format!(
                "entries start at {} but the stored log ends at {last}",
                first_new.index
            ));
        }
        if first_new.index <= self.snapshot_index() {
            return Err(format!(
                "entries start at {} inside the snapshot (up to {})",
                first_new.index,
                self.snapshot_index()
            ));
        }
        if let Some(stored_first) = self.entries.first().map(|e| e.index) {
            let keep = usize::try_from(first_new.index - stored_first).unwrap_or(usize::MAX);
            self.entries.truncate(keep);
        }
        self.entries.extend_from_slice(new);
        Ok(())
    }

    /// Installs a snapshot received from the leader (Figure 13, steps 6-7):
    /// keep the entries after it if the log has its last entry with the same
    /// term, otherwise discard the whole log.
    pub fn install_snapshot(&mut self, snapshot: Snapshot) {
        let index = snapshot.meta.index;
        if self.term_at(index) == Some(snapshot.meta.term) {
            self.entries.retain(|e| e.index > index);
        } else {
            self.entries.clear();
        }
        self.snapshot = Some(snapshot);
    }

    /// The application snapshotted everything up to `index`: drop the log up
    /// to there. Ignored if an equal or newer snapshot is already stored.
    pub fn compact(&mut self, snapshot: Snapshot) {
        if snapshot.meta.index <= self.snapshot_index() {
            return;
        }
        let index = snapshot.meta.index;
        self.entries.retain(|e| e.index > index);
        self.snapshot = Some(snapshot);
    }

    /// Bytes of Raft state (hard state and log), as Lab 3's
    /// `persister.RaftStateSize()` measures it.
    pub fn raft_state_bytes(&self) -> usize {
        HARD_STATE_BYTES
            + self
                .entries
                .iter()
                .map(|e| e.data.len() + ENTRY_OVERHEAD_BYTES)
                .sum::<usize>()
    }

    /// Bytes of the stored snapshot's application data.
    pub fn snapshot_bytes(&self) -> usize {
        self.snapshot.as_ref().map_or(0, |s| s.data.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raft::{EntryKind, SnapshotMeta};

    fn entry(index: Index, term: Term) -> Entry {
        Entry {
            term,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8],
        }
    }

    fn snapshot(index: Index, term: Term) -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index,
                term,
                voters: vec![1, 2, 3],
            },
            data: vec![],
        }
    }

    #[test]
    fn append_replaces_a_conflicting_suffix() {
        let mut p = Persisted::default();
        p.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
        p.append(&[entry(2, 2)]).unwrap();
        assert_eq!(p.last_index(), 2);
        assert_eq!(p.term_at(2), Some(2));
        assert!(p.append(&[entry(5, 2)]).is_err());
    }

    #[test]
    fn compact_then_append_keeps_indexes_straight() {
        let mut p = Persisted::default();
        p.append(&[entry(1, 1), entry(2, 1), entry(3, 2)]).unwrap();
        p.compact(snapshot(2, 1));
        assert_eq!(p.term_at(2), Some(1));
        assert_eq!(p.term_at(1), None);
        assert_eq!(p.term_at(3), Some(2));
        p.append(&[entry(4, 2)]).unwrap();
        assert_eq!(p.last_index(), 4);
    }

    #[test]
    fn installing_a_snapshot_keeps_a_matching_suffix_only() {
        let mut p = Persisted::default();
        p.append(&[entry(1, 1), entry(2, 1), entry(3, 1)]).unwrap();
        p.install_snapshot(snapshot(2, 1));
        assert_eq!(p.last_index(), 3);
        p.install_snapshot(snapshot(5, 3));
        assert_eq!(p.last_index(), 5);
        assert!(p.entries.is_empty());
    }
}
