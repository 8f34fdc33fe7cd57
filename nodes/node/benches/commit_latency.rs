//! Commit latency and write throughput of a 3-node cluster of real `node`
//! processes on loopback with fsync on, beside this machine's physical floor
//! measured in the same run.
//!
//! `cargo bench -p node --bench commit_latency`. Prints its setup first, then:
//! 1. the floor: fdatasync of a 4 KiB append in the directory where the
//!    nodes keep their data, and a loopback UDP round trip between threads;
//! 2. one client's sequential puts: commit latency percentiles (HDR);
//! 3. write throughput with 1, 16, 64 concurrent closed-loop clients, which
//!    shows whether batching (many proposals per fsync and per message)
//!    turns concurrency into throughput;
//! 4. p50 / (one fsync + two loopback round trips): the goal is 1.5.
//!
//! Knobs (env): `COMMIT_OPS` (sequential puts, default 3000), `BENCH_CLIENTS`
//! (default 1,16,64), `BENCH_WARMUP_SECS` (2), `BENCH_MEASURE_SECS` (5),
//! `BENCH_VALUE_BYTES` (1024), `FLOOR_SAMPLES` (2000), `BENCH_DIR` (where
//! the nodes' data goes; default the system temp dir), `BENCH_NODE_LOG`
//! (the nodes' RUST_LOG, default info), `SEED`.
//! Writes `results/bench-commit/<timestamp>/results.json` at the workspace root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use kv::client::{ClerkConfig, Outcome};
use kv::command::Op;
use node::client::{Connection, KvClient};
use rand::Rng;
use serde_json::json;
use support::*;

const NODES: usize = 3;
const KEYS: u64 = 1000;

