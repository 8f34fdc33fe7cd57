//! Lab 2B equivalents: log agreement, with and without failures, and the
//! bounds on bytes and messages. Indexes are relative: every new leader
//! appends a no-op entry first (§8), so "commits at 1, 2, 3" in the lab reads
//! "commits at consecutive indexes after the leader's no-op" here.

use sim::lab::{self, command, ELECTION_TIMEOUT};
use sim::{claim, sweep, Sim, SimConfig, SimError};
use std::time::Duration;

fn cluster(nodes: usize, seed: u64) -> Result<Sim<sim::LogMachine>, SimError> {
    Sim::with_log(SimConfig::new(nodes, seed))
}

/// TestBasicAgree2B: nothing is applied before a command is started; three
/// commands commit on all three nodes at consecutive indexes.
fn basic_agree(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(3, seed)?;
    lab::check_one_leader(&mut sim)?;
    let mut previous = None;
    for value in 1..=3u64 {
        let next = sim.max_applied_index() + 1;
        let (count, _) = sim.n_committed(next);
        claim!(
            sim,
            count == 0,
            "{count} nodes applied index {next} before Start()"
        );
        let index = lab::one(&mut sim, &command(value), 3, false)?;
        if let Some(previous) = previous {
            claim!(
                sim,
                index == previous + 1,
                "command {value} at {index}, previous at {previous}"
            );
        }
        previous = Some(index);
    }
    Ok(())
}

#[test]
fn basic_agree_commits_three_commands_at_consecutive_indexes() {
    sweep(
        "basic_agree_commits_three_commands_at_consecutive_indexes",
        50,
        basic_agree,
    );
}

/// TestRPCBytes2B: ten 5000-byte commands cost at most 3 x their size plus
/// 50,000 bytes of traffic: each command goes to each follower about once.
fn rpc_bytes(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(3, seed)?;
    lab::one(&mut sim, &command(99), 3, false)?;
    let before = sim.stats().bytes_sent;
    let mut sent = 0u64;
    for i in 0..10u64 {
        let mut cmd = vec![0u8; 5000];
        sim.rng().shuffle(&mut cmd);
        cmd[..8].copy_from_slice(&i.to_le_bytes());
        cmd[8] = sim.rng().below(256) as u8;
        sent += cmd.len() as u64;
        lab::one(&mut sim, &cmd, 3, false)?;
    }
    let got = sim.stats().bytes_sent - before;
    let bound = 3 * sent + 50_000;
    claim!(
        sim,
        got <= bound,
        "{got} bytes sent for {sent} bytes of commands (bound {bound})"
    );
    Ok(())
}

#[test]
fn rpc_bytes_each_command_sent_to_each_follower_about_once() {
    sweep(
        "rpc_bytes_each_command_sent_to_each_follower_about_once",
        50,
        rpc_bytes,
    );
}

/// TestFailAgree2B: with one follower disconnected the other two agree; the
/// follower catches up when it rejoins.
fn fail_agree(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(3, seed)?;
    lab::one(&mut sim, &command(101), 3, false)?;
    let leader = lab::check_one_leader(&mut sim)?;
    let follower = leader % 3 + 1;
    sim.disconnect(follower);
    for value in 102..=105 {
        lab::one(&mut sim, &command(value), 2, false)?;
    }
    sim.run_for(ELECTION_TIMEOUT)?;
    lab::one(&mut sim, &command(106), 2, true)?;
    sim.connect(follower);
    lab::one(&mut sim, &command(107), 3, true)?;
    sim.run_for(ELECTION_TIMEOUT)?;
    lab::one(&mut sim, &command(108), 3, true)?;
    Ok(())
}

#[test]
fn fail_agree_progresses_without_a_follower_which_catches_up_on_rejoin() {
    sweep(
        "fail_agree_progresses_without_a_follower_which_catches_up_on_rejoin",
        50,
        fail_agree,
    );
}

