//! Replaying the WAL on open, and the rule that tells a torn tail from
//! corruption.
//!
//! The rule that tells a torn tail from corruption is written out in the
//! crate documentation (`lib.rs`, "Torn tail or corruption"); the numbered
//! steps there are the branches of `scan_segment`.

use std::fs;
use std::path::{Path, PathBuf};

use raft::{Entry, HardState, Index};

use crate::error::{Corruption, StorageError};
use crate::log::SuffixLog;
use crate::record::{decode_payload, later_batch_frame_at, read_frame, Record};
use crate::segment::{self, SEGMENT_HEADER_BYTES};

/// What the store tracks about each segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentInfo {
    pub(crate) sequence: u64,
    pub(crate) path: PathBuf,
    /// Highest entry index ever written into this segment (0 if none).
    /// Once the snapshot covers it, nothing in the segment is needed.
    pub(crate) max_entry_index: Index,
    /// File length (for the active segment: as of recovery or the roll).
    pub(crate) bytes: u64,
}

/// What recovery cut off the end of the last segment. Logged as a warning
/// and returned in [`crate::Recovered::torn_tail`] for the caller's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment that was cut.
    pub path: PathBuf,
    /// Where the first damaged (or incomplete) record starts.
    pub damage_offset: u64,
    /// The new length of the file: the end of the last whole batch.
    pub truncated_to: u64,
    /// How many bytes were dropped.
    pub dropped_bytes: u64,
    /// What was wrong at `damage_offset`.
    pub reason: String,
}

/// The WAL's contents after replay.
#[derive(Debug, Default)]
pub(crate) struct Replayed {
    pub(crate) hard_state: HardState,
    pub(crate) log: SuffixLog<Entry>,
    pub(crate) segments: Vec<SegmentInfo>,
    /// Batch number the next append must use.
    pub(crate) next_batch: u64,
    /// Length of the last segment after any torn tail was cut.
    pub(crate) last_segment_bytes: u64,
    pub(crate) torn_tail: Option<TornTail>,
}

/// How one segment's scan ended.
enum ScanEnd {
    Clean,
    Torn {
        keep_bytes: usize,
        damage_offset: usize,
        reason: String,
    },
}

/// Replays every segment in `wal_dir`, cutting a torn tail off the last one.
pub(crate) fn replay(wal_dir: &Path) -> Result<Replayed, StorageError> {
    let files = segment::list(wal_dir)?;
    for pair in files.windows(2) {
        if pair[1].0 != pair[0].0 + 1 {
            return Err(StorageError::Inconsistent {
                path: wal_dir.to_path_buf(),
                detail: format!(
                    "segment {} is missing between {} and {}",
                    segment::file_name(pair[0].0 + 1),
                    pair[0].1.display(),
                    pair[1].1.display()
                ),
            });
        }
    }
    let mut out = Replayed {
        next_batch: 1,
        ..Replayed::default()
    };
    for (i, (sequence, path)) in files.iter().enumerate() {
        let is_last = i + 1 == files.len();
        let bytes = fs::read(path).map_err(|e| StorageError::io("read segment", path, e))?;
        let corrupt = |offset: usize, kind: Corruption| StorageError::Corrupt {
            path: path.clone(),
            offset: offset as u64,
            kind,
            evidence: None,
        };
        let (header_sequence, first_batch) =
            segment::decode_header(&bytes).map_err(|k| corrupt(0, k))?;
        if header_sequence != *sequence {
            return Err(corrupt(
                0,
                Corruption::BadSegmentHeader {
                    detail: format!("header says segment {header_sequence}"),
                },
            ));
        }
        if i > 0 && first_batch != out.next_batch {
            return Err(corrupt(
                0,
                Corruption::BatchSequence {
                    expected: out.next_batch,
                    found: first_batch,
                },
            ));
        }
        out.next_batch = first_batch;
        let mut info = SegmentInfo {
            sequence: *sequence,
            path: path.clone(),
            max_entry_index: 0,
            bytes: bytes.len() as u64,
        };
        let end = scan_segment(path, &bytes, is_last, &mut out, &mut info)?;
        out.last_segment_bytes = bytes.len() as u64;
        if let ScanEnd::Torn {
            keep_bytes,
            damage_offset,
            reason,
        } = end
        {
            let torn = TornTail {
                path: path.clone(),
                damage_offset: damage_offset as u64,
                truncated_to: keep_bytes as u64,
                dropped_bytes: (bytes.len() - keep_bytes) as u64,
                reason,
            };
            cut_torn_tail(&torn)?;
            out.last_segment_bytes = keep_bytes as u64;
            info.bytes = keep_bytes as u64;
            out.torn_tail = Some(torn);
        }
        out.segments.push(info);
    }
    Ok(out)
}

