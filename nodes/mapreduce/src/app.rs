//! Applications: the user's map and reduce functions behind a small trait.
//!
//! Pure side of the I/O line except for the lab's test applications, which on
//! purpose look at the file system (parallelism probes), sleep (stalls) or
//! ask their worker to die (crash).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One intermediate pair emitted by a map function.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

impl KeyValue {
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// What a worker offers the application while it runs a task.
#[derive(Debug, Clone)]
pub struct AppContext {
    /// The job's directory (intermediate and output files live here); the
    /// timing applications leave marker files in it.
    pub work_dir: PathBuf,
    /// Who runs the task: the process id for worker processes.
    pub worker_id: u64,
    /// Whether `worker_id` names processes, so a marker file left by a dead
    /// worker can be told from a live one (the lab's `kill(pid, 0)`).
    pub ids_are_pids: bool,
}

/// An application's way of failing a task on purpose (the lab's crash app).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppFault {
    /// The worker must die now without reporting anything (`os.Exit(1)`).
    #[error("the application asked the worker to exit")]
    Exit,
}

/// A MapReduce application. Implementations must be deterministic in their
/// output for the comparisons with the sequential run to mean anything
/// (the timing apps are the lab's exception: their output is the probe).
pub trait Application: Send + Sync {
    /// The name used on the command line (`wc`, `indexer`, ...).
    fn name(&self) -> &'static str;
    fn map(
        &self,
        context: &AppContext,
        filename: &str,
        contents: &str,
    ) -> Result<Vec<KeyValue>, AppFault>;
    fn reduce(
        &self,
        context: &AppContext,
        key: &str,
        values: &[String],
    ) -> Result<String, AppFault>;
}

/// Names accepted by [`by_name`].
pub const APP_NAMES: &[&str] = &["wc", "indexer", "mtiming", "rtiming", "crash", "nocrash"];

/// Options for the applications that take any.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Seed of the crash application's random choices (mixed with the worker id).
    pub seed: u64,
    /// Longest stall of the crash application (the lab: 10 s, its task timeout).
    pub crash_stall_max: Duration,
    /// How long a timing application's task sleeps (the lab: 1 s).
    pub timing_sleep: Duration,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            seed: 0,
            crash_stall_max: Duration::from_secs(10),
            timing_sleep: Duration::from_secs(1),
        }
    }
}

/// Builds an application by its command-line name.
pub fn by_name(name: &str, options: &AppOptions) -> Option<Box<dyn Application>> {
    Some(match name {
        "wc" => Box::new(WordCount),
        "indexer" => Box::new(InvertedIndex),
        "mtiming" => Box::new(MapTiming {
            sleep: options.timing_sleep,
        }),
        "rtiming" => Box::new(ReduceTiming {
            sleep: options.timing_sleep,
        }),
        "crash" => Box::new(Crash::new(options.seed, options.crash_stall_max)),
        "nocrash" => Box::new(NoCrash),
        _ => return None,
    })
}

/// Words are maximal runs of letters (the lab's `!unicode.IsLetter` split).
pub fn words(contents: &str) -> impl Iterator<Item = &str> {
    contents
        .split(|c: char| !c.is_alphabetic())
        .filter(|word| !word.is_empty())
}

/// Word count: `word count` per distinct word.
#[derive(Debug, Clone, Copy)]
pub struct WordCount;

impl Application for WordCount {
    fn name(&self) -> &'static str {
        "wc"
    }
    fn map(&self, _: &AppContext, _: &str, contents: &str) -> Result<Vec<KeyValue>, AppFault> {
        Ok(words(contents)
            .map(|word| KeyValue::new(word, "1"))
            .collect())
    }
    fn reduce(&self, _: &AppContext, _: &str, values: &[String]) -> Result<String, AppFault> {
        Ok(values.len().to_string())
    }
}

/// Inverted index: `word n file1,file2,...` (files sorted).
#[derive(Debug, Clone, Copy)]
pub struct InvertedIndex;

