//! `control mapreduce`: flags, parsed into [`control::mr::MrOptions`].
//!
//! Exit status: 0 every check passed; 1 a check failed (wrong output, a worker exited early or
//! never, a requested fault never happened, the job not done); 2 bad usage or a setup failure;
//! 3 the checks passed but the run hit errors that make the evidence incomplete.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use control::cluster::local;
use control::mr::{self, MrOptions};

#[derive(Args, Debug)]
pub struct MapreduceArgs {
    /// Application: wc (word count), indexer (inverted index), or crash (the lab's crash app:
    /// workers exit or stall at random; checked against nocrash's sequential output).
    #[arg(long, default_value = "wc")]
    app: String,
    /// Number of nodes (local cluster).
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Workers kept running; killed and crashed ones are replaced.
    #[arg(long, default_value_t = 4)]
    workers: usize,
    /// Coordinator replicas (Raft members), spread over the first nodes.
    #[arg(long, default_value_t = 3)]
    replicas: usize,
    /// Generated input files (one map task each).
    #[arg(long, default_value_t = 8)]
    files: usize,
    /// Bytes of generated text per input file.
    #[arg(long, default_value_t = 200_000)]
    bytes_per_file: usize,
    #[arg(long, default_value_t = 10)]
    n_reduce: u32,
    /// Milliseconds before a task not reported done is handed to another worker.
    #[arg(long, default_value_t = 3000)]
    task_timeout_ms: u64,
    /// Milliseconds each worker sleeps before a task, so faults land mid-job.
    #[arg(long, default_value_t = 500)]
    task_delay_ms: u64,
    /// Longest stall of the crash app, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    crash_stall_max_ms: u64,
    /// Faults: comma-separated kill-worker, kill-leader, pause-worker, pause-leader,
    /// partition-leader; or the groups kill, pause, partition, all; or none.
    #[arg(long, default_value = "kill")]
    nemesis: String,
    /// Seconds of calm before the first fault.
    #[arg(long, default_value_t = 2.0)]
    first_fault_after: f64,
    /// Seconds of calm between faults.
    #[arg(long, default_value_t = 2.0)]
    interval: f64,
    /// Seconds a lasting fault lasts (the killed leader stays down, a pause, a partition).
    #[arg(long, default_value_t = 2.0)]
    fault_duration: f64,
    /// Seconds the job may take before the run fails.
    #[arg(long, default_value_t = 300)]
    deadline: u64,
    /// Seed of the inputs, the fault plan and the crash app; random when absent, always printed.
    #[arg(long)]
    seed: Option<u64>,
    /// The mapreduce binary to upload (default: beside control).
    #[arg(long)]
    mapreduce_binary: Option<PathBuf>,
    /// Results root.
    #[arg(long, default_value = "results")]
    results: PathBuf,
    /// Test name (results/<name>/...); default: mapreduce-<app>.
    #[arg(long)]
    name: Option<String>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// A deliberate bug to prove the checks catch it: truncate-output (cuts mr-out-0 to half
    /// after the job; the run must fail).
    #[arg(long)]
    mutation: Option<String>,
}

fn seconds(value: f64, flag: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("--{flag} {value}"))
}

pub fn mapreduce(args: MapreduceArgs) -> anyhow::Result<u8> {
    let mut options = MrOptions::new(
        &args
            .name
            .clone()
            .unwrap_or_else(|| format!("mapreduce-{}", args.app)),
    );
    options.app = args.app;
    options.nodes = args.nodes;
    options.workers = args.workers;
    options.replicas = args.replicas;
    options.input_files = args.files;
    options.input_bytes_per_file = args.bytes_per_file;
    options.n_reduce = args.n_reduce;
    options.task_timeout = Duration::from_millis(args.task_timeout_ms);
    options.task_delay = Duration::from_millis(args.task_delay_ms);
    options.crash_stall_max = Duration::from_millis(args.crash_stall_max_ms);
    options.faults = mr::parse_faults(&args.nemesis).map_err(anyhow::Error::msg)?;
    options.first_fault_after = seconds(args.first_fault_after, "first-fault-after")?;
    options.fault_interval = seconds(args.interval, "interval")?;
    options.fault_duration = seconds(args.fault_duration, "fault-duration")?;
    options.job_deadline = Duration::from_secs(args.deadline);
    options.seed = args.seed.unwrap_or_else(rand::random);
    options.mapreduce_binary = args.mapreduce_binary;
    options.results_root = args.results;
    options.progress = !args.quiet;
    options.mutation = args.mutation;

    // Ctrl-C: first ends the run early (heal, collect, check what there is); second tears the
    // cluster down at once.
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            for (tag, result) in local::teardown_active() {
                if let Err(e) = result {
                    eprintln!("control: teardown {tag}: {e}");
                }
            }
            std::process::exit(130);
        }
        eprintln!("\ncontrol: interrupted; stopping the job, collecting, tearing down");
    })
    .context("installing the Ctrl-C handler")?;

    let outcome = mr::run(&options, &interrupted)?;
    for error in &outcome.errors {
        eprintln!("control: during the run: {error}");
    }
    let verdict = if outcome.valid {
        "valid"
    } else if outcome.failed_checks.is_empty() {
        "unknown"
    } else {
        "INVALID"
    };
    println!("{verdict}: {}", outcome.run_dir.display());
    if !outcome.failed_checks.is_empty() {
        println!("failed checks: {}", outcome.failed_checks.join(", "));
    }
    println!("report: {}", outcome.run_dir.join("report.html").display());
    Ok(if outcome.valid {
        0
    } else if outcome.failed_checks.is_empty() {
        3
    } else {
        1
    })
}
