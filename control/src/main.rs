//! `control`: the Jepsen-style control process.
//!
//! Exit status: 0 every check passed; 1 a check failed (not linearizable, malformed history);
//! 2 bad usage or a setup failure (nothing was checked); 3 unknown (the checker ran out of
//! budget, or the run hit errors that make its evidence incomplete); 130 interrupted twice.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use control::analyze::{self, Validity};
use control::cluster::{local, stale};
use control::nemesis;
use control::results::RunDir;
use control::runner::{self, ClusterChoice, TestOptions};

mod mr_cli;

#[derive(Parser)]
#[command(
    name = "control",
    version,
    about = "Jepsen-style tests: provision a cluster, run workloads under faults, check the history"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a test: provision, install, run clients under the nemesis, heal, check, report.
    Test(Box<TestArgs>),
    /// Remove what earlier runs left behind (namespaces, processes, files), by tag.
    Teardown(TeardownArgs),
    /// Re-check a stored run's history and rewrite its results.json, history.edn, report.html.
    Analyze(AnalyzeArgs),
    /// Benchmark our KV and etcd side by side (YCSB A/B/C, closed and open loop) on a local
    /// 3-node cluster; writes results/bench-compare/<timestamp>/ and prints the table.
    BenchCompare(Box<BenchCompareArgs>),
    /// Benchmark the sharded store: throughput with 1, 2, 3 groups (read-heavy 95/5 and
    /// update-heavy 50/50) and each shard move's unavailability window; prints the table and
    /// writes results/bench-shardkv/<timestamp>/results.json.
    BenchShardkv(Box<BenchShardkvArgs>),
    /// MapReduce crash test on the local cluster: a replicated coordinator and workers under a
    /// nemesis that kills workers and the coordinator's leader; output checked against the
    /// sequential run.
    Mapreduce(Box<mr_cli::MapreduceArgs>),
}

#[derive(Args)]
struct BenchCompareArgs {
    /// Systems to measure, in order: ours, etcd.
    #[arg(long, default_value = "ours,etcd")]
    systems: String,
    /// YCSB workloads: a (50/50 read/update), b (95/5), c (reads only).
    #[arg(long, default_value = "a,b,c")]
    workloads: String,
    /// Closed-loop client counts.
    #[arg(long, default_value = "1,16,64")]
    clients: String,
    /// Seconds of warm-up before each measured window.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds measured per cell (system x workload x clients, or x rate).
    #[arg(long, default_value_t = 6.0)]
    duration: f64,
    /// Records preloaded before measuring.
    #[arg(long, default_value_t = 1000)]
    records: u64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 1024)]
    value_bytes: usize,
    /// Key distribution: zipfian (YCSB's default) or uniform.
    #[arg(long, default_value = "zipfian")]
    distribution: String,
    /// Where clients send requests, the same for both systems: leader (every request to the
    /// current leader) or all (spread over the members).
    #[arg(long, default_value = "leader")]
    connect: String,
    /// Open-loop offered rates: requests/s, or N% of the system's own closed-loop peak;
    /// `none` skips the open loop.
    #[arg(long, default_value = "1000,2000,4000,6000")]
    rates: String,
    /// Open-loop workload.
    #[arg(long, default_value = "a")]
    open_workload: String,
    /// Workers serving the open-loop schedule.
    #[arg(long, default_value_t = 64)]
    open_clients: usize,
    /// Milliseconds before an operation counts as an error.
    #[arg(long, default_value_t = 2000)]
    op_timeout_ms: u64,
    /// Load generator threads (1: one current-thread runtime).
    #[arg(long, default_value_t = 1)]
    client_threads: usize,
    /// Our nodes' snapshot threshold in bytes.
    #[arg(long, default_value_t = 8 << 20)]
    max_raft_state_bytes: usize,
    /// Seed of the operation streams; random when absent, always printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Results root.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Bench name (results/<name>/...).
    #[arg(long, default_value = "bench-compare")]
    name: String,
    /// Also print results.json's rows as JSON on stdout, after the table.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TestArgs {
    /// Number of nodes (local cluster).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Seconds of workload under faults, before the final heal and recovery.
    #[arg(long, default_value_t = 120)]
    time: u64,
    /// Workload: kv (get/put/append with unique values) or register (cas-register per key).
    #[arg(long, default_value = "kv")]
    workload: String,
    /// Faults: comma-separated partition,kill,pause, or all, or none.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Start the database with a deliberate bug to prove the check fails: stale-reads (every
    /// replica answers gets from its local state).
    #[arg(long)]
    mutation: Option<String>,
    /// Database: ours (our Raft KV node daemon) or standin (a non-replicated stand-in daemon
    /// used to test the harness itself).
    #[arg(long, default_value = "ours")]
    db: String,
    /// With --db etcd: linearizable (default) or serializable (member-local, may be stale;
    /// the check should fail).
    #[arg(long)]
    reads: Option<String>,
    /// Seed of every random choice (faults, operations); random when absent, always printed.
    #[arg(long)]
    seed: Option<u64>,
    /// Concurrent client processes.
    #[arg(long, default_value_t = 10)]
    concurrency: usize,
    /// Cluster: local (network namespaces, needs root) or ssh (real hosts, needs --hosts).
    #[arg(long, default_value = "local")]
    cluster: String,
    /// Hosts file for --cluster ssh: `address` or `name address` per line.
    #[arg(long)]
    hosts: Option<PathBuf>,
    /// SSH user for --cluster ssh (non-root users need passwordless sudo).
    #[arg(long, default_value = "root")]
    user: String,
    /// Private key for --cluster ssh.
    #[arg(long)]
    key: Option<PathBuf>,
    /// known_hosts pinning the hosts' keys for --cluster ssh.
    #[arg(long)]
    known_hosts: Option<PathBuf>,
    /// Seconds each fault lasts.
    #[arg(long, default_value_t = 10)]
    faulty: u64,
    /// Seconds of calm between faults.
    #[arg(long, default_value_t = 10)]
    healed: u64,
    /// Seconds clients keep running after the final heal.
    #[arg(long, default_value_t = 5)]
    recovery: u64,
    /// Milliseconds before an operation is abandoned (becomes info).
    #[arg(long, default_value_t = 1000)]
    op_timeout_ms: u64,
    /// Target operations per second over all clients (0: unlimited).
    #[arg(long, default_value_t = 200)]
    rate: u32,
    /// Seconds the linearizability check may take before answering unknown.
    #[arg(long, default_value_t = 120)]
    check_timeout: u64,
    /// Results root.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Test name (results/<name>/...); default: <db>-<workload>.
    #[arg(long)]
    name: Option<String>,
    /// No progress display.
    #[arg(long)]
    quiet: bool,
    /// With --workload shardkv: replica groups (3 members each) beside the controller group.
    #[arg(long, default_value_t = 3)]
    groups: usize,
    /// With --workload shardkv: seconds between two random Join/Leave/Move (0: none). One
    /// second catches `--mutation keep-serving` in 5 of 5 30 s runs, three seconds in 3 of 5.
    #[arg(long, default_value_t = 1)]
    reconfigure_every: u64,
}

