//! Unit tests of the server's bookkeeping against a fake Raft node.

use raft::{EntryKind, SnapshotMeta};

use super::*;

/// A Raft stand-in: records proposals and read ctxs; the test decides what commits.
struct FakeNode {
    leadership: Leadership,
    log: Vec<Entry>,
    reads: Vec<Vec<u8>>,
    compacted: Option<(Index, Vec<u8>)>,
}

impl FakeNode {
    fn leader(term: Term) -> Self {
        Self {
            leadership: Leadership {
                term,
                is_leader: true,
                leader_hint: Some(1),
            },
            log: Vec::new(),
            reads: Vec::new(),
            compacted: None,
        }
    }

    fn lose_leadership(&mut self, new_term: Term, new_leader: NodeId) {
        self.leadership = Leadership {
            term: new_term,
            is_leader: false,
            leader_hint: Some(new_leader),
        };
    }
}

impl Consensus for FakeNode {
    fn propose(&mut self, data: Vec<u8>) -> Result<Index, Refusal> {
        if !self.leadership.is_leader {
            return Err(Refusal::NotLeader {
                leader_hint: self.leadership.leader_hint,
            });
        }
        let index = self.log.len() as Index + 1;
        self.log.push(Entry {
            term: self.leadership.term,
            index,
            kind: EntryKind::Normal,
            data,
        });
        Ok(index)
    }

    fn read_index(&mut self, ctx: Vec<u8>) -> Result<(), Refusal> {
        if !self.leadership.is_leader {
            return Err(Refusal::NotLeader {
                leader_hint: self.leadership.leader_hint,
            });
        }
        self.reads.push(ctx);
        Ok(())
    }

    fn compact(&mut self, index: Index, snapshot_data: Vec<u8>) -> Result<(), String> {
        self.compacted = Some((index, snapshot_data));
        Ok(())
    }

    fn leadership(&self) -> Leadership {
        self.leadership
    }
}

fn request(client_id: ClientId, seq: Seq, op: Op) -> KvRequest {
    KvRequest { client_id, seq, op }
}

fn append(key: &str, value: &str) -> Op {
    Op::Append {
        key: key.into(),
        value: value.into(),
    }
}

fn get(key: &str) -> Op {
    Op::Get { key: key.into() }
}

fn server(config: ServerConfig) -> KvServer {
    KvServer::new(1, config, 42)
}

#[test]
fn write_is_answered_when_its_entry_applies() {
    let mut node = FakeNode::leader(1);
    let mut server = server(ServerConfig::default());
    server.handle_request(&mut node, 100, request(7, 1, append("k", "a")));
    assert!(server.take_replies().is_empty());
    assert_eq!(server.pending_requests(), 1);
    let committed = node.log.clone();
    server.on_ready(&node, None, &committed, &[]).unwrap();
    assert_eq!(
        server.take_replies(),
        vec![Reply {
            request_id: 100,
            response: KvResponse::Ok(OpResult::Done)
        }]
    );
    assert_eq!(server.state().read("k"), "a");
    assert_eq!(server.pending_requests(), 0);
}

#[test]
fn retry_proposed_twice_is_applied_once_and_both_get_the_original_reply() {
    let mut node = FakeNode::leader(1);
    let mut server = server(ServerConfig::default());
    let cas = Op::Cas {
        key: "k".into(),
        expected: "".into(),
        new: "x".into(),
    };
    server.handle_request(&mut node, 1, request(7, 1, cas.clone()));
    server.handle_request(&mut node, 2, request(7, 1, cas));
    let committed = node.log.clone();
    assert_eq!(committed.len(), 2);
    server.on_ready(&node, None, &committed, &[]).unwrap();
    let replies = server.take_replies();
    assert_eq!(replies.len(), 2);
    for reply in replies {
        assert_eq!(
            reply.response,
            KvResponse::Ok(OpResult::Cas { swapped: true })
        );
    }
    assert_eq!(server.state().read("k"), "x");
}

