//! The suite can fail: with Raft deliberately broken by a test-only
//! mutation, the invariant checker fires within a bounded number of seeds.
//! Each test reports the first seed that caught the bug.

use sim::lab::{self, command};
use sim::{LogMachine, NetConfig, Sim, SimConfig, SimError};
use std::time::Duration;

/// Runs `scenario` on seeds 1..=max_seeds until one fails with an invariant
/// violation; returns that seed and the violation.
fn first_catch(
    max_seeds: u64,
    scenario: impl Fn(u64) -> Result<(), SimError>,
) -> Option<(u64, SimError)> {
    (1..=max_seeds).find_map(|seed| match sim::run_seed(seed, &scenario) {
        Err(error) if error.is_invariant() => Some((seed, error)),
        _ => None,
    })
}

/// Figure 8 as an adversary: five nodes on the lossy network, commands
/// proposed on every node, the leader cut off and crashed after a few
/// milliseconds (its messages still in flight are lost with it), nodes
/// restarted whenever fewer than three are up. This produces the paper's
/// Figure 8 sequence often: a leader of an old term's entry replicates it to
/// a majority, then dies before any entry of its own term spreads, and a node
/// holding a conflicting entry of a middle term is elected next.
fn figure8_adversary(config: SimConfig, iterations: u64) -> Result<(), SimError> {
    let mut sim = Sim::with_log(config)?;
    let ids = sim.ids().to_vec();
    for _ in 0..iterations {
        let mut leader = None;
        for &n in &ids {
            let value = sim.rng().below(1 << 40);
            if sim.is_up(n) && sim.propose(n, command(value)).is_ok() {
                leader = Some(n);
            }
        }
        let pause_ms = if sim.rng().chance(0.1) {
            sim.rng().below(500)
        } else {
            sim.rng().below(13)
        };
        sim.run_for(Duration::from_millis(pause_ms))?;
        if let Some(leader) = leader {
            sim.disconnect(leader);
            sim.crash(leader);
        }
        let crashed = sim.crashed();
        if crashed.len() > 2 {
            let pick = crashed[sim.rng().below(crashed.len() as u64) as usize];
            sim.restart(pick)?;
            sim.connect(pick);
        }
    }
    sim.set_network(NetConfig::reliable());
    for &n in &ids {
        sim.restart(n)?;
        sim.connect(n);
    }
    let value = sim.rng().below(1 << 40);
    lab::one(&mut sim, &command(value), 5, true)?;
    Ok(())
}

/// Iterations of the Figure 8 adversary per seed (each 0-500 ms virtual).
const FIGURE8_ITERATIONS: u64 = 1500;

fn figure8_config(seed: u64) -> SimConfig {
    let mut config = SimConfig::new(5, seed);
    config.net = NetConfig::unreliable();
    config
}

#[test]
fn correct_raft_survives_the_figure8_adversary() {
    sim::sweep("correct_raft_survives_the_figure8_adversary", 10, |seed| {
        figure8_adversary(figure8_config(seed), FIGURE8_ITERATIONS)
    });
}

#[test]
fn breaking_the_figure8_commit_rule_is_caught_within_20_seeds() {
    // Measured: about 45 of 100 seeds catch it (17 of 100 with 1-2 s
    // election timeouts), so 20 seeds all missing has odds near 1 in 100,000.
    let caught = first_catch(20, |seed| {
        let mut config = figure8_config(seed);
        config.raft.mutations.break_figure8_commit_rule = true;
        figure8_adversary(config, FIGURE8_ITERATIONS)
    });
    let Some((seed, error)) = caught else {
        panic!("the invariant checker never fired in 20 seeds with break_figure8_commit_rule");
    };
    println!("caught with SEED={seed}: {error}");
}

#[test]
fn forgetting_to_persist_the_vote_is_caught_at_the_first_vote() {
    let caught = first_catch(1, |seed| {
        let mut config = SimConfig::new(3, seed);
        config.raft.mutations.forget_to_persist_vote = true;
        let mut sim = Sim::with_log(config)?;
        lab::check_one_leader(&mut sim)?;
        Ok(())
    });
    let Some((seed, error)) = caught else {
        panic!("a vote granted without being on disk went unnoticed");
    };
    let SimError::Invariant(violation) = &error else {
        unreachable!()
    };
    assert_eq!(
        violation.invariant, "vote persisted before it is granted",
        "{error}"
    );
    println!("caught with SEED={seed}: {error}");
}

/// Elections where every voter crashes and restarts right after it votes
/// (the adversary watches each node's vote), and the leader is crashed
/// now and then to force new elections. Equal election timeouts make
/// several candidates per term common. With the vote forgotten on restart,
/// a voter can vote twice in one term and elect two leaders.
fn vote_storm(config: SimConfig, duration: Duration) -> Result<(), SimError> {
    let mut sim = Sim::<LogMachine>::with_log(config)?;
    let ids = sim.ids().to_vec();
    let mut restarted_in_term: Vec<u64> = vec![0; ids.len() + 1];
    let end = sim.now() + duration;
    while sim.now() < end {
        sim.run_for(Duration::from_millis(1))?;
        for &n in &ids {
            let Some(status) = sim.status(n) else {
                continue;
            };
            let voted_for_other = status.vote.is_some_and(|v| v != n);
            if voted_for_other && restarted_in_term[n as usize] != status.term {
                restarted_in_term[n as usize] = status.term;
                sim.crash(n);
                sim.restart(n)?;
            }
        }
        if let Some(&(leader, _)) = sim.leaders().first() {
            if sim.rng().chance(0.01) {
                sim.crash(leader);
                sim.restart(leader)?;
            }
        }
    }
    Ok(())
}

#[test]
fn forgetting_to_persist_the_vote_breaks_election_safety_within_10_seeds() {
    // Measured: about 87 of 100 seeds elect two leaders in one term.
    let caught = first_catch(10, |seed| {
        let mut config = SimConfig::new(5, seed);
        config.raft.election_timeout_ticks_min = 100;
        config.raft.election_timeout_ticks_max = 101;
        config.raft.mutations.forget_to_persist_vote = true;
        config.check_vote_durability = false;
        // The storm crashes a voter as soon as it votes: with async writes
        // (SIM_PERSIST=async) that is before the grant leaves, so the
        // forgotten vote rarely matters. The mutation is about the classic
        // contract, where the write and the grant happen together.
        config.async_persist_delay_us = None;
        vote_storm(config, Duration::from_secs(60))
    });
    let Some((seed, error)) = caught else {
        panic!("forget_to_persist_vote went unnoticed by election safety in 10 seeds");
    };
    println!("caught with SEED={seed}: {error}");
}
