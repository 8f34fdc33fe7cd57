//! Lab 2C equivalents: persistence across crashes, Figure 8, unreliable
//! networks and churn. `start1` in the lab (crash, then start from what was
//! persisted) is `restart_from_disk` here.

use sim::lab::{self, command, ELECTION_TIMEOUT};
use sim::{claim, sweep, LogMachine, NetConfig, Sim, SimConfig, SimError};
use std::time::Duration;

type LogSim = Sim<LogMachine>;

fn cluster(nodes: usize, seed: u64) -> Result<LogSim, SimError> {
    Sim::with_log(SimConfig::new(nodes, seed))
}

/// The lab's `start1(i)`: kill the server if it runs and start it again from
/// its persisted state.
fn restart_from_disk(sim: &mut LogSim, node: u64) -> Result<(), SimError> {
    sim.crash(node);
    sim.restart(node)
}

fn peer(base: u64, offset: u64, nodes: u64) -> u64 {
    (base - 1 + offset) % nodes + 1
}

/// TestPersist12C: state survives crashing and restarting all nodes, the
/// leader, and a follower.
fn persist1(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(3, seed)?;
    lab::one(&mut sim, &command(11), 3, true)?;
    for n in 1..=3 {
        restart_from_disk(&mut sim, n)?;
    }
    lab::one(&mut sim, &command(12), 3, true)?;
    let leader1 = lab::check_one_leader(&mut sim)?;
    restart_from_disk(&mut sim, leader1)?;
    lab::one(&mut sim, &command(13), 3, true)?;
    let leader2 = lab::check_one_leader(&mut sim)?;
    sim.crash(leader2);
    let index = lab::one(&mut sim, &command(14), 2, true)?;
    sim.restart(leader2)?;
    lab::wait(&mut sim, index, 3, u64::MAX)?;
    let i3 = peer(lab::check_one_leader(&mut sim)?, 1, 3);
    sim.crash(i3);
    lab::one(&mut sim, &command(15), 2, true)?;
    sim.restart(i3)?;
    lab::one(&mut sim, &command(16), 3, true)?;
    Ok(())
}

#[test]
fn persist1_state_survives_crashes_of_all_leader_and_follower() {
    sweep(
        "persist1_state_survives_crashes_of_all_leader_and_follower",
        50,
        persist1,
    );
}

/// TestPersist22C: five rounds of partitions and restarts where only the
/// restarted nodes plus one that holds the newest entry make a quorum.
fn persist2(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(5, seed)?;
    let mut value = 10;
    for _ in 0..5 {
        lab::one(&mut sim, &command(value), 5, true)?;
        value += 1;
        let leader1 = lab::check_one_leader(&mut sim)?;
        let p = |k| peer(leader1, k, 5);
        sim.disconnect(p(1));
        sim.disconnect(p(2));
        lab::one(&mut sim, &command(value), 3, true)?;
        value += 1;
        sim.disconnect(p(0));
        sim.disconnect(p(3));
        sim.disconnect(p(4));
        restart_from_disk(&mut sim, p(1))?;
        restart_from_disk(&mut sim, p(2))?;
        sim.connect(p(1));
        sim.connect(p(2));
        sim.run_for(ELECTION_TIMEOUT)?;
        restart_from_disk(&mut sim, p(3))?;
        sim.connect(p(3));
        lab::one(&mut sim, &command(value), 3, true)?;
        value += 1;
        sim.connect(p(4));
        sim.connect(p(0));
    }
    lab::one(&mut sim, &command(1000), 5, true)?;
    Ok(())
}

#[test]
fn persist2_quorums_of_restarted_nodes_keep_committed_entries() {
    sweep(
        "persist2_quorums_of_restarted_nodes_keep_committed_entries",
        25,
        persist2,
    );
}

/// TestPersist32C: a partitioned leader and a follower crash; the leader
/// restarts and, with the third node, commits again.
fn persist3(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(3, seed)?;
    lab::one(&mut sim, &command(101), 3, true)?;
    let leader = lab::check_one_leader(&mut sim)?;
    let p = |k| peer(leader, k, 3);
    sim.disconnect(p(2));
    lab::one(&mut sim, &command(102), 2, true)?;
    sim.crash(p(0));
    sim.crash(p(1));
    sim.connect(p(2));
    sim.restart(p(0))?;
    lab::one(&mut sim, &command(103), 2, true)?;
    sim.restart(p(1))?;
    lab::one(&mut sim, &command(104), 3, true)?;
    Ok(())
}

#[test]
fn persist3_restarted_leader_and_rejoined_follower_commit() {
    sweep(
        "persist3_restarted_leader_and_rejoined_follower_commit",
        50,
        persist3,
    );
}

