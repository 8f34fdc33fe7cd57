//! An in-memory [`LogStore`] for tests of other crates (the simulator in
//! particular). It accepts and refuses exactly what [`crate::DiskStorage`]
//! does, and it separates what was appended from what was synced, so a
//! simulated crash ([`MemStorage::crash`]) loses unsynced writes.

use raft::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

use crate::error::StorageError;
use crate::log::{plan, Plan, SnapshotPlan, SuffixLog};
use crate::{LogStore, Recovered};

#[derive(Debug, Clone, Default)]
struct MemState {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    log: SuffixLog<Entry>,
}

impl MemState {
    fn apply(&mut self, op: &Op) {
        let plan = Plan {
            snapshot: op.snapshot.as_ref().map(|(p, _)| *p),
            truncate_from: op.truncate_from,
            entries: &op.entries,
            hard_state: op.hard_state.as_ref(),
        };
        plan.apply_to(&mut self.log, Clone::clone);
        if let Some((_, s)) = &op.snapshot {
            self.snapshot = Some(s.clone());
        }
        if let Some(hs) = &op.hard_state {
            self.hard_state = hs.clone();
        }
    }

    fn recovered(&self) -> Recovered {
        Recovered {
            hard_state: self.hard_state.clone(),
            snapshot: self.snapshot.clone(),
            entries: self.log.items.iter().cloned().collect(),
            torn_tail: None,
        }
    }
}

/// One validated append, owned so it can wait for `sync`.
#[derive(Debug, Clone)]
struct Op {
    snapshot: Option<(SnapshotPlan, Snapshot)>,
    truncate_from: Option<Index>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
}

/// In-memory log store. `append` changes what the store reports at once;
/// only `sync` makes it survive [`MemStorage::crash`].
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    current: MemState,
    durable: MemState,
    pending: Vec<Op>,
}

impl MemStorage {
    /// An empty store (a brand-new node).
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose synced state is `recovered` (a node restarting from
    /// what another store persisted). Refuses entries that do not follow
    /// the snapshot consecutively.
    pub fn restore(recovered: Recovered) -> Result<Self, StorageError> {
        let (index, term) = recovered
            .snapshot
            .as_ref()
            .map_or((0, 0), |s| (s.meta.index, s.meta.term));
        let mut log = SuffixLog::after_snapshot(index, term);
        for e in recovered.entries {
            let at = e.index;
            if !log.push(at, e) || !log.is_anchored() {
                return Err(StorageError::InvalidAppend {
                    detail: format!("restored entry {at} does not follow the log"),
                });
            }
        }
        let state = MemState {
            hard_state: recovered.hard_state,
            snapshot: recovered.snapshot,
            log,
        };
        Ok(MemStorage {
            current: state.clone(),
            durable: state,
            pending: Vec::new(),
        })
    }

    /// What a restart would recover right now: everything synced, nothing
    /// that was only appended.
    pub fn durable(&self) -> Recovered {
        self.durable.recovered()
    }

    /// Simulates a crash: unsynced appends are lost, and the store carries
    /// on from what was synced. One difference from [`crate::DiskStorage`]:
    /// there a snapshot file is durable as soon as `append` returns, so a
    /// crash before `sync` still recovers it; here it is lost with the
    /// rest of the unsynced append. With `save_ready` the two agree.
    pub fn crash(&mut self) -> Recovered {
        self.pending.clear();
        self.current = self.durable.clone();
        self.durable.recovered()
    }

    /// Number of appends not yet synced.
    pub fn unsynced_appends(&self) -> usize {
        self.pending.len()
    }

    /// Entries currently in the log (after the snapshot), in order.
    pub fn entries(&self) -> Vec<Entry> {
        self.current.log.items.iter().cloned().collect()
    }
}

impl LogStore for MemStorage {
    fn append(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<(), StorageError> {
        let plan = plan(
            &self.current.log,
            &self.current.hard_state,
            hard_state,
            entries,
            snapshot,
        )?;
        if plan.is_empty() {
            return Ok(());
        }
        let op = Op {
            snapshot: plan.snapshot.zip(snapshot.cloned()),
            truncate_from: plan.truncate_from,
            entries: entries.to_vec(),
            hard_state: hard_state.cloned(),
        };
        self.current.apply(&op);
        self.pending.push(op);
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        for op in self.pending.drain(..) {
            self.durable.apply(&op);
        }
        Ok(())
    }

    fn hard_state(&self) -> &HardState {
        &self.current.hard_state
    }

    fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.current.snapshot.as_ref().map(|s| &s.meta)
    }

    fn load_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        Ok(self.current.snapshot.clone())
    }

    fn first_index(&self) -> Index {
        self.current.log.first_index()
    }

    fn last_index(&self) -> Index {
        self.current.log.last_index()
    }

    fn term(&self, index: Index) -> Option<Term> {
        self.current.log.term(index)
    }
}
