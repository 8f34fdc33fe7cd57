//! `control bench-shardkv`: the sharded store's speed on this machine.
//!
//! One cluster, the layout's controller and replica groups all started; groups are joined one
//! at a time and after each join (and a warm-up while shards migrate) each workload runs
//! closed-loop for a fixed time: read-heavy (95% gets, 5% puts) and update-heavy (50/50), on a
//! fixed key set spread over every shard. Then, with every group joined and a steady open-loop
//! load, shards are moved one by one and each move's unavailability window is measured from
//! the history ([`super::unavailability`]). Every phase's history is kept in the results
//! folder, so the numbers can be recomputed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Value};

use crate::client::{ClientFactory, Generator};
use crate::cluster::{Cluster, Node};
use crate::history::{self, Event, EventType, HistoryWriter, TestClock};
use crate::runner::{RunError, TestOptions};

use super::db::{ShardCerts, ShardDb};
use super::generator::{ShardKvGenerator, SHARDS};
use super::layout::{Gid, Layout};
use super::reconfig::{CtrlOutcome, Reconfig, Reconfigurer};
use super::run::{self, BackendFn, Shared};
use super::unavailability;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Cluster, nodes, seed, op timeout, node binary, results root (other fields unused).
    pub test: TestOptions,
    /// Group counts to measure, ascending (each needs a join of the next group).
    pub groups: Vec<usize>,
    /// Closed-loop clients.
    pub clients: usize,
    /// Length of each throughput measurement.
    pub duration: Duration,
    /// Warm-up after each join (shards migrate) before measuring.
    pub warmup: Duration,
    /// Keys (fixed set, spread over every shard).
    pub keys: usize,
    /// Shard moves to time.
    pub moves: usize,
    /// Pause between two moves.
    pub move_every: Duration,
    /// Open-loop rate (ops/s over all clients) during the moves.
    pub move_rate: u32,
}

/// One throughput row (DESIGN.md's benchmark contract plus `groups`).
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub groups: usize,
    pub workload: &'static str,
    pub read_percent: u32,
    pub clients: usize,
    pub ops_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub errors: u64,
}

/// One timed move.
#[derive(Debug, Clone, PartialEq)]
pub struct MoveRow {
    pub shard: usize,
    pub from: Gid,
    pub to: Gid,
    pub outcome: String,
    /// Controller request latency.
    pub request_ms: f64,
    pub window_ms: Option<f64>,
    /// The shard's median gap between ok operations over the whole phase, for scale.
    pub median_gap_ms: Option<f64>,
}

/// Throughput and latency of one phase's history.
pub fn row_from_history(
    events: &[Event],
    groups: usize,
    workload: &'static str,
    read_percent: u32,
    clients: usize,
    duration: Duration,
) -> Row {
    let mut outstanding: BTreeMap<u64, u64> = BTreeMap::new();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 3_600_000_000_000, 3).ok();
    let (mut ok, mut errors) = (0u64, 0u64);
    for event in events {
        match event.kind {
            EventType::Invoke => {
                outstanding.insert(event.process, event.time);
            }
            kind => {
                let Some(start) = outstanding.remove(&event.process) else {
                    continue;
                };
                if kind == EventType::Ok {
                    ok += 1;
                    if let Some(h) = latency.as_mut() {
                        let _ = h.record(event.time.saturating_sub(start).max(1));
                    }
                } else {
                    errors += 1;
                }
            }
        }
    }
    errors += outstanding.len() as u64;
    let ms = |q: f64| {
        latency
            .as_ref()
            .filter(|h| !h.is_empty())
            .map_or(0.0, |h| h.value_at_quantile(q) as f64 / 1e6)
    };
    Row {
        groups,
        workload,
        read_percent,
        clients,
        ops_per_sec: ok as f64 / duration.as_secs_f64().max(1e-9),
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: latency.as_ref().map_or(0.0, |h| h.max() as f64 / 1e6),
        errors,
    }
}

