//! `mapreduce`: run a job with N worker processes, or run one role.
//!
//! Exit status: 0 success, 1 the job or the role failed, 2 bad usage (clap).
//! A worker killed by the crash application exits with status 1 on purpose.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use mapreduce::app::{self, AppContext, AppOptions};
use mapreduce::local::LocalCoordinator;
use mapreduce::net::{self, CoordinatorAddress, QuicLink, SingleHandler};
use mapreduce::replicated::{run_replica, ReplicaConfig};
use mapreduce::worker::{run_worker_with_stats, WorkerStats, WORKER_STATS_PREFIX};
use mapreduce::{input, JobSpec, WorkerExit, WorkerOptions};
use transport::{Endpoint, EndpointConfig};

#[derive(Parser, Debug)]
#[command(
    name = "mapreduce",
    about = "MapReduce (6.824 Lab 1) over QUIC with mutual TLS"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run a whole job: a coordinator and N worker processes, with progress.
    Run(RunArgs),
    /// Serve one unreplicated coordinator until the job is done.
    Coordinator(CoordinatorArgs),
    /// Run one replica of the Raft-replicated coordinator.
    Replica(ReplicaArgs),
    /// Run one worker process until the coordinator says the job is done.
    Worker(WorkerArgs),
    /// The reference run: every map then every reduce, in one process.
    Sequential(SequentialArgs),
    /// Write seeded input text files (pg-<i>.txt).
    GenInput(GenArgs),
    /// Write a CA, coordinator certificates and the workers' certificate.
    Certs(CertArgs),
}

#[derive(Args, Debug, Clone)]
struct JobArgs {
    /// The application: wc, indexer, mtiming, rtiming, crash, nocrash.
    #[arg(long, default_value = "wc")]
    app: String,
    /// Job directory: inputs are read from it, mr-* files are written to it.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    #[arg(long, default_value_t = 10)]
    n_reduce: u32,
    /// A task not reported done within this time is given to another worker.
    #[arg(long, default_value_t = 10_000)]
    task_timeout_ms: u64,
    /// Input files, relative to --dir.
    files: Vec<String>,
}

#[derive(Args, Debug, Clone)]
struct AppArgs {
    /// Seed of the crash application (mixed with each worker's pid).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Longest stall of the crash application.
    #[arg(long, default_value_t = 10_000)]
    crash_stall_max_ms: u64,
    /// Sleep of the timing applications' probes.
    #[arg(long, default_value_t = 1_000)]
    timing_sleep_ms: u64,
}

impl AppArgs {
    fn options(&self) -> AppOptions {
        AppOptions {
            seed: self.seed,
            crash_stall_max: Duration::from_millis(self.crash_stall_max_ms),
            timing_sleep: Duration::from_millis(self.timing_sleep_ms),
        }
    }
    fn to_flags(&self) -> Vec<String> {
        vec![
            format!("--seed={}", self.seed),
            format!("--crash-stall-max-ms={}", self.crash_stall_max_ms),
            format!("--timing-sleep-ms={}", self.timing_sleep_ms),
        ]
    }
}

#[derive(Args, Debug)]
struct RunArgs {
    #[command(flatten)]
    job: JobArgs,
    #[command(flatten)]
    app: AppArgs,
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Coordinator replicas (Raft processes); 0 runs one unreplicated
    /// coordinator inside this process.
    #[arg(long, default_value_t = 0)]
    replicas: u64,
    /// Coordinator UDP address.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// No progress bar (for scripts and logs).
    #[arg(long)]
    quiet: bool,
}

#[derive(Args, Debug)]
struct CoordinatorArgs {
    #[command(flatten)]
    job: JobArgs,
    #[arg(long, default_value = "127.0.0.1:7100")]
    listen: SocketAddr,
    /// Certificate directory (from `mapreduce certs`).
    #[arg(long)]
    certs: PathBuf,
    /// This coordinator's certificate name.
    #[arg(long, default_value = "c1")]
    name: String,
    /// Keep answering `Exit` this long after the job is done, so polling
    /// workers learn it instead of seeing a vanished coordinator.
    #[arg(long, default_value_t = 2_000)]
    linger_ms: u64,
}