impl Application for InvertedIndex {
    fn name(&self) -> &'static str {
        "indexer"
    }
    fn map(
        &self,
        _: &AppContext,
        filename: &str,
        contents: &str,
    ) -> Result<Vec<KeyValue>, AppFault> {
        let mut distinct: Vec<&str> = words(contents).collect();
        distinct.sort_unstable();
        distinct.dedup();
        Ok(distinct
            .into_iter()
            .map(|word| KeyValue::new(word, filename))
            .collect())
    }
    fn reduce(&self, _: &AppContext, _: &str, values: &[String]) -> Result<String, AppFault> {
        let mut files = values.to_vec();
        files.sort();
        Ok(format!("{} {}", files.len(), files.join(",")))
    }
}

/// Counts workers in `phase` right now: each leaves `mr-worker-<phase>-<id>`
/// in the job directory while it sleeps; markers of dead processes are
/// ignored. This is the lab's `nparallel`.
fn parallel_workers(context: &AppContext, phase: &str, sleep: Duration) -> usize {
    let prefix = format!("mr-worker-{phase}-");
    let marker = context
        .work_dir
        .join(format!("{prefix}{}", context.worker_id));
    // A probe that cannot write its marker only under-counts; the test then fails visibly.
    let _ = std::fs::write(&marker, b"x");
    let live = std::fs::read_dir(&context.work_dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    name.strip_prefix(&prefix)?.parse::<u64>().ok()
                })
                .filter(|id| !context.ids_are_pids || process_alive(*id))
                .count()
        })
        .unwrap_or(0);
    std::thread::sleep(sleep);
    let _ = std::fs::remove_file(&marker);
    live
}

fn process_alive(pid: u64) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn seconds_since_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn sorted_joined(values: &[String]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.join(" ")
}

/// The lab's `mtiming`: every map task reports when it ran and how many map
/// tasks ran beside it (`times-<id>`, `parallel-<id>`).
#[derive(Debug, Clone)]
pub struct MapTiming {
    pub sleep: Duration,
}

impl Application for MapTiming {
    fn name(&self) -> &'static str {
        "mtiming"
    }
    fn map(&self, context: &AppContext, _: &str, _: &str) -> Result<Vec<KeyValue>, AppFault> {
        let started = seconds_since_epoch();
        let parallel = parallel_workers(context, "map", self.sleep);
        let id = context.worker_id;
        Ok(vec![
            KeyValue::new(format!("times-{id}"), format!("{started:.1}")),
            KeyValue::new(format!("parallel-{id}"), parallel.to_string()),
        ])
    }
    fn reduce(&self, _: &AppContext, _: &str, values: &[String]) -> Result<String, AppFault> {
        Ok(sorted_joined(values))
    }
}

/// The lab's `rtiming`: keys `a`..`j`; each reduce reports how many reduce
/// tasks ran beside it.
#[derive(Debug, Clone)]
pub struct ReduceTiming {
    pub sleep: Duration,
}

impl Application for ReduceTiming {
    fn name(&self) -> &'static str {
        "rtiming"
    }
    fn map(&self, _: &AppContext, _: &str, _: &str) -> Result<Vec<KeyValue>, AppFault> {
        Ok(('a'..='j').map(|c| KeyValue::new(c, "1")).collect())
    }
    fn reduce(&self, context: &AppContext, _: &str, _: &[String]) -> Result<String, AppFault> {
        Ok(parallel_workers(context, "reduce", self.sleep).to_string())
    }
}

fn crash_pairs(filename: &str, contents: &str) -> Vec<KeyValue> {
    vec![
        KeyValue::new("a", filename),
        KeyValue::new("b", filename.len().to_string()),
        KeyValue::new("c", contents.len().to_string()),
        KeyValue::new("d", "xyzzy"),
    ]
}

/// The lab's `crash`: before every map and reduce, exit with probability
/// 1/3, stall up to `stall_max` with probability 1/3. Its output otherwise
/// equals [`NoCrash`]'s.
#[derive(Debug)]
pub struct Crash {
    seed: u64,
    stall_max: Duration,
    rng: Mutex<Option<ChaCha8Rng>>,
}

impl Crash {
    pub fn new(seed: u64, stall_max: Duration) -> Self {
        Crash {
            seed,
            stall_max,
            rng: Mutex::new(None),
        }
    }

