//! Graph pre-pass: a fast search for violations in histories whose written
//! values are unique (pure: no I/O).
//!
//! With unique values, a read names the write it saw, so much of the order is
//! known before any search. In every linearization the operations group into
//! **blocks**, one per state the object passes through: the operation that
//! produced the state (a write, a successful CAS, a put or an append) followed
//! by the reads that saw it. Since a state is never produced twice, each block
//! is a contiguous stretch of the linearization. So:
//!
//! * if an operation of block A completed before an operation of block B was
//!   invoked, *all* of A precedes *all* of B (a real-time edge A → B);
//! * a CAS from `old` to `new`, and an append, start their block right after
//!   the block of the state they changed (a "follows" edge);
//! * the block of the initial state comes first;
//! * an acknowledged append that no read saw was applied after every state
//!   of its epoch (the states since a put) that was read, so if it completed
//!   before an operation of an epoch was invoked, it belongs to an earlier
//!   epoch and precedes that epoch's put (a lost append).
//!
//! A cycle among blocks, a read that finished before its write started, a read
//! of a value nobody wrote, two CAS operations that both replaced the same
//! value, or two reads that saw an append-only value grow in different orders,
//! are each a proof that the history is not linearizable; the pre-pass
//! reports the first one it meets with the operations involved. Every edge
//! holds in every linearization, so a reported violation is always real. The
//! converse holds for read/write registers, info operations included (no
//! cycle, no bad read means linearizable; `tests/property.rs` checks this
//! against the brute-force oracle), but not with CAS or appends, so a clean
//! pre-pass answers only [`GraphVerdict::NoViolationFound`]: the search stays
//! the judge of "linearizable".
//!
//! Real-time edges are not all pairs (that is O(n²)): a sweep over invoke and
//! return events keeps a *frontier*, the completed operations not yet followed
//! by a completed operation; a newly invoked operation is linked from the
//! frontier only. The frontier is an antichain of overlapping intervals, so
//! at most one operation per process: O(n · processes) edges at worst, about
//! O(n) for keyed workloads.

use std::fmt::Write as _;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;

use crate::history::{History, Operation, Status};
use crate::model::{describe_operation, ModelKind};
use crate::value::Value;

/// Limit on real-time edges in one partition's graph; beyond it the
/// partition is skipped (the search still checks it) rather than using
/// unbounded memory.
pub const MAX_EDGES_PER_PARTITION: usize = 20_000_000;

/// Epochs (states after a put) an unseen append is linked to: the ones
/// invoked soonest after it returned. A subset of the true constraints, so
/// still sound, and it bounds the edges when many appends go unread.
const UNSEEN_APPEND_LINKS_MAX: usize = 8;

/// Maps and sets keyed by small integers and short strings: a fast
/// multiply-rotate hash (no DoS concern in a checker) instead of SipHash,
/// which dominated the pre-pass's profile.
type HashMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FastHasher>>;
type HashSet<K> = std::collections::HashSet<K, BuildHasherDefault<FastHasher>>;

/// FxHash-style hasher.
#[derive(Default, Clone, Copy, Debug)]
struct FastHasher {
    hash: u64,
}

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let mut tail = [0u8; 8];
        let rest = chunks.remainder();
        tail[..rest.len()].copy_from_slice(rest);
        self.add(u64::from_le_bytes(tail) ^ ((rest.len() as u64) << 59));
    }
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        self.hash
    }
}

/// What the pre-pass found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GraphVerdict {
    /// The history is certainly not linearizable.
    Violation(GraphViolation),
    /// Every partition was analysed and none has a violation the graph can
    /// see. This is not a proof of linearizability.
    NoViolationFound,
    /// The pre-pass cannot say anything about at least one partition (why is
    /// given), and found no violation in the others.
    NotApplicable(String),
}

/// A proof that a history is not linearizable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphViolation {
    /// The partition (key) it is in.
    pub key: Option<String>,
    /// A few lines for a human, naming the operations.
    pub explanation: String,
    /// Ids (into `History::operations`) of the operations involved.
    pub operations: Vec<usize>,
}

