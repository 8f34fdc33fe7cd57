//! End-to-end against our KV service: the `node` daemon on a local namespace cluster under
//! partitions, kills and pauses, checked; and the stale-reads mutation, which the same check
//! must reject. Short versions of `make test-linearizability` for CI.
//!
//! Needs root and `make deps` (see local_cluster.rs), and the `node` binary built into the
//! same target directory (`make test` builds every binary first).

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use control::analyze::Validity;
use control::cluster::local::check_prerequisites;

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

/// `node` in the target directory this test was built into (target/<profile>/node).
fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let node = profile_dir.join("node");
    assert!(
        node.exists(),
        "{} is missing: build it first (`cargo build -p node`; `make test` does)",
        node.display()
    );
    node
}

fn short_test(
    name: &str,
    workload: &str,
    nemesis: &str,
    root: &Path,
) -> control::runner::TestOptions {
    let mut options = control::runner::TestOptions::new(name);
    options.db = "ours".into();
    options.workload = workload.into();
    options.nodes = 3;
    options.time = Duration::from_secs(14);
    options.faulty = Duration::from_secs(3);
    options.healed = Duration::from_secs(1);
    options.recovery = Duration::from_secs(2);
    options.nemesis = control::nemesis::parse_kinds(nemesis).unwrap();
    options.concurrency = 6;
    options.rate = 300;
    options.results_root = root.to_path_buf();
    options.progress = false;
    options.node_binary = Some(node_binary());
    options.seed = 7;
    options
}

fn ops_ok(run_dir: &Path) -> u64 {
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("results.json")).unwrap())
            .unwrap();
    results["ops"]["ok"].as_u64().unwrap_or(0)
}

#[test]
fn our_kv_stays_linearizable_under_partitions_kills_and_pauses() {
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let not_interrupted = AtomicBool::new(false);
    for workload in ["kv", "register"] {
        let options = short_test(workload, workload, "partition,kill,pause", root.path());
        let outcome = control::runner::run_test(&options, &not_interrupted).unwrap();
        assert_eq!(outcome.validity, Validity::Valid, "{workload}: {outcome:?}");
        let ok = ops_ok(&outcome.run_dir);
        assert!(ok > 200, "{workload}: only {ok} ok operations");
        for node in ["n1", "n2", "n3"] {
            assert!(
                outcome
                    .run_dir
                    .join("nodes")
                    .join(node)
                    .join("node.log")
                    .exists(),
                "{workload}: no log collected from {node}"
            );
        }
    }
}

#[test]
fn the_stale_reads_mutation_is_caught() {
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let not_interrupted = AtomicBool::new(false);
    let mut options = short_test("stale", "kv", "partition", root.path());
    options.mutation = Some("stale-reads".into());
    let outcome = control::runner::run_test(&options, &not_interrupted).unwrap();
    assert_eq!(outcome.validity, Validity::Invalid, "{outcome:?}");
}
