//! Checking a whole history: split into partitions, search each (in
//! parallel), and combine the verdicts.

use std::time::Duration;

/// The answer for a history or a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Some order of the operations, consistent with real time, is legal.
    Linearizable,
    /// No such order exists.
    NotLinearizable,
    /// The budget (time or memory) ran out, or the check was cancelled.
    Unknown,
}

impl Verdict {
    /// `true`, `false` or `"unknown"`, as `--json` prints `valid`.
    pub fn to_json(self) -> serde_json::Value {
        match self {
            Verdict::Linearizable => serde_json::Value::Bool(true),
            Verdict::NotLinearizable => serde_json::Value::Bool(false),
            Verdict::Unknown => serde_json::Value::String("unknown".into()),
        }
    }
}

/// Why a verdict is [`Verdict::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnknownReason {
    /// `Options::timeout` passed.
    Timeout,
    /// The memoisation cache reached `Options::max_memory_bytes`.
    Memory,
    /// Another partition was found not linearizable first and the check stopped early.
    Cancelled,
}

impl UnknownReason {
    /// `timeout`, `memory` or `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownReason::Timeout => "timeout",
            UnknownReason::Memory => "memory",
            UnknownReason::Cancelled => "cancelled",
        }
    }
}

/// Limits and knobs of a check.
#[derive(Clone, Debug)]
pub struct Options {
    /// Wall-clock budget for the whole check; `None` is unlimited.
    pub timeout: Option<Duration>,
    /// Cap on the memoisation caches of all partitions together, in bytes.
    pub max_memory_bytes: usize,
    /// Worker threads; 0 uses the number of cores.
    pub threads: usize,
    /// Stop the other partitions as soon as one is not linearizable (they
    /// then report `Unknown`/cancelled). Faster; turn off to get every
    /// failing key explained.
    pub stop_on_first_violation: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            timeout: None,
            max_memory_bytes: 2 << 30,
            threads: 0,
            stop_on_first_violation: false,
        }
    }
}

/// The result of checking one partition.
#[derive(Clone, Debug)]
pub struct PartitionResult {
    /// The partition's key (`None` for an unpartitioned history).
    pub key: Option<String>,
    /// Its verdict.
    pub verdict: Verdict,
    /// Why it is unknown, if it is.
    pub unknown_reason: Option<UnknownReason>,
    /// Operations in the partition that the search considered (dropped ones excluded).
    pub operations: usize,
    /// The deepest linearization reached, as ids into `History::operations`
    /// in linearization order. For a linearizable partition, a full
    /// linearization (operations left out as "never happened" are absent).
    pub longest_prefix: Vec<usize>,
    /// For a violation: the operations that could not be linearized after
    /// `longest_prefix` (the one whose completion blocked first, then the
    /// pending ones that were tried and illegal).
    pub unlinearizable: Vec<usize>,
    /// The model state after `longest_prefix`, described.
    pub state_after_prefix: Option<String>,
    /// Memoisation cache entries created.
    pub cache_entries: usize,
    /// Bytes the cache and state table held at the end.
    pub memory_bytes: usize,
    /// Search time.
    pub elapsed: Duration,
}

/// The result of checking a history.
#[derive(Clone, Debug)]
pub struct CheckResult {
    /// The combined verdict: not linearizable if any partition is not;
    /// unknown if any is unknown and none is not; else linearizable.
    pub verdict: Verdict,
    /// Why the verdict is unknown, if it is.
    pub unknown_reason: Option<UnknownReason>,
    /// The model's name.
    pub model: String,
    /// Operations in the history (including dropped ones).
    pub operations: usize,
    /// Number of partitions.
    pub partitions: usize,
    /// One result per partition, in key order.
    pub partition_results: Vec<PartitionResult>,
    /// Total memoisation cache entries over all partitions.
    pub cache_entries: usize,
    /// Peak bytes of all caches together (as counted against the cap).
    pub memory_bytes: usize,
    /// Wall-clock time of the check.
    pub elapsed: Duration,
}

impl CheckResult {
    /// The partitions that are not linearizable.
    pub fn violations(&self) -> impl Iterator<Item = &PartitionResult> {
        self.partition_results
            .iter()
            .filter(|p| p.verdict == Verdict::NotLinearizable)
    }
}
