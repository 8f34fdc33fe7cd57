//! Small file-system helpers whose ordering matters for durability.

use std::fs::{self, File};
use std::path::Path;

use crate::error::StorageError;

/// Makes a directory's entries (creations, renames, removals) durable.
/// Without this a renamed file may be missing after a power loss even
/// though its contents were fsynced.
pub(crate) fn fsync_dir(dir: &Path) -> Result<(), StorageError> {
    let handle = File::open(dir).map_err(|e| StorageError::io("open directory", dir, e))?;
    handle
        .sync_all()
        .map_err(|e| StorageError::io("fsync directory", dir, e))
}

/// Creates `dir` (and parents) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<(), StorageError> {
    fs::create_dir_all(dir).map_err(|e| StorageError::io("create directory", dir, e))
}

/// Removes `*.tmp` files: halves of a temp-write-and-rename interrupted
/// by a crash. They were never renamed, so nothing refers to them.
pub(crate) fn remove_tmp_files(dir: &Path) -> Result<(), StorageError> {
    let read = fs::read_dir(dir).map_err(|e| StorageError::io("list directory", dir, e))?;
    for item in read {
        let item = item.map_err(|e| StorageError::io("list directory", dir, e))?;
        let path = item.path();
        if path.extension().is_some_and(|x| x == "tmp") {
            tracing::info!(file = %path.display(), "removing temp file left by an interrupted write");
            fs::remove_file(&path).map_err(|e| StorageError::io("remove temp file", &path, e))?;
        }
    }
    Ok(())
}
