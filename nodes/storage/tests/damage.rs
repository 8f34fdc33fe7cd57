//! Damage real WAL files on purpose and check what recovery makes of it:
//! a cut anywhere in the last batches returns exactly the batches written
//! whole before the cut; a flipped bit in a batch that later records vouch
//! for is corruption naming the file and the record's offset; the same in
//! the last batch is a torn tail.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::*;
use storage::inspect::{segment_paths, segment_records, RecordInfo, SEGMENT_HEADER_LEN};
use storage::{LogStore, StorageError};

/// A history with hard-state changes, an overwrite of a stored suffix
/// (batch 5 truncates 4..5) and entries of several sizes.
fn script() -> Vec<Batch> {
    vec![
        Batch {
            hard_state: Some(hs(1, Some(1), 0)),
            entries: entries(1, 3, 1, 40),
            ..Batch::default()
        },
        Batch {
            hard_state: Some(hs(1, Some(1), 3)),
            entries: entries(4, 5, 1, 100),
            ..Batch::default()
        },
        Batch {
            hard_state: Some(hs(2, Some(2), 3)),
            ..Batch::default()
        },
        Batch {
            entries: entries(6, 6, 1, 0),
            ..Batch::default()
        },
        Batch {
            hard_state: Some(hs(2, Some(2), 4)),
            entries: entries(4, 6, 2, 70),
            ..Batch::default()
        },
        Batch {
            hard_state: Some(hs(2, Some(2), 6)),
            entries: entries(7, 8, 2, 33),
            ..Batch::default()
        },
    ]
}

/// Writes the script with one save_ready per batch; returns the segment
/// path and the file length after each batch (index 0: the bare header).
fn write_script(dir: &Path, batches: &[Batch]) -> (PathBuf, Vec<u64>) {
    let (mut store, _) = open(dir);
    let seg = segment_paths(dir).expect("segments")[0].clone();
    let mut ends = vec![fs::metadata(&seg).expect("stat").len()];
    for b in batches {
        b.save(&mut store);
        ends.push(fs::metadata(&seg).expect("stat").len());
    }
    assert_eq!(ends[0], SEGMENT_HEADER_LEN);
    (seg, ends)
}

fn record_containing(records: &[RecordInfo], byte: u64) -> &RecordInfo {
    records
        .iter()
        .find(|r| r.offset <= byte && byte < r.offset + r.bytes)
        .expect("byte inside a record")
}

#[test]
fn a_cut_at_every_offset_of_the_last_batches_recovers_exactly_the_whole_batches() {
    let batches = script();
    let src = fast_tempdir();
    let (seg, ends) = write_script(src.path(), &batches);
    let pristine = fs::read(&seg).expect("read");
    let work = fast_tempdir();
    let work_seg = work
        .path()
        .join("d/wal")
        .join(seg.file_name().expect("name"));
    // The last three batches, every byte offset, including both ends.
    let from = ends[batches.len() - 3];
    for cut in from..=pristine.len() as u64 {
        copy_dir(src.path(), &work.path().join("d"));
        fs::write(&work_seg, &pristine[..cut as usize]).expect("cut");
        let whole = ends.iter().filter(|&&e| e <= cut).count() - 1;
        let (mut store, recovered) = open(&work.path().join("d"));
        let torn = recovered.torn_tail.clone();
        assert_eq!(
            content(recovered),
            expected_after(&batches[..whole]),
            "cut at {cut}: expected the first {whole} batches"
        );
        assert_eq!(
            torn.is_some(),
            cut != ends[whole],
            "cut at {cut}: torn-tail report"
        );
        if let Some(t) = torn {
            assert_eq!(t.truncated_to, ends[whole]);
            assert_eq!(t.dropped_bytes, cut - ends[whole]);
            assert_eq!(t.path, work_seg);
        }
        assert_eq!(fs::metadata(&work_seg).expect("stat").len(), ends[whole]);
        // The repaired log takes new writes and keeps them.
        let next = store.last_index() + 1;
        let term = store
            .hard_state()
            .term
            .max(store.term(next - 1).unwrap_or(0));
        let more = entries(next, next, term, 5);
        store
            .save_ready(None, &more, None)
            .expect("append after repair");
        drop(store);
        let (_, again) = open(&work.path().join("d"));
        assert_eq!(again.entries.last(), more.last(), "cut at {cut}");
        assert!(again.torn_tail.is_none());
    }
}

