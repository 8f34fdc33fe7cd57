//! Bad input never panics the core: it is dropped, counted, and reported.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;
use common::Cluster;
use raft::{Entry, EntryKind, Message, MessageBody, SnapshotMeta, StepError};

fn message(from: u64, to: u64, term: u64, body: MessageBody) -> Message {
    Message {
        from,
        to,
        term,
        body,
    }
}

fn entry(term: u64, index: u64) -> Entry {
    Entry {
        term,
        index,
        kind: EntryKind::Normal,
        data: vec![1],
    }
}

#[test]
fn each_kind_of_bad_message_is_dropped_and_counted() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"x");
    let term = c.node(2).status().term;
    let before = c.node(2).status();
    let hb = MessageBody::Heartbeat {
        commit: 0,
        read_round: 0,
    };
    let n = c.node(2);
    assert!(matches!(
        n.step(message(9, 2, term, hb.clone())),
        Err(StepError::UnknownSender { from: 9 })
    ));
    assert!(matches!(
        n.step(message(1, 3, term, hb.clone())),
        Err(StepError::WrongRecipient { .. })
    ));
    assert!(matches!(
        n.step(message(2, 2, term, hb)),
        Err(StepError::UnknownSender { from: 2 })
    ));
    let gap = MessageBody::Append {
        prev_log_index: 1,
        prev_log_term: 1,
        entries: vec![entry(term, 5)],
        leader_commit: 0,
    };
    assert!(matches!(
        n.step(message(1, 2, term, gap)),
        Err(StepError::Malformed { .. })
    ));
    let overflow = MessageBody::Append {
        prev_log_index: u64::MAX,
        prev_log_term: term,
        entries: vec![entry(term, 0)],
        leader_commit: u64::MAX,
    };
    assert!(matches!(
        n.step(message(1, 2, term, overflow)),
        Err(StepError::Malformed { .. })
    ));
    let future_term = MessageBody::Append {
        prev_log_index: 2,
        prev_log_term: term + 5,
        entries: vec![],
        leader_commit: 0,
    };
    assert!(matches!(
        n.step(message(1, 2, term, future_term)),
        Err(StepError::Malformed { .. })
    ));
    let chunk = MessageBody::InstallSnapshot {
        meta: SnapshotMeta {
            index: 50,
            term,
            voters: vec![1, 2, 3],
        },
        offset: 64,
        data: vec![0; 8],
        done: false,
    };
    assert!(matches!(
        n.step(message(1, 2, term, chunk)),
        Err(StepError::SnapshotChunkOffset {
            offset: 64,
            expected: 0,
            ..
        })
    ));
    // Far-future index without a gap is not malformed: a normal rejection
    // that tells the leader where our log ends.
    let far = MessageBody::Append {
        prev_log_index: 1 << 50,
        prev_log_term: term,
        entries: vec![],
        leader_commit: 1 << 50,
    };
    assert_eq!(n.step(message(1, 2, term, far)), Ok(()));
    let after = n.status();
    assert_eq!(
        (after.term, after.commit, after.last_index),
        (before.term, before.commit, before.last_index)
    );
    let counters = n.counters().clone();
    assert_eq!(counters.dropped_unknown_sender, 2);
    assert_eq!(counters.dropped_wrong_recipient, 1);
    assert_eq!(counters.dropped_malformed, 3);
    assert_eq!(counters.dropped_snapshot_chunks, 1);

    // At the leader: acknowledgements of entries it never had.
    let leader_term = c.node(1).status().term;
    let ack = MessageBody::AppendResponse {
        success: true,
        index: 1 << 40,
        conflict_term: None,
        conflict_index: 0,
    };
    assert!(matches!(
        c.node(1).step(message(2, 1, leader_term, ack)),
        Err(StepError::Malformed { .. })
    ));
    let round = MessageBody::HeartbeatResponse {
        read_round: u64::MAX,
    };
    assert!(matches!(
        c.node(1).step(message(2, 1, leader_term, round)),
        Err(StepError::Malformed { .. })
    ));
    let stale = MessageBody::VoteResponse { granted: true };
    assert!(matches!(
        c.node(1).step(message(2, 1, leader_term, stale)),
        Err(StepError::Unexpected { .. })
    ));
    c.tick_all(5);
    assert_eq!(c.leaders(), vec![1]);
}

