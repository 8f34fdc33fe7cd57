//! The `shardkv` test: the sharded store on a cluster, clients doing get/put/append over keys
//! in every shard, the fault nemesis (partitions, kills, pauses of whole nodes, so of
//! controller and group daemons alike) and, at the same time, the reconfiguration nemesis
//! (random Join / Leave / Move); then every fault healed, every group joined, a recovery
//! phase, a final read of every key written, and the usual checks (linearizability with the
//! `kv` model, lost acknowledged appends) on the history.
//!
//! Its own driver rather than [`crate::runner`]'s because the reconfigurations run beside the
//! fault schedule and must end (all groups joined) before the final phase; the pieces —
//! cluster, history, nemesis, analysis, results folder — are the runner's.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::analyze::{self, Validity};
use crate::client::{ClientFactory, Generator, Op};
use crate::cluster::{Cluster, Node};
use crate::db::{self, Db};
use crate::history::{self, EventType, HistoryWriter, TestClock, FINAL_READ_PHASE};
use crate::nemesis::apply::ClusterNemesis;
use crate::nemesis::schedule::Schedule;
use crate::nemesis::{Fault, Nemesis, NemesisEvent};
use crate::results::RunDir;
use crate::runner::{Outcome, Performed, RunError, TestOptions, FINAL_READ_ATTEMPTS_MAX};

use super::db::{ShardCerts, ShardDb};
use super::generator::ShardKvGenerator;
use super::layout::{Gid, Layout};
use super::reconfig::{Controller, Reconfig, ReconfigEvent, ReconfigSchedule, Reconfigurer};

/// What the sharded test adds to [`TestOptions`].
#[derive(Debug, Clone)]
pub struct ShardOptions {
    /// Replica groups in the layout (all joined at the start and at the end).
    pub groups: usize,
    /// Pause between two reconfigurations (zero: none).
    pub reconfigure_every: Duration,
    /// Keys per window of the generator (10 or more touches every shard).
    pub keys: usize,
    /// Percent of gets.
    pub read_percent: u32,
    /// How long the final join of every group may keep trying.
    pub final_join_timeout: Duration,
}

impl Default for ShardOptions {
    fn default() -> Self {
        Self {
            groups: 3,
            reconfigure_every: Duration::from_secs(3),
            keys: 10,
            read_percent: 34,
            final_join_timeout: Duration::from_secs(60),
        }
    }
}

/// Opens the store's clients: kv clients for the workload, controller clients for the
/// reconfiguration nemesis. Both are opened on threads already inside the cluster's client
/// namespace, so their sockets live there.
pub trait ShardBackend: Send + Sync {
    fn clients(&self) -> Arc<dyn ClientFactory>;
    fn controller(&self, client_id: u64) -> Result<Box<dyn Controller>, String>;
}

/// Makes the backend for a cluster once its layout and certificates exist.
pub type BackendFn<'a> =
    &'a (dyn Fn(&Layout, &ShardCerts, Duration) -> Result<Box<dyn ShardBackend>, String> + Sync);

/// Appends nemesis and reconfiguration events to `nemesis.jsonl` as they happen.
pub(crate) struct EventLog {
    file: Option<File>,
    pub(crate) clock: TestClock,
    pub(crate) events: Vec<NemesisEvent>,
    pub(crate) reconfigurations: Vec<ReconfigEvent>,
}

impl EventLog {
    pub(crate) fn open(path: &std::path::Path, clock: TestClock) -> Self {
        Self {
            file: OpenOptions::new().create(true).append(true).open(path).ok(),
            clock,
            events: Vec::new(),
            reconfigurations: Vec::new(),
        }
    }

    fn write(&mut self, event: NemesisEvent, extra: Option<&ReconfigEvent>) {
        if let (Some(file), Ok(mut line)) = (self.file.as_mut(), serde_json::to_value(&event)) {
            if let Some(extra) = extra {
                line["reconfigure"] = serde_json::to_value(extra).unwrap_or(Value::Null);
            }
            let _ = file.write_all(format!("{line}\n").as_bytes());
        }
        self.events.push(event);
    }

