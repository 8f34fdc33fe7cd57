//! The test runner: provision, install, run clients and the nemesis schedule, heal, recover,
//! final reads, collect logs, tear down, check, write the results folder.
//!
//! The final-read phase (Jepsen's final reads): once the last fault is healed and the
//! recovery period has passed, the generator's clients stop, and fresh processes read every
//! key a write was ever invoked on, each until one read is ok (bounded attempts, each on the
//! next node with a new process). Those reads go into the history as ordinary operations
//! marked `phase: "final-read"`, so the linearizability checker judges them and the
//! lost-writes check ([`crate::analyze::lost_writes`]) compares every acknowledged write
//! with them.
//!
//! Every exit path after provisioning runs the same tail — heal everything, stop clients,
//! collect logs, tear the cluster down — whether the run finished, failed or was interrupted
//! (the `interrupted` flag, set by the CLI's Ctrl-C handler). The history is on disk line by
//! line throughout, so even a killed control process leaves a readable history.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;

use crate::analyze::{self, lost_writes, Validity};
use crate::client::{ClientFactory, Completion, Workload};
use crate::cluster::hosts::{SshCluster, SshClusterOptions};
use crate::cluster::local::{LocalCluster, LocalOptions};
use crate::cluster::{Cluster, ClusterError, Node};
use crate::db::{self, Db};
use crate::history::{Event, EventType, HistoryWriter, TestClock, FINAL_READ_PHASE};
use crate::nemesis::apply::ClusterNemesis;
use crate::nemesis::schedule::Schedule;
use crate::nemesis::{Fault, Nemesis, NemesisEvent, NemesisKind};
use crate::ourkv;
use crate::results::RunDir;
use crate::workload::StandinKv;

/// Which machines.
#[derive(Debug, Clone)]
pub enum ClusterChoice {
    /// Network namespaces on this machine (root).
    Local,
    /// Real hosts from a hosts file.
    Ssh {
        hosts: PathBuf,
        user: String,
        key: PathBuf,
        known_hosts: PathBuf,
    },
}

/// Everything a test run needs to know; the CLI fills it from flags.
#[derive(Debug, Clone)]
pub struct TestOptions {
    pub name: String,
    pub cluster: ClusterChoice,
    pub nodes: usize,
    /// Length of the faulty part of the test (before the final recovery).
    pub time: Duration,
    pub workload: String,
    pub nemesis: BTreeSet<NemesisKind>,
    pub mutation: Option<String>,
    pub db: String,
    pub seed: u64,
    /// Concurrent logical processes (client threads).
    pub concurrency: usize,
    pub results_root: PathBuf,
    pub faulty: Duration,
    pub healed: Duration,
    /// Clients keep running this long after the final heal.
    pub recovery: Duration,
    pub op_timeout: Duration,
    /// Target operations per second over all clients (0: as fast as they go). Histories of
    /// a few thousand operations per key keep the linearizability check fast.
    pub rate: u32,
    pub check_timeout: Duration,
    /// Draw a progress display on stderr.
    pub progress: bool,
    /// The stand-in daemon's binary (default: `standin` beside this executable).
    pub standin_binary: Option<PathBuf>,
    /// Our node daemon's binary (default: `node` beside this executable).
    pub node_binary: Option<PathBuf>,
    /// How `--db etcd` serves reads: `linearizable` (default) or `serializable`.
    pub reads: Option<String>,
}

