//! Helpers shared by the storage integration tests.
#![allow(dead_code)]

use std::fs;
use std::path::Path;

use storage::{
    DiskOptions, DiskStorage, Entry, HardState, LogStore, MemStorage, Recovered, Snapshot,
    SnapshotMeta,
};

/// An entry whose data is derived from its position, so a wrong entry is
/// visible in a diff.
pub fn entry(index: u64, term: u64, len: usize) -> Entry {
    let data = (0..len)
        .map(|i| (index as usize * 31 + term as usize * 7 + i) as u8)
        .collect();
    Entry {
        term,
        index,
        kind: storage_kind(len),
        data,
    }
}

fn storage_kind(len: usize) -> storage::EntryKind {
    if len == 0 {
        storage::EntryKind::Noop
    } else {
        storage::EntryKind::Normal
    }
}

pub fn entries(first: u64, last: u64, term: u64, len: usize) -> Vec<Entry> {
    (first..=last).map(|i| entry(i, term, len)).collect()
}

pub fn hs(term: u64, vote: Option<u64>, commit: u64) -> HardState {
    HardState { term, vote, commit }
}

pub fn snapshot(index: u64, term: u64) -> Snapshot {
    Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            voters: vec![1, 2, 3],
        },
        data: format!("state machine up to {index}").into_bytes(),
    }
}

/// One Ready's worth of persistence.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    pub snapshot: Option<Snapshot>,
}

impl Batch {
    pub fn save(&self, store: &mut impl LogStore) {
        store
            .save_ready(
                self.hard_state.as_ref(),
                &self.entries,
                self.snapshot.as_ref(),
            )
            .expect("save_ready");
    }
    pub fn append(&self, store: &mut impl LogStore) {
        store
            .append(
                self.hard_state.as_ref(),
                &self.entries,
                self.snapshot.as_ref(),
            )
            .expect("append");
    }
}

/// What a restart should see after `batches` were synced, computed with the
/// in-memory store.
pub fn expected_after(batches: &[Batch]) -> Recovered {
    let mut mem = MemStorage::new();
    for b in batches {
        b.save(&mut mem);
    }
    mem.durable()
}

/// `Recovered` without the torn-tail report, for comparisons.
pub fn content(mut r: Recovered) -> Recovered {
    r.torn_tail = None;
    r
}

/// A temp dir on tmpfs when there is one: these tests open stores
/// thousands of times and fsync cost is not what they test.
/// `STORAGE_TEST_DIR` overrides (e.g. a real disk, to run with real fsyncs).
pub fn fast_tempdir() -> tempfile::TempDir {
    if let Ok(base) = std::env::var("STORAGE_TEST_DIR") {
        return tempfile::Builder::new()
            .prefix("storage-test")
            .tempdir_in(base)
            .expect("tempdir in STORAGE_TEST_DIR");
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new()
            .prefix("storage-test")
            .tempdir_in(shm)
        {
            return d;
        }
    }
    tempfile::tempdir().expect("tempdir")
}

pub fn open(dir: &Path) -> (DiskStorage, Recovered) {
    DiskStorage::open(dir, DiskOptions::default()).expect("open")
}

pub fn open_with(dir: &Path, segment_bytes_max: u64) -> (DiskStorage, Recovered) {
    DiskStorage::open(dir, DiskOptions { segment_bytes_max }).expect("open")
}

/// Replaces `dst` with a copy of the data directory `src`.
pub fn copy_dir(src: &Path, dst: &Path) {
    if dst.exists() {
        fs::remove_dir_all(dst).expect("clear copy");
    }
    fs::create_dir_all(dst).expect("mkdir");
    for item in fs::read_dir(src).expect("read_dir") {
        let item = item.expect("dir entry");
        let target = dst.join(item.file_name());
        if item.file_type().expect("type").is_dir() {
            copy_dir(&item.path(), &target);
        } else {
            fs::copy(item.path(), &target).expect("copy");
        }
    }
}

/// A random seed from the environment (`SEED=n`) or the clock, printed
/// first so any failure can be replayed.
pub fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    println!("SEED={seed}");
    seed
}
