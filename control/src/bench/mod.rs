//! `control bench-compare`: our KV and etcd side by side on the same local cluster, driven by
//! the same load generator, in one run.
//!
//! For each system in turn: start it on 3 nodes of one local namespace cluster (the harness's
//! own lifecycle code: SSH, pid files, logs), find its leader, preload the records, then for
//! each YCSB workload and client count a warm-up followed by a measured window of closed-loop
//! clients; then the open-loop rates; then stop it by pid, collect its logs and remove its data.
//! The results folder (`results/bench-compare/<timestamp>/`, `latest` beside it) holds
//! `results.json` (every figure and the setup), `report.html` (self-contained plots) and the
//! nodes' logs under `nodes/<system>-<node>/`.
//!
//! The I/O line: [`ycsb`] (operation streams) and the plot/HTML rendering are pure; [`load`]
//! drives clients on a tokio runtime; this module owns the cluster and the files.

pub mod load;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod system;
pub mod ycsb;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::cluster::local::{LocalCluster, LocalOptions};
use crate::cluster::{Cluster, ClusterError, Node};
use crate::daemon::ProcessState;
use crate::db::{self, Db};
use crate::results::{ResultsError, RunDir};
use crate::ssh::Remote as _;
use load::{CellPlan, Measured};
use system::{BenchClient, Connect, System};
use ycsb::{KeyChooser, KeyDistribution, Workload};

/// The results folder's test name.
pub const BENCH_NAME: &str = "bench-compare";
/// Members per system.
pub const NODES: usize = 3;
/// Clients that preload the records.
const PRELOAD_CLIENTS: usize = 16;
/// How long a freshly started system may take to elect a leader.
const LEADER_WAIT: Duration = Duration::from_secs(30);
/// Limits on what a run may ask for.
pub const CLIENTS_MAX: usize = 1024;
pub const RECORDS_MAX: u64 = 10_000_000;
pub const VALUE_BYTES_MAX: usize = 1 << 20;

/// An open-loop rate: absolute, or a fraction of the system's own closed-loop peak.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    PerSecond(f64),
    OfPeak(f64),
}

impl Rate {
    pub fn label(self) -> String {
        match self {
            Rate::PerSecond(r) => format!("{r:.0}/s"),
            Rate::OfPeak(f) => format!("{:.0}% of peak", f * 100.0),
        }
    }
}

impl FromStr for Rate {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad =
            || format!("bad rate `{s}` (want a positive number of requests/s, or N% of peak)");
        if let Some(percent) = s.strip_suffix('%') {
            let p: f64 = percent.trim().parse().map_err(|_| bad())?;
            if !(p > 0.0 && p <= 1000.0) {
                return Err(bad());
            }
            return Ok(Rate::OfPeak(p / 100.0));
        }
        let r: f64 = s.parse().map_err(|_| bad())?;
        if !(r > 0.0 && r.is_finite()) {
            return Err(bad());
        }
        Ok(Rate::PerSecond(r))
    }
}

/// Parses a comma-separated list with `T::from_str`, refusing an empty list.
pub fn parse_list<T: FromStr<Err = String>>(text: &str, what: &str) -> Result<Vec<T>, String> {
    let items: Vec<T> = text
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;
    if items.is_empty() {
        return Err(format!("{what}: empty list"));
    }
    Ok(items)
}

/// Parses client counts (`1,16,64`).
pub fn parse_clients(text: &str) -> Result<Vec<usize>, String> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=CLIENTS_MAX).contains(n))
                .ok_or_else(|| format!("bad client count `{s}` (1..={CLIENTS_MAX})"))
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(|v| {
            if v.is_empty() {
                Err("--clients: empty list".into())
            } else {
                Ok(v)
            }
        })
}