#[derive(Args)]
struct BenchShardkvArgs {
    /// Group counts to measure, ascending.
    #[arg(long, default_value = "1,2,3")]
    groups: String,
    /// Nodes of the local cluster.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Closed-loop clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds each throughput measurement lasts.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of warm-up after each join.
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Keys (fixed set over every shard).
    #[arg(long, default_value_t = 100)]
    keys: usize,
    /// Shard moves to time.
    #[arg(long, default_value_t = 8)]
    moves: usize,
    /// Seconds between moves.
    #[arg(long, default_value_t = 3)]
    move_every: u64,
    /// Operations per second over all clients during the moves.
    #[arg(long, default_value_t = 400)]
    move_rate: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Results root.
    #[arg(long, default_value = "results")]
    results: PathBuf,
}

#[derive(Args)]
#[group(required = true, multiple = false)]
struct TeardownArgs {
    /// Tear down the run with this tag (namespaces rj-<tag>-*, /var/tmp/rj/<tag>).
    #[arg(long)]
    tag: Option<String>,
    /// Tear down every run whose control process is gone.
    #[arg(long)]
    all_stale: bool,
}

#[derive(Args)]
struct AnalyzeArgs {
    /// A run folder (results/<test>/<timestamp> or results/<test>/latest).
    folder: PathBuf,
    /// Checker model; default: the one results.json names, else kv.
    #[arg(long)]
    model: Option<String>,
    /// Seconds the check may take before answering unknown.
    #[arg(long, default_value_t = 120)]
    check_timeout: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Test(args) => test(*args),
        Command::Teardown(args) => teardown(args),
        Command::Analyze(args) => analyze_folder(args),
        Command::BenchCompare(args) => bench_compare(*args),
        Command::BenchShardkv(args) => bench_shardkv(*args),
        Command::Mapreduce(args) => mr_cli::mapreduce(*args),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("control: error: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn exit_code(validity: Validity) -> u8 {
    u8::try_from(validity.exit_code()).unwrap_or(2)
}

fn test(args: TestArgs) -> anyhow::Result<u8> {
    let nemesis = nemesis::parse_kinds(&args.nemesis)?;
    let cluster = match args.cluster.as_str() {
        "local" => ClusterChoice::Local,
        "ssh" => ClusterChoice::Ssh {
            hosts: args
                .hosts
                .clone()
                .context("--cluster ssh needs --hosts FILE")?,
            user: args.user.clone(),
            key: args.key.clone().context("--cluster ssh needs --key FILE")?,
            known_hosts: args
                .known_hosts
                .clone()
                .context("--cluster ssh needs --known-hosts FILE")?,
        },
        other => bail!("unknown cluster `{other}` (want local or ssh)"),
    };
    let seed = args.seed.unwrap_or_else(rand::random);
    let name = args
        .name
        .clone()
        .unwrap_or_else(|| format!("{}-{}", args.db, args.workload));
    let mut options = TestOptions::new(&name);
    options.cluster = cluster;
    options.nodes = args.nodes;
    options.time = Duration::from_secs(args.time);
    options.workload = args.workload;
    options.nemesis = nemesis;
    options.mutation = args.mutation;
    options.db = args.db;
    options.reads = args.reads;
    options.seed = seed;
    options.concurrency = args.concurrency;
    options.results_root = args.results;
    options.faulty = Duration::from_secs(args.faulty);
    options.healed = Duration::from_secs(args.healed);
    options.recovery = Duration::from_secs(args.recovery);
    options.op_timeout = Duration::from_millis(args.op_timeout_ms);
    options.check_timeout = Duration::from_secs(args.check_timeout);
    options.rate = args.rate;
    options.progress = !args.quiet;

    // First Ctrl-C: finish the run early (heal, collect logs, tear down, check what was
    // recorded). Second: tear down at once and exit 130.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ncontrol: interrupted again; tearing down now");
            for (tag, result) in local::teardown_active() {
                if let Err(e) = result {
                    eprintln!("control: teardown {tag}: {e}");
                }
            }
            std::process::exit(130);
        }
        eprintln!("\ncontrol: interrupted; healing, collecting logs and tearing down (Ctrl-C again to abort)");
    })
    .context("installing the Ctrl-C handler")?;

    let outcome = if options.workload == "shardkv" {
        let shard = control::shard::run::ShardOptions {
            groups: args.groups,
            reconfigure_every: Duration::from_secs(args.reconfigure_every),
            ..Default::default()
        };
        control::shard::run::run_shard_test(
            &options,
            &shard,
            &control::shard::client::node_backend,
            &interrupted,
        )?
    } else {
        runner::run_test(&options, &interrupted)?
    };
    for error in &outcome.errors {
        eprintln!("control: during the run: {error}");
    }
    let verdict = match outcome.validity {
        Validity::Valid => "valid",
        Validity::Invalid => "INVALID",
        Validity::Unknown => "unknown",
    };
    println!("{verdict}: {}", outcome.run_dir.display());
    let report = outcome.run_dir.join("report.html");
    if report.exists() {
        println!("report: {}", report.display());
    }
    Ok(exit_code(outcome.validity))
}

