//! What the real-cluster tests share: the root/prerequisite gate, the short-run options they
//! start from, and readers of a run's results folder (ok operations, final-read coverage).
//!
//! Each test file that needs it says `mod common;`; not every file uses every helper.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use control::cluster::local::check_prerequisites;
use control::runner::TestOptions;

/// `false` (with the reason printed) when the tests cannot run here; panics when root but a
/// prerequisite is missing (or one of `binaries`), so CI never passes by skipping.
pub fn ready(binaries: &[&str]) -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: local cluster tests need root (network namespaces)");
        return false;
    }
    if let Err(e) = check_prerequisites() {
        panic!("local cluster prerequisite missing: {e}");
    }
    for binary in binaries {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: run `make deps` (etcd needs the Debian packages etcd-server \
             and etcd-client)"
        );
    }
    true
}

/// `SEED` from the environment, else `default`.
pub fn seed(default: u64) -> u64 {
    std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// `node` in the target directory this test was built into (target/<profile>/node).
pub fn node_binary() -> PathBuf {
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

/// A short run of `db` (3 nodes, 3 s faults and 1 s calm, 2 s recovery, 6 clients at 300
/// ops/s) whose results go under `root`. Callers adjust what their suite needs.
pub fn short_test(
    name: &str,
    db: &str,
    workload: &str,
    nemesis: &str,
    root: &Path,
    seed: u64,
) -> TestOptions {
    let mut options = TestOptions::new(name);
    options.db = db.into();
    options.workload = workload.into();
    options.nodes = 3;
    options.time = Duration::from_secs(12);
    options.faulty = Duration::from_secs(3);
    options.healed = Duration::from_secs(1);
    options.recovery = Duration::from_secs(2);
    options.nemesis = control::nemesis::parse_kinds(nemesis).unwrap();
    options.concurrency = 6;
    options.rate = 300;
    options.results_root = root.to_path_buf();
    options.progress = false;
    options.seed = seed;
    options
}

/// A run folder's results.json.
pub fn results(run_dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(run_dir.join("results.json")).unwrap()).unwrap()
}

pub fn ops_ok(run_dir: &Path) -> u64 {
    results(run_dir)["ops"]["ok"].as_u64().unwrap_or(0)
}

/// Asserts that the final-read phase read every key ever written, counted independently from
/// history.jsonl (keys with a write invoked; keys with an ok read marked as a final read) and
/// matching the lost-writes check in results.json. Returns that check for the caller.
pub fn assert_final_reads_cover_every_written_key(run_dir: &Path) -> serde_json::Value {
    let history = control::history::read_history(&run_dir.join("history.jsonl")).unwrap();
    let written: BTreeSet<&str> = history
        .iter()
        .filter(|e| !e.is_final_read() && !matches!(e.f.as_str(), "get" | "read"))
        .filter_map(|e| e.key.as_deref())
        .collect();
    let read: BTreeSet<&str> = history
        .iter()
        .filter(|e| e.is_final_read() && e.kind == control::history::EventType::Ok)
        .filter_map(|e| e.key.as_deref())
        .collect();
    assert!(!written.is_empty(), "no key was written");
    let unread: Vec<&&str> = written.difference(&read).collect();
    assert!(
        unread.is_empty(),
        "written keys never read finally: {unread:?}"
    );
    let check = results(run_dir)["checks"]["lost-writes"].clone();
    assert_eq!(check["keys_written"], written.len(), "{check}");
    assert_eq!(check["keys_read"], check["keys_written"], "{check}");
    assert!(
        check["acknowledged_checked"].as_u64().unwrap() > 0,
        "no acknowledged write was checked: {check}"
    );
    eprintln!(
        "{}: final reads covered {} written keys; {} acknowledged writes checked, {} lost",
        run_dir.display(),
        check["keys_read"],
        check["acknowledged_checked"],
        check["lost_count"]
    );
    check
}

/// Runs `options` and asserts what every healthy short run must show: a valid verdict, more
/// than 200 ok operations, final reads of every written key with nothing lost, and `log`
/// collected from each of the 3 nodes.
pub fn assert_valid_short_run(options: &TestOptions, log: &str) {
    let not_interrupted = std::sync::atomic::AtomicBool::new(false);
    let what = &options.name;
    let outcome = control::runner::run_test(options, &not_interrupted).unwrap();
    assert_eq!(
        outcome.validity,
        control::analyze::Validity::Valid,
        "{what}: {outcome:?}"
    );
    let ok = ops_ok(&outcome.run_dir);
    assert!(ok > 200, "{what}: only {ok} ok operations");
    let lost = assert_final_reads_cover_every_written_key(&outcome.run_dir);
    assert_eq!(lost["valid"], true, "{what}: {lost}");
    assert_logs_collected(&outcome.run_dir, &["n1", "n2", "n3"], log);
}

/// Asserts that every node's log named `log` was collected into the run folder.
pub fn assert_logs_collected(run_dir: &Path, nodes: &[&str], log: &str) {
    for node in nodes {
        assert!(
            run_dir.join("nodes").join(node).join(log).exists(),
            "no {log} collected from {node}"
        );
    }
}
