//! Step 2: the lab's test-mr.sh with real processes: one (unreplicated)
//! coordinator process and worker processes over QUIC with mutual TLS.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use mapreduce::app::{self, AppOptions};
use mapreduce::input;
use mapreduce::sequential::run_sequential;
use mapreduce::worker::sorted_output_lines;

const BIN: &str = env!("CARGO_BIN_EXE_mapreduce");
/// Bound on any one job here (the lab wraps every process in `timeout 180s`).
const JOB_DEADLINE: Duration = Duration::from_secs(90);

fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("SEED={seed}");
    seed
}

/// Children killed (by pid, through their handle) when the test ends.
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

struct Job {
    dir: tempfile::TempDir,
    files: Vec<String>,
    coordinator_flag: String,
}

impl Job {
    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn certs(&self) -> PathBuf {
        self.path().join("certs")
    }

    /// Starts the coordinator process for `app` with `timeout_ms`.
    fn start(
        seed: u64,
        files: usize,
        bytes: usize,
        app: &str,
        timeout_ms: u64,
        procs: &mut Processes,
    ) -> Job {
        let dir = tempfile::tempdir().unwrap();
        let files = input::generate(dir.path(), seed, files, bytes).unwrap();
        mapreduce::net::write_certs(&dir.path().join("certs"), &["c1".to_string()]).unwrap();
        let port = free_port();
        let child = Command::new(BIN)
            .arg("coordinator")
            .arg(format!("--app={app}"))
            .arg("--dir")
            .arg(dir.path())
            .arg("--certs")
            .arg(dir.path().join("certs"))
            .arg(format!("--listen=127.0.0.1:{port}"))
            .arg(format!("--task-timeout-ms={timeout_ms}"))
            .arg("--linger-ms=1500")
            .args(&files)
            .spawn()
            .unwrap();
        procs.0.push(child);
        Job {
            dir,
            files,
            coordinator_flag: format!("--coordinator=c1=127.0.0.1:{port}"),
        }
    }

    fn worker(&self, app: &str, extra: &[String]) -> Child {
        Command::new(BIN)
            .arg("worker")
            .arg(format!("--app={app}"))
            .arg("--dir")
            .arg(self.path())
            .arg("--certs")
            .arg(self.certs())
            .arg(&self.coordinator_flag)
            .arg("--poll-ms=50")
            .args(extra)
            .spawn()
            .unwrap()
    }

    fn sequential(&self, app: &str) -> Vec<String> {
        let app = app::by_name(app, &AppOptions::default()).unwrap();
        let out = self.path().join("mr-correct.txt");
        run_sequential(
            app.as_ref(),
            &app::local_context(self.path()),
            &self.files,
            &out,
        )
        .unwrap();
        let mut lines: Vec<String> = std::fs::read_to_string(&out)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines
    }

    fn output(&self) -> Vec<String> {
        sorted_output_lines(self.path(), "mr-out-").unwrap()
    }
}

fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Waits for the process at `index` with a deadline; panics past it.
fn wait(procs: &mut Processes, index: usize) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = procs.0[index].try_wait().unwrap() {
            return status;
        }
        assert!(
            started.elapsed() < JOB_DEADLINE,
            "process {index} still running after {JOB_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_workers(job: &Job, procs: &mut Processes, app: &str, workers: usize, extra: &[String]) {
    for _ in 0..workers {
        procs.0.push(job.worker(app, extra));
    }
    for index in 1..procs.0.len() {
        assert!(wait(procs, index).success(), "worker {index} failed");
    }
    assert!(wait(procs, 0).success(), "coordinator failed");
}

#[test]
fn wc_with_three_worker_processes_equals_sequential() {
    let mut procs = Processes(Vec::new());
    let job = Job::start(seed(), 8, 30_000, "wc", 10_000, &mut procs);
    run_workers(&job, &mut procs, "wc", 3, &[]);
    let expected = job.sequential("wc");
    assert!(expected.len() > 100);
    assert_eq!(job.output(), expected);
}