impl TestOptions {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            cluster: ClusterChoice::Local,
            nodes: 5,
            time: Duration::from_secs(120),
            workload: "kv".into(),
            nemesis: NemesisKind::ALL.into_iter().collect(),
            mutation: None,
            db: "ours".into(),
            seed: 0,
            concurrency: 10,
            results_root: PathBuf::from("results"),
            faulty: Duration::from_secs(10),
            healed: Duration::from_secs(10),
            recovery: Duration::from_secs(5),
            op_timeout: Duration::from_secs(1),
            rate: 200,
            check_timeout: Duration::from_secs(60),
            progress: true,
            standin_binary: None,
            node_binary: None,
            reads: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("bad option: {0}")]
    BadOption(String),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Results(#[from] crate::results::ResultsError),
    #[error(transparent)]
    History(#[from] crate::history::HistoryError),
    #[error("setting up the database: {0}")]
    Db(String),
    #[error("nemesis: {0}")]
    Nemesis(String),
    #[error(transparent)]
    Analyze(#[from] analyze::AnalyzeError),
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub run_dir: PathBuf,
    /// The cluster's tag (its namespaces and files are gone by now).
    pub tag: String,
    pub validity: Validity,
    /// Errors met during the run (the verdict still stands on the history recorded).
    pub errors: Vec<String>,
    pub interrupted: bool,
}

/// A database and the workload to run against it.
pub type DbAndWorkload = (Box<dyn Db>, Box<dyn Workload>);

/// The Db for `--db` and the workload for `--workload`, by name.
pub fn choose(options: &TestOptions) -> Result<DbAndWorkload, RunError> {
    let beside_control = |name: &str| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(|d| d.join(name)))
            .filter(|p| p.exists())
    };
    match options.db.as_str() {
        "ours" | "kv" => {
            let unsafe_stale_reads = match options.mutation.as_deref() {
                None => false,
                Some("stale-reads") => true,
                Some(other) => {
                    return Err(RunError::BadOption(format!(
                        "unknown mutation `{other}` (available: stale-reads)"
                    )))
                }
            };
            let node_binary = options
                .node_binary
                .clone()
                .or_else(|| beside_control("node"))
                .ok_or_else(|| {
                    RunError::BadOption(
                        "the `node` binary is not beside `control`; build with `cargo build --release -p node`".into(),
                    )
                })?;
            let kind = match options.workload.as_str() {
                "kv" => ourkv::WorkloadKind::Kv,
                "register" => ourkv::WorkloadKind::Register,
                other => {
                    return Err(RunError::BadOption(format!(
                    "workload `{other}` is not available with --db ours (available: kv, register)"
                )))
                }
            };
            let certs = Arc::new(ourkv::Certs::new().map_err(RunError::Db)?);
            let db = ourkv::KvDb::new(
                &ourkv::KvDbOptions {
                    node_binary,
                    unsafe_stale_reads,
                    max_raft_state_bytes: 1 << 20,
                },
                certs.clone(),
            );
            let workload = ourkv::KvWorkload {
                kind,
                certs,
                op_timeout: options.op_timeout,
            };
            Ok((Box::new(db), Box::new(workload)))
        }
        "standin" => {
            if let Some(mutation) = &options.mutation {
                return Err(RunError::BadOption(format!(
                    "mutation `{mutation}` needs the KV node daemon, which the stand-in cannot emulate"
                )));
            }
            let binary = options
                .standin_binary
                .clone()
                .or_else(|| beside_control("standin"))
                .ok_or_else(|| {
                    RunError::BadOption(
                        "the `standin` binary is not beside `control`; build with `cargo build -p control`".into(),
                    )
                })?;
            let workload: Box<dyn Workload> = match options.workload.as_str() {
                "kv" => Box::new(StandinKv),
                other => {
                    return Err(RunError::BadOption(format!(
                        "workload `{other}` is not available with --db standin (available: kv)"
                    )))
                }
            };
            Ok((Box::new(db::standin_db(binary)), workload))
        }
        "etcd" => {
            if let Some(mutation) = &options.mutation {
                return Err(RunError::BadOption(format!(
                    "mutation `{mutation}` is for our KV; with etcd use --reads serializable"
                )));
            }
            let binary = PathBuf::from(crate::etcd::DEFAULT_BINARY);
            if !binary.exists() {
                return Err(RunError::BadOption(format!(
                    "{} is missing; install the Debian packages etcd-server and etcd-client (make deps)",
                    binary.display()
                )));
            }
            let reads = options
                .reads
                .as_deref()
                .unwrap_or("")
                .parse::<crate::etcd::ReadMode>()
                .map_err(RunError::BadOption)?;
            let kind = match options.workload.as_str() {
                "kv" => ourkv::WorkloadKind::Kv,
                "register" => ourkv::WorkloadKind::Register,
                other => {
                    return Err(RunError::BadOption(format!(
                    "workload `{other}` is not available with --db etcd (available: kv, register)"
                )))
                }
            };
            // A token unique to this run keeps members of any other cluster out.
            let token = format!("rj-{}-{}", std::process::id(), options.seed);
            let workload = crate::etcd::EtcdWorkload {
                kind,
                reads,
                keys: 2,
            };
            Ok((
                Box::new(crate::etcd::EtcdDb::new(binary, &token)),
                Box::new(workload),
            ))
        }
        other => Err(RunError::BadOption(format!(
            "db `{other}` is not available (available: ours, standin, etcd)"
        ))),
    }
}

