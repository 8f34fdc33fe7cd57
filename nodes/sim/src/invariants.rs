//! The Raft safety properties (Figure 3 of the paper, plus the runtime
//! contract), checked after every Ready the simulator handles.
//!
//! Checking is incremental so it costs little per step:
//! * election safety: one map term -> leader;
//! * log matching: every persisted entry (index, term) pins its data and the
//!   term of its predecessor; by induction two logs that share an
//!   (index, term) share the whole prefix;
//! * leader completeness: when a node first acts as leader of term T, its log
//!   holds every entry committed in a term below T;
//! * state machine safety: one global record of what was applied at each
//!   index; every node's apply must match it;
//! * per node: commit never decreases (in memory within one incarnation, on
//!   disk always), applied <= commit, term never decreases, a vote is never
//!   changed within a term, and a granted vote is on disk before the grant is
//!   sent.

use crate::storage::Persisted;
use raft::{Entry, EntryKind, HardState, Index, NodeId, Term};
use std::collections::HashMap;

/// What the whole cluster applied at one index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppliedRecord {
    pub term: Term,
    pub kind: EntryKind,
    pub data: Vec<u8>,
    /// Which node applied it first.
    pub first_applied_by: NodeId,
}

/// Identity of an entry for log matching: a hash of its data and kind, and
/// the term of the entry before it (None when the writer did not know it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EntryFingerprint {
    data_hash: u64,
    prev_term: Option<Term>,
}

/// A committed index: the entry's term and the lowest current term of any
/// node that saw it committed (the term in which it was committed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct CommitRecord {
    entry_term: Term,
    commit_term: Term,
}

fn fingerprint_data(entry: &Entry) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325 ^ u64::from(entry.kind == EntryKind::Noop);
    for byte in &entry.data {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash ^ (entry.data.len() as u64)
}

/// The incremental checker. Methods return `Err((invariant, detail))`.
#[derive(Debug, Default)]
pub struct Invariants {
    leader_of_term: HashMap<Term, NodeId>,
    fingerprints: HashMap<(Index, Term), EntryFingerprint>,
    /// Indexed by log index (slot 0 unused).
    applied: Vec<Option<AppliedRecord>>,
    committed: Vec<Option<CommitRecord>>,
}

