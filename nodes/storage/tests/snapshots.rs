//! Snapshots: compaction deletes what the snapshot covers, a leader's
//! snapshot replaces a conflicting log, and a crash between writing the
//! snapshot file and the WAL record that refers to it recovers correctly.

mod common;

use std::fs;

use common::*;
use storage::inspect::segment_paths;
use storage::{LogStore, StorageError};

fn snapshot_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir.join("snap"))
        .expect("snap dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn compaction_deletes_covered_segments_and_older_snapshots_and_keeps_the_rest() {
    let dir = fast_tempdir();
    let (mut store, _) = open_with(dir.path(), 1024);
    for i in 1..=50u64 {
        store
            .save_ready(Some(&hs(3, Some(2), i - 1)), &entries(i, i, 3, 120), None)
            .expect("save");
    }
    let before = store.segment_count();
    let bytes_before = store.wal_bytes();
    let on_disk: u64 = segment_paths(dir.path())
        .expect("list")
        .iter()
        .map(|p| fs::metadata(p).expect("stat").len())
        .sum();
    assert_eq!(bytes_before, on_disk);
    assert!(before >= 5, "{before} segments");
    store.save_snapshot(&snapshot(40, 3)).expect("snapshot 40");
    let after = store.segment_count();
    assert!(after < before, "{before} -> {after} segments");
    assert!(store.wal_bytes() < bytes_before);
    assert_eq!(snapshot_files(dir.path()).len(), 1);
    store.save_snapshot(&snapshot(45, 3)).expect("snapshot 45");
    assert_eq!(
        snapshot_files(dir.path()),
        vec![format!("{:020}-{:020}.snap", 45, 3)]
    );
    assert_eq!((store.first_index(), store.last_index()), (46, 50));
    assert_eq!(
        segment_paths(dir.path()).expect("list").len(),
        store.segment_count()
    );
    drop(store);

    // Every segment that held the older hard states is gone; the newest
    // one still comes back, with the snapshot and the entries after it.
    let (store, recovered) = open_with(dir.path(), 1024);
    assert_eq!(recovered.hard_state, hs(3, Some(2), 49));
    assert_eq!(recovered.snapshot, Some(snapshot(45, 3)));
    assert_eq!(recovered.entries, entries(46, 50, 3, 120));
    assert_eq!(store.load_snapshot().expect("load"), Some(snapshot(45, 3)));
    let restored = recovered.restored();
    assert_eq!(restored.snapshot, Some(snapshot(45, 3).meta));
    assert_eq!(restored.snapshot_data, snapshot(45, 3).data);
    assert_eq!(restored.entries, recovered.entries);
    assert_eq!(restored.hard_state, recovered.hard_state);
    assert_eq!(store.term(45), Some(3));
    assert_eq!(store.term(44), None);
}

#[test]
fn a_leader_snapshot_that_conflicts_with_the_log_replaces_it() {
    let dir = fast_tempdir();
    let (mut store, _) = open(dir.path());
    store
        .save_ready(Some(&hs(1, None, 0)), &entries(1, 10, 1, 8), None)
        .expect("save");
    // The leader's snapshot at 8 has term 2: our entry 8 (term 1) differs,
    // so the whole log goes (Raft §7), and the entries after it follow.
    let leader = snapshot(8, 2);
    store
        .save_ready(Some(&hs(2, None, 8)), &entries(9, 9, 2, 8), Some(&leader))
        .expect("install");
    assert_eq!((store.first_index(), store.last_index()), (9, 9));
    assert_eq!(store.term(9), Some(2));
    drop(store);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.snapshot, Some(leader));
    assert_eq!(recovered.entries, entries(9, 9, 2, 8));
    assert_eq!(recovered.hard_state, hs(2, None, 8));
}

#[test]
fn a_leader_snapshot_that_matches_the_log_keeps_the_entries_after_it() {
    let dir = fast_tempdir();
    let (mut store, _) = open(dir.path());
    store
        .save_ready(Some(&hs(1, None, 0)), &entries(1, 10, 1, 8), None)
        .expect("save");
    store
        .save_ready(None, &[], Some(&snapshot(6, 1)))
        .expect("install");
    drop(store);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.entries, entries(7, 10, 1, 8));
}

/// The snapshot file is durable before the WAL record; a crash in between
/// leaves the WAL as it was. Simulated by putting the old WAL back.
#[test]
fn a_crash_between_the_snapshot_file_and_its_wal_record_applies_the_newer_file() {
    for (snap_term, survivors) in [(1u64, entries(6, 10, 1, 8)), (5, vec![])] {
        let dir = fast_tempdir();
        let saved_wal = fast_tempdir();
        let (mut store, _) = open(dir.path());
        store
            .save_ready(Some(&hs(1, None, 0)), &entries(1, 10, 1, 8), None)
            .expect("save");
        copy_dir(&dir.path().join("wal"), saved_wal.path());
        store
            .save_ready(None, &[], Some(&snapshot(5, snap_term)))
            .expect("snapshot");
        drop(store);
        copy_dir(saved_wal.path(), &dir.path().join("wal"));

        let (store, recovered) = open(dir.path());
        assert_eq!(recovered.snapshot, Some(snapshot(5, snap_term)));
        assert_eq!(recovered.entries, survivors, "snapshot term {snap_term}");
        assert_eq!(store.first_index(), 6);
        drop(store);
        // The repair was written to the WAL: a second open agrees.
        let (_, again) = open(dir.path());
        assert_eq!(again, recovered);
    }
}

