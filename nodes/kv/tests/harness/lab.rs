//! The 6.824 Lab 3 GenericTest, in virtual time: clients issuing appends and
//! gets, optional unreliable network, random partitions and whole-cluster
//! crashes, iterations ending with the lab's checks, and a linearizability
//! check of the recorded history at the end.

use std::collections::BTreeMap;
use std::time::Duration;

use checker::Verdict;
use kv::server::ServerConfig;
use kv::{Op, OpResult, Outcome};

use super::{AutoWorkload, Harness, Micros, NetConfig, World, MS, SECOND};

/// The lab's election timeout, used for the settle pauses.
pub const ELECTION_TIMEOUT_US: Micros = SECOND;

/// Runs `scenario` per seed, printing `SEED=n` first; fails at the first
/// failing seed with the replay command.
pub fn sweep<R: std::fmt::Debug>(
    name: &str,
    default_count: u64,
    scenario: impl Fn(u64) -> Result<R, String>,
) {
    // SEED=n replays one; SIM_SEEDS / SIM_SEED_BASE as in the simulator's sweeps.
    for seed in sim::seeds(default_count) {
        println!("SEED={seed}");
        match scenario(seed) {
            Ok(report) => println!("{name} SEED={seed}: {report:?}"),
            Err(error) => panic!(
                "{name} failed with SEED={seed}: {error}\nreplay: SEED={seed} cargo test -p kv --test lab3 -- {name} --exact --nocapture"
            ),
        }
    }
}

/// Virtual seconds per load phase: the lab's 5 s with `KV_LAB_FULL=1`,
/// shorter by default so `cargo test` stays quick.
pub fn iteration_us() -> Micros {
    if std::env::var("KV_LAB_FULL").is_ok_and(|v| v == "1") {
        5 * SECOND
    } else {
        2 * SECOND
    }
}

#[derive(Clone, Debug)]
pub struct LabParams {
    pub servers: usize,
    pub clients: usize,
    pub unreliable: bool,
    pub crash: bool,
    pub partitions: bool,
    pub max_raft_state_bytes: Option<usize>,
    pub random_keys: bool,
    pub append_percent: u32,
    pub put_percent: u32,
    pub iterations: usize,
    pub iteration_us: Micros,
    pub server_config: ServerConfig,
    /// Clerks give up after this long and report the outcome unknown (info);
    /// `None`: they retry until answered, as the lab's clerks do.
    pub clerk_op_timeout: Option<Duration>,
}

impl LabParams {
    pub fn new(servers: usize, clients: usize) -> Self {
        Self {
            servers,
            clients,
            unreliable: false,
            crash: false,
            partitions: false,
            max_raft_state_bytes: None,
            random_keys: false,
            append_percent: 50,
            put_percent: 0,
            iterations: 3,
            iteration_us: iteration_us(),
            server_config: ServerConfig::default(),
            clerk_op_timeout: None,
        }
    }
}

/// What a run measured.
#[derive(Clone, Debug)]
pub struct LabReport {
    pub ops_ok: usize,
    pub ops_info: usize,
    pub virtual_ms: u64,
    pub raft_messages: u64,
    pub max_raft_state_bytes: usize,
    pub max_snapshot_bytes: usize,
    pub checker_ms: u128,
}

