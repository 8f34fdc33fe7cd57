use super::*;
use kv::server::Leadership;
use kv::{Op, OpResult};
use raft::EntryKind;
use shardctrler::NSHARDS;

/// A Raft stand-in: records proposals; the test commits them by hand.
#[derive(Default)]
struct FakeNode {
    leader: bool,
    term: Term,
    proposed: Vec<Entry>,
    next_index: Index,
}

impl Consensus for FakeNode {
    fn propose(&mut self, data: Vec<u8>) -> Result<Index, Refusal> {
        if !self.leader {
            return Err(Refusal::NotLeader { leader_hint: None });
        }
        self.next_index += 1;
        self.proposed.push(Entry {
            term: self.term,
            index: self.next_index,
            kind: EntryKind::Normal,
            data,
        });
        Ok(self.next_index)
    }
    fn read_index(&mut self, _ctx: Vec<u8>) -> Result<(), Refusal> {
        Err(Refusal::Busy)
    }
    fn compact(&mut self, _index: Index, _data: Vec<u8>) -> Result<(), String> {
        Ok(())
    }
    fn leadership(&self) -> Leadership {
        Leadership {
            term: self.term,
            is_leader: self.leader,
            leader_hint: None,
        }
    }
}

fn leader() -> FakeNode {
    FakeNode {
        leader: true,
        term: 1,
        ..FakeNode::default()
    }
}

/// Commits everything proposed so far.
fn commit(server: &mut ShardKvServer, node: &mut FakeNode) {
    let entries = std::mem::take(&mut node.proposed);
    server.on_ready(node, None, &entries).unwrap();
}

fn config(num: u64, shards: Vec<Gid>) -> Config {
    let mut groups = std::collections::BTreeMap::new();
    for gid in &shards {
        if *gid != 0 {
            groups.insert(*gid, vec![format!("g{gid}")]);
        }
    }
    Config {
        num,
        shards,
        groups,
    }
}

fn request(seq: u64, op: Op) -> ShardKvRequest {
    ShardKvRequest {
        client_id: 5,
        seq,
        op,
    }
}

/// Outbounds already queued (a change applied on the leader polls at once),
/// else those of the next poll round.
fn tick_until_outbound(server: &mut ShardKvServer, node: &FakeNode) -> Vec<Outbound> {
    let queued = server.take_outbound();
    if !queued.is_empty() {
        return queued;
    }
    for _ in 0..10 {
        server.tick(node);
        let out = server.take_outbound();
        if !out.is_empty() {
            return out;
        }
    }
    panic!("no outbound after 10 ticks");
}

#[test]
fn leader_polls_for_the_next_config_and_applies_it() {
    let mut node = leader();
    let mut server = ShardKvServer::new(1, 1, ServerConfig::default());
    let out = tick_until_outbound(&mut server, &node);
    assert_eq!(out, vec![Outbound::QueryConfig { num: 1 }]);
    server.on_config(&mut node, config(1, vec![1; NSHARDS]));
    commit(&mut server, &mut node);
    assert_eq!(server.state().config().num, 1);
    // A stale or skipping config is not even proposed.
    server.on_config(&mut node, config(3, vec![1; NSHARDS]));
    assert!(node.proposed.is_empty());
}

#[test]
fn requests_are_answered_from_the_log() {
    let mut node = leader();
    let mut server = ShardKvServer::new(1, 1, ServerConfig::default());
    server.handle_request(&mut node, 1, request(1, Op::Get { key: "a".into() }));
    assert_eq!(
        server.take_replies()[0].response,
        ShardKvResponse::WrongGroup
    );
    server.on_config(&mut node, config(1, vec![1; NSHARDS]));
    commit(&mut server, &mut node);
    let put = Op::Put {
        key: "a".into(),
        value: "v".into(),
    };
    server.handle_request(&mut node, 2, request(1, put));
    assert!(server.take_replies().is_empty(), "answered before commit");
    commit(&mut server, &mut node);
    assert_eq!(
        server.take_replies()[0].response,
        ShardKvResponse::Ok(OpResult::Done)
    );
    server.handle_request(&mut node, 3, request(2, Op::Get { key: "a".into() }));
    commit(&mut server, &mut node);
    assert_eq!(
        server.take_replies()[0].response,
        ShardKvResponse::Ok(OpResult::Value("v".into()))
    );
}