    fn maybe_crash(&self, context: &AppContext) -> Result<(), AppFault> {
        let (roll, stall_ms) = {
            let mut guard = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            // One stream per worker: seed and worker id replay the same choices.
            let rng = guard.get_or_insert_with(|| {
                ChaCha8Rng::seed_from_u64(self.seed ^ context.worker_id.rotate_left(32))
            });
            let max_ms = u64::try_from(self.stall_max.as_millis()).unwrap_or(u64::MAX);
            (rng.gen_range(0..1000u32), rng.gen_range(0..=max_ms))
        };
        if roll < 330 {
            Err(AppFault::Exit)
        } else {
            if roll < 660 {
                std::thread::sleep(Duration::from_millis(stall_ms));
            }
            Ok(())
        }
    }
}

impl Application for Crash {
    fn name(&self) -> &'static str {
        "crash"
    }
    fn map(
        &self,
        context: &AppContext,
        filename: &str,
        contents: &str,
    ) -> Result<Vec<KeyValue>, AppFault> {
        self.maybe_crash(context)?;
        Ok(crash_pairs(filename, contents))
    }
    fn reduce(&self, context: &AppContext, _: &str, values: &[String]) -> Result<String, AppFault> {
        self.maybe_crash(context)?;
        Ok(sorted_joined(values))
    }
}

/// [`Crash`] without the crashing: the reference output of the crash test.
#[derive(Debug, Clone, Copy)]
pub struct NoCrash;

impl Application for NoCrash {
    fn name(&self) -> &'static str {
        "nocrash"
    }
    fn map(
        &self,
        _: &AppContext,
        filename: &str,
        contents: &str,
    ) -> Result<Vec<KeyValue>, AppFault> {
        Ok(crash_pairs(filename, contents))
    }
    fn reduce(&self, _: &AppContext, _: &str, values: &[String]) -> Result<String, AppFault> {
        Ok(sorted_joined(values))
    }
}

/// A context for code that runs an application outside a worker (the
/// sequential run, tests).
pub fn local_context(work_dir: &Path) -> AppContext {
    AppContext {
        work_dir: work_dir.to_path_buf(),
        worker_id: u64::from(std::process::id()),
        ids_are_pids: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> AppContext {
        local_context(Path::new("."))
    }

    #[test]
    fn words_split_on_non_letters() {
        let found: Vec<&str> = words("Hello, world! it's 42x--y").collect();
        assert_eq!(found, ["Hello", "world", "it", "s", "x", "y"]);
    }

    #[test]
    fn word_count_counts_values() {
        let pairs = WordCount.map(&ctx(), "f", "a b a").unwrap();
        assert_eq!(pairs.len(), 3);
        let values = vec!["1".to_string(); 3];
        assert_eq!(WordCount.reduce(&ctx(), "a", &values).unwrap(), "3");
    }

    #[test]
    fn indexer_emits_each_word_once_per_file_and_sorts_files() {
        let pairs = InvertedIndex.map(&ctx(), "f1", "b a b").unwrap();
        assert_eq!(
            pairs,
            vec![KeyValue::new("a", "f1"), KeyValue::new("b", "f1")]
        );
        let values = vec!["f2".to_string(), "f1".to_string()];
        assert_eq!(
            InvertedIndex.reduce(&ctx(), "a", &values).unwrap(),
            "2 f1,f2"
        );
    }

    #[test]
    fn crash_app_exits_about_a_third_of_the_time_and_replays_by_seed() {
        let run = |seed| {
            let app = Crash::new(seed, Duration::ZERO);
            (0..300)
                .map(|_| app.map(&ctx(), "f", "x").is_err())
                .collect::<Vec<bool>>()
        };
        let first = run(7);
        assert_eq!(first, run(7));
        let exits = first.iter().filter(|e| **e).count();
        assert!((60..140).contains(&exits), "exits={exits} of 300");
    }

    #[test]
    fn every_name_builds_its_app() {
        for name in APP_NAMES {
            let app = by_name(name, &AppOptions::default()).unwrap();
            assert_eq!(app.name(), *name);
        }
        assert!(by_name("nope", &AppOptions::default()).is_none());
    }
}