#[test]
fn a_flipped_bit_in_a_middle_batch_is_corruption_naming_file_and_record_offset() {
    let batches = script();
    let src = fast_tempdir();
    let (seg, ends) = write_script(src.path(), &batches);
    let records = segment_records(&seg).expect("records");
    let pristine = fs::read(&seg).expect("read");
    let work = fast_tempdir();
    let dir = work.path().join("d");
    let work_seg = dir.join("wal").join(seg.file_name().expect("name"));
    // Batch 2 (holds entries) and batch 5 (truncation + entries + hard state).
    for batch in [2usize, 5] {
        for byte in ends[batch - 1]..ends[batch] {
            copy_dir(src.path(), &dir);
            let mut damaged = pristine.clone();
            damaged[byte as usize] ^= 1 << (byte % 8);
            fs::write(&work_seg, &damaged).expect("damage");
            let err = storage::DiskStorage::open(&dir, Default::default()).expect_err(&format!(
                "flip at byte {byte} of batch {batch} must not open"
            ));
            let want = record_containing(&records, byte).offset;
            match &err {
                StorageError::Corrupt {
                    path,
                    offset,
                    evidence,
                    ..
                } => {
                    assert_eq!(path, &work_seg);
                    assert_eq!(*offset, want, "flip at byte {byte}");
                    assert!(evidence.is_some(), "flip at byte {byte}: {err}");
                }
                other => panic!("flip at byte {byte}: expected Corrupt, got {other}"),
            }
            let message = err.to_string();
            assert!(
                message.contains(&work_seg.display().to_string()),
                "{message}"
            );
            assert!(message.contains(&format!("offset {want}")), "{message}");
            // Nothing was repaired behind the operator's back.
            assert_eq!(fs::read(&work_seg).expect("read"), damaged);
        }
    }
}

#[test]
fn a_flipped_bit_in_the_last_batch_is_a_torn_tail_and_drops_only_that_batch() {
    let batches = script();
    let src = fast_tempdir();
    let (seg, ends) = write_script(src.path(), &batches);
    let records = segment_records(&seg).expect("records");
    let pristine = fs::read(&seg).expect("read");
    let work = fast_tempdir();
    let dir = work.path().join("d");
    let work_seg = dir.join("wal").join(seg.file_name().expect("name"));
    let n = batches.len();
    for byte in ends[n - 1]..ends[n] {
        copy_dir(src.path(), &dir);
        let mut damaged = pristine.clone();
        damaged[byte as usize] ^= 1 << (byte % 8);
        fs::write(&work_seg, &damaged).expect("damage");
        let (_, recovered) = open(&dir);
        let torn = recovered.torn_tail.clone().expect("torn tail reported");
        assert_eq!(torn.damage_offset, record_containing(&records, byte).offset);
        assert_eq!(torn.truncated_to, ends[n - 1]);
        assert_eq!(
            content(recovered),
            expected_after(&batches[..n - 1]),
            "flip at {byte}"
        );
    }
}

#[test]
fn a_damaged_segment_header_is_corruption_at_offset_zero() {
    let src = fast_tempdir();
    let (seg, _) = write_script(src.path(), &script());
    let pristine = fs::read(&seg).expect("read");
    let work = fast_tempdir();
    let dir = work.path().join("d");
    let work_seg = dir.join("wal").join(seg.file_name().expect("name"));
    for byte in 0..SEGMENT_HEADER_LEN as usize {
        copy_dir(src.path(), &dir);
        let mut damaged = pristine.clone();
        damaged[byte] ^= 0x04;
        fs::write(&work_seg, &damaged).expect("damage");
        match storage::DiskStorage::open(&dir, Default::default()) {
            Err(StorageError::Corrupt { path, offset, .. }) => {
                assert_eq!((path, offset), (work_seg.clone(), 0), "byte {byte}")
            }
            other => panic!("byte {byte}: expected Corrupt at 0, got {other:?}"),
        }
    }
}

/// Tiny segments so the script spans several files.
fn write_segmented(dir: &Path) -> Vec<Batch> {
    let (mut store, _) = open_with(dir, 1024);
    let mut batches = Vec::new();
    for i in 0..40u64 {
        let b = Batch {
            hard_state: Some(hs(1, Some(1), i)),
            entries: entries(i + 1, i + 1, 1, 100),
            ..Batch::default()
        };
        b.save(&mut store);
        batches.push(b);
    }
    assert!(
        store.segment_count() >= 3,
        "{} segments",
        store.segment_count()
    );
    batches
}