/// The printed table.
pub fn table(rows: &[Row], moves: &[MoveRow]) -> String {
    let mut out = format!(
        "{:<7} {:<13} {:>8} {:>11} {:>8} {:>8} {:>8} {:>8} {:>7}\n",
        "groups", "workload", "clients", "ops/s", "p50 ms", "p99 ms", "p999 ms", "max ms", "errors"
    );
    for r in rows {
        out.push_str(&format!(
            "{:<7} {:<13} {:>8} {:>11.0} {:>8.2} {:>8.2} {:>8.2} {:>8.1} {:>7}\n",
            r.groups,
            r.workload,
            r.clients,
            r.ops_per_sec,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            r.errors
        ));
    }
    if !moves.is_empty() {
        out.push_str(&format!(
            "\n{:<6} {:<10} {:<8} {:>11} {:>15} {:>16}\n",
            "shard", "move", "outcome", "request ms", "unavailable ms", "median gap ms"
        ));
        for m in moves {
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
            out.push_str(&format!(
                "{:<6} {:<10} {:<8} {:>11.1} {:>15} {:>16}\n",
                m.shard,
                format!("g{}->g{}", m.from, m.to),
                m.outcome,
                m.request_ms,
                opt(m.window_ms),
                opt(m.median_gap_ms)
            ));
        }
        let mut windows: Vec<f64> = moves.iter().filter_map(|m| m.window_ms).collect();
        windows.sort_by(f64::total_cmp);
        if let (Some(min), Some(max)) = (windows.first(), windows.last()) {
            out.push_str(&format!(
                "unavailability over {} moves: median {:.1} ms, min {min:.1} ms, max {max:.1} ms\n",
                windows.len(),
                windows[windows.len() / 2]
            ));
        }
    }
    out
}

pub fn rows_json(rows: &[Row], moves: &[MoveRow]) -> Value {
    json!({
        "rows": rows.iter().map(|r| json!({
            "system": "ours-shardkv",
            "workload": r.workload,
            "read_percent": r.read_percent,
            "groups": r.groups,
            "clients": r.clients,
            "mode": "closed",
            "ops_per_sec": r.ops_per_sec,
            "p50_ms": r.p50_ms,
            "p99_ms": r.p99_ms,
            "p999_ms": r.p999_ms,
            "max_ms": r.max_ms,
            "errors": r.errors,
        })).collect::<Vec<_>>(),
        "moves": moves.iter().map(|m| json!({
            "shard": m.shard, "from": m.from, "to": m.to, "outcome": m.outcome,
            "request_ms": m.request_ms, "unavailable_ms": m.window_ms,
            "median_gap_ms": m.median_gap_ms,
        })).collect::<Vec<_>>(),
    })
}

/// The workloads measured: (name, percent of gets).
pub const WORKLOADS: [(&str, u32); 2] = [("read-heavy", 95), ("update-heavy", 50)];

/// Where a bench run writes: `<root>/bench-shardkv/<timestamp>/` (node logs in `nodes/`).
pub fn bench_dir(root: &std::path::Path) -> Result<crate::results::RunDir, RunError> {
    Ok(crate::results::RunDir::create(
        root,
        "bench-shardkv",
        chrono::Local::now(),
    )?)
}