#[test]
fn a_change_committed_before_the_request_turns_it_away() {
    let mut node = leader();
    let mut server = ShardKvServer::new(1, 1, ServerConfig::default());
    server.on_config(&mut node, config(1, vec![1; NSHARDS]));
    commit(&mut server, &mut node);
    server.on_config(&mut node, config(2, vec![2; NSHARDS]));
    // Proposed after the config change but before it applied.
    server.handle_request(
        &mut node,
        9,
        request(
            1,
            Op::Append {
                key: "a".into(),
                value: "x".into(),
            },
        ),
    );
    commit(&mut server, &mut node);
    assert_eq!(
        server.take_replies()[0].response,
        ShardKvResponse::WrongGroup
    );
}

#[test]
fn followers_refuse_and_deposed_leaders_release_waiters() {
    let mut node = leader();
    let mut server = ShardKvServer::new(1, 1, ServerConfig::default());
    server.on_config(&mut node, config(1, vec![1; NSHARDS]));
    commit(&mut server, &mut node);
    server.handle_request(
        &mut node,
        1,
        request(
            1,
            Op::Put {
                key: "a".into(),
                value: "v".into(),
            },
        ),
    );
    node.leader = false;
    node.term = 2;
    server.tick(&node);
    assert_eq!(
        server.take_replies()[0].response,
        ShardKvResponse::LeadershipLost
    );
    server.handle_request(&mut node, 2, request(2, Op::Get { key: "a".into() }));
    assert!(matches!(
        server.take_replies()[0].response,
        ShardKvResponse::WrongLeader { .. }
    ));
}

/// Two groups' servers hand a shard over through pull, insert, delete and
/// confirm, as the runtime would route their outbounds.
#[test]
fn pull_delete_confirm_between_two_groups() {
    let (mut n1, mut n2) = (leader(), leader());
    let mut one = ShardKvServer::new(1, 1, ServerConfig::default());
    let mut two = ShardKvServer::new(2, 2, ServerConfig::default());
    let c1 = config(1, vec![1; NSHARDS]);
    let mut shards = vec![1; NSHARDS];
    shards[7] = 2;
    let c2 = config(2, shards);
    for (server, node) in [(&mut one, &mut n1), (&mut two, &mut n2)] {
        server.on_config(node, c1.clone());
        commit(server, node);
        server.on_config(node, c2.clone());
        commit(server, node);
    }
    // Key "A" (65) is shard 5; key "9" (57) is shard 7.
    assert_eq!(two.state().status(7), Some(ShardStatus::Receiving));
    // Applying configuration 2 made the leader ask for the shard at once.
    assert!(two
        .take_outbound()
        .iter()
        .any(|o| matches!(o, Outbound::Pull { gid: 1, .. })));
    one.take_outbound();
    // Pull from a group not at config 2 yet would be NotReady; here it is.
    let out = tick_until_outbound(&mut two, &n2);
    let Some(Outbound::Pull {
        gid: 1, request, ..
    }) = out.first().cloned()
    else {
        panic!("expected a pull from gid 1, got {out:?}");
    };
    let reply = one.handle_pull(&request);
    two.on_pull_reply(&mut n2, reply);
    commit(&mut two, &mut n2);
    assert_eq!(two.state().status(7), Some(ShardStatus::Confirming));
    let out = tick_until_outbound(&mut two, &n2);
    let Some(Outbound::Delete {
        gid: 1, request, ..
    }) = out.first().cloned()
    else {
        panic!("expected a delete to gid 1, got {out:?}");
    };
    assert_eq!(one.handle_delete(&mut n1, &request), DeleteReply::NotYet);
    commit(&mut one, &mut n1);
    let reply = one.handle_delete(&mut n1, &request);
    assert_eq!(
        reply,
        DeleteReply::Deleted {
            config_num: 2,
            shard: 7
        }
    );
    assert_eq!(one.state().status(7), None);
    two.on_delete_reply(&mut n2, reply);
    commit(&mut two, &mut n2);
    assert!(two.state().settled() && one.state().settled());
    // Both now ask for configuration 3.
    assert_eq!(
        tick_until_outbound(&mut one, &n1),
        vec![Outbound::QueryConfig { num: 3 }]
    );
}

#[test]
fn snapshots_when_the_raft_state_is_large() {
    let mut node = leader();
    let config = ServerConfig {
        max_raft_state_bytes: Some(100),
        ..ServerConfig::default()
    };
    let mut server = ShardKvServer::new(1, 1, config);
    server.on_config(&mut node, self::config(1, vec![1; NSHARDS]));
    commit(&mut server, &mut node);
    assert!(server.maybe_snapshot(&mut node, 50).unwrap().is_none());
    let taken = server
        .maybe_snapshot(&mut node, 150)
        .unwrap()
        .expect("snapshot");
    assert_eq!(taken.index, 1);
    let mut restored = ShardKvServer::new(2, 1, ServerConfig::default());
    restored.restore_snapshot(taken.index, &taken.data).unwrap();
    assert_eq!(restored.state(), server.state());
}