/// The cluster `options` asks for (also the shardkv driver's); `tag_hint` names it.
pub(crate) fn provision(
    options: &TestOptions,
    tag_hint: Option<String>,
) -> Result<Box<dyn Cluster>, RunError> {
    Ok(match &options.cluster {
        ClusterChoice::Local => Box::new(LocalCluster::provision(&LocalOptions {
            nodes: options.nodes,
            tag: tag_hint,
            subnet: None,
        })?),
        ClusterChoice::Ssh {
            hosts,
            user,
            key,
            known_hosts,
        } => {
            let mut ssh =
                SshClusterOptions::from_hosts_file(hosts, user, key.clone(), known_hosts.clone())?;
            ssh.tag = tag_hint;
            Box::new(SshCluster::connect(ssh)?)
        }
    })
}

/// Appends nemesis events to `nemesis.jsonl` as they happen, and keeps them.
pub(crate) struct NemesisLog {
    file: Option<File>,
    clock: TestClock,
    events: Vec<NemesisEvent>,
}

impl NemesisLog {
    /// Records an action that began at `time` and has just ended.
    fn record(&mut self, time: u64, phase: &str, fault: Option<&Fault>, error: Option<String>) {
        let event = NemesisEvent {
            time,
            end_time: self.clock.now_ns(),
            phase: phase.to_string(),
            kind: fault.map(Fault::kind),
            nodes: fault.map(Fault::nodes).unwrap_or_default(),
            fault: fault.cloned(),
            error,
        };
        if let (Some(file), Ok(line)) = (self.file.as_mut(), serde_json::to_string(&event)) {
            let _ = file.write_all(format!("{line}\n").as_bytes());
        }
        self.events.push(event);
    }
}

/// Shared between the clients, the nemesis loop and the progress display.
struct Shared {
    stop: AtomicBool,
    ops: AtomicU64,
    ok: AtomicU64,
    current: Mutex<String>,
    /// Keys a write was invoked on: the final-read phase reads each of them.
    written: Mutex<BTreeSet<String>>,
    /// One past the highest process id handed out so far: fresh processes start here.
    next_process: AtomicU64,
    /// Keys the final-read phase has read (ok).
    final_reads_ok: AtomicU64,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            stop: AtomicBool::new(false),
            ops: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            current: Mutex::new("none".into()),
            written: Mutex::new(BTreeSet::new()),
            next_process: AtomicU64::new(0),
            final_reads_ok: AtomicU64::new(0),
        }
    }

    /// A process id never used before in this run.
    fn fresh_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::SeqCst)
    }
}

/// Attempts per key in the final-read phase before its key is given up (left unread, which
/// makes the lost-writes check unknown).
pub const FINAL_READ_ATTEMPTS_MAX: u32 = 20;
/// Pause after a final read that was not ok, before the next attempt.
const FINAL_READ_RETRY_PAUSE: Duration = Duration::from_millis(250);
/// The whole final-read phase ends by then, read or not (a cluster that never recovers must
/// not hold the run).
pub const FINAL_READ_PHASE_MAX: Duration = Duration::from_secs(60);

/// Runs one test with the Db and workload named in `options`.
pub fn run_test(options: &TestOptions, interrupted: &AtomicBool) -> Result<Outcome, RunError> {
    let (db, workload) = choose(options)?;
    run_test_with(options, &*db, &*workload, interrupted)
}

