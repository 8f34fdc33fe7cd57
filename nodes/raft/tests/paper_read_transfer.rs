//! §6.4 ReadIndex and lease reads, and leadership transfer (thesis §3.10).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;
use common::Cluster;
use raft::{MessageBody, ProposeError, ReadMode, ReadState, Role};

fn reads(c: &Cluster, id: u64) -> Vec<ReadState> {
    c.reads.get(&id).cloned().unwrap_or_default()
}

/// §6.4: the leader records its commit index, confirms it is still leader
/// with a heartbeat round, then answers with that index.
#[test]
fn read_index_waits_for_a_heartbeat_round() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"x");
    let commit = c.node(1).status().commit;
    c.node(1).read_index(b"r1".to_vec()).unwrap();
    c.handle_ready(1);
    assert!(
        reads(&c, 1).is_empty(),
        "no answer before a majority confirms"
    );
    let rounds: Vec<u64> = c
        .queue
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::Heartbeat { read_round, .. } => Some(read_round),
            _ => None,
        })
        .collect();
    assert_eq!(
        rounds.len(),
        2,
        "one heartbeat per follower carries the read round"
    );
    c.deliver_all();
    assert_eq!(
        reads(&c, 1),
        vec![ReadState {
            ctx: b"r1".to_vec(),
            index: commit
        }]
    );
}

/// §6.4 step 1: a new leader answers reads only after an entry of its own
/// term is committed (before that it does not know the commit index).
#[test]
fn new_leader_answers_reads_after_committing_in_its_term() {
    let mut c = Cluster::new(3);
    c.node(1).campaign();
    // Votes out, votes back: node 1 leads, its Noop is not yet replicated.
    c.deliver_all_except(|m| matches!(m.body, MessageBody::Append { .. }));
    assert_eq!(c.node(1).status().role, Role::Leader);
    assert_eq!(c.node(1).status().commit, 0);
    c.node(1).read_index(b"early".to_vec()).unwrap();
    c.deliver_all_except(|m| matches!(m.body, MessageBody::Append { .. }));
    c.tick_all(0);
    assert!(reads(&c, 1).is_empty());
    c.tick_all(3); // heartbeat answers trigger the Appends again
    let answered = reads(&c, 1);
    assert_eq!(answered.len(), 1);
    assert!(answered[0].index >= 1, "index covers the new leader's Noop");
}

/// §6.4: a leader cut off from the majority never answers a read (a new
/// leader may have accepted writes meanwhile); once it steps down the read
/// is dropped and counted.
#[test]
fn partitioned_leader_does_not_answer_reads() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node(1).read_index(b"stale?".to_vec()).unwrap();
    c.tick_all(30);
    assert!(reads(&c, 1).is_empty());
    assert_ne!(c.node(1).status().role, Role::Leader);
    assert_eq!(c.node(1).counters().reads_dropped, 1);
}

/// A follower forwards read_index to the leader and gets the leader's
/// commit index back; it serves once it has applied that far.
#[test]
fn follower_read_is_answered_through_the_leader() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"x");
    let commit = c.node(1).status().commit;
    c.node(2).read_index(b"f".to_vec()).unwrap();
    c.deliver_all();
    assert_eq!(
        reads(&c, 2),
        vec![ReadState {
            ctx: b"f".to_vec(),
            index: commit
        }]
    );
    c.tick_all(2);
    assert!(
        c.machines[&2].applied_index >= commit,
        "follower catches up to serve it"
    );
    // With no known leader the read is refused at once.
    let mut lone = Cluster::new(3);
    assert_eq!(
        lone.node(2).read_index(b"?".to_vec()),
        Err(ProposeError::NotLeader { leader_hint: None })
    );
}