/// Runs the pre-pass over every partition of `history` under `model`.
///
/// Supported models: `kv` (and `kv-unpartitioned`, checked per key, which is
/// sound for violations), `register`, `cas-register`. Others answer
/// [`GraphVerdict::NotApplicable`].
pub fn check(history: &History, model: &ModelKind) -> GraphVerdict {
    let family = match model {
        ModelKind::Kv | ModelKind::KvUnpartitioned => Family::Kv,
        ModelKind::Register { initial } | ModelKind::CasRegister { initial } => {
            Family::Register { initial }
        }
        other => {
            return GraphVerdict::NotApplicable(format!(
                "the graph pre-pass does not support model {}",
                other.name()
            ))
        }
    };
    let mut partitions: HashMap<Option<&str>, Vec<usize>> = HashMap::default();
    for op in &history.operations {
        partitions.entry(op.key.as_deref()).or_default().push(op.id);
    }
    let mut keys: Vec<Option<&str>> = partitions.keys().copied().collect();
    keys.sort_unstable();
    // Partitions are independent: spread them over the cores. The answer is
    // the violation of the first key (in key order) that has one, so workers
    // skip keys after the first violating key found so far.
    let outcomes: Mutex<Vec<Option<Result<(), Stop>>>> =
        Mutex::new((0..keys.len()).map(|_| None).collect());
    let next = AtomicUsize::new(0);
    let first_violation = AtomicUsize::new(usize::MAX);
    let worker = || loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= keys.len() || i > first_violation.load(Ordering::Relaxed) {
            break;
        }
        let partition = Partition {
            history,
            key: keys[i],
            ids: &partitions[&keys[i]],
        };
        let outcome = partition.check(family);
        if matches!(outcome, Err(Stop::Violation(_))) {
            first_violation.fetch_min(i, Ordering::Relaxed);
        }
        if let Ok(mut slots) = outcomes.lock() {
            slots[i] = Some(outcome);
        }
    };
    let threads = if history.operations.len() < PARALLEL_OPERATIONS_MIN {
        1
    } else {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .min(keys.len())
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
    let outcomes = outcomes
        .into_inner()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let mut not_applicable: Option<String> = None;
    for (key, outcome) in keys.iter().zip(outcomes) {
        match outcome {
            Some(Err(Stop::Violation(v))) => return GraphVerdict::Violation(v),
            Some(Err(Stop::NotApplicable(why))) if not_applicable.is_none() => {
                let key = key.map(|k| format!("key {k:?}: ")).unwrap_or_default();
                not_applicable = Some(format!("{key}{why}"));
            }
            _ => {}
        }
    }
    match not_applicable {
        Some(why) => GraphVerdict::NotApplicable(why),
        None => GraphVerdict::NoViolationFound,
    }
}

/// Whether the pre-pass understands `model` (`kv`, `kv-unpartitioned`,
/// `register`, `cas-register`).
pub fn supports(model: &ModelKind) -> bool {
    matches!(
        model,
        ModelKind::Kv
            | ModelKind::KvUnpartitioned
            | ModelKind::Register { .. }
            | ModelKind::CasRegister { .. }
    )
}

/// The pre-pass over the one partition of `history` that `key` names, as
/// the search partitions it under `model` (for `kv-unpartitioned`, whose
/// search has one partition, every key is analysed).
pub fn check_partition(history: &History, model: &ModelKind, key: Option<&str>) -> GraphVerdict {
    let family = match model {
        ModelKind::KvUnpartitioned => return check(history, model),
        ModelKind::Kv => Family::Kv,
        ModelKind::Register { initial } | ModelKind::CasRegister { initial } => {
            Family::Register { initial }
        }
        other => {
            return GraphVerdict::NotApplicable(format!(
                "the graph pre-pass does not support model {}",
                other.name()
            ))
        }
    };
    let ids: Vec<usize> = history
        .operations
        .iter()
        .filter(|op| op.key.as_deref() == key)
        .map(|op| op.id)
        .collect();
    let partition = Partition {
        history,
        key,
        ids: &ids,
    };
    match partition.check(family) {
        Ok(()) => GraphVerdict::NoViolationFound,
        Err(Stop::Violation(v)) => GraphVerdict::Violation(v),
        Err(Stop::NotApplicable(why)) => GraphVerdict::NotApplicable(why),
    }
}

/// Below this many operations the pre-pass runs on the calling thread
/// (starting threads and asking for the core count cost more than the work).
const PARALLEL_OPERATIONS_MIN: usize = 20_000;