    fn fault(&mut self, time: u64, phase: &str, fault: Option<&Fault>, error: Option<String>) {
        let event = NemesisEvent {
            time,
            end_time: self.clock.now_ns(),
            phase: phase.to_string(),
            kind: fault.map(Fault::kind),
            nodes: fault.map(Fault::nodes).unwrap_or_default(),
            fault: fault.cloned(),
            error,
        };
        self.write(event, None);
    }

    /// A reconfiguration: phase `join`, `leave` or `move`; the details under `reconfigure`.
    pub(crate) fn reconfiguration(&mut self, event: ReconfigEvent) {
        let line = NemesisEvent {
            time: event.time,
            end_time: event.end_time,
            phase: event.change.name().to_string(),
            kind: None,
            nodes: Vec::new(),
            fault: None,
            error: event
                .error
                .as_ref()
                .map(|e| format!("{}: {e}", event.outcome)),
        };
        self.write(line, Some(&event));
        self.reconfigurations.push(event);
    }
}

/// The `node` binary: the option, else beside this executable.
pub(crate) fn node_binary(options: &TestOptions) -> Result<std::path::PathBuf, RunError> {
    options
        .node_binary
        .clone()
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|d| d.join("node")))
                .filter(|p| p.exists())
        })
        .ok_or_else(|| {
            RunError::BadOption(
                "the `node` binary is not beside `control`; build with `cargo build --release -p node`"
                    .into(),
            )
        })
}

/// Whether `--mutation` asks for the keep-serving bug; other mutations are refused.
pub fn keep_serving(mutation: Option<&str>) -> Result<bool, RunError> {
    match mutation {
        None => Ok(false),
        Some("keep-serving") => Ok(true),
        Some(other) => Err(RunError::BadOption(format!(
            "unknown mutation `{other}` for the shardkv workload (available: keep-serving)"
        ))),
    }
}

/// Sets up every daemon of `db` on every node, in parallel per node.
pub(crate) fn start_all(cluster: &dyn Cluster, db: &ShardDb) -> Result<(), RunError> {
    let nodes = cluster.nodes().to_vec();
    thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                scope.spawn(move || {
                    db.setup(cluster, node)
                        .and_then(|()| db.start(cluster, node))
                })
            })
            .collect();
        for (node, handle) in nodes.iter().zip(handles) {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(RunError::Db(format!("{}: {e}", node.name))),
                Err(_) => return Err(RunError::Db(format!("{}: setup panicked", node.name))),
            }
        }
        Ok(())
    })
}

/// Stops every daemon and copies the nodes' logs into the run folder.
pub(crate) fn stop_and_collect(
    cluster: &dyn Cluster,
    db: &ShardDb,
    run: &RunDir,
    errors: &mut Vec<String>,
) {
    for node in cluster.nodes() {
        if let Err(e) = db.stop(cluster, node) {
            errors.push(format!("stopping {}: {e}", node.name));
        }
        if let Err(e) = db::collect_logs(db, cluster, node, &run.node_dir(&node.name)) {
            errors.push(format!("collecting logs of {}: {e}", node.name));
        }
    }
}

/// Shared between client threads and the driver.
pub(crate) struct Shared {
    pub(crate) stop: AtomicBool,
    pub(crate) ops: AtomicU64,
    pub(crate) ok: AtomicU64,
}

impl Shared {
    pub(crate) fn new() -> Self {
        Self {
            stop: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            ok: AtomicU64::new(0),
        }
    }
}

