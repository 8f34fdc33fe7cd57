use super::*;
use shardctrler::NSHARDS;
use std::collections::BTreeMap;

fn config(num: u64, shards: &[Gid]) -> Config {
    let mut groups = BTreeMap::new();
    for gid in shards {
        if *gid != 0 {
            groups.insert(*gid, vec![format!("g{gid}")]);
        }
    }
    Config {
        num,
        shards: shards.to_vec(),
        groups,
    }
}

fn put(client_id: u64, seq: u64, key: &str, value: &str) -> GroupCommand {
    GroupCommand::Client {
        client_id,
        seq,
        op: Op::Append {
            key: key.into(),
            value: value.into(),
        },
    }
}

fn get(key: &str) -> GroupCommand {
    GroupCommand::Client {
        client_id: 0,
        seq: 0,
        op: Op::Get { key: key.into() },
    }
}

/// Key "0" is shard 8 (b'0' = 48), "1" shard 9, "2" shard 0.
const K8: &str = "0";
const K0: &str = "2";

fn all(gid: Gid) -> Vec<Gid> {
    vec![gid; NSHARDS]
}

#[test]
fn first_configuration_serves_every_shard_at_once() {
    let mut state = ShardKvState::new(1);
    assert_eq!(state.apply(&put(1, 1, K8, "a")), ApplyResult::WrongGroup);
    assert_eq!(
        state.apply(&GroupCommand::Config(config(1, &all(1)))),
        ApplyResult::Internal(true)
    );
    assert_eq!(
        state.apply(&put(1, 1, K8, "a")),
        ApplyResult::Client(OpResult::Done)
    );
    assert_eq!(
        state.apply(&put(1, 1, K8, "a")),
        ApplyResult::Client(OpResult::Done)
    );
    assert_eq!(
        state.apply(&get(K8)),
        ApplyResult::Client(OpResult::Value("a".into()))
    );
}

#[test]
fn configurations_apply_in_order_only() {
    let mut state = ShardKvState::new(1);
    assert_eq!(
        state.apply(&GroupCommand::Config(config(2, &all(1)))),
        ApplyResult::Internal(false)
    );
    assert_eq!(
        state.apply(&GroupCommand::Config(config(1, &all(1)))),
        ApplyResult::Internal(true)
    );
    assert_eq!(
        state.apply(&GroupCommand::Config(config(1, &all(1)))),
        ApplyResult::Internal(false)
    );
    assert_eq!(state.config().num, 1);
}

/// A shard moving from group 1 to group 2: 1 freezes it, 2 refuses it until
/// installed, then serves it (with the dedup table), 1 deletes it on
/// request, 2 settles on confirmation; unaffected shards serve throughout.
#[test]
fn a_shard_moves_with_its_sessions_and_is_collected() {
    let mut one = ShardKvState::new(1);
    let mut two = ShardKvState::new(2);
    let c1 = config(1, &all(1));
    let mut moved = all(1);
    moved[8] = 2;
    let c2 = config(2, &moved);
    for state in [&mut one, &mut two] {
        state.apply(&GroupCommand::Config(c1.clone()));
    }
    one.apply(&put(7, 1, K8, "x"));
    for state in [&mut one, &mut two] {
        assert_eq!(
            state.apply(&GroupCommand::Config(c2.clone())),
            ApplyResult::Internal(true)
        );
    }
    assert_eq!(one.status(8), Some(ShardStatus::HandingOver));
    assert_eq!(one.apply(&put(7, 2, K8, "y")), ApplyResult::WrongGroup);
    assert_eq!(
        one.apply(&put(7, 2, K0, "z")),
        ApplyResult::Client(OpResult::Done)
    );
    assert_eq!(two.status(8), Some(ShardStatus::Receiving));
    assert_eq!(two.apply(&get(K8)), ApplyResult::WrongGroup);
    // One more configuration must wait until both are settled.
    assert_eq!(
        one.apply(&GroupCommand::Config(config(3, &moved))),
        ApplyResult::Internal(false)
    );

    let data = one.handed_over(2, 8).cloned().expect("frozen copy");
    assert!(one.handed_over(1, 8).is_none());
    let insert = GroupCommand::InsertShard {
        config_num: 2,
        shard: 8,
        data,
    };
    assert_eq!(two.apply(&insert), ApplyResult::Internal(true));
    assert_eq!(two.apply(&insert), ApplyResult::Internal(false));
    assert_eq!(two.status(8), Some(ShardStatus::Confirming));
    assert_eq!(
        two.apply(&get(K8)),
        ApplyResult::Client(OpResult::Value("x".into()))
    );
    // The retry of client 7's seq 1 reaches the new owner: not applied twice.
    assert_eq!(
        two.apply(&put(7, 1, K8, "x")),
        ApplyResult::Client(OpResult::Done)
    );
    assert_eq!(two.read(K8), Some("x"));

    let delete = GroupCommand::DeleteShard {
        config_num: 2,
        shard: 8,
    };
    assert_eq!(one.apply(&delete), ApplyResult::Internal(true));
    assert_eq!(one.status(8), None);
    assert_eq!(one.apply(&delete), ApplyResult::Internal(false));
    let confirm = GroupCommand::ConfirmDeleted {
        config_num: 2,
        shard: 8,
    };
    assert_eq!(two.apply(&confirm), ApplyResult::Internal(true));
    assert!(one.settled() && two.settled());
    assert_eq!(two.held_shards(), vec![8]);
}