#[derive(Clone, Copy, Debug)]
enum Family<'a> {
    Kv,
    Register { initial: &'a Value },
}

/// Why the analysis of a partition stopped early.
#[derive(Debug)]
enum Stop {
    Violation(GraphViolation),
    NotApplicable(String),
}

/// Why one block must precede another.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    /// `before` completed before `after` was invoked.
    RealTime { before: usize, after: usize },
    /// `op` changed the state of the first block into the second's.
    Follows { op: usize },
    /// The initial state's block comes first.
    InitialFirst,
    /// `op` (an append nobody saw) comes after every observed state.
    Unobserved { op: usize },
    /// `op` (an append nobody saw) completed before `witness`, in a later
    /// epoch, was invoked, so it precedes that epoch's put.
    UnseenBefore { op: usize, witness: usize },
}

#[derive(Clone, Debug)]
struct Block {
    /// The operation that produced the state; `None` for the initial state.
    writer: Option<usize>,
}

/// The blocks of one partition and the ordering facts known before the sweep.
#[derive(Debug, Default)]
struct Blocks {
    blocks: Vec<Block>,
    /// (operation id, block) of every operation that certainly happened.
    members: Vec<(usize, u32)>,
    links: Vec<(u32, u32, Why)>,
}

impl Blocks {
    fn add(&mut self, writer: Option<usize>) -> u32 {
        self.blocks.push(Block { writer });
        if let Some(w) = writer {
            self.members.push((w, (self.blocks.len() - 1) as u32));
        }
        (self.blocks.len() - 1) as u32
    }
}

struct Partition<'h> {
    history: &'h History,
    key: Option<&'h str>,
    ids: &'h [usize],
}