/// One client thread (Jepsen's rule: after `info` the process is retired and the thread
/// continues as `process + concurrency` with a fresh client). `rate_per_client` 0: closed loop.
#[allow(clippy::too_many_arguments)]
pub(crate) fn client_loop(
    worker: usize,
    concurrency: usize,
    mut generator: Box<dyn Generator>,
    factory: &dyn ClientFactory,
    node: &Node,
    history: &HistoryWriter,
    shared: &Shared,
    interval: Option<Duration>,
    op_timeout: Duration,
) {
    let mut process = worker as u64;
    let mut client = None;
    let mut next = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        if let Some(interval) = interval {
            let now = Instant::now();
            if next > now {
                thread::sleep((next - now).min(Duration::from_millis(100)));
                continue;
            }
            next = (next + interval).max(now);
        }
        let active = match &mut client {
            Some(c) => c,
            None => match factory.open(node, process) {
                Ok(c) => client.insert(c),
                Err(e) => {
                    eprintln!("control: process {process}: {e}");
                    thread::sleep(Duration::from_millis(200));
                    continue;
                }
            },
        };
        let op = generator.next_op(process);
        let performed = Performed {
            history,
            process,
            node,
            phase: None,
        };
        let Some(kind) = performed.perform(&mut **active, &op, op_timeout) else {
            return;
        };
        shared.ops.fetch_add(1, Ordering::Relaxed);
        if kind == EventType::Ok {
            shared.ok.fetch_add(1, Ordering::Relaxed);
        }
        if kind == EventType::Info {
            process += concurrency as u64;
            client = None;
        }
    }
}

/// Sleeps until `deadline` unless interrupted or stopped; false when cut short.
fn wait(deadline: Instant, interrupted: &AtomicBool, stop: &AtomicBool) -> bool {
    while Instant::now() < deadline {
        if interrupted.load(Ordering::SeqCst) || stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep(Duration::from_millis(50).min(deadline - Instant::now()));
    }
    true
}