/// Everything a comparison run needs; the CLI fills it from flags.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub systems: Vec<System>,
    pub workloads: Vec<Workload>,
    /// Closed-loop client counts.
    pub clients: Vec<usize>,
    pub warmup: Duration,
    pub duration: Duration,
    pub records: u64,
    pub value_bytes: usize,
    pub distribution: KeyDistribution,
    pub connect: Connect,
    /// The open-loop workload (None: no open-loop runs).
    pub open_workload: Option<Workload>,
    pub rates: Vec<Rate>,
    /// Workers serving the open-loop schedule.
    pub open_clients: usize,
    pub op_timeout: Duration,
    /// 1: one current-thread runtime drives every client; more: a multi-thread runtime.
    pub client_threads: usize,
    pub seed: u64,
    pub results_root: PathBuf,
    pub name: String,
    /// Our node daemon (default: `node` beside this executable).
    pub node_binary: Option<PathBuf>,
    pub etcd_binary: PathBuf,
    /// Our nodes' snapshot threshold.
    pub max_raft_state_bytes: usize,
    /// Width of a throughput-over-time bin.
    pub bin: Duration,
}

impl Default for BenchOptions {
    /// The defaults of `make bench-compare`: a full run in about 5 minutes.
    fn default() -> Self {
        BenchOptions {
            systems: vec![System::Ours, System::Etcd],
            workloads: Workload::ALL.to_vec(),
            clients: vec![1, 16, 64],
            warmup: Duration::from_secs(2),
            duration: Duration::from_secs(6),
            records: 1000,
            value_bytes: 1024,
            distribution: KeyDistribution::Zipfian,
            connect: Connect::Leader,
            open_workload: Some(Workload::A),
            rates: vec![
                Rate::PerSecond(1000.0),
                Rate::PerSecond(2000.0),
                Rate::PerSecond(4000.0),
                Rate::PerSecond(6000.0),
            ],
            open_clients: 64,
            op_timeout: Duration::from_secs(2),
            client_threads: 1,
            seed: 0,
            results_root: PathBuf::from("results"),
            name: BENCH_NAME.into(),
            node_binary: None,
            etcd_binary: PathBuf::from(crate::etcd::DEFAULT_BINARY),
            max_raft_state_bytes: 8 << 20,
            bin: Duration::from_millis(250),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("bad option: {0}")]
    BadOption(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Results(#[from] ResultsError),
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One measured cell.
#[derive(Debug, Clone)]
pub struct Row {
    pub system: System,
    pub workload: Workload,
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Closed loop: clients; open loop: the workers serving the schedule.
    pub clients: usize,
    /// Open loop: requests per second due.
    pub target_rate: Option<f64>,
    pub measured: Measured,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1e3
}

impl Row {
    pub fn p_ms(&self, quantile: f64) -> Option<f64> {
        (!self.measured.latency_us.is_empty())
            .then(|| ms(self.measured.latency_us.value_at_quantile(quantile)))
    }

    /// The row as results.json holds it (DESIGN.md "Benchmark results", plus detail).
    pub fn to_json(&self) -> Value {
        let m = &self.measured;
        let h = &m.latency_us;
        let some = !h.is_empty();
        let q = |quantile: f64| some.then(|| ms(h.value_at_quantile(quantile)));
        let percentiles: Vec<Value> = [0.0, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999, 1.0]
            .iter()
            .filter(|_| some)
            .map(|&p| json!([p * 100.0, ms(h.value_at_quantile(p))]))
            .collect();
        let ok = m.ok.max(1) as f64;
        let cpu = m.cpu.map(|c| {
            json!({
                "wall_s": c.wall_s,
                "server_cpu_s": c.server_cpu_s,
                "client_cpu_s": c.client_cpu_s,
                "server_cpu_us_per_op": c.server_cpu_s * 1e6 / ok,
                "client_cpu_us_per_op": c.client_cpu_s * 1e6 / ok,
                "server_voluntary_switches_per_op": c.server_voluntary_switches as f64 / ok,
                "server_involuntary_switches_per_op": c.server_involuntary_switches as f64 / ok,
                "client_voluntary_switches_per_op": c.client_voluntary_switches as f64 / ok,
                "server_threads": c.server_threads,
                "client_threads": c.client_threads,
                "servers_read": c.servers_read,
                "cores_busy": (c.server_cpu_s + c.client_cpu_s) / c.wall_s.max(1e-9),
            })
        });
        json!({
            "system": self.system.name(),
            "workload": self.workload.name(),
            "clients": self.clients,
            "mode": self.mode,
            "target_rate": self.target_rate,
            "ops_per_sec": m.ops_per_sec(),
            "ok": m.ok,
            "errors": m.errors,
            "unsent": m.unsent,
            "duration_s": m.duration.as_secs_f64(),
            "p50_ms": q(0.5),
            "p90_ms": q(0.9),
            "p99_ms": q(0.99),
            "p999_ms": q(0.999),
            "max_ms": some.then(|| ms(h.max())),
            "mean_ms": some.then(|| h.mean() / 1e3),
            "latency_percentiles_ms": percentiles,
            "send_lag_p50_ms": m.send_lag_us.as_ref().filter(|h| !h.is_empty()).map(|h| ms(h.value_at_quantile(0.5))),
            "send_lag_p99_ms": m.send_lag_us.as_ref().filter(|h| !h.is_empty()).map(|h| ms(h.value_at_quantile(0.99))),
            "throughput_over_time": {
                "bin_s": m.bin.as_secs_f64(),
                "ok_per_sec": m.ok_per_bin.iter().map(|c| *c as f64 / m.bin.as_secs_f64().max(1e-9)).collect::<Vec<_>>(),
            },
            "cpu": cpu,
            "error_examples": m.error_examples,
        })
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct BenchOutcome {
    pub run_dir: PathBuf,
    pub rows: Vec<Row>,
    pub results: Value,
    /// Problems met (a system that could not be measured, a teardown that failed).
    pub errors: Vec<String>,
}

impl BenchOptions {
    fn validate(&self) -> Result<(), BenchError> {
        let bad = |m: &str| Err(BenchError::BadOption(m.to_string()));
        if self.systems.is_empty() || self.workloads.is_empty() || self.clients.is_empty() {
            return bad("systems, workloads and clients must not be empty");
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive");
        }
        if self.records == 0 || self.records > RECORDS_MAX {
            return bad("records must be in 1..=10,000,000");
        }
        if self.value_bytes == 0 || self.value_bytes > VALUE_BYTES_MAX {
            return bad("value size must be in 1..=1 MiB");
        }
        if self.clients.iter().any(|c| *c == 0 || *c > CLIENTS_MAX)
            || self.open_clients == 0
            || self.open_clients > CLIENTS_MAX
        {
            return bad("client counts must be in 1..=1024");
        }
        if self.client_threads == 0 || self.client_threads > 64 {
            return bad("--client-threads must be in 1..=64");
        }
        if self.bin.is_zero() {
            return bad("the throughput bin must be positive");
        }
        if self.systems.contains(&System::Etcd) && !self.etcd_binary.exists() {
            return Err(BenchError::BadOption(format!(
                "{} is missing; install the Debian packages etcd-server and etcd-client (make deps)",
                self.etcd_binary.display()
            )));
        }
        Ok(())
    }

    fn node_binary(&self) -> Result<PathBuf, BenchError> {
        self.node_binary
            .clone()
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|exe| exe.parent().map(|d| d.join("node")))
                    .filter(|p| p.exists())
            })
            .ok_or_else(|| {
                BenchError::BadOption(
                    "the `node` binary is not beside `control`; build with `cargo build --release -p node`".into(),
                )
            })
    }
}

/// Runs the comparison. Progress goes to stderr; the caller prints the table.
pub fn run(
    options: &BenchOptions,
    interrupted: &Arc<AtomicBool>,
) -> Result<BenchOutcome, BenchError> {
    options.validate()?;
    let node_binary = if options.systems.contains(&System::Ours) {
        Some(options.node_binary()?)
    } else {
        None
    };
    eprintln!("SEED={}", options.seed);
    let started_at = chrono::Local::now();
    let run = RunDir::create(&options.results_root, &options.name, started_at)?;
    eprintln!("control: bench results in {}", run.path.display());
    let provisioning = Instant::now();
    let mut cluster = LocalCluster::provision(&LocalOptions {
        nodes: NODES,
        tag: None,
        subnet: None,
    })?;
    eprintln!(
        "control: cluster {} with {NODES} nodes ready in {:.1} s",
        cluster.tag(),
        provisioning.elapsed().as_secs_f64()
    );
    let mut rows = Vec::new();
    let mut errors = Vec::new();
    let mut systems = serde_json::Map::new();
    for &system in &options.systems {
        if interrupted.load(Ordering::SeqCst) {
            errors.push(format!("{}: skipped (interrupted)", system.name()));
            continue;
        }
        eprintln!("control: == {} ==", system.name());
        let outcome = bench_system(
            system,
            &cluster,
            options,
            node_binary.as_deref(),
            &run,
            interrupted,
        );
        errors.extend(
            outcome
                .errors
                .iter()
                .map(|e| format!("{}: {e}", system.name())),
        );
        systems.insert(system.name().into(), outcome.info);
        rows.extend(outcome.rows);
    }
    if let Err(e) = cluster.teardown() {
        errors.push(format!("teardown: {e}"));
    }
    drop(cluster);
    let results = json!({
        "bench": options.name,
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
        "setup": setup_json(options, &started_at.to_rfc3339()),
        "systems": systems,
        "errors": errors,
        "interrupted": interrupted.load(Ordering::SeqCst),
    });
    run.write_results(&results)?;
    let html = report::render(&results);
    let report_path = run.path.join("report.html");
    std::fs::write(&report_path, html).map_err(|source| BenchError::Write {
        path: report_path,
        source,
    })?;
    Ok(BenchOutcome {
        run_dir: run.path,
        rows,
        results,
        errors,
    })
}

/// One system's rows, what is known about it (leader, pids, preload time), and its errors.
struct SystemOutcome {
    rows: Vec<Row>,
    info: Value,
    errors: Vec<String>,
}

/// A system's Db, and for ours the certificates its clients need (kept alive for the run).
type MadeDb = (Box<dyn Db>, Option<Arc<crate::ourkv::Certs>>);

fn make_db(
    system: System,
    cluster: &dyn Cluster,
    options: &BenchOptions,
    node_binary: Option<&Path>,
) -> Result<MadeDb, String> {
    match system {
        System::Ours => {
            let binary = node_binary.ok_or("no node binary")?.to_path_buf();
            let certs = Arc::new(crate::ourkv::Certs::new()?);
            let db = crate::ourkv::KvDb::new(
                &crate::ourkv::KvDbOptions {
                    node_binary: binary,
                    unsafe_stale_reads: false,
                    max_raft_state_bytes: options.max_raft_state_bytes,
                },
                certs.clone(),
            );
            Ok((Box::new(db), Some(certs)))
        }
        System::Etcd => {
            let token = format!("rj-bench-{}-{}", cluster.tag(), std::process::id());
            Ok((
                Box::new(crate::etcd::EtcdDb::new(
                    options.etcd_binary.clone(),
                    &token,
                )),
                None,
            ))
        }
    }
}

fn bench_system(
    system: System,
    cluster: &dyn Cluster,
    options: &BenchOptions,
    node_binary: Option<&Path>,
    run: &RunDir,
    interrupted: &Arc<AtomicBool>,
) -> SystemOutcome {
    let mut outcome = SystemOutcome {
        rows: Vec::new(),
        info: json!({}),
        errors: Vec::new(),
    };
    let (db, certs) = match make_db(system, cluster, options, node_binary) {
        Ok(made) => made,
        Err(e) => {
            outcome.errors.push(e);
            return outcome;
        }
    };
    let nodes = cluster.nodes().to_vec();
    let started = Instant::now();
    let start = thread::scope(|scope| {
        let handles: Vec<_> = nodes
            .iter()
            .map(|node| {
                scope.spawn(|| {
                    db.setup(cluster, node)
                        .and_then(|()| db.start(cluster, node))
                })
            })
            .collect();
        let mut failures = Vec::new();
        for (node, handle) in nodes.iter().zip(handles) {
            match handle.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failures.push(format!("starting on {}: {e}", node.name)),
                Err(_) => failures.push(format!("starting on {}: panicked", node.name)),
            }
        }
        failures
    });
    if start.is_empty() {
        let certs_dir = certs.as_ref().map(|c| c.path().to_path_buf());
        match measure(system, cluster, &*db, options, certs_dir, interrupted) {
            Ok((rows, info)) => {
                outcome.rows = rows;
                outcome.info = info;
            }
            Err(e) => outcome.errors.push(e),
        }
    } else {
        outcome.errors.extend(start);
    }
    if let Some(info) = outcome.info.as_object_mut() {
        info.insert(
            "seconds_total".into(),
            json!(started.elapsed().as_secs_f64()),
        );
    }
    for node in &nodes {
        if let Err(e) = db.stop(cluster, node) {
            outcome.errors.push(format!("stopping {}: {e}", node.name));
        }
        let dest = run.node_dir(&format!("{}-{}", system.name(), node.name));
        if let Err(e) = db::collect_logs(&*db, cluster, node, &dest) {
            outcome
                .errors
                .push(format!("collecting logs of {}: {e}", node.name));
        }
        if let Err(e) = db.teardown(cluster, node) {
            outcome
                .errors
                .push(format!("teardown on {}: {e}", node.name));
        }
        // Our KV keeps its Raft log and snapshots in `data/`; etcd's teardown removed its own.
        if system == System::Ours {
            let dir = cluster.node_dir(node);
            if let Err(e) = cluster.ssh().exec(node, &format!("rm -rf {dir}/data")) {
                outcome
                    .errors
                    .push(format!("removing data on {}: {e}", node.name));
            }
        }
    }
    outcome
}

/// Waits for a leader, then runs every cell in a thread inside the cluster's client namespace.
fn measure(
    system: System,
    cluster: &dyn Cluster,
    db: &dyn Db,
    options: &BenchOptions,
    certs_dir: Option<PathBuf>,
    interrupted: &Arc<AtomicBool>,
) -> Result<(Vec<Row>, Value), String> {
    let waited = Instant::now();
    let leader = loop {
        if let Some(leader) = db.leader(cluster) {
            break leader;
        }
        if waited.elapsed() > LEADER_WAIT || interrupted.load(Ordering::SeqCst) {
            return Err(format!("no leader within {} s", LEADER_WAIT.as_secs()));
        }
        thread::sleep(Duration::from_millis(200));
    };
    let leader_wait = waited.elapsed();
    let mut pids = Vec::new();
    let mut pid_of = serde_json::Map::new();
    for node in cluster.nodes() {
        if let Ok(ProcessState::Running(pid)) = db.state(cluster, node) {
            pids.push(pid);
            pid_of.insert(node.name.clone(), json!(pid));
        }
    }
    eprintln!(
        "control: {} leader {leader} after {:.1} s; server pids {pids:?}",
        system.name(),
        leader_wait.as_secs_f64()
    );
    let job = LoadJob {
        system,
        nodes: cluster.nodes().to_vec(),
        leader: leader.clone(),
        certs_dir,
        options: options.clone(),
        pids: pids.clone(),
        interrupted: interrupted.clone(),
    };
    let netns = cluster.client_netns();
    let (rows, preload_s) =
        crate::netns::run_in(netns.as_deref(), move || job.run()).map_err(|e| e.to_string())??;
    let threads: Vec<Value> = pids
        .iter()
        .map(|pid| json!(procstat::process(&pid.to_string()).map(|t| t.threads)))
        .collect();
    let info = json!({
        "leader": leader,
        "pids": pid_of,
        "threads_per_server": threads,
        "preload_s": preload_s,
        "leader_wait_s": leader_wait.as_secs_f64(),
    });
    Ok((rows, info))
}

/// The part of a system's run that happens inside the client namespace.
struct LoadJob {
    system: System,
    nodes: Vec<Node>,
    leader: String,
    certs_dir: Option<PathBuf>,
    options: BenchOptions,
    pids: Vec<u32>,
    interrupted: Arc<AtomicBool>,
}

impl LoadJob {
    fn run(self) -> Result<(Vec<Row>, f64), String> {
        let runtime = if self.options.client_threads <= 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(self.options.client_threads)
                .enable_all()
                .build()
        }
        .map_err(|e| format!("starting the client runtime: {e}"))?;
        runtime.block_on(self.drive())
    }

    async fn open(&self, count: usize) -> Result<Vec<Box<dyn BenchClient>>, String> {
        let o = &self.options;
        match self.system {
            System::Ours => {
                let certs = self.certs_dir.as_deref().ok_or("no certificates")?;
                system::open_ours(
                    certs,
                    &self.nodes,
                    &self.leader,
                    o.connect,
                    count,
                    1,
                    o.op_timeout,
                )
                .await
            }
            System::Etcd => {
                system::open_etcd(&self.nodes, &self.leader, o.connect, count, o.op_timeout).await
            }
        }
    }

    async fn drive(self) -> Result<(Vec<Row>, f64), String> {
        let o = &self.options;
        let pool_size = o
            .clients
            .iter()
            .copied()
            .chain(o.open_workload.map(|_| o.open_clients))
            .chain([PRELOAD_CLIENTS])
            .max()
            .unwrap_or(1);
        let mut pool = self.open(pool_size).await?;
        let rest = pool.split_off(PRELOAD_CLIENTS.min(pool.len()));
        let (mut back, took) = load::preload(pool, o.records, o.value_bytes, o.seed).await?;
        back.extend(rest);
        let mut pool = back;
        eprintln!(
            "control: {} preloaded {} records of {} B in {:.1} s",
            self.system.name(),
            o.records,
            o.value_bytes,
            took.as_secs_f64()
        );
        let keys = KeyChooser::new(o.records, o.distribution);
        let stop = &self.interrupted;
        let pids = &self.pids[..];
        let mut rows = Vec::new();
        let mut cell = 0u64;
        for &workload in &o.workloads {
            for &clients in &o.clients {
                if stop.load(Ordering::SeqCst) {
                    return Ok((rows, took.as_secs_f64()));
                }
                cell += 1;
                let plan = &self.plan(workload, &keys, cell);
                let (used, measured);
                (pool, used, measured) = take(pool, clients, |c| async move {
                    load::closed_loop(c, plan, pids, stop).await
                })
                .await?;
                let row = Row {
                    system: self.system,
                    workload,
                    mode: "closed",
                    clients: used,
                    target_rate: None,
                    measured,
                };
                progress(&row);
                rows.push(row);
            }
        }
        if let Some(workload) = o.open_workload {
            let peak = rows
                .iter()
                .filter(|r| r.workload == workload)
                .map(|r| r.measured.ops_per_sec())
                .fold(0.0, f64::max);
            for &rate in &o.rates {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let per_second = match rate {
                    Rate::PerSecond(r) => r,
                    Rate::OfPeak(_) if peak <= 0.0 => {
                        eprintln!(
                            "control: {} {}: no closed-loop peak of workload {} to scale from; skipped",
                            self.system.name(),
                            rate.label(),
                            workload.name()
                        );
                        continue;
                    }
                    Rate::OfPeak(f) => f * peak,
                };
                cell += 1;
                let plan = &self.plan(workload, &keys, cell);
                let (used, measured);
                (pool, used, measured) = take(pool, o.open_clients, |c| async move {
                    load::open_loop(c, plan, per_second, pids, stop).await
                })
                .await?;
                let row = Row {
                    system: self.system,
                    workload,
                    mode: "open",
                    clients: used,
                    target_rate: Some(per_second),
                    measured,
                };
                progress(&row);
                rows.push(row);
            }
        }
        Ok((rows, took.as_secs_f64()))
    }

    fn plan(&self, workload: Workload, keys: &KeyChooser, cell: u64) -> CellPlan {
        let o = &self.options;
        CellPlan {
            workload,
            keys: keys.clone(),
            value_bytes: o.value_bytes,
            seed: o.seed.wrapping_add(cell.wrapping_mul(1_000_003)),
            warmup: o.warmup,
            duration: o.duration,
            bin: o.bin,
        }
    }
}

/// Runs `f` with the first `n` clients of `pool` and puts them back in front.
async fn take<F, Fut>(
    mut pool: Vec<Box<dyn BenchClient>>,
    n: usize,
    f: F,
) -> Result<(Vec<Box<dyn BenchClient>>, usize, Measured), String>
where
    F: FnOnce(Vec<Box<dyn BenchClient>>) -> Fut,
    Fut: std::future::Future<Output = (Vec<Box<dyn BenchClient>>, Measured)>,
{
    if pool.len() < n {
        return Err(format!("only {} clients left, {n} needed", pool.len()));
    }
    let rest = pool.split_off(n);
    let (mut back, measured) = f(pool).await;
    back.extend(rest);
    Ok((back, n, measured))
}

fn progress(row: &Row) {
    let what = match row.target_rate {
        Some(rate) => format!("open {rate:.0}/s x{}", row.clients),
        None => format!("clients={}", row.clients),
    };
    eprintln!(
        "control: {} {} {what}: {:.0} ops/s, p50 {} p99 {} p99.9 {} ms, errors {}",
        row.system.name(),
        row.workload.name(),
        row.measured.ops_per_sec(),
        fmt_ms(row.p_ms(0.5)),
        fmt_ms(row.p_ms(0.99)),
        fmt_ms(row.p_ms(0.999)),
        row.measured.errors + row.measured.unsent
    );
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.2}"))
}