pub type Broken = (&'static str, String);

impl Invariants {
    /// What was applied at `index`, if any node applied it.
    pub fn applied_at(&self, index: Index) -> Option<&AppliedRecord> {
        self.applied.get(usize::try_from(index).ok()?)?.as_ref()
    }

    /// Highest index any node has applied.
    pub fn max_applied_index(&self) -> Index {
        self.applied.len().saturating_sub(1) as Index
    }

    /// Highest index any node has seen committed.
    pub fn max_committed_index(&self) -> Index {
        self.committed.len().saturating_sub(1) as Index
    }

    /// Election safety: at most one leader per term.
    pub fn on_leader(&mut self, node: NodeId, term: Term) -> Result<bool, Broken> {
        match self.leader_of_term.get(&term) {
            Some(&other) if other != node => Err((
                "election safety",
                format!("nodes {other} and {node} are both leader of term {term}"),
            )),
            Some(_) => Ok(false),
            None => {
                self.leader_of_term.insert(term, node);
                Ok(true)
            }
        }
    }

    /// Leader completeness, checked when `node` becomes leader of `term`.
    pub fn check_leader_log(
        &self,
        node: NodeId,
        term: Term,
        log: &Persisted,
    ) -> Result<(), Broken> {
        let from = log.snapshot_index();
        for (index, record) in self.committed.iter().enumerate().skip(from as usize) {
            let Some(record) = record else { continue };
            if record.commit_term >= term {
                continue;
            }
            let index = index as Index;
            let has = log.term_at(index);
            if has != Some(record.entry_term) {
                return Err((
                    "leader completeness",
                    format!(
                        "node {node} leads term {term} but its log has term {has:?} at index {index}, \
                         where an entry of term {} was committed in term {}",
                        record.entry_term, record.commit_term
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Log matching: called with entries just persisted by `node` (the log
    /// already includes them, so the predecessor term is known).
    pub fn on_persist_entries(
        &mut self,
        node: NodeId,
        entries: &[Entry],
        log: &Persisted,
    ) -> Result<(), Broken> {
        for entry in entries {
            let prev_term = entry.index.checked_sub(1).and_then(|p| log.term_at(p));
            let fingerprint = EntryFingerprint {
                data_hash: fingerprint_data(entry),
                prev_term,
            };
            match self.fingerprints.get_mut(&(entry.index, entry.term)) {
                None => {
                    self.fingerprints
                        .insert((entry.index, entry.term), fingerprint);
                }
                Some(known) => {
                    if known.data_hash != fingerprint.data_hash {
                        return Err((
                            "log matching",
                            format!(
                                "node {node} holds a different entry at index {} term {} than another node",
                                entry.index, entry.term
                            ),
                        ));
                    }
                    match (known.prev_term, prev_term) {
                        (Some(a), Some(b)) if a != b => {
                            return Err((
                                "log matching",
                                format!(
                                    "entry {} of term {} follows term {b} on node {node} but term {a} elsewhere",
                                    entry.index, entry.term
                                ),
                            ));
                        }
                        (None, Some(b)) => known.prev_term = Some(b),
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// Records that `node`, in `current_term`, saw its commit index advance
    /// from `old_commit` to `new_commit`; committed entries must agree.
    pub fn on_commit(
        &mut self,
        node: NodeId,
        current_term: Term,
        old_commit: Index,
        new_commit: Index,
        log: &Persisted,
    ) -> Result<(), Broken> {
        let from = old_commit.max(log.snapshot_index()) + 1;
        if self.committed.len() <= new_commit as usize {
            self.committed.resize(new_commit as usize + 1, None);
        }
        for index in from..=new_commit {
            let Some(entry_term) = log.term_at(index) else {
                return Err((
                    "committed entries are persisted",
                    format!("node {node} committed index {index} that is not in its log"),
                ));
            };
            let slot = &mut self.committed[index as usize];
            match slot {
                None => {
                    *slot = Some(CommitRecord {
                        entry_term,
                        commit_term: current_term,
                    })
                }
                Some(record) if record.entry_term != entry_term => {
                    return Err((
                        "state machine safety",
                        format!(
                            "node {node} committed term {entry_term} at index {index}, \
                             but term {} was committed there before",
                            record.entry_term
                        ),
                    ));
                }
                Some(record) => record.commit_term = record.commit_term.min(current_term),
            }
        }
        Ok(())
    }

    /// State machine safety: `node` applied `entry`.
    pub fn on_apply(&mut self, node: NodeId, entry: &Entry) -> Result<(), Broken> {
        let at = entry.index as usize;
        if self.applied.len() <= at {
            self.applied.resize(at + 1, None);
        }
        match &self.applied[at] {
            None => {
                self.applied[at] = Some(AppliedRecord {
                    term: entry.term,
                    kind: entry.kind,
                    data: entry.data.clone(),
                    first_applied_by: node,
                });
                Ok(())
            }
            Some(record) => {
                if record.term != entry.term
                    || record.kind != entry.kind
                    || record.data != entry.data
                {
                    Err((
                        "state machine safety",
                        format!(
                            "node {node} applied term {} at index {} but node {} applied term {} there",
                            entry.term, entry.index, record.first_applied_by, record.term
                        ),
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Rules for a hard state about to be written over `old` on disk.
    pub fn on_persist_hard_state(
        node: NodeId,
        old: &HardState,
        new: &HardState,
    ) -> Result<(), Broken> {
        if new.term < old.term {
            return Err((
                "term never decreases",
                format!("node {node} persisted term {} after {}", new.term, old.term),
            ));
        }
        if new.commit < old.commit {
            return Err((
                "commit index never decreases",
                format!(
                    "node {node} persisted commit {} after {}",
                    new.commit, old.commit
                ),
            ));
        }
        if new.term == old.term && old.vote.is_some() && new.vote != old.vote {
            return Err((
                "one vote per term",
                format!(
                    "node {node} changed its vote in term {} from {:?} to {:?}",
                    new.term, old.vote, new.vote
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: Index, term: Term, data: &[u8]) -> Entry {
        Entry {
            index,
            term,
            kind: EntryKind::Normal,
            data: data.to_vec(),
        }
    }

    #[test]
    fn two_leaders_in_one_term_are_caught() {
        let mut inv = Invariants::default();
        assert_eq!(inv.on_leader(1, 3), Ok(true));
        assert_eq!(inv.on_leader(1, 3), Ok(false));
        assert!(inv.on_leader(2, 3).is_err());
        assert_eq!(inv.on_leader(2, 4), Ok(true));
    }

    #[test]
    fn different_applies_at_one_index_are_caught() {
        let mut inv = Invariants::default();
        inv.on_apply(1, &entry(1, 1, b"a")).unwrap();
        inv.on_apply(2, &entry(1, 1, b"a")).unwrap();
        assert!(inv.on_apply(3, &entry(1, 2, b"b")).is_err());
    }

    #[test]
    fn same_index_and_term_with_other_data_or_prefix_is_caught() {
        let mut inv = Invariants::default();
        let mut a = Persisted::default();
        let e1 = [entry(1, 1, b"a"), entry(2, 2, b"b")];
        a.append(&e1).unwrap();
        inv.on_persist_entries(1, &e1, &a).unwrap();
        let mut b = Persisted::default();
        let e2 = [entry(1, 2, b"x"), entry(2, 2, b"b")];
        b.append(&e2).unwrap();
        let err = inv.on_persist_entries(2, &e2, &b).unwrap_err();
        assert_eq!(err.0, "log matching");
        let mut c = Persisted::default();
        let e3 = [entry(1, 1, b"a"), entry(2, 2, b"other")];
        c.append(&e3).unwrap();
        assert!(inv.on_persist_entries(3, &e3, &c).is_err());
    }

    #[test]
    fn a_leader_missing_a_committed_entry_is_caught() {
        let mut inv = Invariants::default();
        let mut a = Persisted::default();
        a.append(&[entry(1, 1, b"a"), entry(2, 1, b"b")]).unwrap();
        inv.on_commit(1, 1, 0, 2, &a).unwrap();
        let mut b = Persisted::default();
        b.append(&[entry(1, 1, b"a")]).unwrap();
        assert!(inv.check_leader_log(2, 2, &b).is_err());
        assert!(inv.check_leader_log(1, 2, &a).is_ok());
    }

    #[test]
    fn hard_state_rules() {
        let hs = |term, vote, commit| HardState { term, vote, commit };
        assert!(
            Invariants::on_persist_hard_state(1, &hs(2, Some(1), 3), &hs(2, Some(1), 4)).is_ok()
        );
        assert!(
            Invariants::on_persist_hard_state(1, &hs(2, Some(1), 3), &hs(1, Some(1), 3)).is_err()
        );
        assert!(
            Invariants::on_persist_hard_state(1, &hs(2, Some(1), 3), &hs(2, Some(2), 3)).is_err()
        );
        assert!(
            Invariants::on_persist_hard_state(1, &hs(2, Some(1), 3), &hs(2, Some(1), 2)).is_err()
        );
        assert!(Invariants::on_persist_hard_state(1, &hs(2, None, 3), &hs(2, Some(2), 3)).is_ok());
    }
}