/// Runs one `shardkv` test with the clients `backend` makes.
pub fn run_shard_test(
    options: &TestOptions,
    shard: &ShardOptions,
    backend: BackendFn<'_>,
    interrupted: &AtomicBool,
) -> Result<Outcome, RunError> {
    if options.nodes == 0 || options.concurrency == 0 || options.time.is_zero() {
        return Err(RunError::BadOption(
            "nodes, concurrency and time must be positive".into(),
        ));
    }
    let keep_serving = keep_serving(options.mutation.as_deref())?;
    let node_binary = node_binary(options)?;
    eprintln!("SEED={}", options.seed);
    let run = RunDir::create(&options.results_root, &options.name, chrono::Local::now())?;
    eprintln!("control: results in {}", run.path.display());
    let mut cluster = crate::runner::provision(options, None)?;
    let layout = Layout::new(cluster.nodes(), shard.groups)
        .map_err(|e| RunError::BadOption(e.to_string()))?;
    eprintln!(
        "control: cluster {} with {} nodes; {} daemons ({} groups + controller)",
        cluster.tag(),
        cluster.nodes().len(),
        layout.daemons.len(),
        shard.groups
    );
    let db = ShardDb::new(
        layout.clone(),
        ShardCerts::new().map_err(RunError::Db)?,
        node_binary,
        keep_serving,
    );
    let clock = TestClock::new();
    let history = HistoryWriter::create(&run.history_jsonl(), clock)?;
    let log = Mutex::new(EventLog::open(&run.nemesis_jsonl(), clock));
    let mut errors = Vec::new();
    let started = Instant::now();
    let shared = Shared::new();
    if let Err(e) = drive(
        &*cluster,
        &db,
        options,
        shard,
        backend,
        &history,
        &log,
        &shared,
        interrupted,
    ) {
        errors.push(e.to_string());
    }
    eprintln!(
        "control: {} operations ({} ok) in {:.1} s",
        shared.ops.load(Ordering::Relaxed),
        shared.ok.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    stop_and_collect(&*cluster, &db, &run, &mut errors);
    let tag = cluster.tag().to_string();
    if let Err(e) = cluster.teardown() {
        errors.push(format!("teardown: {e}"));
    }
    drop(cluster);
    let log = log.into_inner().unwrap_or_else(|p| p.into_inner());
    let analysis = analyze::analyze(&run, "kv", options.check_timeout)?;
    let moves = log
        .reconfigurations
        .iter()
        .filter(|r| r.outcome == "ok")
        .count();
    let info = json!({
        "test": options.name,
        "db": "shardkv",
        "workload": "shardkv",
        "model": "kv",
        "mutation": options.mutation,
        "nemesis": options.nemesis.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "nodes": options.nodes,
        "groups": shard.groups,
        "daemons": layout.daemons.iter().map(|d| json!({"name": d.name, "node": d.node, "port": d.port})).collect::<Vec<_>>(),
        "time_s": options.time.as_secs_f64(),
        "seed": options.seed,
        "concurrency": options.concurrency,
        "interrupted": interrupted.load(Ordering::SeqCst),
        "reconfigurations": log.reconfigurations,
        "reconfigurations_ok": moves,
        "errors": errors,
    });
    run.write_results(&analyze::results_json(&info, &analysis, &log.events))?;
    let validity = if errors.is_empty() || analysis.validity == Validity::Invalid {
        analysis.validity
    } else {
        Validity::Unknown
    };
    Ok(Outcome {
        run_dir: run.path,
        tag,
        validity,
        errors,
        interrupted: interrupted.load(Ordering::SeqCst),
    })
}

/// Start, join every group, run clients + faults + reconfigurations, heal and join every
/// group, recover, read every key once more.
#[allow(clippy::too_many_arguments)]
fn drive(
    cluster: &dyn Cluster,
    db: &ShardDb,
    options: &TestOptions,
    shard: &ShardOptions,
    backend: BackendFn<'_>,
    history: &HistoryWriter,
    log: &Mutex<EventLog>,
    shared: &Shared,
    interrupted: &AtomicBool,
) -> Result<(), RunError> {
    start_all(cluster, db)?;
    let backend = backend(&db.layout, &db.certs, options.op_timeout).map_err(RunError::Db)?;
    let servers: BTreeMap<Gid, Vec<String>> = db
        .layout
        .gids()
        .into_iter()
        .map(|g| (g, db.layout.servers(g)))
        .collect();
    let netns = cluster.client_netns();
    let enter = |what: &str| -> bool {
        match &netns {
            Some(ns) => match crate::netns::enter(ns) {
                Ok(()) => true,
                Err(e) => {
                    eprintln!("control: {what}: {e}");
                    false
                }
            },
            None => true,
        }
    };
    let clock = history.clock();
    let now = move || clock.now_ns();
    let nodes = cluster.nodes().to_vec();
    let mut nemesis = ClusterNemesis::new(cluster, db);
    nemesis
        .setup()
        .map_err(|e| RunError::Nemesis(e.to_string()))?;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut schedule = Schedule::new(options.seed, &options.nemesis, &names);
    schedule.faulty = options.faulty;
    schedule.healed = options.healed;
    let factory = backend.clients();
    let interval = (options.rate > 0)
        .then(|| Duration::from_secs_f64(options.concurrency as f64 / f64::from(options.rate)));
    let reconfig_stop = AtomicBool::new(false);
    let mut result = Ok(());
    thread::scope(|scope| {
        // The controller thread: join every group, then reconfigure until the end, then join
        // every group again (after the faults are healed, below).
        let (joined_tx, joined_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let (final_tx, final_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<(), String>>();
        let reconfig_stop = &reconfig_stop;
        let servers = servers.clone();
        let backend = &*backend;
        scope.spawn(move || {
            if !enter("controller client") {
                let _ = joined_tx.send(Err("cannot enter the client namespace".into()));
                return;
            }
            let controller = match backend.controller(1_000_000_000) {
                Ok(c) => c,
                Err(e) => {
                    let _ = joined_tx.send(Err(e));
                    return;
                }
            };
            let mut reconfigurer = Reconfigurer::new(controller, servers);
            let join_deadline = Instant::now() + shard.final_join_timeout;
            let joined = join_all(&mut reconfigurer, log, &now, join_deadline);
            let failed = joined.is_err();
            let _ = joined_tx.send(joined);
            if failed {
                return;
            }
            let mut schedule = ReconfigSchedule::new(options.seed, &db.layout.gids());
            if !shard.reconfigure_every.is_zero() {
                while wait(
                    Instant::now() + shard.reconfigure_every,
                    interrupted,
                    reconfig_stop,
                ) {
                    let Some(change) =
                        schedule.next_with_owners(&reconfigurer.joined, &reconfigurer.owners)
                    else {
                        break;
                    };
                    let event = reconfigurer.apply(change, &now);
                    if let Ok(mut log) = log.lock() {
                        log.reconfiguration(event);
                    }
                }
            }
            // Wait for the heal, then bring every group back.
            let _ = final_rx.recv();
            let deadline = Instant::now() + shard.final_join_timeout;
            let _ = done_tx.send(join_all(&mut reconfigurer, log, &now, deadline));
        });
        if let Ok(Err(e)) | Err(e) = joined_rx
            .recv()
            .map_err(|_| "controller thread ended".to_string())
        {
            result = Err(RunError::Db(format!("joining the groups: {e}")));
            let _ = final_tx.send(());
            return;
        }
        eprintln!("control: every group joined; clients start");
        let started = Instant::now();
        for worker in 0..options.concurrency {
            let node = &nodes[worker % nodes.len()];
            let generator: Box<dyn Generator> = Box::new(ShardKvGenerator::new(
                options.seed.wrapping_add(0x9e37_79b9 * (worker as u64 + 1)),
                shard.keys,
                shard.read_percent,
            ));
            let factory = &*factory;
            let enter = &enter;
            scope.spawn(move || {
                if enter("client") {
                    client_loop(
                        worker,
                        options.concurrency,
                        generator,
                        factory,
                        node,
                        history,
                        shared,
                        interval,
                        options.op_timeout,
                    );
                }
            });
        }
        // The fault schedule, on this thread.
        let end = started + options.time;
        let never = AtomicBool::new(false);
        while Instant::now() < end {
            if !wait(
                (Instant::now() + schedule.healed).min(end),
                interrupted,
                &never,
            ) || Instant::now() >= end
            {
                break;
            }
            // The leader of the controller or of one replica group, in turn (isolate-leader).
            let leader = db.leader(cluster);
            let Some(fault) = schedule.next_fault(leader.as_deref()) else {
                wait(end, interrupted, &never);
                continue;
            };
            let time = now();
            let error = nemesis.start(&fault).err().map(|e| e.to_string());
            lock(log).fault(time, "start", Some(&fault), error);
            let keep_going = wait(
                (Instant::now() + schedule.faulty).min(end),
                interrupted,
                &never,
            );
            let time = now();
            let error = nemesis.stop(&fault).err().map(|e| e.to_string());
            lock(log).fault(time, "stop", Some(&fault), error);
            if !keep_going {
                break;
            }
        }
        // Final phase: no more reconfigurations, every fault healed, every daemon up, every
        // group joined; the heal-all event spans all of it.
        reconfig_stop.store(true, Ordering::SeqCst);
        let heal_time = now();
        let mut heal_error = nemesis.heal_all().err().map(|e| e.to_string());
        for node in &nodes {
            if let Err(e) = db.start(cluster, node) {
                heal_error.get_or_insert(format!("restarting {}: {e}", node.name));
            }
        }
        let _ = final_tx.send(());
        match done_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                heal_error.get_or_insert(format!("final join: {e}"));
            }
            Err(_) => {
                heal_error.get_or_insert("final join: controller thread ended".into());
            }
        }
        lock(log).fault(heal_time, "heal-all", None, heal_error.clone());
        if let Some(e) = heal_error {
            result = Err(RunError::Nemesis(format!("final heal failed: {e}")));
        }
        let never = AtomicBool::new(false);
        wait(Instant::now() + options.recovery, interrupted, &never);
        shared.stop.store(true, Ordering::SeqCst);
    });
    let _ = nemesis.remove();
    if result.is_ok() && !interrupted.load(Ordering::SeqCst) {
        final_reads(history, &*factory, &nodes, options, &enter);
    }
    result
}

fn lock(log: &Mutex<EventLog>) -> std::sync::MutexGuard<'_, EventLog> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

/// Joins every group missing from the latest configuration, retrying until `deadline`.
fn join_all(
    reconfigurer: &mut Reconfigurer<'_>,
    log: &Mutex<EventLog>,
    now: &dyn Fn() -> u64,
    deadline: Instant,
) -> Result<(), String> {
    let mut last = String::from("no answer from the controller");
    while Instant::now() < deadline {
        match reconfigurer.missing_join() {
            Ok(None) => return Ok(()),
            Ok(Some(change)) => {
                let event = reconfigurer.apply(change, now);
                if let Some(e) = &event.error {
                    last = e.clone();
                }
                lock(log).reconfiguration(event);
            }
            Err(e) => last = e,
        }
        thread::sleep(Duration::from_millis(200));
    }
    Err(format!("not every group joined in time: {last}"))
}

/// After the recovery phase: the final-read phase (history phase `final-read`): a get of every
/// key ever written until one is ok, each reader on fresh processes, so the lost-writes check
/// compares every acknowledged write with its key's final value.
fn final_reads(
    history: &HistoryWriter,
    factory: &dyn ClientFactory,
    nodes: &[Node],
    options: &TestOptions,
    enter: &(dyn Fn(&str) -> bool + Sync),
) {
    let keys: BTreeSet<String> = match history::read_history(history.path()) {
        Ok(events) => events
            .into_iter()
            .filter(|e| e.kind == EventType::Invoke && e.f != "get")
            .filter_map(|e| e.key)
            .collect(),
        Err(e) => {
            eprintln!("control: final reads: {e}");
            return;
        }
    };
    let keys: Vec<String> = keys.into_iter().collect();
    let threads = options.concurrency.clamp(1, 8);
    let base = 10_000_000u64;
    eprintln!("control: final reads of {} keys", keys.len());
    thread::scope(|scope| {
        for t in 0..threads {
            let keys = &keys;
            scope.spawn(move || {
                if !enter("final reads") {
                    return;
                }
                let node = &nodes[t % nodes.len()];
                let mut process = base + t as u64;
                let mut client = None;
                for key in keys.iter().skip(t).step_by(threads) {
                    for _attempt in 0..FINAL_READ_ATTEMPTS_MAX {
                        let active = match &mut client {
                            Some(c) => c,
                            None => match factory.open(node, process) {
                                Ok(c) => client.insert(c),
                                Err(_) => break,
                            },
                        };
                        let op = Op {
                            f: "get".into(),
                            key: Some(key.clone()),
                            value: Value::Null,
                        };
                        let performed = Performed {
                            history,
                            process,
                            node,
                            phase: Some(FINAL_READ_PHASE),
                        };
                        match performed.perform(&mut **active, &op, options.op_timeout) {
                            Some(EventType::Ok) => break,
                            // A read that is not ok retires its process: an `info` must not
                            // be followed by another operation of the same process.
                            Some(_) => {
                                process += threads as u64;
                                client = None;
                                thread::sleep(Duration::from_millis(250));
                            }
                            None => return,
                        }
                    }
                }
            });
        }
    });
}

/// For tests: the reconfiguration change names recorded in a run's `nemesis.jsonl`.
pub fn recorded_reconfigurations(run_dir: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_to_string(run_dir.join("nemesis.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let r = v.get("reconfigure")?;
            let change: Reconfig = serde_json::from_value(r.get("change")?.clone()).ok()?;
            Some((change.describe(), r.get("outcome")?.as_str()?.to_string()))
        })
        .collect()
}
