//! WAL segment files: `wal/<sequence:020>.log`, numbered from 1 without gaps
//! (compaction removes a prefix only).
//!
//! ```text
//! header (28 bytes): magic "RWAL" | version u32 | sequence u64 |
//!                    first batch u64 | crc32c u32 over the previous 24 bytes
//! then records (see `record`), whole batches only in every segment but the last
//! ```
//!
//! A segment is created with its header in a temp file, fsynced, renamed
//! and the directory fsynced, so a segment with its final name always has
//! an intact header: a bad header is corruption, never a torn write.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Corruption, StorageError};
use crate::fsutil::fsync_dir;
use crate::record::{read_u32, read_u64};

pub(crate) const SEGMENT_HEADER_BYTES: usize = 28;
const MAGIC: &[u8; 4] = b"RWAL";
const VERSION: u32 = 1;

pub(crate) fn file_name(sequence: u64) -> String {
    format!("{sequence:020}.log")
}

fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".log")?;
    if stem.len() != 20 {
        return None;
    }
    stem.parse().ok()
}

/// Segment files in `dir` as (sequence, path), in sequence order.
pub(crate) fn list(dir: &Path) -> Result<Vec<(u64, PathBuf)>, StorageError> {
    let mut out = Vec::new();
    let read = fs::read_dir(dir).map_err(|e| StorageError::io("list segments", dir, e))?;
    for item in read {
        let item = item.map_err(|e| StorageError::io("list segments", dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_name(name) {
            Some(sequence) => out.push((sequence, item.path())),
            None if name.ends_with(".tmp") => {}
            None => {
                tracing::warn!(file = %item.path().display(), "ignoring unknown file in WAL directory")
            }
        }
    }
    out.sort();
    Ok(out)
}

pub(crate) fn encode_header(sequence: u64, first_batch: u64) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..4].copy_from_slice(MAGIC);
    h[4..8].copy_from_slice(&VERSION.to_le_bytes());
    h[8..16].copy_from_slice(&sequence.to_le_bytes());
    h[16..24].copy_from_slice(&first_batch.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Parses a header, returning (sequence, first batch).
pub(crate) fn decode_header(bytes: &[u8]) -> Result<(u64, u64), Corruption> {
    let bad = |detail: String| Corruption::BadSegmentHeader { detail };
    if bytes.len() < SEGMENT_HEADER_BYTES {
        return Err(bad(format!("file has only {} bytes", bytes.len())));
    }
    let stored = read_u32(bytes, 24);
    let computed = crc32c::crc32c(&bytes[0..24]);
    if stored != computed {
        return Err(bad(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        )));
    }
    if &bytes[0..4] != MAGIC {
        return Err(bad("bad magic".into()));
    }
    let version = read_u32(bytes, 4);
    if version != VERSION {
        return Err(bad(format!("unknown version {version}")));
    }
    Ok((read_u64(bytes, 8), read_u64(bytes, 16)))
}

/// Creates segment `sequence` durably and returns it open for writing.
pub(crate) fn create(
    dir: &Path,
    sequence: u64,
    first_batch: u64,
) -> Result<(File, PathBuf), StorageError> {
    let path = dir.join(file_name(sequence));
    let tmp = dir.join(format!("{}.tmp", file_name(sequence)));
    let result = (|| {
        let mut file =
            File::create(&tmp).map_err(|e| StorageError::io("create segment", &tmp, e))?;
        file.write_all(&encode_header(sequence, first_batch))
            .map_err(|e| StorageError::io("write segment header", &tmp, e))?;
        file.sync_all()
            .map_err(|e| StorageError::io("fsync segment", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| StorageError::io("rename segment", &path, e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    let file = open_for_append(&path)?;
    Ok((file, path))
}

pub(crate) fn open_for_append(path: &Path) -> Result<File, StorageError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| StorageError::io("open segment", path, e))
}
