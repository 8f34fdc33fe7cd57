//! Workers: run map and reduce tasks against files in the job directory.
//!
//! I/O side: reads inputs, writes intermediate files `mr-<map>-<reduce>` and
//! outputs `mr-out-<reduce>`, always to a temporary file renamed into place,
//! so a worker that crashes or stalls never leaves a partial file visible
//! under a final name. The coordinator is reached through
//! [`CoordinatorLink`], so the same loop runs in-process (tests) and over
//! QUIC (worker processes).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::app::{AppContext, AppFault, Application, KeyValue};
use crate::coordinator::{Reply, Task, TaskKind};

/// Bound on one intermediate record's key or value.
pub const MAX_RECORD_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: corrupt intermediate file: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    #[error("map task {index} came without an input file")]
    NoInput { index: u32 },
    #[error("coordinator: {0}")]
    Link(String),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> WorkerError + '_ {
    move |source| WorkerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The lab's partition function: FNV-1a 32 of the key, masked positive.
pub fn partition(key: &str, n_reduce: u32) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    (hash & 0x7fff_ffff) % n_reduce.max(1)
}

pub fn intermediate_name(map: u32, reduce: u32) -> String {
    format!("mr-{map}-{reduce}")
}

pub fn output_name(reduce: u32) -> String {
    format!("mr-out-{reduce}")
}

/// Writes `path` by a temporary file in the same directory, flushed and
/// renamed: readers see either no file or the whole file.
pub fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> std::io::Result<()>,
) -> Result<(), WorkerError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temp = dir.join(format!(".tmp-{name}-{}-{:x}", std::process::id(), unique()));
    let result = (|| {
        let mut out = BufWriter::with_capacity(1 << 16, File::create(&temp)?);
        write(&mut out)?;
        out.into_inner().map_err(|e| e.into_error())?.sync_data()?;
        fs::rename(&temp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(io_error(path))
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

fn write_record(out: &mut impl Write, pair: &KeyValue) -> std::io::Result<()> {
    for field in [&pair.key, &pair.value] {
        out.write_all(&(field.len() as u32).to_le_bytes())?;
        out.write_all(field.as_bytes())?;
    }
    Ok(())
}

/// Reads an intermediate file: records of `u32 length + bytes` for key then value.
pub fn read_intermediate(path: &Path, into: &mut Vec<KeyValue>) -> Result<(), WorkerError> {
    let file = File::open(path).map_err(io_error(path))?;
    let mut bytes = Vec::new();
    BufReader::new(file)
        .read_to_end(&mut bytes)
        .map_err(io_error(path))?;
    let corrupt = |reason: &str| WorkerError::Corrupt {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let mut at = 0usize;
    let field = |at: &mut usize| -> Result<String, WorkerError> {
        let header = bytes
            .get(*at..*at + 4)
            .ok_or_else(|| corrupt("truncated length"))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_RECORD_BYTES {
            return Err(corrupt("record too large"));
        }
        let body = bytes
            .get(*at + 4..*at + 4 + len)
            .ok_or_else(|| corrupt("truncated record"))?;
        *at += 4 + len;
        String::from_utf8(body.to_vec()).map_err(|_| corrupt("not UTF-8"))
    };
    while at < bytes.len() {
        let key = field(&mut at)?;
        let value = field(&mut at)?;
        into.push(KeyValue { key, value });
    }
    Ok(())
}

/// Runs one map task: reads the input, partitions the pairs into
/// `n_reduce` intermediate files.
pub fn run_map(
    app: &dyn Application,
    context: &AppContext,
    task: &Task,
) -> Result<Result<(), AppFault>, WorkerError> {
    let file = task
        .file
        .as_deref()
        .ok_or(WorkerError::NoInput { index: task.index })?;
    let input = context.work_dir.join(file);
    if task.n_reduce == 0 {
        return Err(WorkerError::Link(format!(
            "map task {} with n_reduce = 0",
            task.index
        )));
    }
    let contents = fs::read_to_string(&input).map_err(io_error(&input))?;
    let pairs = match app.map(context, file, &contents) {
        Ok(pairs) => pairs,
        Err(fault) => return Ok(Err(fault)),
    };
    let mut buckets: Vec<Vec<&KeyValue>> = vec![Vec::new(); task.n_reduce as usize];
    for pair in &pairs {
        buckets[partition(&pair.key, task.n_reduce) as usize].push(pair);
    }
    for (reduce, bucket) in buckets.iter().enumerate() {
        let path = context
            .work_dir
            .join(intermediate_name(task.index, reduce as u32));
        write_atomically(&path, |out| {
            bucket.iter().try_for_each(|pair| write_record(out, pair))
        })?;
    }
    Ok(Ok(()))
}

/// Runs one reduce task: reads bucket `task.index` of every map output,
/// groups by key in sorted order, writes `mr-out-<index>`.
pub fn run_reduce(
    app: &dyn Application,
    context: &AppContext,
    task: &Task,
) -> Result<Result<(), AppFault>, WorkerError> {
    let mut pairs = Vec::new();
    for map in 0..task.n_map {
        let path = context.work_dir.join(intermediate_name(map, task.index));
        read_intermediate(&path, &mut pairs)?;
    }
    let lines = match reduce_sorted(app, context, pairs) {
        Ok(lines) => lines,
        Err(fault) => return Ok(Err(fault)),
    };
    let path = context.work_dir.join(output_name(task.index));
    write_atomically(&path, |out| {
        lines
            .iter()
            .try_for_each(|(key, value)| writeln!(out, "{key} {value}"))
    })?;
    Ok(Ok(()))
}

/// Groups pairs by key (sorted) and reduces each group.
///
/// Grouping hashes each key once and sorts only the distinct keys: with a
/// `BTreeMap` every one of the millions of pairs paid ~15 key comparisons
/// plus a free of its key, which was half of a word count's CPU time.
pub fn reduce_sorted(
    app: &dyn Application,
    context: &AppContext,
    pairs: Vec<KeyValue>,
) -> Result<Vec<(String, String)>, AppFault> {
    let mut groups: HashMap<String, Vec<String>> = HashMap::new();
    for pair in pairs {
        match groups.get_mut(pair.key.as_str()) {
            Some(values) => values.push(pair.value),
            None => {
                groups.insert(pair.key, vec![pair.value]);
            }
        }
    }
    let mut groups: Vec<(String, Vec<String>)> = groups.into_iter().collect();
    groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    groups
        .into_iter()
        .map(|(key, values)| {
            let output = app.reduce(context, &key, &values)?;
            Ok((key, output))
        })
        .collect()
}

/// How a worker talks to the coordinator. Errors are transient (the worker
/// retries) unless the link gives up entirely.
pub trait CoordinatorLink {
    fn request_task(&mut self, worker: u64) -> Result<Reply, WorkerError>;
    fn complete(&mut self, task: &Task) -> Result<(), WorkerError>;
}

/// Why a worker loop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// The coordinator said the job is done.
    JobDone,
    /// The application asked the worker to die (the crash test).
    Crashed,
}

#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Pause before asking again after `Wait` or `NoJob`.
    pub poll_interval: Duration,
    /// Consecutive link failures after which the worker gives up (the
    /// coordinator is gone; the lab's workers exit when the RPC fails).
    pub max_link_failures: u32,
    /// Sleep before running each task: stretches a job so tests and demos
    /// can act mid-job (kill the coordinator's leader). Zero normally.
    pub task_delay: Duration,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            poll_interval: Duration::from_millis(100),
            max_link_failures: 50,
            task_delay: Duration::ZERO,
        }
    }
}

