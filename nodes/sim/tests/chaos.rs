//! Everything at once, drawn per seed: a lossy, duplicating network, random
//! crashes (some before a Ready is persisted), partitions and disconnects
//! every 50-500 ms, snapshots every 20 entries (the ReadIndex reads run in
//! tests/read_index.rs); clients propose throughout. Safety is checked after
//! every Ready; the run ends with a liveness phase: healed, everyone up, all
//! five agree within 10 s.

use sim::faults::{next_faults, NemesisConfig};
use sim::lab::{self, command};
use sim::{claim, sweep, NetConfig, Sim, SimConfig, SimError};
use std::time::Duration;

fn chaos(seed: u64) -> Result<(), SimError> {
    chaos_run(seed).map(|_| ())
}

/// The chaos run itself; returns the simulator so a test can compare runs.
fn chaos_run(seed: u64) -> Result<Sim<sim::LogMachine>, SimError> {
    let mut config = SimConfig::new(5, seed);
    config.net = NetConfig::unreliable().with_duplication(0.05);
    config.snapshot_every_entries = Some(20);
    config.raft.snapshot_chunk_bytes = 8;
    let mut sim = Sim::with_log(config)?;
    let nemesis = NemesisConfig::chaos(5);
    let ids = sim.ids().to_vec();
    let mut next_fault_us = 0;
    let mut value = 0u64;
    while sim.now() < Duration::from_secs(30) {
        if sim.now_us() >= next_fault_us {
            let crashed = sim.crashed();
            let faults = next_faults(sim.rng(), &nemesis, &ids, &crashed);
            for fault in &faults {
                sim.apply_fault(fault)?;
            }
            next_fault_us = sim.now_us()
                + sim
                    .rng()
                    .between(nemesis.interval_us_min, nemesis.interval_us_max);
        }
        if let Some(leader) = lab::current_leader(&sim) {
            value += 1;
            let _ = sim.propose(leader, command(value));
        }
        sim.run_for(Duration::from_millis(20))?;
    }
    sim.heal();
    sim.set_network(NetConfig::reliable());
    for &n in &ids {
        sim.restart(n)?;
    }
    lab::one(&mut sim, &command(u64::MAX), 5, true)?;
    claim!(
        sim,
        sim.max_applied_index() > 1,
        "nothing but the final command committed in 30 s of chaos"
    );
    Ok(sim)
}

#[test]
fn chaos_random_faults_never_break_safety_and_the_cluster_recovers() {
    sweep(
        "chaos_random_faults_never_break_safety_and_the_cluster_recovers",
        25,
        chaos,
    );
}

/// Replay is exact: the same seed gives the same events, traffic, log and
/// state machines; another seed gives a different run.
fn same_seed_same_run(seed: u64) -> Result<(), SimError> {
    let fingerprint = |sim: &Sim<sim::LogMachine>| {
        let machines: Vec<_> = sim.ids().iter().map(|&n| sim.machine(n).cloned()).collect();
        (
            sim.events_processed(),
            sim.stats().clone(),
            sim.max_applied_index(),
            sim.trace_lines(),
            machines,
        )
    };
    let first = fingerprint(&chaos_run(seed)?);
    let again = fingerprint(&chaos_run(seed)?);
    let other = fingerprint(&chaos_run(seed + 1_000_000)?);
    let sim = Sim::with_log(SimConfig::new(1, seed))?;
    claim!(sim, first == again, "two runs of seed {seed} differ");
    claim!(
        sim,
        first != other,
        "seeds {seed} and {} gave identical runs",
        seed + 1_000_000
    );
    Ok(())
}

#[test]
fn the_same_seed_replays_exactly_the_same_run() {
    sweep(
        "the_same_seed_replays_exactly_the_same_run",
        5,
        same_seed_same_run,
    );
}

/// Crashes that strike between a Ready and its fsync: every few
/// milliseconds a random node (the leader half of the time) is set to crash
/// at its next Ready, losing the writes that Ready asked for and its
/// messages. Nothing acknowledged is ever lost (the checker requires votes
/// and acknowledged entries to be on disk), and all five agree at the end.
fn lost_unsynced_writes(seed: u64) -> Result<(), SimError> {
    let mut config = SimConfig::new(5, seed);
    config.net = NetConfig::unreliable();
    let mut sim = Sim::with_log(config)?;
    let ids = sim.ids().to_vec();
    let mut value = 0u64;
    for _ in 0..300 {
        for &n in &ids {
            value += 1;
            let _ = sim.propose(n, command(value));
        }
        let victim = match lab::current_leader(&sim) {
            Some(leader) if sim.rng().chance(0.5) => leader,
            _ => ids[sim.rng().below(ids.len() as u64) as usize],
        };
        sim.crash_before_persist(victim);
        let pause_ms = sim.rng().between(1, 60);
        sim.run_for(Duration::from_millis(pause_ms))?;
        let crashed = sim.crashed();
        if crashed.len() > 1 {
            let back = crashed[sim.rng().below(crashed.len() as u64) as usize];
            sim.restart(back)?;
        }
    }
    sim.set_network(NetConfig::reliable());
    for &n in &ids {
        sim.restart(n)?;
    }
    lab::one(&mut sim, &command(u64::MAX), 5, true)?;
    Ok(())
}

#[test]
fn crashes_before_fsync_lose_only_unacknowledged_writes() {
    sweep(
        "crashes_before_fsync_lose_only_unacknowledged_writes",
        25,
        lost_unsynced_writes,
    );
}

/// Every scenario of this file, for the speed benchmark (benches/sim_speed.rs).
#[allow(dead_code)]
pub const SCENARIOS: &[sim::Scenario] = &[
    ("chaos", chaos),
    ("lost_unsynced_writes", lost_unsynced_writes),
];

/// Clerk RPCs share the network's faults: none reach a disconnected or
/// crashed node, about 10% are lost on the lossy network, none wait longer
/// than its 26 ms.
#[test]
fn client_hops_suffer_the_same_faults_as_raft_messages() {
    let mut config = SimConfig::new(3, 5);
    config.net = NetConfig::unreliable();
    let mut sim = Sim::with_log(config).expect("starts");
    let hops: Vec<_> = (0..2000).map(|_| sim.client_hop(1)).collect();
    let lost = hops.iter().filter(|h| h.is_none()).count();
    assert!((120..280).contains(&lost), "{lost} of 2000 lost");
    assert!(hops
        .iter()
        .flatten()
        .all(|d| *d <= Duration::from_millis(26)));
    sim.disconnect(2);
    sim.crash(3);
    assert_eq!(sim.client_hop(2), None);
    assert_eq!(sim.client_hop(3), None);
}
