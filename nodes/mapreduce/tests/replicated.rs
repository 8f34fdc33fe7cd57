//! Step 3 with real processes: three coordinator replicas (Raft over QUIC
//! with mutual TLS, WAL on disk) and three worker processes; the leader is
//! killed with SIGKILL mid-job and the job still finishes with the
//! sequential run's output.

#![allow(clippy::unwrap_used)] // test helpers: a failed setup step should panic

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use mapreduce::app::{self, AppOptions};
use mapreduce::net::{CoordinatorAddress, QuicLink, Request, Response};
use mapreduce::sequential::run_sequential;
use mapreduce::worker::sorted_output_lines;
use mapreduce::{input, Progress};

const BIN: &str = env!("CARGO_BIN_EXE_mapreduce");
const JOB_DEADLINE: Duration = Duration::from_secs(90);

struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

fn ask(certs: &Path, replica: &CoordinatorAddress, request: &Request) -> Option<Response> {
    let mut link = QuicLink::new(certs, vec![replica.clone()], Duration::from_millis(500)).ok()?;
    link.call(request).ok()
}

/// The replica that says it leads, with its progress.
fn leader(
    certs: &Path,
    replicas: &[CoordinatorAddress],
    skip: Option<usize>,
) -> Option<(usize, Progress)> {
    for (i, replica) in replicas.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        if let Some(Response::Role { leader: true, .. }) = ask(certs, replica, &Request::Role) {
            if let Some(Response::Progress(progress)) = ask(certs, replica, &Request::Progress) {
                return Some((i, progress));
            }
        }
    }
    None
}

