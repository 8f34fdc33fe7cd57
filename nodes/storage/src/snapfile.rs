//! Snapshot files: `snap/<index:020>-<term:020>.snap`.
//!
//! ```text
//! magic "RSNP" | version u32 | index u64 | term u64 | voter count u32 |
//! voters u64... | data length u64 | data | crc32c u32 over everything before
//! ```
//!
//! A snapshot is written to `<name>.tmp`, fsynced, renamed to `<name>` and
//! the directory fsynced, so a file with the final name is always whole.
//! Leftover `.tmp` files are deleted when the directory is opened.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use raft::{Index, Snapshot, SnapshotMeta, Term};

use crate::error::StorageError;
use crate::fsutil::{fsync_dir, remove_tmp_files};
use crate::record::Reader;

const MAGIC: &[u8; 4] = b"RSNP";
const VERSION: u32 = 1;

/// A snapshot file found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SnapshotFile {
    pub(crate) index: Index,
    pub(crate) term: Term,
    pub(crate) path: PathBuf,
}

pub(crate) fn file_name(index: Index, term: Term) -> String {
    format!("{index:020}-{term:020}.snap")
}

fn parse_name(name: &str) -> Option<(Index, Term)> {
    let stem = name.strip_suffix(".snap")?;
    let (index, term) = stem.split_once('-')?;
    Some((index.parse().ok()?, term.parse().ok()?))
}

/// Snapshot files in `dir`, oldest first.
pub(crate) fn list(dir: &Path) -> Result<Vec<SnapshotFile>, StorageError> {
    let mut files = Vec::new();
    let read = fs::read_dir(dir).map_err(|e| StorageError::io("list snapshots", dir, e))?;
    for item in read {
        let item = item.map_err(|e| StorageError::io("list snapshots", dir, e))?;
        let name = item.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some((index, term)) = parse_name(name) {
            files.push(SnapshotFile {
                index,
                term,
                path: item.path(),
            });
        } else if !name.ends_with(".tmp") {
            tracing::warn!(file = %item.path().display(), "ignoring unknown file in snapshot directory");
        }
    }
    files.sort_by_key(|f| (f.index, f.term));
    Ok(files)
}

fn encode(snapshot: &Snapshot) -> Vec<u8> {
    let mut buf = Vec::with_capacity(snapshot.data.len() + 64);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&VERSION.to_le_bytes());
    buf.extend_from_slice(&snapshot.meta.index.to_le_bytes());
    buf.extend_from_slice(&snapshot.meta.term.to_le_bytes());
    buf.extend_from_slice(&(snapshot.meta.voters.len() as u32).to_le_bytes());
    for v in &snapshot.meta.voters {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&(snapshot.data.len() as u64).to_le_bytes());
    buf.extend_from_slice(&snapshot.data);
    let crc = crc32c::crc32c(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    buf
}

fn decode(bytes: &[u8]) -> Result<Snapshot, String> {
    if bytes.len() < 4 {
        return Err(format!("{} bytes, shorter than a checksum", bytes.len()));
    }
    let (body, crc_bytes) = bytes.split_at(bytes.len() - 4);
    let stored = crate::record::read_u32(crc_bytes, 0);
    let computed = crc32c::crc32c(body);
    if stored != computed {
        return Err(format!(
            "checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
        ));
    }
    let mut r = Reader { buf: body, pos: 0 };
    let err = |c: crate::error::Corruption| c.to_string();
    if r.bytes(4).map_err(err)? != MAGIC {
        return Err("bad magic".into());
    }
    let version = r.u32().map_err(err)?;
    if version != VERSION {
        return Err(format!("unknown version {version}"));
    }
    let index = r.u64().map_err(err)?;
    let term = r.u64().map_err(err)?;
    let voter_count = r.u32().map_err(err)? as usize;
    if voter_count > r.remaining() / 8 {
        return Err(format!("voter count {voter_count} too large"));
    }
    let mut voters = Vec::with_capacity(voter_count);
    for _ in 0..voter_count {
        voters.push(r.u64().map_err(err)?);
    }
    let data_len = r.u64().map_err(err)? as usize;
    let data = r.bytes(data_len).map_err(err)?.to_vec();
    if r.remaining() != 0 {
        return Err(format!("{} trailing bytes", r.remaining()));
    }
    Ok(Snapshot {
        meta: SnapshotMeta {
            index,
            term,
            voters,
        },
        data,
    })
}