/// TestFailNoAgree2B: with 3 of 5 followers gone nothing commits, not even
/// after 2 s; after they return the next command lands right after the
/// uncommitted one or replaces it.
fn fail_no_agree(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(5, seed)?;
    let first = lab::one(&mut sim, &command(10), 5, false)?;
    let leader = lab::check_one_leader(&mut sim)?;
    let gone: Vec<u64> = (1..=3).map(|k| (leader - 1 + k) % 5 + 1).collect();
    for &n in &gone {
        sim.disconnect(n);
    }
    let index = sim
        .propose(leader, command(20))
        .map_err(|e| SimError::Claim {
            at_us: sim.now_us(),
            message: format!("leader refused: {e}"),
        })?;
    claim!(
        sim,
        index == first + 1,
        "expected index {} got {index}",
        first + 1
    );
    sim.run_for(2 * ELECTION_TIMEOUT)?;
    let (count, _) = sim.n_committed(index);
    claim!(
        sim,
        count == 0,
        "{count} nodes committed index {index} without a majority"
    );
    for &n in &gone {
        sim.connect(n);
    }
    let leader2 = lab::check_one_leader(&mut sim)?;
    let mut index2 = None;
    for _ in 0..5 {
        match sim.propose(leader2, command(30)) {
            Ok(i) => {
                index2 = Some(i);
                break;
            }
            Err(_) => sim.run_for(Duration::from_millis(100))?,
        }
    }
    let index2 = index2.ok_or_else(|| SimError::Claim {
        at_us: sim.now_us(),
        message: "leader2 refused".into(),
    })?;
    claim!(
        sim,
        (first + 2..=first + 3).contains(&index2),
        "new command at {index2}, expected in [{}, {}]",
        first + 2,
        first + 3
    );
    lab::one(&mut sim, &command(1000), 5, true)?;
    Ok(())
}

#[test]
fn fail_no_agree_commits_nothing_without_a_majority() {
    sweep(
        "fail_no_agree_commits_nothing_without_a_majority",
        50,
        fail_no_agree,
    );
}

