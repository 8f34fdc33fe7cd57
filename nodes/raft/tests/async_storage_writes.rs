//! Thesis §10.2.1 with `Config::async_storage_writes`: the leader sends its
//! Appends before its own write is durable, and counts itself toward the
//! commit quorum only for entries the runtime reported with `on_persisted`.
//! Followers still acknowledge only what they persisted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use raft::{Config, Index, Message, MessageBody, Mutations, RawNode, Ready, Restored, Role, Term};

fn node(id: u64, mutations: Mutations) -> RawNode {
    let mut config = Config::new(id, vec![1, 2, 3]);
    config.async_storage_writes = true;
    config.mutations = mutations;
    RawNode::new(config, Restored::default()).unwrap()
}

/// The (index, term) a runtime reports once this Ready's write is durable.
fn persisted_point(ready: &Ready) -> Option<(Index, Term)> {
    ready
        .entries
        .last()
        .map(|e| (e.index, e.term))
        .or_else(|| ready.snapshot.as_ref().map(|s| (s.meta.index, s.meta.term)))
}

/// Handles a Ready as a runtime with an instantly durable disk would:
/// every message goes out and the write is reported at once.
fn handle_now(n: &mut RawNode, out: &mut Vec<Message>) {
    while n.has_ready() {
        let ready = n.ready();
        out.extend(ready.early_messages.iter().cloned());
        out.extend(ready.messages.iter().cloned());
        let point = persisted_point(&ready);
        n.advance();
        if let Some((index, term)) = point {
            n.on_persisted(index, term);
        }
    }
}

/// Three nodes with node 1 elected and its no-op committed everywhere.
fn elected(mutations: Mutations) -> Vec<RawNode> {
    let mut nodes: Vec<RawNode> = (1..=3).map(|id| node(id, mutations)).collect();
    nodes[0].campaign();
    let mut queue = Vec::new();
    for _ in 0..20 {
        for n in nodes.iter_mut() {
            handle_now(n, &mut queue);
        }
        for m in std::mem::take(&mut queue) {
            let to = (m.to - 1) as usize;
            let _ = nodes[to].step(m);
        }
    }
    assert_eq!(nodes[0].status().role, Role::Leader);
    assert_eq!(nodes[0].status().commit, 1);
    nodes
}

#[test]
fn the_leader_sends_appends_before_its_own_write_and_waits_for_it_to_count_itself() {
    let mut nodes = elected(Mutations::default());
    let index = nodes[0].propose(b"x".to_vec()).unwrap();
    let ready = nodes[0].ready();
    assert_eq!(ready.entries.len(), 1);
    assert!(ready.messages.is_empty(), "{:?}", ready.messages);
    let appends: Vec<Message> = ready.early_messages.clone();
    assert_eq!(appends.len(), 2);
    assert!(appends
        .iter()
        .all(|m| matches!(m.body, MessageBody::Append { .. })));
    let (entry_index, entry_term) = persisted_point(&ready).unwrap();
    nodes[0].advance();
    // Only follower 2 gets it: it persists, then acknowledges (held until then).
    let to_two = appends.into_iter().find(|m| m.to == 2).unwrap();
    nodes[1].step(to_two).unwrap();
    let follower_ready = nodes[1].ready();
    assert!(follower_ready.early_messages.is_empty());
    let ack = follower_ready
        .messages
        .iter()
        .find(|m| matches!(m.body, MessageBody::AppendResponse { success: true, .. }))
        .cloned()
        .expect("an acknowledgement held until the write is durable");
    nodes[1].advance();
    nodes[0].step(ack).unwrap();
    // Leader (not durable) + follower 2 (durable) is not a durable majority.
    assert_eq!(nodes[0].status().commit, index - 1);
    nodes[0].on_persisted(entry_index, entry_term);
    assert_eq!(nodes[0].status().commit, index);
    assert_eq!(nodes[0].status().persisted_index, index);
    assert!(nodes[0].has_ready());
    let ready = nodes[0].ready();
    assert_eq!(ready.committed_entries.last().map(|e| e.index), Some(index));
}

