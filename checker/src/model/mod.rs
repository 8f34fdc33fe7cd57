//! Sequential specifications ("models") the search checks histories against.
//!
//! A model is a handful of pure functions, as in porcupine: an initial
//! state, a step function that says whether an operation is legal in a state
//! and what state follows, a partition key for P-compositionality, and
//! descriptions for reports. Adding a model is one small file implementing
//! [`Model`] plus one arm in [`ModelKind`].
//!
//! `prepare` turns each [`Operation`] into the model's compact `Op` once,
//! before the search, so the search's inner loop never parses values. It also
//! decides what a `fail` or `info` means for this model: returning `None`
//! drops an operation that cannot constrain anything (a failed write under
//! Jepsen semantics, a read whose result is unknown).

use std::fmt::Debug;
use std::hash::Hash;

use crate::history::Operation;
use crate::value::Value;

pub mod kv;
pub mod multi_register;
pub mod mutex;
pub mod register;

/// An operation a model cannot interpret (wrong `f` or value shape).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ModelError {
    /// Source line of the operation's invoke.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl ModelError {
    /// An error about `op`.
    pub fn new(op: &Operation, message: impl Into<String>) -> ModelError {
        ModelError {
            line: op.line,
            message: message.into(),
        }
    }

    /// The usual "this model has no such f" error.
    pub fn unknown_f(op: &Operation, model: &str) -> ModelError {
        ModelError::new(
            op,
            format!(
                "model {model} has no operation {:?} (process {})",
                op.f, op.process
            ),
        )
    }
}

/// A sequential specification.
pub trait Model: Sync {
    /// The object's state. Cheap to clone (use `Arc` for strings); the search
    /// interns states, so equal states must hash equally.
    type State: Clone + Eq + Hash + Debug + Send + Sync;
    /// An operation prepared for `step` (input and known output).
    type Op: Clone + PartialEq + Debug + Send + Sync;

    /// Short name (`kv`, `cas-register`, ...).
    fn name(&self) -> &'static str;

    /// The initial state of every partition.
    fn init(&self) -> Self::State;

    /// Interprets `op`. `Ok(None)` drops it: it cannot affect the verdict.
    fn prepare(&self, op: &Operation) -> Result<Option<Self::Op>, ModelError>;

    /// If `op` is legal in `state`, the state after it.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Option<Self::State>;

    /// [`Model::step`] on a state the caller owns and will not use again
    /// (a partition with one possible order steps through it this way): a
    /// model may update it in place instead of copying it. `None` when `op`
    /// is illegal, and then `state` is given back unchanged in `Err`.
    fn step_owned(&self, state: Self::State, op: &Self::Op) -> Result<Self::State, Self::State> {
        self.step(&state, op).ok_or(state)
    }

    /// The partition `op` belongs to; operations in different partitions are
    /// independent (P-compositionality). `None` puts everything in one.
    fn partition_key<'a>(&self, op: &'a Operation) -> Option<&'a str> {
        op.key.as_deref()
    }

    /// A human-readable state, for reports.
    fn describe_state(&self, state: &Self::State) -> String;

    /// Whether `op` could become legal from `state` after some sequence of
    /// the operations in `via` (the only ones that may still come before
    /// it). Used to abandon a search node early: it must be conservative
    /// (`true` when unsure), and monotone in `via` (true with some ops
    /// means true with more: the search asks with an empty `via` first).
    /// The default is always `true`.
    fn may_become_legal(&self, state: &Self::State, op: &Self::Op, via: &[&Self::Op]) -> bool {
        let _ = (state, op, via);
        true
    }

    /// Whether [`Model::may_become_legal`] can ever answer `false` for `op`
    /// (a read: it needs a particular state). The search looks ahead to such
    /// ops even before they are invoked: a future read whose value can no
    /// longer be reached kills a node at once. Without this, appends to one
    /// key followed by a single read try every order of the appends (each
    /// order is a new state, so memoisation cannot help). Default `false`.
    fn observes(&self, op: &Self::Op) -> bool {
        let _ = op;
        false
    }

    /// Heap bytes a state owns beyond its inline size (counted against the
    /// memory budget; long kv strings are the case that matters).
    fn state_heap_bytes(&self, state: &Self::State) -> usize {
        let _ = state;
        0
    }

    /// Which unknown-outcome operations provably cannot matter, so the
    /// search may drop them: `optional[i]` marks the candidates among
    /// `ops` (all of one partition). Return one flag per op (`true` = drop).
    ///
    /// Sound when nothing could ever observe the op's effect: then in any
    /// linearization that includes it, removing it changes no legal step.
    /// With unique written values (what our workloads write) most unknown
    /// writes that never took effect are found this way; without it each
    /// one stays a candidate forever and stuck search nodes try every
    /// subset of them. The default drops nothing.
    fn unobservable_unknowns(&self, ops: &[&Self::Op], optional: &[bool]) -> Vec<bool> {
        let _ = ops;
        vec![false; optional.len()]
    }

    /// A human-readable operation, for reports.
    fn describe_op(&self, op: &Operation) -> String {
        describe_operation(op)
    }
}