/// Reads one segment's records, applying each whole batch to `out`.
fn scan_segment(
    path: &Path,
    bytes: &[u8],
    is_last: bool,
    out: &mut Replayed,
    info: &mut SegmentInfo,
) -> Result<ScanEnd, StorageError> {
    let corrupt =
        |offset: usize, kind: Corruption, evidence: Option<String>| StorageError::Corrupt {
            path: path.to_path_buf(),
            offset: offset as u64,
            kind,
            evidence,
        };
    let mut offset = SEGMENT_HEADER_BYTES;
    let mut batch_start = offset;
    let mut pending: Vec<(Record, usize)> = Vec::new();
    loop {
        match read_frame(bytes, offset) {
            Ok(None) if pending.is_empty() => return Ok(ScanEnd::Clean),
            Ok(None) if is_last => {
                return Ok(ScanEnd::Torn {
                    keep_bytes: batch_start,
                    damage_offset: offset,
                    reason: format!("batch {} has no final record (file ends)", out.next_batch),
                })
            }
            Ok(None) => return Err(corrupt(batch_start, Corruption::UnterminatedBatch, None)),
            Ok(Some(frame)) => {
                if frame.batch != out.next_batch {
                    return Err(corrupt(
                        offset,
                        Corruption::BatchSequence {
                            expected: out.next_batch,
                            found: frame.batch,
                        },
                        None,
                    ));
                }
                let record = decode_payload(&frame).map_err(|k| corrupt(offset, k, None))?;
                pending.push((record, offset));
                offset = frame.end;
                if frame.end_of_batch {
                    for (record, at) in pending.drain(..) {
                        apply(record, out, info).map_err(|k| corrupt(at, k, None))?;
                    }
                    out.next_batch += 1;
                    batch_start = offset;
                }
            }
            Err(kind) => {
                if !is_last {
                    return Err(corrupt(
                        offset,
                        kind,
                        Some("a later segment exists, and segments are fsynced before the next is created".into()),
                    ));
                }
                let damaged_batch = out.next_batch;
                for candidate in offset + 1..bytes.len() {
                    if let Some(frame) = later_batch_frame_at(bytes, candidate, damaged_batch) {
                        return Err(corrupt(
                            offset,
                            kind,
                            Some(format!(
                                "intact record of batch {} at offset {candidate} was written after batch {} was fsynced, so batch {damaged_batch} had been acknowledged",
                                frame.batch, frame.durable_through
                            )),
                        ));
                    }
                }
                return Ok(ScanEnd::Torn {
                    keep_bytes: batch_start,
                    damage_offset: offset,
                    reason: kind.to_string(),
                });
            }
        }
    }
}

/// Applies one record of a whole batch.
fn apply(record: Record, out: &mut Replayed, info: &mut SegmentInfo) -> Result<(), Corruption> {
    match record {
        Record::Entries(entries) => {
            for entry in entries {
                let index = entry.index;
                info.max_entry_index = info.max_entry_index.max(index);
                let last = out.log.last_index();
                if !out.log.push(index, entry) {
                    return Err(Corruption::Inconsistent {
                        detail: format!(
                            "entry {index} does not follow last index {last} (snapshot index {})",
                            out.log.snapshot_index
                        ),
                    });
                }
            }
        }
        Record::HardState(hs) => out.hard_state = hs,
        Record::Truncate { from_index } => out.log.truncate_from(from_index),
        Record::Snapshot { index, term } => out.log.compact_to(index, term),
    }
    Ok(())
}

/// Cuts the last segment back to its last whole batch, durably, and says so.
fn cut_torn_tail(torn: &TornTail) -> Result<(), StorageError> {
    tracing::warn!(
        file = %torn.path.display(),
        damage_offset = torn.damage_offset,
        truncated_to = torn.truncated_to,
        dropped_bytes = torn.dropped_bytes,
        reason = %torn.reason,
        "torn tail in the last WAL segment: dropping the unacknowledged last batch"
    );
    let file = segment::open_for_append(&torn.path)?;
    file.set_len(torn.truncated_to)
        .map_err(|e| StorageError::io("truncate torn tail", &torn.path, e))?;
    file.sync_all()
        .map_err(|e| StorageError::io("fsync truncated segment", &torn.path, e))
}