#[test]
fn mutation_keeps_serving_a_handed_over_shard() {
    let mut one = ShardKvState::new(1);
    one.set_keep_serving_handed_over_shards(true);
    one.apply(&GroupCommand::Config(config(1, &all(1))));
    one.apply(&GroupCommand::Config(config(2, &all(2))));
    assert_eq!(
        one.apply(&put(1, 1, K8, "lost")),
        ApplyResult::Client(OpResult::Done)
    );
}

#[test]
fn snapshot_round_trips_and_refuses_another_gid() {
    let mut one = ShardKvState::new(1);
    one.apply_entry(1, &GroupCommand::Config(config(1, &all(1))).encode());
    one.apply_entry(2, &put(3, 1, K0, "v").encode());
    let mut copy = ShardKvState::new(1);
    copy.restore(&one.snapshot()).unwrap();
    assert_eq!(copy, one);
    assert_eq!(copy.snapshot(), one.snapshot());
    assert!(ShardKvState::new(2).restore(&one.snapshot()).is_err());
    assert!(copy.restore(b"junk").is_err());
    assert_eq!(copy.apply_entry(3, b"\xff"), None);
    assert_eq!(copy.applied_index(), 3);
}

#[test]
fn cas_is_not_offered() {
    let mut one = ShardKvState::new(1);
    one.apply(&GroupCommand::Config(config(1, &all(1))));
    let cas = GroupCommand::Client {
        client_id: 1,
        seq: 1,
        op: Op::Cas {
            key: K0.into(),
            expected: String::new(),
            new: "x".into(),
        },
    };
    assert_eq!(one.apply(&cas), ApplyResult::Unsupported);
}

#[test]
fn a_deployment_with_another_shard_count_maps_keys_by_it() {
    let mut state = ShardKvState::new(1);
    let four = Config {
        num: 1,
        shards: vec![1, 1, 2, 2],
        groups: [(1, vec!["g1".to_string()]), (2, vec!["g2".to_string()])]
            .into_iter()
            .collect(),
    };
    assert!(state.apply_config(&four));
    // 'a' is 97: shard 1 of 4 (group 1), shard 7 of 10.
    assert!(state.can_serve(state.config().shard_of("a")));
    // 'b' is 98: shard 2 of 4, group 2's.
    assert!(!state.can_serve(state.config().shard_of("b")));
    // The count cannot change after configuration 1.
    let mut ten = four.clone();
    ten.num = 2;
    ten.shards = vec![1; NSHARDS];
    assert!(!state.apply_config(&ten));
}