fn teardown(args: TeardownArgs) -> anyhow::Result<u8> {
    let tags = match (args.tag, args.all_stale) {
        (Some(tag), _) => {
            if stale::owner_alive(&tag) {
                bail!("run {tag} is still owned by a live control process; stop it first");
            }
            vec![tag]
        }
        (None, true) => stale::stale_tags(),
        (None, false) => bail!("give --tag TAG or --all-stale"),
    };
    if tags.is_empty() {
        println!("nothing to tear down");
    }
    let mut failed = false;
    for tag in tags {
        match stale::teardown_tag(&tag) {
            Ok(report) => println!(
                "{tag}: removed {} namespaces, terminated {:?}, killed {:?}",
                report.namespaces.len(),
                report.terminated,
                report.killed
            ),
            Err(e) => {
                eprintln!("{tag}: {e}");
                failed = true;
            }
        }
    }
    Ok(if failed { 2 } else { 0 })
}

fn analyze_folder(args: AnalyzeArgs) -> anyhow::Result<u8> {
    let run = RunDir::open(&args.folder)?;
    let previous: serde_json::Value = std::fs::read_to_string(run.results_json())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let model = args
        .model
        .or_else(|| previous["run"]["model"].as_str().map(String::from))
        .unwrap_or_else(|| "kv".into());
    let analysis = analyze::analyze(&run, &model, Duration::from_secs(args.check_timeout))?;
    let nemesis = analyze::read_nemesis(&run);
    let mut info = previous["run"].clone();
    if info.is_null() {
        info = serde_json::json!({ "model": model });
    }
    run.write_results(&analyze::results_json(&info, &analysis, &nemesis))?;
    println!(
        "{}: {} operations ({} ok, {} fail, {} info); results.json rewritten",
        match analysis.validity {
            Validity::Valid => "valid",
            Validity::Invalid => "INVALID",
            Validity::Unknown => "unknown",
        },
        analysis.summary.invokes,
        analysis.summary.ok,
        analysis.summary.fail,
        analysis.summary.info
    );
    Ok(exit_code(analysis.validity))
}

