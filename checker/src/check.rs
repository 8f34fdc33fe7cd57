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

/// When the graph pre-pass ([`crate::graph`]) runs. It only ever proves
/// violations (a cycle or an impossible read, with an explanation); the
/// search alone decides "linearizable". Models it does not support, and
/// histories whose written values are not unique, skip it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphMode {
    /// Never.
    Off,
    /// On a partition whose search runs long (more than
    /// [`GRAPH_AFTER_STEPS`] steps, or eight per operation): a violation it
    /// finds ends the search at once. (For violations the search finds by
    /// itself, [`explain`] adds the graph's explanation afterwards.)
    Auto,
    /// Before every partition's search; a violation skips the search.
    First,
}

/// Search steps on one partition before [`GraphMode::Auto`] asks the graph.
pub const GRAPH_AFTER_STEPS: u64 = 1 << 14;

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
    /// then report `Unknown`/cancelled), as porcupine does. On by default:
    /// an illegal partition can be very expensive to exhaust (porcupine's
    /// kv c50-bad takes minutes and gigabytes), and one violation decides the
    /// verdict. Turn off to get every failing key explained.
    pub stop_on_first_violation: bool,
    /// When the graph pre-pass runs (only through [`check_history`], which
    /// knows the model by name).
    pub graph: GraphMode,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            timeout: None,
            max_memory_bytes: 2 << 30,
            threads: 0,
            stop_on_first_violation: true,
            graph: GraphMode::Auto,
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
    /// pending ones that were tried and illegal). When the graph pre-pass
    /// decided (`decided_by_graph`), the operations its proof involves.
    pub unlinearizable: Vec<usize>,
    /// The model state after `longest_prefix`, described.
    pub state_after_prefix: Option<String>,
    /// Memoisation cache entries created.
    pub cache_entries: usize,
    /// Bytes the cache and state table held at the end.
    pub memory_bytes: usize,
    /// Search time.
    pub elapsed: Duration,
    /// The graph pre-pass's proof of a violation in this partition, if it found one.
    pub proof: Option<GraphViolation>,
    /// Whether the verdict came from the graph pre-pass (the search was
    /// skipped or stopped early) rather than from the search.
    pub decided_by_graph: bool,
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

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use crate::search::FxHasher;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::graph::{GraphVerdict, GraphViolation};
use crate::history::{History, Status};
use crate::model::{Model, ModelError, ModelKind};
use crate::search::{search, search_probed, Budget, PreparedOp, Probe, SearchOutcome};

/// The outcome of a partition the graph pre-pass settled before any search.
fn proven_outcome() -> SearchOutcome {
    SearchOutcome {
        verdict: Verdict::NotLinearizable,
        unknown_reason: None,
        longest_prefix: Vec::new(),
        unlinearizable: Vec::new(),
        state_after_prefix: None,
        cache_entries: 0,
        memory_bytes: 0,
    }
}

/// Checks `history` against the model named by `kind`.
pub fn check_history(
    history: &History,
    kind: &ModelKind,
    options: &Options,
) -> Result<CheckResult, ModelError> {
    use crate::model::{kv, multi_register, mutex, register};
    let prove = |key: Option<&str>| crate::graph::check_partition(history, kind, key);
    let prover: Option<&Prover> = if crate::graph::supports(kind) && options.graph != GraphMode::Off
    {
        Some(&prove)
    } else {
        None
    };
    match kind {
        ModelKind::Kv => check_inner(history, &kv::Kv, options, prover),
        ModelKind::KvUnpartitioned => check_inner(history, &kv::KvUnpartitioned, options, prover),
        ModelKind::Register { initial } => check_inner(
            history,
            &register::Register::register(initial),
            options,
            prover,
        ),
        ModelKind::CasRegister { initial } => check_inner(
            history,
            &register::Register::cas_register(initial),
            options,
            prover,
        ),
        ModelKind::Etcd => check_with(history, &register::Register::etcd(), options),
        ModelKind::MultiRegister { initial } => check_with(
            history,
            &multi_register::MultiRegister::new(initial),
            options,
        ),
        ModelKind::Mutex => check_with(history, &mutex::Mutex, options),
    }
}

