//! End-to-end against etcd 3.4 (the Debian package `etcd-server`): one member per node of a
//! local namespace cluster under partitions, kills and pauses, checked. With etcd's default
//! (linearizable) reads the history must check as linearizable; with serializable
//! (member-local) reads under partitions the same check must find a stale read.
//!
//! Needs root and `make deps` (etcd-server, etcd-client). `SEED=n` replays a run's choices
//! (faults and operations; etcd's own timing is not replayable).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use control::analyze::Validity;

fn ready() -> bool {
    common::ready(&[control::etcd::DEFAULT_BINARY, control::etcd::ETCDCTL])
}

fn short_test(
    name: &str,
    workload: &str,
    nemesis: &str,
    root: &Path,
    seed: u64,
) -> control::runner::TestOptions {
    common::short_test(name, "etcd", workload, nemesis, root, common::seed(seed))
}

#[test]
fn etcd_with_linearizable_reads_checks_valid_under_partitions_kills_and_pauses() {
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    for workload in ["kv", "register"] {
        let options = short_test(
            &format!("etcd-{workload}"),
            workload,
            "partition,kill,pause",
            root.path(),
            11,
        );
        common::assert_valid_short_run(&options, "etcd.log");
    }
}

#[test]
fn etcd_serializable_reads_under_partitions_are_caught() {
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let not_interrupted = AtomicBool::new(false);
    let mut options = short_test("etcd-serializable", "kv", "partition", root.path(), 5);
    options.reads = Some("serializable".into());
    let outcome = control::runner::run_test(&options, &not_interrupted).unwrap();
    assert_eq!(outcome.validity, Validity::Invalid, "{outcome:?}");
    common::assert_final_reads_cover_every_written_key(&outcome.run_dir);
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
