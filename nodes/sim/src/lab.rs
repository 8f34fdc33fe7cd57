//! The 6.824 Raft tester's helpers (src/raft/config.go), rewritten for the
//! simulator: they run virtual time forward instead of sleeping, and fail
//! with a [`SimError::Claim`] instead of `t.Fatalf`.
//!
//! "Connected" means what labrpc means: not `disconnect`ed (partitions made
//! with [`Sim::partition`] are invisible to these helpers, as in the lab).

use crate::cluster::Sim;
use crate::error::SimError;
use crate::machine::StateMachine;
use raft::{Index, NodeId, Role, Term};
use std::time::Duration;

/// The lab's `RaftElectionTimeout`: a healthy cluster elects within this.
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// `checkOneLeader` gives up after 10 tries of ~500 ms.
pub const LEADER_DEADLINE: Duration = Duration::from_secs(5);
/// `one()` gives up after 10 s.
pub const AGREEMENT_DEADLINE: Duration = Duration::from_secs(10);
/// `one()` waits this long for one attempt to commit.
pub const ATTEMPT_DEADLINE: Duration = Duration::from_secs(2);

/// A command whose bytes are `value` (8 bytes, little endian).
pub fn command(value: u64) -> Vec<u8> {
    value.to_le_bytes().to_vec()
}

/// Live, connected nodes: the ones the lab's tester looks at.
pub fn connected<S: StateMachine>(sim: &Sim<S>) -> Vec<NodeId> {
    sim.ids()
        .iter()
        .copied()
        .filter(|&n| sim.is_up(n) && sim.is_connected(n))
        .collect()
}

/// The leader of the highest term among live connected nodes, if that
/// leader's term is at least every other live connected node's term.
pub fn current_leader<S: StateMachine>(sim: &Sim<S>) -> Option<NodeId> {
    let mut best: Option<(NodeId, Term)> = None;
    let mut max_term = 0;
    for node in connected(sim) {
        let Some(status) = sim.status(node) else {
            continue;
        };
        max_term = max_term.max(status.term);
        if status.role == Role::Leader && best.is_none_or(|(_, t)| status.term > t) {
            best = Some((node, status.term));
        }
    }
    best.filter(|&(_, term)| term >= max_term)
        .map(|(node, _)| node)
}

/// `checkOneLeader`: a leader among the connected nodes within 5 s.
pub fn check_one_leader<S: StateMachine>(sim: &mut Sim<S>) -> Result<NodeId, SimError> {
    let started_us = sim.now_us();
    sim.run_until(LEADER_DEADLINE, |s| current_leader(s).is_some())?;
    current_leader(sim).ok_or_else(|| SimError::Claim {
        at_us: sim.now_us(),
        message: format!(
            "no leader among connected nodes {:?} within {:?} (since {:.3} s)\n{}",
            connected(sim),
            LEADER_DEADLINE,
            started_us as f64 / 1e6,
            sim.describe()
        ),
    })
}

/// `checkTerms`: every connected node is in the same term.
pub fn check_terms<S: StateMachine>(sim: &Sim<S>) -> Result<Term, SimError> {
    let terms: Vec<(NodeId, Term)> = connected(sim)
        .into_iter()
        .filter_map(|n| sim.status(n).map(|s| (n, s.term)))
        .collect();
    let first = terms.first().map_or(0, |&(_, t)| t);
    if terms.iter().any(|&(_, t)| t != first) {
        return Err(SimError::Claim {
            at_us: sim.now_us(),
            message: format!("connected nodes disagree on the term: {terms:?}"),
        });
    }
    Ok(first)
}

/// `checkNoLeader`: no connected node believes it leads.
pub fn check_no_leader<S: StateMachine>(sim: &Sim<S>) -> Result<(), SimError> {
    for node in connected(sim) {
        if sim.status(node).is_some_and(|s| s.role == Role::Leader) {
            return Err(SimError::Claim {
                at_us: sim.now_us(),
                message: format!("node {node} is leader but expected no leader"),
            });
        }
    }
    Ok(())
}

/// How many nodes applied `index` and whether it is `command` there.
fn committed_as<S: StateMachine>(sim: &Sim<S>, index: Index, command: &[u8]) -> (usize, bool) {
    let (count, record) = sim.n_committed(index);
    (count, record.is_some_and(|r| r.data == command))
}