/// `process 3: put("k7", "x12") -> ok` style description, shared by models.
pub fn describe_operation(op: &Operation) -> String {
    use crate::history::Status;
    let key = op
        .key
        .as_deref()
        .map(|k| format!("{k:?} "))
        .unwrap_or_default();
    let outcome = match op.status {
        Status::Ok if !op.output.is_nil() => format!("ok {}", op.output),
        Status::Ok => "ok".to_string(),
        Status::Fail => "fail".to_string(),
        Status::Info => "info (unknown)".to_string(),
    };
    format!(
        "p{} {} {}{} -> {}",
        op.process, op.f, key, op.input, outcome
    )
}

/// The models the CLI and [`crate::check_history`] know by name.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelKind {
    /// Get/Put/Append on strings, one partition per key; a missing key reads `""`.
    Kv,
    /// The same semantics with the whole map as one state (no partitioning);
    /// exponentially slower, kept to demonstrate P-compositionality.
    KvUnpartitioned,
    /// Read/write register per key, with an initial value (JSON null by default).
    Register {
        /// Initial value of every register.
        initial: Value,
    },
    /// Read/write/cas register per key (Knossos semantics: `fail` dropped,
    /// a `nil` read is unknown unless the initial value is `nil`).
    CasRegister {
        /// Initial value of every register.
        initial: Value,
    },
    /// Porcupine's etcd register: initially absent, a failed CAS observed
    /// `value != old`, a read with unknown result is legal.
    Etcd,
    /// Knossos multi-register: `txn` of `[:read k v]` / `[:write k v]` micro-ops.
    MultiRegister {
        /// Initial map (e.g. `{:x 0 :y 0}`); keys missing from it start at nil.
        initial: Value,
    },
    /// Knossos mutex: `acquire` / `release`.
    Mutex,
}

impl ModelKind {
    /// All names `from_name` accepts.
    pub const NAMES: &'static [&'static str] = &[
        "kv",
        "kv-unpartitioned",
        "register",
        "cas-register",
        "etcd",
        "multi-register",
        "mutex",
    ];

    /// The model of a CLI name, with `initial` (`None` for the model's default).
    pub fn from_name(name: &str, initial: Option<Value>) -> Option<ModelKind> {
        Some(match name {
            "kv" => ModelKind::Kv,
            "kv-unpartitioned" | "kv-nopartition" => ModelKind::KvUnpartitioned,
            "register" => ModelKind::Register {
                initial: initial.unwrap_or(Value::Nil),
            },
            "cas-register" => ModelKind::CasRegister {
                initial: initial.unwrap_or(Value::Nil),
            },
            "etcd" => ModelKind::Etcd,
            "multi-register" => ModelKind::MultiRegister {
                initial: initial.unwrap_or(Value::Map(Vec::new())),
            },
            "mutex" => ModelKind::Mutex,
            _ => return None,
        })
    }

    /// The CLI name.
    pub fn name(&self) -> &'static str {
        match self {
            ModelKind::Kv => "kv",
            ModelKind::KvUnpartitioned => "kv-unpartitioned",
            ModelKind::Register { .. } => "register",
            ModelKind::CasRegister { .. } => "cas-register",
            ModelKind::Etcd => "etcd",
            ModelKind::MultiRegister { .. } => "multi-register",
            ModelKind::Mutex => "mutex",
        }
    }
}

impl ModelKind {
    /// A sensible model for a history when none is given: by format
    /// (porcupine's logs), else by the operations' `f`s.
    pub fn infer(history: &crate::history::History, format: crate::history::Format) -> ModelKind {
        use crate::history::Format;
        match format {
            Format::PorcupineEtcd => return ModelKind::Etcd,
            Format::PorcupineKv => return ModelKind::Kv,
            _ => {}
        }
        let has = |name: &str| history.operations.iter().any(|op| op.f == name);
        if has("txn") {
            ModelKind::MultiRegister {
                initial: Value::Map(Vec::new()),
            }
        } else if has("acquire") || has("release") {
            ModelKind::Mutex
        } else if has("get") || has("put") || has("append") {
            ModelKind::Kv
        } else if has("cas") {
            ModelKind::CasRegister {
                initial: Value::Nil,
            }
        } else {
            ModelKind::Register {
                initial: Value::Nil,
            }
        }
    }
}
