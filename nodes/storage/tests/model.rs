//! Random histories of appends (with overwrites), compactions, leader
//! snapshots, syncs, clean reopens and power-loss crashes (which keep a
//! random part of the unsynced bytes: torn tails), run against the
//! disk store, the in-memory store and a naive model written here from the
//! Ready contract alone. `SEED=n` replays a run; `PROPTEST_CASES=n` runs
//! more histories.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};
use storage::inspect::{segment_paths, segment_records, SEGMENT_HEADER_LEN};
use storage::{
    DiskOptions, DiskStorage, Entry, HardState, LogStore, MemStorage, Recovered, Snapshot,
};

/// The Ready contract, as plainly as possible: a full entry list.
#[derive(Debug, Clone, Default, PartialEq)]
struct Model {
    hard_state: HardState,
    snapshot: Option<Snapshot>,
    /// Entries after the snapshot.
    log: Vec<Entry>,
}

impl Model {
    fn snapshot_index(&self) -> u64 {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }
    fn last_index(&self) -> u64 {
        self.log.last().map_or(self.snapshot_index(), |e| e.index)
    }
    fn term(&self, index: u64) -> Option<u64> {
        match &self.snapshot {
            Some(s) if s.meta.index == index => return Some(s.meta.term),
            None if index == 0 => return Some(0),
            _ => {}
        }
        self.log.iter().find(|e| e.index == index).map(|e| e.term)
    }
    /// Raft §7: keep the entries after the snapshot if the log has the
    /// snapshot's last entry, otherwise discard the whole log.
    fn install(&mut self, s: &Snapshot) {
        if self.term(s.meta.index) == Some(s.meta.term) {
            self.log.retain(|e| e.index > s.meta.index);
        } else {
            self.log.clear();
        }
        self.snapshot = Some(s.clone());
    }
    fn apply(&mut self, hs: Option<&HardState>, entries: &[Entry], snap: Option<&Snapshot>) {
        if let Some(s) = snap {
            if s.meta.index > self.snapshot_index() {
                self.install(s);
            }
        }
        if let Some(first) = entries.first() {
            self.log.retain(|e| e.index < first.index);
            self.log.extend_from_slice(entries);
        }
        if let Some(hs) = hs {
            self.hard_state = hs.clone();
        }
    }
    fn recovered(&self) -> Recovered {
        Recovered {
            hard_state: self.hard_state.clone(),
            snapshot: self.snapshot.clone(),
            entries: self.log.clone(),
            torn_tail: None,
        }
    }
}

#[derive(Debug, Clone)]
struct PendingAppend {
    hard_state: Option<HardState>,
    entries: Vec<Entry>,
    snapshot: Option<Snapshot>,
}

#[derive(Debug, Clone)]
enum Op {
    Append {
        back: u8,
        count: u8,
        new_term: bool,
        with_hard_state: bool,
        commit_step: u8,
        len: u16,
        sync: bool,
    },
    Compact {
        at: u8,
    },
    LeaderSnapshot {
        at: u8,
        conflict: bool,
    },
    Sync,
    Reopen,
    /// Power loss that keeps a random part (`cut`) of the unsynced bytes.
    Crash {
        cut: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..6, 0u8..6, proptest::bool::weighted(0.2), any::<bool>(), 0u8..4, 0u16..300, proptest::bool::weighted(0.7))
            .prop_map(|(back, count, new_term, with_hard_state, commit_step, len, sync)| Op::Append {
                back, count, new_term, with_hard_state, commit_step, len, sync
            }),
        1 => any::<u8>().prop_map(|at| Op::Compact { at }),
        1 => (any::<u8>(), any::<bool>()).prop_map(|(at, conflict)| Op::LeaderSnapshot { at, conflict }),
        2 => Just(Op::Sync),
        1 => Just(Op::Reopen),
        1 => any::<u16>().prop_map(|cut| Op::Crash { cut }),
    ]
}

const SEGMENT_BYTES: u64 = 1024;

struct Harness {
    dir: PathBuf,
    disk: Option<DiskStorage>,
    mem: MemStorage,
    current: Model,
    /// What survives a power loss right now.
    durable: Model,
    /// Appends since `durable`, each with the last segment's length after
    /// it: a crash keeps exactly those that end before the cut.
    pending: Vec<(PendingAppend, u64)>,
    /// The last segment and its length when `durable` was taken.
    synced_segment: (PathBuf, u64),
}