#[test]
fn two_durable_followers_commit_without_the_leaders_write() {
    let mut nodes = elected(Mutations::default());
    let index = nodes[0].propose(b"y".to_vec()).unwrap();
    let ready = nodes[0].ready();
    nodes[0].advance();
    for append in ready.early_messages {
        let to = (append.to - 1) as usize;
        nodes[to].step(append).unwrap();
        let mut acks = Vec::new();
        handle_now(&mut nodes[to], &mut acks);
        for ack in acks {
            nodes[0].step(ack).unwrap();
        }
    }
    assert_eq!(nodes[0].status().commit, index);
    assert!(nodes[0].status().persisted_index < index);
}

#[test]
fn the_mutation_counts_the_leader_before_its_write_is_durable() {
    let broken = Mutations {
        count_self_before_persist: true,
        ..Mutations::default()
    };
    let mut nodes = elected(broken);
    let index = nodes[0].propose(b"z".to_vec()).unwrap();
    let ready = nodes[0].ready();
    nodes[0].advance();
    let to_two = ready
        .early_messages
        .into_iter()
        .find(|m| m.to == 2)
        .unwrap();
    nodes[1].step(to_two).unwrap();
    let mut acks = Vec::new();
    handle_now(&mut nodes[1], &mut acks);
    for ack in acks {
        nodes[0].step(ack).unwrap();
    }
    assert_eq!(nodes[0].status().commit, index, "the bug commits early");
}

#[test]
fn a_report_for_a_replaced_entry_is_ignored() {
    let mut nodes = elected(Mutations::default());
    // Follower 3 receives an entry of term 2 at index 2 and does not finish
    // its write; a new leader then overwrites index 2 with another term.
    let term = nodes[0].status().term;
    let stale = Message {
        from: 1,
        to: 3,
        term,
        body: MessageBody::Append {
            prev_log_index: 1,
            prev_log_term: term,
            entries: vec![raft::Entry {
                term,
                index: 2,
                kind: raft::EntryKind::Normal,
                data: b"old".to_vec(),
            }],
            leader_commit: 1,
        },
    };
    nodes[2].step(stale).unwrap();
    let _ = nodes[2].ready();
    nodes[2].advance();
    let replacing = Message {
        from: 2,
        to: 3,
        term: term + 1,
        body: MessageBody::Append {
            prev_log_index: 1,
            prev_log_term: term,
            entries: vec![raft::Entry {
                term: term + 1,
                index: 2,
                kind: raft::EntryKind::Normal,
                data: b"new".to_vec(),
            }],
            leader_commit: 1,
        },
    };
    nodes[2].step(replacing).unwrap();
    // The first write's report names (2, term): no longer in the log.
    nodes[2].on_persisted(2, term);
    assert_eq!(nodes[2].status().persisted_index, 1);
    nodes[2].on_persisted(2, term + 1);
    assert_eq!(nodes[2].status().persisted_index, 2);
}

#[test]
fn without_the_option_nothing_goes_early_and_the_leader_counts_its_log() {
    let mut config = Config::new(1, vec![1]);
    config.async_storage_writes = false;
    let mut n = RawNode::new(config, Restored::default()).unwrap();
    n.campaign();
    let ready = n.ready();
    assert!(ready.early_messages.is_empty());
    // A single node commits its no-op in the same Ready (persist, then apply).
    assert_eq!(ready.committed_entries.len(), 1);
    n.advance();
}

#[test]
fn a_single_async_node_commits_only_after_its_write() {
    let mut config = Config::new(1, vec![1]);
    config.async_storage_writes = true;
    let mut n = RawNode::new(config, Restored::default()).unwrap();
    n.campaign();
    let ready = n.ready();
    assert!(ready.committed_entries.is_empty());
    let (index, term) = persisted_point(&ready).unwrap();
    n.advance();
    n.on_persisted(index, term);
    let ready = n.ready();
    assert_eq!(ready.committed_entries.len(), 1);
}