/// Adds the graph pre-pass's explanation to every non-linearizable
/// partition of `result` that has none yet (the search found the violation
/// by itself). A no-op for models the pre-pass does not support and for
/// histories without unique values. Kept out of [`check_history`] so that a
/// check costs only what its verdict needs; the CLI calls it for reports.
pub fn explain(history: &History, kind: &ModelKind, result: &mut CheckResult) {
    if !crate::graph::supports(kind) {
        return;
    }
    for p in &mut result.partition_results {
        if p.verdict == Verdict::NotLinearizable && p.proof.is_none() {
            if let GraphVerdict::Violation(v) =
                crate::graph::check_partition(history, kind, p.key.as_deref())
            {
                p.proof = Some(v);
            }
        }
    }
}

/// The graph pre-pass of one partition (by key).
type Prover<'a> = dyn Fn(Option<&str>) -> GraphVerdict + Sync + 'a;

type Partition<'h, O> = (Option<&'h str>, Vec<PreparedOp<O>>);

/// Prepares every operation and groups them by partition key (in key order).
fn partition<'h, M: Model>(
    history: &'h History,
    model: &M,
) -> Result<Vec<Partition<'h, M::Op>>, ModelError> {
    let mut index: HashMap<Option<&'h str>, u32, BuildHasherDefault<FxHasher>> = HashMap::default();
    let mut groups: Vec<Partition<'h, M::Op>> = Vec::new();
    // First the group of every operation (consecutive operations often
    // share a key, always with one object: skip the hash lookup then), so
    // each group's vector is allocated once at its final size.
    let mut last: Option<(Option<&'h str>, u32)> = None;
    let mut group_of: Vec<u32> = Vec::with_capacity(history.operations.len());
    let mut sizes: Vec<usize> = Vec::new();
    for op in &history.operations {
        let key = model.partition_key(op);
        let group = match last {
            Some((k, g)) if k == key => g,
            _ => {
                let g = *index.entry(key).or_insert_with(|| {
                    groups.push((key, Vec::new()));
                    sizes.push(0);
                    (groups.len() - 1) as u32
                });
                last = Some((key, g));
                g
            }
        };
        sizes[group as usize] += 1;
        group_of.push(group);
    }
    for (group, &size) in groups.iter_mut().zip(&sizes) {
        group.1.reserve_exact(size);
    }
    for (op, &group) in history.operations.iter().zip(&group_of) {
        if let Some(prepared) = model.prepare(op)? {
            let ret = match op.status {
                Status::Info => None,
                _ => op.return_index,
            };
            groups[group as usize].1.push(PreparedOp {
                id: op.id,
                op: prepared,
                call: op.invoke_index,
                ret,
            });
        }
    }
    if groups.len() > 1 {
        groups.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    Ok(groups)
}

/// Below this many operations, partitions are checked on the calling thread:
/// spawning threads costs more than such a check.
const PARALLEL_OPERATIONS_MIN: usize = 1000;

/// Cores to use; asked once (reading the cgroup quota costs tens of microseconds,
/// more than checking a small history).
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Checks `history` against `model`: one search per partition, partitions
/// spread over `options.threads` threads, largest first.
///
/// The graph pre-pass needs the model by name: use [`check_history`] for it.
pub fn check_with<M: Model>(
    history: &History,
    model: &M,
    options: &Options,
) -> Result<CheckResult, ModelError> {
    check_inner(history, model, options, None)
}

fn check_inner<M: Model>(
    history: &History,
    model: &M,
    options: &Options,
    prover: Option<&Prover<'_>>,
) -> Result<CheckResult, ModelError> {
    let started = Instant::now();
    let groups = partition(history, model)?;
    let budget = Budget::new(
        options.timeout.map(|t| started + t),
        options.max_memory_bytes,
    );
    let total_ops: usize = groups.iter().map(|(_, ops)| ops.len()).sum();
    let threads = if groups.len() <= 1 || total_ops < PARALLEL_OPERATIONS_MIN {
        1
    } else if options.threads == 0 {
        cores()
    } else {
        options.threads
    }
    .clamp(1, groups.len().max(1));
    let mut work: Vec<usize> = (0..groups.len()).collect();
    if work.len() > 1 {
        work.sort_by_key(|&g| std::cmp::Reverse(groups[g].1.len()));
    }
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<PartitionResult>>> = Mutex::new(vec![None; groups.len()]);

    let worker = || loop {
        let w = next.fetch_add(1, Ordering::SeqCst);
        let Some(&g) = work.get(w) else { break };
        let (key, ops) = &groups[g];
        let partition_started = Instant::now();
        let mut proof: Option<GraphViolation> = None;
        let mut decided_by_graph = false;
        let outcome = if budget.stop.load(Ordering::SeqCst) {
            None
        } else {
            match (prover, options.graph) {
                (Some(prove), GraphMode::First) => match prove(*key) {
                    GraphVerdict::Violation(v) => {
                        decided_by_graph = true;
                        proof = Some(v);
                        Some(proven_outcome())
                    }
                    _ => Some(search(model, ops, &budget)),
                },
                (Some(prove), GraphMode::Auto) => {
                    let mut run = || match prove(*key) {
                        GraphVerdict::Violation(v) => {
                            proof = Some(v);
                            true
                        }
                        _ => false,
                    };
                    let after_steps = GRAPH_AFTER_STEPS.max(8 * ops.len() as u64);
                    let probe = Probe {
                        after_steps,
                        run: &mut run,
                    };
                    let o = search_probed(model, ops, &budget, Some(probe));
                    decided_by_graph = proof.is_some();
                    Some(o)
                }
                _ => Some(search(model, ops, &budget)),
            }
        };
        let result = match outcome {
            Some(mut o) => {
                // Decided by the graph: the operations its proof involves.
                if decided_by_graph {
                    if let Some(p) = &proof {
                        o.unlinearizable = p.operations.clone();
                    }
                }
                if o.verdict == Verdict::NotLinearizable && options.stop_on_first_violation {
                    budget.stop(UnknownReason::Cancelled);
                }
                PartitionResult {
                    key: key.map(str::to_string),
                    verdict: o.verdict,
                    unknown_reason: o.unknown_reason,
                    operations: ops.len(),
                    longest_prefix: o.longest_prefix,
                    unlinearizable: o.unlinearizable,
                    state_after_prefix: o.state_after_prefix,
                    cache_entries: o.cache_entries,
                    memory_bytes: o.memory_bytes,
                    elapsed: partition_started.elapsed(),
                    proof,
                    decided_by_graph,
                }
            }
            None => PartitionResult {
                key: key.map(str::to_string),
                verdict: Verdict::Unknown,
                unknown_reason: Some(budget.stop_reason().unwrap_or(UnknownReason::Cancelled)),
                operations: ops.len(),
                longest_prefix: Vec::new(),
                unlinearizable: Vec::new(),
                state_after_prefix: None,
                cache_entries: 0,
                memory_bytes: 0,
                elapsed: partition_started.elapsed(),
                proof: None,
                decided_by_graph: false,
            },
        };
        if let Ok(mut slots) = results.lock() {
            slots[g] = Some(result);
        }
    };
    if threads <= 1 {
        worker();
    } else {
        // The calling thread is one of the workers: it is already running,
        // while a new thread may wait for a core on a loaded machine.
        std::thread::scope(|scope| {
            for _ in 1..threads {
                scope.spawn(worker);
            }
            worker();
        });
    }
    let partition_results: Vec<PartitionResult> = results
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .into_iter()
        .flatten()
        .collect();
    Ok(combine(
        history,
        model.name(),
        partition_results,
        &budget,
        started,
    ))
}

fn combine(
    history: &History,
    model: &str,
    partition_results: Vec<PartitionResult>,
    budget: &Budget,
    started: Instant,
) -> CheckResult {
    let any = |v: Verdict| partition_results.iter().any(|p| p.verdict == v);
    let verdict = if any(Verdict::NotLinearizable) {
        Verdict::NotLinearizable
    } else if any(Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Linearizable
    };
    let unknown_reason = (verdict == Verdict::Unknown).then(|| {
        partition_results
            .iter()
            .filter_map(|p| p.unknown_reason)
            .find(|r| *r != UnknownReason::Cancelled)
            .unwrap_or(UnknownReason::Cancelled)
    });
    CheckResult {
        verdict,
        unknown_reason,
        model: model.to_string(),
        operations: history.operations.len(),
        partitions: partition_results.len(),
        cache_entries: partition_results.iter().map(|p| p.cache_entries).sum(),
        memory_bytes: budget.memory_peak_bytes.load(Ordering::Relaxed).max(
            partition_results
                .iter()
                .map(|p| p.memory_bytes)
                .max()
                .unwrap_or(0),
        ),
        partition_results,
        elapsed: started.elapsed(),
    }
}
