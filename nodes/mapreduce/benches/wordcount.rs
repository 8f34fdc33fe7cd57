//! Word count over generated text: sequential vs 1 and 2 worker processes,
//! single vs 3-replica coordinator. Speed, not correctness (each run's
//! output is still compared with the sequential one). Not run by
//! `cargo test`; run with `cargo bench -p mapreduce --bench wordcount`.
//!
//! Setup via env: MR_BENCH_MB (total input, default 100), MR_BENCH_FILES
//! (default 8), SEED (default 1). Prints the setup first, then one line per
//! configuration with wall time.

#![allow(clippy::unwrap_used)] // a benchmark whose setup fails should stop loudly

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const BIN: &str = env!("CARGO_BIN_EXE_mapreduce");

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn timed(dir: &Path, args: &[String]) -> f64 {
    let started = Instant::now();
    let status = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "mapreduce {args:?} failed");
    started.elapsed().as_secs_f64()
}

fn sorted_lines(dir: &Path, prefix: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().starts_with(prefix) {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            lines.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
        }
    }
    lines.sort();
    lines
}

/// The 1-minute load average: on a shared machine other tenants' work shows here, and a
/// worker that gets half a core cannot show a speed-up.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn main() {
    let megabytes = env_u64("MR_BENCH_MB", 100);
    let files = env_u64("MR_BENCH_FILES", 8);
    let seed = env_u64("SEED", 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let per_file = megabytes * 1_000_000 / files;
    println!(
        "SEED={seed} setup: wc over {megabytes} MB of generated text in {files} files, n_reduce=10, {} cores, release build",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0)
    );
    let listed = Command::new(BIN)
        .args([
            "gen-input",
            &format!("--seed={seed}"),
            &format!("--files={files}"),
            &format!("--bytes-per-file={per_file}"),
        ])
        .current_dir(path)
        .output()
        .unwrap();
    let names: Vec<String> = String::from_utf8(listed.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();

    let mut args = vec!["sequential".to_string(), "--app=wc".into()];
    args.extend(names.iter().cloned());
    let load = load_average();
    let sequential_s = timed(path, &args);
    println!("sequential                          {sequential_s:8.3} s  load before {load}");
    let mut expected: Vec<String> = std::fs::read_to_string(path.join("mr-correct.txt"))
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    expected.sort();

    for (workers, replicas) in [(1, 0), (2, 0), (2, 3)] {
        for entry in std::fs::read_dir(path).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("mr-") && name != "mr-correct.txt" && entry.path().is_file() {
                std::fs::remove_file(entry.path()).unwrap();
            }
        }
        let mut args = vec![
            "run".to_string(),
            "--app=wc".into(),
            "--quiet".into(),
            format!("--workers={workers}"),
            format!("--replicas={replicas}"),
        ];
        args.extend(names.iter().cloned());
        let load = load_average();
        // The job's time as `run` reports it: workers started to all workers
        // exited (excludes certificate generation and the replicas' linger).
        let output = Command::new(BIN)
            .args(&args)
            .current_dir(path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let stderr = String::from_utf8_lossy(&output.stderr);
        let seconds: f64 = stderr
            .lines()
            .find_map(|l| l.strip_prefix("job done: "))
            .and_then(|l| l.rsplit(", ").next())
            .and_then(|t| t.trim_end_matches(" s").parse().ok())
            .unwrap();
        assert_eq!(
            sorted_lines(path, "mr-out-"),
            expected,
            "output differs from sequential"
        );
        println!(
            "{workers} worker(s), {} coordinator {seconds:8.3} s  ({:.2}x sequential)  load before {load}",
            if replicas == 0 {
                "single    ".to_string()
            } else {
                format!("{replicas} replicas")
            },
            seconds / sequential_s
        );
        // Where each worker's time went (its own stats line, via `run`): CPU near 100% of
        // wall means compute-bound; far below means it waited (for a core, the disk, tasks).
        for line in stderr.lines().filter(|l| l.starts_with("worker ")) {
            println!("    {line}");
        }
    }
}
