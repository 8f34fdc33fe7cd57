//! The durable store: a segmented WAL plus snapshot files in one data
//! directory.
//!
//! ```text
//! <dir>/LOCK                          flock'd while open (one process per directory)
//! <dir>/wal/00000000000000000001.log  segments, see `segment` and `record`
//! <dir>/snap/<index>-<term>.snap      the newest snapshot (older ones removed once it is durable)
//! ```
//!
//! Persistence order of one append: (1) the snapshot file, if any, is made
//! durable (temp, fsync, rename, directory fsync); (2) one batch of records
//! is written to the active segment: a snapshot marker, a truncation if the
//! new entries overwrite a stored suffix, the entries, the hard state;
//! (3) `sync` makes every batch written so far durable with one
//! fdatasync; (4) only after that are old snapshot files and segments wholly
//! below the snapshot deleted.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use raft::{Entry, HardState, Index, Snapshot, SnapshotMeta, Term};

use crate::error::StorageError;
use crate::fsutil::{ensure_dir, fsync_dir, remove_tmp_files};
use crate::log::{plan, Plan, SnapshotPlan, SuffixLog};
use crate::record::{encode_record, entries_chunks, RecordRef};
use crate::recovery::{replay, SegmentInfo};
use crate::segment::{self, SEGMENT_HEADER_BYTES};
use crate::snapfile::{self, SnapshotFile};
use crate::{LogStore, Recovered};

/// Settings of a [`DiskStorage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskOptions {
    /// A new segment is started before an append once the active segment
    /// holds at least this many bytes. Segments roll only between batches,
    /// so a segment can exceed this by one batch.
    pub segment_bytes_max: u64,
}

/// Smallest allowed [`DiskOptions::segment_bytes_max`]: tests use tiny
/// segments to exercise rolling; below this every batch would roll.
pub const SEGMENT_BYTES_MIN: u64 = 1024;

impl Default for DiskOptions {
    fn default() -> Self {
        DiskOptions {
            segment_bytes_max: 64 * 1024 * 1024,
        }
    }
}

impl DiskOptions {
    /// Checks the options, naming the bad field.
    pub fn validate(&self) -> Result<(), StorageError> {
        if self.segment_bytes_max < SEGMENT_BYTES_MIN {
            return Err(StorageError::InvalidOption {
                field: "segment_bytes_max",
                detail: format!(
                    "{} is below the minimum of {SEGMENT_BYTES_MIN}",
                    self.segment_bytes_max
                ),
            });
        }
        Ok(())
    }
}

/// Write-ahead log and snapshot files in a data directory.
///
/// Keeps only the terms of the log in memory (the Raft core holds the
/// entries); [`DiskStorage::open`] hands the entries over once.
#[derive(Debug)]
pub struct DiskStorage {
    wal_dir: PathBuf,
    snap_dir: PathBuf,
    options: DiskOptions,
    /// Held (and flock'd) for as long as the store is open.
    _lock: File,
    hard_state: HardState,
    snapshot: Option<SnapshotMeta>,
    log: SuffixLog<Term>,
    /// Oldest first; the last one is the active segment.
    segments: Vec<SegmentInfo>,
    active: File,
    active_bytes: u64,
    /// The active segment was just created and still needs its start batch
    /// (current hard state and snapshot point), which makes every segment
    /// self-contained once earlier ones are deleted.
    active_needs_start_batch: bool,
    next_batch: u64,
    /// Highest batch number known to be on disk.
    durable_through: u64,
    /// Batches were written since the last fdatasync.
    dirty: bool,
    /// A newer snapshot was written: old snapshot files and segments can go
    /// once the WAL records it durably.
    cleanup_due: bool,
    poisoned: Option<String>,
    buf: Vec<u8>,
}

