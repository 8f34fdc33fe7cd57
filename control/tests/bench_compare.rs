//! `control bench-compare` end to end, tiny: both systems on a local namespace cluster, one
//! workload, two client counts and one open-loop rate, about 2 s each. Checks the results
//! folder's contract (results.json rows and setup, `latest`), that every cell of both systems
//! completed operations, and that report.html carries every figure.
//!
//! Needs root, `make deps` (etcd-server, etcd-client) and the `node` binary built into the
//! same target directory (`cargo build -p node`). No speed is asserted: speed is what the
//! benchmark reports, not what a test may demand.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use control::bench::system::System;
use control::bench::ycsb::Workload;
use control::bench::{BenchOptions, Rate};
use serde_json::Value;

fn ready() -> bool {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: bench-compare needs root (network namespaces)");
        return false;
    }
    if let Err(e) = control::cluster::local::check_prerequisites() {
        panic!("local cluster prerequisite missing: {e}");
    }
    assert!(
        Path::new(control::etcd::DEFAULT_BINARY).exists(),
        "etcd is missing: install the Debian packages etcd-server and etcd-client (`make deps`)"
    );
    true
}

/// `node` in the target directory this test was built into (target/<profile>/node).
fn node_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(Path::parent).unwrap();
    let node = profile_dir.join("node");
    assert!(
        node.exists(),
        "{} is missing: build it first (`cargo build -p node`)",
        node.display()
    );
    node
}

fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    eprintln!("SEED={seed}");
    seed
}

#[test]
fn help_names_every_knob() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_control"))
        .args(["bench-compare", "--help"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for flag in [
        "--warmup",
        "--duration",
        "--clients",
        "--workloads",
        "--systems",
        "--connect",
        "--rates",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_control"))
        .args(["bench-compare", "--workloads", "z"])
        .output()
        .unwrap();
    assert_eq!(
        bad.status.code(),
        Some(2),
        "a bad workload is a usage error"
    );
}

#[test]
fn tiny_comparison_of_ours_and_etcd_writes_results_and_report() {
    if !ready() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let options = BenchOptions {
        systems: vec![System::Ours, System::Etcd],
        workloads: vec![Workload::A],
        clients: vec![1, 8],
        warmup: Duration::from_millis(500),
        duration: Duration::from_secs(2),
        records: 200,
        rates: vec![Rate::PerSecond(200.0)],
        open_clients: 8,
        seed: seed(),
        results_root: root.path().to_path_buf(),
        node_binary: Some(node_binary()),
        ..BenchOptions::default()
    };
    let outcome = control::bench::run(&options, &Arc::new(AtomicBool::new(false))).unwrap();
    assert!(outcome.errors.is_empty(), "{:?}", outcome.errors);
    let table = control::bench::table(&outcome.rows);
    eprintln!("{table}");

    // The folder and its `latest` link.
    let latest = root.path().join("bench-compare/latest");
    assert_eq!(
        std::fs::canonicalize(&latest).unwrap(),
        std::fs::canonicalize(&outcome.run_dir).unwrap()
    );
    let results: Value =
        serde_json::from_str(&std::fs::read_to_string(latest.join("results.json")).unwrap())
            .unwrap();

    // Every cell of each system: 2 closed-loop client counts and 1 open-loop rate.
    let rows = results["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 6, "{rows:#?}");
    for system in ["ours", "etcd"] {
        let mine: Vec<&Value> = rows.iter().filter(|r| r["system"] == system).collect();
        assert_eq!(mine.len(), 3, "{system}: {mine:#?}");
        let closed: Vec<u64> = mine
            .iter()
            .filter(|r| r["mode"] == "closed")
            .map(|r| r["clients"].as_u64().unwrap())
            .collect();
        assert_eq!(closed, vec![1, 8], "{system}");
        let open: Vec<&&Value> = mine.iter().filter(|r| r["mode"] == "open").collect();
        assert_eq!(open.len(), 1, "{system}");
        assert_eq!(open[0]["target_rate"], 200.0);
        assert!(open[0]["send_lag_p99_ms"].is_number(), "{:#?}", open[0]);
        // Only requests due in the window count: at most 200/s x 2 s of them.
        assert!(
            open[0]["ops_per_sec"].as_f64().unwrap() <= 200.5,
            "{:#?}",
            open[0]
        );
        for row in &mine {
            assert_eq!(row["workload"], "a");
            let ok = row["ok"].as_u64().unwrap();
            assert!(ok > 0, "{system}: no ok operations in {row:#?}");
            assert!(row["ops_per_sec"].as_f64().unwrap() > 0.0);
            for field in ["p50_ms", "p99_ms", "p999_ms", "max_ms"] {
                assert!(row[field].as_f64().unwrap() > 0.0, "{system} {field}");
            }
            let (p50, p99, p999) = (
                row["p50_ms"].as_f64().unwrap(),
                row["p99_ms"].as_f64().unwrap(),
                row["p999_ms"].as_f64().unwrap(),
            );
            assert!(
                p50 <= p99 && p99 <= p999,
                "{system}: percentiles out of order"
            );
            assert!(row["errors"].is_u64());
            let series = row["throughput_over_time"]["ok_per_sec"]
                .as_array()
                .unwrap();
            assert_eq!(series.len(), 8, "2 s in 250 ms bins");
            assert!(row["cpu"]["server_cpu_us_per_op"].as_f64().unwrap() > 0.0);
        }
    }

    // The setup says what was run and how clients connect.
    let setup = &results["setup"];
    assert!(setup["machine"]["cores"].as_u64().unwrap() >= 1);
    assert_eq!(setup["value_bytes"], 1024);
    assert_eq!(setup["records"], 200);
    assert_eq!(setup["connect"], "leader");
    assert!(setup["connect_description"]
        .as_str()
        .unwrap()
        .contains("leader"));
    assert!(setup["versions"]["etcd"].as_str().unwrap().contains("3."));
    assert_eq!(setup["warmup_s"], 0.5);
    assert_eq!(setup["duration_s"], 2.0);
    for system in ["ours", "etcd"] {
        assert!(
            results["systems"][system]["leader"].is_string(),
            "{system}: {:#?}",
            results["systems"]
        );
    }

    // The report: self-contained, with every figure.
    let html = std::fs::read_to_string(latest.join("report.html")).unwrap();
    for id in [
        "results-table",
        "throughput",
        "latency-p50",
        "latency-p99",
        "latency-p999",
        "percentiles-a",
        "timeline-a",
        "open-loop",
        "open-loop-achieved",
        "profile",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "report lacks {id}");
    }
    assert!(html.matches("<svg").count() >= 8);
    assert!(!html.contains("<script") && !html.contains("src="));
    // Both systems' node logs were collected.
    for dir in ["ours-n1", "etcd-n1"] {
        let logs = outcome.run_dir.join("nodes").join(dir);
        assert!(
            std::fs::read_dir(&logs).unwrap().next().is_some(),
            "{} is empty",
            logs.display()
        );
    }
}
