//! Leadership transfer (§3.10 of the Raft thesis): the leader catches the
//! target up, tells it to campaign at once, and refuses proposals meanwhile;
//! an unreachable target makes the leader give up after an election timeout.

use sim::lab;
use sim::{claim, sweep, ClientError, Sim, SimConfig, SimError};
use std::time::Duration;

fn role_is_leader(sim: &Sim<sim::LogMachine>, node: u64) -> bool {
    sim.status(node)
        .is_some_and(|s| s.role == raft::Role::Leader)
}

/// Transfer to an up-to-date follower: it leads within an election timeout
/// (the minimum, 1 s), and the old leader refuses proposals meanwhile.
fn transfer_to_up_to_date_follower(seed: u64) -> Result<(), SimError> {
    let mut sim = Sim::with_log(SimConfig::new(5, seed))?;
    lab::one(&mut sim, &lab::command(1), 5, true)?;
    let leader = lab::check_one_leader(&mut sim)?;
    let target = leader % 5 + 1;
    sim.transfer_leadership(leader, target)
        .map_err(|e| SimError::Claim {
            at_us: sim.now_us(),
            message: format!("transfer refused: {e}"),
        })?;
    let refused = matches!(
        sim.propose(leader, lab::command(2)),
        Err(ClientError::Raft(
            raft::ProposeError::TransferInProgress { .. }
        ))
    );
    claim!(
        sim,
        refused,
        "leader {leader} accepted a proposal during the transfer"
    );
    let done = sim.run_until(lab::ELECTION_TIMEOUT, |s| role_is_leader(s, target))?;
    claim!(
        sim,
        done,
        "target {target} not leader within {:?}",
        lab::ELECTION_TIMEOUT
    );
    lab::one(&mut sim, &lab::command(3), 5, true)?;
    Ok(())
}

#[test]
fn transfer_to_an_up_to_date_follower_completes_within_an_election_timeout() {
    sweep(
        "transfer_to_an_up_to_date_follower_completes_within_an_election_timeout",
        50,
        transfer_to_up_to_date_follower,
    );
}

/// Transfer to a follower that missed 30 entries: the leader catches it up
/// first (leader completeness is checked when it takes over).
fn transfer_to_lagging_follower(seed: u64) -> Result<(), SimError> {
    let mut sim = Sim::with_log(SimConfig::new(3, seed))?;
    let leader = lab::check_one_leader(&mut sim)?;
    let target = leader % 3 + 1;
    sim.disconnect(target);
    for value in 0..30 {
        lab::one(&mut sim, &lab::command(value), 2, true)?;
    }
    sim.connect(target);
    let leader = lab::check_one_leader(&mut sim)?;
    if leader == target {
        return Ok(());
    }
    sim.transfer_leadership(leader, target)
        .map_err(|e| SimError::Claim {
            at_us: sim.now_us(),
            message: format!("transfer refused: {e}"),
        })?;
    let done = sim.run_until(2 * lab::ELECTION_TIMEOUT, |s| role_is_leader(s, target))?;
    claim!(sim, done, "lagging target {target} not leader within 2 s");
    lab::one(&mut sim, &lab::command(99), 3, true)?;
    Ok(())
}

#[test]
fn transfer_to_a_lagging_follower_catches_it_up_first() {
    sweep(
        "transfer_to_a_lagging_follower_catches_it_up_first",
        50,
        transfer_to_lagging_follower,
    );
}

/// Transfer to an unreachable node is abandoned: after an election timeout
/// (max) the old leader still leads, in the same term, and commits again.
fn transfer_to_unreachable_node(seed: u64) -> Result<(), SimError> {
    let config = SimConfig::new(3, seed);
    let give_up =
        Duration::from_micros(config.tick_us * u64::from(config.raft.election_timeout_ticks_max));
    let mut sim = Sim::with_log(config)?;
    let leader = lab::check_one_leader(&mut sim)?;
    lab::one(&mut sim, &lab::command(1), 3, true)?;
    let term = sim.status(leader).map_or(0, |s| s.term);
    let target = leader % 3 + 1;
    sim.disconnect(target);
    sim.transfer_leadership(leader, target)
        .map_err(|e| SimError::Claim {
            at_us: sim.now_us(),
            message: format!("transfer refused: {e}"),
        })?;
    sim.run_for(give_up + Duration::from_millis(100))?;
    let status = sim.status(leader);
    claim!(
        sim,
        status
            .as_ref()
            .is_some_and(|s| s.role == raft::Role::Leader && s.term == term),
        "after an abandoned transfer node {leader} is {status:?}, expected leader of term {term}"
    );
    let index = sim.propose(leader, lab::command(2));
    claim!(
        sim,
        index.is_ok(),
        "leader still refuses proposals: {index:?}"
    );
    lab::one(&mut sim, &lab::command(3), 2, true)?;
    Ok(())
}

#[test]
fn transfer_to_an_unreachable_node_is_abandoned_and_the_leader_carries_on() {
    sweep(
        "transfer_to_an_unreachable_node_is_abandoned_and_the_leader_carries_on",
        50,
        transfer_to_unreachable_node,
    );
}

/// Every scenario of this file, for the speed benchmark (benches/sim_speed.rs).
#[allow(dead_code)]
pub const SCENARIOS: &[sim::Scenario] = &[
    (
        "transfer_to_up_to_date_follower",
        transfer_to_up_to_date_follower,
    ),
    ("transfer_to_lagging_follower", transfer_to_lagging_follower),
    ("transfer_to_unreachable_node", transfer_to_unreachable_node),
];
