//! A full disk: a small tmpfs fills up under the WAL. The failing call is
//! a clear `DiskFull` (ENOSPC) error, the store stays usable once space is
//! freed, and everything acknowledged before is recovered after reopening.
//! Needs permission to mount (we run as root); otherwise prints SKIP.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use storage::{DiskOptions, DiskStorage, LogStore};

/// A tmpfs mounted on a temp dir, unmounted on drop (also when the test
/// panics).
struct TmpfsMount {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl TmpfsMount {
    fn new(size: &str) -> Option<TmpfsMount> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output();
        match output {
            Ok(o) if o.status.success() => Some(TmpfsMount { path, _dir: dir }),
            Ok(o) => {
                println!(
                    "SKIP: cannot mount a tmpfs ({}): the full-disk test needs root",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
                None
            }
            Err(e) => {
                println!("SKIP: cannot run mount ({e}): the full-disk test needs root");
                None
            }
        }
    }
}

impl Drop for TmpfsMount {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.path)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Something still holds a file open: detach it anyway so no
            // mount outlives the test.
            let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        }
    }
}

fn batch(i: u64) -> Batch {
    Batch {
        hard_state: Some(hs(1, Some(1), i - 1)),
        entries: entries(i, i, 1, 1024),
        ..Batch::default()
    }
}

fn options() -> DiskOptions {
    DiskOptions {
        segment_bytes_max: 64 * 1024,
    }
}

fn open_full(dir: &Path) -> (DiskStorage, storage::Recovered) {
    DiskStorage::open(dir, options()).unwrap_or_else(|e| panic!("open on a full disk: {e}"))
}

#[test]
fn a_full_disk_is_a_clear_error_and_loses_nothing_acknowledged() {
    let Some(mount) = TmpfsMount::new("256k") else {
        return;
    };
    let dir = mount.path.join("data");
    // Room to give back later, to show the store carries on.
    let filler = mount.path.join("filler");
    fs::write(&filler, vec![7u8; 32 * 1024]).expect("filler");

    let (mut store, _) = open_full(&dir);
    let mut acknowledged = Vec::new();
    let mut failed = None;
    for i in 1..=10_000u64 {
        let b = batch(i);
        match store.save_ready(b.hard_state.as_ref(), &b.entries, None) {
            Ok(()) => acknowledged.push(b),
            Err(e) => {
                failed = Some((i, e));
                break;
            }
        }
    }
    let (failed_at, err) = failed.expect("a 256 KiB tmpfs must fill up");
    println!("disk full after {} batches: {err}", acknowledged.len());
    assert!(err.is_disk_full(), "expected DiskFull, got {err:?}");
    assert!(err.to_string().contains("ENOSPC"), "{err}");
    assert!(
        acknowledged.len() >= 100,
        "only {} batches fit",
        acknowledged.len()
    );
    assert_eq!(
        store.last_index(),
        failed_at - 1,
        "the failed batch left no trace"
    );

    // Still full: still a clean DiskFull, not a poisoned store.
    let b = batch(failed_at);
    let again = store
        .save_ready(b.hard_state.as_ref(), &b.entries, None)
        .expect_err("still full");
    assert!(again.is_disk_full(), "{again:?}");

    // Space comes back: the same batch now goes through.
    fs::remove_file(&filler).expect("free space");
    store
        .save_ready(b.hard_state.as_ref(), &b.entries, None)
        .expect("write after space was freed");
    acknowledged.push(b);
    drop(store);

    let (_store, recovered) = open_full(&dir);
    assert_eq!(content(recovered), expected_after(&acknowledged));
}

#[test]
fn reopening_on_a_full_disk_recovers_everything_acknowledged() {
    let Some(mount) = TmpfsMount::new("128k") else {
        return;
    };
    let dir = mount.path.join("data");
    let mut acknowledged = Vec::new();
    {
        let (mut store, _) = open_full(&dir);
        for i in 1..=10_000u64 {
            let b = batch(i);
            if store
                .save_ready(b.hard_state.as_ref(), &b.entries, None)
                .is_err()
            {
                break;
            }
            acknowledged.push(b);
        }
    }
    // Fill whatever is left so even recovery has no room to grow anything.
    let _ = fs::write(mount.path.join("filler"), vec![1u8; 256 * 1024]);
    let (_store, recovered) = open_full(&dir);
    assert_eq!(content(recovered), expected_after(&acknowledged));
}