#[test]
fn a_wal_that_refers_to_a_missing_snapshot_file_is_an_error() {
    let dir = fast_tempdir();
    let (mut store, _) = open(dir.path());
    store
        .save_ready(Some(&hs(1, None, 0)), &entries(1, 4, 1, 8), None)
        .expect("save");
    store.save_snapshot(&snapshot(3, 1)).expect("snapshot");
    drop(store);
    for name in snapshot_files(dir.path()) {
        fs::remove_file(dir.path().join("snap").join(name)).expect("rm");
    }
    match storage::DiskStorage::open(dir.path(), Default::default()) {
        Err(StorageError::Inconsistent { detail, .. }) => {
            assert!(detail.contains("no snapshot file"), "{detail}")
        }
        other => panic!("expected Inconsistent, got {other:?}"),
    }
}

#[test]
fn a_damaged_snapshot_file_is_an_error_naming_it() {
    let dir = fast_tempdir();
    let (mut store, _) = open(dir.path());
    store
        .save_ready(Some(&hs(1, None, 0)), &entries(1, 4, 1, 8), None)
        .expect("save");
    store.save_snapshot(&snapshot(3, 1)).expect("snapshot");
    drop(store);
    let path = dir.path().join("snap").join(&snapshot_files(dir.path())[0]);
    let mut bytes = fs::read(&path).expect("read");
    bytes[20] ^= 0x01;
    fs::write(&path, &bytes).expect("damage");
    match storage::DiskStorage::open(dir.path(), Default::default()) {
        Err(StorageError::CorruptSnapshot { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected CorruptSnapshot, got {other:?}"),
    }
}

#[test]
fn stale_or_mismatched_snapshots_are_refused_without_changing_anything() {
    let dir = fast_tempdir();
    let (mut store, _) = open(dir.path());
    store
        .save_ready(Some(&hs(2, None, 0)), &entries(1, 6, 2, 8), None)
        .expect("save");
    store.save_snapshot(&snapshot(4, 2)).expect("snapshot");
    assert!(matches!(
        store.save_snapshot(&snapshot(3, 2)),
        Err(StorageError::StaleSnapshot { .. })
    ));
    // A local compaction must match the log; it never replaces it.
    assert!(matches!(
        store.save_snapshot(&snapshot(5, 9)),
        Err(StorageError::InvalidAppend { .. })
    ));
    assert!(matches!(
        store.save_ready(None, &entries(3, 3, 2, 1), None),
        Err(StorageError::InvalidAppend { .. })
    ));
    assert!(matches!(
        store.save_ready(Some(&hs(1, None, 0)), &[], None),
        Err(StorageError::InvalidAppend { .. })
    ));
    assert_eq!((store.first_index(), store.last_index()), (5, 6));
    drop(store);
    let (_, recovered) = open(dir.path());
    assert_eq!(recovered.entries, entries(5, 6, 2, 8));
    assert_eq!(recovered.snapshot, Some(snapshot(4, 2)));
}

/// Regression: a crash right after a segment roll can leave the newest
/// segment empty (its start batch was never synced). That segment must
/// still get the hard state and snapshot point at its start, or deleting
/// the older segments on compaction would lose the hard state.
#[test]
fn an_empty_last_segment_after_a_crash_still_gets_the_hard_state_before_old_segments_go() {
    let dir = fast_tempdir();
    let (mut store, _) = open_with(dir.path(), 1024);
    let mut i = 1;
    while store.segment_count() < 3 {
        store
            .save_ready(Some(&hs(7, Some(3), i - 1)), &entries(i, i, 7, 200), None)
            .expect("save");
        i += 1;
    }
    drop(store);
    // Power loss after the roll: the new segment keeps only its header.
    let last = segment_paths(dir.path())
        .expect("list")
        .pop()
        .expect("last");
    fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .expect("open")
        .set_len(storage::inspect::SEGMENT_HEADER_LEN)
        .expect("cut");
    let (mut store, recovered) = open_with(dir.path(), 1024);
    let expected_hs = recovered.hard_state.clone();
    assert_eq!(expected_hs.term, 7);
    let last_index = store.last_index();
    // Entries only (no hard state), then a compaction that removes every
    // segment written before the crash.
    store
        .save_ready(None, &entries(last_index + 1, last_index + 1, 7, 10), None)
        .expect("save");
    store
        .save_snapshot(&snapshot(last_index + 1, 7))
        .expect("compact");
    assert_eq!(store.segment_count(), 1, "older segments removed");
    drop(store);
    let (_, again) = open_with(dir.path(), 1024);
    assert_eq!(again.hard_state, expected_hs);
    assert_eq!(again.snapshot, Some(snapshot(last_index + 1, 7)));
}