/// The side-by-side table: one line per cell, ours then etcd, and the ratio of ours to etcd.
pub fn table(rows: &[Row]) -> String {
    let mut sorted: Vec<&Row> = rows.iter().collect();
    sorted.sort_by(|a, b| {
        (
            a.mode != "closed",
            a.workload,
            a.clients,
            a.target_rate.map(|r| r as u64),
            a.system,
        )
            .cmp(&(
                b.mode != "closed",
                b.workload,
                b.clients,
                b.target_rate.map(|r| r as u64),
                b.system,
            ))
    });
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<6} {:<8} {:<6} {:>8} {:>10} {:>9} {:>9} {:>9} {:>8} {:>9}",
        "system",
        "workload",
        "mode",
        "clients",
        "ops/s",
        "p50 ms",
        "p99 ms",
        "p99.9 ms",
        "errors",
        "vs etcd"
    );
    for row in &sorted {
        let peer = sorted.iter().find(|o| {
            o.system == System::Etcd
                && row.system == System::Ours
                && o.workload == row.workload
                && o.mode == row.mode
                && o.clients == row.clients
                && o.target_rate.map(|r| r as u64) == row.target_rate.map(|r| r as u64)
        });
        let versus = peer
            .filter(|p| p.measured.ops_per_sec() > 0.0)
            .map(|p| {
                format!(
                    "{:.2}x",
                    row.measured.ops_per_sec() / p.measured.ops_per_sec()
                )
            })
            .unwrap_or_default();
        let mode = match row.target_rate {
            Some(rate) => format!("@{rate:.0}"),
            None => "closed".into(),
        };
        let _ = writeln!(
            out,
            "{:<6} {:<8} {:<6} {:>8} {:>10.0} {:>9} {:>9} {:>9} {:>8} {:>9}",
            row.system.name(),
            row.workload.name(),
            mode,
            row.clients,
            row.measured.ops_per_sec(),
            fmt_ms(row.p_ms(0.5)),
            fmt_ms(row.p_ms(0.99)),
            fmt_ms(row.p_ms(0.999)),
            row.measured.errors + row.measured.unsent,
            versus
        );
    }
    out
}

