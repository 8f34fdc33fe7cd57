//! `control mapreduce`: the MapReduce crash tests on a real cluster, with a nemesis that kills
//! workers and the coordinator's leader.
//!
//! What a run does, in order:
//!
//! 1. provisions the local namespace cluster; generates the input text (seeded) and computes
//!    the sequential reference output in the control process;
//! 2. uploads the `mapreduce` binary and the certificates to every node and the inputs to the
//!    shared job directory ([`deploy`] has the layout);
//! 3. starts the replicated coordinator (one `mapreduce replica` per member, by pid file over
//!    SSH) and the workers spread over the nodes; a [`monitor::Monitor`] samples who leads and
//!    how far the job is;
//! 4. runs the nemesis ([`plan`] chooses the faults, [`driver`] applies them) while the job
//!    runs: workers killed (`kill -9`) and replaced, the leader killed and restarted from its
//!    WAL, optionally pauses and a partition of the leader; workers that exit are noted, and
//!    crashed ones (the lab's crash app) replaced;
//! 5. once the job is done, heals, waits for the workers to exit, downloads the output and
//!    checks it ([`check`]) against the sequential run, plus early exit and that the faults
//!    happened; writes `results/<name>/<timestamp>/` with `results.json`, `events.jsonl`,
//!    `progress.jsonl`, `output/`, `nodes/<name>/*.log` and `report.html` ([`report`]).
//!
//! Every event carries its time on the run's monotonic clock (nanoseconds since the cluster
//! was ready), like the history of the linearizability tests.

pub mod check;
pub mod deploy;
pub mod driver;
mod faults;
pub mod monitor;
pub mod plan;
pub mod report;
mod verdict;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use plan::{parse_faults, MrFault};

/// The MapReduce applications the harness can check against a sequential run.
pub const APPS: &[&str] = &["wc", "indexer", "crash"];

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct MrOptions {
    /// Test name: results go to `<results_root>/<name>/<timestamp>/`.
    pub name: String,
    pub nodes: usize,
    /// Coordinator replicas (Raft members).
    pub replicas: usize,
    /// Workers kept running (killed and crashed ones are replaced).
    pub workers: usize,
    /// `wc`, `indexer` or `crash` (the lab's crash app: workers exit or stall at random).
    pub app: String,
    pub input_files: usize,
    pub input_bytes_per_file: usize,
    pub n_reduce: u32,
    /// A task not reported done within this time is handed to another worker.
    pub task_timeout: Duration,
    /// Workers sleep this long before each task, to stretch small jobs.
    pub task_delay: Duration,
    /// The crash app's longest stall.
    pub crash_stall_max: Duration,
    pub faults: BTreeSet<MrFault>,
    /// Calm before the first fault (after the workers started).
    pub first_fault_after: Duration,
    /// Calm between one fault's end and the next fault.
    pub fault_interval: Duration,
    /// How long a lasting fault lasts (a killed leader stays down, a pause, a partition).
    pub fault_duration: Duration,
    /// The job must be done by then (counted from the workers' start), or the run fails.
    pub job_deadline: Duration,
    /// After the job is done, how long workers have to exit by themselves.
    pub exit_grace: Duration,
    pub seed: u64,
    pub results_root: PathBuf,
    /// The `mapreduce` binary to upload; default: beside the running `control`.
    pub mapreduce_binary: Option<PathBuf>,
    /// Progress lines on stderr.
    pub progress: bool,
    /// A deliberate bug, to prove the checks catch it: `truncate-output` cuts `mr-out-0` to
    /// half once the job is done (what a worker writing in place and dying would leave).
    pub mutation: Option<String>,
}

impl MrOptions {
    pub fn new(name: &str) -> MrOptions {
        MrOptions {
            name: name.to_string(),
            nodes: 5,
            replicas: 3,
            workers: 4,
            app: "wc".into(),
            input_files: 8,
            input_bytes_per_file: 200_000,
            n_reduce: 10,
            task_timeout: Duration::from_secs(3),
            task_delay: Duration::from_millis(500),
            crash_stall_max: Duration::from_secs(3),
            faults: [MrFault::KillWorker, MrFault::KillLeader].into(),
            first_fault_after: Duration::from_secs(2),
            fault_interval: Duration::from_secs(2),
            fault_duration: Duration::from_secs(2),
            job_deadline: Duration::from_secs(300),
            exit_grace: Duration::from_secs(30),
            seed: 1,
            results_root: PathBuf::from("results"),
            mapreduce_binary: None,
            progress: true,
            mutation: None,
        }
    }

    pub fn validate(&self) -> Result<(), MrError> {
        let bad = |what: String| Err(MrError::BadOption(what));
        if !APPS.contains(&self.app.as_str()) {
            return bad(format!(
                "app `{}` (want one of {})",
                self.app,
                APPS.join(", ")
            ));
        }
        if self.nodes == 0 || self.workers == 0 || self.replicas == 0 || self.input_files == 0 {
            return bad("nodes, workers, replicas and input files must be positive".into());
        }
        if let Some(mutation) = self.mutation.as_deref().filter(|m| *m != "truncate-output") {
            return bad(format!(
                "mutation `{mutation}` (available: truncate-output)"
            ));
        }
        if self.n_reduce == 0 || self.task_timeout.is_zero() {
            return bad("n_reduce and the task timeout must be positive".into());
        }
        Ok(())
    }

    /// The app the sequential reference runs: the crash app's output is `nocrash`'s.
    pub fn reference_app(&self) -> &str {
        if self.app == "crash" {
            "nocrash"
        } else {
            &self.app
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MrError {
    #[error("bad option: {0}")]
    BadOption(String),
    #[error("setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Results(#[from] crate::results::ResultsError),
}

/// One thing that happened during a run, for `events.jsonl`, results.json and the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MrEvent {
    /// Nanoseconds on the run's clock when it began.
    pub time: u64,
    /// When it had finished (an SSH round trip, a restart).
    pub end_time: u64,
    /// `nemesis`, `worker`, `leader` or `job`.
    pub kind: String,
    /// nemesis: `start`/`stop`; worker: `start`/`exit`; leader: `elected`; job: `done`.
    pub phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fault: Option<MrFault>,
    /// The process it concerns (`mr-worker-3`, `mr-c2`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Free text: how a worker ended, which term a leader won.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl MrEvent {
    pub fn new(time: u64, kind: &str, phase: &str) -> MrEvent {
        MrEvent {
            time,
            end_time: time,
            kind: kind.into(),
            phase: phase.into(),
            fault: None,
            process: None,
            node: None,
            pid: None,
            detail: None,
            error: None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct MrOutcome {
    pub run_dir: PathBuf,
    /// Every check passed.
    pub valid: bool,
    /// Names of the checks that failed.
    pub failed_checks: Vec<String>,
    /// Problems that make the evidence incomplete (setup, SSH, teardown).
    pub errors: Vec<String>,
    pub events: Vec<MrEvent>,
}

pub use driver::run;
