//! Write-ahead log and snapshot files with checksums, group commit and
//! torn-tail recovery.
//!
//! This crate is on the I/O side of the line: it owns the files of one
//! node's data directory. It depends on the Raft core only for the boundary
//! types ([`Entry`], [`HardState`], [`Snapshot`]).
//!
//! # How the node daemon uses it
//!
//! ```no_run
//! use storage::{DiskOptions, DiskStorage, LogStore};
//! # fn main() -> Result<(), storage::StorageError> {
//! let (mut store, recovered) = DiskStorage::open("data/n1".as_ref(), DiskOptions::default())?;
//! // recovered.hard_state / .snapshot / .entries become raft's `Restored`.
//! # let ready_hard_state = None; let ready_entries = vec![]; let ready_snapshot = None;
//! // For every Ready: persist first (one fdatasync), then send its messages.
//! store.save_ready(ready_hard_state.as_ref(), &ready_entries, ready_snapshot.as_ref())?;
//! # Ok(()) }
//! ```
//!
//! The node daemon does not call the store on its event loop: it moves it
//! onto a [`StorageWriter`] thread, which appends every batch queued while
//! it was busy and syncs them with one fdatasync (group commit), then
//! reports "durable through write n" back to the loop.
//!
//! # Guarantees
//!
//! * When `save_ready` (or `sync`) returns `Ok`, everything passed to it
//!   and to every earlier `append` survives a crash or power loss.
//! * A batch (one `append`) is recovered whole or not at all, so a Ready's
//!   entries and hard state never come back half-written.
//! * Recovery never believes damaged data: a torn tail is cut off and
//!   logged (and reported in [`Recovered::torn_tail`]); anything else is
//!   [`StorageError::Corrupt`] naming file and offset (see below).
//! * After an fsync error the store refuses every further call
//!   ([`StorageError::Poisoned`]); reopen to recover what is on disk. A full
//!   disk is [`StorageError::DiskFull`] and loses nothing acknowledged.
//!
//! # Torn tail or corruption
//!
//! Every record carries its batch number and `durable_through`, the highest
//! batch that had been fsynced when the record was written. Recovery
//! applies whole batches in order and stops at the first damaged record
//! (incomplete header, impossible length, record past the end of the file,
//! checksum mismatch). Then:
//!
//! 1. In a segment that is not the last: **corruption**. Segments are
//!    fsynced before the next one is created, so that data was acknowledged.
//! 2. In the last segment, when an intact record further on has
//!    `durable_through >= b`, where `b` is the damaged batch: **corruption**.
//!    That record proves batch `b` had been fsynced before it was written.
//!    With one fsync per batch (`save_ready`) any intact later batch is such
//!    proof: "damage followed by valid data".
//! 3. Otherwise: a **torn tail**. Nothing after the damage vouches for it,
//!    so the damaged batch was never acknowledged (intact records after it,
//!    if any, were written under the same unfinished fsync). The segment is
//!    cut back to the end of the last whole batch, durably, and a warning
//!    names the file, the damage offset, the new length and the bytes
//!    dropped. A last segment ending inside a batch is cut the same way.
//!
//! An intact record that is wrong in itself (it does not decode, its batch
//! number breaks the sequence, its entries do not follow the log) and a bad
//! segment header (headers are written via temp file and rename) are always
//! corruption. On corruption nothing is modified.
//!
//! # Files
//!
//! `<dir>/wal/<seq:020>.log`: a 28-byte header (magic, version, sequence,
//! first batch, crc32c), then records `[u32 length][u32 crc32c][u8 type]
//! [u64 batch][u64 durable_through][payload]`, little-endian; the CRC
//! covers the length field and everything after the CRC. Record types:
//! entries, hard state, truncate-from-index, snapshot point. Every segment
//! after the first starts with a batch holding the current hard state and
//! snapshot point, so older segments can be deleted once the snapshot
//! covers their entries. `<dir>/snap/<index:020>-<term:020>.snap`: the
//! newest snapshot, checksummed, written via temp file + fsync + rename +
//! directory fsync. `<dir>/LOCK`: flock'd by the process that has it open.

mod disk;
mod error;
mod fsutil;
pub mod inspect;
mod log;
mod memory;
mod record;
mod recovery;
mod segment;
mod snapfile;
pub mod writer;

pub use disk::{DiskOptions, DiskStorage, SEGMENT_BYTES_MIN};
pub use error::{Corruption, StorageError};
pub use memory::MemStorage;
pub use raft::{Entry, EntryKind, HardState, Index, Snapshot, SnapshotMeta, Term};
pub use recovery::TornTail;
pub use writer::{StorageWriter, Write, WriteOutcome};