/// A tiny deterministic generator for the fuzz test (no rand dependency).
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn random_message(rng: &mut XorShift, to: u64, term: u64) -> Message {
    let from = 1 + rng.below(4); // 4 is unknown, `to` itself is invalid
    let term = match rng.below(3) {
        0 => term,
        1 => term.saturating_sub(1),
        _ => term + rng.below(3),
    };
    let index = match rng.below(4) {
        0 => rng.below(8),
        1 => rng.below(40),
        2 => u64::MAX - rng.below(2),
        _ => 1 << rng.below(63),
    };
    let small = rng.below(6);
    let body = match rng.below(13) {
        0 => MessageBody::PreVote {
            last_log_index: index,
            last_log_term: small,
        },
        1 => MessageBody::PreVoteResponse {
            granted: rng.below(2) == 0,
        },
        2 => MessageBody::Vote {
            last_log_index: index,
            last_log_term: small,
            leadership_transfer: rng.below(2) == 0,
        },
        3 => MessageBody::VoteResponse {
            granted: rng.below(2) == 0,
        },
        4 => {
            let count = rng.below(4);
            let start = if rng.below(2) == 0 {
                index.wrapping_add(1)
            } else {
                rng.below(30)
            };
            let entries = (0..count)
                .map(|k| entry(small + rng.below(2), start.wrapping_add(k)))
                .collect();
            MessageBody::Append {
                prev_log_index: index,
                prev_log_term: small,
                entries,
                leader_commit: rng.below(50),
            }
        }
        5 => MessageBody::AppendResponse {
            success: rng.below(2) == 0,
            index,
            conflict_term: (rng.below(2) == 0).then_some(small),
            conflict_index: rng.below(50),
        },
        6 => MessageBody::Heartbeat {
            commit: index,
            read_round: rng.below(5),
        },
        7 => MessageBody::HeartbeatResponse {
            read_round: rng.below(5),
        },
        8 => MessageBody::InstallSnapshot {
            meta: SnapshotMeta {
                index,
                term: small,
                voters: vec![1, 2, 3],
            },
            offset: rng.below(3) * 4,
            data: vec![7; rng.below(8) as usize],
            done: rng.below(2) == 0,
        },
        9 => MessageBody::SnapshotResponse {
            snapshot_index: index,
            next_offset: rng.below(100),
            done: rng.below(2) == 0,
        },
        10 => MessageBody::TimeoutNow,
        11 => MessageBody::ReadIndex { ctx: vec![1] },
        _ => MessageBody::ReadIndexResponse {
            ctx: vec![2],
            index,
        },
    };
    Message {
        from,
        to,
        term,
        body,
    }
}

/// Random garbage interleaved with normal traffic: no panic, and the
/// node's own invariants (asserted inside RawNode) hold throughout.
/// `SEED=n` replays one seed; `RAFT_FUZZ_SEEDS=n` sweeps seeds 1..=n
/// (default 20).
#[test]
fn random_garbage_never_panics() {
    let seeds: Vec<u64> = match std::env::var("SEED") {
        Ok(s) => vec![s.parse().expect("SEED must be a number")],
        Err(_) => {
            let count = std::env::var("RAFT_FUZZ_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(20);
            (1..=count).collect()
        }
    };
    for seed in seeds {
        println!("SEED={seed}");
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let mut c = Cluster::new(3);
        c.elect(1);
        for round in 0..300 {
            let to = 1 + rng.below(3);
            let term = c.node(to).status().term;
            let garbage = random_message(&mut rng, to, term);
            let _ = c.node(to).step(garbage);
            c.handle_ready(to);
            if round % 10 == 0 {
                if let Some(&leader) = c.leaders().first() {
                    let _ = c.node(leader).propose(vec![round as u8]);
                }
            }
            c.tick_all(1);
        }
        let total: u64 = (1..=3)
            .map(|id| c.node(id).counters().messages_received)
            .sum();
        assert!(total > 300, "SEED={seed}: garbage was delivered");
    }
}
