//! One error type for the storage crate. Every variant carries what an
//! operator needs to act on it: the file, the offset, the operation.

use std::io;
use std::path::PathBuf;

use raft::{Index, Term};

/// Why a record or file failed validation. Used inside
/// [`StorageError::Corrupt`] and in the warning logged for a torn tail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// Fewer bytes remain than a record header needs.
    TruncatedHeader { bytes_remaining: usize },
    /// The length field is below the minimum or above the limit.
    BadLength { length: u32 },
    /// The record claims more bytes than the file holds.
    TruncatedRecord { length: u32, bytes_remaining: usize },
    /// The stored CRC does not match the bytes.
    ChecksumMismatch { stored: u32, computed: u32 },
    /// The checksum matched but the payload does not decode (a bug or a
    /// file written by an incompatible version; never a torn write).
    Undecodable { detail: String },
    /// The batch sequence numbers do not continue as written.
    BatchSequence { expected: u64, found: u64 },
    /// A sealed (non-last) segment ends in the middle of a batch.
    UnterminatedBatch,
    /// The segment header (magic, version, sequence, checksum) is wrong.
    BadSegmentHeader { detail: String },
    /// The records are intact but describe an impossible log (an entry that
    /// does not follow its predecessor).
    Inconsistent { detail: String },
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::TruncatedHeader { bytes_remaining } => {
                write!(f, "incomplete record header ({bytes_remaining} bytes left)")
            }
            Corruption::BadLength { length } => write!(f, "implausible record length {length}"),
            Corruption::TruncatedRecord {
                length,
                bytes_remaining,
            } => write!(
                f,
                "record of {length} bytes but only {bytes_remaining} bytes left in the file"
            ),
            Corruption::ChecksumMismatch { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ),
            Corruption::Undecodable { detail } => write!(f, "undecodable payload: {detail}"),
            Corruption::BatchSequence { expected, found } => {
                write!(f, "batch sequence {found} where {expected} was expected")
            }
            Corruption::UnterminatedBatch => write!(f, "sealed segment ends inside a batch"),
            Corruption::BadSegmentHeader { detail } => write!(f, "bad segment header: {detail}"),
            Corruption::Inconsistent { detail } => write!(f, "inconsistent log: {detail}"),
        }
    }
}

/// Errors of every storage operation.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The file system has no room left (ENOSPC). Nothing of the failed call
    /// was acknowledged; everything synced before it is still recoverable.
    #[error("disk full (ENOSPC) during {op} on {}", path.display())]
    DiskFull {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Any other I/O failure.
    #[error("I/O error during {op} on {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Damage that is not a torn tail: data that was (or may have been)
    /// acknowledged is unreadable. Never repaired automatically.
    #[error("corrupt write-ahead log {} at offset {offset}: {kind}{}", path.display(), evidence.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        kind: Corruption,
        /// Why this is not a torn tail, e.g. "intact record of batch 9 at offset 4096 follows".
        evidence: Option<String>,
    },
    /// A snapshot file fails its checksum or does not parse.
    #[error("corrupt snapshot file {}: {detail}", path.display())]
    CorruptSnapshot { path: PathBuf, detail: String },
    /// Files are missing or contradict each other (a gap in segment
    /// numbers, a WAL that refers to a snapshot file that is not there).
    #[error("inconsistent data directory {}: {detail}", path.display())]
    Inconsistent { path: PathBuf, detail: String },
    /// The caller asked for something the log contract forbids (a gap, an
    /// overwrite of compacted entries, a term that goes backwards).
    #[error("invalid append: {detail}")]
    InvalidAppend { detail: String },
    /// A snapshot older than the one already stored.
    #[error("stale snapshot at index {index} (term {term}); the stored snapshot is at index {stored_index}")]
    StaleSnapshot {
        index: Index,
        term: Term,
        stored_index: Index,
    },
    /// An entry larger than [`crate::ENTRY_BYTES_MAX`].
    #[error("entry {index} holds {bytes} bytes, over the limit of {limit_bytes}")]
    EntryTooLarge {
        index: Index,
        bytes: usize,
        limit_bytes: usize,
    },
    /// An earlier fsync failed; after that the kernel may have dropped dirty
    /// pages, so nothing written since can be trusted. Reopen the directory
    /// (recovery re-reads what is really on disk).
    #[error("storage unusable after an earlier failure ({reason}); reopen to recover")]
    Poisoned { reason: String },
    /// Another process holds the directory's lock file.
    #[error("data directory {} is locked by another process", path.display())]
    Locked { path: PathBuf },
    /// Bad options.
    #[error("invalid storage option {field}: {detail}")]
    InvalidOption { field: &'static str, detail: String },
}

impl StorageError {
    /// Wraps an I/O error, naming ENOSPC as [`StorageError::DiskFull`].
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if source.kind() == io::ErrorKind::StorageFull {
            StorageError::DiskFull { op, path, source }
        } else {
            StorageError::Io { op, path, source }
        }
    }

    /// True for [`StorageError::DiskFull`].
    pub fn is_disk_full(&self) -> bool {
        matches!(self, StorageError::DiskFull { .. })
    }
}
