//! The MapReduce crash test on a local namespace cluster, short: 3 nodes, a 3-replica
//! coordinator, 3 workers, small word-count inputs; the nemesis kills a worker and the
//! coordinator's leader (which restarts from its WAL). The output must equal the sequential
//! run's, workers must not exit early, and both kills must have happened. Then the same check
//! must reject a run whose output was cut in half (the truncate-output mutation).
//!
//! Needs root and `make deps` (see local_cluster.rs), and the `mapreduce` binary built into the
//! same target directory (`make test` builds every binary first).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use control::cluster::local::check_prerequisites;
use control::mr::{self, MrFault, MrOptions};

fn ready() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: local cluster tests need root (network namespaces)");
        return false;
    }
    if let Err(e) = check_prerequisites() {
        panic!("local cluster prerequisite missing: {e}");
    }
    true
}

/// `mapreduce` in the target directory this test was built into (target/<profile>/mapreduce).
fn mapreduce_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let binary = profile_dir.join("mapreduce");
    assert!(
        binary.exists(),
        "{} is missing: build it first (`cargo build -p mapreduce`; `make test` does)",
        binary.display()
    );
    binary
}

fn seed() -> u64 {
    std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(11)
}

#[test]
fn word_count_survives_killed_workers_and_a_killed_coordinator_leader() {
    if !ready() {
        return;
    }
    let seed = seed();
    println!("SEED={seed}");
    let root = tempfile::tempdir().unwrap();
    let mut options = MrOptions::new("mapreduce-wc");
    options.nodes = 3;
    options.workers = 3;
    options.input_files = 6;
    options.input_bytes_per_file = 20_000;
    options.n_reduce = 6;
    options.task_timeout = Duration::from_secs(2);
    options.task_delay = Duration::from_millis(800);
    options.faults = [MrFault::KillWorker, MrFault::KillLeader].into();
    options.first_fault_after = Duration::from_millis(1500);
    options.fault_interval = Duration::from_millis(1000);
    options.fault_duration = Duration::from_millis(1500);
    options.job_deadline = Duration::from_secs(60);
    options.exit_grace = Duration::from_secs(15);
    options.seed = seed;
    options.results_root = root.path().to_path_buf();
    options.mapreduce_binary = Some(mapreduce_binary());
    let outcome = mr::run(&options, &AtomicBool::new(false)).unwrap();
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(outcome.run_dir.join("results.json")).unwrap(),
    )
    .unwrap();
    let report = std::fs::read_to_string(outcome.run_dir.join("report.html")).unwrap();
    assert!(
        outcome.valid,
        "SEED={seed}: failed {:?}, errors {:?}\n{}",
        outcome.failed_checks,
        outcome.errors,
        serde_json::to_string_pretty(&results["checks"]).unwrap()
    );
    // The claims behind `valid`, checked from the written results themselves.
    assert_eq!(results["checks"]["output"]["valid"], true);
    assert!(
        results["checks"]["output"]["expected_lines"]
            .as_u64()
            .unwrap()
            > 100
    );
    assert_eq!(results["checks"]["early_exit"]["valid"], true);
    let applied = &results["checks"]["faults_happened"]["applied"];
    assert!(applied["kill-worker"].as_u64().unwrap() >= 1, "{applied}");
    assert!(applied["kill-leader"].as_u64().unwrap() >= 1, "{applied}");
    // A killed leader means a second election, seen by the monitor; a killed worker means a
    // replacement was started.
    assert!(
        results["leader_elections"].as_u64().unwrap() >= 2,
        "{results}"
    );
    assert!(
        results["workers_started"].as_u64().unwrap() > 3,
        "{results}"
    );
    let killed_leader = outcome
        .events
        .iter()
        .find(|e| e.fault == Some(MrFault::KillLeader) && e.phase == "start")
        .unwrap();
    let restarted = outcome
        .events
        .iter()
        .find(|e| e.fault == Some(MrFault::KillLeader) && e.phase == "stop")
        .unwrap();
    assert!(restarted.time > killed_leader.time);
    assert_eq!(restarted.process, killed_leader.process);
    for name in ["events.jsonl", "progress.jsonl", "output"] {
        assert!(outcome.run_dir.join(name).exists(), "{name} missing");
    }
    assert!(report.contains("kill-leader") && report.contains("<svg"));
    let logs = std::fs::read_dir(outcome.run_dir.join("nodes/n1"))
        .unwrap()
        .count();
    assert!(logs > 0, "no logs collected from n1");
}

#[test]
fn a_truncated_output_file_fails_the_run() {
    if !ready() {
        return;
    }
    let seed = seed();
    println!("SEED={seed}");
    let root = tempfile::tempdir().unwrap();
    let mut options = MrOptions::new("mapreduce-mutation");
    options.nodes = 2;
    options.workers = 2;
    options.input_files = 4;
    options.input_bytes_per_file = 20_000;
    options.n_reduce = 4;
    options.task_delay = Duration::ZERO;
    options.faults = Default::default();
    options.job_deadline = Duration::from_secs(60);
    options.exit_grace = Duration::from_secs(15);
    options.seed = seed;
    options.results_root = root.path().to_path_buf();
    options.mapreduce_binary = Some(mapreduce_binary());
    options.mutation = Some("truncate-output".into());
    let outcome = mr::run(&options, &AtomicBool::new(false)).unwrap();
    assert!(!outcome.valid, "SEED={seed}: a truncated output passed");
    assert!(
        outcome.failed_checks.contains(&"output".to_string()),
        "{:?}",
        outcome.failed_checks
    );
    let results: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(outcome.run_dir.join("results.json")).unwrap(),
    )
    .unwrap();
    let output = &results["checks"]["output"];
    assert!(
        output["actual_lines"].as_u64().unwrap() < output["expected_lines"].as_u64().unwrap(),
        "{output}"
    );
    assert!(
        !output["missing"].as_array().unwrap().is_empty(),
        "{output}"
    );
}
