//! §5.2 leader election and §9.6 pre-vote / check-quorum, driven by hand.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;
use common::Cluster;
use raft::{Message, MessageBody, Role};

/// §5.2: a follower that hears nothing for an election timeout becomes a
/// candidate, and a candidate with votes from a majority becomes leader.
#[test]
fn election_timeout_elects_exactly_one_leader() {
    let mut c = Cluster::with_config(3, |cfg| cfg.pre_vote = false);
    c.tick_all(25);
    assert_eq!(c.leaders().len(), 1, "one leader after an election timeout");
    let leader = c.leaders()[0];
    let term = c.node(leader).status().term;
    for id in [1, 2, 3] {
        assert_eq!(c.node(id).status().term, term);
        assert_eq!(
            c.node(id).status().leader,
            Some(leader),
            "node {id} knows the leader"
        );
    }
    // Heartbeats keep the leader in place for many timeouts.
    c.tick_all(200);
    assert_eq!(c.leaders(), vec![leader]);
    assert_eq!(c.node(leader).status().term, term);
}

/// §5.2: each server votes for at most one candidate per term, first come
/// first served, and the vote is in the hard state before the grant leaves.
#[test]
fn one_vote_per_term_and_vote_is_persisted_before_the_grant() {
    let mut c = Cluster::with_config(3, |cfg| cfg.pre_vote = false);
    c.node(1).campaign();
    c.node(2).campaign();
    c.handle_ready(1);
    c.handle_ready(2);
    let vote_from_1 = c
        .queue
        .iter()
        .find(|m| m.from == 1 && m.to == 3)
        .unwrap()
        .clone();
    let vote_from_2 = c
        .queue
        .iter()
        .find(|m| m.from == 2 && m.to == 3)
        .unwrap()
        .clone();
    c.queue.clear();
    c.node(3).step(vote_from_1).unwrap();
    c.node(3).step(vote_from_2).unwrap();
    let ready = c.node(3).ready();
    let hard_state = ready.hard_state.expect("vote must be persisted");
    assert_eq!(hard_state.vote, Some(1));
    let grants: Vec<(u64, bool)> = ready
        .messages
        .iter()
        .filter_map(|m| match m.body {
            MessageBody::VoteResponse { granted } => Some((m.to, granted)),
            _ => None,
        })
        .collect();
    assert_eq!(grants, vec![(1, true), (2, false)]);
}

/// §5.4.1: a voter denies its vote to a candidate whose log is less
/// up-to-date than its own.
#[test]
fn candidate_with_stale_log_cannot_win() {
    // No lease, so vote requests are judged on the log alone.
    let mut c = Cluster::with_config(3, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
    });
    c.elect(1);
    c.isolate(3);
    c.propose(1, b"x");
    c.heal();
    // Node 3 missed the entry; 1 and 2 refuse to vote for it.
    c.crash(1);
    c.node(3).campaign();
    c.deliver_all();
    assert_ne!(c.node(3).status().role, Role::Leader);
    c.node(2).campaign();
    c.deliver_all();
    assert_eq!(c.node(2).status().role, Role::Leader);
}

/// §9.6: a node that was partitioned away keeps failing pre-votes; when it
/// returns it neither raises the term nor disturbs the leader.
#[test]
fn prevote_returning_node_does_not_disrupt() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let term = c.node(1).status().term;
    c.isolate(3);
    c.tick_all(100);
    assert_eq!(
        c.node(3).status().term,
        term,
        "pre-vote keeps the isolated term"
    );
    assert!(c.node(3).counters().pre_votes_started > 0);
    c.heal();
    c.tick_all(50);
    assert_eq!(c.leaders(), vec![1]);
    assert_eq!(c.node(1).status().term, term);
    assert_eq!(c.node(3).status().leader, Some(1));
}

/// Without pre-vote but with check-quorum, a node whose term rose during a
/// partition is ignored while the others still hear their leader.
#[test]
fn check_quorum_lease_ignores_disruptive_votes() {
    let mut c = Cluster::with_config(3, |cfg| cfg.pre_vote = false);
    c.elect(1);
    c.isolate(3);
    c.tick_all(60);
    let isolated_term = c.node(3).status().term;
    assert!(isolated_term > c.node(1).status().term);
    c.heal();
    c.node(3).campaign();
    c.deliver_all();
    assert!(c.node(2).counters().votes_ignored_in_lease > 0);
    assert_eq!(c.node(2).status().leader, Some(1));
}

/// Check-quorum: a leader cut off from the majority steps down exactly one
/// election timeout after it last heard from a majority (and the majority
/// elects a new one).
#[test]
fn check_quorum_leader_steps_down_when_isolated() {
    let mut c = Cluster::new(5);
    c.elect(1);
    c.isolate(1);
    let min = c.configs[&1].election_timeout_ticks_min;
    c.tick_all(min - 1);
    assert_eq!(
        c.node(1).status().role,
        Role::Leader,
        "not before an election timeout"
    );
    c.tick_all(1);
    assert_eq!(
        c.node(1).status().role,
        Role::Follower,
        "within an election timeout"
    );
    assert_eq!(c.node(1).counters().check_quorum_step_downs, 1);
    c.tick_all(40);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 1);
}

/// §5.1: a message with a stale term is rejected and counted; a stale
/// leader learns the newer term from the reply and steps down.
#[test]
fn stale_leader_steps_down_on_newer_term() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    c.node(2).campaign();
    c.deliver_all();
    // Pre-vote fails while 3 still hears from 1's lease... so time passes.
    c.tick_all(30);
    assert_eq!(c.leaders().iter().filter(|&&l| l != 1).count(), 1);
    c.heal();
    c.tick_all(5);
    assert_eq!(c.leaders().len(), 1);
    assert_ne!(c.leaders()[0], 1);
    let stale = Message {
        from: 1,
        to: 2,
        term: 1,
        body: MessageBody::Heartbeat {
            commit: 0,
            read_round: 0,
        },
    };
    assert!(c.node(2).step(stale).is_err());
    assert!(c.node(2).counters().dropped_stale_term > 0);
}

/// A campaign re-sends its (pre-)vote request every heartbeat interval to
/// voters that have not answered, so one lost message does not cost a whole
/// election timeout (found by the simulator's Figure 8 test under long
/// reordering, SEED=5232).
#[test]
fn campaign_resends_vote_requests_to_silent_voters() {
    let mut c = Cluster::new(3);
    c.node(1).campaign();
    c.handle_ready(1);
    // The pre-vote to node 3 is lost; node 2 answers.
    c.queue.retain(|m| m.to == 2);
    c.deliver_one_round();
    c.deliver_one_round();
    // Pre-vote won with node 2: now a candidate; lose everything again.
    assert_eq!(c.node(1).status().role, Role::Candidate);
    c.queue.clear();
    let heartbeat = c.configs[&1].heartbeat_interval_ticks;
    for _ in 0..heartbeat {
        c.tick(1);
    }
    c.handle_ready(1);
    let resent: Vec<u64> = c
        .queue
        .iter()
        .filter(|m| matches!(m.body, MessageBody::Vote { .. }))
        .map(|m| m.to)
        .collect();
    assert_eq!(resent, vec![2, 3], "both voters are silent in the new term");
    c.deliver_all();
    assert_eq!(c.node(1).status().role, Role::Leader);
}
