//! §5.3 log replication and backtracking, §5.4 safety (Figure 8), and the
//! persistence contract (§5.1 Figure 2 "persistent state").

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers outside #[test] fns

mod common;
use common::Cluster;
use raft::{EntryKind, Message, MessageBody, Mutations, Role};

/// §5.3: the leader appends, replicates, commits once a majority stores the
/// entry, and every node applies the same commands in the same order. A new
/// leader first commits a Noop of its own term (§8).
#[test]
fn committed_entries_are_applied_everywhere_in_order() {
    let mut c = Cluster::new(3);
    c.elect(1);
    let first = c.disks[&1].entries[0].clone();
    assert_eq!((first.index, first.kind), (1, EntryKind::Noop));
    for i in 0..5u8 {
        c.propose(1, &[i]);
    }
    c.tick_all(3); // a heartbeat carries the final commit index to followers
    for id in [1, 2, 3] {
        assert_eq!(
            c.commands(id),
            vec![vec![0], vec![1], vec![2], vec![3], vec![4]],
            "node {id}"
        );
        assert_eq!(c.node(id).status().commit, 6);
    }
}

/// §5.3: a follower that missed entries is brought up to date by the
/// leader's consistency check walking back until the logs match.
#[test]
fn lagging_follower_catches_up() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(3);
    for i in 0..100u8 {
        c.propose(1, &[i]);
    }
    assert!(c.commands(3).is_empty());
    c.heal();
    c.tick_all(5);
    assert_eq!(c.commands(3).len(), 100);
    assert_eq!(c.commands(3), c.commands(1));
}

/// §5.3 (fast backtracking, as the paper suggests at the end of §5.3): a
/// follower holding 50 conflicting entries of a stale term is repaired with
/// a couple of rejections, not one per entry.
#[test]
fn conflicting_suffix_is_skipped_a_term_at_a_time() {
    let mut c = Cluster::new(3);
    c.elect(1);
    c.isolate(1);
    for i in 0..50u8 {
        c.node(1).propose(vec![i]).unwrap(); // never committed
    }
    c.deliver_all();
    c.tick_all(40); // 2 or 3 take over and commit their own entries
    let leader = c
        .leaders()
        .into_iter()
        .find(|&l| l != 1)
        .expect("a new leader");
    for i in 0..60u8 {
        c.propose(leader, &[100 + i]);
    }
    let rejections_before = c.node(1).counters().append_rejections_sent;
    c.heal();
    c.tick_all(5);
    let rejections = c.node(1).counters().append_rejections_sent - rejections_before;
    assert!(
        rejections <= 3,
        "{rejections} rejections to repair 50 conflicting entries"
    );
    assert_eq!(c.commands(1), c.commands(leader));
    assert_eq!(c.commands(1).len(), 60);
    c.assert_state_machine_safety();
    // §5.3 Log Matching: after the repair the stored logs are identical,
    // the stale term's entries are gone from node 1's disk.
    assert_eq!(c.disks[&1].entries, c.disks[&leader].entries);
    let stale_term = c.disks[&1]
        .entries
        .iter()
        .filter(|e| e.data.len() == 1 && e.data[0] < 50);
    assert_eq!(stale_term.count(), 0);
}

/// Campaigns until `id` wins (its first tries may hit terms whose votes
/// are gone).
fn win_election(c: &mut Cluster, id: u64) {
    for _ in 0..3 {
        c.node(id).campaign();
        c.deliver_all();
        if c.node(id).status().role == Role::Leader {
            return;
        }
    }
    panic!("node {id} did not win");
}

/// Runs the scenario of Figure 8 with five nodes (S1..S5 = 1..5) and
/// returns the cluster afterwards. S1 (term t) gets entry "a" at index 2
/// onto S2; S5 wins the next term with "b" it never replicates; S1 returns,
/// wins, and pushes "a" to S3 and S4 (a majority) without its own term's
/// entry; then S1 fails and S5 wins again.
fn figure8(mutations: Mutations) -> Cluster {
    let mut c = Cluster::with_config(5, |cfg| {
        cfg.pre_vote = false;
        cfg.check_quorum = false;
        cfg.max_message_bytes = 1; // one entry per Append
        cfg.mutations = mutations;
    });
    c.elect(1);
    c.propose(1, b"setup"); // index 1 or 2 depending on the Noop
    c.tick_all(2);
    let base = c.node(1).status().last_index;
    // (a) S1 replicates "a" only to S2.
    for peer in [3, 4, 5] {
        c.cut.insert((1, peer));
    }
    let a_index = c.propose(1, b"a");
    assert_eq!(a_index, base + 1);
    // (b) S1 crashes; S5 wins with votes from S3, S4 and takes "b" alone.
    c.crash(1);
    c.heal();
    c.node(5).campaign();
    c.deliver_all_except(|m| m.from == 5 && matches!(m.body, MessageBody::Append { .. }));
    assert_eq!(c.node(5).status().role, Role::Leader);
    c.node(5).propose(b"b".to_vec()).unwrap();
    c.handle_ready(5);
    c.crash(5);
    // (c) S1 restarts and wins; only entries up to "a" reach S3 and S4.
    c.restart(1);
    // Its first try may be in a term where S3 and S4 already voted for S5.
    for _ in 0..3 {
        let s1_term = c.node(1).status().term + 1;
        c.node(1).campaign();
        // Strip S1's own-term entries from every Append: only "a" travels.
        c.deliver_all_mapped(|mut m| {
            if let MessageBody::Append { entries, .. } = &mut m.body {
                entries.retain(|e| e.term != s1_term);
            }
            Some(m)
        });
        if c.node(1).status().role == Role::Leader {
            break;
        }
    }
    assert_eq!(c.node(1).status().role, Role::Leader);
    c
}