#[derive(Args, Debug)]
struct WorkerArgs {
    #[arg(long, default_value = "wc")]
    app: String,
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    #[arg(long)]
    certs: PathBuf,
    /// Coordinator replicas as name=addr, comma separated.
    #[arg(long, value_delimiter = ',', required = true)]
    coordinator: Vec<String>,
    #[arg(long, default_value_t = 100)]
    poll_ms: u64,
    /// Sleep before each task (stretches a job for tests and demos).
    #[arg(long, default_value_t = 0)]
    task_delay_ms: u64,
    #[command(flatten)]
    app_args: AppArgs,
}

#[derive(Args, Debug)]
struct ReplicaArgs {
    #[command(flatten)]
    job: JobArgs,
    /// This replica's id: its position (1-based) in --replicas.
    #[arg(long)]
    id: u64,
    /// Every replica as name=addr, comma separated, in id order.
    #[arg(long, value_delimiter = ',', required = true)]
    replicas: Vec<String>,
    /// Raft log and snapshots.
    #[arg(long)]
    data_dir: PathBuf,
    #[arg(long)]
    certs: PathBuf,
    #[arg(long, default_value_t = 10)]
    tick_ms: u64,
    #[arg(long, default_value_t = 1_000)]
    snapshot_every_entries: u64,
    #[arg(long, default_value_t = 2_000)]
    linger_ms: u64,
}

#[derive(Args, Debug)]
struct SequentialArgs {
    #[arg(long, default_value = "wc")]
    app: String,
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Output file (default: <dir>/mr-correct.txt).
    #[arg(long)]
    output: Option<PathBuf>,
    files: Vec<String>,
}

#[derive(Args, Debug)]
struct GenArgs {
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    #[arg(long, default_value_t = 8)]
    files: usize,
    #[arg(long, default_value_t = 1_000_000)]
    bytes_per_file: usize,
}

#[derive(Args, Debug)]
struct CertArgs {
    #[arg(long)]
    dir: PathBuf,
    /// Coordinator certificate names.
    #[arg(long, value_delimiter = ',', default_value = "c1")]
    coordinators: Vec<String>,
}

fn main() {
    tracing_subscriber_init();
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Run(args) => run(args),
        Cmd::Coordinator(args) => coordinator(args),
        Cmd::Replica(args) => replica(args),
        Cmd::Worker(args) => worker(args),
        Cmd::Sequential(args) => sequential(args),
        Cmd::GenInput(args) => gen_input(args),
        Cmd::Certs(args) => net::write_certs(&args.dir, &args.coordinators).map_err(Into::into),
    };
    if let Err(error) = result {
        eprintln!("mapreduce: {error:#}");
        std::process::exit(1);
    }
}

/// Logs only when asked (`RUST_LOG`), on stderr beside the progress bar.
fn tracing_subscriber_init() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
}

fn spec(job: &JobArgs) -> Result<JobSpec> {
    if app::by_name(&job.app, &AppOptions::default()).is_none() {
        bail!(
            "unknown app {:?}; known: {}",
            job.app,
            app::APP_NAMES.join(", ")
        );
    }
    let spec = JobSpec {
        files: job.files.clone(),
        n_reduce: job.n_reduce,
        task_timeout_ms: job.task_timeout_ms,
    };
    spec.validate()?;
    for file in &spec.files {
        let path = job.dir.join(file);
        if !path.is_file() {
            bail!("input {} does not exist", path.display());
        }
    }
    Ok(spec)
}

/// Binds the unreplicated coordinator's QUIC endpoint.
fn serve_single(
    certs: &Path,
    name: &str,
    listen: SocketAddr,
    coordinator: &LocalCoordinator,
) -> Result<Endpoint<()>> {
    let config = EndpointConfig::from_files(
        &certs.join(format!("{name}.pem")),
        &certs.join(format!("{name}.key")),
        &certs.join("ca.pem"),
        listen,
    )?;
    let handler = SingleHandler {
        coordinator: coordinator.clone(),
    };
    let (endpoint, _incoming) = Endpoint::<()>::bind_with_handler(config, handler)?;
    Ok(endpoint)
}