/// Runs one test of `workload` against `db`. Returns the outcome once the results folder is
/// complete (history, EDN, nemesis events, node logs, results.json, report.html).
pub fn run_test_with(
    options: &TestOptions,
    db: &dyn Db,
    workload: &dyn Workload,
    interrupted: &AtomicBool,
) -> Result<Outcome, RunError> {
    if options.nodes == 0 || options.concurrency == 0 || options.time.is_zero() {
        return Err(RunError::BadOption(
            "nodes, concurrency and time must be positive".into(),
        ));
    }
    eprintln!("SEED={}", options.seed);
    let model = workload.model().to_string();
    let run = RunDir::create(&options.results_root, &options.name, chrono::Local::now())?;
    eprintln!("control: results in {}", run.path.display());
    let provisioning = Instant::now();
    let mut cluster = provision(options, None)?;
    eprintln!(
        "control: cluster {} with {} nodes ready in {:.1} s",
        cluster.tag(),
        cluster.nodes().len(),
        provisioning.elapsed().as_secs_f64()
    );
    // Time 0 of the history and the nemesis events: the cluster exists.
    let clock = TestClock::new();
    let history = HistoryWriter::create(&run.history_jsonl(), clock)?;
    let mut log = NemesisLog {
        file: OpenOptions::new()
            .create(true)
            .append(true)
            .open(run.nemesis_jsonl())
            .ok(),
        clock,
        events: Vec::new(),
    };
    let mut errors = match drive(
        &*cluster,
        db,
        workload,
        options,
        &history,
        &mut log,
        interrupted,
    ) {
        Ok(problems) => problems,
        Err(e) => vec![e.to_string()],
    };
    for node in cluster.nodes() {
        if let Err(e) = db.stop(&*cluster, node) {
            errors.push(format!("stopping {}: {e}", node.name));
        }
        if let Err(e) = db::collect_logs(db, &*cluster, node, &run.node_dir(&node.name)) {
            errors.push(format!("collecting logs of {}: {e}", node.name));
        }
    }
    let tag = cluster.tag().to_string();
    if let Err(e) = cluster.teardown() {
        errors.push(format!("teardown: {e}"));
    }
    drop(cluster);
    let analysis = analyze::analyze(&run, &model, options.check_timeout)?;
    let info = json!({
        "test": options.name,
        "db": options.db,
        "workload": options.workload,
        "model": model,
        "nemesis": options.nemesis.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "nodes": options.nodes,
        "time_s": options.time.as_secs_f64(),
        "seed": options.seed,
        "concurrency": options.concurrency,
        "interrupted": interrupted.load(Ordering::SeqCst),
        "errors": errors,
    });
    run.write_results(&analyze::results_json(&info, &analysis, &log.events))?;
    // A run that could not do its job (setup failed, nemesis could not heal) is no evidence.
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

/// Install, start, run clients and nemesis, final heal, recovery and final reads. Always heals
/// before returning once the nemesis is set up. Returns the problems that did not stop the
/// run but make it no evidence: a final-read phase that could not read every written key.
fn drive(
    cluster: &dyn Cluster,
    db: &dyn Db,
    workload: &dyn Workload,
    options: &TestOptions,
    history: &HistoryWriter,
    log: &mut NemesisLog,
    interrupted: &AtomicBool,
) -> Result<Vec<String>, RunError> {
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
    })?;
    let mut nemesis = ClusterNemesis::new(cluster, db);
    nemesis
        .setup()
        .map_err(|e| RunError::Nemesis(e.to_string()))?;
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let mut schedule = Schedule::new(options.seed, &options.nemesis, &names);
    schedule.faulty = options.faulty;
    schedule.healed = options.healed;
    let shared = Shared::new();
    // Worker w runs processes w, w + concurrency, w + 2 * concurrency, ...; fresh processes
    // (final readers) are counted from past the highest of those handed out.
    shared
        .next_process
        .store(options.concurrency as u64, Ordering::SeqCst);
    let factory: Arc<dyn ClientFactory> = workload.clients(&nodes);
    let progress = if options.progress {
        ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    progress.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = Instant::now();
    let mut result = Ok(());
    let tick = |progress: &ProgressBar, shared: &Shared| {
        let current = shared.current.lock().map(|c| c.clone()).unwrap_or_default();
        progress.set_message(format!(
            "ops {} (ok {}) | nemesis: {current}",
            shared.ops.load(Ordering::Relaxed),
            shared.ok.load(Ordering::Relaxed)
        ));
        progress.tick();
    };
    thread::scope(|scope| {
        let workers: Vec<_> = (0..options.concurrency)
            .map(|worker| {
                let context = ClientContext {
                    options,
                    history,
                    shared: &shared,
                    factory: &*factory,
                    workload,
                    node: &nodes[worker % nodes.len()],
                    netns: cluster.client_netns(),
                };
                scope.spawn(move || client_loop(worker, context))
            })
            .collect();
        // Sleeps until `deadline`, redrawing; false when interrupted.
        let wait = |deadline: Instant| -> bool {
            while Instant::now() < deadline {
                if interrupted.load(Ordering::SeqCst) {
                    return false;
                }
                tick(&progress, &shared);
                thread::sleep(
                    Duration::from_millis(100)
                        .min(deadline.saturating_duration_since(Instant::now())),
                );
            }
            !interrupted.load(Ordering::SeqCst)
        };
        let end = started + options.time;
        let leader = || db.leader(cluster);
        let status = |text: &str| set_current(&shared, text);
        result = run_schedule(&mut nemesis, &mut schedule, end, leader, wait, log, status);
        set_current(&shared, "none (recovery)");
        wait(Instant::now() + options.recovery);
        shared.stop.store(true, Ordering::SeqCst);
        for worker in workers {
            let _ = worker.join();
        }
    });
    // An interrupted run still reads finally: its verdict needs the reads, and they are
    // bounded by FINAL_READ_PHASE_MAX.
    let keys: Vec<String> = shared
        .written
        .lock()
        .map(|k| k.iter().cloned().collect())
        .unwrap_or_default();
    let reading = Instant::now();
    set_current(
        &shared,
        &format!("none (final reads of {} keys)", keys.len()),
    );
    let model = workload.model().to_string();
    let context = FinalReadContext {
        options,
        history,
        shared: &shared,
        factory: &*factory,
        nodes: &nodes,
        netns: cluster.client_netns(),
        model: &model,
        deadline: reading + FINAL_READ_PHASE_MAX,
    };
    thread::scope(|scope| {
        let readers: Vec<_> = final_read_assignments(&keys, options.concurrency)
            .into_iter()
            .enumerate()
            .map(|(reader, keys)| {
                let context = &context;
                scope.spawn(move || final_reader(reader, &keys, context))
            })
            .collect();
        while readers.iter().any(|r| !r.is_finished()) {
            tick(&progress, &shared);
            thread::sleep(Duration::from_millis(50));
        }
    });
    let read = shared.final_reads_ok.load(Ordering::Relaxed);
    eprintln!(
        "control: final reads: {read} of {} written keys read in {:.1} s",
        keys.len(),
        reading.elapsed().as_secs_f64()
    );
    let mut problems = Vec::new();
    if read < keys.len() as u64 {
        problems.push(format!(
            "final reads: only {read} of {} written keys could be read within {} attempts each \
             and {} s in all",
            keys.len(),
            FINAL_READ_ATTEMPTS_MAX,
            FINAL_READ_PHASE_MAX.as_secs()
        ));
    }
    progress.finish_and_clear();
    let _ = nemesis.remove();
    eprintln!(
        "control: {} operations ({} ok) in {:.1} s",
        shared.ops.load(Ordering::Relaxed),
        shared.ok.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    result.map(|()| problems)
}

/// The nemesis loop: until `end`, `healed` calm then one fault for `faulty`; then `heal_all`.
/// Every fault started is stopped, even when `wait` reports an interruption, and the last
/// event is always the final heal. `wait(deadline)` sleeps until the deadline and returns
/// false when the run was interrupted.
pub(crate) fn run_schedule(
    nemesis: &mut dyn Nemesis,
    schedule: &mut Schedule,
    end: Instant,
    leader: impl Fn() -> Option<String>,
    mut wait: impl FnMut(Instant) -> bool,
    log: &mut NemesisLog,
    status: impl Fn(&str),
) -> Result<(), RunError> {
    let clock = log.clock;
    while Instant::now() < end {
        if !wait((Instant::now() + schedule.healed).min(end)) || Instant::now() >= end {
            break;
        }
        let Some(fault) = schedule.next_fault(leader().as_deref()) else {
            if !wait(end) {
                break;
            }
            continue;
        };
        status(&fault.describe());
        let time = clock.now_ns();
        let error = nemesis.start(&fault).err().map(|e| e.to_string());
        log.record(time, "start", Some(&fault), error);
        let keep_going = wait((Instant::now() + schedule.faulty).min(end));
        let time = clock.now_ns();
        let error = nemesis.stop(&fault).err().map(|e| e.to_string());
        log.record(time, "stop", Some(&fault), error);
        status("none");
        if !keep_going {
            break;
        }
    }
    status("healing");
    let time = clock.now_ns();
    let heal = nemesis.heal_all().err().map(|e| e.to_string());
    log.record(time, "heal-all", None, heal.clone());
    match heal {
        Some(e) => Err(RunError::Nemesis(format!("final heal failed: {e}"))),
        None => Ok(()),
    }
}

fn set_current(shared: &Shared, text: &str) {
    if let Ok(mut current) = shared.current.lock() {
        *current = text.to_string();
    }
}

/// What a client thread works with.
struct ClientContext<'a> {
    options: &'a TestOptions,
    history: &'a HistoryWriter,
    shared: &'a Shared,
    factory: &'a dyn ClientFactory,
    workload: &'a dyn Workload,
    /// The node this thread's clients talk to.
    node: &'a Node,
    /// Namespace to enter before opening sockets.
    netns: Option<String>,
}

