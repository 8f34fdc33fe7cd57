//! A storage thread with group commit, so the node's event loop keeps
//! receiving and sending while the disk syncs.
//!
//! The loop hands each Ready's writes to [`StorageWriter::submit`] and goes
//! on; the thread appends every write queued by the time it wakes, makes
//! them durable with one fdatasync, and reports "durable through write n"
//! through the `notify` callback (the node daemon forwards it into its
//! loop). Writes are appended and reported strictly in submission order, so
//! "through n" covers every earlier write too.
//!
//! The first storage error ends the thread after reporting it: a node that
//! cannot persist must stop (fail-stop), and the store is not touched again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use raft::{Entry, HardState, Snapshot};

use crate::{DiskStorage, LogStore, StorageError};

/// Writes one wake-up of the thread takes before it syncs: bounds the
/// latency a burst adds to the first write in it.
pub const WRITES_PER_SYNC_MAX: usize = 1024;

/// One unit of work for the storage thread.
#[derive(Debug)]
pub enum Write {
    /// A Ready's snapshot, entries and hard state (the `LogStore::append`
    /// batch). `sync: false` for a batch whose only change is the commit
    /// index: written, but no fdatasync is spent on it (a later sync covers
    /// it; a crash re-learns the commit index from the leader).
    Ready {
        hard_state: Option<HardState>,
        entries: Vec<Entry>,
        snapshot: Option<Snapshot>,
        sync: bool,
    },
    /// A snapshot the application took of its applied state
    /// (`LogStore::save_snapshot`); queued behind the entries it covers.
    Snapshot(Snapshot),
}

/// What the thread reports: every write up to this id is done (durable,
/// or written without sync when it asked for none), or the error that
/// stopped the thread.
pub type WriteOutcome = Result<u64, StorageError>;

/// The loop's handle on the storage thread. Dropping it lets the thread
/// finish the writes already submitted, then joins it.
#[derive(Debug)]
pub struct StorageWriter {
    sender: Option<mpsc::Sender<(u64, Write)>>,
    next_id: u64,
    wal_bytes: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl StorageWriter {
    /// Moves `store` onto a new thread. `notify` runs on that thread after
    /// each group commit; it must be cheap and must not block (a channel
    /// send).
    pub fn spawn(
        store: DiskStorage,
        mut notify: impl FnMut(WriteOutcome) + Send + 'static,
    ) -> Result<StorageWriter, StorageError> {
        let (sender, receiver) = mpsc::channel::<(u64, Write)>();
        let wal_bytes = Arc::new(AtomicU64::new(store.wal_bytes()));
        let shared = Arc::clone(&wal_bytes);
        let thread = std::thread::Builder::new()
            .name("storage".into())
            .spawn(move || {
                let mut store = store;
                while let Ok(first) = receiver.recv() {
                    let mut batch = vec![first];
                    while batch.len() < WRITES_PER_SYNC_MAX {
                        match receiver.try_recv() {
                            Ok(write) => batch.push(write),
                            Err(_) => break,
                        }
                    }
                    let outcome = write_batch(&mut store, batch);
                    shared.store(store.wal_bytes(), Ordering::Relaxed);
                    let failed = outcome.is_err();
                    notify(outcome);
                    if failed {
                        return;
                    }
                }
            })
            .map_err(|e| StorageError::io("spawn the storage thread", "storage", e))?;
        Ok(StorageWriter {
            sender: Some(sender),
            next_id: 1,
            wal_bytes,
            thread: Some(thread),
        })
    }

    /// Queues a write; returns its id (ids grow by one from 1). An error
    /// means the thread has stopped (after reporting why through `notify`).
    pub fn submit(&mut self, write: Write) -> Result<u64, StorageError> {
        let id = self.next_id;
        let sent = self
            .sender
            .as_ref()
            .is_some_and(|s| s.send((id, write)).is_ok());
        if !sent {
            return Err(StorageError::Poisoned {
                reason: "the storage thread has stopped".into(),
            });
        }
        self.next_id += 1;
        Ok(id)
    }

    /// The id the last submitted write got (0 before any).
    pub fn last_submitted(&self) -> u64 {
        self.next_id - 1
    }

    /// Bytes of the WAL's segment files after the last group commit.
    pub fn wal_bytes(&self) -> u64 {
        self.wal_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for StorageWriter {
    fn drop(&mut self) {
        self.sender = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Appends every write of one wake-up, then one fdatasync if any asked for
/// it. Returns the id of the last write.
fn write_batch(store: &mut DiskStorage, batch: Vec<(u64, Write)>) -> WriteOutcome {
    let mut last_id = 0;
    let mut sync = false;
    for (id, write) in batch {
        match write {
            Write::Ready {
                hard_state,
                entries,
                snapshot,
                sync: wants_sync,
            } => {
                store.append(hard_state.as_ref(), &entries, snapshot.as_ref())?;
                sync |= wants_sync;
            }
            // Syncs on its own (the snapshot file must be durable first).
            Write::Snapshot(snapshot) => store.save_snapshot(&snapshot)?,
        }
        last_id = id;
    }
    if sync {
        store.sync()?;
    }
    Ok(last_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DiskOptions;
    use raft::EntryKind;

    fn entry(index: u64) -> Entry {
        Entry {
            term: 1,
            index,
            kind: EntryKind::Normal,
            data: vec![index as u8; 16],
        }
    }

    #[test]
    fn writes_are_reported_in_order_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = DiskStorage::open(dir.path(), DiskOptions::default()).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut writer = StorageWriter::spawn(store, move |outcome| {
            let _ = tx.send(outcome);
        })
        .unwrap();
        for index in 1..=50 {
            let id = writer
                .submit(Write::Ready {
                    hard_state: Some(HardState {
                        term: 1,
                        vote: Some(1),
                        commit: index - 1,
                    }),
                    entries: vec![entry(index)],
                    snapshot: None,
                    sync: true,
                })
                .unwrap();
            assert_eq!(id, index);
        }
        let mut through = 0;
        while through < 50 {
            let done = rx.recv().unwrap().unwrap();
            assert!(done > through, "reports go forward: {done} after {through}");
            through = done;
        }
        assert!(writer.wal_bytes() > 0);
        drop(writer);
        let (_, recovered) = DiskStorage::open(dir.path(), DiskOptions::default()).unwrap();
        assert_eq!(recovered.entries.len(), 50);
        assert_eq!(recovered.hard_state.commit, 49);
    }

    #[test]
    fn an_invalid_write_stops_the_thread_with_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = DiskStorage::open(dir.path(), DiskOptions::default()).unwrap();
        let (tx, rx) = mpsc::channel();
        let mut writer = StorageWriter::spawn(store, move |outcome| {
            let _ = tx.send(outcome);
        })
        .unwrap();
        // A gap after the (empty) log is refused by the store.
        writer
            .submit(Write::Ready {
                hard_state: None,
                entries: vec![entry(5)],
                snapshot: None,
                sync: true,
            })
            .unwrap();
        assert!(rx.recv().unwrap().is_err());
        // The thread is gone: later submissions fail.
        let mut refused = false;
        for _ in 0..100 {
            let write = Write::Ready {
                hard_state: None,
                entries: vec![],
                snapshot: None,
                sync: false,
            };
            if writer.submit(write).is_err() {
                refused = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(refused);
    }
}
