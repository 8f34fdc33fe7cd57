//! YCSB-style workloads against a 3-node cluster of real `node` processes on
//! loopback (fsync on, linearizable reads through ReadIndex, the default).
//!
//! `cargo bench -p node --bench ycsb`. Loads `YCSB_RECORDS` keys (default
//! 1,000) with 1 KiB values, then runs, on the same cluster, workloads
//! A (50% read / 50% update), B (95/5) and C (100% read) with N closed-loop
//! clients each (default 1, 16, 64), a warm-up before each measured period.
//! Keys are chosen from a scrambled zipfian distribution (theta 0.99, as
//! YCSB's default) or uniformly (`YCSB_DISTRIBUTION=uniform`). An update
//! replaces the whole 1 KiB value (a KV put).
//!
//! Clients are tasks on one current-thread tokio runtime in this process,
//! sharing one QUIC client endpoint (one connection per node); each is a
//! `KvClient` (exactly-once clerk) that finds the leader by its hints.
//!
//! Knobs (env): `YCSB_WORKLOADS` (a,b,c), `BENCH_CLIENTS` (1,16,64),
//! `BENCH_WARMUP_SECS` (2), `BENCH_MEASURE_SECS` (5), `YCSB_RECORDS`
//! (1000), `BENCH_VALUE_BYTES` (1024), `YCSB_DISTRIBUTION` (zipfian),
//! `BENCH_DIR`, `BENCH_NODE_LOG`, `SEED`; `YCSB_PERF=1` records `perf record
//! -g` of the leader during workload A with the most clients (needs perf).
//! Writes `results/bench-kv/<YYYYmmddTHHMMSS>/results.json` (the DESIGN.md
//! "Benchmark results" shape) and `report.html` at the workspace root.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: a panic is a failed run

mod support;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kv::client::{ClerkConfig, Outcome};
use kv::command::Op;
use node::client::{Connection, KvClient};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use support::*;

const NODES: usize = 3;
const ZIPFIAN_THETA: f64 = 0.99;

/// A YCSB core workload: the share of reads (the rest are updates).
#[derive(Clone, Copy, Debug)]
struct Workload {
    name: &'static str,
    read_share: f64,
}

const WORKLOADS: [Workload; 3] = [
    Workload {
        name: "a",
        read_share: 0.5,
    },
    Workload {
        name: "b",
        read_share: 0.95,
    },
    Workload {
        name: "c",
        read_share: 1.0,
    },
];

/// Zipfian ranks over `0..n` by the method of Gray et al. ("Quickly
/// generating billion-record synthetic databases", SIGMOD 1994), which YCSB
/// also uses; `scramble` spreads the hot ranks over the key space by hashing,
/// as YCSB's "scrambled zipfian" does.
#[derive(Clone, Debug)]
struct Zipfian {
    n: u64,
    theta: f64,
    alpha: f64,
    zeta_n: f64,
    eta: f64,
}

impl Zipfian {
    fn new(n: u64, theta: f64) -> Zipfian {
        let zeta = |count: u64| {
            (1..=count)
                .map(|i| 1.0 / (i as f64).powf(theta))
                .sum::<f64>()
        };
        let zeta_n = zeta(n);
        let zeta_2 = zeta(2);
        Zipfian {
            n,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zeta_n,
            eta: (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta_2 / zeta_n),
        }
    }

    /// Rank 0 is the most popular.
    fn rank(&self, rng: &mut ChaCha8Rng) -> u64 {
        let u: f64 = rng.gen();
        let uz = u * self.zeta_n;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let rank = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n - 1)
    }

    fn scrambled(&self, rng: &mut ChaCha8Rng) -> u64 {
        fnv1a(self.rank(rng)) % self.n
    }
}

/// 64-bit FNV-1a of the number's bytes.
fn fnv1a(value: u64) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in value.to_le_bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

fn key(index: u64) -> String {
    format!("user{index:06}")
}

/// Fresh 1 KiB-ish value: distinct per write so that histories stay checkable.
fn value(rng: &mut ChaCha8Rng, bytes: usize) -> String {
    let tag = format!("{:016x}", rng.gen::<u64>());
    let mut value = String::with_capacity(bytes);
    while value.len() < bytes {
        value.push_str(&tag);
    }
    value.truncate(bytes);
    value
}

