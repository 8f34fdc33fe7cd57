//! Speed of the Raft core in the simulator, printed with its setup (never
//! asserted): committed entries per second of wall time for 3 and 5 nodes,
//! with batching (default) and without (one entry per AppendEntries), and
//! simulated seeds per second of the whole scenario suite (every scenario of
//! tests/*.rs except the mutation tests, once per seed).
//!
//! `cargo bench -p sim` (env: SIM_BENCH_SEEDS=n seeds, default 100;
//! SIM_BENCH_ENTRIES=n entries per throughput run, default 200000;
//! SIM_BENCH_THREADS=n, default: available cores).

#[path = "../tests/chaos.rs"]
#[allow(dead_code, unused_imports)]
mod chaos;
#[path = "../tests/lab2a_election.rs"]
#[allow(dead_code, unused_imports)]
mod lab2a;
#[path = "../tests/lab2b_agreement.rs"]
#[allow(dead_code, unused_imports)]
mod lab2b;
#[path = "../tests/lab2c_persistence.rs"]
#[allow(dead_code, unused_imports)]
mod lab2c;
#[path = "../tests/lab2d_snapshots.rs"]
#[allow(dead_code, unused_imports)]
mod lab2d;
#[path = "../tests/leadership_transfer.rs"]
#[allow(dead_code, unused_imports)]
mod leadership_transfer;
#[path = "../tests/prevote_checkquorum.rs"]
#[allow(dead_code, unused_imports)]
mod prevote_checkquorum;
#[path = "../tests/read_index.rs"]
#[allow(dead_code, unused_imports)]
mod read_index;

use sim::{lab, SimConfig, SimError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sim::Scenario;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Closed loop: keep up to 1024 uncommitted 128-byte commands at the leader
/// and measure how fast the cluster commits `target` of them.
fn throughput(nodes: usize, batching: bool, target: u64) -> Result<(), SimError> {
    let mut config = SimConfig::new(nodes, 1);
    if !batching {
        config.raft.max_message_bytes = 1;
    }
    let mut sim = sim::Sim::with_log(config)?;
    let leader = lab::check_one_leader(&mut sim)?;
    let base = sim.max_applied_index();
    let virtual_start = sim.now();
    let events_start = sim.events_processed();
    let messages_start = sim.stats().messages_sent;
    let mut last_proposed = base;
    let mut payload = vec![0u8; 128];
    let wall = Instant::now();
    while sim.max_applied_index() < base + target {
        while last_proposed < sim.max_applied_index() + 1024 {
            payload[..8].copy_from_slice(&last_proposed.to_le_bytes());
            match sim.propose(leader, payload.clone()) {
                Ok(index) => last_proposed = index,
                Err(e) => {
                    return Err(SimError::Claim {
                        at_us: sim.now_us(),
                        message: format!("propose: {e}"),
                    })
                }
            }
        }
        sim.run_for(Duration::from_millis(1))?;
    }
    let wall_s = wall.elapsed().as_secs_f64();
    let committed = sim.max_applied_index() - base;
    let virtual_s = (sim.now() - virtual_start).as_secs_f64();
    println!(
        "throughput  nodes={nodes} batching={:<5}  {:>9.0} entries/s wall  ({committed} entries in {wall_s:.2} s wall; {:.0} entries/s virtual; {} messages, {} events)",
        batching,
        committed as f64 / wall_s,
        committed as f64 / virtual_s,
        sim.stats().messages_sent - messages_start,
        sim.events_processed() - events_start,
    );
    Ok(())
}

fn suite() -> Vec<Scenario> {
    [
        lab2a::SCENARIOS,
        lab2b::SCENARIOS,
        lab2c::SCENARIOS,
        lab2d::SCENARIOS,
        prevote_checkquorum::SCENARIOS,
        read_index::SCENARIOS,
        leadership_transfer::SCENARIOS,
        chaos::SCENARIOS,
    ]
    .concat()
}

fn main() {
    let seeds = env_u64("SIM_BENCH_SEEDS", 100);
    let entries = env_u64("SIM_BENCH_ENTRIES", 200_000);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = env_u64("SIM_BENCH_THREADS", cores as u64).max(1);
    let scenarios = suite();
    println!(
        "sim_speed: {cores} cores available, {threads} threads for the suite, profile: {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release (bench)"
        }
    );
    println!("setup: 1 tick = 10 ms virtual, heartbeat 100 ms, election timeout 0.5-1 s; 128-byte commands; reliable network 0.1-1 ms");
    for nodes in [3, 5] {
        for batching in [true, false] {
            if let Err(e) = throughput(nodes, batching, entries) {
                println!("throughput nodes={nodes} batching={batching} failed: {e}");
            }
        }
    }

    println!(
        "suite: {} scenarios per seed, {seeds} seeds",
        scenarios.len()
    );
    let next_seed = AtomicU64::new(1);
    let failures: Mutex<Vec<(u64, &str, String)>> = Mutex::new(Vec::new());
    let per_scenario: Mutex<Vec<Duration>> = Mutex::new(vec![Duration::ZERO; scenarios.len()]);
    let wall = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let seed = next_seed.fetch_add(1, Ordering::Relaxed);
                if seed > seeds {
                    break;
                }
                for (i, (name, scenario)) in scenarios.iter().enumerate() {
                    let started = Instant::now();
                    let result = scenario(seed);
                    if let Ok(mut times) = per_scenario.lock() {
                        times[i] += started.elapsed();
                    }
                    if let Err(error) = result {
                        if let Ok(mut f) = failures.lock() {
                            f.push((
                                seed,
                                name,
                                error.to_string().lines().next().unwrap_or("").to_string(),
                            ));
                        }
                    }
                }
            });
        }
    });
    let wall_s = wall.elapsed().as_secs_f64();
    println!(
        "suite: {seeds} seeds x {} scenarios in {wall_s:.1} s wall = {:.1} seeds/s ({:.0} s per 1000 seeds)",
        scenarios.len(),
        seeds as f64 / wall_s,
        1000.0 * wall_s / seeds as f64
    );
    if let Ok(times) = per_scenario.lock() {
        let mut ranked: Vec<(Duration, &str)> = times
            .iter()
            .zip(scenarios.iter())
            .map(|(t, (n, _))| (*t, *n))
            .collect();
        ranked.sort_by_key(|r| std::cmp::Reverse(r.0));
        for (time, name) in ranked.iter().take(6) {
            println!(
                "  slowest: {name:<36} {:.1} ms/seed (cpu)",
                time.as_secs_f64() * 1e3 / seeds as f64
            );
        }
    }
    let failures = failures.into_inner().unwrap_or_default();
    println!("suite failures: {}", failures.len());
    for (seed, name, line) in failures.iter().take(10) {
        println!("  SEED={seed} {name}: {line}");
    }
}
