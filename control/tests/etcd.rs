//! End-to-end against etcd 3.4 (the Debian package `etcd-server`): one member per node of a
//! local namespace cluster under partitions, kills and pauses, checked. With etcd's default
//! (linearizable) reads the history must check as linearizable; with serializable
//! (member-local) reads under partitions the same check must find a stale read.
//!
//! Needs root and `make deps` (etcd-server, etcd-client). `SEED=n` replays a run's choices
//! (faults and operations; etcd's own timing is not replayable).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use control::analyze::Validity;
use control::cluster::local::check_prerequisites;

fn ready() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: etcd cluster tests need root (network namespaces)");
        return false;
    }
    if let Err(e) = check_prerequisites() {
        panic!("local cluster prerequisite missing: {e}");
    }
    for binary in [control::etcd::DEFAULT_BINARY, control::etcd::ETCDCTL] {
        assert!(
            Path::new(binary).exists(),
            "{binary} is missing: install the Debian packages etcd-server and etcd-client \
             (`make deps`)"
        );
    }
    true
}

fn seed(default: u64) -> u64 {
    std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

fn short_test(
    name: &str,
    workload: &str,
    nemesis: &str,
    root: &Path,
    seed: u64,
) -> control::runner::TestOptions {
    let mut options = control::runner::TestOptions::new(name);
    options.db = "etcd".into();
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

fn ops_ok(run_dir: &Path) -> u64 {
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("results.json")).unwrap())
            .unwrap();
    results["ops"]["ok"].as_u64().unwrap_or(0)
}

#[test]
fn etcd_with_linearizable_reads_checks_valid_under_partitions_kills_and_pauses() {
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let not_interrupted = AtomicBool::new(false);
    let options = short_test(
        "etcd-kv",
        "kv",
        "partition,kill,pause",
        root.path(),
        seed(11),
    );
    let outcome = control::runner::run_test(&options, &not_interrupted).unwrap();
    assert_eq!(outcome.validity, Validity::Valid, "{outcome:?}");
    let ok = ops_ok(&outcome.run_dir);
    assert!(ok > 200, "only {ok} ok operations");
    for node in ["n1", "n2", "n3"] {
        assert!(
            outcome
                .run_dir
                .join("nodes")
                .join(node)
                .join("etcd.log")
                .exists(),
            "no etcd log collected from {node}"
        );
    }
}

#[test]
fn etcd_serializable_reads_under_partitions_are_caught() {
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let not_interrupted = AtomicBool::new(false);
    let mut options = short_test("etcd-serializable", "kv", "partition", root.path(), seed(5));
    options.reads = Some("serializable".into());
    let outcome = control::runner::run_test(&options, &not_interrupted).unwrap();
    assert_eq!(outcome.validity, Validity::Invalid, "{outcome:?}");
}

#[test]
fn etcd_leader_is_found_and_a_killed_member_restarts_with_its_data() {
    use control::cluster::local::{LocalCluster, LocalOptions};
    use control::cluster::Cluster as _;
    use control::db::Db as _;
    if !ready() {
        return;
    }
    let mut cluster = LocalCluster::provision(&LocalOptions {
        nodes: 3,
        ..LocalOptions::default()
    })
    .unwrap();
    let db = control::etcd::EtcdDb::new(control::etcd::DEFAULT_BINARY.into(), "rj-leader-test");
    let nodes = cluster.nodes().to_vec();
    std::thread::scope(|scope| {
        for node in &nodes {
            let (db, cluster) = (&db, &cluster);
            scope.spawn(move || {
                db.setup(cluster, node).unwrap();
                db.start(cluster, node).unwrap();
            });
        }
    });
    // An election takes about one election timeout (1 s) after the members meet.
    let find_leader = |cluster: &LocalCluster| {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(leader) = db.leader(cluster) {
                return leader;
            }
            assert!(std::time::Instant::now() < deadline, "no leader found");
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let leader = find_leader(&cluster);
    assert!(nodes.iter().any(|n| n.name == leader), "leader {leader}");
    // Kill the leader: the others elect a new one; the killed member restarts from its data
    // directory (the --initial-cluster flags are ignored then) and rejoins.
    let node = nodes.iter().find(|n| n.name == leader).unwrap();
    db.kill(&cluster, node).unwrap();
    let next = find_leader(&cluster);
    assert_ne!(next, leader, "a killed member is still reported as leader");
    db.start(&cluster, node).unwrap();
    for node in &nodes {
        db.teardown(&cluster, node).unwrap();
    }
    cluster.teardown().unwrap();
}
