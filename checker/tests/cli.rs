//! The `checker` binary's contract: exit statuses 0/1/2/3, `--json` fields,
//! messages that name the file and line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the test failing

use std::io::Write;
use std::path::Path;
use std::process::Command;

fn checker(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_checker"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::File::create(&path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    path.display().to_string()
}

const GOOD: &str = r#"{"process":0,"type":"invoke","f":"put","key":"a","value":"x1","time":1}
{"process":1,"type":"invoke","f":"get","key":"a","value":null,"time":2}
{"process":0,"type":"ok","f":"put","key":"a","value":"x1","time":3}
{"process":1,"type":"ok","f":"get","key":"a","value":"","time":4}
{"process":2,"type":"invoke","f":"append","key":"b","value":"y","time":5}
{"process":2,"type":"info","f":"append","key":"b","value":"y","time":6}
"#;

const BAD: &str = r#"{"process":0,"type":"invoke","f":"put","key":"a","value":"x1","time":1}
{"process":0,"type":"ok","f":"put","key":"a","value":"x1","time":2}
{"process":1,"type":"invoke","f":"get","key":"a","value":null,"time":3}
{"process":1,"type":"ok","f":"get","key":"a","value":"","time":4}
"#;

#[test]
fn exit_status_and_json_for_good_and_bad() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(dir.path(), "good.jsonl", GOOD);
    let bad = write(dir.path(), "bad.jsonl", BAD);

    let (code, stdout, _) = checker(&["check", "--model", "kv", "--json", &good]);
    assert_eq!(code, 0, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["valid"], serde_json::json!(true));
    assert_eq!(json["operations"], 3);
    assert_eq!(json["partitions"], 2);
    assert!(json["elapsed_ms"].is_number());

    let (code, stdout, _) = checker(&["check", "--model", "kv", "--json", &bad]);
    assert_eq!(code, 1, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["valid"], serde_json::json!(false));
    let blamed = &json["unlinearizable"][0];
    assert_eq!(blamed["f"], "get");
    assert_eq!(blamed["line"], 3);
    assert_eq!(json["failures"][0]["key"], "a");
    assert_eq!(json["failures"][0]["longest_prefix_length"], 1);

    // Text mode says the same with the exit status.
    let (code, stdout, _) = checker(&["check", &bad]);
    assert_eq!(code, 1);
    assert!(stdout.contains("NOT linearizable"), "{stdout}");
}

#[test]
fn bad_input_is_status_2_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let broken = write(
        dir.path(),
        "broken.jsonl",
        &format!("{}{{\"process\":1,\n", GOOD),
    );
    let (code, _, stderr) = checker(&["check", "--model", "kv", &broken]);
    assert_eq!(code, 2);
    assert!(stderr.contains("broken.jsonl:7"), "{stderr}");

    let edn = write(dir.path(), "broken.edn", "[{:process 1 :type :invoke :f :read :value nil}\n {:process 1 :type :ok :f :read :value [1 2}]\n");
    let (code, _, stderr) = checker(&["check", "--format", "edn", &edn]);
    assert_eq!(code, 2);
    assert!(stderr.contains("broken.edn:2"), "{stderr}");

    // A value the model cannot interpret is bad input too, with its line.
    let cas = write(
        dir.path(),
        "cas.jsonl",
        "{\"process\":1,\"type\":\"invoke\",\"f\":\"cas\",\"value\":3}\n",
    );
    let (code, _, stderr) = checker(&["check", "--model", "cas-register", &cas]);
    assert_eq!(code, 2);
    assert!(stderr.contains("cas.jsonl:line 1"), "{stderr}");

    let (code, _, _) = checker(&["check", "--model", "nope", &cas]);
    assert_eq!(code, 2);
    let (code, _, _) = checker(&["check", "/nonexistent/history.jsonl"]);
    assert_eq!(code, 2);
    let (code, _, _) = checker(&["check"]);
    assert_eq!(code, 2);
}