/// Lease reads: while a majority acknowledged a recent heartbeat the leader
/// answers at once, without a heartbeat round; without a lease (no round
/// acknowledged yet, or cut off for an election timeout) it falls back to
/// ReadIndex, which a partitioned leader can never complete.
#[test]
fn lease_read_needs_a_fresh_majority_acknowledgement() {
    let mut c = Cluster::with_config(3, |cfg| cfg.read_mode = ReadMode::Lease);
    c.elect(1);
    // No heartbeat acknowledged yet in this term: falls back to ReadIndex.
    c.node(1).read_index(b"early".to_vec()).unwrap();
    let ready = c.node(1).ready();
    assert!(ready.read_states.is_empty());
    assert!(ready
        .messages
        .iter()
        .any(|m| matches!(m.body, MessageBody::Heartbeat { .. })));
    c.node(1).advance();
    c.queue.extend(ready.messages);
    c.deliver_all();
    assert_eq!(reads(&c, 1).len(), 1);
    // Now the lease holds: answered in the same Ready, no messages.
    c.tick_all(2);
    c.node(1).read_index(b"leased".to_vec()).unwrap();
    let ready = c.node(1).ready();
    assert!(ready.messages.is_empty());
    assert_eq!(ready.read_states.len(), 1);
    c.node(1).advance();
    // Cut off: within an election timeout the lease expires.
    c.isolate(1);
    let min = c.configs[&1].election_timeout_ticks_min;
    for _ in 0..min - 1 {
        c.tick(1);
        c.handle_ready(1);
    }
    // Still leader or already stepped down: either way no answer now.
    let _ = c.node(1).read_index(b"stale".to_vec());
    c.handle_ready(1);
    assert_eq!(
        reads(&c, 1).len(),
        1,
        "no lease read once the lease expired"
    );
}

/// After a leadership transfer's TimeoutNow the old leader's lease is void
/// (voters bypass their lease for the transfer target).
#[test]
fn lease_is_revoked_by_leadership_transfer() {
    let mut c = Cluster::with_config(3, |cfg| cfg.read_mode = ReadMode::Lease);
    c.elect(1);
    c.tick_all(2);
    c.node(1).transfer_leadership(2).unwrap();
    c.handle_ready(1);
    c.cut.insert((1, 2)); // the TimeoutNow went out; node 1 hears nothing more
    c.node(1).read_index(b"after".to_vec()).unwrap();
    let ready = c.node(1).ready();
    assert!(ready.read_states.is_empty());
    c.node(1).advance();
}

/// Leadership transfer to an up-to-date follower: TimeoutNow, and it wins
/// at once even though the others still hold the old leader's lease.
#[test]
fn transfer_to_caught_up_follower() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.propose(1, b"x");
    let term = c.node(1).status().term;
    c.node(1).transfer_leadership(2).unwrap();
    c.deliver_all();
    assert_eq!(c.leaders(), vec![2]);
    assert_eq!(c.node(2).status().term, term + 1);
    assert_eq!(c.node(1).status().leader, Some(2));
    c.propose(2, b"y");
    c.tick_all(2);
    assert_eq!(c.commands(1), vec![b"x".to_vec(), b"y".to_vec()]);
}

/// Transfer to a lagging follower catches it up first; proposals are
/// refused during the transfer.
#[test]
fn transfer_catches_up_the_target_and_blocks_proposals() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for i in 0..20u8 {
        c.propose(1, &[i]);
    }
    c.heal();
    c.node(1).transfer_leadership(3).unwrap();
    assert_eq!(
        c.node(1).propose(b"no".to_vec()),
        Err(ProposeError::TransferInProgress { to: 3 })
    );
    c.deliver_all();
    c.tick_all(3);
    assert_eq!(c.leaders(), vec![3]);
    assert_eq!(c.commands(3).len(), 20);
}

/// A transfer whose target never answers is abandoned after an election
/// timeout, and the leader takes proposals again.
#[test]
fn transfer_to_unreachable_target_is_aborted() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    c.propose(1, b"x");
    c.node(1).transfer_leadership(3).unwrap();
    let min = c.configs[&1].election_timeout_ticks_min;
    c.tick_all(min);
    assert_eq!(c.node(1).status().lead_transferee, None);
    assert_eq!(c.node(1).counters().transfers_aborted, 1);
    assert_eq!(c.leaders(), vec![1]);
    assert!(c.node(1).propose(b"again".to_vec()).is_ok());
}

/// Regression (sim read_index SEED=2): acknowledgements of heartbeat rounds
/// sent before a read was asked must not confirm it. A leader cut off with
/// one follower (2 of 5) hears that follower answer; the other three only
/// answered older rounds, so the read must stay unanswered.
#[test]
fn old_round_acks_do_not_confirm_a_new_read() {
    let mut c = Cluster::new(5);
    c.elect(1);
    c.propose(1, b"x");
    c.tick_all(4); // several heartbeat rounds acknowledged by everyone
    for a in [1, 2] {
        for b in [3, 4, 5] {
            c.cut.insert((a, b));
            c.cut.insert((b, a));
        }
    }
    c.node(1).read_index(b"stale?".to_vec()).unwrap();
    for _ in 0..6 {
        c.tick(1);
        c.tick(2);
        c.deliver_all();
    }
    assert!(reads(&c, 1).is_empty(), "read confirmed by 2 of 5");
}
