//! Read-only views of the files, for operators (what is in this segment?)
//! and for tests that damage files at exact record boundaries.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::StorageError;
use crate::record::read_frame;
use crate::segment::{self, SEGMENT_HEADER_BYTES};

/// One intact record of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// Byte offset of the record's first byte in the segment file.
    pub offset: u64,
    /// Total bytes of the record, header included.
    pub bytes: u64,
    pub batch: u64,
    pub durable_through: u64,
    pub end_of_batch: bool,
}

/// The segment files of a data directory (`<dir>/wal/*.log`), in order.
pub fn segment_paths(data_dir: &Path) -> Result<Vec<PathBuf>, StorageError> {
    Ok(segment::list(&data_dir.join("wal"))?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

/// Size of a segment's header; the first record starts here.
pub const SEGMENT_HEADER_LEN: u64 = SEGMENT_HEADER_BYTES as u64;

/// The intact records of one segment, up to the first damaged one.
pub fn segment_records(path: &Path) -> Result<Vec<RecordInfo>, StorageError> {
    let bytes = fs::read(path).map_err(|e| StorageError::io("read segment", path, e))?;
    let mut out = Vec::new();
    let mut offset = SEGMENT_HEADER_BYTES;
    while let Ok(Some(frame)) = read_frame(&bytes, offset) {
        out.push(RecordInfo {
            offset: offset as u64,
            bytes: (frame.end - offset) as u64,
            batch: frame.batch,
            durable_through: frame.durable_through,
            end_of_batch: frame.end_of_batch,
        });
        offset = frame.end;
    }
    Ok(out)
}