/// Runs the benchmark; returns the folder (with results.json and each phase's history).
pub fn run_bench(
    options: &BenchOptions,
    backend: BackendFn<'_>,
    interrupted: &AtomicBool,
) -> Result<(PathBuf, Vec<Row>, Vec<MoveRow>), RunError> {
    let max_groups = options.groups.iter().copied().max().unwrap_or(0);
    if max_groups == 0 || options.clients == 0 || options.duration.is_zero() {
        return Err(RunError::BadOption(
            "groups, clients and duration must be positive".into(),
        ));
    }
    let run_dir = bench_dir(&options.test.results_root)?;
    let dir = run_dir.path.clone();
    eprintln!("control: bench-shardkv results in {}", dir.display());
    let mut cluster = crate::runner::provision(&options.test, None)?;
    let layout =
        Layout::new(cluster.nodes(), max_groups).map_err(|e| RunError::BadOption(e.to_string()))?;
    let db = ShardDb::new(
        layout.clone(),
        ShardCerts::new().map_err(RunError::Db)?,
        run::node_binary(&options.test)?,
        false,
    );
    let result = measure(&*cluster, &db, options, backend, &dir, interrupted);
    let mut errors = Vec::new();
    run::stop_and_collect(&*cluster, &db, &run_dir, &mut errors);
    if let Err(e) = cluster.teardown() {
        errors.push(format!("teardown: {e}"));
    }
    let (rows, moves) = result?;
    let mut results = rows_json(&rows, &moves);
    results["setup"] = json!({
        "nodes": cluster.nodes().len(),
        "daemons": layout.daemons.len(),
        "clients": options.clients,
        "duration_s": options.duration.as_secs_f64(),
        "warmup_s": options.warmup.as_secs_f64(),
        "keys": options.keys,
        "shards": SHARDS,
        "move_rate": options.move_rate,
        "cores": thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "note": "every daemon (controller + all groups) and the load generator share this machine's cores",
        "errors": errors,
    });
    let text = serde_json::to_string_pretty(&results).unwrap_or_default();
    std::fs::write(dir.join("results.json"), text).map_err(|source| {
        RunError::Db(format!(
            "writing {}: {source}",
            dir.join("results.json").display()
        ))
    })?;
    Ok((dir, rows, moves))
}

type Measured = (Vec<Row>, Vec<MoveRow>);

