//! Step 1: the whole job with workers as threads in this process and the
//! unreplicated coordinator; output compared with the sequential run.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mapreduce::app::{self, AppContext, AppOptions};
use mapreduce::local::LocalCoordinator;
use mapreduce::sequential::run_sequential;
use mapreduce::worker::sorted_output_lines;
use mapreduce::{input, run_worker, JobSpec, WorkerExit, WorkerOptions};

fn seed() -> u64 {
    let seed = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("SEED={seed}");
    seed
}

fn context(dir: &Path, worker_id: u64) -> AppContext {
    AppContext {
        work_dir: dir.to_path_buf(),
        worker_id,
        ids_are_pids: false,
    }
}

fn options() -> WorkerOptions {
    WorkerOptions {
        poll_interval: Duration::from_millis(10),
        max_link_failures: 3,
        task_delay: Duration::ZERO,
    }
}

/// Runs the job with `workers` threads; returns each worker's exit.
fn run_job(
    dir: &Path,
    app_name: &str,
    app_options: &AppOptions,
    files: &[String],
    workers: u64,
    timeout_ms: u64,
) -> (LocalCoordinator, Vec<WorkerExit>) {
    let coordinator = LocalCoordinator::start(JobSpec {
        files: files.to_vec(),
        n_reduce: 10,
        task_timeout_ms: timeout_ms,
    })
    .unwrap();
    let app: Arc<dyn mapreduce::Application> =
        Arc::from(app::by_name(app_name, app_options).unwrap());
    let handles: Vec<_> = (1..=workers)
        .map(|id| {
            let mut link = coordinator.clone();
            let app = app.clone();
            let ctx = context(dir, id);
            std::thread::spawn(move || {
                run_worker(app.as_ref(), &ctx, &mut link, &options()).unwrap()
            })
        })
        .collect();
    let exits = handles.into_iter().map(|h| h.join().unwrap()).collect();
    (coordinator, exits)
}

fn sequential_lines(dir: &Path, app_name: &str, files: &[String]) -> Vec<String> {
    let app = app::by_name(app_name, &AppOptions::default()).unwrap();
    let out = dir.join("mr-correct.txt");
    run_sequential(app.as_ref(), &context(dir, 0), files, &out).unwrap();
    let mut lines: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    lines
}

#[test]
fn word_count_equals_sequential_with_three_workers() {
    let dir = tempfile::tempdir().unwrap();
    let files = input::generate(dir.path(), seed(), 8, 20_000).unwrap();
    let (coordinator, exits) = run_job(dir.path(), "wc", &AppOptions::default(), &files, 3, 5_000);
    assert!(exits.iter().all(|e| *e == WorkerExit::JobDone));
    assert!(coordinator.progress().done());
    let expected = sequential_lines(dir.path(), "wc", &files);
    assert!(expected.len() > 100, "the input has many distinct words");
    assert_eq!(
        sorted_output_lines(dir.path(), "mr-out-").unwrap(),
        expected
    );
    for r in 0..10 {
        assert!(dir.path().join(format!("mr-out-{r}")).exists());
    }
}

#[test]
fn indexer_equals_sequential_with_two_workers() {
    let dir = tempfile::tempdir().unwrap();
    let files = input::generate(dir.path(), seed() + 1, 6, 10_000).unwrap();
    let (_, exits) = run_job(
        dir.path(),
        "indexer",
        &AppOptions::default(),
        &files,
        2,
        5_000,
    );
    assert!(exits.iter().all(|e| *e == WorkerExit::JobDone));
    assert_eq!(
        sorted_output_lines(dir.path(), "mr-out-").unwrap(),
        sequential_lines(dir.path(), "indexer", &files)
    );
}

#[test]
fn crashing_and_stalling_workers_still_give_the_right_output() {
    let seed = seed();
    let dir = tempfile::tempdir().unwrap();
    let files = input::generate(dir.path(), seed, 8, 1_000).unwrap();
    let coordinator = LocalCoordinator::start(JobSpec {
        files: files.clone(),
        n_reduce: 10,
        task_timeout_ms: 300,
    })
    .unwrap();
    // The lab: workers restarted whenever one dies, until the job is done.
    let mut next_id = 1u64;
    let mut crashes = 0;
    let mut running: Vec<std::thread::JoinHandle<WorkerExit>> = Vec::new();
    while !coordinator.progress().done() {
        let (finished, alive): (Vec<_>, Vec<_>) =
            running.into_iter().partition(|h| h.is_finished());
        running = alive;
        for handle in finished {
            if handle.join().unwrap() == WorkerExit::Crashed {
                crashes += 1;
            }
        }
        while running.len() < 3 {
            let app = app::Crash::new(seed, Duration::from_millis(400));
            let mut link = coordinator.clone();
            let ctx = context(dir.path(), next_id);
            next_id += 1;
            running.push(std::thread::spawn(move || {
                run_worker(&app, &ctx, &mut link, &options()).unwrap()
            }));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for handle in running {
        if handle.join().unwrap() == WorkerExit::Crashed {
            crashes += 1;
        }
    }
    println!("workers started: {}, crashed: {crashes}", next_id - 1);
    assert!(crashes > 0, "the crash app crashed some workers");
    assert_eq!(
        sorted_output_lines(dir.path(), "mr-out-").unwrap(),
        sequential_lines(dir.path(), "nocrash", &files)
    );
}

#[test]
fn no_worker_exits_before_the_job_is_done() {
    let dir = tempfile::tempdir().unwrap();
    let files = input::generate(dir.path(), seed(), 4, 2_000).unwrap();
    let coordinator = LocalCoordinator::start(JobSpec {
        files: files.clone(),
        n_reduce: 10,
        task_timeout_ms: 5_000,
    })
    .unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    for id in 1..=3u64 {
        let mut link = coordinator.clone();
        let ctx = context(dir.path(), id);
        let sender = sender.clone();
        let watcher = coordinator.clone();
        std::thread::spawn(move || {
            let exit = run_worker(&app::WordCount, &ctx, &mut link, &options()).unwrap();
            sender.send((exit, watcher.progress().done())).unwrap();
        });
    }
    drop(sender);
    let first = receiver.recv().unwrap();
    let at_first_exit = sorted_output_lines(dir.path(), "mr-out-").unwrap();
    assert_eq!(
        first,
        (WorkerExit::JobDone, true),
        "first exit came after the job was done"
    );
    let rest: Vec<_> = receiver.iter().collect();
    assert_eq!(rest.len(), 2);
    assert_eq!(
        sorted_output_lines(dir.path(), "mr-out-").unwrap(),
        at_first_exit
    );
}
