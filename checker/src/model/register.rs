//! Registers: `register` (read/write), `cas-register` (plus compare-and-set),
//! and porcupine's etcd register. One register per key.
//!
//! Two readings of `fail` and `nil` exist, and the corpora depend on them:
//!
//! * Knossos (our JSON lines, Jepsen EDN): a `fail` did not happen and is
//!   dropped; an ok read of `nil` is "value unknown" (always legal) unless
//!   the initial value itself is `nil`, in which case it observes the
//!   never-written register (so a lost write is caught).
//! * Porcupine's etcd test: the register starts absent (`nil`); a read of
//!   `nil` observes "absent"; a failed CAS is kept and observed `value != old`;
//!   a failed (timed-out) read has an unknown result.
//!
//! In both, a write or CAS with unknown outcome may take effect or not; the
//! search's "leave it out" handles "not", so the step only allows the effect.

use std::sync::Arc;

use super::{Model, ModelError};
use crate::history::{Operation, Status};
use crate::value::Value;

/// A register value, compact and cheap to clone.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// Absent / nil.
    Nil,
    /// An integer.
    Int(i64),
    /// Anything else, by its EDN text.
    Other(Arc<str>),
}

impl Scalar {
    /// The scalar of a history value.
    pub fn from_value(value: &Value) -> Scalar {
        match value {
            Value::Nil => Scalar::Nil,
            Value::Int(i) => Scalar::Int(*i),
            Value::Str(s) => Scalar::Other(Arc::from(format!("{s:?}"))),
            other => Scalar::Other(Arc::from(other.to_string())),
        }
    }
}

impl std::fmt::Display for Scalar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scalar::Nil => f.write_str("nil"),
            Scalar::Int(i) => write!(f, "{i}"),
            Scalar::Other(s) => f.write_str(s),
        }
    }
}

/// Which reading of `fail` and `nil` applies (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Semantics {
    /// Jepsen/Knossos.
    Knossos,
    /// Porcupine's etcd test.
    Etcd,
}

/// A prepared register operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegisterOp {
    /// A read that returned this value.
    Read(Scalar),
    /// A write (happened, or unknown).
    Write(Scalar),
    /// A CAS that succeeded, or whose outcome is unknown (the effect if it happened).
    Cas(Scalar, Scalar),
    /// A CAS that reported a failed comparison: the value was not `old` (etcd reading).
    CasFailed(Scalar),
}

/// Register model; see the module doc.
#[derive(Clone, Debug)]
pub struct Register {
    name: &'static str,
    initial: Scalar,
    semantics: Semantics,
    allow_cas: bool,
}

impl Register {
    /// `register`: read and write (a `cas` is accepted too, for convenience).
    /// Named after the model, like its siblings `cas_register` and `etcd`.
    #[allow(clippy::self_named_constructors)]
    pub fn register(initial: &Value) -> Register {
        Register {
            name: "register",
            initial: Scalar::from_value(initial),
            semantics: Semantics::Knossos,
            allow_cas: true,
        }
    }

    /// `cas-register`: Knossos's `(cas-register initial)`.
    pub fn cas_register(initial: &Value) -> Register {
        Register {
            name: "cas-register",
            initial: Scalar::from_value(initial),
            semantics: Semantics::Knossos,
            allow_cas: true,
        }
    }

    /// Porcupine's etcd register (one register, initially absent).
    pub fn etcd() -> Register {
        Register {
            name: "etcd",
            initial: Scalar::Nil,
            semantics: Semantics::Etcd,
            allow_cas: true,
        }
    }

    fn cas_args(op: &Operation) -> Result<(Scalar, Scalar), ModelError> {
        match op.input.as_list() {
            Some([old, new]) => Ok((Scalar::from_value(old), Scalar::from_value(new))),
            _ => Err(ModelError::new(
                op,
                format!("cas needs a value [old new], got {}", op.input),
            )),
        }
    }
}

impl Model for Register {
    type State = Scalar;
    type Op = RegisterOp;