fn measure(
    cluster: &dyn Cluster,
    db: &ShardDb,
    options: &BenchOptions,
    backend: BackendFn<'_>,
    dir: &std::path::Path,
    interrupted: &AtomicBool,
) -> Result<Measured, RunError> {
    run::start_all(cluster, db)?;
    let backend = backend(&db.layout, &db.certs, options.test.op_timeout).map_err(RunError::Db)?;
    let netns = cluster.client_netns();
    let enter = || {
        netns
            .as_deref()
            .is_none_or(|ns| crate::netns::enter(ns).is_ok())
    };
    let nodes = cluster.nodes().to_vec();
    let factory = backend.clients();
    let clock = TestClock::new();
    let servers: BTreeMap<Gid, Vec<String>> = db
        .layout
        .gids()
        .into_iter()
        .map(|g| (g, db.layout.servers(g)))
        .collect();
    let mut rows = Vec::new();
    let mut moves = Vec::new();
    let mut process_base = 0u64;
    thread::scope(|scope| -> Result<(), RunError> {
        // The controller lives on its own thread inside the client namespace; this thread
        // sends it changes and gets the outcomes back.
        let (ask_tx, ask_rx) = std::sync::mpsc::channel::<Option<Reconfig>>();
        let (answer_tx, answer_rx) = std::sync::mpsc::channel::<
            Result<(CtrlOutcome, f64, Option<super::reconfig::ConfigView>), String>,
        >();
        let backend = &*backend;
        let servers = servers.clone();
        scope.spawn(move || {
            if !enter() {
                let _ = answer_tx.send(Err("cannot enter the client namespace".into()));
                return;
            }
            let controller = match backend.controller(2_000_000_000) {
                Ok(c) => c,
                Err(e) => {
                    let _ = answer_tx.send(Err(e));
                    return;
                }
            };
            let mut reconfigurer = Reconfigurer::new(controller, servers);
            while let Ok(Some(change)) = ask_rx.recv() {
                let started = Instant::now();
                let outcome = reconfigurer.request(&change);
                let request_ms = started.elapsed().as_secs_f64() * 1e3;
                let config = reconfigurer.controller.query().ok();
                if answer_tx.send(Ok((outcome, request_ms, config))).is_err() {
                    return;
                }
            }
        });
        let ask = |change: Reconfig| -> Result<(CtrlOutcome, f64, Option<super::reconfig::ConfigView>), RunError> {
            ask_tx
                .send(Some(change))
                .map_err(|_| RunError::Db("controller thread ended".into()))?;
            answer_rx
                .recv()
                .map_err(|_| RunError::Db("controller thread ended".into()))?
                .map_err(RunError::Db)
        };
        let result = (|| -> Result<(), RunError> {
            let mut joined = 0usize;
            let mut config = None;
            for &groups in &options.groups {
                while joined < groups {
                    joined += 1;
                    let gid = joined as Gid;
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let (outcome, _, after) = ask(Reconfig::Join { gids: vec![gid] })?;
                        if outcome == CtrlOutcome::Ok {
                            config = after;
                            break;
                        }
                        if Instant::now() > deadline {
                            return Err(RunError::Db(format!("joining g{gid}: {outcome:?}")));
                        }
                        thread::sleep(Duration::from_millis(300));
                    }
                }
                eprintln!(
                    "control: {groups} group(s) joined; warming up {:?}",
                    options.warmup
                );
                for (workload, read_percent) in WORKLOADS {
                    if interrupted.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    let path = dir.join(format!("history-{groups}g-{workload}.jsonl"));
                    phase(
                        &*factory,
                        &nodes,
                        &enter,
                        options,
                        read_percent,
                        None,
                        options.warmup,
                        &path,
                        clock,
                        &mut process_base,
                        false,
                    )?;
                    let events = phase(
                        &*factory,
                        &nodes,
                        &enter,
                        options,
                        read_percent,
                        None,
                        options.duration,
                        &path,
                        clock,
                        &mut process_base,
                        true,
                    )?;
                    let row = row_from_history(
                        &events,
                        groups,
                        workload,
                        read_percent,
                        options.clients,
                        options.duration,
                    );
                    eprintln!(
                        "control: {groups} group(s) {workload}: {:.0} ops/s, p99 {:.1} ms",
                        row.ops_per_sec, row.p99_ms
                    );
                    rows.push(row);
                }
            }
            if options.moves == 0 || interrupted.load(Ordering::SeqCst) {
                return Ok(());
            }
            // Moves under a steady open-loop load on every shard.
            let path = dir.join("history-moves.jsonl");
            let writer = HistoryWriter::create(&path, clock)?;
            let shared = Shared::new();
            let interval = Duration::from_secs_f64(
                options.clients as f64 / f64::from(options.move_rate.max(1)),
            );
            let mut asked: Vec<(usize, Gid, Gid, CtrlOutcome, f64, u64)> = Vec::new();
            thread::scope(|inner| -> Result<(), RunError> {
                for worker in 0..options.clients {
                    let generator: Box<dyn Generator> = Box::new(
                        ShardKvGenerator::new(options.test.seed + worker as u64, options.keys, 50)
                            .fixed_keys()
                            .puts_only(),
                    );
                    let (factory, writer, shared, node, enter) = (
                        &*factory,
                        &writer,
                        &shared,
                        &nodes[worker % nodes.len()],
                        &enter,
                    );
                    let base = process_base;
                    inner.spawn(move || {
                        if enter() {
                            run::client_loop(
                                worker + base as usize,
                                options.clients,
                                generator,
                                factory,
                                node,
                                writer,
                                shared,
                                Some(interval),
                                options.test.op_timeout,
                            );
                        }
                    });
                }
                process_base += 1_000_000;
                let mut rng = ChaCha8Rng::seed_from_u64(options.test.seed);
                thread::sleep(options.move_every);
                for _ in 0..options.moves {
                    if interrupted.load(Ordering::SeqCst) {
                        break;
                    }
                    let Some(current) = config.clone() else { break };
                    let shard = *(0..SHARDS)
                        .collect::<Vec<_>>()
                        .choose(&mut rng)
                        .unwrap_or(&0);
                    let from = current.shards.get(shard).copied().unwrap_or(0);
                    let targets: Vec<Gid> = current
                        .groups
                        .iter()
                        .copied()
                        .filter(|g| *g != from)
                        .collect();
                    let Some(&to) = targets.choose(&mut rng) else {
                        break;
                    };
                    let time = clock.now_ns();
                    let (outcome, request_ms, next) = ask(Reconfig::Move { shard, gid: to })?;
                    asked.push((shard, from, to, outcome, request_ms, time));
                    if next.is_some() {
                        config = next;
                    }
                    thread::sleep(options.move_every);
                }
                shared.stop.store(true, Ordering::SeqCst);
                Ok(())
            })?;
            let events = history::read_history(&path)?;
            let by_shard = unavailability::ok_times_by_shard(&events, SHARDS);
            for (shard, from, to, outcome, request_ms, time) in asked {
                let times = &by_shard[shard];
                moves.push(MoveRow {
                    shard,
                    from,
                    to,
                    outcome: format!("{outcome:?}"),
                    request_ms,
                    window_ms: unavailability::window(
                        times,
                        time,
                        options.move_every.as_nanos() as u64,
                    )
                    .map(|w| w.millis()),
                    median_gap_ms: unavailability::median_gap(times).map(|g| g as f64 / 1e6),
                });
            }
            Ok(())
        })();
        let _ = ask_tx.send(None);
        result
    })?;
    Ok((rows, moves))
}