/// §5.4.2 Figure 8: a leader never commits an entry of an earlier term by
/// counting replicas, so S5 may later overwrite it without harm.
#[test]
fn figure8_old_term_entry_is_not_committed_by_counting() {
    let mut c = figure8(Mutations::default());
    let a_index = c.machines[&1].applied_index + 1;
    let holders = [1, 2, 3, 4]
        .iter()
        .filter(|&&id| c.disks[&id].entries.iter().any(|e| e.data == b"a"))
        .count();
    assert!(holders >= 3, "\"a\" is on a majority ({holders} nodes)");
    assert!(
        c.node(1).status().commit < a_index,
        "S1 must not commit \"a\" by counting replicas"
    );
    // (d) S1 fails; S5 returns and wins; its entries replace "a".
    c.crash(1);
    c.restart(5);
    win_election(&mut c, 5);
    c.tick_all(5);
    c.restart(1);
    c.tick_all(30);
    c.assert_state_machine_safety();
    assert!(c.commands(1).contains(&b"b".to_vec()));
}

/// The test-only switch really breaks the rule: S1 commits and applies "a",
/// later S5's "b" is applied at the same index elsewhere.
#[test]
fn figure8_mutation_commits_by_counting_and_breaks_safety() {
    let mutations = Mutations {
        break_figure8_commit_rule: true,
        ..Mutations::default()
    };
    let mut c = figure8(mutations);
    let applied = c.machines[&1].commands.clone();
    let (a_index, _) = applied
        .iter()
        .find(|(_, d)| d == b"a")
        .cloned()
        .expect("S1 applied \"a\"");
    c.crash(1);
    c.restart(5);
    win_election(&mut c, 5);
    c.tick_all(5);
    let at_index = c.machines[&2]
        .commands
        .iter()
        .find(|(i, _)| *i == a_index)
        .cloned();
    assert_eq!(
        at_index,
        Some((a_index, b"b".to_vec())),
        "S2 applied \"b\" where S1 applied \"a\""
    );
}

/// Figure 2: term, vote and log survive a crash of every node.
#[test]
fn state_survives_restart_of_all_nodes() {
    let mut c = Cluster::new(3);
    c.elect(1);
    for i in 0..10u8 {
        c.propose(1, &[i]);
    }
    c.tick_all(3);
    let term = c.node(1).status().term;
    for id in [1, 2, 3] {
        c.crash(id);
    }
    for id in [1, 2, 3] {
        c.restart(id);
        assert_eq!(c.node(id).status().term, term);
        assert_eq!(c.node(id).status().last_index, 11);
    }
    c.tick_all(40);
    assert_eq!(c.leaders().len(), 1);
    let leader = c.leaders()[0];
    c.propose(leader, b"after");
    c.tick_all(3);
    for id in [1, 2, 3] {
        assert_eq!(
            c.commands(id).len(),
            11,
            "node {id} re-applied its log after restart"
        );
    }
}

/// A vote survives a crash; with `forget_to_persist_vote` it does not, and
/// the node votes twice in one term.
#[test]
fn vote_is_remembered_across_restart_unless_the_mutation_forgets_it() {
    for forget in [false, true] {
        let mut c = Cluster::with_config(3, |cfg| {
            cfg.pre_vote = false;
            cfg.mutations.forget_to_persist_vote = forget;
        });
        c.node(1).campaign();
        c.node(2).campaign();
        c.handle_all_ready();
        let from_1 = c
            .queue
            .iter()
            .find(|m| m.from == 1 && m.to == 3)
            .cloned()
            .unwrap();
        let from_2: Message = c
            .queue
            .iter()
            .find(|m| m.from == 2 && m.to == 3)
            .cloned()
            .unwrap();
        c.queue.clear();
        c.node(3).step(from_1).unwrap();
        c.handle_ready(3);
        c.queue.clear();
        c.crash(3);
        c.restart(3);
        c.node(3).step(from_2).unwrap();
        c.handle_ready(3);
        let granted_to_2 = c
            .queue
            .iter()
            .any(|m| m.to == 2 && m.body == MessageBody::VoteResponse { granted: true });
        assert_eq!(granted_to_2, forget, "forget_to_persist_vote = {forget}");
    }
}