fn first_line(program: &Path, arg: &str) -> Option<String> {
    let output = std::process::Command::new(program).arg(arg).output().ok()?;
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .next()
        .map(|l| l.trim().to_string())
}

fn machine_json() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_string());
    let memory_kib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    json!({
        "cores": thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": model,
        "memory_mib": memory_kib.map(|k| k / 1024),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").ok().map(|s| s.trim().to_string()),
        "load_average_at_start": std::fs::read_to_string("/proc/loadavg").ok().map(|s| s.trim().to_string()),
    })
}

fn setup_json(options: &BenchOptions, started_at: &str) -> Value {
    let git = std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    json!({
        "started_at": started_at,
        "seed": options.seed,
        "cluster": format!("local: {NODES} network namespaces on one bridge, all on this machine; clients in the control namespace"),
        "nodes": NODES,
        "systems": options.systems.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "workloads": options.workloads.iter().map(|w| json!({"name": w.name(), "describe": w.describe(), "reads_per_mille": w.reads_per_mille()})).collect::<Vec<_>>(),
        "clients": options.clients,
        "warmup_s": options.warmup.as_secs_f64(),
        "duration_s": options.duration.as_secs_f64(),
        "records": options.records,
        "value_bytes": options.value_bytes,
        "key_distribution": options.distribution.name(),
        "zipfian_constant": ycsb::ZIPFIAN_CONSTANT,
        "connect": options.connect.name(),
        "connect_description": options.connect.describe(),
        "reads": "linearizable on both: ours ReadIndex at the leader; etcd's default (non-serializable) Range",
        "open_loop": {
            "workload": options.open_workload.map(|w| w.name()),
            "rates": options.rates.iter().map(|r| r.label()).collect::<Vec<_>>(),
            "workers": options.open_clients,
            "latency_from": "intended send time (coordinated-omission corrected)",
        },
        "op_timeout_s": options.op_timeout.as_secs_f64(),
        "client_runtime": if options.client_threads <= 1 { "one tokio current-thread runtime for all clients".to_string() } else { format!("tokio multi-thread runtime, {} workers", options.client_threads) },
        "histograms": "HDR, microseconds, 3 significant digits",
        "machine": machine_json(),
        "versions": {
            "control": env!("CARGO_PKG_VERSION"),
            "git": git,
            "etcd": first_line(&options.etcd_binary, "--version"),
            "etcd_client_crate": "0.21",
        },
        "ours": {
            "transport": "QUIC + mutual TLS (quinn 0.11, rustls 0.23 ring)",
            "max_raft_state_bytes": options.max_raft_state_bytes,
        },
        "etcd": {
            "transport": "gRPC over plaintext HTTP/2 (no TLS)",
            "flags": "--heartbeat-interval 100 --election-timeout 1000, otherwise etcd 3.4 defaults",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_and_rates_parse() {
        assert_eq!(parse_clients("1, 16,64").unwrap(), vec![1, 16, 64]);
        assert!(parse_clients("0").is_err());
        assert!(parse_clients("").is_err());
        assert_eq!(
            parse_list::<Workload>("a,c", "--workloads").unwrap(),
            vec![Workload::A, Workload::C]
        );
        assert_eq!("2500".parse::<Rate>(), Ok(Rate::PerSecond(2500.0)));
        assert_eq!("50%".parse::<Rate>(), Ok(Rate::OfPeak(0.5)));
        assert!("-3".parse::<Rate>().is_err());
        assert!("x%".parse::<Rate>().is_err());
    }

    #[test]
    fn default_options_are_valid_apart_from_binaries() {
        let mut options = BenchOptions {
            systems: vec![System::Ours],
            ..BenchOptions::default()
        };
        options.validate().unwrap();
        options.clients = vec![];
        assert!(options.validate().is_err());
    }

    #[test]
    fn table_puts_ours_beside_etcd_with_the_ratio() {
        let mut fast = load::new_histogram();
        fast.record(1000).unwrap();
        let row = |system, ok| Row {
            system,
            workload: Workload::A,
            mode: "closed",
            clients: 16,
            target_rate: None,
            measured: Measured {
                ok,
                errors: 0,
                unsent: 0,
                latency_us: fast.clone(),
                send_lag_us: None,
                ok_per_bin: vec![ok],
                bin: Duration::from_secs(1),
                duration: Duration::from_secs(1),
                error_examples: vec![],
                cpu: None,
            },
        };
        let text = table(&[row(System::Etcd, 100), row(System::Ours, 300)]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[1].starts_with("ours"), "{text}");
        assert!(lines[1].contains("3.00x"), "{text}");
        assert!(lines[2].starts_with("etcd"), "{text}");
        let json = row(System::Ours, 300).to_json();
        assert_eq!(json["ops_per_sec"], 300.0);
        assert_eq!(json["p50_ms"], 1.0);
    }
}