impl<'h> Partition<'h> {
    fn op(&self, id: usize) -> &'h Operation {
        &self.history.operations[id]
    }

    fn violation(&self, explanation: String, mut operations: Vec<usize>) -> Stop {
        operations.sort_unstable();
        operations.dedup();
        let key = self.key.map(str::to_string);
        let head = match self.key {
            Some(k) => format!("key {k:?}: "),
            None => String::new(),
        };
        Stop::Violation(GraphViolation {
            key,
            explanation: format!("{head}{explanation}"),
            operations,
        })
    }

    fn describe(&self, id: usize) -> String {
        format!("op {id} [{}]", describe_operation(self.op(id)))
    }

    fn check(&self, family: Family<'_>) -> Result<(), Stop> {
        let blocks = match family {
            Family::Register { initial } => self.register_blocks(initial)?,
            Family::Kv => self.kv_blocks()?,
        };
        self.search_cycle(&blocks)
    }

    // ---------------------------------------------------------------- registers

    fn register_blocks(&self, initial: &Value) -> Result<Blocks, Stop> {
        let mut writer_of: HashMap<&Value, usize> = HashMap::default();
        let mut reads: Vec<(usize, &Value)> = Vec::new();
        let mut cas_ops: Vec<(usize, &Value, &Value)> = Vec::new();
        for &id in self.ids {
            let op = self.op(id);
            if op.status == Status::Fail {
                continue;
            }
            let produced = match op.f.as_str() {
                "read" => {
                    // Knossos: an unknown read says nothing; a nil read is
                    // unknown unless nil is the initial value.
                    if op.status == Status::Ok && (!op.output.is_nil() || initial.is_nil()) {
                        reads.push((id, &op.output));
                    }
                    continue;
                }
                "write" => &op.input,
                "cas" => match op.input.as_list() {
                    Some([old, new]) => {
                        cas_ops.push((id, old, new));
                        new
                    }
                    _ => {
                        return Err(Stop::NotApplicable(format!(
                            "op {id}: cas without [old new]"
                        )))
                    }
                },
                other => {
                    return Err(Stop::NotApplicable(format!(
                        "op {id}: {other:?} is not a register operation"
                    )))
                }
            };
            if produced == initial {
                return Err(Stop::NotApplicable(format!(
                    "op {id} writes the initial value {produced}"
                )));
            }
            if let Some(previous) = writer_of.insert(produced, id) {
                return Err(Stop::NotApplicable(format!(
                    "ops {previous} and {id} both write {produced}: values are not unique"
                )));
            }
        }
        // An info write happened if its value was observed; an observed info
        // CAS in turn observed its old value.
        let mut observed: HashSet<&Value> = HashSet::default();
        let mut stack: Vec<&Value> = reads.iter().map(|&(_, v)| v).collect();
        for &(id, old, _) in &cas_ops {
            if self.op(id).status == Status::Ok {
                stack.push(old);
            }
        }
        while let Some(v) = stack.pop() {
            if !observed.insert(v) {
                continue;
            }
            if let Some(&w) = writer_of.get(v) {
                if let Some([old, _]) = self.op(w).input.as_list().filter(|_| self.op(w).f == "cas")
                {
                    stack.push(old);
                }
            }
        }
        let mut blocks = Blocks::default();
        let init = blocks.add(None);
        let mut block_of: HashMap<&Value, u32> = HashMap::default();
        block_of.insert(initial, init);
        let mut writers: Vec<(&Value, usize)> = writer_of.iter().map(|(&v, &id)| (v, id)).collect();
        writers.sort_unstable_by_key(|&(_, id)| id);
        for (value, id) in writers {
            if self.op(id).status == Status::Ok || observed.contains(value) {
                block_of.insert(value, blocks.add(Some(id)));
            }
        }
        for &(id, value) in &reads {
            let Some(&block) = block_of.get(value) else {
                return Err(self.violation(
                    format!(
                        "{} read {value}, which no operation wrote",
                        self.describe(id)
                    ),
                    vec![id],
                ));
            };
            blocks.members.push((id, block));
        }
        let mut consumer: HashMap<u32, usize> = HashMap::default();
        for &(id, old, new) in &cas_ops {
            let Some(&to) = block_of.get(new) else {
                continue; // an info CAS nobody observed: may never have happened
            };
            let Some(&from) = block_of.get(old) else {
                return Err(self.violation(
                    format!(
                        "{} expected {old}, a value no operation wrote",
                        self.describe(id)
                    ),
                    vec![id],
                ));
            };
            if let Some(other) = consumer.insert(from, id) {
                return Err(self.violation(
                    format!(
                        "{} and {} both replaced {old}; values are unique, so only one can",
                        self.describe(other),
                        self.describe(id)
                    ),
                    vec![other, id],
                ));
            }
            blocks.links.push((from, to, Why::Follows { op: id }));
        }
        if reads.iter().any(|&(_, v)| v == initial) {
            for b in 1..blocks.blocks.len() as u32 {
                let starts_chain = blocks.blocks[b as usize]
                    .writer
                    .is_some_and(|w| self.op(w).f == "write");
                if starts_chain {
                    blocks.links.push((init, b, Why::InitialFirst));
                }
            }
        }
        Ok(blocks)
    }

    // ---------------------------------------------------------------------- kv

    fn kv_text(&self, id: usize, value: &'h Value) -> Result<&'h [u8], Stop> {
        match value {
            Value::Str(s) => Ok(s.as_bytes()),
            Value::Nil => Ok(b""),
            other => Err(Stop::NotApplicable(format!(
                "op {id}: kv value {other} is not a string"
            ))),
        }
    }

    fn kv_blocks(&self) -> Result<Blocks, Stop> {
        let mut puts: HashMap<&[u8], usize> = HashMap::default();
        let mut appends: HashMap<&[u8], usize> = HashMap::default();
        let mut gets: Vec<(usize, &[u8])> = Vec::new();
        for &id in self.ids {
            let op = self.op(id);
            if op.status == Status::Fail {
                continue;
            }
            let (is_put, text) = match op.f.as_str() {
                "get" | "read" => {
                    if op.status == Status::Ok {
                        gets.push((id, self.kv_text(id, &op.output)?));
                    }
                    continue;
                }
                "put" | "write" => (true, self.kv_text(id, &op.input)?),
                "append" => (false, self.kv_text(id, &op.input)?),
                other => {
                    return Err(Stop::NotApplicable(format!(
                        "op {id}: {other:?} is not a kv operation"
                    )))
                }
            };
            if text.is_empty() {
                return Err(Stop::NotApplicable(format!(
                    "op {id} writes the empty string"
                )));
            }
            if let Some(&previous) = puts.get(text).or_else(|| appends.get(text)) {
                return Err(Stop::NotApplicable(format!(
                    "ops {previous} and {id} both write {:?}: values are not unique",
                    String::from_utf8_lossy(text)
                )));
            }
            if is_put {
                puts.insert(text, id);
            } else {
                appends.insert(text, id);
            }
        }
        let tokens = Tokens::new(&puts, &appends);
        // Each get's value, as a base (a put, or the initial "") and appends.
        let mut views: Vec<(usize, Option<usize>, Vec<usize>)> = Vec::with_capacity(gets.len());
        for &(id, text) in &gets {
            match tokens.decompose(text) {
                Decomposition::None => {
                    return Err(self.violation(
                        format!(
                            "{} read a value that no sequence of the puts and appends to this key produces",
                            self.describe(id)
                        ),
                        vec![id],
                    ))
                }
                Decomposition::Ambiguous => {
                    return Err(Stop::NotApplicable(format!(
                        "op {id}: its value splits into appended values in more than one way"
                    )))
                }
                Decomposition::One(base, appended) => views.push((id, base, appended)),
            }
        }
        // Per base, the views must be prefixes of the longest one.
        let mut by_base: HashMap<Option<usize>, Vec<usize>> = HashMap::default();
        for (i, view) in views.iter().enumerate() {
            by_base.entry(view.1).or_default().push(i);
        }
        let mut chains: HashMap<Option<usize>, &[usize]> = HashMap::default();
        let mut chain_of_append: HashMap<usize, Option<usize>> = HashMap::default();
        let mut bases: Vec<Option<usize>> = by_base.keys().copied().collect();
        bases.sort_unstable();
        for base in &bases {
            let members = &by_base[base];
            let longest = members
                .iter()
                .copied()
                .max_by_key(|&i| (views[i].2.len(), std::cmp::Reverse(views[i].0)))
                .unwrap_or(members[0]);
            let chain = &views[longest].2;
            for &i in members {
                let seen = &views[i].2;
                if chain[..seen.len()] != seen[..] {
                    let at = seen
                        .iter()
                        .zip(chain)
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    return Err(self.violation(
                        format!(
                            "{} and {} saw the appends to this key in different orders ({} vs {} at position {})",
                            self.describe(views[i].0),
                            self.describe(views[longest].0),
                            self.describe(seen[at]),
                            self.describe(chain[at]),
                            at + 1
                        ),
                        vec![views[i].0, views[longest].0, seen[at], chain[at]],
                    ));
                }
            }
            let mut seen_here: HashSet<usize> = HashSet::default();
            for &a in chain {
                if !seen_here.insert(a) {
                    return Err(self.violation(
                        format!(
                            "{} saw {} applied twice",
                            self.describe(views[longest].0),
                            self.describe(a)
                        ),
                        vec![views[longest].0, a],
                    ));
                }
                if let Some(other_base) = chain_of_append.insert(a, *base) {
                    let name = |b: Option<usize>| match b {
                        Some(p) => format!("after op {p}'s put"),
                        None => "after the initial value".to_string(),
                    };
                    return Err(self.violation(
                        format!(
                            "{} was seen both {} and {}; it can only have been applied once",
                            self.describe(a),
                            name(other_base),
                            name(*base)
                        ),
                        vec![a],
                    ));
                }
            }
            chains.insert(*base, chain);
        }
        // Blocks: per base, the base's state, then one per append in order.
        let mut blocks = Blocks::default();
        let mut block_at: HashMap<(Option<usize>, usize), u32> = HashMap::default();
        let mut epoch_bases: Vec<Option<usize>> = vec![None];
        let mut put_ids: Vec<usize> = puts.values().copied().collect();
        put_ids.sort_unstable();
        for &p in &put_ids {
            if self.op(p).status == Status::Ok || chains.contains_key(&Some(p)) {
                epoch_bases.push(Some(p));
            }
        }
        for &base in &epoch_bases {
            let first = blocks.add(base);
            block_at.insert((base, 0), first);
            let mut previous = first;
            for (k, &a) in chains.get(&base).copied().unwrap_or(&[]).iter().enumerate() {
                let b = blocks.add(Some(a));
                block_at.insert((base, k + 1), b);
                blocks.links.push((previous, b, Why::Follows { op: a }));
                previous = b;
            }
        }
        for &(id, base, ref appended) in &views {
            if let Some(&b) = block_at.get(&(base, appended.len())) {
                blocks.members.push((id, b));
            }
        }
        let init_length = chains.get(&None).map_or(0, |c| c.len());
        let init_last = block_at.get(&(None, init_length)).copied().unwrap_or(0);
        let init_used = init_length > 0 || views.iter().any(|v| v.1.is_none());
        if init_used {
            for &base in &epoch_bases[1..] {
                if let Some(&b) = block_at.get(&(base, 0)) {
                    blocks.links.push((init_last, b, Why::InitialFirst));
                }
            }
        }
        // An ok append no read saw was applied after every state of its own
        // epoch that was read. So if it completed before some operation of
        // epoch e was invoked, it belongs to an earlier epoch: it precedes
        // e's put (and cannot precede the initial epoch at all).
        let mut unseen: Vec<usize> = appends
            .values()
            .copied()
            .filter(|a| self.op(*a).status == Status::Ok && !chain_of_append.contains_key(a))
            .collect();
        unseen.sort_unstable();
        if unseen.is_empty() {
            return Ok(blocks);
        }
        // Per epoch, its member invoked last: (invoke index, op, base).
        let mut latest: HashMap<Option<usize>, (usize, usize)> = HashMap::default();
        let mut note = |base: Option<usize>, id: usize| {
            let at = self.op(id).invoke_index;
            let entry = latest.entry(base).or_insert((at, id));
            if at > entry.0 {
                *entry = (at, id);
            }
        };
        for &(id, base, _) in &views {
            note(base, id);
        }
        for (&base, chain) in &chains {
            for &a in chain.iter() {
                note(base, a);
            }
            if let Some(p) = base {
                note(base, p);
            }
        }
        let mut epochs: Vec<(usize, usize, Option<usize>)> = latest
            .into_iter()
            .map(|(base, (at, id))| (at, id, base))
            .collect();
        epochs.sort_unstable();
        for a in unseen {
            let b = blocks.add(Some(a));
            if epoch_bases.len() == 1 {
                blocks.links.push((init_last, b, Why::Unobserved { op: a }));
            }
            let Some(returned) = self.op(a).return_index else {
                continue;
            };
            let first = epochs.partition_point(|&(at, _, _)| at < returned);
            for &(_, witness, base) in epochs[first..].iter().take(UNSEEN_APPEND_LINKS_MAX) {
                match base.and_then(|p| block_at.get(&(Some(p), 0))) {
                    Some(&start) => blocks.links.push((
                        b,
                        start,
                        Why::UnseenBefore {
                            op: a,
                            witness,
                        },
                    )),
                    None => {
                        return Err(self.violation(
                            format!(
                                "{} completed before {} was invoked, but no read saw it, and {} belongs to the states before any put",
                                self.describe(a),
                                self.describe(witness),
                                self.describe(witness),
                            ),
                            vec![a, witness],
                        ))
                    }
                }
            }
        }
        Ok(blocks)
    }

    // ------------------------------------------------------------------ search

    /// Builds the block graph (real-time edges from the frontier sweep plus
    /// the links) and reports the first violation.
    fn search_cycle(&self, blocks: &Blocks) -> Result<(), Stop> {
        let ops = &self.history.operations;
        let mut block_of: HashMap<usize, u32> =
            HashMap::with_capacity_and_hasher(blocks.members.len(), Default::default());
        // Sweep events: (position, is_return, op). Info operations never return.
        let mut events: Vec<(usize, bool, usize)> = Vec::with_capacity(blocks.members.len() * 2);
        for &(id, block) in &blocks.members {
            block_of.insert(id, block);
            events.push((ops[id].invoke_index, false, id));
            if let Some(r) = ops[id].return_index {
                events.push((r, true, id));
            }
        }
        events.sort_unstable();
        let mut graph: DiGraph<u32, Why> = DiGraph::with_capacity(blocks.blocks.len(), 0);
        for b in 0..blocks.blocks.len() as u32 {
            graph.add_node(b);
        }
        let mut edges: HashSet<(u32, u32)> = HashSet::default();
        for &(from, to, why) in &blocks.links {
            if edges.insert((from, to)) {
                graph.add_edge(
                    NodeIndex::new(from as usize),
                    NodeIndex::new(to as usize),
                    why,
                );
            }
        }
        let mut frontier: Vec<usize> = Vec::new();
        let mut in_frontier: HashSet<usize> = HashSet::default();
        let mut predecessors: HashMap<usize, Vec<usize>> = HashMap::default();
        let mut real_time_edges = 0usize;
        for &(_, is_return, id) in &events {
            if is_return {
                if let Some(before) = predecessors.remove(&id) {
                    for p in before {
                        in_frontier.remove(&p);
                    }
                    frontier.retain(|p| in_frontier.contains(p));
                }
                frontier.push(id);
                in_frontier.insert(id);
                continue;
            }
            let to = block_of[&id];
            for &p in &frontier {
                let from = block_of[&p];
                if from == to {
                    if blocks.blocks[to as usize].writer == Some(id) {
                        return Err(self.violation(
                            format!(
                                "{} saw the value of {}, but completed before it was invoked",
                                self.describe(p),
                                self.describe(id)
                            ),
                            vec![p, id],
                        ));
                    }
                } else if edges.insert((from, to)) {
                    graph.add_edge(
                        NodeIndex::new(from as usize),
                        NodeIndex::new(to as usize),
                        Why::RealTime {
                            before: p,
                            after: id,
                        },
                    );
                }
            }
            real_time_edges += frontier.len();
            if real_time_edges > MAX_EDGES_PER_PARTITION {
                return Err(Stop::NotApplicable(format!(
                    "more than {MAX_EDGES_PER_PARTITION} real-time edges"
                )));
            }
            if ops[id].return_index.is_some() && !frontier.is_empty() {
                predecessors.insert(id, frontier.clone());
            }
        }
        match toposort(&graph, None) {
            Ok(_) => Ok(()),
            Err(cycle) => {
                let path = shortest_cycle(&graph, cycle.node_id());
                Err(self.explain_cycle(&graph, blocks, &path))
            }
        }
    }

    fn explain_cycle(
        &self,
        graph: &DiGraph<u32, Why>,
        blocks: &Blocks,
        path: &[EdgeIndex],
    ) -> Stop {
        let mut text = format!(
            "these {} ordering constraints form a cycle, so no linearization exists:",
            path.len()
        );
        let mut involved: Vec<usize> = Vec::new();
        let reader_note = |id: usize, block: u32| -> String {
            match blocks.blocks[block as usize].writer {
                Some(w) if w == id => String::new(),
                Some(w) => format!(" (it saw the value of op {w})"),
                None => " (it saw the initial value)".to_string(),
            }
        };
        let state = |block: u32| -> String {
            match blocks.blocks[block as usize].writer {
                Some(w) => format!("the state op {w} produced"),
                None => "the initial state".to_string(),
            }
        };
        for (i, &e) in path.iter().enumerate() {
            let Some((from, to)) = graph.edge_endpoints(e) else {
                continue;
            };
            let (from, to) = (graph[from], graph[to]);
            let line = match graph[e] {
                Why::RealTime { before, after } => {
                    involved.extend([before, after]);
                    format!(
                        "{}{} completed before {}{} was invoked",
                        self.describe(before),
                        reader_note(before, from),
                        self.describe(after),
                        reader_note(after, to)
                    )
                }
                Why::Follows { op } => {
                    involved.push(op);
                    if let Some(w) = blocks.blocks[from as usize].writer {
                        involved.push(w);
                    }
                    format!(
                        "{} was applied directly to {}",
                        self.describe(op),
                        state(from)
                    )
                }
                Why::InitialFirst => format!(
                    "the initial value was read, so {} precedes {}",
                    state(from),
                    state(to)
                ),
                Why::Unobserved { op } => {
                    involved.push(op);
                    format!(
                        "{} completed but no read saw it, so it follows every state that was read",
                        self.describe(op)
                    )
                }
                Why::UnseenBefore { op, witness } => {
                    involved.extend([op, witness]);
                    format!(
                        "{} completed before {} was invoked, yet that state does not contain it, so it was applied before {}",
                        self.describe(op),
                        self.describe(witness),
                        state(to)
                    )
                }
            };
            let _ = write!(text, "\n  {}. {line}", i + 1);
        }
        self.violation(text, involved)
    }
}