impl DiskStorage {
    /// Opens (creating if needed) the data directory and recovers its
    /// contents: the hard state, the newest snapshot and the entries after
    /// it, with truncations applied. A torn tail is cut off and logged;
    /// corruption is an error and nothing is modified.
    pub fn open(
        dir: &Path,
        options: DiskOptions,
    ) -> Result<(DiskStorage, Recovered), StorageError> {
        options.validate()?;
        let wal_dir = dir.join("wal");
        let snap_dir = dir.join("snap");
        ensure_dir(&wal_dir)?;
        ensure_dir(&snap_dir)?;
        let lock = lock_directory(dir)?;
        remove_tmp_files(&wal_dir)?;
        snapfile::clean(&snap_dir)?;

        let mut replayed = replay(&wal_dir)?;
        let snapshot_files = snapfile::list(&snap_dir)?;
        let newest = snapshot_files.last().cloned();
        let snapshot = newest.as_ref().map(snapfile::read).transpose()?;

        // The snapshot file is written before the WAL record that points to
        // it; a crash in between leaves a newer file than the WAL knows.
        let (wal_index, wal_term) = (replayed.log.snapshot_index, replayed.log.snapshot_term);
        let mut fixup = None;
        match &newest {
            None if wal_index > 0 => {
                return Err(StorageError::Inconsistent {
                    path: snap_dir,
                    detail: format!(
                        "the WAL is compacted to index {wal_index} but there is no snapshot file"
                    ),
                })
            }
            None => {}
            Some(f) if f.index < wal_index || (f.index == wal_index && f.term != wal_term) => {
                return Err(StorageError::Inconsistent {
                    path: f.path.clone(),
                    detail: format!(
                        "newest snapshot is index {} term {}, but the WAL is compacted to index {wal_index} term {wal_term}",
                        f.index, f.term
                    ),
                });
            }
            Some(f) if f.index > wal_index => {
                let plan = SnapshotPlan {
                    index: f.index,
                    term: f.term,
                    replaces_log: replayed.log.term(f.index) != Some(f.term),
                };
                tracing::info!(
                    file = %f.path.display(),
                    replaces_log = plan.replaces_log,
                    "snapshot file is newer than the WAL (crash between the two writes): applying it"
                );
                let as_plan = Plan {
                    snapshot: Some(plan),
                    truncate_from: None,
                    entries: &[],
                    hard_state: None,
                };
                as_plan.apply_to(&mut replayed.log, Clone::clone);
                fixup = Some(plan);
            }
            Some(_) => {}
        }
        if !replayed.log.is_anchored() {
            return Err(StorageError::Inconsistent {
                path: wal_dir,
                detail: format!(
                    "the log starts at index {} but the snapshot ends at {}",
                    replayed.log.first_index(),
                    replayed.log.snapshot_index
                ),
            });
        }

        let (active, active_bytes) = match replayed.segments.last() {
            Some(last) => {
                let file = segment::open_for_append(&last.path)?;
                // What recovery read may still be only in the page cache
                // (after kill -9); make it durable before building on it.
                file.sync_data()
                    .map_err(|e| StorageError::io("fsync segment", &last.path, e))?;
                (file, replayed.last_segment_bytes)
            }
            None => {
                let (file, path) = segment::create(&wal_dir, 1, replayed.next_batch)?;
                replayed.segments.push(SegmentInfo {
                    sequence: 1,
                    path,
                    max_entry_index: 0,
                    bytes: SEGMENT_HEADER_BYTES as u64,
                });
                (file, SEGMENT_HEADER_BYTES as u64)
            }
        };

        let mut log =
            SuffixLog::after_snapshot(replayed.log.snapshot_index, replayed.log.snapshot_term);
        for e in &replayed.log.items {
            let pushed = log.push(e.index, e.term);
            debug_assert!(pushed, "recovered log is contiguous");
        }
        let active_needs_start_batch =
            active_bytes == SEGMENT_HEADER_BYTES as u64 && store_sequence(&replayed.segments) > 1;
        let mut store = DiskStorage {
            wal_dir,
            snap_dir,
            options,
            _lock: lock,
            hard_state: replayed.hard_state.clone(),
            snapshot: snapshot.as_ref().map(|s| s.meta.clone()),
            log,
            segments: replayed.segments,
            active,
            active_bytes,
            // A later segment whose start batch was lost (a crash right
            // after the roll) must get one before anything else is written
            // to it; otherwise deleting older segments loses the hard state.
            active_needs_start_batch,
            next_batch: replayed.next_batch,
            durable_through: replayed.next_batch - 1,
            dirty: false,
            cleanup_due: snapshot.is_some(),
            poisoned: None,
            buf: Vec::new(),
        };
        let empty = Plan {
            snapshot: None,
            truncate_from: None,
            entries: &[],
            hard_state: None,
        };
        if store.active_needs_start_batch {
            // Write the lost start batch now: the cleanup below may delete
            // the older segments that hold the hard state.
            store.write_batch(&empty)?;
        }
        if let Some(plan) = fixup {
            store.write_batch(&Plan {
                snapshot: Some(plan),
                truncate_from: None,
                entries: &[],
                hard_state: None,
            })?;
            store.cleanup_due = true;
        }
        store.sync()?;
        let recovered = Recovered {
            hard_state: replayed.hard_state,
            snapshot,
            entries: replayed.log.items.into_iter().collect(),
            torn_tail: replayed.torn_tail,
        };
        Ok((store, recovered))
    }