/// How a worker process's final stats line on stdout begins.
pub const WORKER_STATS_PREFIX: &str = "worker-stats ";

/// Where one worker's time went: what the benchmark and the cluster harness
/// print per worker to tell CPU-bound work from waiting (a worker that asks,
/// hears `Wait` and sleeps is idle, not slow).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WorkerStats {
    pub maps: u32,
    pub reduces: u32,
    /// Wall time inside map tasks (read, map, partition, write).
    pub map_ms: u64,
    /// Wall time inside reduce tasks (read buckets, sort, reduce, write).
    pub reduce_ms: u64,
    /// Wall time in calls to the coordinator.
    pub link_ms: u64,
    /// Wall time sleeping after `Wait`/`NoJob` or a failed call.
    pub idle_ms: u64,
    /// Bytes of input (map) and intermediate files (reduce) read.
    pub read_bytes: u64,
}

fn elapsed_ms(since: std::time::Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// The worker loop: ask for a task, run it, report it; until told to exit.
pub fn run_worker(
    app: &dyn Application,
    context: &AppContext,
    link: &mut dyn CoordinatorLink,
    options: &WorkerOptions,
) -> Result<WorkerExit, WorkerError> {
    run_worker_with_stats(app, context, link, options, &mut WorkerStats::default())
}

/// [`run_worker`], accounting its time in `stats` (filled in even when it
/// returns an error, so a failing worker still says where its time went).
pub fn run_worker_with_stats(
    app: &dyn Application,
    context: &AppContext,
    link: &mut dyn CoordinatorLink,
    options: &WorkerOptions,
    stats: &mut WorkerStats,
) -> Result<WorkerExit, WorkerError> {
    let mut failures = 0u32;
    loop {
        let asked = std::time::Instant::now();
        let answer = link.request_task(context.worker_id);
        stats.link_ms += elapsed_ms(asked);
        let reply = match answer {
            Ok(reply) => {
                failures = 0;
                reply
            }
            Err(error) => {
                failures += 1;
                if failures >= options.max_link_failures {
                    return Err(error);
                }
                std::thread::sleep(options.poll_interval);
                stats.idle_ms += u64::try_from(options.poll_interval.as_millis()).unwrap_or(0);
                continue;
            }
        };
        let task = match reply {
            Reply::Task(task) => task,
            Reply::Exit => return Ok(WorkerExit::JobDone),
            _ => {
                std::thread::sleep(options.poll_interval);
                stats.idle_ms += u64::try_from(options.poll_interval.as_millis()).unwrap_or(0);
                continue;
            }
        };
        if !options.task_delay.is_zero() {
            std::thread::sleep(options.task_delay);
        }
        let started = std::time::Instant::now();
        let outcome = match task.kind {
            TaskKind::Map => {
                let outcome = run_map(app, context, &task)?;
                stats.maps += 1;
                stats.map_ms += elapsed_ms(started);
                stats.read_bytes += task_input_bytes(context, &task);
                outcome
            }
            TaskKind::Reduce => {
                let outcome = run_reduce(app, context, &task)?;
                stats.reduces += 1;
                stats.reduce_ms += elapsed_ms(started);
                stats.read_bytes += task_input_bytes(context, &task);
                outcome
            }
        };
        if outcome.is_err() {
            return Ok(WorkerExit::Crashed);
        }
        // A lost report is harmless: the task times out and runs again.
        let reporting = std::time::Instant::now();
        if link.complete(&task).is_err() {
            tracing::warn!(?task, "could not report a finished task");
        }
        stats.link_ms += elapsed_ms(reporting);
    }
}

/// Bytes a task read: its input file (map) or its bucket of every map
/// output (reduce); files that vanished count as 0.
fn task_input_bytes(context: &AppContext, task: &Task) -> u64 {
    let size = |name: &str| {
        fs::metadata(context.work_dir.join(name))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    match task.kind {
        TaskKind::Map => task.file.as_deref().map_or(0, size),
        TaskKind::Reduce => (0..task.n_map)
            .map(|map| size(&intermediate_name(map, task.index)))
            .sum(),
    }
}

/// Reads every `mr-out-*` file in `dir` and returns its non-empty lines
/// sorted: the lab's `sort mr-out* | grep .`.
pub fn sorted_output_lines(dir: &Path, prefix: &str) -> Result<Vec<String>, WorkerError> {
    let mut lines = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error(dir))? {
        let entry = entry.map_err(io_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with(prefix) {
            continue;
        }
        let path = entry.path();
        let text = fs::read_to_string(&path).map_err(io_error(&path))?;
        lines.extend(text.lines().filter(|l| !l.is_empty()).map(str::to_string));
    }
    lines.sort();
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_is_fnv1a_and_in_range() {
        // FNV-1a 32 of "" is the offset basis.
        assert_eq!(partition("", u32::MAX), 0x811c_9dc5 & 0x7fff_ffff);
        for key in ["a", "bb", "ccc", "hello"] {
            assert!(partition(key, 10) < 10);
        }
    }

    #[test]
    fn intermediate_round_trip_and_truncation_detected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mr-0-0");
        let pairs = vec![KeyValue::new("k", "v"), KeyValue::new("", "two words")];
        write_atomically(&path, |out| {
            pairs.iter().try_for_each(|p| write_record(out, p))
        })
        .unwrap();
        let mut read = Vec::new();
        read_intermediate(&path, &mut read).unwrap();
        assert_eq!(read, pairs);
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[..bytes.len() - 2]).unwrap();
        assert!(matches!(
            read_intermediate(&path, &mut Vec::new()),
            Err(WorkerError::Corrupt { .. })
        ));
    }

    #[test]
    fn atomic_write_leaves_nothing_when_the_writer_fails() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mr-out-0");
        let result = write_atomically(&path, |_| Err(std::io::Error::other("boom")));
        assert!(result.is_err());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no temp file left"
        );
    }
}