fn coordinator(args: CoordinatorArgs) -> Result<()> {
    let spec = spec(&args.job)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let coordinator = LocalCoordinator::start(spec)?;
    runtime.block_on(async {
        let endpoint = serve_single(&args.certs, &args.name, args.listen, &coordinator)?;
        eprintln!(
            "coordinator {} listening on {}",
            args.name,
            endpoint.local_addr()
        );
        while !coordinator.progress().done() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(args.linger_ms)).await;
        endpoint.shutdown().await;
        Ok::<(), anyhow::Error>(())
    })
}

fn parse_addresses(texts: &[String]) -> Result<Vec<CoordinatorAddress>> {
    texts
        .iter()
        .map(|text| {
            net::parse_address(text)
                .ok_or_else(|| anyhow!("bad coordinator address {text:?}: want name=ip:port"))
        })
        .collect()
}

fn replica(args: ReplicaArgs) -> Result<()> {
    let job = spec(&args.job)?;
    let addresses = parse_addresses(&args.replicas)?;
    let replicas: Vec<(u64, String, SocketAddr)> = addresses
        .iter()
        .enumerate()
        .map(|(i, a)| (i as u64 + 1, a.name.clone(), a.addr))
        .collect();
    let me = replicas
        .iter()
        .find(|r| r.0 == args.id)
        .ok_or_else(|| anyhow!("--id {} is not in --replicas", args.id))?
        .clone();
    let config = ReplicaConfig {
        id: me.0,
        name: me.1,
        listen: me.2,
        replicas,
        data_dir: args.data_dir,
        certs: args.certs,
        job,
        tick: Duration::from_millis(args.tick_ms.max(1)),
        snapshot_every_entries: args.snapshot_every_entries.max(1),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run_replica(
        config,
        Duration::from_millis(args.linger_ms),
        std::future::pending(),
    ))?;
    Ok(())
}

fn worker(args: WorkerArgs) -> Result<()> {
    let app = app::by_name(&args.app, &args.app_args.options())
        .ok_or_else(|| anyhow!("unknown app {:?}", args.app))?;
    let coordinators = args
        .coordinator
        .iter()
        .map(|text| {
            net::parse_address(text)
                .ok_or_else(|| anyhow!("bad --coordinator {text:?}: want name=ip:port"))
        })
        .collect::<Result<Vec<CoordinatorAddress>>>()?;
    let mut link = QuicLink::new(&args.certs, coordinators, Duration::from_secs(2))?;
    let context = AppContext {
        work_dir: args.dir.clone(),
        worker_id: u64::from(std::process::id()),
        ids_are_pids: true,
    };
    let options = WorkerOptions {
        poll_interval: Duration::from_millis(args.poll_ms),
        task_delay: Duration::from_millis(args.task_delay_ms),
        ..WorkerOptions::default()
    };
    let started = Instant::now();
    let mut stats = WorkerStats::default();
    let result = run_worker_with_stats(app.as_ref(), &context, &mut link, &options, &mut stats);
    let exit = match &result {
        Ok(WorkerExit::JobDone) => "job-done",
        Ok(WorkerExit::Crashed) => "crashed",
        Err(_) => "error",
    };
    print_worker_stats(exit, started, &stats);
    match result? {
        WorkerExit::JobDone => Ok(()),
        // The crash application's os.Exit(1).
        WorkerExit::Crashed => std::process::exit(1),
    }
}

/// One line on stdout when a worker ends: `worker-stats {json}`. `run` and
/// the cluster harness read it to tell CPU-bound work from waiting, and the
/// harness's early-exit check uses `exit` and `unix_ms`.
fn print_worker_stats(exit: &str, started: Instant, stats: &WorkerStats) {
    use nix::sys::resource::{getrusage, UsageWho};
    let (user_ms, sys_ms) = getrusage(UsageWho::RUSAGE_SELF)
        .map(|usage| {
            let ms = |t: nix::sys::time::TimeVal| {
                u64::try_from(t.tv_sec()).unwrap_or(0) * 1000
                    + u64::try_from(t.tv_usec()).unwrap_or(0) / 1000
            };
            (ms(usage.user_time()), ms(usage.system_time()))
        })
        .unwrap_or((0, 0));
    let unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(0))
        .unwrap_or(0);
    let line = serde_json::json!({
        "pid": std::process::id(),
        "exit": exit,
        "unix_ms": unix_ms,
        "wall_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(0),
        "cpu_user_ms": user_ms,
        "cpu_sys_ms": sys_ms,
        "stats": stats,
    });
    println!("{WORKER_STATS_PREFIX}{line}");
}

