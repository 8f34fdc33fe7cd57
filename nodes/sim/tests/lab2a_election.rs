//! Lab 2A equivalents: leader election under disconnections, in virtual time.
//! Each test is swept over seeds (`SIM_SEEDS`, `SEED` to replay).

use sim::lab::{self, ELECTION_TIMEOUT};
use sim::{claim, sweep, Sim, SimConfig, SimError};
use std::time::Duration;

/// TestInitialElection2A: three nodes elect a leader within 5 s, agree on a
/// term >= 1, and with no failures keep that leader and term for 2 s.
fn initial_election(seed: u64) -> Result<(), SimError> {
    let mut sim = Sim::with_log(SimConfig::new(3, seed))?;
    let leader = lab::check_one_leader(&mut sim)?;
    claim!(
        sim,
        sim.now() <= Duration::from_secs(5),
        "first leader only at {:?}",
        sim.now()
    );
    sim.run_for(Duration::from_millis(50))?;
    let term = lab::check_terms(&sim)?;
    claim!(sim, term >= 1, "term is {term} after an election");
    sim.run_for(2 * ELECTION_TIMEOUT)?;
    let term_after = lab::check_terms(&sim)?;
    claim!(
        sim,
        term_after == term,
        "term moved from {term} to {term_after} without failures"
    );
    let leader_after = lab::check_one_leader(&mut sim)?;
    claim!(
        sim,
        leader_after == leader,
        "leader changed from {leader} to {leader_after} without failures"
    );
    Ok(())
}

#[test]
fn initial_election_elects_one_leader_and_keeps_it_while_healthy() {
    sweep(
        "initial_election_elects_one_leader_and_keeps_it_while_healthy",
        50,
        initial_election,
    );
}

/// TestReElection2A: a new leader within 5 s of the old one's disconnection;
/// the old leader rejoining does not disturb the new one (pre-vote and
/// check-quorum make this strict: same leader, same term); with 2 of 3 gone
/// there is no leader; with a quorum back there is one again.
fn re_election(seed: u64) -> Result<(), SimError> {
    let mut sim = Sim::with_log(SimConfig::new(3, seed))?;
    let leader1 = lab::check_one_leader(&mut sim)?;

    sim.disconnect(leader1);
    let leader2 = lab::check_one_leader(&mut sim)?;
    claim!(
        sim,
        leader2 != leader1,
        "disconnected leader {leader1} still counted as leader"
    );
    let term2 = sim.status(leader2).map_or(0, |s| s.term);

    sim.connect(leader1);
    sim.run_for(ELECTION_TIMEOUT)?;
    let leader3 = lab::check_one_leader(&mut sim)?;
    let term3 = sim.status(leader3).map_or(0, |s| s.term);
    claim!(
        sim,
        leader3 == leader2 && term3 == term2,
        "old leader {leader1} rejoining disturbed leader {leader2} of term {term2}: now {leader3} of term {term3}"
    );

    let other = sim
        .ids()
        .iter()
        .copied()
        .find(|&n| n != leader2 && n != leader1)
        .unwrap_or(leader1);
    sim.disconnect(leader2);
    sim.disconnect(other);
    sim.run_for(2 * ELECTION_TIMEOUT)?;
    lab::check_no_leader(&sim)?;

    sim.connect(other);
    lab::check_one_leader(&mut sim)?;
    sim.connect(leader2);
    lab::check_one_leader(&mut sim)?;
    Ok(())
}

#[test]
fn re_election_after_leader_loss_and_none_without_quorum() {
    sweep(
        "re_election_after_leader_loss_and_none_without_quorum",
        50,
        re_election,
    );
}

/// TestManyElections2A (2021+): seven nodes; ten times, three random nodes
/// are disconnected; the remaining four always elect a leader within 5 s.
fn many_elections(seed: u64) -> Result<(), SimError> {
    let mut sim = Sim::with_log(SimConfig::new(7, seed))?;
    lab::check_one_leader(&mut sim)?;
    let ids = sim.ids().to_vec();
    for _ in 0..10 {
        let gone = sim::faults::random_subset(sim.rng(), &ids, 3);
        for &n in &gone {
            sim.disconnect(n);
        }
        lab::check_one_leader(&mut sim)?;
        for &n in &gone {
            sim.connect(n);
        }
    }
    lab::check_one_leader(&mut sim)?;
    Ok(())
}

#[test]
fn many_elections_with_three_of_seven_disconnected() {
    sweep(
        "many_elections_with_three_of_seven_disconnected",
        25,
        many_elections,
    );
}

/// Every scenario of this file, for the speed benchmark (benches/sim_speed.rs).
#[allow(dead_code)]
pub const SCENARIOS: &[sim::Scenario] = &[
    ("initial_election", initial_election),
    ("re_election", re_election),
    ("many_elections", many_elections),
];