#[test]
fn killing_the_coordinator_leader_mid_job_loses_nothing() {
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let files = input::generate(dir.path(), seed, 8, 20_000).unwrap();
    let certs = dir.path().join("certs");
    let names: Vec<String> = (1..=3).map(|i| format!("c{i}")).collect();
    mapreduce::net::write_certs(&certs, &names).unwrap();
    let replicas: Vec<CoordinatorAddress> = names
        .iter()
        .map(|name| CoordinatorAddress {
            name: name.clone(),
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        })
        .collect();
    let list = replicas
        .iter()
        .map(|r| format!("{}={}", r.name, r.addr))
        .collect::<Vec<_>>()
        .join(",");
    let replica = |id: usize| {
        Command::new(BIN)
            .arg("replica")
            .arg(format!("--id={id}"))
            .arg(format!("--replicas={list}"))
            .arg("--data-dir")
            .arg(dir.path().join(format!("raft-{id}")))
            .arg("--certs")
            .arg(&certs)
            .arg("--dir")
            .arg(dir.path())
            .args([
                "--app=wc",
                "--task-timeout-ms=2000",
                "--linger-ms=3000",
                "--snapshot-every-entries=20",
            ])
            .args(&files)
            .spawn()
            .unwrap()
    };
    let mut procs = Processes((1..=3).map(replica).collect());
    let mut workers = Vec::new();
    for _ in 0..3 {
        workers.push(
            Command::new(BIN)
                .arg("worker")
                .arg("--app=wc")
                .arg("--dir")
                .arg(dir.path())
                .arg("--certs")
                .arg(&certs)
                .arg(format!("--coordinator={list}"))
                .args(["--poll-ms=50", "--task-delay-ms=300"])
                .spawn()
                .unwrap(),
        );
    }

    // Wait until some tasks are done, then SIGKILL the leader.
    let started = Instant::now();
    let (killed, before) = loop {
        assert!(started.elapsed() < JOB_DEADLINE, "no progress");
        if let Some((i, progress)) = leader(&certs, &replicas, None) {
            let done = progress.maps_done + progress.reduces_done;
            assert!(
                !progress.done(),
                "the job finished before the leader could be killed"
            );
            if done >= 3 {
                procs.0[i].kill().unwrap();
                procs.0[i].wait().unwrap();
                println!(
                    "killed leader {} after {done} tasks done: {progress:?}",
                    replicas[i].name
                );
                break (i, done);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    // A new leader among the survivors remembers at least what was done.
    let after = loop {
        assert!(started.elapsed() < JOB_DEADLINE, "no new leader");
        if let Some((i, progress)) = leader(&certs, &replicas, Some(killed)) {
            println!("new leader {}: {progress:?}", replicas[i].name);
            break progress;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        after.maps_done + after.reduces_done >= before,
        "completed tasks were lost"
    );
    // The killed replica comes back from its WAL and snapshot and catches up:
    // it exits by itself only once its own state says the job is done.
    procs.0[killed] = replica(killed + 1);

    for mut worker in workers {
        let status = loop {
            if let Some(status) = worker.try_wait().unwrap() {
                break status;
            }
            assert!(started.elapsed() < JOB_DEADLINE, "worker still running");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "worker exited with {status}");
    }
    for (i, child) in procs.0.iter_mut().enumerate() {
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                started.elapsed() < JOB_DEADLINE,
                "replica c{} never learned the job is done",
                i + 1
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "replica c{} exited with {status}", i + 1);
    }
    let application = app::by_name("wc", &AppOptions::default()).unwrap();
    let out = dir.path().join("mr-correct.txt");
    run_sequential(
        application.as_ref(),
        &app::local_context(dir.path()),
        &files,
        &out,
    )
    .unwrap();
    let mut expected: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    expected.sort();
    assert_eq!(
        sorted_output_lines(dir.path(), "mr-out-").unwrap(),
        expected
    );
}

/// The lab's crash test against the replicated coordinator, with its leader
/// SIGKILLed mid-job: workers crash (exit 1) or stall at random and are
/// restarted while any replica lives; the output still equals `nocrash`.
#[test]
fn crashing_workers_and_a_killed_leader_still_give_the_right_output() {
    let seed: u64 = std::env::var("SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    println!("SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let files = input::generate(dir.path(), seed, 8, 1_000).unwrap();
    let certs = dir.path().join("certs");
    let names: Vec<String> = (1..=3).map(|i| format!("c{i}")).collect();
    mapreduce::net::write_certs(&certs, &names).unwrap();
    let replicas: Vec<CoordinatorAddress> = names
        .iter()
        .map(|name| CoordinatorAddress {
            name: name.clone(),
            addr: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        })
        .collect();
    let list = replicas
        .iter()
        .map(|r| format!("{}={}", r.name, r.addr))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Processes(
        (1..=3)
            .map(|id| {
                Command::new(BIN)
                    .arg("replica")
                    .arg(format!("--id={id}"))
                    .arg(format!("--replicas={list}"))
                    .arg("--data-dir")
                    .arg(dir.path().join(format!("raft-{id}")))
                    .arg("--certs")
                    .arg(&certs)
                    .arg("--dir")
                    .arg(dir.path())
                    .args(["--app=crash", "--task-timeout-ms=1000", "--linger-ms=1500"])
                    .args(&files)
                    .spawn()
                    .unwrap()
            })
            .collect(),
    );
    let flags = [
        format!("--seed={seed}"),
        "--crash-stall-max-ms=1000".to_string(),
        "--poll-ms=50".to_string(),
    ];
    let started = Instant::now();
    let mut workers: Vec<Child> = Vec::new();
    let mut crashes = 0;
    let mut killed: Option<usize> = None;
    let mut last_probe = Instant::now();
    // While any replica is alive (the lab: while the coordinator's socket exists).
    while procs.0.iter_mut().any(|c| matches!(c.try_wait(), Ok(None))) {
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
            workers.push(
                Command::new(BIN)
                    .arg("worker")
                    .arg("--app=crash")
                    .arg("--dir")
                    .arg(dir.path())
                    .arg("--certs")
                    .arg(&certs)
                    .arg(format!("--coordinator={list}"))
                    .args(&flags)
                    .spawn()
                    .unwrap(),
            );
        }
        if killed.is_none() && last_probe.elapsed() > Duration::from_millis(200) {
            last_probe = Instant::now();
            if let Some((i, progress)) = leader(&certs, &replicas, None) {
                if progress.maps_done + progress.reduces_done >= 2 && !progress.done() {
                    procs.0[i].kill().unwrap();
                    procs.0[i].wait().unwrap();
                    println!("killed leader {}: {progress:?}", replicas[i].name);
                    killed = Some(i);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    procs.0.extend(workers);
    println!("worker crashes: {crashes}");
    assert!(killed.is_some(), "the leader was never killed mid-job");
    assert!(crashes > 0, "the crash app crashed workers");
    let application = app::by_name("nocrash", &AppOptions::default()).unwrap();
    let out = dir.path().join("mr-correct.txt");
    run_sequential(
        application.as_ref(),
        &app::local_context(dir.path()),
        &files,
        &out,
    )
    .unwrap();
    let mut expected: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    expected.sort();
    assert_eq!(
        sorted_output_lines(dir.path(), "mr-out-").unwrap(),
        expected
    );
}