fn sequential(args: SequentialArgs) -> Result<()> {
    let app = app::by_name(&args.app, &AppOptions::default())
        .ok_or_else(|| anyhow!("unknown app {:?}", args.app))?;
    let output = args
        .output
        .unwrap_or_else(|| args.dir.join("mr-correct.txt"));
    let started = Instant::now();
    let context = app::local_context(&args.dir);
    let lines =
        mapreduce::sequential::run_sequential(app.as_ref(), &context, &args.files, &output)?;
    eprintln!(
        "sequential: {lines} lines in {:.3} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn gen_input(args: GenArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir)?;
    let names = input::generate(&args.dir, args.seed, args.files, args.bytes_per_file)?;
    println!("{}", names.join(" "));
    Ok(())
}

/// Where the job's coordinator lives while `run` runs it.
enum Coordinators {
    /// In this process, unreplicated.
    Single {
        coordinator: LocalCoordinator,
        endpoint: Endpoint<()>,
        runtime: tokio::runtime::Runtime,
    },
    /// Replica processes (Raft).
    Replicated { children: Vec<Child> },
}

fn free_udp_port() -> Result<u16> {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0")?;
    Ok(socket.local_addr()?.port())
}

fn start_coordinators(
    args: &RunArgs,
    spec: JobSpec,
    certs: &Path,
) -> Result<(Coordinators, Vec<CoordinatorAddress>)> {
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    if args.replicas == 0 {
        net::write_certs(certs, &["c1".to_string()])?;
        let runtime = tokio::runtime::Runtime::new()?;
        let coordinator = LocalCoordinator::start(spec)?;
        let endpoint =
            runtime.block_on(async { serve_single(certs, "c1", args.listen, &coordinator) })?;
        let address = CoordinatorAddress {
            name: "c1".into(),
            addr: endpoint.local_addr(),
        };
        return Ok((
            Coordinators::Single {
                coordinator,
                endpoint,
                runtime,
            },
            vec![address],
        ));
    }
    let names: Vec<String> = (1..=args.replicas).map(|i| format!("c{i}")).collect();
    net::write_certs(certs, &names)?;
    let mut addresses = Vec::new();
    for name in &names {
        addresses.push(CoordinatorAddress {
            name: name.clone(),
            addr: SocketAddr::from(([127, 0, 0, 1], free_udp_port()?)),
        });
    }
    let list = address_list(&addresses);
    let mut children = Vec::new();
    for id in 1..=args.replicas {
        let data_dir = args.job.dir.join(format!("mr-raft-{id}"));
        // A fresh job: the replicas must not recover an older job's log.
        let _ = std::fs::remove_dir_all(&data_dir);
        children.push(
            Process::new(&exe)
                .arg("replica")
                .arg(format!("--id={id}"))
                .arg(format!("--replicas={list}"))
                .arg("--data-dir")
                .arg(&data_dir)
                .arg("--certs")
                .arg(certs)
                .arg("--dir")
                .arg(&args.job.dir)
                .arg(format!("--app={}", args.job.app))
                .arg(format!("--n-reduce={}", args.job.n_reduce))
                .arg(format!("--task-timeout-ms={}", args.job.task_timeout_ms))
                .args(&args.job.files)
                .spawn()
                .context("cannot start a coordinator replica")?,
        );
    }
    Ok((Coordinators::Replicated { children }, addresses))
}

fn address_list(addresses: &[CoordinatorAddress]) -> String {
    addresses
        .iter()
        .map(|a| format!("{}={}", a.name, a.addr))
        .collect::<Vec<_>>()
        .join(",")
}

fn run(args: RunArgs) -> Result<()> {
    let spec = spec(&args.job)?;
    let total = (spec.files.len() as u64) + u64::from(spec.n_reduce);
    let certs = args.job.dir.join("mr-certs");
    let (coordinators, addresses) = start_coordinators(&args, spec, &certs)?;
    let started = Instant::now();
    let exe = std::env::current_exe().context("cannot find my own executable")?;
    let mut children: Vec<Child> = Vec::new();
    for _ in 0..args.workers {
        let child = Process::new(&exe)
            .arg("worker")
            .arg(format!("--app={}", args.job.app))
            .arg("--dir")
            .arg(&args.job.dir)
            .arg("--certs")
            .arg(&certs)
            .arg(format!("--coordinator={}", address_list(&addresses)))
            .args(args.app.to_flags())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("cannot start a worker")?;
        children.push(child);
    }
    let mut progress_link = match &coordinators {
        Coordinators::Single { .. } => None,
        Coordinators::Replicated { .. } => Some(QuicLink::new(
            &certs,
            addresses.clone(),
            Duration::from_millis(500),
        )?),
    };
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(total)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} tasks {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut statuses = vec![None; children.len()];
    loop {
        let progress = match (&coordinators, progress_link.as_mut()) {
            (Coordinators::Single { coordinator, .. }, _) => Some(coordinator.progress()),
            (_, Some(link)) => link.progress().ok(),
            _ => None,
        };
        if let Some(p) = progress {
            bar.set_position(u64::from(p.maps_done + p.reduces_done));
            bar.set_message(format!(
                "maps {}/{} reduces {}/{} reissued {}",
                p.maps_done, p.maps_total, p.reduces_done, p.reduces_total, p.reissued
            ));
        }
        for (child, status) in children.iter_mut().zip(statuses.iter_mut()) {
            if status.is_none() {
                *status = child.try_wait()?;
            }
        }
        if statuses.iter().all(Option::is_some) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    bar.finish();
    let failed = statuses.iter().flatten().filter(|s| !s.success()).count();
    match coordinators {
        Coordinators::Single {
            coordinator,
            endpoint,
            runtime,
        } => {
            // Every worker is gone: close without waiting out QUIC's
            // draining period (`shutdown` would wait up to 2 s for it).
            let guard = runtime.enter();
            drop(endpoint);
            drop(guard);
            if !coordinator.progress().done() {
                bail!("every worker exited before the job was done");
            }
        }
        Coordinators::Replicated { mut children } => {
            // Replicas exit by themselves after the job (and a linger);
            // one that has not within 10 s is stopped (by its own handle).
            let deadline = Instant::now() + Duration::from_secs(10);
            for child in &mut children {
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(50));
                }
                if matches!(child.try_wait(), Ok(None)) {
                    let _ = child.kill();
                    let _ = child.wait();
                }
            }
        }
    }
    for (i, child) in children.iter_mut().enumerate() {
        if let Some(line) = read_worker_stats(child) {
            eprintln!("worker {i}: {line}");
        }
    }
    if failed > 0 {
        bail!("{failed} workers failed");
    }
    eprintln!(
        "job done: {} workers, {} coordinator replicas, app {}, {:.3} s",
        args.workers,
        args.replicas,
        args.job.app,
        elapsed.as_secs_f64()
    );
    Ok(())
}

