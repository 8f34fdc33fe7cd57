//! Beyond the lab: pre-vote (§9.6 of the Raft thesis) and check-quorum.
//! A node cut off from the cluster must not raise its term or depose a
//! healthy leader when it returns; a leader that cannot reach a majority
//! steps down within an election timeout (plus one heartbeat).

use sim::lab;
use sim::{claim, faults, sweep, Sim, SimConfig, SimError};
use std::time::Duration;

fn terms(sim: &Sim<sim::LogMachine>) -> Vec<u64> {
    sim.ids()
        .iter()
        .filter_map(|&n| sim.status(n))
        .map(|s| s.term)
        .collect()
}

/// A follower (or two) partitioned away for 10 s, then healed: the leader
/// and its term are unchanged, and the returning nodes never raised their
/// term while away.
fn partitioned_minority_rejoins_quietly(seed: u64, away: usize) -> Result<(), SimError> {
    let mut sim = Sim::with_log(SimConfig::new(5, seed))?;
    let leader = lab::check_one_leader(&mut sim)?;
    lab::one(&mut sim, &lab::command(1), 5, true)?;
    let term = sim.status(leader).map_or(0, |s| s.term);
    let others: Vec<u64> = sim.ids().iter().copied().filter(|&n| n != leader).collect();
    let gone = faults::random_subset(sim.rng(), &others, away);
    let rest: Vec<u64> = sim
        .ids()
        .iter()
        .copied()
        .filter(|n| !gone.contains(n))
        .collect();
    sim.partition(&[gone.clone(), rest]);
    sim.run_for(Duration::from_secs(10))?;
    for &n in &gone {
        let t = sim.status(n).map_or(0, |s| s.term);
        claim!(
            sim,
            t == term,
            "partitioned node {n} moved from term {term} to {t}"
        );
    }
    sim.heal();
    sim.run_for(Duration::from_secs(3))?;
    let now_leader = lab::check_one_leader(&mut sim)?;
    claim!(
        sim,
        now_leader == leader,
        "leader changed from {leader} to {now_leader} when {gone:?} returned"
    );
    let all = terms(&sim);
    claim!(
        sim,
        all.iter().all(|&t| t == term),
        "terms after the rejoin: {all:?}, expected all {term}"
    );
    lab::one(&mut sim, &lab::command(2), 5, true)?;
    Ok(())
}

#[test]
fn a_partitioned_follower_does_not_raise_the_term_or_depose_the_leader() {
    sweep(
        "a_partitioned_follower_does_not_raise_the_term_or_depose_the_leader",
        50,
        |seed| partitioned_minority_rejoins_quietly(seed, 1),
    );
}

#[test]
fn two_partitioned_followers_do_not_raise_the_term_or_depose_the_leader() {
    sweep(
        "two_partitioned_followers_do_not_raise_the_term_or_depose_the_leader",
        50,
        |seed| partitioned_minority_rejoins_quietly(seed, 2),
    );
}

/// A leader left in a minority steps down within an election timeout plus
/// a heartbeat; meanwhile the majority elects a new leader within 5 s.
fn leader_in_minority_steps_down(seed: u64) -> Result<(), SimError> {
    let config = SimConfig::new(5, seed);
    let tick = Duration::from_micros(config.tick_us);
    let bound =
        tick * (config.raft.election_timeout_ticks_max + config.raft.heartbeat_interval_ticks);
    let mut sim = Sim::with_log(config)?;
    let leader = lab::check_one_leader(&mut sim)?;
    let others: Vec<u64> = sim.ids().iter().copied().filter(|&n| n != leader).collect();
    let buddy = others[sim.rng().below(others.len() as u64) as usize];
    let majority: Vec<u64> = others.iter().copied().filter(|&n| n != buddy).collect();
    sim.partition(&[vec![leader, buddy], majority.clone()]);
    let cut_at = sim.now();
    let stepped_down = sim.run_until(bound, |s| {
        s.status(leader)
            .is_some_and(|st| st.role != raft::Role::Leader)
    })?;
    claim!(
        sim,
        stepped_down,
        "leader {leader} still leads {:?} after losing its majority",
        sim.now() - cut_at
    );
    let elected = sim.run_until(Duration::from_secs(5), |s| {
        majority
            .iter()
            .any(|&n| s.status(n).is_some_and(|st| st.role == raft::Role::Leader))
    })?;
    claim!(
        sim,
        elected,
        "majority {majority:?} elected no leader within 5 s"
    );
    sim.heal();
    lab::one(&mut sim, &lab::command(7), 5, true)?;
    Ok(())
}

#[test]
fn a_leader_cut_off_from_its_majority_steps_down_within_an_election_timeout() {
    sweep(
        "a_leader_cut_off_from_its_majority_steps_down_within_an_election_timeout",
        50,
        leader_in_minority_steps_down,
    );
}

fn one_partitioned_follower(seed: u64) -> Result<(), SimError> {
    partitioned_minority_rejoins_quietly(seed, 1)
}

fn two_partitioned_followers(seed: u64) -> Result<(), SimError> {
    partitioned_minority_rejoins_quietly(seed, 2)
}

/// Every scenario of this file, for the speed benchmark (benches/sim_speed.rs).
#[allow(dead_code)]
pub const SCENARIOS: &[sim::Scenario] = &[
    ("partitioned_follower_rejoins", one_partitioned_follower),
    (
        "two_partitioned_followers_rejoin",
        two_partitioned_followers,
    ),
    (
        "leader_in_minority_steps_down",
        leader_in_minority_steps_down,
    ),
];