fn main() {
    let clients = env_list("BENCH_CLIENTS", &[1, 16, 64]);
    let warmup = Duration::from_secs_f64(env_f64("BENCH_WARMUP_SECS", 2.0));
    let measure = Duration::from_secs_f64(env_f64("BENCH_MEASURE_SECS", 5.0));
    let records = env_u64("YCSB_RECORDS", 1000).max(2);
    let value_bytes = env_u64("BENCH_VALUE_BYTES", 1024) as usize;
    let distribution = env_string("YCSB_DISTRIBUTION", "zipfian");
    let uniform = distribution == "uniform";
    let seed = env_u64("SEED", 1);
    let perf = env_u64("YCSB_PERF", 0) == 1;
    let names = env_string("YCSB_WORKLOADS", "a,b,c");
    let workloads: Vec<Workload> = WORKLOADS
        .iter()
        .copied()
        .filter(|w| {
            names
                .split(',')
                .any(|n| n.trim().eq_ignore_ascii_case(w.name))
        })
        .collect();

    let cluster = BenchCluster::start(NODES);
    let mut setup = Setup::machine("ycsb");
    setup.add(
        "cluster",
        format!("{NODES} node processes on 127.0.0.1, QUIC + mutual TLS, fsync on (storage thread: group commit, one fdatasync per wake-up; leader Appends sent before its own fsync, Raft async storage writes)"),
    );
    setup.add_node_defaults();
    setup.add("filesystem", filesystem_of(&cluster.data_dir()));
    setup.add(
        "records",
        format!("{records} keys preloaded, values of {value_bytes} bytes; an update puts a whole new value"),
    );
    setup.add(
        "key choice",
        if uniform {
            "uniform".to_string()
        } else {
            format!("scrambled zipfian, theta {ZIPFIAN_THETA}")
        },
    );
    setup.add(
        "workloads",
        workloads
            .iter()
            .map(|w| {
                format!(
                    "{}: {:.0}% read / {:.0}% update",
                    w.name,
                    100.0 * w.read_share,
                    100.0 * (1.0 - w.read_share)
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
    );
    setup.add(
        "reads",
        "linearizable: ReadIndex on the leader (node default)",
    );
    setup.add(
        "clients",
        format!("{clients:?} closed-loop; warm-up {warmup:?} then measured {measure:?} per row; one cluster for all rows"),
    );
    setup.add(
        "generator",
        "one current-thread tokio runtime in the bench process; clients are tasks sharing one QUIC endpoint (a connection per node); KvClient finds the leader by hint and retries with backoff",
    );
    setup.add("seed", format!("SEED={seed}"));
    println!("== node YCSB ==");
    setup.print();

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let connection = Connection::open(cluster.cluster.clone()).expect("client endpoint");
        let leader = cluster
            .wait_for_leader(&connection, Duration::from_secs(20))
            .await;
        println!("leader: n{leader} (pids {:?})", cluster.pids());
        let mut ids = ClientIds::new();
        preload(&connection, &mut ids, records, value_bytes, seed).await;

        println!(
            "{:<8} {:>7} {:>10} {:>9} {:>9} {:>9} {:>9} {:>12}",
            "workload",
            "clients",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "max ms",
            "fail/unknown"
        );
        let zipfian = Arc::new(Zipfian::new(records, ZIPFIAN_THETA));
        let most_clients = clients.iter().copied().max().unwrap_or(1);
        let mut rows = Vec::new();
        let mut notes = Vec::new();
        for workload in &workloads {
            for &n in &clients {
                let zipfian = zipfian.clone();
                let read_share = workload.read_share;
                let make_op: OpMaker = Arc::new(move |rng, _| {
                    let index = if uniform {
                        rng.gen_range(0..records)
                    } else {
                        zipfian.scrambled(rng)
                    };
                    if rng.gen::<f64>() < read_share {
                        Op::Get { key: key(index) }
                    } else {
                        Op::Put {
                            key: key(index),
                            value: value(rng, value_bytes),
                        }
                    }
                });
                let profiler = (perf && workload.name == "a" && n == most_clients)
                    .then(|| start_perf(&cluster, leader, warmup, measure));
                let result = closed_loop(
                    &connection,
                    ids.take(n),
                    seed,
                    warmup,
                    measure,
                    &cluster,
                    make_op,
                )
                .await;
                if let Some(Some(mut child)) = profiler {
                    let _ = child.wait();
                }
                let h = &result.latency_us;
                println!(
                    "{:<8} {:>7} {:>10.0} {:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>12}",
                    workload.name,
                    n,
                    result.ops_per_sec(),
                    ms(h.value_at_quantile(0.5)),
                    ms(h.value_at_quantile(0.99)),
                    ms(h.value_at_quantile(0.999)),
                    ms(h.max()),
                    format!("{}/{}", result.fail, result.unknown)
                );
                notes.push(format!(
                    "{} x{:<3} {}; reads returned {:.0} value bytes per op",
                    workload.name,
                    n,
                    result.cpu_line(),
                    result.read_bytes as f64 / result.ok.max(1) as f64
                ));
                if result.empty_reads > 0 {
                    notes.push(format!(
                        "{} x{:<3} WARNING: {} reads returned no value although every key was preloaded",
                        workload.name, n, result.empty_reads
                    ));
                }
                rows.push(json!({
                    "system": "ours", "workload": workload.name, "clients": n, "mode": "closed",
                    "ops_per_sec": result.ops_per_sec(),
                    "p50_ms": ms(h.value_at_quantile(0.5)), "p99_ms": ms(h.value_at_quantile(0.99)),
                    "p999_ms": ms(h.value_at_quantile(0.999)), "max_ms": ms(h.max()),
                    "errors": result.errors(), "fail": result.fail, "unknown": result.unknown,
                    "empty_reads": result.empty_reads, "read_bytes": result.read_bytes,
                    "generator_cpu_seconds": result.generator_cpu_seconds,
                    "node_cpu_seconds": result.node_cpu_seconds,
                    "node_run_queue_seconds": result.node_run_queue_seconds,
                }));
            }
        }
        println!(
            "\nCPU in each measured window (percent of one core, and CPU µs per completed op):"
        );
        for line in &notes {
            println!("{line}");
        }
        let document = json!({ "rows": rows, "setup": setup.to_json() });
        let html = report_html(&document);
        match write_results("bench-kv", &document, &html) {
            Ok(dir) => println!("\nresults: {}", dir.display()),
            Err(error) => eprintln!("cannot write results: {error}"),
        }
    });
}

/// Puts every record once, 32 clients at a time.
async fn preload(
    connection: &Connection,
    ids: &mut ClientIds,
    records: u64,
    value_bytes: usize,
    seed: u64,
) {
    const LOADERS: u64 = 32;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for (i, id) in ids.take(LOADERS as usize).into_iter().enumerate() {
        let connection = connection.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = KvClient::new(connection, id, ClerkConfig::default(), id);
            let mut rng = <ChaCha8Rng as rand::SeedableRng>::seed_from_u64(seed ^ id);
            let mut failed = 0u64;
            for index in (i as u64..records).step_by(LOADERS as usize) {
                let op = Op::Put {
                    key: key(index),
                    value: value(&mut rng, value_bytes),
                };
                if !matches!(client.call(op).await, Outcome::Ok(_)) {
                    failed += 1;
                }
            }
            failed
        }));
    }
    let mut failed = 0;
    for task in tasks {
        failed += task.await.expect("loader task");
    }
    assert_eq!(failed, 0, "{failed} preload puts did not succeed");
    println!(
        "preloaded {records} records in {:.1} s\n",
        started.elapsed().as_secs_f64()
    );
}