#[test]
fn follower_refuses_with_leader_hint() {
    let mut node = FakeNode::leader(1);
    node.lose_leadership(2, 3);
    let mut server = server(ServerConfig::default());
    server.handle_request(&mut node, 5, request(7, 1, append("k", "a")));
    server.handle_request(&mut node, 6, request(7, 2, get("k")));
    let replies = server.take_replies();
    assert_eq!(replies.len(), 2);
    for reply in replies {
        assert_eq!(
            reply.response,
            KvResponse::WrongLeader {
                leader_hint: Some(3)
            }
        );
        assert!(reply.response.is_definite_refusal());
    }
    assert!(node.log.is_empty());
}

#[test]
fn different_entry_at_the_pending_index_fails_the_request_as_indefinite() {
    let mut node = FakeNode::leader(1);
    let mut server = server(ServerConfig::default());
    server.handle_request(&mut node, 10, request(7, 1, append("k", "ours")));
    // A new leader of term 2 overwrote index 1 with another client's entry.
    let theirs = Command {
        client_id: 8,
        seq: 1,
        op: append("k", "theirs"),
    };
    let other = Entry {
        term: 2,
        index: 1,
        kind: EntryKind::Normal,
        data: theirs.encode(),
    };
    server.on_ready(&node, None, &[other], &[]).unwrap();
    let replies = server.take_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].request_id, 10);
    assert!(matches!(
        replies[0].response,
        KvResponse::LeadershipLost { .. }
    ));
    assert!(!replies[0].response.is_definite_refusal());
    assert_eq!(server.state().read("k"), "theirs");
}

#[test]
fn leadership_change_fails_pending_writes_and_unconfirmed_reads() {
    let mut node = FakeNode::leader(1);
    let mut server = server(ServerConfig::default());
    server.handle_request(&mut node, 1, request(7, 1, append("k", "a")));
    server.handle_request(&mut node, 2, request(8, 1, get("k")));
    assert_eq!(server.pending_requests(), 2);
    node.lose_leadership(2, 3);
    server.tick(&node);
    let mut replies = server.take_replies();
    replies.sort_by_key(|r| r.request_id);
    assert_eq!(
        replies,
        vec![
            Reply {
                request_id: 1,
                response: KvResponse::LeadershipLost {
                    leader_hint: Some(3)
                }
            },
            Reply {
                request_id: 2,
                response: KvResponse::LeadershipLost {
                    leader_hint: Some(3)
                }
            },
        ]
    );
    assert_eq!(server.pending_requests(), 0);
    // The old entry still commits later (the new leader kept it): applied, nobody waiting.
    let committed = node.log.clone();
    server.on_ready(&node, None, &committed, &[]).unwrap();
    assert!(server.take_replies().is_empty());
    assert_eq!(server.state().read("k"), "a");
}

#[test]
fn new_term_while_still_leader_also_fails_older_requests() {
    let mut node = FakeNode::leader(1);
    let mut server = server(ServerConfig::default());
    server.handle_request(&mut node, 1, request(7, 1, append("k", "a")));
    node.leadership.term = 3; // lost and regained leadership in between
    server.on_ready(&node, None, &[], &[]).unwrap();
    let replies = server.take_replies();
    assert_eq!(replies.len(), 1);
    assert!(matches!(
        replies[0].response,
        KvResponse::LeadershipLost { .. }
    ));
}