/// Runs the GenericTest with `params` under `seed`.
pub fn generic(name: &str, seed: u64, params: &LabParams) -> Result<LabReport, String> {
    let config = ServerConfig {
        max_raft_state_bytes: params.max_raft_state_bytes,
        ..params.server_config.clone()
    };
    let mut world = World::new(seed, params.servers, config);
    if params.clerk_op_timeout.is_some() {
        world.set_clerk_config(kv::ClerkConfig {
            op_timeout: params.clerk_op_timeout,
            ..world.clerk_config().clone()
        });
    }
    if params.unreliable {
        world.set_net(NetConfig::unreliable());
    }
    let all = world.node_ids();
    for _ in 0..params.clients {
        world.add_client(all.clone());
    }
    let clerk_config = world.clerk_config().clone();
    world.set_clerk_config(kv::ClerkConfig {
        op_timeout: None,
        ..clerk_config.clone()
    });
    let checker_client = world.add_client(all.clone());
    world.set_clerk_config(clerk_config);
    let workload = AutoWorkload {
        random_keys: params.random_keys,
        key_count: params.clients,
        append_percent: params.append_percent,
        put_percent: params.put_percent,
        max_ops: None,
    };
    let mut max_raft_state_bytes = 0;
    for iteration in 0..params.iterations {
        for client in 0..params.clients {
            world.start_auto(client, workload.clone());
        }
        let end = world.now_us() + params.iteration_us;
        if params.partitions {
            // One clean second, then a new random partition every 1.0-1.2 s.
            world.run_until(world.now_us() + SECOND.min(params.iteration_us), |_| false);
            while world.now_us() < end {
                let halves = world.random_halves();
                world.partition(&halves);
                let next = world.now_us() + SECOND + world.random_below(200 * MS);
                world.run_until(next.min(end), |_| false);
            }
        } else {
            world.run_until(end, |_| false);
        }
        world.stop_auto();
        if params.partitions {
            world.heal();
            world.run_for(ELECTION_TIMEOUT_US);
        }
        if params.crash {
            for id in world.node_ids() {
                world.crash(id);
            }
            world.run_for(ELECTION_TIMEOUT_US);
            for id in world.node_ids() {
                world.restart(id);
            }
        }
        let deadline = world.now_us() + 30 * SECOND;
        if !world.run_until(deadline, |w| w.all_clients_idle()) {
            return Err(format!(
                "iteration {iteration}: clients still busy 30 s after the load phase"
            ));
        }
        // Final values, read through a clerk (and recorded in the history).
        let keys: Vec<String> = (0..params.clients).map(|c| c.to_string()).collect();
        let mut final_values = BTreeMap::new();
        for key in keys {
            match world.op(checker_client, Op::Get { key: key.clone() }, 30 * SECOND) {
                Some(Outcome::Ok(OpResult::Value(value))) => {
                    final_values.insert(key, value);
                }
                other => {
                    return Err(format!(
                        "iteration {iteration}: final get({key}): {other:?}"
                    ))
                }
            }
        }
        if let Some(error) = world.errors.first() {
            return Err(format!("iteration {iteration}: {error}"));
        }
        if params.put_percent == 0 {
            world
                .history
                .check_appends(&final_values)
                .map_err(|e| format!("iteration {iteration}: {e}"))?;
        }
        for node in world.nodes() {
            let size = node.persisted.raft_state_bytes();
            max_raft_state_bytes = max_raft_state_bytes.max(node.max_raft_state_bytes_seen);
            if let Some(max) = params.max_raft_state_bytes {
                if size > 2 * max {
                    return Err(format!(
                        "iteration {iteration}: node {} raft state {size} bytes > 2 * maxraftstate {max}",
                        node.id
                    ));
                }
            } else if node.persisted.snapshot.is_some() {
                return Err(format!(
                    "node {} took a snapshot without maxraftstate",
                    node.id
                ));
            }
        }
    }
    world.history.save_if_asked("KV_HISTORY_DIR", name, seed);
    let started = std::time::Instant::now();
    let verdict = world.history.check(Duration::from_secs(60))?;
    let checker_ms = started.elapsed().as_millis();
    match verdict {
        Verdict::Linearizable => {}
        other => {
            let path = std::env::temp_dir().join(format!("kv-lab3-seed{seed}.jsonl"));
            let _ = std::fs::write(&path, world.history.to_jsonl());
            return Err(format!(
                "history is {other:?}; written to {}",
                path.display()
            ));
        }
    }
    let ops_info = world
        .history
        .events
        .iter()
        .filter(|e| e.kind == sim::history::EventType::Info)
        .count();
    Ok(LabReport {
        ops_ok: world.history.ok_count(),
        ops_info,
        virtual_ms: world.now_us() / 1_000,
        raft_messages: world.stats().raft_messages,
        max_raft_state_bytes,
        max_snapshot_bytes: world
            .nodes()
            .map(|n| n.persisted.snapshot_bytes())
            .max()
            .unwrap_or(0),
        checker_ms,
    })
}