#[test]
fn damage_at_the_very_end_of_a_sealed_segment_is_corruption_not_a_torn_tail() {
    let src = fast_tempdir();
    let batches = write_segmented(src.path());
    let (_, whole) = open_with(src.path(), 1024);
    assert_eq!(content(whole), expected_after(&batches));
    let first = segment_paths(src.path()).expect("segments")[0].clone();
    let len = fs::metadata(&first).expect("stat").len();
    let work = fast_tempdir();
    let dir = work.path().join("d");
    let work_first = dir.join("wal").join(first.file_name().expect("name"));

    // Cut the sealed segment's last bytes, as a torn write would.
    copy_dir(src.path(), &dir);
    let bytes = fs::read(&work_first).expect("read");
    fs::write(&work_first, &bytes[..len as usize - 3]).expect("cut");
    match storage::DiskStorage::open(&dir, Default::default()) {
        Err(StorageError::Corrupt { path, .. }) => assert_eq!(path, work_first),
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // Flip the last byte of the sealed segment.
    copy_dir(src.path(), &dir);
    let mut bytes = fs::read(&work_first).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x80;
    fs::write(&work_first, &bytes).expect("flip");
    let records = segment_records(&first).expect("records");
    match storage::DiskStorage::open(&dir, Default::default()) {
        Err(StorageError::Corrupt { path, offset, .. }) => {
            assert_eq!(path, work_first);
            assert_eq!(offset, records.last().expect("records").offset);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn a_missing_segment_in_the_middle_is_an_error() {
    let src = fast_tempdir();
    write_segmented(src.path());
    let segments = segment_paths(src.path()).expect("segments");
    fs::remove_file(&segments[1]).expect("remove");
    match storage::DiskStorage::open(src.path(), Default::default()) {
        Err(StorageError::Inconsistent { detail, .. }) => {
            assert!(detail.contains("missing"), "{detail}")
        }
        other => panic!("expected Inconsistent, got {other:?}"),
    }
}

/// With group commit (several appends, one sync) a later batch written
/// under the same unfinished fsync does not vouch for an earlier one: damage
/// there is a torn tail. With one fsync per batch the later batch does
/// vouch, and the same damage is corruption.
#[test]
fn only_a_record_written_after_the_damaged_batch_was_fsynced_makes_damage_corruption() {
    let b1 = Batch {
        hard_state: Some(hs(1, Some(1), 0)),
        entries: entries(1, 2, 1, 50),
        ..Batch::default()
    };
    let b2 = Batch {
        entries: entries(3, 4, 1, 50),
        ..Batch::default()
    };
    let b3 = Batch {
        hard_state: Some(hs(1, Some(1), 4)),
        entries: entries(5, 5, 1, 50),
        ..Batch::default()
    };
    for group_commit in [true, false] {
        let dir = fast_tempdir();
        {
            let (mut store, _) = open(dir.path());
            b1.save(&mut store);
            if group_commit {
                b2.append(&mut store);
                b3.append(&mut store);
                store.sync().expect("sync");
            } else {
                b2.save(&mut store);
                b3.save(&mut store);
            }
        }
        let seg = segment_paths(dir.path()).expect("segments")[0].clone();
        let records = segment_records(&seg).expect("records");
        let b2_record = records.iter().find(|r| r.batch == 2).expect("batch 2");
        let b3_record = records.iter().find(|r| r.batch == 3).expect("batch 3");
        assert_eq!(b3_record.durable_through, if group_commit { 1 } else { 2 });
        let mut bytes = fs::read(&seg).expect("read");
        bytes[(b2_record.offset + 30) as usize] ^= 0x01;
        fs::write(&seg, &bytes).expect("damage");
        let result = storage::DiskStorage::open(dir.path(), Default::default());
        if group_commit {
            let (_, recovered) = result.expect("torn tail, not corruption");
            assert_eq!(
                content(recovered),
                expected_after(std::slice::from_ref(&b1))
            );
        } else {
            match result {
                Err(StorageError::Corrupt {
                    offset, evidence, ..
                }) => {
                    assert_eq!(offset, b2_record.offset);
                    let evidence = evidence.expect("evidence");
                    assert!(evidence.contains("batch 3"), "{evidence}");
                }
                other => panic!("expected Corrupt, got {other:?}"),
            }
        }
    }
}

#[test]
fn a_second_process_cannot_open_the_same_directory() {
    let dir = fast_tempdir();
    let (_store, _) = open(dir.path());
    match storage::DiskStorage::open(dir.path(), Default::default()) {
        Err(StorageError::Locked { .. }) => {}
        other => panic!("expected Locked, got {other:?}"),
    }
}