#[test]
fn read_index_read_waits_for_apply_then_answers() {
    let mut node = FakeNode::leader(1);
    let mut server = server(ServerConfig::default());
    server.handle_request(&mut node, 1, request(7, 1, append("k", "a")));
    server.handle_request(&mut node, 2, request(8, 1, get("k")));
    assert_eq!(node.reads.len(), 1);
    let ctx = node.reads[0].clone();
    // Read index 1 confirmed before entry 1 applied: the read must wait.
    server.on_ready(&node, None, &[], &[(ctx, 1)]).unwrap();
    assert!(server.take_replies().is_empty());
    let committed = node.log.clone();
    server.on_ready(&node, None, &committed, &[]).unwrap();
    let replies = server.take_replies();
    assert_eq!(
        replies,
        vec![
            Reply {
                request_id: 1,
                response: KvResponse::Ok(OpResult::Done)
            },
            Reply {
                request_id: 2,
                response: KvResponse::Ok(OpResult::Value("a".into()))
            },
        ]
    );
}

#[test]
fn confirmed_read_survives_leadership_loss() {
    let mut node = FakeNode::leader(1);
    let mut server = server(ServerConfig::default());
    server.handle_request(&mut node, 1, request(7, 1, append("k", "a")));
    server.handle_request(&mut node, 2, request(8, 1, get("k")));
    let ctx = node.reads[0].clone();
    server.on_ready(&node, None, &[], &[(ctx, 1)]).unwrap();
    node.lose_leadership(2, 2);
    server.tick(&node);
    // The write is failed, the confirmed read stays.
    let replies = server.take_replies();
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0].request_id, 1);
    let committed = node.log.clone();
    server.on_ready(&node, None, &committed, &[]).unwrap();
    assert_eq!(
        server.take_replies(),
        vec![Reply {
            request_id: 2,
            response: KvResponse::Ok(OpResult::Value("a".into()))
        }]
    );
}

#[test]
fn read_states_of_other_servers_or_incarnations_are_ignored() {
    let mut node = FakeNode::leader(1);
    let mut server = server(ServerConfig::default());
    server.handle_request(&mut node, 1, request(8, 1, get("k")));
    let mut foreign = node.reads[0].clone();
    foreign[15] ^= 1; // same token, other incarnation
    server
        .on_ready(&node, None, &[], &[(foreign, 0), (vec![1, 2, 3], 0)])
        .unwrap();
    assert!(server.take_replies().is_empty());
    assert_eq!(server.pending_requests(), 1);
}

#[test]
fn log_read_mode_proposes_gets() {
    let mut node = FakeNode::leader(1);
    let config = ServerConfig {
        read_mode: ReadMode::Log,
        ..ServerConfig::default()
    };
    let mut server = server(config);
    server.handle_request(&mut node, 1, request(8, 1, get("k")));
    assert!(node.reads.is_empty());
    assert_eq!(node.log.len(), 1);
    let committed = node.log.clone();
    server.on_ready(&node, None, &committed, &[]).unwrap();
    assert_eq!(
        server.take_replies(),
        vec![Reply {
            request_id: 1,
            response: KvResponse::Ok(OpResult::Value(String::new()))
        }]
    );
}

#[test]
fn unsafe_stale_reads_answer_from_local_state_even_on_a_follower() {
    let mut node = FakeNode::leader(1);
    node.lose_leadership(5, 2);
    let config = ServerConfig {
        unsafe_stale_reads: true,
        ..ServerConfig::default()
    };
    let mut server = server(config);
    server.handle_request(&mut node, 1, request(8, 1, get("k")));
    assert_eq!(
        server.take_replies(),
        vec![Reply {
            request_id: 1,
            response: KvResponse::Ok(OpResult::Value(String::new()))
        }]
    );
    assert_eq!(server.counters().stale_local_reads, 1);
    assert!(!ServerConfig::default().unsafe_stale_reads);
}

#[test]
fn pending_requests_time_out() {
    let mut node = FakeNode::leader(1);
    let config = ServerConfig {
        pending_timeout_ticks: 3,
        ..ServerConfig::default()
    };
    let mut server = server(config);
    server.handle_request(&mut node, 1, request(7, 1, append("k", "a")));
    server.handle_request(&mut node, 2, request(8, 1, get("k")));
    server.tick(&node);
    server.tick(&node);
    assert!(server.take_replies().is_empty());
    server.tick(&node);
    let replies = server.take_replies();
    assert_eq!(replies.len(), 2);
    assert!(replies.iter().all(|r| r.response == KvResponse::Timeout));
}