/// TestConcurrentStarts2B: five commands started at the same instant in one
/// term all commit (up to 5 tries if the term changes).
fn concurrent_starts(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(3, seed)?;
    for attempt in 0..5 {
        if attempt > 0 {
            sim.run_for(Duration::from_secs(3))?;
        }
        let leader = lab::check_one_leader(&mut sim)?;
        let Some(term) = sim.status(leader).map(|s| s.term) else {
            continue;
        };
        let mut indexes = Vec::new();
        for value in 0..5u64 {
            match sim.propose(leader, command(100 + value + 1000 * attempt)) {
                Ok(index) => indexes.push((index, 100 + value + 1000 * attempt)),
                Err(_) => break,
            }
        }
        if indexes.len() < 5 {
            continue;
        }
        let mut ok = true;
        for &(index, value) in &indexes {
            match lab::wait(&mut sim, index, 3, term)? {
                Some(data) if data == command(value) => {}
                Some(data) => {
                    return Err(SimError::Claim {
                        at_us: sim.now_us(),
                        message: format!("index {index} holds {data:?}, expected {value}"),
                    })
                }
                None => {
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            return Ok(());
        }
    }
    Err(SimError::Claim {
        at_us: sim.now_us(),
        message: "term changed too often".into(),
    })
}

#[test]
fn concurrent_starts_in_one_term_all_commit() {
    sweep(
        "concurrent_starts_in_one_term_all_commit",
        50,
        concurrent_starts,
    );
}

/// TestRejoin2B: a partitioned leader's uncommitted entries are overwritten
/// when it rejoins a cluster that moved on.
fn rejoin(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(3, seed)?;
    lab::one(&mut sim, &command(101), 3, true)?;
    let leader1 = lab::check_one_leader(&mut sim)?;
    sim.disconnect(leader1);
    for value in [102, 103, 104] {
        let _ = sim.propose(leader1, command(value));
    }
    let leader2 = lab::check_one_leader(&mut sim)?;
    lab::one(&mut sim, &command(103), 2, true)?;
    sim.disconnect(leader2);
    sim.connect(leader1);
    lab::one(&mut sim, &command(104), 2, true)?;
    sim.connect(leader2);
    lab::one(&mut sim, &command(105), 3, true)?;
    Ok(())
}

#[test]
fn rejoin_overwrites_an_old_leaders_uncommitted_entries() {
    sweep(
        "rejoin_overwrites_an_old_leaders_uncommitted_entries",
        50,
        rejoin,
    );
}

fn append_rejections(sim: &Sim<sim::LogMachine>) -> u64 {
    sim.ids()
        .iter()
        .filter_map(|&n| sim.raft(n))
        .map(|r| r.counters().append_rejections_sent)
        .sum()
}

/// TestBackup2B: two rounds of 50 uncommitted entries on a minority while
/// the majority commits 50 others; the leader backs up over the conflicting
/// entries fast: one rejection per conflicting term, not per entry.
fn backup(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(5, seed)?;
    let mut next = 1_000_000u64;
    let mut value = || {
        next += 1;
        next
    };
    lab::one(&mut sim, &command(value()), 5, true)?;
    let leader1 = lab::check_one_leader(&mut sim)?;
    let peer = |base: u64, k: u64| (base - 1 + k) % 5 + 1;
    for k in 2..=4 {
        sim.disconnect(peer(leader1, k));
    }
    for _ in 0..50 {
        let _ = sim.propose(leader1, command(value()));
    }
    sim.run_for(ELECTION_TIMEOUT / 2)?;
    sim.disconnect(peer(leader1, 0));
    sim.disconnect(peer(leader1, 1));
    for k in 2..=4 {
        sim.connect(peer(leader1, k));
    }
    for _ in 0..50 {
        lab::one(&mut sim, &command(value()), 3, true)?;
    }
    let leader2 = lab::check_one_leader(&mut sim)?;
    let other = (2..=4)
        .map(|k| peer(leader1, k))
        .find(|&n| n != leader2)
        .unwrap_or(leader2);
    sim.disconnect(other);
    for _ in 0..50 {
        let _ = sim.propose(leader2, command(value()));
    }
    sim.run_for(ELECTION_TIMEOUT / 2)?;
    for n in 1..=5 {
        sim.disconnect(n);
    }
    sim.connect(peer(leader1, 0));
    sim.connect(peer(leader1, 1));
    sim.connect(other);
    for _ in 0..50 {
        lab::one(&mut sim, &command(value()), 3, true)?;
    }
    let started = sim.now();
    for n in 1..=5 {
        sim.connect(n);
    }
    lab::one(&mut sim, &command(value()), 5, true)?;
    let rejections = append_rejections(&sim);
    claim!(
        sim,
        rejections <= 20,
        "{rejections} append rejections in a run where nodes fell behind or diverged by 50+ entries four times"
    );
    claim!(
        sim,
        sim.now() - started <= Duration::from_secs(5),
        "catch-up took {:?}",
        sim.now() - started
    );
    Ok(())
}

#[test]
fn backup_skips_over_fifty_conflicting_entries_quickly() {
    sweep(
        "backup_skips_over_fifty_conflicting_entries_quickly",
        25,
        backup,
    );
}

/// TestCount2B: an election takes 1..=30 RPCs; 10 agreements (plus the
/// attempt itself and retries) at most (10+1+3)*3 RPCs; an idle second at
/// most 60 RPCs. Our messages are one-way, so each RPC bound is doubled
/// (request + reply).
fn count(seed: u64) -> Result<(), SimError> {
    let mut sim = cluster(3, seed)?;
    let leader = lab::check_one_leader(&mut sim)?;
    let election = sim.stats().messages_sent;
    claim!(
        sim,
        (1..=60).contains(&election),
        "{election} messages to elect a leader"
    );
    let _ = leader;
    let mut done = false;
    for _ in 0..5 {
        let leader = lab::check_one_leader(&mut sim)?;
        let before = sim.stats().messages_sent;
        let Some(term) = sim.status(leader).map(|s| s.term) else {
            continue;
        };
        let Ok(start) = sim.propose(leader, command(1)) else {
            continue;
        };
        let mut all = true;
        let mut indexes = vec![start];
        for value in 2..=10u64 {
            match sim.propose(leader, command(value)) {
                Ok(i) => indexes.push(i),
                Err(_) => all = false,
            }
        }
        if !all {
            continue;
        }
        for &index in &indexes {
            if lab::wait(&mut sim, index, 3, term)?.is_none() {
                all = false;
                break;
            }
        }
        if !all || sim.status(leader).map(|s| s.term) != Some(term) {
            continue;
        }
        let used = sim.stats().messages_sent - before;
        claim!(
            sim,
            used <= 2 * (10 + 1 + 3) * 3,
            "{used} messages for 10 agreements"
        );
        done = true;
        break;
    }
    claim!(sim, done, "term changed too often");
    sim.run_for(Duration::from_millis(100))?;
    let before = sim.stats().messages_sent;
    sim.run_for(ELECTION_TIMEOUT)?;
    let idle = sim.stats().messages_sent - before;
    claim!(sim, idle <= 2 * 60, "{idle} messages in an idle second");
    Ok(())
}

#[test]
fn count_bounds_messages_for_election_agreement_and_idleness() {
    sweep(
        "count_bounds_messages_for_election_agreement_and_idleness",
        50,
        count,
    );
}

/// Every scenario of this file, for the speed benchmark (benches/sim_speed.rs).
#[allow(dead_code)]
pub const SCENARIOS: &[sim::Scenario] = &[
    ("basic_agree", basic_agree),
    ("rpc_bytes", rpc_bytes),
    ("fail_agree", fail_agree),
    ("fail_no_agree", fail_no_agree),
    ("concurrent_starts", concurrent_starts),
    ("rejoin", rejoin),
    ("backup", backup),
    ("count", count),
];
