//! The `control` CLI's documented exit statuses, without a cluster (no root needed).

#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::Path;
use std::process::{Command, Output};

fn control(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_control"))
        .args(args)
        .output()
        .unwrap()
}

fn write_history(dir: &Path, lines: &[&str]) {
    fs::create_dir_all(dir).unwrap();
    fs::write(dir.join("history.jsonl"), lines.join("\n") + "\n").unwrap();
}

#[test]
fn analyze_rechecks_a_stored_history_and_sets_the_exit_status() {
    let root = tempfile::tempdir().unwrap();
    let good = root.path().join("good");
    write_history(
        &good,
        &[
            r#"{"process":0,"type":"invoke","f":"put","key":"k","value":"a","time":1}"#,
            r#"{"process":0,"type":"ok","f":"put","key":"k","value":"a","time":2}"#,
            r#"{"process":1,"type":"invoke","f":"get","key":"k","value":null,"time":3}"#,
            r#"{"process":1,"type":"ok","f":"get","key":"k","value":"a","time":4}"#,
        ],
    );
    let out = control(&["analyze", good.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(good.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["valid"], true);
    assert_eq!(results["ops"]["ok"], 2);
    assert!(good.join("history.edn").exists());

    let bad = root.path().join("bad");
    write_history(
        &bad,
        &[
            r#"{"process":0,"type":"invoke","f":"put","key":"k","value":"a","time":1}"#,
            r#"{"process":0,"type":"ok","f":"put","key":"k","value":"a","time":2}"#,
            r#"{"process":1,"type":"invoke","f":"get","key":"k","value":null,"time":3}"#,
            r#"{"process":1,"type":"ok","f":"get","key":"k","value":"b","time":4}"#,
        ],
    );
    // A torn last line (no newline), as an interrupted run leaves it: ignored.
    let mut text = fs::read_to_string(bad.join("history.jsonl")).unwrap();
    text.push_str(r#"{"process":2,"type":"inv"#);
    fs::write(bad.join("history.jsonl"), text).unwrap();
    let out = control(&["analyze", bad.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("INVALID"));

    let empty = root.path().join("empty");
    fs::create_dir_all(&empty).unwrap();
    let out = control(&["analyze", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("history.jsonl"));
}

#[test]
fn bad_input_is_a_clear_error_before_anything_is_provisioned() {
    let out = control(&["test", "--nemesis", "partition,flood"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("flood"));
    let out = control(&["test", "--cluster", "ssh"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--hosts"));
    let out = control(&["test", "--db", "mongodb", "--nodes", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("mongodb"));
    let out = control(&["test", "--workload", "bank", "--nodes", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bank"));
    let out = control(&["test", "--mutation", "lost-writes", "--nodes", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("lost-writes"));
    let out = control(&["teardown", "--tag", "Bad/Tag"]);
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["test", "--help"],
        &["teardown", "--help"],
        &["analyze", "--help"],
    ] {
        let out = control(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
    let help = String::from_utf8_lossy(&control(&["test", "--help"]).stdout).into_owned();
    for flag in [
        "--nodes",
        "--time",
        "--workload",
        "--nemesis",
        "--mutation",
        "--db",
        "--seed",
    ] {
        assert!(help.contains(flag), "missing {flag}");
    }
}
