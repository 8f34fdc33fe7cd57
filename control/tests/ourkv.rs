//! End-to-end against our KV service: the `node` daemon on a local namespace cluster under
//! partitions, kills and pauses, checked; and the stale-reads mutation, which the same check
//! must reject. Short versions of `make test-linearizability` for CI.
//!
//! Needs root and `make deps` (see local_cluster.rs), and the `node` binary built into the
//! same target directory (`make test` builds every binary first).

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use control::analyze::Validity;

fn short_test(
    name: &str,
    workload: &str,
    nemesis: &str,
    root: &Path,
) -> control::runner::TestOptions {
    let mut options = common::short_test(name, "ours", workload, nemesis, root, common::seed(7));
    options.time = Duration::from_secs(14);
    options.node_binary = Some(common::node_binary());
    options
}

#[test]
fn our_kv_stays_linearizable_under_partitions_kills_and_pauses() {
    if !common::ready(&[]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    for workload in ["kv", "register"] {
        let options = short_test(workload, workload, "partition,kill,pause", root.path());
        common::assert_valid_short_run(&options, "node.log");
    }
}

#[test]
fn the_stale_reads_mutation_is_caught() {
    if !common::ready(&[]) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let not_interrupted = AtomicBool::new(false);
    let mut options = short_test("stale", "kv", "partition", root.path());
    options.mutation = Some("stale-reads".into());
    let outcome = control::runner::run_test(&options, &not_interrupted).unwrap();
    assert_eq!(outcome.validity, Validity::Invalid, "{outcome:?}");
    common::assert_final_reads_cover_every_written_key(&outcome.run_dir);
}