#[test]
fn indexer_with_two_worker_processes_equals_sequential() {
    let mut procs = Processes(Vec::new());
    let job = Job::start(seed() + 1, 8, 10_000, "indexer", 10_000, &mut procs);
    run_workers(&job, &mut procs, "indexer", 2, &[]);
    assert_eq!(job.output(), job.sequential("indexer"));
}

#[test]
fn map_tasks_run_in_parallel() {
    let mut procs = Processes(Vec::new());
    let job = Job::start(seed(), 8, 100, "mtiming", 10_000, &mut procs);
    run_workers(
        &job,
        &mut procs,
        "mtiming",
        2,
        &["--timing-sleep-ms=700".into()],
    );
    let output = job.output();
    let times = output.iter().filter(|l| l.starts_with("times-")).count();
    assert_eq!(times, 2, "map tasks ran in exactly two workers: {output:?}");
    let parallel = output
        .iter()
        .filter(|l| l.starts_with("parallel-") && l.split(' ').skip(1).any(|v| v == "2"))
        .count();
    assert!(
        parallel >= 1,
        "some map saw two workers mapping at once: {output:?}"
    );
}

#[test]
fn reduce_tasks_run_in_parallel() {
    let mut procs = Processes(Vec::new());
    let job = Job::start(seed(), 8, 100, "rtiming", 10_000, &mut procs);
    run_workers(
        &job,
        &mut procs,
        "rtiming",
        2,
        &["--timing-sleep-ms=700".into()],
    );
    let output = job.output();
    let both = output
        .iter()
        .filter(|l| l.len() == 3 && l.ends_with(" 2") && l.as_bytes()[0].is_ascii_lowercase())
        .count();
    assert!(
        both >= 2,
        "at least two reduces saw two workers reducing: {output:?}"
    );
}

#[test]
fn no_worker_process_exits_before_the_job_is_done() {
    let mut procs = Processes(Vec::new());
    let job = Job::start(seed(), 8, 20_000, "wc", 10_000, &mut procs);
    for _ in 0..3 {
        procs.0.push(job.worker("wc", &[]));
    }
    let started = Instant::now();
    let first = loop {
        let exited = (1..=3).find(|i| matches!(procs.0[*i].try_wait(), Ok(Some(_))));
        if let Some(index) = exited {
            break index;
        }
        assert!(started.elapsed() < JOB_DEADLINE);
        std::thread::sleep(Duration::from_millis(5));
    };
    let at_first_exit = job.output();
    for index in 1..=3 {
        assert!(
            wait(&mut procs, index).success(),
            "worker {index} (first: {first})"
        );
    }
    assert_eq!(
        job.output(),
        at_first_exit,
        "output changed after a worker exited"
    );
    assert_eq!(at_first_exit, job.sequential("wc"));
}

#[test]
fn crashing_worker_processes_still_give_the_right_output() {
    let seed = seed();
    let mut procs = Processes(Vec::new());
    let job = Job::start(seed, 8, 1_000, "crash", 1_000, &mut procs);
    let flags = [
        format!("--seed={seed}"),
        "--crash-stall-max-ms=1000".to_string(),
    ];
    // The lab: keep workers running (restarting crashed ones) while the
    // coordinator is alive.
    let started = Instant::now();
    let mut crashes = 0;
    let mut workers: Vec<Child> = Vec::new();
    while procs.0[0].try_wait().unwrap().is_none() {
        assert!(started.elapsed() < JOB_DEADLINE, "crash job still running");
        let mut alive = Vec::new();
        for mut child in workers.drain(..) {
            match child.try_wait().unwrap() {
                Some(status) if !status.success() => crashes += 1,
                Some(_) => {}
                None => alive.push(child),
            }
        }
        workers = alive;
        while workers.len() < 3 {
            workers.push(job.worker("crash", &flags));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    procs.0.extend(workers);
    println!("worker crashes: {crashes}");
    assert!(procs.0[0].try_wait().unwrap().is_some_and(|s| s.success()));
    assert!(crashes > 0, "the crash app crashed workers");
    assert_eq!(job.output(), job.sequential("nocrash"));
}