/// One client thread: a logical process at a time; after an `info` the process is retired and
/// the thread continues as process `p + concurrency` with a fresh client (Jepsen's rule).
fn client_loop(worker: usize, context: ClientContext<'_>) {
    let ClientContext {
        options,
        history,
        shared,
        factory,
        workload,
        node,
        netns,
    } = context;
    if let Some(ns) = netns {
        if let Err(e) = crate::netns::enter(&ns) {
            eprintln!("control: client {worker}: {e}");
            return;
        }
    }
    let concurrency = options.concurrency as u64;
    let mut process = worker as u64;
    let mut generator =
        workload.generator(options.seed.wrapping_add(0x9e37_79b9 * (worker as u64 + 1)));
    let mut client = None;
    // Each client paces itself to its share of the rate; the first op is staggered.
    let interval = (options.rate > 0)
        .then(|| Duration::from_secs_f64(concurrency as f64 / f64::from(options.rate)));
    let mut next = Instant::now()
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(worker as f64 / concurrency as f64)
        });
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
        shared.next_process.fetch_max(process + 1, Ordering::SeqCst);
        if let Some(key) = op.key.as_ref().filter(|_| !lost_writes::is_read(&op.f)) {
            if let Ok(mut written) = shared.written.lock() {
                if !written.contains(key) {
                    written.insert(key.clone());
                }
            }
        }
        let performed = Performed {
            history,
            process,
            node,
            phase: None,
        };
        let Some(kind) = performed.perform(&mut **active, &op, options.op_timeout) else {
            return;
        };
        shared.ops.fetch_add(1, Ordering::Relaxed);
        if kind == EventType::Ok {
            shared.ok.fetch_add(1, Ordering::Relaxed);
        }
        if kind == EventType::Info {
            process += concurrency;
            client = None;
        }
    }
}