/// `perf record -g` of the leader for the measured window (after warm-up).
fn start_perf(
    cluster: &BenchCluster,
    leader: u64,
    warmup: Duration,
    measure: Duration,
) -> Option<std::process::Child> {
    let pid = cluster.pids()[leader as usize - 1];
    let out = std::env::temp_dir().join("ycsb-leader.perf.data");
    let script = format!(
        "sleep {:.3}; exec perf record -g -p {pid} -o {} -- sleep {:.3}",
        warmup.as_secs_f64(),
        out.display(),
        measure.as_secs_f64()
    );
    match Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => {
            println!(
                "(perf record of n{leader}, pid {pid}, into {})",
                out.display()
            );
            Some(child)
        }
        Err(error) => {
            eprintln!("cannot start perf: {error}");
            None
        }
    }
}

fn report_html(document: &serde_json::Value) -> String {
    let mut rows = String::new();
    for row in document["rows"].as_array().into_iter().flatten() {
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td>{:.0}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td><td>{}</td></tr>",
            row["workload"].as_str().unwrap_or(""),
            row["clients"],
            row["ops_per_sec"].as_f64().unwrap_or(0.0),
            row["p50_ms"].as_f64().unwrap_or(0.0),
            row["p99_ms"].as_f64().unwrap_or(0.0),
            row["p999_ms"].as_f64().unwrap_or(0.0),
            row["max_ms"].as_f64().unwrap_or(0.0),
            row["errors"],
        ));
    }
    let mut setup = String::new();
    for (key, value) in document["setup"].as_object().into_iter().flatten() {
        setup.push_str(&format!(
            "<tr><th>{}</th><td>{}</td></tr>",
            escape_html(key),
            escape_html(value.as_str().unwrap_or(""))
        ));
    }
    format!(
        "<!doctype html><meta charset=utf-8><title>YCSB: ours</title>\
         <style>body{{font-family:sans-serif}}td,th{{padding:2px 8px;text-align:right}}</style>\
         <h1>YCSB on a 3-node local cluster</h1>\
         <table><tr><th>workload</th><th>clients</th><th>ops/s</th><th>p50 ms</th><th>p99 ms</th>\
         <th>p99.9 ms</th><th>max ms</th><th>errors</th></tr>{rows}</table>\
         <h2>Setup</h2><table>{setup}</table>"
    )
}