impl Harness {
    fn new(dir: &Path) -> Self {
        let (disk, _) = DiskStorage::open(dir, options()).expect("open");
        let mut h = Harness {
            dir: dir.to_path_buf(),
            disk: Some(disk),
            mem: MemStorage::new(),
            current: Model::default(),
            durable: Model::default(),
            pending: Vec::new(),
            synced_segment: (PathBuf::new(), 0),
        };
        h.mark_durable();
        h
    }

    fn disk(&mut self) -> &mut DiskStorage {
        self.disk.as_mut().expect("disk store open")
    }

    fn last_segment(&self) -> (PathBuf, u64) {
        let path = segment_paths(&self.dir)
            .expect("segments")
            .pop()
            .expect("a segment");
        let len = fs::metadata(&path).expect("stat").len();
        (path, len)
    }

    fn mark_durable(&mut self) {
        self.durable = self.current.clone();
        self.pending.clear();
        self.synced_segment = self.last_segment();
    }

    fn append(&mut self, hs: Option<HardState>, entries: Vec<Entry>, snap: Option<Snapshot>) {
        let before_model = self.current.clone();
        let before_segment = self.last_segment().0;
        self.disk()
            .append(hs.as_ref(), &entries, snap.as_ref())
            .expect("disk append");
        self.mem
            .append(hs.as_ref(), &entries, snap.as_ref())
            .expect("mem append");
        let rolled = self.last_segment().0 != before_segment;
        if rolled {
            // A new segment is started only after fsyncing the old one, so
            // everything before this append is durable now.
            self.durable = before_model;
            self.pending.clear();
            self.synced_segment = (self.last_segment().0, SEGMENT_HEADER_LEN);
        }
        self.current.apply(hs.as_ref(), &entries, snap.as_ref());
        let end = self.last_segment().1;
        self.pending.push((
            PendingAppend {
                hard_state: hs,
                entries,
                snapshot: snap,
            },
            end,
        ));
    }

    fn sync(&mut self) {
        self.disk().sync().expect("disk sync");
        self.mem.sync().expect("mem sync");
        assert_eq!(
            self.mem.durable(),
            self.current.recovered(),
            "mem durable state"
        );
        self.mark_durable();
    }

    fn run(&mut self, op: &Op) {
        let last = self.current.last_index();
        let snap_index = self.current.snapshot_index();
        let term_now = self
            .current
            .hard_state
            .term
            .max(self.current.term(last).unwrap_or(0))
            .max(1);
        match *op {
            Op::Append {
                back,
                count,
                new_term,
                with_hard_state,
                commit_step,
                len,
                sync,
            } => {
                let term = if new_term { term_now + 1 } else { term_now };
                let first = (last + 1).saturating_sub(back as u64).max(snap_index + 1);
                let entries: Vec<Entry> = (0..count as u64)
                    .map(|i| entry(first + i, term, len as usize))
                    .collect();
                let new_last = if entries.is_empty() {
                    last
                } else {
                    first + count as u64 - 1
                };
                let hs = (with_hard_state || new_term).then(|| HardState {
                    term,
                    vote: Some(term % 3 + 1),
                    commit: (self.current.hard_state.commit + commit_step as u64).min(new_last),
                });
                if entries.is_empty() && hs.is_none() {
                    return;
                }
                self.append(hs, entries, None);
                if sync {
                    self.sync();
                }
            }
            Op::Compact { at } => {
                if last > snap_index {
                    let index = snap_index + 1 + at as u64 % (last - snap_index);
                    let term = self.current.term(index).expect("in log");
                    let s = snapshot(index, term);
                    self.disk().save_snapshot(&s).expect("disk compact");
                    self.mem.save_snapshot(&s).expect("mem compact");
                    self.current.apply(None, &[], Some(&s));
                    self.mark_durable();
                }
            }
            Op::LeaderSnapshot { at, conflict } => {
                let index = snap_index + 1 + at as u64 % (last - snap_index + 3);
                let term = match self.current.term(index) {
                    Some(t) if !conflict => t,
                    _ => term_now + 1,
                };
                let hs = HardState {
                    term: term.max(self.current.hard_state.term),
                    vote: None,
                    commit: index,
                };
                self.append(Some(hs), vec![], Some(snapshot(index, term)));
                self.sync();
            }
            Op::Sync => self.sync(),
            Op::Reopen => {
                // A clean restart: the page cache keeps unsynced writes.
                self.disk = None;
                let (disk, recovered) = DiskStorage::open(&self.dir, options()).expect("reopen");
                self.disk = Some(disk);
                assert_eq!(recovered, self.current.recovered(), "after reopen");
                self.mem.sync().expect("mem sync");
                self.mark_durable();
            }
            Op::Crash { cut } => {
                // Power loss: the last segment keeps its synced bytes and a
                // random part of the rest (a torn tail); sealed segments
                // and snapshot files were fsynced already.
                self.disk = None;
                let (path, synced_len) = self.synced_segment.clone();
                let len = fs::metadata(&path).expect("stat").len();
                let keep = synced_len + cut as u64 % (len - synced_len + 1);
                // Batch boundaries, including a new segment's start batch.
                let batch_ends: Vec<u64> = segment_records(&path)
                    .expect("records")
                    .iter()
                    .filter(|r| r.end_of_batch)
                    .map(|r| r.offset + r.bytes)
                    .collect();
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .expect("open");
                f.set_len(keep).expect("cut unsynced bytes");
                let mut expected = self.durable.clone();
                for (p, end) in &self.pending {
                    if *end <= keep {
                        expected.apply(p.hard_state.as_ref(), &p.entries, p.snapshot.as_ref());
                    }
                }
                // The newest snapshot file is applied even if the WAL
                // record that refers to it was lost.
                if let Some(s) = self
                    .pending
                    .iter()
                    .rev()
                    .find_map(|(p, _)| p.snapshot.as_ref())
                {
                    if s.meta.index > expected.snapshot_index() {
                        expected.install(s);
                    }
                }
                let (disk, recovered) = DiskStorage::open(&self.dir, options()).expect("reopen");
                self.disk = Some(disk);
                let torn = recovered.torn_tail.is_some();
                let whole = keep == synced_len || batch_ends.contains(&keep);
                assert_eq!(
                    torn, !whole,
                    "torn tail reported iff the cut split a batch (cut at {keep})"
                );
                let mut recovered = recovered;
                recovered.torn_tail = None;
                assert_eq!(recovered, expected.recovered(), "after crash cut at {keep}");
                self.current = expected;
                self.mem = MemStorage::restore(self.current.recovered()).expect("restore");
                self.mark_durable();
            }
        }
    }