#[test]
fn too_many_pending_requests_are_refused_busy() {
    let mut node = FakeNode::leader(1);
    let config = ServerConfig {
        max_pending_requests: 1,
        ..ServerConfig::default()
    };
    let mut server = server(config);
    server.handle_request(&mut node, 1, request(7, 1, append("k", "a")));
    server.handle_request(&mut node, 2, request(8, 1, append("k", "b")));
    assert_eq!(
        server.take_replies(),
        vec![Reply {
            request_id: 2,
            response: KvResponse::Busy
        }]
    );
    assert_eq!(node.log.len(), 1);
}

#[test]
fn snapshot_is_taken_past_the_threshold_and_compacts_raft() {
    let mut node = FakeNode::leader(1);
    let config = ServerConfig {
        max_raft_state_bytes: Some(1000),
        ..ServerConfig::default()
    };
    let mut server = server(config);
    server.handle_request(&mut node, 1, request(7, 1, append("k", "a")));
    let committed = node.log.clone();
    server.on_ready(&node, None, &committed, &[]).unwrap();
    assert_eq!(server.maybe_snapshot(&mut node, 999).unwrap(), None);
    let taken = server
        .maybe_snapshot(&mut node, 1000)
        .unwrap()
        .expect("snapshot at threshold");
    assert_eq!(taken.index, 1);
    assert_eq!(node.compacted, Some((1, taken.data.clone())));
    // Nothing new applied: no second snapshot at the same index.
    assert_eq!(server.maybe_snapshot(&mut node, 5000).unwrap(), None);
    // A restarted server restores it.
    let mut restarted = KvServer::new(1, ServerConfig::default(), 43);
    restarted
        .restore_snapshot(taken.index, &taken.data)
        .unwrap();
    assert_eq!(restarted.state(), server.state());
}

#[test]
fn installed_snapshot_replaces_state_and_releases_covered_waiters() {
    let mut leader_node = FakeNode::leader(1);
    let mut leader = server(ServerConfig::default());
    leader.handle_request(&mut leader_node, 1, request(7, 1, append("k", "a")));
    leader.handle_request(&mut leader_node, 2, request(7, 2, append("k", "b")));
    let committed = leader_node.log.clone();
    leader
        .on_ready(&leader_node, None, &committed, &[])
        .unwrap();
    let snapshot = Snapshot {
        meta: SnapshotMeta {
            index: 2,
            term: 1,
            voters: vec![1, 2, 3],
        },
        data: leader.state().snapshot(),
    };

    // A lagging node that had proposed entry 1 while it led term 1.
    let mut lagging_node = FakeNode::leader(1);
    let mut lagging = KvServer::new(2, ServerConfig::default(), 1);
    lagging.handle_request(&mut lagging_node, 9, request(7, 1, append("k", "a")));
    lagging
        .on_ready(&lagging_node, Some(&snapshot), &[], &[])
        .unwrap();
    assert_eq!(lagging.state().read("k"), "ab");
    assert_eq!(lagging.state().applied_index(), 2);
    let replies = lagging.take_replies();
    assert_eq!(replies.len(), 1);
    assert!(matches!(
        replies[0].response,
        KvResponse::LeadershipLost { .. }
    ));
}

#[test]
fn invalid_requests_are_refused_before_the_log() {
    let mut node = FakeNode::leader(1);
    let mut server = server(ServerConfig::default());
    let huge_key = "k".repeat(crate::command::MAX_KEY_BYTES + 1);
    server.handle_request(&mut node, 1, request(7, 1, Op::Get { key: huge_key }));
    let replies = server.take_replies();
    assert!(matches!(replies[0].response, KvResponse::Invalid(_)));
    assert!(node.log.is_empty() && node.reads.is_empty());
}
