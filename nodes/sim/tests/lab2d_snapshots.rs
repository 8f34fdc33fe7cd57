//! Lab 2D equivalents: the application snapshots every 10 applied entries;
//! the log stays small; lagging or restarted followers catch up through
//! InstallSnapshot, on reliable and lossy networks and across crashes.

use sim::lab::{self, command};
use sim::{claim, sweep, LogMachine, NetConfig, Sim, SimConfig, SimError};

/// 2D's `SnapShotInterval`.
const SNAPSHOT_INTERVAL: u64 = 10;
/// 2D's `MAXLOGSIZE`: persisted Raft state (hard state and log) stays below.
const MAX_LOG_BYTES: usize = 2000;

#[derive(Clone, Copy)]
struct Faults {
    disconnect: bool,
    reliable: bool,
    crash: bool,
}

fn peer(base: u64, offset: u64, nodes: u64) -> u64 {
    (base - 1 + offset) % nodes + 1
}

/// 2D's `snapcommon`: 30 rounds; each round a victim (a follower, or every
/// third round the leader) is cut off or crashed while more than a snapshot
/// interval of commands commits, then it comes back and must catch up.
fn snapshot_rounds(seed: u64, faults: Faults) -> Result<(), SimError> {
    let mut config = SimConfig::new(3, seed);
    config.snapshot_every_entries = Some(SNAPSHOT_INTERVAL);
    // The 24-byte snapshot travels in three chunks, so chunk loss and
    // resending are exercised too.
    config.raft.snapshot_chunk_bytes = 8;
    if !faults.reliable {
        config.net = NetConfig::unreliable();
    }
    let mut sim = Sim::with_log(config)?;
    let value = |sim: &mut Sim<LogMachine>| command(sim.rng().below(1 << 40));
    let cmd = value(&mut sim);
    lab::one(&mut sim, &cmd, 3, true)?;
    let mut leader1 = lab::check_one_leader(&mut sim)?;
    for round in 0..30 {
        let (mut victim, mut sender) = (peer(leader1, 1, 3), leader1);
        if round % 3 == 1 {
            sender = peer(leader1, 1, 3);
            victim = leader1;
        }
        if faults.disconnect {
            sim.disconnect(victim);
            let cmd = value(&mut sim);
            lab::one(&mut sim, &cmd, 2, true)?;
        }
        if faults.crash {
            sim.crash(victim);
            let cmd = value(&mut sim);
            lab::one(&mut sim, &cmd, 2, true)?;
        }
        for _ in 0..=SNAPSHOT_INTERVAL {
            let cmd = value(&mut sim);
            let _ = sim.propose(sender, cmd);
        }
        let expected = if faults.disconnect || faults.crash {
            2
        } else {
            3
        };
        let cmd = value(&mut sim);
        lab::one(&mut sim, &cmd, expected, true)?;
        for &n in sim.ids() {
            let bytes = sim.persisted(n).map_or(0, |p| p.raft_state_bytes());
            claim!(
                sim,
                bytes <= MAX_LOG_BYTES,
                "node {n} keeps {bytes} bytes of Raft state (limit {MAX_LOG_BYTES})"
            );
        }
        if faults.disconnect {
            sim.connect(victim);
            let cmd = value(&mut sim);
            lab::one(&mut sim, &cmd, 3, true)?;
            leader1 = lab::check_one_leader(&mut sim)?;
        }
        if faults.crash {
            sim.restart(victim)?;
            sim.connect(victim);
            let cmd = value(&mut sim);
            lab::one(&mut sim, &cmd, 3, true)?;
            leader1 = lab::check_one_leader(&mut sim)?;
        }
    }
    for &n in sim.ids() {
        let snapshot = sim.persisted(n).map_or(0, |p| p.snapshot_index());
        claim!(
            sim,
            snapshot > 0,
            "node {n} never took or received a snapshot"
        );
    }
    if faults.disconnect || faults.crash {
        let installs = sim
            .stats()
            .sent_by_kind
            .get("InstallSnapshot")
            .copied()
            .unwrap_or(0);
        claim!(sim, installs > 0, "no follower ever needed InstallSnapshot");
    }
    // Nodes at the same applied index hold the same state machine.
    let states: Vec<_> = sim.ids().iter().filter_map(|&n| sim.machine(n)).collect();
    for pair in states.windows(2) {
        if pair[0].last_index == pair[1].last_index {
            claim!(
                sim,
                pair[0] == pair[1],
                "state machines differ at index {}: {:?}",
                pair[0].last_index,
                pair
            );
        }
    }
    Ok(())
}

#[test]
fn snapshot_basic_keeps_the_log_small() {
    sweep("snapshot_basic_keeps_the_log_small", 25, snapshot_basic);
}

#[test]
fn snapshot_install_brings_back_a_disconnected_follower() {
    sweep(
        "snapshot_install_brings_back_a_disconnected_follower",
        25,
        snapshot_install,
    );
}

#[test]
fn snapshot_install_works_on_a_lossy_network() {
    sweep(
        "snapshot_install_works_on_a_lossy_network",
        25,
        snapshot_install_unreliable,
    );
}

#[test]
fn snapshot_install_brings_back_a_crashed_node() {
    sweep(
        "snapshot_install_brings_back_a_crashed_node",
        25,
        snapshot_install_crash,
    );
}

#[test]
fn snapshot_install_brings_back_a_crashed_node_on_a_lossy_network() {
    sweep(
        "snapshot_install_brings_back_a_crashed_node_on_a_lossy_network",
        25,
        snapshot_install_crash_unreliable,
    );
}

fn snapshot_basic(seed: u64) -> Result<(), SimError> {
    snapshot_rounds(
        seed,
        Faults {
            disconnect: false,
            reliable: true,
            crash: false,
        },
    )
}

fn snapshot_install(seed: u64) -> Result<(), SimError> {
    snapshot_rounds(
        seed,
        Faults {
            disconnect: true,
            reliable: true,
            crash: false,
        },
    )
}

fn snapshot_install_unreliable(seed: u64) -> Result<(), SimError> {
    snapshot_rounds(
        seed,
        Faults {
            disconnect: true,
            reliable: false,
            crash: false,
        },
    )
}

fn snapshot_install_crash(seed: u64) -> Result<(), SimError> {
    snapshot_rounds(
        seed,
        Faults {
            disconnect: false,
            reliable: true,
            crash: true,
        },
    )
}

fn snapshot_install_crash_unreliable(seed: u64) -> Result<(), SimError> {
    snapshot_rounds(
        seed,
        Faults {
            disconnect: false,
            reliable: false,
            crash: true,
        },
    )
}

/// Every scenario of this file, for the speed benchmark (benches/sim_speed.rs).
#[allow(dead_code)]
pub const SCENARIOS: &[sim::Scenario] = &[
    ("snapshot_basic", snapshot_basic),
    ("snapshot_install", snapshot_install),
    ("snapshot_install_unreliable", snapshot_install_unreliable),
    ("snapshot_install_crash", snapshot_install_crash),
    (
        "snapshot_install_crash_unreliable",
        snapshot_install_crash_unreliable,
    ),
];
