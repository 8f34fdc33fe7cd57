//! Real processes, many concurrent clients, faults (kill -9 of the leader and
//! restart), a recorded history checked for linearizability with the checker;
//! and the unsafe stale-read mode caught by the same check.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_for_leader, LocalCluster};
use kv::client::{ClerkConfig, Outcome};
use kv::command::{Op, OpResult};
use node::client::{Connection, KvClient};
use serde_json::json;

/// Records events as JSON lines in the DESIGN.md history format.
#[derive(Clone)]
struct Recorder {
    start: Instant,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            start: Instant::now(),
            lines: Arc::new(Mutex::new(Vec::new())),
        }
    }

    fn record(&self, process: u64, kind: &str, f: &str, key: &str, value: &str) {
        let time = self.start.elapsed().as_nanos() as u64;
        let line = json!({"process": process, "type": kind, "f": f, "key": key, "value": value, "time": time});
        self.lines.lock().unwrap().push(line.to_string());
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

/// One logical process: random gets/puts/appends on a few keys; a process
/// whose operation ends unknown is retired and replaced by a new id (Jepsen).
async fn worker(
    connection: Connection,
    recorder: Recorder,
    worker_index: u64,
    seed: u64,
    until: Instant,
) {
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let config = ClerkConfig {
        op_timeout: Some(Duration::from_secs(3)),
        ..ClerkConfig::default()
    };
    let mut process = worker_index;
    let mut client = KvClient::new(connection.clone(), 1000 + process, config.clone(), seed);
    let mut counter = 0u64;
    while Instant::now() < until {
        counter += 1;
        let key = format!("k{}", next() % 3);
        let unique = format!("p{process}-{counter};");
        let (f, op, value) = match next() % 3 {
            0 => ("get", Op::Get { key: key.clone() }, String::new()),
            1 => (
                "put",
                Op::Put {
                    key: key.clone(),
                    value: unique.clone(),
                },
                unique,
            ),
            _ => (
                "append",
                Op::Append {
                    key: key.clone(),
                    value: unique.clone(),
                },
                unique,
            ),
        };
        recorder.record(process, "invoke", f, &key, &value);
        match client.call(op).await {
            Outcome::Ok(OpResult::Value(read)) => recorder.record(process, "ok", f, &key, &read),
            Outcome::Ok(_) => recorder.record(process, "ok", f, &key, &value),
            Outcome::Fail(_) => recorder.record(process, "fail", f, &key, &value),
            Outcome::Unknown(_) => {
                recorder.record(process, "info", f, &key, &value);
                process += 100;
                client = KvClient::new(
                    connection.clone(),
                    1000 + process,
                    config.clone(),
                    seed ^ process,
                );
            }
        }
    }
}

fn check(history: &str) -> checker::CheckResult {
    let parsed = checker::history::parse_str(
        history,
        checker::Format::Jsonl,
        std::path::Path::new("history.jsonl"),
    )
    .expect("our history parses");
    checker::check_history(
        &parsed,
        &checker::ModelKind::Kv,
        &checker::Options {
            timeout: Some(Duration::from_secs(60)),
            ..checker::Options::default()
        },
    )
    .expect("check")
}

#[test]
fn concurrent_clients_through_leader_kill_are_linearizable() {
    let mut cluster = LocalCluster::new(3, "[kv]\nmax_raft_state_bytes = 16384\n");
    cluster.start_all();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let recorder = Recorder::new();
    let operations = rt.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).expect("client");
        let leader = wait_for_leader(&connection, &[1, 2, 3], Duration::from_secs(10))
            .await
            .expect("leader");
        let until = Instant::now() + Duration::from_secs(6);
        let workers: Vec<_> = (0..8)
            .map(|i| {
                tokio::spawn(worker(
                    connection.clone(),
                    recorder.clone(),
                    i,
                    0x5eed + i,
                    until,
                ))
            })
            .collect();
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.kill(leader);
        tokio::time::sleep(Duration::from_secs(2)).await;
        cluster.start(leader);
        for w in workers {
            w.await.expect("worker");
        }
        recorder.lines.lock().unwrap().len()
    });
    let history = recorder.text();
    assert!(operations > 100, "too few events recorded: {operations}");
    let result = check(&history);
    if result.verdict != checker::Verdict::Linearizable {
        let path = std::env::temp_dir().join("node-history-failed.jsonl");
        let _ = std::fs::write(&path, &history);
        cluster.dump_logs();
        panic!(
            "verdict {:?}; history saved to {}",
            result.verdict,
            path.display()
        );
    }
}

#[test]
fn unsafe_stale_reads_are_caught_by_the_checker() {
    // Every replica answers gets from local state. A follower that was down
    // while writes committed, and is then the only node up, answers with the
    // value it had: a stale read the checker must reject. (The same reads in
    // the default ReadIndex mode would not be answered at all without a
    // majority.)
    let mut cluster = LocalCluster::new(3, "[kv]\nunsafe_stale_reads = true\n");
    cluster.start_all();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let recorder = Recorder::new();
    rt.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).expect("client");
        let leader = wait_for_leader(&connection, &[1, 2, 3], Duration::from_secs(10))
            .await
            .expect("leader");
        assert!(
            cluster.log(1).contains("UNSAFE"),
            "no loud warning in the node's log"
        );
        let mut writer = KvClient::new(connection.clone(), 1, ClerkConfig::default(), 1);
        async fn put(writer: &mut KvClient, recorder: &Recorder, value: String) {
            recorder.record(0, "invoke", "put", "x", &value);
            let outcome = writer
                .call(Op::Put {
                    key: "x".into(),
                    value: value.clone(),
                })
                .await;
            assert_eq!(outcome, Outcome::Ok(OpResult::Done));
            recorder.record(0, "ok", "put", "x", &value);
        }
        put(&mut writer, &recorder, "before".into()).await;
        let follower = if leader == 1 { 2 } else { 1 };
        // Let the follower apply "before", then take it down.
        tokio::time::sleep(Duration::from_millis(500)).await;
        cluster.kill(follower);
        for i in 0..20 {
            put(&mut writer, &recorder, format!("w{i}")).await;
        }
        // Only the stale follower is left.
        for id in [1, 2, 3].into_iter().filter(|id| *id != follower) {
            cluster.kill(id);
        }
        cluster.start(follower);
        let mut only_follower = connection.cluster.clone();
        only_follower.nodes.retain(|n| n.id == follower);
        let follower_connection = Connection {
            transport: connection.transport.clone(),
            cluster: only_follower,
        };
        let config = ClerkConfig {
            op_timeout: Some(Duration::from_secs(5)),
            ..ClerkConfig::default()
        };
        let mut reader = KvClient::new(follower_connection, 2, config, 2);
        let mut process = 1;
        for _ in 0..5 {
            recorder.record(process, "invoke", "get", "x", "");
            match reader.call(Op::Get { key: "x".into() }).await {
                Outcome::Ok(OpResult::Value(read)) => {
                    recorder.record(process, "ok", "get", "x", &read)
                }
                _ => {
                    recorder.record(process, "info", "get", "x", "");
                    process += 10;
                }
            }
        }
    });
    let history = recorder.text();
    let ok_reads = history
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|event| event["f"] == "get" && event["type"] == "ok")
        .count();
    assert!(
        ok_reads > 0,
        "the lone follower answered no reads:\n{history}"
    );
    let result = check(&history);
    assert_eq!(
        result.verdict,
        checker::Verdict::NotLinearizable,
        "stale reads from a lone stale follower went unnoticed:\n{history}"
    );
}