/// The largest entry payload a store accepts. Bounds a record (and the
/// memory recovery allocates for one) so a damaged length cannot ask for
/// gigabytes.
pub const ENTRY_BYTES_MAX: usize = 64 * 1024 * 1024;

/// What a node restarts from: everything that was durable. All empty for a
/// brand-new node. The fields map one to one onto raft's `Restored`
/// (`snapshot.meta` is its `snapshot`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    pub hard_state: HardState,
    /// The newest snapshot, with its data, for the state machine to restore.
    pub snapshot: Option<Snapshot>,
    /// The entries after the snapshot, consecutive, truncations applied.
    pub entries: Vec<Entry>,
    /// Set when recovery cut an unacknowledged torn tail off the WAL (also
    /// logged as a warning). Informational: nothing acknowledged was lost.
    pub torn_tail: Option<TornTail>,
}

impl Recovered {
    /// What the Raft core restarts from. The snapshot's data is copied: the
    /// state machine restores from `self.snapshot`, and the core keeps its
    /// own copy to send to lagging followers.
    pub fn restored(&self) -> raft::Restored {
        raft::Restored {
            hard_state: self.hard_state.clone(),
            snapshot: self.snapshot.as_ref().map(|s| s.meta.clone()),
            entries: self.entries.clone(),
            snapshot_data: self
                .snapshot
                .as_ref()
                .map(|s| s.data.clone())
                .unwrap_or_default(),
        }
    }
}

/// Stable storage for one Raft node: the log, the hard state and the
/// newest snapshot.
///
/// # Contract
///
/// * `append` validates and writes one batch; it is not durable until
///   `sync` returns `Ok`. Several appends followed by one `sync` is group
///   commit: one fdatasync for all of them.
/// * Within a batch the order of effects is: the snapshot (if any)
///   compacts the log, or replaces it when the log has no entry with the
///   snapshot's index and term (Raft §7); then the entries are appended,
///   first truncating the stored suffix from `entries[0].index` when that
///   is at or below the last stored index (the Ready rule); then the hard
///   state is recorded.
/// * Refused without writing anything: entries that are not consecutive,
///   that leave a gap after the last index, or that start at or below the
///   snapshot index; a snapshot older than the stored one; a hard state
///   whose term is lower than the stored one; an entry over
///   [`ENTRY_BYTES_MAX`].
/// * The read methods reflect every successful `append`, synced or not.
pub trait LogStore {
    /// Writes one batch (a Ready's snapshot, entries and hard state)
    /// without waiting for the disk.
    fn append(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<(), StorageError>;

    /// Makes every batch appended so far durable (one fdatasync).
    fn sync(&mut self) -> Result<(), StorageError>;

    /// Step 1 of handling a Ready: persists its snapshot, entries and hard
    /// state with one fdatasync. Send the Ready's messages only after this
    /// returns `Ok`.
    fn save_ready(
        &mut self,
        hard_state: Option<&HardState>,
        entries: &[Entry],
        snapshot: Option<&Snapshot>,
    ) -> Result<(), StorageError> {
        self.append(hard_state, entries, snapshot)?;
        self.sync()
    }

    /// Persists a snapshot the application took of its own applied state
    /// (raft's `compact`): the log up to the snapshot's index is discarded,
    /// the entries after it are kept. The snapshot must match the log (the
    /// log has an entry with its index and term); otherwise this is an
    /// error rather than the log replacement a leader's snapshot causes.
    fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), StorageError> {
        let (index, term) = (snapshot.meta.index, snapshot.meta.term);
        let stored_index = self.snapshot_meta().map_or(0, |m| m.index);
        // An older snapshot falls through to `StaleSnapshot` below.
        if index > stored_index && self.term(index) != Some(term) {
            return Err(StorageError::InvalidAppend {
                detail: format!(
                    "snapshot at index {index} term {term} does not match the log (term there: {:?})",
                    self.term(index)
                ),
            });
        }
        self.save_ready(None, &[], Some(snapshot))
    }

    /// The newest hard state appended.
    fn hard_state(&self) -> &HardState;

    /// The newest snapshot's metadata, if any.
    fn snapshot_meta(&self) -> Option<&SnapshotMeta>;

    /// Reads the newest snapshot with its data (to send to a follower).
    fn load_snapshot(&self) -> Result<Option<Snapshot>, StorageError>;

    /// Index of the first entry in the log (snapshot index + 1).
    fn first_index(&self) -> Index;

    /// Index of the last entry (the snapshot index when the log is empty).
    fn last_index(&self) -> Index;

    /// Term of the entry at `index`; the snapshot's term at its index;
    /// `Some(0)` at index 0 before any snapshot; `None` elsewhere.
    fn term(&self, index: Index) -> Option<Term>;
}