/// Who performs an operation, where, and in which phase of the test.
pub(crate) struct Performed<'a> {
    pub history: &'a HistoryWriter,
    pub process: u64,
    /// The node the process's client talks to (recorded on the completion).
    pub node: &'a Node,
    /// The history's `phase` of both events (`None`: the generator's operations).
    pub phase: Option<&'a str>,
}

impl Performed<'_> {
    /// Records `op`'s invoke, performs it with `client` within `timeout`, and records its
    /// completion: `ok` with the value the database returned, or `fail`/`info` with the
    /// operation's own value and the error. `None` when the history cannot be written (full
    /// or failing disk): the caller stops.
    pub fn perform(
        &self,
        client: &mut dyn crate::client::Client,
        op: &crate::client::Op,
        timeout: Duration,
    ) -> Option<EventType> {
        let event = |kind, value| {
            let mut event = Event::new(self.process, kind, &op.f, op.key.as_deref(), value);
            event.phase = self.phase.map(String::from);
            event
        };
        self.history
            .record(event(EventType::Invoke, op.value.clone()))
            .ok()?;
        let (kind, value, error) = match client.invoke(op, timeout) {
            Completion::Ok(value) => (EventType::Ok, value, None),
            Completion::Fail(e) => (EventType::Fail, op.value.clone(), Some(e)),
            Completion::Info(e) => (EventType::Info, op.value.clone(), Some(e)),
        };
        let mut done = event(kind, value);
        done.error = error;
        done.node = Some(self.node.name.clone());
        self.history.record(done).ok()?;
        Some(kind)
    }
}

