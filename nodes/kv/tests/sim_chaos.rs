//! The KV state machine inside the simulator (`sim::StateMachine`), under
//! the simulator's chaos nemesis: lossy duplicating network, crashes (some
//! before a Ready is persisted), partitions, snapshots every 20 entries and
//! InstallSnapshot in 8-byte chunks. Clients re-propose commands (retries
//! with the same sequence number, and stale old ones) so the deduplication
//! table is exercised across snapshots and restarts. The simulator checks
//! Raft safety after every Ready; this test adds: every write applied at most
//! once and in each client's order, and replicas at the same index hold
//! byte-identical snapshots (determinism).

use std::time::Duration;

use kv::{Command, KvStateMachine, Op, OpResult};
use sim::faults::{next_faults, NemesisConfig};
use sim::{lab, NetConfig, Sim, SimConfig, SimError, StateMachine};

/// The adapter the simulator hosts: apply/snapshot/restore of [`KvStateMachine`].
#[derive(Clone, Debug, Default)]
struct KvMachine(KvStateMachine);

impl StateMachine for KvMachine {
    /// The reply, or `None` for a stale duplicate or undecodable entry.
    type Output = Option<OpResult>;

    fn apply(&mut self, index: u64, command: &[u8]) -> Option<OpResult> {
        self.0
            .apply_at(index, command)
            .and_then(|(_, outcome)| outcome.reply().cloned())
    }

    fn snapshot(&self) -> Vec<u8> {
        self.0.snapshot()
    }

    fn restore(&mut self, snapshot: &[u8]) {
        if let Err(error) = self.0.restore_embedded(snapshot) {
            panic!("a snapshot this machine wrote does not restore: {error}");
        }
    }
}

const CLIENTS: u64 = 3;

fn sim_error(sim: &Sim<KvMachine>, message: String) -> SimError {
    SimError::Claim {
        at_us: sim.now_us(),
        message,
    }
}

fn chaos(seed: u64) -> Result<(), SimError> {
    let mut config = SimConfig::new(5, seed);
    config.net = NetConfig::unreliable().with_duplication(0.05);
    config.snapshot_every_entries = Some(20);
    config.raft.snapshot_chunk_bytes = 8;
    let mut sim = Sim::new(config, |_| KvMachine::default())?;
    let nemesis = NemesisConfig::chaos(5);
    let ids = sim.ids().to_vec();
    let mut next_fault_us = 0;
    // Per client: the commands issued so far (index = seq - 1).
    let mut issued: Vec<Vec<Command>> = vec![Vec::new(); CLIENTS as usize];
    while sim.now() < Duration::from_secs(20) {
        if sim.now_us() >= next_fault_us {
            let crashed = sim.crashed();
            for fault in next_faults(sim.rng(), &nemesis, &ids, &crashed) {
                sim.apply_fault(&fault)?;
            }
            next_fault_us = sim.now_us()
                + sim
                    .rng()
                    .between(nemesis.interval_us_min, nemesis.interval_us_max);
        }
        if let Some(leader) = lab::current_leader(&sim) {
            let client = sim.rng().below(CLIENTS);
            let commands = &mut issued[client as usize];
            let dice = sim.rng().below(10);
            let command = if dice < 3 && !commands.is_empty() {
                // A retry of the latest request, or (rarely) a stale older one.
                let at = if dice == 0 {
                    sim.rng().below(commands.len() as u64) as usize
                } else {
                    commands.len() - 1
                };
                commands[at].clone()
            } else {
                let seq = commands.len() as u64 + 1;
                let command = Command {
                    client_id: client + 1,
                    seq,
                    op: Op::Append {
                        key: client.to_string(),
                        value: format!("{seq};"),
                    },
                };
                commands.push(command.clone());
                command
            };
            let _ = sim.propose(leader, command.encode());
        }
        sim.run_for(Duration::from_millis(20))?;
    }
    sim.heal();
    sim.set_network(NetConfig::reliable());
    for &n in &ids {
        sim.restart(n)?;
    }
    let last = Command {
        client_id: 99,
        seq: 1,
        op: Op::Put {
            key: "done".into(),
            value: "1".into(),
        },
    };
    let index = lab::one(&mut sim, &last.encode(), 5, true)?;
    sim.run_until(Duration::from_secs(5), |s| {
        ids.iter().all(|&n| s.applied_index(n) >= index)
    })?;
    let machines: Vec<&KvMachine> = ids.iter().filter_map(|&n| sim.machine(n)).collect();
    if machines.len() != ids.len() {
        return Err(sim_error(&sim, "not every node is up at the end".into()));
    }
    let reference = machines[0];
    for (n, machine) in ids.iter().zip(&machines) {
        if machine.0.applied_index() == reference.0.applied_index()
            && machine.snapshot() != reference.snapshot()
        {
            return Err(sim_error(
                &sim,
                format!("node {n} diverged at the same applied index"),
            ));
        }
    }
    let mut applied_total = 0;
    for client in 0..CLIENTS {
        let value = reference.0.read(&client.to_string());
        let seqs: Vec<u64> = value
            .split(';')
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        if seqs.windows(2).any(|w| w[0] >= w[1]) {
            return Err(sim_error(
                &sim,
                format!("client {client}: writes applied twice or out of order: {value}"),
            ));
        }
        applied_total += seqs.len();
    }
    if applied_total == 0 {
        return Err(sim_error(
            &sim,
            "no client write committed in 20 s of chaos".into(),
        ));
    }
    println!(
        "applied {applied_total} writes; applied index {}",
        reference.0.applied_index()
    );
    Ok(())
}

#[test]
fn kv_state_machine_under_sim_chaos_applies_each_write_once_and_stays_deterministic() {
    sim::sweep("kv_state_machine_under_sim_chaos", 3, chaos);
}