/// The shortest cycle through `start` (which `toposort` reported as on a
/// cycle), as its edges.
fn shortest_cycle(graph: &DiGraph<u32, Why>, start: NodeIndex) -> Vec<EdgeIndex> {
    let mut parent: HashMap<NodeIndex, EdgeIndex> = HashMap::default();
    let mut queue = std::collections::VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for edge in graph.edges(node) {
            let next = edge.target();
            if next == start {
                let mut path = vec![edge.id()];
                let mut at = node;
                while at != start {
                    let Some(&e) = parent.get(&at) else { break };
                    path.push(e);
                    at = match graph.edge_endpoints(e) {
                        Some((source, _)) => source,
                        None => break,
                    };
                }
                path.reverse();
                return path;
            }
            if next != start && !parent.contains_key(&next) {
                parent.insert(next, edge.id());
                queue.push_back(next);
            }
        }
    }
    Vec::new()
}

/// How a get's value splits into a base and appended values.
#[derive(Debug)]
enum Decomposition {
    None,
    One(Option<usize>, Vec<usize>),
    Ambiguous,
}

/// The puts and appends of one key, indexed by value, for splitting reads.
struct Tokens<'a> {
    puts: &'a HashMap<&'a [u8], usize>,
    appends: &'a HashMap<&'a [u8], usize>,
    put_lengths: Vec<usize>,
    append_lengths: Vec<usize>,
}