    fn check(&mut self) {
        let model = self.current.clone();
        let disk = self.disk.as_ref().expect("open");
        for (name, store) in [
            ("disk", disk as &dyn LogStore),
            ("mem", &self.mem as &dyn LogStore),
        ] {
            assert_eq!(store.hard_state(), &model.hard_state, "{name} hard state");
            assert_eq!(store.last_index(), model.last_index(), "{name} last index");
            assert_eq!(
                store.first_index(),
                model.snapshot_index() + 1,
                "{name} first index"
            );
            assert_eq!(
                store.snapshot_meta(),
                model.snapshot.as_ref().map(|s| &s.meta),
                "{name} snapshot"
            );
            for i in model.snapshot_index().saturating_sub(1)..=model.last_index() + 1 {
                assert_eq!(store.term(i), model.term(i), "{name} term({i})");
            }
        }
        assert_eq!(disk.load_snapshot().expect("load"), model.snapshot);
        let on_disk: u64 = segment_paths(&self.dir)
            .expect("segments")
            .iter()
            .map(|p| fs::metadata(p).expect("stat").len())
            .sum();
        assert_eq!(disk.wal_bytes(), on_disk, "wal_bytes");
        assert_eq!(
            disk.segment_count(),
            segment_paths(&self.dir).expect("segments").len()
        );
        assert_eq!(self.mem.entries(), model.log);
    }
}

fn options() -> DiskOptions {
    DiskOptions {
        segment_bytes_max: SEGMENT_BYTES,
    }
}

#[test]
fn random_histories_match_the_model_across_reopens_and_crashes() {
    let seed = seed();
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(256);
    let mut runner = TestRunner::new(Config {
        cases,
        rng_seed: RngSeed::Fixed(seed),
        failure_persistence: None,
        ..Config::default()
    });
    // Failures are reported with their op and message below; keep the
    // default hook from printing every shrinking step.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let result = runner.run(&proptest::collection::vec(op(), 1..60), |ops| {
        let dir = fast_tempdir();
        let mut h = Harness::new(dir.path());
        for (i, op) in ops.iter().enumerate() {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                h.run(op);
                h.check();
            }));
            if let Err(panic) = outcome {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                return Err(TestCaseError::fail(format!("op {i} {op:?}: {msg}")));
            }
        }
        Ok(())
    });
    std::panic::set_hook(default_hook);
    if let Err(e) = result {
        panic!("SEED={seed}: {e}");
    }
}
