//! The `mapreduce` CLI end to end: gen-input, sequential, and `run` with an
//! unreplicated and with a 3-replica coordinator.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic

use std::path::Path;
use std::process::Command;

use mapreduce::worker::sorted_output_lines;

const BIN: &str = env!("CARGO_BIN_EXE_mapreduce");

fn mapreduce(dir: &Path, args: &[&str]) -> String {
    let output = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "mapreduce {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn run_and_compare(replicas: &str) {
    let dir = tempfile::tempdir().unwrap();
    let dir_flag = format!("--dir={}", dir.path().display());
    let listed = mapreduce(
        dir.path(),
        &[
            "gen-input",
            &dir_flag,
            "--seed=3",
            "--files=4",
            "--bytes-per-file=20000",
        ],
    );
    let files: Vec<&str> = listed.split_whitespace().collect();
    assert_eq!(files.len(), 4);
    let mut args = vec!["sequential", &dir_flag, "--app=indexer"];
    args.extend(&files);
    mapreduce(dir.path(), &args);
    let replicas_flag = format!("--replicas={replicas}");
    let mut args = vec![
        "run",
        &dir_flag,
        "--app=indexer",
        "--workers=2",
        "--quiet",
        &replicas_flag,
    ];
    args.extend(&files);
    mapreduce(dir.path(), &args);
    let mut expected: Vec<String> = std::fs::read_to_string(dir.path().join("mr-correct.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    expected.sort();
    assert!(!expected.is_empty());
    assert_eq!(
        sorted_output_lines(dir.path(), "mr-out-").unwrap(),
        expected
    );
}

#[test]
fn run_with_one_coordinator_matches_sequential() {
    run_and_compare("0");
}

#[test]
fn run_with_three_coordinator_replicas_matches_sequential() {
    run_and_compare("3");
}

#[test]
fn unknown_app_is_refused_with_a_message() {
    let output = Command::new(BIN)
        .args(["run", "--app=nope", "x"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("unknown app"));
}