/// One closed-loop phase of `length` with a fresh history (kept only when `keep`), returning
/// its events.
#[allow(clippy::too_many_arguments)]
fn phase(
    factory: &dyn ClientFactory,
    nodes: &[Node],
    enter: &(dyn Fn() -> bool + Sync),
    options: &BenchOptions,
    read_percent: u32,
    rate: Option<Duration>,
    length: Duration,
    path: &std::path::Path,
    clock: TestClock,
    process_base: &mut u64,
    keep: bool,
) -> Result<Vec<Event>, RunError> {
    let scratch = path.with_extension("warmup");
    let target = if keep {
        path.to_path_buf()
    } else {
        scratch.clone()
    };
    let writer = HistoryWriter::create(&target, clock)?;
    let shared = Shared::new();
    let base = *process_base;
    *process_base += 1_000_000;
    thread::scope(|scope| {
        for worker in 0..options.clients {
            let generator: Box<dyn Generator> = Box::new(
                ShardKvGenerator::new(
                    options.test.seed ^ (base + worker as u64),
                    options.keys,
                    read_percent,
                )
                .fixed_keys()
                .puts_only(),
            );
            let (writer, shared, node) = (&writer, &shared, &nodes[worker % nodes.len()]);
            scope.spawn(move || {
                if enter() {
                    run::client_loop(
                        base as usize + worker,
                        options.clients,
                        generator,
                        factory,
                        node,
                        writer,
                        shared,
                        rate,
                        options.test.op_timeout,
                    );
                }
            });
        }
        thread::sleep(length);
        shared.stop.store(true, Ordering::SeqCst);
    });
    let events = history::read_history(&target)?;
    if !keep {
        let _ = std::fs::remove_file(&scratch);
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(process: u64, kind: EventType, time: u64) -> Event {
        let mut e = Event::new(process, kind, "get", Some("1k1"), Value::Null);
        e.time = time;
        e
    }

    #[test]
    fn rows_count_ok_operations_and_their_latency() {
        let events = [
            event(0, EventType::Invoke, 0),
            event(1, EventType::Invoke, 0),
            event(0, EventType::Ok, 2_000_000),
            event(1, EventType::Info, 9_000_000),
            event(0, EventType::Invoke, 3_000_000),
            event(0, EventType::Ok, 7_000_000),
            event(2, EventType::Invoke, 8_000_000),
        ];
        let row = row_from_history(&events, 2, "read-heavy", 95, 3, Duration::from_secs(2));
        assert_eq!(row.ops_per_sec, 1.0);
        assert_eq!(row.errors, 2, "one info, one never completed");
        assert!((row.max_ms - 4.0).abs() < 0.01, "{row:?}");
        assert!((row.p50_ms - 2.0).abs() < 0.01, "{row:?}");
        let text = table(&[row], &[]);
        assert!(text.contains("read-heavy"), "{text}");
    }
}