/// Figure 8 iterations per seed (the lab runs 1000; `SIM_FIGURE8_ITERATIONS`
/// overrides for deep runs).
fn figure8_iterations() -> u64 {
    std::env::var("SIM_FIGURE8_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// The Figure 8 loop shared by the reliable and unreliable versions: start
/// a command on every node, wait a short (90%) or long (10%) random time,
/// then crash (or disconnect) the leader; bring a node back whenever fewer
/// than three are up.
fn figure8_loop(sim: &mut LogSim, unreliable: bool, iterations: u64) -> Result<(), SimError> {
    let ids = sim.ids().to_vec();
    let mut up = ids.len();
    for iteration in 0..iterations {
        if unreliable && iteration == 200 {
            let net = sim.network().clone().with_long_reordering();
            sim.set_network(net);
        }
        let mut leader = None;
        for &n in &ids {
            let usable = sim.is_up(n) && (!unreliable || sim.is_connected(n));
            let value = sim.rng().below(10_000);
            if usable && sim.propose(n, command(value)).is_ok() {
                leader = Some(n);
            }
        }
        let pause_ms = if sim.rng().below(1000) < 100 {
            sim.rng().below(ELECTION_TIMEOUT.as_millis() as u64 / 2)
        } else {
            sim.rng().below(13)
        };
        sim.run_for(Duration::from_millis(pause_ms))?;
        if let Some(leader) = leader {
            if unreliable {
                if sim.rng().below(1000) < 500 {
                    sim.disconnect(leader);
                    up -= 1;
                }
            } else {
                sim.crash(leader);
                up -= 1;
            }
        }
        if up < 3 {
            let pick = ids[sim.rng().below(ids.len() as u64) as usize];
            if unreliable {
                if !sim.is_connected(pick) {
                    sim.connect(pick);
                    up += 1;
                }
            } else if !sim.is_up(pick) {
                sim.restart(pick)?;
                sim.connect(pick);
                up += 1;
            }
        }
    }
    for &n in &ids {
        sim.restart(n)?;
        sim.connect(n);
    }
    Ok(())
}

/// TestFigure82C: under rapid leader crashes, entries of old terms are never
/// committed by counting replicas (the invariant checker would fire); at the
/// end all five nodes agree within 10 s.
fn figure8(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(5, seed)?;
    let value = sim.rng().below(10_000);
    lab::one(&mut sim, &command(value), 1, true)?;
    figure8_loop(&mut sim, false, figure8_iterations())?;
    let value = sim.rng().below(10_000);
    lab::one(&mut sim, &command(value), 5, true)?;
    Ok(())
}

#[test]
fn figure8_rapid_leader_crashes_never_break_safety() {
    sweep(
        "figure8_rapid_leader_crashes_never_break_safety",
        10,
        figure8,
    );
}

/// TestUnreliableAgree2C: on the lossy network (0-26 ms, 10% loss), 49
/// rounds of 4 concurrent agreements plus one each commit.
fn unreliable_agree(seed: u64) -> Result<(), SimError> {
    let mut config = SimConfig::new(5, seed);
    config.net = NetConfig::unreliable();
    let mut sim = Sim::with_log(config)?;
    for iteration in 1..50u64 {
        let commands: Vec<Vec<u8>> = (0..4).map(|j| command(100 * iteration + j)).collect();
        lab::many(&mut sim, &commands, 1)?;
        lab::one(&mut sim, &command(iteration), 1, true)?;
    }
    sim.set_network(NetConfig::reliable());
    lab::one(&mut sim, &command(100), 5, true)?;
    Ok(())
}

#[test]
fn unreliable_agree_commits_concurrent_commands_on_a_lossy_network() {
    sweep(
        "unreliable_agree_commits_concurrent_commands_on_a_lossy_network",
        20,
        unreliable_agree,
    );
}

/// TestFigure8Unreliable2C: Figure 8 with the lossy network, leaders
/// disconnected instead of crashed, and long reordering (up to ~2.2 s) from
/// iteration 200; all five agree within 10 s after healing.
fn figure8_unreliable(seed: u64) -> Result<(), SimError> {
    let mut config = SimConfig::new(5, seed);
    config.net = NetConfig::unreliable();
    let mut sim = Sim::with_log(config)?;
    let value = sim.rng().below(10_000);
    lab::one(&mut sim, &command(value), 1, true)?;
    figure8_loop(&mut sim, true, figure8_iterations())?;
    let value = sim.rng().below(10_000);
    lab::one(&mut sim, &command(value), 5, true)?;
    Ok(())
}

#[test]
fn figure8_unreliable_with_long_reordering_stays_safe_and_recovers() {
    sweep(
        "figure8_unreliable_with_long_reordering_stays_safe_and_recovers",
        10,
        figure8_unreliable,
    );
}

/// A client of the churn tests: proposes values to random nodes and records
/// those it saw committed at the index its proposal got.
struct ChurnClient {
    pending: Option<(u64, u64, u64)>, // (value, index, proposed at)
    committed: Vec<(u64, u64)>,       // (value, index)
    next_value: u64,
}

impl ChurnClient {
    fn step(&mut self, sim: &mut LogSim) {
        if let Some((value, index, since_us)) = self.pending {
            match sim.applied_at(index) {
                Some(record) if record.data == command(value) => {
                    self.committed.push((value, index));
                    self.pending = None;
                }
                Some(_) => self.pending = None,
                None if sim.now_us() > since_us + 1_000_000 => self.pending = None,
                None => return,
            }
        }
        let ids = sim.ids().to_vec();
        let node = ids[sim.rng().below(ids.len() as u64) as usize];
        let value = self.next_value;
        if let Ok(index) = sim.propose(node, command(value)) {
            self.next_value += 1;
            self.pending = Some((value, index, sim.now_us()));
        }
    }
}

/// TestReliableChurn2C / TestUnreliableChurn2C: three clients propose
/// continuously while, every 700 ms for 20 rounds, a random node is
/// disconnected (20%), restarted (50%) or crashed (20%). Afterwards every
/// value a client saw committed is in the final log on all five nodes.
fn churn(seed: u64, unreliable: bool) -> Result<(), SimError> {
    let mut config = SimConfig::new(5, seed);
    if unreliable {
        config.net = NetConfig::unreliable();
    }
    let mut sim = Sim::with_log(config)?;
    let mut clients: Vec<ChurnClient> = (0..3u64)
        .map(|c| ChurnClient {
            pending: None,
            committed: Vec::new(),
            next_value: (c + 1) << 32,
        })
        .collect();
    let ids = sim.ids().to_vec();
    let round_us = ELECTION_TIMEOUT.as_micros() as u64 * 7 / 10;
    for _ in 0..20 {
        let pick = |sim: &mut LogSim| ids[sim.rng().below(ids.len() as u64) as usize];
        if sim.rng().below(1000) < 200 {
            let n = pick(&mut sim);
            sim.disconnect(n);
        }
        if sim.rng().below(1000) < 500 {
            let n = pick(&mut sim);
            if !sim.is_up(n) {
                sim.restart(n)?;
            }
            sim.connect(n);
        }
        if sim.rng().below(1000) < 200 {
            let n = pick(&mut sim);
            sim.crash(n);
        }
        let until = sim.now_us() + round_us;
        while sim.now_us() < until {
            for client in clients.iter_mut() {
                client.step(&mut sim);
            }
            sim.run_for(Duration::from_millis(10))?;
        }
    }
    sim.run_for(ELECTION_TIMEOUT)?;
    sim.set_network(NetConfig::reliable());
    for &n in &ids {
        sim.restart(n)?;
        sim.connect(n);
    }
    sim.run_for(ELECTION_TIMEOUT)?;
    let value = sim.rng().below(1 << 30);
    let last = lab::one(&mut sim, &command(value), 5, true)?;
    for client in &clients {
        for &(value, index) in &client.committed {
            claim!(
                sim,
                index <= last,
                "value {value} committed at {index} beyond the final index {last}"
            );
            let (count, record) = sim.n_committed(index);
            claim!(
                sim,
                count == 5 && record.is_some_and(|r| r.data == command(value)),
                "value {value} seen committed at {index} is not in the final log on all nodes"
            );
        }
    }
    // No claim that something committed during the churn: as in the lab, a
    // majority can stay disconnected for all 20 rounds (e.g. SEED=1080).
    Ok(())
}

#[test]
fn reliable_churn_keeps_every_value_clients_saw_committed() {
    sweep(
        "reliable_churn_keeps_every_value_clients_saw_committed",
        20,
        |seed| churn(seed, false),
    );
}

#[test]
fn unreliable_churn_keeps_every_value_clients_saw_committed() {
    sweep(
        "unreliable_churn_keeps_every_value_clients_saw_committed",
        20,
        |seed| churn(seed, true),
    );
}

fn reliable_churn(seed: u64) -> Result<(), SimError> {
    churn(seed, false)
}

fn unreliable_churn(seed: u64) -> Result<(), SimError> {
    churn(seed, true)
}

/// Every scenario of this file, for the speed benchmark (benches/sim_speed.rs).
#[allow(dead_code)]
pub const SCENARIOS: &[sim::Scenario] = &[
    ("persist1", persist1),
    ("persist2", persist2),
    ("persist3", persist3),
    ("figure8", figure8),
    ("unreliable_agree", unreliable_agree),
    ("figure8_unreliable", figure8_unreliable),
    ("reliable_churn", reliable_churn),
    ("unreliable_churn", unreliable_churn),
];
