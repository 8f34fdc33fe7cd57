//! Brute-force linearizability oracle for tiny histories (pure).
//!
//! It shares nothing with the search but the [`Model`] trait: for every
//! subset of the operations whose outcome is unknown (`info`) it tries every
//! order of the chosen operations that respects real time (an operation may
//! only be placed once every operation that completed before its invocation
//! is placed) and steps the model through it. Exponential on purpose: it is
//! the obviously-correct reference that property tests hold the checker to,
//! so it is capped at [`MAX_ORACLE_OPERATIONS`] per partition.

use std::collections::BTreeMap;

use crate::history::{History, Status};
use crate::model::kv::{Kv, KvUnpartitioned};
use crate::model::multi_register::MultiRegister;
use crate::model::mutex::Mutex;
use crate::model::register::Register;
use crate::model::{Model, ModelError, ModelKind};

/// Largest partition the oracle accepts (10! orders × 2^info subsets is
/// already seconds).
pub const MAX_ORACLE_OPERATIONS: usize = 10;

/// Why the oracle cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OracleError {
    /// A partition has more operations than the oracle enumerates.
    #[error("partition {key:?} has {operations} operations; the oracle handles at most {MAX_ORACLE_OPERATIONS}")]
    TooLarge {
        /// The partition.
        key: Option<String>,
        /// Its operations after `prepare`.
        operations: usize,
    },
    /// The model rejected an operation.
    #[error(transparent)]
    Model(#[from] ModelError),
}

/// Is `history` linearizable under the model named by `kind`?
pub fn check(history: &History, kind: &ModelKind) -> Result<bool, OracleError> {
    match kind {
        ModelKind::Kv => linearizable(&Kv, history),
        ModelKind::KvUnpartitioned => linearizable(&KvUnpartitioned, history),
        ModelKind::Register { initial } => linearizable(&Register::register(initial), history),
        ModelKind::CasRegister { initial } => {
            linearizable(&Register::cas_register(initial), history)
        }
        ModelKind::Etcd => linearizable(&Register::etcd(), history),
        ModelKind::MultiRegister { initial } => linearizable(&MultiRegister::new(initial), history),
        ModelKind::Mutex => linearizable(&Mutex, history),
    }
}

/// One prepared operation of a partition.
struct Candidate<Op> {
    op: Op,
    invoke: usize,
    /// `None`: never returned (info), so it precedes nothing.
    returned: Option<usize>,
    /// False for an operation with unknown outcome, which may be left out.
    required: bool,
}

/// Is `history` linearizable under `model`? Each partition is enumerated on
/// its own (P-compositionality is a theorem, not a heuristic).
pub fn linearizable<M: Model>(model: &M, history: &History) -> Result<bool, OracleError> {
    let mut partitions: BTreeMap<Option<&str>, Vec<Candidate<M::Op>>> = BTreeMap::new();
    for op in &history.operations {
        let Some(prepared) = model.prepare(op)? else {
            continue;
        };
        partitions
            .entry(model.partition_key(op))
            .or_default()
            .push(Candidate {
                op: prepared,
                invoke: op.invoke_index,
                returned: op.return_index,
                required: op.status != Status::Info,
            });
    }
    for (key, candidates) in &partitions {
        if candidates.len() > MAX_ORACLE_OPERATIONS {
            return Err(OracleError::TooLarge {
                key: key.map(str::to_string),
                operations: candidates.len(),
            });
        }
        if !partition_linearizable(model, candidates) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn partition_linearizable<M: Model>(model: &M, candidates: &[Candidate<M::Op>]) -> bool {
    let optional: Vec<usize> = (0..candidates.len())
        .filter(|&i| !candidates[i].required)
        .collect();
    for subset in 0u32..(1u32 << optional.len()) {
        let mut chosen: Vec<bool> = candidates.iter().map(|c| c.required).collect();
        for (bit, &i) in optional.iter().enumerate() {
            if subset & (1 << bit) != 0 {
                chosen[i] = true;
            }
        }
        let mut placed = vec![false; candidates.len()];
        if orders(model, candidates, &chosen, &mut placed, &model.init()) {
            return true;
        }
    }
    false
}

/// Depth-first over every real-time-respecting order of the chosen operations.
fn orders<M: Model>(
    model: &M,
    candidates: &[Candidate<M::Op>],
    chosen: &[bool],
    placed: &mut [bool],
    state: &M::State,
) -> bool {
    let remaining: Vec<usize> = (0..candidates.len())
        .filter(|&i| chosen[i] && !placed[i])
        .collect();
    if remaining.is_empty() {
        return true;
    }
    for &i in &remaining {
        // `i` can go next only if no other remaining operation returned before it was invoked.
        let blocked = remaining.iter().any(|&j| {
            j != i
                && candidates[j]
                    .returned
                    .is_some_and(|r| r < candidates[i].invoke)
        });
        if blocked {
            continue;
        }
        if let Some(next) = model.step(state, &candidates[i].op) {
            placed[i] = true;
            let ok = orders(model, candidates, chosen, placed, &next);
            placed[i] = false;
            if ok {
                return true;
            }
        }
    }
    false
}
