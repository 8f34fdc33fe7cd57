//! The 6.824 Lab 3 (kvraft, 2020, plus the 2021 speed tests) suite in the
//! KV harness's virtual time. Every test is swept over seeds and checks the
//! recorded history with the checker crate's `kv` model, besides the lab's
//! own checks (appends present exactly once and in order, gets equal to the
//! locally predicted value, Raft state <= 2 * maxraftstate).
//!
//! `SEED=n` replays one seed, `SIM_SEEDS=n` sweeps more (from
//! `SIM_SEED_BASE`), `KV_LAB_FULL=1` uses the lab's full 5 s load phases.

mod harness;

use checker::Verdict;
use harness::lab::{generic, sweep, LabParams};
use harness::{Harness, World, HEARTBEAT_US, SECOND};
use kv::server::{ReadMode, ServerConfig};
use kv::{Op, OpResult, Outcome};

const MAXRAFTSTATE: usize = 1000;

fn put(key: &str, value: &str) -> Op {
    Op::Put {
        key: key.into(),
        value: value.into(),
    }
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

/// Runs `op` and requires it to complete ok within 10 s; returns a get's value.
fn ok(world: &mut World, client: usize, op: Op) -> Result<String, String> {
    let described = format!("{op:?}");
    match world.op(client, op, 10 * SECOND) {
        Some(Outcome::Ok(OpResult::Value(value))) => Ok(value),
        Some(Outcome::Ok(_)) => Ok(String::new()),
        other => Err(format!("{described} at {} us: {other:?}", world.now_us())),
    }
}

fn expect_get(world: &mut World, client: usize, key: &str, expected: &str) -> Result<(), String> {
    let value = ok(world, client, get(key))?;
    if value != expected {
        return Err(format!("get({key}) = {value:?}, expected {expected:?}"));
    }
    Ok(())
}

fn linearizable(world: &World) -> Result<(), String> {
    match world.history.check(std::time::Duration::from_secs(60))? {
        Verdict::Linearizable => Ok(()),
        other => Err(format!(
            "history is {other:?}:\n{}",
            world.history.to_jsonl()
        )),
    }
}

fn params(servers: usize, clients: usize) -> LabParams {
    LabParams::new(servers, clients)
}

// ---- 3A --------------------------------------------------------------------

#[test]
fn basic_3a() {
    sweep("basic_3a", 2, |seed| {
        generic("basic_3a", seed, &params(5, 1))
    });
}

#[test]
fn concurrent_3a() {
    sweep("concurrent_3a", 1, |seed| {
        generic("concurrent_3a", seed, &params(5, 5))
    });
}

#[test]
fn unreliable_3a() {
    sweep("unreliable_3a", 10, |seed| {
        generic(
            "unreliable_3a",
            seed,
            &LabParams {
                unreliable: true,
                ..params(5, 5)
            },
        )
    });
}

/// 3 servers, unreliable, 5 clients append 10 values each to one key: all
/// present, each client's in its order, none twice.
#[test]
fn unreliable_one_key_3a() {
    sweep("unreliable_one_key_3a", 3, |seed| {
        let mut world = World::new(seed, 3, ServerConfig::default());
        world.set_net(harness::NetConfig::unreliable());
        let all = world.node_ids();
        let clients: Vec<usize> = (0..5).map(|_| world.add_client(all.clone())).collect();
        for &client in &clients {
            world.start_auto(
                client,
                harness::AutoWorkload {
                    random_keys: true,
                    key_count: 1,
                    append_percent: 100,
                    put_percent: 0,
                    max_ops: Some(10),
                },
            );
        }
        let deadline = world.now_us() + 60 * SECOND;
        let done = world.run_until(deadline, |w| {
            clients
                .iter()
                .all(|&c| w.clients[c].ops_done == 10 && w.client_idle(c))
        });
        if !done {
            return Err("appends did not finish within 60 s".into());
        }
        let reader = world.add_client(all);
        let value = ok(&mut world, reader, get("0"))?;
        let finals = [("0".to_string(), value.clone())].into_iter().collect();
        world.history.check_appends(&finals)?;
        let count = value.matches('x').count();
        if count != 50 {
            return Err(format!("{count} appends in {value:?}, expected 50"));
        }
        world
            .history
            .save_if_asked("KV_HISTORY_DIR", "unreliable_one_key_3a", seed);
        // Appends to one key with a single final read are the checker's worst
        // case (every order of concurrent appends is a distinct state until the
        // final get); the lab's own check above is the verdict here, the
        // checker must not say "not linearizable" within its budget.
        match world.history.check(std::time::Duration::from_secs(2))? {
            Verdict::NotLinearizable => {
                Err(format!("not linearizable:\n{}", world.history.to_jsonl()))
            }
            verdict => Ok(format!(
                "{} ms virtual, checker: {verdict:?}",
                world.now_us() / 1_000
            )),
        }
    });
}

/// 5 servers; the leader and two others form the majority. Minority clients'
/// put and get do not complete while partitioned; the put completes within 3 s
/// after the heal; the majority makes progress meanwhile.
#[test]
fn one_partition_3a() {
    sweep("one_partition_3a", 10, |seed| {
        let mut world = World::new(seed, 5, ServerConfig::default());
        let all = world.node_ids();
        let ck = world.add_client(all.clone());
        ok(&mut world, ck, put("1", "13"))?;
        let leader = world.leader().ok_or("no leader after the first put")?;
        let others: Vec<_> = all.iter().copied().filter(|&n| n != leader).collect();
        let p1 = vec![leader, others[0], others[1]];
        let p2 = vec![others[2], others[3]];
        world.partition(&[p1.clone(), p2.clone()]);
        let ckp1 = world.add_client_reaching(p1);
        let ckp2a = world.add_client_reaching(p2.clone());
        let ckp2b = world.add_client_reaching(p2);
        ok(&mut world, ckp1, put("1", "14"))?;
        expect_get(&mut world, ckp1, "1", "14")?;
        world.start_op(ckp2a, put("1", "15"));
        world.start_op(ckp2b, get("1"));
        world.run_for(SECOND);
        if world.client_idle(ckp2a) || world.client_idle(ckp2b) {
            return Err("an operation in the minority completed".into());
        }
        expect_get(&mut world, ckp1, "1", "14")?;
        world.heal();
        world.set_client_servers(ckp2a, all.clone());
        world.set_client_servers(ckp2b, all.clone());
        let deadline = world.now_us() + 3 * SECOND;
        if !world.run_until(deadline, |w| w.client_idle(ckp2a)) {
            return Err("the minority put did not complete within 3 s of the heal".into());
        }
        world.run_until(world.now_us() + 3 * SECOND, |w| w.client_idle(ckp2b));
        expect_get(&mut world, ck, "1", "15")?;
        linearizable(&world)?;
        Ok(world.now_us() / 1_000)
    });
}

#[test]
fn many_partitions_one_client_3a() {
    sweep("many_partitions_one_client_3a", 2, |seed| {
        generic(
            "many_partitions_one_client_3a",
            seed,
            &LabParams {
                partitions: true,
                ..params(5, 1)
            },
        )
    });
}

#[test]
fn many_partitions_many_clients_3a() {
    sweep("many_partitions_many_clients_3a", 1, |seed| {
        generic(
            "many_partitions_many_clients_3a",
            seed,
            &LabParams {
                partitions: true,
                ..params(5, 5)
            },
        )
    });
}

#[test]
fn persist_one_client_3a() {
    sweep("persist_one_client_3a", 2, |seed| {
        generic(
            "persist_one_client_3a",
            seed,
            &LabParams {
                crash: true,
                ..params(5, 1)
            },
        )
    });
}

#[test]
fn persist_concurrent_3a() {
    sweep("persist_concurrent_3a", 1, |seed| {
        generic(
            "persist_concurrent_3a",
            seed,
            &LabParams {
                crash: true,
                ..params(5, 5)
            },
        )
    });
}

#[test]
fn persist_concurrent_unreliable_3a() {
    sweep("persist_concurrent_unreliable_3a", 10, |seed| {
        generic(
            "persist_concurrent_unreliable_3a",
            seed,
            &LabParams {
                crash: true,
                unreliable: true,
                ..params(5, 5)
            },
        )
    });
}

#[test]
fn persist_partition_3a() {
    sweep("persist_partition_3a", 1, |seed| {
        generic(
            "persist_partition_3a",
            seed,
            &LabParams {
                crash: true,
                partitions: true,
                ..params(5, 5)
            },
        )
    });
}

#[test]
fn persist_partition_unreliable_3a() {
    sweep("persist_partition_unreliable_3a", 10, |seed| {
        generic(
            "persist_partition_unreliable_3a",
            seed,
            &LabParams {
                crash: true,
                partitions: true,
                unreliable: true,
                ..params(5, 5)
            },
        )
    });
}

fn linearizable_params(max_raft_state_bytes: Option<usize>) -> LabParams {
    LabParams {
        crash: true,
        partitions: true,
        unreliable: true,
        random_keys: true,
        append_percent: 50,
        put_percent: 5,
        max_raft_state_bytes,
        // Give up after 3 s: unknown outcomes (info) in the history, retired processes.
        clerk_op_timeout: Some(std::time::Duration::from_secs(3)),
        ..params(7, 15)
    }
}

#[test]
fn persist_partition_unreliable_linearizable_3a() {
    sweep("persist_partition_unreliable_linearizable_3a", 10, |seed| {
        generic(
            "persist_partition_unreliable_linearizable_3a",
            seed,
            &linearizable_params(None),
        )
    });
}

/// 2021's TestSpeed3A: 1,000 sequential appends by one client against 3
/// servers average under a third of a heartbeat interval (virtual time).
fn speed(seed: u64, max_raft_state_bytes: Option<usize>) -> Result<String, String> {
    let config = ServerConfig {
        max_raft_state_bytes,
        ..ServerConfig::default()
    };
    let mut world = World::new(seed, 3, config);
    let all = world.node_ids();
    let ck = world.add_client(all);
    ok(&mut world, ck, put("x", ""))?;
    let start_us = world.now_us();
    for i in 0..1000 {
        ok(&mut world, ck, append("x", &format!("x 0 {i} y")))?;
    }
    let average_us = (world.now_us() - start_us) / 1000;
    let value = ok(&mut world, ck, get("x"))?;
    if value.matches('x').count() != 1000 {
        return Err("not all appends present".into());
    }
    if average_us * 3 >= HEARTBEAT_US {
        return Err(format!(
            "average {average_us} us per op, bound heartbeat/3 = {} us",
            HEARTBEAT_US / 3
        ));
    }
    if let Some(max) = max_raft_state_bytes {
        for node in world.nodes() {
            let size = node.persisted.raft_state_bytes();
            if node.persisted.snapshot.is_none() || size > 2 * max {
                return Err(format!(
                    "node {}: raft state {size} bytes, snapshot taken: {}",
                    node.id,
                    node.persisted.snapshot.is_some()
                ));
            }
        }
    }
    linearizable(&world)?;
    Ok(format!(
        "average {average_us} us per append (bound {} us)",
        HEARTBEAT_US / 3
    ))
}

#[test]
fn speed_3a() {
    sweep("speed_3a", 2, |seed| speed(seed, None));
}

// ---- 3B --------------------------------------------------------------------

/// 3 servers, maxraftstate 1000: a partitioned-off server falls behind while
/// the others compact their logs, then must catch up by InstallSnapshot.
#[test]
fn snapshot_rpc_3b() {
    sweep("snapshot_rpc_3b", 10, |seed| {
        let config = ServerConfig {
            max_raft_state_bytes: Some(MAXRAFTSTATE),
            ..ServerConfig::default()
        };
        let mut world = World::new(seed, 3, config);
        let all = world.node_ids();
        let ck = world.add_client(all.clone());
        ok(&mut world, ck, put("a", "A"))?;
        world.partition(&[vec![1, 2], vec![3]]);
        let ck1 = world.add_client_reaching(vec![1, 2]);
        for i in 0..50 {
            ok(&mut world, ck1, put(&i.to_string(), &i.to_string()))?;
        }
        world.run_for(SECOND);
        for id in [1, 2] {
            let size = world.node(id).persisted.raft_state_bytes();
            if size > 2 * MAXRAFTSTATE {
                return Err(format!(
                    "node {id} raft state {size} > {}",
                    2 * MAXRAFTSTATE
                ));
            }
        }
        // Now 3 must be brought up to date by a snapshot: 1 and 2 dropped the entries.
        world.partition(&[vec![1, 3], vec![2]]);
        let ck2 = world.add_client_reaching(vec![1, 3]);
        ok(&mut world, ck2, put("c", "C"))?;
        ok(&mut world, ck2, put("d", "D"))?;
        expect_get(&mut world, ck2, "a", "A")?;
        expect_get(&mut world, ck2, "1", "1")?;
        expect_get(&mut world, ck2, "49", "49")?;
        if world.node(3).snapshots_installed == 0 {
            return Err("node 3 caught up without installing a snapshot".into());
        }
        world.heal();
        let ck3 = world.add_client(all);
        ok(&mut world, ck3, put("e", "E"))?;
        expect_get(&mut world, ck3, "c", "C")?;
        expect_get(&mut world, ck3, "e", "E")?;
        expect_get(&mut world, ck3, "1", "1")?;
        linearizable(&world)?;
        Ok(world.node(3).snapshots_installed)
    });
}

/// 200 x (put 0, get, put 1, get) on one key: Raft state stays within
/// 2 * maxraftstate and the snapshot within 500 bytes.
#[test]
fn snapshot_size_3b() {
    sweep("snapshot_size_3b", 2, |seed| {
        let config = ServerConfig {
            max_raft_state_bytes: Some(MAXRAFTSTATE),
            ..ServerConfig::default()
        };
        let mut world = World::new(seed, 3, config);
        let all = world.node_ids();
        let ck = world.add_client(all);
        for _ in 0..200 {
            ok(&mut world, ck, put("x", "0"))?;
            expect_get(&mut world, ck, "x", "0")?;
            ok(&mut world, ck, put("x", "1"))?;
            expect_get(&mut world, ck, "x", "1")?;
        }
        let mut sizes = Vec::new();
        for node in world.nodes() {
            let raft_bytes = node.persisted.raft_state_bytes();
            let snapshot_bytes = node.persisted.snapshot_bytes();
            if raft_bytes > 2 * MAXRAFTSTATE {
                return Err(format!("node {} raft state {raft_bytes} bytes", node.id));
            }
            if snapshot_bytes > 500 {
                return Err(format!(
                    "node {} snapshot {snapshot_bytes} bytes > 500",
                    node.id
                ));
            }
            if node.persisted.snapshot.is_none() {
                return Err(format!("node {} never snapshotted", node.id));
            }
            sizes.push((raft_bytes, snapshot_bytes));
        }
        linearizable(&world)?;
        Ok(format!(
            "(raft state bytes, snapshot bytes) per node: {sizes:?}"
        ))
    });
}

#[test]
fn speed_3b() {
    sweep("speed_3b", 2, |seed| speed(seed, Some(MAXRAFTSTATE)));
}

fn snapshot_params(servers: usize, clients: usize) -> LabParams {
    LabParams {
        max_raft_state_bytes: Some(MAXRAFTSTATE),
        ..params(servers, clients)
    }
}

#[test]
fn snapshot_recover_3b() {
    sweep("snapshot_recover_3b", 2, |seed| {
        generic(
            "snapshot_recover_3b",
            seed,
            &LabParams {
                crash: true,
                ..snapshot_params(5, 1)
            },
        )
    });
}

#[test]
fn snapshot_recover_many_clients_3b() {
    sweep("snapshot_recover_many_clients_3b", 1, |seed| {
        generic(
            "snapshot_recover_many_clients_3b",
            seed,
            &LabParams {
                crash: true,
                ..snapshot_params(5, 20)
            },
        )
    });
}

#[test]
fn snapshot_unreliable_3b() {
    sweep("snapshot_unreliable_3b", 10, |seed| {
        generic(
            "snapshot_unreliable_3b",
            seed,
            &LabParams {
                unreliable: true,
                ..snapshot_params(5, 5)
            },
        )
    });
}

#[test]
fn snapshot_unreliable_recover_3b() {
    sweep("snapshot_unreliable_recover_3b", 10, |seed| {
        generic(
            "snapshot_unreliable_recover_3b",
            seed,
            &LabParams {
                unreliable: true,
                crash: true,
                ..snapshot_params(5, 5)
            },
        )
    });
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition_3b() {
    sweep(
        "snapshot_unreliable_recover_concurrent_partition_3b",
        10,
        |seed| {
            generic(
                "snapshot_unreliable_recover_concurrent_partition_3b",
                seed,
                &LabParams {
                    unreliable: true,
                    crash: true,
                    partitions: true,
                    ..snapshot_params(5, 5)
                },
            )
        },
    );
}

#[test]
fn snapshot_unreliable_recover_concurrent_partition_linearizable_3b() {
    sweep(
        "snapshot_unreliable_recover_concurrent_partition_linearizable_3b",
        10,
        |seed| {
            generic(
                "snapshot_unreliable_recover_concurrent_partition_linearizable_3b",
                seed,
                &linearizable_params(Some(MAXRAFTSTATE)),
            )
        },
    );
}

// ---- read modes and the unsafe stale-read mode -------------------------------

#[test]
fn read_through_log_under_all_faults() {
    sweep("read_through_log_under_all_faults", 10, |seed| {
        let config = ServerConfig {
            read_mode: ReadMode::Log,
            ..ServerConfig::default()
        };
        generic(
            "read_through_log_under_all_faults",
            seed,
            &LabParams {
                server_config: config,
                unreliable: true,
                crash: true,
                partitions: true,
                ..params(5, 5)
            },
        )
    });
}

#[test]
fn lease_reads_under_all_faults() {
    sweep("lease_reads_under_all_faults", 10, |seed| {
        let config = ServerConfig {
            read_mode: ReadMode::Lease,
            ..ServerConfig::default()
        };
        generic(
            "lease_reads_under_all_faults",
            seed,
            &LabParams {
                server_config: config,
                unreliable: true,
                crash: true,
                partitions: true,
                ..params(5, 5)
            },
        )
    });
}

/// Writes "1", cuts `victim` off, writes "2" through the majority, then a
/// client that reaches only `victim` reads. Returns the world and whether
/// that read completed while the partition lasted.
fn stale_read_scenario(
    seed: u64,
    config: ServerConfig,
    victim_is_leader: bool,
) -> Result<(World, bool), String> {
    let mut world = World::new(seed, 5, config);
    let all = world.node_ids();
    let ck = world.add_client(all.clone());
    ok(&mut world, ck, put("k", "1"))?;
    // Let every replica learn the commit of "1".
    world.run_for(5 * HEARTBEAT_US);
    let leader = world.leader().ok_or("no leader")?;
    let victim = if victim_is_leader {
        leader
    } else {
        all.iter()
            .copied()
            .find(|&n| n != leader)
            .ok_or("no follower")?
    };
    let rest: Vec<_> = all.iter().copied().filter(|&n| n != victim).collect();
    world.partition(&[vec![victim], rest.clone()]);
    let majority = world.add_client_reaching(rest);
    ok(&mut world, majority, put("k", "2"))?;
    let stale = world.add_client_reaching(vec![victim]);
    world.start_op(stale, get("k"));
    world.run_for(3 * SECOND);
    let completed = world.client_idle(stale);
    world.heal();
    world.set_client_servers(stale, all);
    world.run_until(world.now_us() + 10 * SECOND, |w| w.client_idle(stale));
    Ok((world, completed))
}

/// The checker catches the unsafe mode: a cut-off replica answers "1" after
/// "2" was acknowledged, and the history is not linearizable.
#[test]
fn unsafe_stale_reads_are_caught_by_the_checker() {
    sweep("unsafe_stale_reads_are_caught_by_the_checker", 10, |seed| {
        let config = ServerConfig {
            unsafe_stale_reads: true,
            ..ServerConfig::default()
        };
        for victim_is_leader in [false, true] {
            let (world, completed) = stale_read_scenario(seed, config.clone(), victim_is_leader)?;
            if !completed {
                return Err("the unsafe replica did not answer at once".into());
            }
            let verdict = world.history.check(std::time::Duration::from_secs(60))?;
            if verdict != Verdict::NotLinearizable {
                return Err(format!(
                    "checker said {verdict:?} for a stale read:\n{}",
                    world.history.to_jsonl()
                ));
            }
        }
        Ok("caught")
    });
}

/// The same scenario in the safe read modes: the cut-off replica (follower or
/// old leader) never answers while cut off, and the history is linearizable.
#[test]
fn safe_read_modes_never_serve_stale_reads() {
    sweep("safe_read_modes_never_serve_stale_reads", 10, |seed| {
        for read_mode in [ReadMode::ReadIndex, ReadMode::Lease, ReadMode::Log] {
            for victim_is_leader in [false, true] {
                let config = ServerConfig {
                    read_mode,
                    ..ServerConfig::default()
                };
                let (world, completed) = stale_read_scenario(seed, config, victim_is_leader)?;
                if completed {
                    let last = world.clients.last().and_then(|c| c.last_outcome.clone());
                    return Err(format!(
                        "{read_mode:?}, victim leader {victim_is_leader}: cut-off read completed: {last:?}"
                    ));
                }
                linearizable(&world)
                    .map_err(|e| format!("{read_mode:?}, victim leader {victim_is_leader}: {e}"))?;
            }
        }
        Ok("no stale reads")
    });
}