/// Writes `snapshot` durably (temp file, fsync, rename, directory fsync).
pub(crate) fn write(dir: &Path, snapshot: &Snapshot) -> Result<SnapshotFile, StorageError> {
    let name = file_name(snapshot.meta.index, snapshot.meta.term);
    let path = dir.join(&name);
    let tmp = dir.join(format!("{name}.tmp"));
    let result = (|| {
        let mut file =
            File::create(&tmp).map_err(|e| StorageError::io("create snapshot", &tmp, e))?;
        file.write_all(&encode(snapshot))
            .map_err(|e| StorageError::io("write snapshot", &tmp, e))?;
        file.sync_all()
            .map_err(|e| StorageError::io("fsync snapshot", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| StorageError::io("rename snapshot", &path, e))?;
        fsync_dir(dir)
    })();
    if result.is_err() {
        // Best effort: a leftover temp file is also removed on the next open.
        let _ = fs::remove_file(&tmp);
    }
    result?;
    Ok(SnapshotFile {
        index: snapshot.meta.index,
        term: snapshot.meta.term,
        path,
    })
}

/// Reads and verifies a snapshot file; its contents must match its name.
pub(crate) fn read(file: &SnapshotFile) -> Result<Snapshot, StorageError> {
    let bytes =
        fs::read(&file.path).map_err(|e| StorageError::io("read snapshot", &file.path, e))?;
    let snapshot = decode(&bytes).map_err(|detail| StorageError::CorruptSnapshot {
        path: file.path.clone(),
        detail,
    })?;
    if (snapshot.meta.index, snapshot.meta.term) != (file.index, file.term) {
        return Err(StorageError::CorruptSnapshot {
            path: file.path.clone(),
            detail: format!(
                "holds index {} term {}, but its name says index {} term {}",
                snapshot.meta.index, snapshot.meta.term, file.index, file.term
            ),
        });
    }
    Ok(snapshot)
}

/// Deletes every snapshot file older than `keep_index`, then fsyncs the
/// directory. Called only once a newer snapshot is durable.
pub(crate) fn remove_older(dir: &Path, keep_index: Index) -> Result<(), StorageError> {
    let mut removed = false;
    for f in list(dir)? {
        if f.index < keep_index {
            fs::remove_file(&f.path)
                .map_err(|e| StorageError::io("remove old snapshot", &f.path, e))?;
            removed = true;
        }
    }
    if removed {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Removes temp files left by a crash during a snapshot write.
pub(crate) fn clean(dir: &Path) -> Result<(), StorageError> {
    remove_tmp_files(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        Snapshot {
            meta: SnapshotMeta {
                index: 42,
                term: 7,
                voters: vec![1, 2, 3],
            },
            data: b"state machine bytes".to_vec(),
        }
    }

    #[test]
    fn written_snapshot_reads_back_and_damage_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = write(dir.path(), &sample()).expect("write");
        assert_eq!(list(dir.path()).expect("list"), vec![file.clone()]);
        assert_eq!(read(&file).expect("read"), sample());

        let mut bytes = fs::read(&file.path).expect("read bytes");
        for i in 0..bytes.len() {
            bytes[i] ^= 0x10;
            fs::write(&file.path, &bytes).expect("damage");
            let err = read(&file).expect_err("damage must be detected");
            assert!(
                err.to_string().contains(&file.path.display().to_string()),
                "{err}"
            );
            bytes[i] ^= 0x10;
        }
    }
}