impl<'a> Tokens<'a> {
    fn new(
        puts: &'a HashMap<&'a [u8], usize>,
        appends: &'a HashMap<&'a [u8], usize>,
    ) -> Tokens<'a> {
        let lengths = |m: &HashMap<&[u8], usize>| {
            let mut l: Vec<usize> = m.keys().map(|k| k.len()).collect();
            l.sort_unstable();
            l.dedup();
            l
        };
        Tokens {
            put_lengths: lengths(puts),
            append_lengths: lengths(appends),
            puts,
            appends,
        }
    }

    /// Counts (capped at 2) the ways `text[start..]` splits into appended
    /// values: `ways[i]` is the number of ways to reach position `i`. Only
    /// reachable positions are expanded, so a value of k appends costs about
    /// k × (distinct value lengths) lookups.
    fn prefix_ways(&self, text: &[u8], start: usize) -> Vec<u8> {
        let mut ways = vec![0u8; text.len() + 1];
        ways[start] = 1;
        for i in start..text.len() {
            if ways[i] == 0 {
                continue;
            }
            for &l in &self.append_lengths {
                let Some(piece) = text.get(i..i + l) else {
                    break;
                };
                if self.appends.contains_key(piece) {
                    ways[i + l] = (ways[i + l] + ways[i]).min(2);
                }
            }
        }
        ways
    }

    fn decompose(&self, text: &[u8]) -> Decomposition {
        let mut found: Option<(Option<usize>, Vec<u8>)> = None;
        let mut total = 0u8;
        let mut consider = |base: Option<usize>, start: usize| {
            let ways = self.prefix_ways(text, start);
            let w = ways[text.len()];
            if w > 0 {
                total = total.saturating_add(w);
                found = Some((base, ways));
            }
        };
        consider(None, 0);
        for &l in &self.put_lengths {
            if l > text.len() {
                break;
            }
            if let Some(&p) = self.puts.get(&text[..l]) {
                consider(Some(p), l);
            }
        }
        match (total, found) {
            (1, Some((base, ways))) => {
                // Walk back along the one path.
                let mut appended = Vec::new();
                let mut i = text.len();
                let start = base.map_or(0, |p| self.put_text_len(p, text));
                while i > start {
                    let previous = self.append_lengths.iter().find_map(|&l| {
                        let from = i.checked_sub(l)?;
                        if from < start || ways[from] == 0 {
                            return None;
                        }
                        let &a = self.appends.get(&text[from..i])?;
                        Some((a, from))
                    });
                    let Some((a, from)) = previous else { break };
                    appended.push(a);
                    i = from;
                }
                appended.reverse();
                Decomposition::One(base, appended)
            }
            (0, _) | (_, None) => Decomposition::None,
            _ => Decomposition::Ambiguous,
        }
    }

    /// The length of put `p`'s value (a prefix of `text` by construction).
    fn put_text_len(&self, p: usize, text: &[u8]) -> usize {
        self.put_lengths
            .iter()
            .copied()
            .find(|&l| l <= text.len() && self.puts.get(&text[..l]) == Some(&p))
            .unwrap_or(0)
    }
}