fn bench_shardkv(args: BenchShardkvArgs) -> anyhow::Result<u8> {
    let groups: Vec<usize> = args
        .groups
        .split(',')
        .map(|g| g.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .context("--groups wants a list like 1,2,3")?;
    let mut test = TestOptions::new("bench-shardkv");
    test.nodes = args.nodes;
    test.seed = args.seed;
    test.results_root = args.results;
    test.op_timeout = Duration::from_secs(2);
    let options = control::shard::bench::BenchOptions {
        test,
        groups,
        clients: args.clients,
        duration: Duration::from_secs(args.duration),
        warmup: Duration::from_secs(args.warmup),
        keys: args.keys,
        moves: args.moves,
        move_every: Duration::from_secs(args.move_every),
        move_rate: args.move_rate,
    };
    let interrupted = AtomicBool::new(false);
    let (dir, rows, moves) = control::shard::bench::run_bench(
        &options,
        &control::shard::client::node_backend,
        &interrupted,
    )?;
    print!("{}", control::shard::bench::table(&rows, &moves));
    println!("results: {}", dir.join("results.json").display());
    Ok(0)
}

fn bench_compare(args: BenchCompareArgs) -> anyhow::Result<u8> {
    use control::bench::{self, parse_list, BenchOptions, Rate};
    let seconds = |v: f64, flag: &str| -> anyhow::Result<Duration> {
        if !(v.is_finite() && (0.0..=3600.0).contains(&v)) {
            bail!("{flag} must be between 0 and 3600 seconds");
        }
        Ok(Duration::from_secs_f64(v))
    };
    let rates: Vec<Rate> = if args.rates.trim() == "none" {
        Vec::new()
    } else {
        parse_list(&args.rates, "--rates").map_err(anyhow::Error::msg)?
    };
    let options = BenchOptions {
        systems: parse_list(&args.systems, "--systems").map_err(anyhow::Error::msg)?,
        workloads: parse_list(&args.workloads, "--workloads").map_err(anyhow::Error::msg)?,
        clients: bench::parse_clients(&args.clients).map_err(anyhow::Error::msg)?,
        warmup: seconds(args.warmup, "--warmup")?,
        duration: seconds(args.duration, "--duration")?,
        records: args.records,
        value_bytes: args.value_bytes,
        distribution: args.distribution.parse().map_err(anyhow::Error::msg)?,
        connect: args.connect.parse().map_err(anyhow::Error::msg)?,
        open_workload: if rates.is_empty() {
            None
        } else {
            Some(args.open_workload.parse().map_err(anyhow::Error::msg)?)
        },
        rates,
        open_clients: args.open_clients,
        op_timeout: Duration::from_millis(args.op_timeout_ms),
        client_threads: args.client_threads,
        seed: args.seed.unwrap_or_else(rand::random),
        results_root: args.results,
        name: args.name,
        max_raft_state_bytes: args.max_raft_state_bytes,
        ..BenchOptions::default()
    };
    // First Ctrl-C: stop measuring, stop the systems, tear down, write what was measured.
    // Second: tear down at once and exit 130.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            eprintln!("\ncontrol: interrupted again; tearing down now");
            for (tag, result) in local::teardown_active() {
                if let Err(e) = result {
                    eprintln!("control: teardown {tag}: {e}");
                }
            }
            std::process::exit(130);
        }
        eprintln!(
            "\ncontrol: interrupted; stopping the systems and tearing down (Ctrl-C again to abort)"
        );
    })
    .context("installing the Ctrl-C handler")?;
    let outcome = bench::run(&options, &interrupted)?;
    print!("{}", bench::table(&outcome.rows));
    println!("connect: {}", options.connect.describe());
    if args.json {
        println!("{}", outcome.results["rows"]);
    }
    for error in &outcome.errors {
        eprintln!("control: during the run: {error}");
    }
    println!(
        "results: {}",
        outcome.run_dir.join("results.json").display()
    );
    println!("report: {}", outcome.run_dir.join("report.html").display());
    Ok(if outcome.errors.is_empty() { 0 } else { 3 })
}