/// The exited worker's stats line, summarised: tasks, CPU against wall time
/// (a worker at ~100% CPU is compute-bound; one far below waits on the disk,
/// the coordinator or the scheduler).
fn read_worker_stats(child: &mut Child) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    child.stdout.take()?.read_to_string(&mut text).ok()?;
    let json = text
        .lines()
        .find_map(|l| l.strip_prefix(mapreduce::worker::WORKER_STATS_PREFIX))?;
    let value: serde_json::Value = serde_json::from_str(json).ok()?;
    let stats = &value["stats"];
    let number = |v: &serde_json::Value| v.as_u64().unwrap_or(0);
    let cpu_ms = number(&value["cpu_user_ms"]) + number(&value["cpu_sys_ms"]);
    let wall_ms = number(&value["wall_ms"]).max(1);
    Some(format!(
        "{} maps ({} ms), {} reduces ({} ms), idle {} ms, coordinator calls {} ms, read {} MB, cpu {} ms user + {} ms sys = {:.0}% of {} ms wall",
        number(&stats["maps"]),
        number(&stats["map_ms"]),
        number(&stats["reduces"]),
        number(&stats["reduce_ms"]),
        number(&stats["idle_ms"]),
        number(&stats["link_ms"]),
        number(&stats["read_bytes"]) / 1_000_000,
        number(&value["cpu_user_ms"]),
        number(&value["cpu_sys_ms"]),
        cpu_ms as f64 * 100.0 / wall_ms as f64,
        wall_ms,
    ))
}