/// What the final readers work with.
struct FinalReadContext<'a> {
    options: &'a TestOptions,
    history: &'a HistoryWriter,
    shared: &'a Shared,
    factory: &'a dyn ClientFactory,
    nodes: &'a [Node],
    netns: Option<String>,
    /// The checker model (which read to make).
    model: &'a str,
    deadline: Instant,
}

/// Deals `keys` out to at most `readers` final readers, round robin (so each reader gets
/// keys from every part of the run).
pub(crate) fn final_read_assignments(keys: &[String], readers: usize) -> Vec<Vec<String>> {
    let readers = readers.clamp(1, keys.len().max(1));
    let mut assignments = vec![Vec::new(); readers.min(keys.len())];
    for (i, key) in keys.iter().enumerate() {
        assignments[i % readers].push(key.clone());
    }
    assignments
}

/// One final reader: reads each of its keys until a read is ok, at most
/// [`FINAL_READ_ATTEMPTS_MAX`] times and not past the phase deadline. A read that is not ok
/// retires its process (a fresh one continues, on the next node): an `info` read must not be
/// followed by another operation of the same process, and a node that failed a read is
/// likely to fail the next.
fn final_reader(reader: usize, keys: &[String], context: &FinalReadContext<'_>) {
    if let Some(ns) = &context.netns {
        if let Err(e) = crate::netns::enter(ns) {
            eprintln!("control: final reader {reader}: {e}");
            return;
        }
    }
    let nodes = context.nodes;
    let mut node_index = reader;
    let mut process = context.shared.fresh_process();
    let mut client: Option<Box<dyn crate::client::Client>> = None;
    for key in keys {
        let Some(op) = crate::workload::final_read_op(context.model, key) else {
            return;
        };
        for _ in 0..FINAL_READ_ATTEMPTS_MAX {
            if Instant::now() >= context.deadline {
                return;
            }
            let node = &nodes[node_index % nodes.len()];
            let active = match &mut client {
                Some(c) => c,
                None => match context.factory.open(node, process) {
                    Ok(c) => client.insert(c),
                    Err(e) => {
                        eprintln!("control: final reader {reader}, process {process}: {e}");
                        node_index += 1;
                        thread::sleep(FINAL_READ_RETRY_PAUSE);
                        continue;
                    }
                },
            };
            let performed = Performed {
                history: context.history,
                process,
                node,
                phase: Some(FINAL_READ_PHASE),
            };
            let Some(kind) = performed.perform(&mut **active, &op, context.options.op_timeout)
            else {
                return;
            };
            if kind == EventType::Ok {
                context
                    .shared
                    .final_reads_ok
                    .fetch_add(1, Ordering::Relaxed);
                break;
            }
            process = context.shared.fresh_process();
            client = None;
            node_index += 1;
            thread::sleep(FINAL_READ_RETRY_PAUSE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nemesis::RecordingNemesis;

    fn log() -> NemesisLog {
        NemesisLog {
            file: None,
            clock: TestClock::new(),
            events: Vec::new(),
        }
    }

    fn schedule() -> Schedule {
        let nodes: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
        let mut schedule = Schedule::new(11, &NemesisKind::ALL.into_iter().collect(), &nodes);
        schedule.faulty = Duration::from_millis(15);
        schedule.healed = Duration::from_millis(5);
        schedule
    }

    fn sleep_until(deadline: Instant) -> bool {
        thread::sleep(deadline.saturating_duration_since(Instant::now()));
        true
    }

    #[test]
    fn every_fault_is_stopped_and_the_run_ends_healed() {
        let mut nemesis = RecordingNemesis::default();
        let mut log = log();
        let end = Instant::now() + Duration::from_millis(200);
        run_schedule(
            &mut nemesis,
            &mut schedule(),
            end,
            || None,
            sleep_until,
            &mut log,
            |_| {},
        )
        .unwrap();
        assert!(nemesis.active.is_empty());
        let phases: Vec<&str> = log.events.iter().map(|e| e.phase.as_str()).collect();
        assert!(phases.len() >= 3, "{phases:?}");
        assert_eq!(phases.last(), Some(&"heal-all"));
        for pair in log.events[..log.events.len() - 1].chunks(2) {
            assert_eq!(pair[0].phase, "start");
            assert_eq!(pair[1].phase, "stop");
            assert_eq!(pair[0].fault, pair[1].fault);
            assert!(pair[0].time <= pair[0].end_time && pair[0].end_time <= pair[1].time);
        }
    }

    #[test]
    fn an_interruption_during_a_fault_still_stops_it_and_heals() {
        let mut nemesis = RecordingNemesis::default();
        let mut log = log();
        let end = Instant::now() + Duration::from_secs(60);
        let mut calls = 0;
        // First wait (calm) passes, the second (during the fault) reports an interruption.
        let wait = |deadline: Instant| {
            calls += 1;
            calls == 1 && sleep_until(deadline)
        };
        let started = Instant::now();
        run_schedule(
            &mut nemesis,
            &mut schedule(),
            end,
            || None,
            wait,
            &mut log,
            |_| {},
        )
        .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        let phases: Vec<&str> = log.events.iter().map(|e| e.phase.as_str()).collect();
        assert_eq!(phases, ["start", "stop", "heal-all"]);
        assert!(nemesis.active.is_empty());
    }

    #[test]
    fn final_reads_cover_every_key_once_spread_over_readers() {
        let keys: Vec<String> = (0..7).map(|i| format!("k{i}")).collect();
        let assignments = final_read_assignments(&keys, 3);
        assert_eq!(assignments.len(), 3);
        assert_eq!(assignments[0], ["k0", "k3", "k6"]);
        let mut all: Vec<String> = assignments.concat();
        all.sort();
        assert_eq!(all, keys);
        // Never more readers than keys, and none for no keys.
        assert_eq!(final_read_assignments(&keys[..2], 10).len(), 2);
        assert!(final_read_assignments(&[], 4).is_empty());
    }

    #[test]
    fn isolate_leader_asks_the_database() {
        let mut nemesis = RecordingNemesis::default();
        let mut log = log();
        let nodes: Vec<String> = (1..=5).map(|i| format!("n{i}")).collect();
        let mut schedule =
            Schedule::new(2, &[NemesisKind::Partition].into_iter().collect(), &nodes);
        schedule.faulty = Duration::from_millis(1);
        schedule.healed = Duration::from_millis(1);
        let end = Instant::now() + Duration::from_millis(150);
        run_schedule(
            &mut nemesis,
            &mut schedule,
            end,
            || Some("n5".into()),
            sleep_until,
            &mut log,
            |_| {},
        )
        .unwrap();
        let isolated: Vec<&Fault> = log
            .events
            .iter()
            .filter_map(|e| e.fault.as_ref())
            .filter(|f| {
                matches!(
                    f,
                    Fault::Partition {
                        shape: crate::nemesis::PartitionKind::IsolateLeader,
                        ..
                    }
                )
            })
            .collect();
        assert!(
            !isolated.is_empty(),
            "SEED=2 drew no isolate-leader in {} events",
            log.events.len()
        );
        for fault in isolated {
            if let Fault::Partition { grudge, .. } = fault {
                assert_eq!(grudge["n5"].len(), 4);
            }
        }
    }
}