/// `n` concurrent writes of 0..n (plus, with `duplicate`, a second write of
/// 5), then two sequential reads of 0 and then 1: not linearizable (after
/// all writes the value cannot change), and refuting it by search needs
/// nearly every subset of the writes.
fn hard_history(n: usize, duplicate: bool) -> String {
    let mut text = String::new();
    let extra = usize::from(duplicate);
    for p in 0..n + extra {
        let value = if p < n { p } else { 5 };
        text.push_str(&format!(
            "{{\"process\":{p},\"type\":\"invoke\",\"f\":\"write\",\"value\":{value}}}\n"
        ));
    }
    for p in 0..n + extra {
        let value = if p < n { p } else { 5 };
        text.push_str(&format!(
            "{{\"process\":{p},\"type\":\"ok\",\"f\":\"write\",\"value\":{value}}}\n"
        ));
    }
    for value in [0, 1] {
        text.push_str("{\"process\":99,\"type\":\"invoke\",\"f\":\"read\",\"value\":null}\n");
        text.push_str(&format!(
            "{{\"process\":99,\"type\":\"ok\",\"f\":\"read\",\"value\":{value}}}\n"
        ));
    }
    text
}

#[test]
fn timeout_is_status_3() {
    // Values not unique: the graph pre-pass cannot help, the search must grind.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hard.jsonl", &hard_history(16, true));
    let (code, stdout, _) = checker(&[
        "check",
        "--model",
        "register",
        "--timeout",
        "0.001",
        "--json",
        &path,
    ]);
    assert_eq!(code, 3, "{stdout}");
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["valid"], "unknown");
    assert_eq!(json["unknown_reason"], "timeout");
}

#[test]
fn graph_prepass_settles_a_hard_violation_with_an_explanation() {
    // Unique values: the graph sees read 0 -> read 1 against "every write
    // completed before the reads" as a cycle, while the search alone would
    // take far longer than the budget.
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "hard.jsonl", &hard_history(16, false));
    for mode in ["auto", "first"] {
        let (code, stdout, _) = checker(&[
            "check",
            "--model",
            "register",
            "--graph",
            mode,
            "--timeout",
            "60",
            "--json",
            &path,
        ]);
        assert_eq!(code, 1, "--graph {mode}: {stdout}");
        let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
        assert_eq!(json["valid"], false);
        let explanation = json["explanations"][0].as_str().unwrap_or_default();
        assert!(explanation.contains("cycle"), "{explanation}");
        assert_eq!(json["failures"][0]["decided_by"], "graph");
        // The reads are named among the operations involved.
        let involved: Vec<i64> = json["unlinearizable"]
            .as_array()
            .unwrap()
            .iter()
            .map(|op| op["id"].as_i64().unwrap())
            .collect();
        assert!(
            involved.contains(&16) && involved.contains(&17),
            "{involved:?}"
        );
    }
    // Without the graph, the same budget-bound check cannot decide in 1 ms.
    let (code, stdout, _) = checker(&[
        "check",
        "--model",
        "register",
        "--graph",
        "off",
        "--timeout",
        "0.001",
        "--json",
        &path,
    ]);
    assert_eq!(code, 3, "{stdout}");
}

#[test]
fn initial_value_and_formats() {
    let dir = tempfile::tempdir().unwrap();
    // Knossos style: (cas-register 0); a read of 0 before any write.
    let edn = write(
        dir.path(),
        "h.edn",
        "[{:process 0 :type :invoke :f :read :value nil}\n {:process 0 :type :ok :f :read :value 0}]\n",
    );
    let (code, _, _) = checker(&["check", "--model", "cas-register", "--initial", "0", &edn]);
    assert_eq!(code, 0);
    let (code, _, _) = checker(&["check", "--model", "cas-register", &edn]);
    assert_eq!(code, 1, "initial null: reading 0 is a violation");

    // Convert to JSON lines and back to EDN: same verdicts.
    let out = Command::new(env!("CARGO_BIN_EXE_checker"))
        .args(["convert", "--to", "jsonl", &edn])
        .output()
        .unwrap();
    assert!(out.status.success());
    let jsonl = write(
        dir.path(),
        "h.jsonl",
        &String::from_utf8(out.stdout).unwrap(),
    );
    let (code, _, _) = checker(&["check", "--model", "cas-register", "--initial", "0", &jsonl]);
    assert_eq!(code, 0);
    let (code, _, _) = checker(&[
        "check",
        "--format",
        "jsonl",
        "--model",
        "cas-register",
        &jsonl,
    ]);
    assert_eq!(code, 1);
}