    /// Number of segment files currently on disk (for tests and status).
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Bytes in the WAL's segment files (the "log size" of `node status`).
    /// Kept in memory (no stat calls): sealed segments never change size.
    pub fn wal_bytes(&self) -> u64 {
        let sealed: u64 = self.segments[..self.segments.len().saturating_sub(1)]
            .iter()
            .map(|s| s.bytes)
            .sum();
        sealed + self.active_bytes
    }

    fn check_usable(&self) -> Result<(), StorageError> {
        match &self.poisoned {
            Some(reason) => Err(StorageError::Poisoned {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn active_path(&self) -> PathBuf {
        self.segments
            .last()
            .map(|s| s.path.clone())
            .unwrap_or_else(|| self.wal_dir.clone())
    }

    /// Starts a new segment when the active one is full. The active segment
    /// is fsynced first, so that only the last segment can hold batches
    /// that were never acknowledged.
    fn roll_if_full(&mut self) -> Result<(), StorageError> {
        if self.active_bytes < self.options.segment_bytes_max {
            return Ok(());
        }
        self.sync_active()?;
        if let Some(sealed) = self.segments.last_mut() {
            sealed.bytes = self.active_bytes;
        }
        let sequence = self.segments.last().map_or(1, |s| s.sequence + 1);
        let (file, path) = segment::create(&self.wal_dir, sequence, self.next_batch)?;
        tracing::debug!(file = %path.display(), "started a new WAL segment");
        self.segments.push(SegmentInfo {
            sequence,
            path,
            max_entry_index: 0,
            bytes: SEGMENT_HEADER_BYTES as u64,
        });
        self.active = file;
        self.active_bytes = SEGMENT_HEADER_BYTES as u64;
        self.active_needs_start_batch = true;
        Ok(())
    }

    /// Encodes and writes one batch (plus the segment's start batch if it
    /// still needs one). On a write error the segment is cut back to where
    /// it was, so the store stays usable; if even that fails it is poisoned.
    fn write_batch(&mut self, plan: &Plan<'_>) -> Result<(), StorageError> {
        self.roll_if_full()?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut batch = self.next_batch;
        if self.active_needs_start_batch {
            let has_snapshot = self.log.snapshot_index > 0;
            encode_record(
                &mut buf,
                RecordRef::HardState(&self.hard_state),
                batch,
                self.durable_through,
                !has_snapshot,
            );
            if has_snapshot {
                let (index, term) = (self.log.snapshot_index, self.log.snapshot_term);
                encode_record(
                    &mut buf,
                    RecordRef::Snapshot { index, term },
                    batch,
                    self.durable_through,
                    true,
                );
            }
            batch += 1;
        }
        let mut records: Vec<RecordRef<'_>> = Vec::new();
        if let Some(s) = plan.snapshot {
            if s.replaces_log {
                records.push(RecordRef::Truncate {
                    from_index: s.index + 1,
                });
            }
            records.push(RecordRef::Snapshot {
                index: s.index,
                term: s.term,
            });
        }
        if let Some(from_index) = plan.truncate_from {
            records.push(RecordRef::Truncate { from_index });
        }
        for chunk in entries_chunks(plan.entries) {
            records.push(RecordRef::Entries(chunk));
        }
        if let Some(hs) = plan.hard_state {
            records.push(RecordRef::HardState(hs));
        }
        let count = records.len();
        for (i, r) in records.into_iter().enumerate() {
            encode_record(&mut buf, r, batch, self.durable_through, i + 1 == count);
        }

        if let Err(e) = self.active.write_all_at(&buf, self.active_bytes) {
            let path = self.active_path();
            if let Err(cut) = self.active.set_len(self.active_bytes) {
                self.poisoned = Some(format!(
                    "write to {} failed ({e}) and cutting it back failed ({cut})",
                    path.display()
                ));
            }
            self.buf = buf;
            return Err(StorageError::io("write", path, e));
        }
        self.active_bytes += buf.len() as u64;
        self.buf = buf;
        self.dirty = true;
        self.active_needs_start_batch = false;
        // An empty plan writes only the start batch and uses no number.
        self.next_batch = if count == 0 { batch } else { batch + 1 };
        if let (Some(last), Some(e)) = (self.segments.last_mut(), plan.entries.last()) {
            last.max_entry_index = last.max_entry_index.max(e.index);
        }
        plan.apply_to(&mut self.log, |e| e.term);
        if let Some(hs) = plan.hard_state {
            self.hard_state = hs.clone();
        }
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), StorageError> {
        if !self.dirty {
            return Ok(());
        }
        if let Err(e) = self.active.sync_data() {
            let path = self.active_path();
            // After a failed fsync the kernel may have dropped the dirty
            // pages and cleared the error: retrying would "succeed" without
            // the data. Only a fresh recovery knows what is on disk.
            self.poisoned = Some(format!("fdatasync of {} failed: {e}", path.display()));
            return Err(StorageError::io("fdatasync", path, e));
        }
        self.dirty = false;
        self.durable_through = self.next_batch - 1;
        Ok(())
    }

    /// Deletes snapshot files older than the current snapshot and segments
    /// whose entries all lie at or below it (never the active segment).
    fn cleanup(&mut self) -> Result<(), StorageError> {
        let Some(meta) = &self.snapshot else {
            return Ok(());
        };
        snapfile::remove_older(&self.snap_dir, meta.index)?;
        let mut removed = 0;
        // The active segment must carry the hard state before the segments
        // that hold it may go.
        while !self.active_needs_start_batch
            && self.segments.len() > 1
            && self.segments[0].max_entry_index <= self.log.snapshot_index
        {
            let path = self.segments[0].path.clone();
            std::fs::remove_file(&path)
                .map_err(|e| StorageError::io("remove compacted segment", &path, e))?;
            tracing::debug!(file = %path.display(), "removed a WAL segment below the snapshot");
            self.segments.remove(0);
            removed += 1;
        }
        if removed > 0 {
            fsync_dir(&self.wal_dir)?;
        }
        Ok(())
    }
}

/// How long `open` waits for the directory lock before reporting
/// [`StorageError::Locked`]. A lock held by a live process stays held; the
/// wait covers a transient holder: a child forked by any thread of this
/// process briefly shares our descriptors (and so the flock) until it
/// execs, which can outlive the store that was just dropped.
const LOCK_WAIT_MS: u64 = 1000;

fn store_sequence(segments: &[SegmentInfo]) -> u64 {
    segments.last().map_or(1, |s| s.sequence)
}

fn lock_directory(dir: &Path) -> Result<File, StorageError> {
    let path = dir.join("LOCK");
    let file = File::create(&path).map_err(|e| StorageError::io("create lock file", &path, e))?;
    let mut waited_ms = 0;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) if waited_ms < LOCK_WAIT_MS => {
                std::thread::sleep(std::time::Duration::from_millis(10));
                waited_ms += 10;
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StorageError::Locked {
                    path: dir.to_path_buf(),
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(StorageError::io("lock", &path, e)),
        }
    }
}

impl LogStore for DiskStorage {
    fn append(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<(), StorageError> {
        self.check_usable()?;
        let plan = plan(&self.log, &self.hard_state, hard_state, entries, snapshot)?;
        if plan.is_empty() {
            return Ok(());
        }
        if let (Some(_), Some(s)) = (plan.snapshot, snapshot) {
            // Durable before the WAL refers to it; see `open` for a crash
            // between the two.
            let file: SnapshotFile = snapfile::write(&self.snap_dir, s)?;
            tracing::debug!(file = %file.path.display(), "wrote snapshot file");
        }
        self.write_batch(&plan)?;
        if let (Some(_), Some(s)) = (plan.snapshot, snapshot) {
            self.snapshot = Some(s.meta.clone());
            self.cleanup_due = true;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StorageError> {
        self.check_usable()?;
        self.sync_active()?;
        if self.cleanup_due {
            // Failing to delete old files wastes space but loses nothing:
            // report it and try again after the next sync.
            match self.cleanup() {
                Ok(()) => self.cleanup_due = false,
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove old snapshot files or segments")
                }
            }
        }
        Ok(())
    }

    fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    fn snapshot_meta(&self) -> Option<&SnapshotMeta> {
        self.snapshot.as_ref()
    }

    fn load_snapshot(&self) -> Result<Option<Snapshot>, StorageError> {
        match &self.snapshot {
            None => Ok(None),
            Some(meta) => snapfile::read(&SnapshotFile {
                index: meta.index,
                term: meta.term,
                path: self
                    .snap_dir
                    .join(snapfile::file_name(meta.index, meta.term)),
            })
            .map(Some),
        }
    }

    fn first_index(&self) -> Index {
        self.log.first_index()
    }

    fn last_index(&self) -> Index {
        self.log.last_index()
    }

    fn term(&self, index: Index) -> Option<Term> {
        self.log.term(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_store_can_move_to_a_blocking_thread() {
        // The node daemon runs fsyncs off the async executor.
        fn assert_send<T: Send + 'static>() {}
        assert_send::<DiskStorage>();
    }

    #[test]
    fn options_name_the_bad_field() {
        let err = DiskOptions {
            segment_bytes_max: 10,
        }
        .validate()
        .expect_err("too small");
        assert!(err.to_string().contains("segment_bytes_max"), "{err}");
    }
}