fn main() {
    let sequential_ops = env_u64("COMMIT_OPS", 3000);
    let clients = env_list("BENCH_CLIENTS", &[1, 16, 64]);
    let warmup = Duration::from_secs_f64(env_f64("BENCH_WARMUP_SECS", 2.0));
    let measure = Duration::from_secs_f64(env_f64("BENCH_MEASURE_SECS", 5.0));
    let value_bytes = env_u64("BENCH_VALUE_BYTES", 1024) as usize;
    let floor_samples = env_u64("FLOOR_SAMPLES", 2000);
    let seed = env_u64("SEED", 1);

    let cluster = BenchCluster::start(NODES);
    let mut setup = Setup::machine("commit_latency");
    setup.add("cluster", format!("{NODES} node processes on 127.0.0.1, QUIC + mutual TLS, fsync on (storage thread: group commit, one fdatasync per wake-up; leader Appends sent before its own fsync, Raft async storage writes)"));
    setup.add_node_defaults();
    setup.add("data dir", cluster.data_dir().display());
    setup.add("filesystem", filesystem_of(&cluster.data_dir()));
    setup.add(
        "value size",
        format!("{value_bytes} bytes, puts over {KEYS} keys"),
    );
    setup.add(
        "sequential",
        format!("{sequential_ops} puts from one client (after 10% warm-up)"),
    );
    setup.add(
        "throughput",
        format!("closed-loop clients {clients:?}, warm-up {warmup:?}, measured {measure:?} each"),
    );
    setup.add(
        "generator",
        "one current-thread tokio runtime in the bench process, clients are tasks sharing one QUIC endpoint; KvClient finds the leader by hint",
    );
    setup.add("seed", format!("SEED={seed}"));
    println!("== node commit latency ==");
    setup.print();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).expect("client endpoint");
        let leader = cluster.wait_for_leader(&connection, Duration::from_secs(20)).await;
        println!("leader: n{leader} (pids {:?})", cluster.pids());
        // Let the election's aftermath (no-op entry, connections) settle.
        tokio::time::sleep(Duration::from_millis(500)).await;

        println!("-- physical floor (same run, cluster idle) --");
        let fsync = fdatasync_latency(&cluster.data_dir(), floor_samples, true);
        println!("fdatasync 4 KiB append   {}", percentiles(&fsync));
        let overwrite = fdatasync_latency(&cluster.data_dir(), floor_samples, false);
        println!("fdatasync 4 KiB rewrite  {}", percentiles(&overwrite));
        let rtt = udp_round_trip(floor_samples);
        println!("loopback UDP round trip  {}", percentiles(&rtt));
        let floor_us = fsync.value_at_quantile(0.5) + 2 * rtt.value_at_quantile(0.5);
        println!(
            "floor = one fsync + two round trips = {:.3} ms (p50s)\n",
            ms(floor_us)
        );

        let mut ids = ClientIds::new();
        let value = "v".repeat(value_bytes);
        println!("-- one client, sequential puts --");
        let sequential = sequential_puts(&connection, ids.take(1)[0], sequential_ops, &value).await;
        println!("commit latency           {}", percentiles(&sequential.0));
        println!("errors: {} fail, {} unknown", sequential.1, sequential.2);
        let p50 = sequential.0.value_at_quantile(0.5);
        let ratio = p50 as f64 / floor_us.max(1) as f64;
        println!(
            "p50 / floor = {:.3} / {:.3} = {ratio:.2}  (goal: <= 1.5)\n",
            ms(p50),
            ms(floor_us)
        );

        println!("-- write throughput, closed loop --");
        println!(
            "{:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>7}",
            "clients", "ops/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "errors"
        );
        let mut rows = Vec::new();
        let mut cpu_lines = Vec::new();
        for &n in &clients {
            let value = value.clone();
            let make_op: OpMaker = Arc::new(move |rng, _| Op::Put {
                key: format!("user{:06}", rng.gen_range(0..KEYS)),
                value: value.clone(),
            });
            let result = closed_loop(&connection, ids.take(n), seed, warmup, measure, &cluster, make_op).await;
            let h = &result.latency_us;
            println!(
                "{:>7} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>7}",
                n,
                result.ops_per_sec(),
                ms(h.value_at_quantile(0.5)),
                ms(h.value_at_quantile(0.99)),
                ms(h.value_at_quantile(0.999)),
                ms(h.max()),
                result.errors()
            );
            cpu_lines.push(format!("{n:>7} clients {}", result.cpu_line()));
            rows.push(json!({
                "system": "ours", "workload": "put", "clients": n, "mode": "closed",
                "ops_per_sec": result.ops_per_sec(),
                "p50_ms": ms(h.value_at_quantile(0.5)), "p99_ms": ms(h.value_at_quantile(0.99)),
                "p999_ms": ms(h.value_at_quantile(0.999)), "max_ms": ms(h.max()),
                "errors": result.errors(), "fail": result.fail, "unknown": result.unknown,
                "generator_cpu_seconds": result.generator_cpu_seconds,
                "node_cpu_seconds": result.node_cpu_seconds,
                    "node_run_queue_seconds": result.node_run_queue_seconds,
            }));
        }
        println!();
        for line in &cpu_lines {
            println!("{line}");
        }

        let floor = json!({
            "fdatasync_4k_p50_ms": ms(fsync.value_at_quantile(0.5)),
            "fdatasync_4k_p99_ms": ms(fsync.value_at_quantile(0.99)),
            "fdatasync_4k_rewrite_p50_ms": ms(overwrite.value_at_quantile(0.5)),
            "fdatasync_4k_rewrite_p99_ms": ms(overwrite.value_at_quantile(0.99)),
            "loopback_rtt_p50_ms": ms(rtt.value_at_quantile(0.5)),
            "loopback_rtt_p99_ms": ms(rtt.value_at_quantile(0.99)),
            "floor_ms": ms(floor_us),
        });
        let h = &sequential.0;
        let document = json!({
            "rows": rows,
            "sequential": {
                "ops": h.len(), "p50_ms": ms(h.value_at_quantile(0.5)),
                "p90_ms": ms(h.value_at_quantile(0.9)), "p99_ms": ms(h.value_at_quantile(0.99)),
                "p999_ms": ms(h.value_at_quantile(0.999)), "max_ms": ms(h.max()),
                "fail": sequential.1, "unknown": sequential.2,
                "p50_over_floor": ratio,
            },
            "floor": floor,
            "setup": setup.to_json(),
        });
        let html = format!(
            "<!doctype html><meta charset=utf-8><title>commit latency</title><h1>Commit latency</h1><pre>{}</pre>",
            escape_html(&serde_json::to_string_pretty(&document).unwrap_or_default())
        );
        match write_results("bench-commit", &document, &html) {
            Ok(dir) => println!("\nresults: {}", dir.display()),
            Err(error) => eprintln!("cannot write results: {error}"),
        }
    });
}

/// One client's puts, one at a time; returns (latency µs, fail, unknown).
async fn sequential_puts(
    connection: &Connection,
    client_id: u64,
    count: u64,
    value: &str,
) -> (hdrhistogram::Histogram<u64>, u64, u64) {
    let mut client = KvClient::new(
        connection.clone(),
        client_id,
        ClerkConfig::default(),
        client_id,
    );
    let mut histogram = new_histogram();
    let (mut fail, mut unknown) = (0, 0);
    let warmup = count / 10;
    for i in 0..warmup + count {
        let op = Op::Put {
            key: format!("user{:06}", i % KEYS),
            value: value.to_string(),
        };
        let begin = Instant::now();
        let outcome = client.call(op).await;
        let elapsed = begin.elapsed();
        if i < warmup {
            continue;
        }
        match outcome {
            Outcome::Ok(_) => record(&mut histogram, elapsed),
            Outcome::Fail(_) => fail += 1,
            Outcome::Unknown(_) => unknown += 1,
        }
    }
    (histogram, fail, unknown)
}
