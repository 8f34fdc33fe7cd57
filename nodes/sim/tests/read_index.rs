//! ReadIndex reads (§6.4 of the Raft thesis). The simulator checks every
//! served read: its index must be at least the highest index any node knew
//! committed when the read was asked (else it could miss a completed write).
//! These tests add the liveness and partition claims.

use sim::lab;
use sim::{claim, sweep, NetConfig, Sim, SimConfig, SimError};
use std::time::Duration;

/// A leader partitioned into a minority never answers a read asked after
/// the partition, not even after 5 s, while the majority elects a new leader
/// and commits; the same holds for a read forwarded by its minority follower.
fn stale_leader_read_never_returns(seed: u64) -> Result<(), SimError> {
    let mut sim = Sim::with_log(SimConfig::new(5, seed))?;
    lab::one(&mut sim, &lab::command(1), 5, true)?;
    let leader = lab::check_one_leader(&mut sim)?;
    let others: Vec<u64> = sim.ids().iter().copied().filter(|&n| n != leader).collect();
    let buddy = others[sim.rng().below(4) as usize];
    let majority: Vec<u64> = others.iter().copied().filter(|&n| n != buddy).collect();
    sim.partition(&[vec![leader, buddy], majority.clone()]);
    let asked_leader = sim.read_index(leader, b"stale-leader".to_vec()).is_ok();
    let _ = sim.read_index(buddy, b"stale-follower".to_vec());
    sim.run_until(Duration::from_secs(5), |s| {
        majority
            .iter()
            .any(|&n| s.status(n).is_some_and(|st| st.role == raft::Role::Leader))
    })?;
    for value in 2..5 {
        for &n in &majority {
            let _ = sim.propose(n, lab::command(value));
        }
        sim.run_for(Duration::from_millis(300))?;
    }
    sim.run_for(Duration::from_secs(5))?;
    let served_leader = sim.take_reads(leader);
    let served_buddy = sim.take_reads(buddy);
    claim!(
        sim,
        served_leader.is_empty(),
        "stale leader {leader} served {served_leader:?}"
    );
    claim!(
        sim,
        served_buddy.is_empty(),
        "minority follower {buddy} served {served_buddy:?}"
    );
    claim!(
        sim,
        asked_leader,
        "the leader refused the read before it could know it was cut off"
    );
    sim.heal();
    lab::one(&mut sim, &lab::command(9), 5, true)?;
    Ok(())
}

#[test]
fn a_partitioned_leader_never_serves_a_read() {
    sweep(
        "a_partitioned_leader_never_serves_a_read",
        50,
        stale_leader_read_never_returns,
    );
}

/// On the lossy network, reads asked at any node while writes commit are
/// answered (most within 1 s) and never stale.
fn reads_among_writes(seed: u64) -> Result<(), SimError> {
    let mut config = SimConfig::new(3, seed);
    config.net = NetConfig::unreliable();
    let mut sim = Sim::with_log(config)?;
    lab::check_one_leader(&mut sim)?;
    let ids = sim.ids().to_vec();
    let mut asked = 0u64;
    let mut answered = 0usize;
    for round in 0..100u64 {
        let node = ids[sim.rng().below(3) as usize];
        let _ = lab::current_leader(&sim).map(|l| sim.propose(l, lab::command(round)));
        if sim.read_index(node, round.to_le_bytes().to_vec()).is_ok() {
            asked += 1;
        }
        sim.run_for(Duration::from_millis(100))?;
        for &n in &ids {
            answered += sim.take_reads(n).len();
        }
    }
    sim.run_for(Duration::from_secs(1))?;
    for &n in &ids {
        answered += sim.take_reads(n).len();
    }
    claim!(sim, asked >= 50, "only {asked} of 100 reads were accepted");
    claim!(
        sim,
        answered as u64 * 10 >= asked * 7,
        "only {answered} of {asked} reads were answered on a 10%-loss network"
    );
    Ok(())
}

#[test]
fn reads_at_any_node_are_answered_and_never_stale_on_a_lossy_network() {
    sweep(
        "reads_at_any_node_are_answered_and_never_stale_on_a_lossy_network",
        50,
        reads_among_writes,
    );
}

/// A leader cut off with one follower keeps believing it leads for a while.
/// The majority elects a new leader and commits; reads asked at the old
/// leader from then on must not be served with its old commit index (the
/// checker's "linearizable reads" invariant). Default config: pre-vote and
/// check-quorum on.
fn deposed_leader_reads(seed: u64) -> Result<(), SimError> {
    deposed_leader_reads_in(seed, raft::ReadMode::ReadIndex)
}

/// The same with lease reads: the old leader may answer at once while its
/// lease lasts, but no new leader can be elected before the lease ends, so
/// no answer is ever stale.
fn deposed_lease_leader_reads(seed: u64) -> Result<(), SimError> {
    deposed_leader_reads_in(seed, raft::ReadMode::Lease)
}

fn deposed_leader_reads_in(seed: u64, mode: raft::ReadMode) -> Result<(), SimError> {
    let mut config = SimConfig::new(5, seed);
    config.raft.read_mode = mode;
    let mut sim = Sim::with_log(config)?;
    lab::one(&mut sim, &lab::command(1), 5, true)?;
    let leader = lab::check_one_leader(&mut sim)?;
    let others: Vec<u64> = sim.ids().iter().copied().filter(|&n| n != leader).collect();
    let buddy = others[0];
    let majority: Vec<u64> = others[1..].to_vec();
    sim.partition(&[vec![leader, buddy], majority.clone()]);
    // Reads start at a random moment 0.4-1.2 s after the cut: some seeds
    // ask while the old leader still believes it leads and the majority
    // already elected and committed.
    let first_read_step = sim.rng().between(40, 120);
    for step in 0..300u64 {
        if step >= first_read_step {
            let _ = sim.read_index(leader, step.to_le_bytes().to_vec());
        }
        for &n in &majority {
            let _ = sim.propose(n, lab::command(100 + step));
        }
        sim.run_for(Duration::from_millis(10))?;
    }
    sim.heal();
    lab::one(&mut sim, &lab::command(9), 5, true)?;
    Ok(())
}

#[test]
fn a_deposed_leader_never_serves_a_stale_read() {
    sweep(
        "a_deposed_leader_never_serves_a_stale_read",
        50,
        deposed_leader_reads,
    );
}

#[test]
fn a_deposed_lease_holder_never_serves_a_stale_read() {
    sweep(
        "a_deposed_lease_holder_never_serves_a_stale_read",
        50,
        deposed_lease_leader_reads,
    );
}

/// Every scenario of this file, for the speed benchmark (benches/sim_speed.rs).
#[allow(dead_code)]
pub const SCENARIOS: &[sim::Scenario] = &[
    (
        "stale_leader_read_never_returns",
        stale_leader_read_never_returns,
    ),
    ("reads_among_writes", reads_among_writes),
    ("deposed_leader_reads", deposed_leader_reads),
    ("deposed_lease_leader_reads", deposed_lease_leader_reads),
];
