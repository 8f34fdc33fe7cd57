//! §7 log compaction and InstallSnapshot.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;
use common::Cluster;
use raft::{CompactError, MessageBody, Role, Snapshot, SnapshotMeta};

/// Takes a snapshot on `id` of everything it applied (the test machine's
/// encoding) and compacts its log.
fn snapshot_now(c: &mut Cluster, id: u64) -> u64 {
    let machine = c.machines[&id].clone();
    let index = machine.applied_index;
    c.node(id).compact(index, machine.encode()).unwrap();
    // The runtime persists its own snapshots (compaction is not in a Ready).
    let status = c.node(id).status();
    let disk = c.disks.get_mut(&id).unwrap();
    disk.entries.retain(|e| e.index > index);
    disk.snapshot = Some(Snapshot {
        meta: SnapshotMeta {
            index,
            term: status.snapshot_term,
            voters: vec![1, 2, 3],
        },
        data: machine.encode(),
    });
    index
}

/// §7: compaction drops the prefix; it is refused beyond what is applied
/// or below an earlier snapshot.
#[test]
fn compaction_bounds() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..10u8 {
        c.propose(1, &[i]);
    }
    let applied = c.machines[&1].applied_index;
    assert!(matches!(
        c.node(1).compact(applied + 1, vec![]),
        Err(CompactError::NotApplied { .. })
    ));
    let index = snapshot_now(&mut c, 1);
    let status = c.node(1).status();
    assert_eq!(
        (status.snapshot_index, status.first_index),
        (index, index + 1)
    );
    assert!(matches!(
        c.node(1).compact(index, vec![]),
        Err(CompactError::AlreadyCompacted { .. })
    ));
}

/// §7: a follower that is behind the leader's snapshot receives it by
/// InstallSnapshot, in chunks no larger than snapshot_chunk_bytes, restores
/// its state machine from it, and continues with the log after it.
#[test]
fn lagging_follower_gets_chunked_snapshot() {
    let chunk = 16;
    let mut c = Cluster::with_config(3, |cfg| cfg.snapshot_chunk_bytes = chunk);
    c.elect(1);
    c.isolate(3);
    for i in 0..30u8 {
        c.propose(1, &[i; 4]);
    }
    let index = snapshot_now(&mut c, 1);
    c.propose(1, b"after");
    c.heal();
    c.tick_all(10);
    let chunks: Vec<usize> = c
        .sent
        .iter()
        .filter_map(|m| match &m.body {
            MessageBody::InstallSnapshot { data, .. } => Some(data.len()),
            _ => None,
        })
        .collect();
    let snapshot_bytes = c.machines[&1].encode().len(); // grew by "after" since
    assert!(chunks.len() > 3, "snapshot went in {} chunks", chunks.len());
    assert!(chunks.iter().all(|&len| len <= chunk));
    assert!(snapshot_bytes > chunk);
    assert_eq!(c.node(3).counters().snapshots_installed, 1);
    assert_eq!(c.node(3).status().snapshot_index, index);
    assert_eq!(c.disks[&3].snapshot.as_ref().unwrap().meta.index, index);
    assert_eq!(c.commands(3), c.commands(1));
    assert_eq!(c.commands(3).last().unwrap(), b"after");
}

/// §7: snapshot chunks survive loss: a dropped chunk is resent after the
/// next heartbeat answer, and an out-of-order chunk is refused, counted,
/// and answered with the offset the follower expects.
#[test]
fn snapshot_transfer_survives_lost_and_misordered_chunks() {
    let mut c = Cluster::with_config(3, |cfg| cfg.snapshot_chunk_bytes = 8);
    c.elect(1);
    c.isolate(3);
    for i in 0..20u8 {
        c.propose(1, &[i; 3]);
    }
    snapshot_now(&mut c, 1);
    c.heal();
    // Lose every second chunk the first time it is sent.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..40 {
        for id in [1, 2, 3] {
            c.tick(id);
        }
        c.handle_all_ready();
        let batch: Vec<_> = c.queue.drain(..).collect();
        for m in batch {
            if let MessageBody::InstallSnapshot { offset, .. } = &m.body {
                if offset % 16 == 8 && seen.insert(*offset) {
                    continue;
                }
            }
            c.queue.push_back(m);
        }
        c.deliver_all();
    }
    assert_eq!(c.commands(3), c.commands(1));
    assert_eq!(c.node(3).counters().snapshots_installed, 1);
}

/// A follower restarted from its snapshot and log rejoins without a new
/// transfer, and a leader restarted from a snapshot can send it on.
#[test]
fn restart_from_snapshot_and_serve_it() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..10u8 {
        c.propose(1, &[i]);
    }
    c.tick_all(3);
    for id in [1, 2, 3] {
        snapshot_now(&mut c, id);
    }
    c.isolate(3);
    for i in 10..20u8 {
        c.propose(1, &[i]);
    }
    c.tick_all(3);
    snapshot_now(&mut c, 1);
    snapshot_now(&mut c, 2);
    for id in [1, 2] {
        c.crash(id);
        c.restart(id);
    }
    assert_eq!(c.commands(1).len(), 20, "restored from the snapshot alone");
    c.heal();
    c.tick_all(60);
    let leader = c.leaders()[0];
    assert_ne!(leader, 3);
    assert_eq!(c.node(3).status().role, Role::Follower);
    assert_eq!(c.commands(3).len(), 20);
    assert_eq!(c.commands(3), c.commands(leader));
}

/// The application may snapshot right after applying a Ready's committed
/// entries, before calling advance().
#[test]
fn compact_before_advance_is_allowed() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.tick_all(2);
    c.node(1).propose(b"z".to_vec()).unwrap();
    let ready = c.node(1).ready();
    c.node(1).advance();
    for m in ready.messages {
        let to = m.to;
        c.node(to).step(m).unwrap();
    }
    for id in [2, 3] {
        let ready = c.node(id).ready();
        c.node(id).advance();
        for m in ready.messages {
            c.node(1).step(m).unwrap();
        }
    }
    let ready = c.node(1).ready();
    let last = ready.committed_entries.last().expect("z committed").index;
    c.node(1).compact(last, b"state".to_vec()).unwrap();
    c.node(1).advance();
    assert_eq!(c.node(1).status().snapshot_index, last);
}