    fn name(&self) -> &'static str {
        self.name
    }

    fn init(&self) -> Scalar {
        self.initial.clone()
    }

    fn prepare(&self, op: &Operation) -> Result<Option<RegisterOp>, ModelError> {
        let etcd = self.semantics == Semantics::Etcd;
        match op.f.as_str() {
            "read" => {
                if op.status != Status::Ok {
                    // Failed or unknown read: no effect and any result is legal.
                    return Ok(None);
                }
                if op.output.is_nil() && !etcd && self.initial != Scalar::Nil {
                    // Knossos: a nil read is unknown.
                    return Ok(None);
                }
                Ok(Some(RegisterOp::Read(Scalar::from_value(&op.output))))
            }
            "write" => match op.status {
                Status::Fail => Ok(None),
                _ => Ok(Some(RegisterOp::Write(Scalar::from_value(&op.input)))),
            },
            "cas" if self.allow_cas => {
                let (old, new) = Self::cas_args(op)?;
                match op.status {
                    Status::Fail if etcd => Ok(Some(RegisterOp::CasFailed(old))),
                    Status::Fail => Ok(None),
                    _ => Ok(Some(RegisterOp::Cas(old, new))),
                }
            }
            _ => Err(ModelError::unknown_f(op, self.name)),
        }
    }

    fn step(&self, state: &Scalar, op: &RegisterOp) -> Option<Scalar> {
        match op {
            RegisterOp::Read(v) => (v == state).then(|| state.clone()),
            RegisterOp::Write(v) => Some(v.clone()),
            RegisterOp::Cas(old, new) => (old == state).then(|| new.clone()),
            RegisterOp::CasFailed(old) => (old != state).then(|| state.clone()),
        }
    }

    fn describe_state(&self, state: &Scalar) -> String {
        state.to_string()
    }

    /// A read of `v` (or a CAS from `v`) needs the value `v` now, or a
    /// write or CAS to `v` among `via`.
    fn may_become_legal(&self, state: &Scalar, op: &RegisterOp, via: &[&RegisterOp]) -> bool {
        let needed = match op {
            RegisterOp::Read(v) | RegisterOp::Cas(v, _) => v,
            _ => return true,
        };
        needed == state
            || via
                .iter()
                .any(|o| matches!(o, RegisterOp::Write(w) | RegisterOp::Cas(_, w) if w == needed))
    }

    fn observes(&self, op: &RegisterOp) -> bool {
        matches!(op, RegisterOp::Read(_) | RegisterOp::Cas(..))
    }

    /// An unknown write of `v` (or CAS to `v`) is unobservable when no read
    /// returned `v` and no CAS expected `v`: any op between it and the next
    /// change would have observed `v`. A failed CAS (etcd reading) observes
    /// "not old", which removing a write could break, so with any failed CAS
    /// in the partition nothing is dropped.
    fn unobservable_unknowns(&self, ops: &[&RegisterOp], optional: &[bool]) -> Vec<bool> {
        use std::collections::HashSet;
        if ops.iter().any(|op| matches!(op, RegisterOp::CasFailed(_))) {
            return vec![false; ops.len()];
        }
        let mut observed: HashSet<&Scalar> = HashSet::new();
        for op in ops {
            match op {
                RegisterOp::Read(v) | RegisterOp::Cas(v, _) => {
                    observed.insert(v);
                }
                _ => {}
            }
        }
        ops.iter()
            .zip(optional)
            .map(|(op, &opt)| {
                opt && match op {
                    RegisterOp::Write(v) | RegisterOp::Cas(_, v) => !observed.contains(v),
                    _ => false,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(f: &str, input: Value, output: Value, status: Status) -> Operation {
        Operation {
            id: 0,
            process: 0,
            f: f.into(),
            key: None,
            input,
            output,
            status,
            invoke_index: 0,
            return_index: None,
            invoke_time: None,
            return_time: None,
            line: 1,
        }
    }

    #[test]
    fn knossos_nil_read_is_unknown_only_with_non_nil_initial() {
        let read_nil = op("read", Value::Nil, Value::Nil, Status::Ok);
        assert_eq!(
            Register::cas_register(&Value::Int(0)).prepare(&read_nil),
            Ok(None)
        );
        assert_eq!(
            Register::cas_register(&Value::Nil).prepare(&read_nil),
            Ok(Some(RegisterOp::Read(Scalar::Nil)))
        );
    }

    #[test]
    fn failed_cas_dropped_by_knossos_kept_by_etcd() {
        let cas = op(
            "cas",
            Value::List(vec![Value::Int(1), Value::Int(2)]),
            Value::Nil,
            Status::Fail,
        );
        assert_eq!(
            Register::cas_register(&Value::Int(0)).prepare(&cas),
            Ok(None)
        );
        let etcd = Register::etcd();
        let prepared = etcd.prepare(&cas).unwrap().unwrap();
        assert_eq!(etcd.step(&Scalar::Int(1), &prepared), None);
        assert_eq!(etcd.step(&Scalar::Int(3), &prepared), Some(Scalar::Int(3)));
    }

    #[test]
    fn cas_steps() {
        let m = Register::cas_register(&Value::Int(0));
        let cas = RegisterOp::Cas(Scalar::Int(0), Scalar::Int(5));
        assert_eq!(m.step(&Scalar::Int(0), &cas), Some(Scalar::Int(5)));
        assert_eq!(m.step(&Scalar::Int(1), &cas), None);
        assert_eq!(
            m.step(&Scalar::Int(1), &RegisterOp::Read(Scalar::Int(1))),
            Some(Scalar::Int(1))
        );
        assert_eq!(
            m.step(&Scalar::Int(1), &RegisterOp::Read(Scalar::Int(2))),
            None
        );
    }

    #[test]
    fn bad_cas_value_is_an_error() {
        let m = Register::cas_register(&Value::Int(0));
        let bad = op("cas", Value::Int(3), Value::Nil, Status::Ok);
        assert!(m.prepare(&bad).is_err());
    }

    #[test]
    fn unknown_writes_nobody_read_are_unobservable() {
        let m = Register::cas_register(&Value::Int(0));
        let read = RegisterOp::Read(Scalar::Int(1));
        let cas = RegisterOp::Cas(Scalar::Int(2), Scalar::Int(3));
        let w1 = RegisterOp::Write(Scalar::Int(1));
        let w2 = RegisterOp::Write(Scalar::Int(2));
        let w4 = RegisterOp::Write(Scalar::Int(4));
        let ops = [&read, &cas, &w1, &w2, &w4];
        let optional = [false, true, true, true, true];
        assert_eq!(
            m.unobservable_unknowns(&ops, &optional),
            vec![false, true, false, false, true]
        );
        // A failed CAS observes "not old": then nothing is dropped.
        let failed = RegisterOp::CasFailed(Scalar::Int(4));
        let ops = [&read, &w4, &failed];
        assert_eq!(
            m.unobservable_unknowns(&ops, &[false, true, false]),
            vec![false; 3]
        );
    }

    #[test]
    fn a_read_needs_its_value_now_or_a_write_of_it_before() {
        let m = Register::cas_register(&Value::Int(0));
        let read = RegisterOp::Read(Scalar::Int(5));
        let w5 = RegisterOp::Write(Scalar::Int(5));
        let w6 = RegisterOp::Write(Scalar::Int(6));
        let cas = RegisterOp::Cas(Scalar::Int(1), Scalar::Int(5));
        assert!(m.may_become_legal(&Scalar::Int(5), &read, &[]));
        assert!(!m.may_become_legal(&Scalar::Int(4), &read, &[&w6]));
        assert!(m.may_become_legal(&Scalar::Int(4), &read, &[&w6, &w5]));
        assert!(m.may_become_legal(&Scalar::Int(4), &read, &[&cas]));
        assert!(m.may_become_legal(&Scalar::Int(4), &w6, &[]));
    }
}
