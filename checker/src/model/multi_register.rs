//! Knossos's multi-register: a map of registers changed by `txn`s, each a
//! vector of micro-ops `[:read k v]` / `[:write k v]` applied atomically in
//! order. A read of `nil` is unknown (the completion fills reads in; an
//! info txn's reads are all unknown).

use std::sync::Arc;

use super::register::Scalar;
use super::{Model, ModelError};
use crate::history::{Operation, Status};
use crate::value::Value;

/// One micro-op of a txn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Micro {
    /// Read key; `None` when the result is unknown.
    Read(Arc<str>, Option<Scalar>),
    /// Write key.
    Write(Arc<str>, Scalar),
}

/// The state: sorted (key, value) pairs.
pub type Registers = Arc<Vec<(Arc<str>, Scalar)>>;

/// The multi-register model with its initial map.
#[derive(Clone, Debug)]
pub struct MultiRegister {
    initial: Registers,
}

fn key_text(v: &Value) -> Arc<str> {
    match v {
        Value::Str(s) | Value::Keyword(s) => Arc::from(s.as_str()),
        other => Arc::from(other.to_string()),
    }
}

impl MultiRegister {
    /// `initial` is a map such as `{:x 0 :y 0}` (or JSON `{"x":0,"y":0}`).
    pub fn new(initial: &Value) -> MultiRegister {
        let mut pairs: Vec<(Arc<str>, Scalar)> = match initial {
            Value::Map(entries) => entries
                .iter()
                .map(|(k, v)| (key_text(k), Scalar::from_value(v)))
                .collect(),
            _ => Vec::new(),
        };
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        pairs.dedup_by(|a, b| a.0 == b.0);
        MultiRegister {
            initial: Arc::new(pairs),
        }
    }
}

impl Model for MultiRegister {
    type State = Registers;
    type Op = Vec<Micro>;

    fn name(&self) -> &'static str {
        "multi-register"
    }

    fn init(&self) -> Registers {
        self.initial.clone()
    }

    fn prepare(&self, op: &Operation) -> Result<Option<Vec<Micro>>, ModelError> {
        if op.f != "txn" {
            return Err(ModelError::unknown_f(op, "multi-register"));
        }
        if op.status == Status::Fail {
            return Ok(None);
        }
        let value = if op.status == Status::Ok && !op.output.is_nil() {
            &op.output
        } else {
            &op.input
        };
        let Some(items) = value.as_list() else {
            return Err(ModelError::new(
                op,
                format!("txn needs a vector of micro-ops, got {value}"),
            ));
        };
        let mut micros = Vec::with_capacity(items.len());
        for item in items {
            let Some([f, k, v]) = item.as_list() else {
                return Err(ModelError::new(
                    op,
                    format!("micro-op must be [f k v], got {item}"),
                ));
            };
            let key = key_text(k);
            match f.as_str() {
                Some("read") | Some("r") => {
                    let known = op.status == Status::Ok && !v.is_nil();
                    micros.push(Micro::Read(key, known.then(|| Scalar::from_value(v))));
                }
                Some("write") | Some("w") => micros.push(Micro::Write(key, Scalar::from_value(v))),
                _ => return Err(ModelError::new(op, format!("unknown micro-op {f}"))),
            }
        }
        let constrains = micros.iter().any(|m| !matches!(m, Micro::Read(_, None)));
        Ok(constrains.then_some(micros))
    }

    fn step(&self, state: &Registers, op: &Vec<Micro>) -> Option<Registers> {
        let mut next: Option<Vec<(Arc<str>, Scalar)>> = None;
        for micro in op {
            let current = next.as_ref().unwrap_or(state);
            match micro {
                Micro::Read(_, None) => {}
                Micro::Read(key, Some(expected)) => {
                    let value = current
                        .binary_search_by(|(k, _)| k.cmp(key))
                        .map(|i| &current[i].1)
                        .unwrap_or(&Scalar::Nil);
                    if value != expected {
                        return None;
                    }
                }
                Micro::Write(key, v) => {
                    let map = next.get_or_insert_with(|| Vec::clone(state));
                    match map.binary_search_by(|(k, _)| k.cmp(key)) {
                        Ok(i) => map[i].1 = v.clone(),
                        Err(i) => map.insert(i, (key.clone(), v.clone())),
                    }
                }
            }
        }
        Some(next.map(Arc::new).unwrap_or_else(|| state.clone()))
    }

    fn partition_key<'a>(&self, _op: &'a Operation) -> Option<&'a str> {
        None
    }

    fn describe_state(&self, state: &Registers) -> String {
        let pairs: Vec<String> = state.iter().map(|(k, v)| format!(":{k} {v}")).collect();
        format!("{{{}}}", pairs.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_reads_see_earlier_writes_in_the_same_txn() {
        let m = MultiRegister::new(&Value::Map(vec![(
            Value::Keyword("x".into()),
            Value::Int(0),
        )]));
        let txn = vec![
            Micro::Write(Arc::from("x"), Scalar::Int(2)),
            Micro::Read(Arc::from("x"), Some(Scalar::Int(2))),
        ];
        let s = m.step(&m.init(), &txn).unwrap();
        assert!(m
            .step(&s, &vec![Micro::Read(Arc::from("x"), Some(Scalar::Int(0)))])
            .is_none());
        assert!(m
            .step(
                &m.init(),
                &vec![Micro::Read(Arc::from("x"), Some(Scalar::Int(0)))]
            )
            .is_some());
    }
}