/// `one(cmd, expectedServers, retry)`: submits `command` to whichever
/// connected node is leader and waits until at least `expected` nodes applied
/// it; retries for up to 10 s (if `retry`, also after a failed attempt).
pub fn one<S: StateMachine>(
    sim: &mut Sim<S>,
    command: &[u8],
    expected: usize,
    retry: bool,
) -> Result<Index, SimError> {
    let started_us = sim.now_us();
    let deadline_us = started_us + AGREEMENT_DEADLINE.as_micros() as u64;
    let mut starting = 0usize;
    while sim.now_us() < deadline_us {
        let ids = sim.ids().to_vec();
        let mut index = None;
        for offset in 0..ids.len() {
            let node = ids[(starting + offset) % ids.len()];
            if !sim.is_up(node) || !sim.is_connected(node) {
                continue;
            }
            if let Ok(at) = sim.propose(node, command.to_vec()) {
                index = Some(at);
                starting = (starting + offset + 1) % ids.len();
                break;
            }
        }
        if let Some(index) = index {
            sim.run_until(ATTEMPT_DEADLINE, |s| {
                let (count, same) = committed_as(s, index, command);
                count >= expected && same
            })?;
            let (count, same) = committed_as(sim, index, command);
            if count >= expected && same {
                return Ok(index);
            }
            if !retry {
                return Err(SimError::Claim {
                    at_us: sim.now_us(),
                    message: format!(
                        "one({command:?}) failed to reach agreement on {expected} nodes at index {index} ({count} applied, ours: {same})"
                    ),
                });
            }
        } else {
            sim.run_for(Duration::from_millis(50))?;
        }
    }
    Err(SimError::Claim {
        at_us: sim.now_us(),
        message: format!(
            "one({command:?}) failed to reach agreement on {expected} nodes within {AGREEMENT_DEADLINE:?}\n{}",
            sim.describe()
        ),
    })
}

/// `wait(index, n, startTerm)`: waits (lab-style, up to ~10 s) until `n`
/// nodes applied `index`; gives up early with `None` if some node moved past
/// `start_term` (the caller's leader lost its term).
pub fn wait<S: StateMachine>(
    sim: &mut Sim<S>,
    index: Index,
    n: usize,
    start_term: Term,
) -> Result<Option<Vec<u8>>, SimError> {
    let moved_on = |s: &Sim<S>| {
        s.ids()
            .iter()
            .any(|&id| s.status(id).is_some_and(|st| st.term > start_term))
    };
    sim.run_until(Duration::from_secs(10), |s| {
        s.n_committed(index).0 >= n || moved_on(s)
    })?;
    let (count, record) = sim.n_committed(index);
    if count >= n {
        return Ok(record.map(|r| r.data.clone()));
    }
    if moved_on(sim) {
        return Ok(None);
    }
    Err(SimError::Claim {
        at_us: sim.now_us(),
        message: format!("only {count} nodes applied index {index}, wanted {n}"),
    })
}

/// Several `one()` calls running concurrently (the lab starts them in
/// goroutines): every command is proposed to a leader, re-proposed when an
/// attempt fails or stalls for 2 s, until each is applied on `expected`
/// nodes; all within 10 s. Returns the index of each command.
pub fn many<S: StateMachine>(
    sim: &mut Sim<S>,
    commands: &[Vec<u8>],
    expected: usize,
) -> Result<Vec<Index>, SimError> {
    let deadline_us = sim.now_us() + AGREEMENT_DEADLINE.as_micros() as u64;
    let attempt_us = ATTEMPT_DEADLINE.as_micros() as u64;
    // Per command: Some((index, proposed at)) while an attempt is pending.
    let mut attempts: Vec<Option<(Index, u64)>> = vec![None; commands.len()];
    let mut done: Vec<Option<Index>> = vec![None; commands.len()];
    while sim.now_us() < deadline_us {
        for (i, cmd) in commands.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            if let Some((index, since_us)) = attempts[i] {
                let (count, same) = committed_as(sim, index, cmd);
                if same && count >= expected {
                    done[i] = Some(index);
                    continue;
                }
                let lost = sim.applied_at(index).is_some_and(|r| r.data != *cmd);
                if !lost && sim.now_us() < since_us + attempt_us {
                    continue;
                }
                attempts[i] = None;
            }
            for node in connected(sim) {
                if let Ok(index) = sim.propose(node, cmd.clone()) {
                    attempts[i] = Some((index, sim.now_us()));
                    break;
                }
            }
        }
        if done.iter().all(Option::is_some) {
            return Ok(done.into_iter().flatten().collect());
        }
        sim.run_for(Duration::from_millis(10))?;
    }
    let missing = done.iter().filter(|d| d.is_none()).count();
    Err(SimError::Claim {
        at_us: sim.now_us(),
        message: format!(
            "{missing} of {} concurrent commands did not reach {expected} nodes within {AGREEMENT_DEADLINE:?}",
            commands.len()
        ),
    })
}
