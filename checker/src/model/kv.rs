//! The KV service's semantics: `get`, `put`, `append` on string values; a
//! missing key reads `""` and `append` to a missing key appends to `""`.
//!
//! [`Kv`] is checked one partition per key (P-compositionality);
//! [`KvUnpartitioned`] keeps the whole map as one state, which is what a
//! checker without P-compositionality must do (porcupine's "no partition" test).

use std::sync::Arc;

use super::{Model, ModelError};
use crate::history::{Operation, Status};
use crate::value::Value;

/// A prepared kv operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// A get that returned this string.
    Get(Arc<str>),
    /// A put of this string.
    Put(Arc<str>),
    /// An append of this string.
    Append(Arc<str>),
}

fn string_of(op: &Operation, value: &Value) -> Result<Arc<str>, ModelError> {
    match value {
        Value::Str(s) => Ok(Arc::from(s.as_str())),
        // A get of a missing key may be logged as null; the service reads "".
        Value::Nil => Ok(Arc::from("")),
        Value::Int(i) => Ok(Arc::from(i.to_string())),
        other => Err(ModelError::new(
            op,
            format!("kv values are strings, got {other}"),
        )),
    }
}

fn prepare_kv(op: &Operation, model: &str) -> Result<Option<KvOp>, ModelError> {
    if op.status == Status::Fail {
        return Ok(None);
    }
    match op.f.as_str() {
        "get" | "read" => {
            if op.status != Status::Ok {
                return Ok(None);
            }
            Ok(Some(KvOp::Get(string_of(op, &op.output)?)))
        }
        "put" | "write" => Ok(Some(KvOp::Put(string_of(op, &op.input)?))),
        "append" => Ok(Some(KvOp::Append(string_of(op, &op.input)?))),
        _ => Err(ModelError::unknown_f(op, model)),
    }
}

fn step_value(value: &Arc<str>, op: &KvOp) -> Option<Arc<str>> {
    match op {
        KvOp::Get(read) => (read == value).then(|| value.clone()),
        KvOp::Put(v) => Some(v.clone()),
        KvOp::Append(v) => {
            if value.is_empty() {
                Some(v.clone())
            } else {
                let mut s = String::with_capacity(value.len() + v.len());
                s.push_str(value);
                s.push_str(v);
                Some(Arc::from(s))
            }
        }
    }
}

/// Get/Put/Append, one partition per key.
#[derive(Clone, Debug, Default)]
pub struct Kv;

impl Model for Kv {
    type State = Arc<str>;
    type Op = KvOp;

    fn name(&self) -> &'static str {
        "kv"
    }

    fn init(&self) -> Arc<str> {
        Arc::from("")
    }

    fn prepare(&self, op: &Operation) -> Result<Option<KvOp>, ModelError> {
        prepare_kv(op, "kv")
    }

    fn step(&self, state: &Arc<str>, op: &KvOp) -> Option<Arc<str>> {
        step_value(state, op)
    }

    fn describe_state(&self, state: &Arc<str>) -> String {
        format!("{state:?}")
    }
}

/// Get/Put/Append with the whole map as a single state.
#[derive(Clone, Debug, Default)]
pub struct KvUnpartitioned;

/// The map state: sorted (key, value) pairs, shared until written.
pub type KvMap = Arc<Vec<(Arc<str>, Arc<str>)>>;

impl Model for KvUnpartitioned {
    type State = KvMap;
    type Op = (Arc<str>, KvOp);

    fn name(&self) -> &'static str {
        "kv-unpartitioned"
    }

    fn init(&self) -> KvMap {
        Arc::new(Vec::new())
    }

    fn prepare(&self, op: &Operation) -> Result<Option<(Arc<str>, KvOp)>, ModelError> {
        let key: Arc<str> = Arc::from(op.key.as_deref().unwrap_or(""));
        Ok(prepare_kv(op, "kv-unpartitioned")?.map(|kv| (key, kv)))
    }

    fn step(&self, state: &KvMap, (key, op): &(Arc<str>, KvOp)) -> Option<KvMap> {
        let position = state.binary_search_by(|(k, _)| k.as_ref().cmp(key.as_ref()));
        let empty: Arc<str> = Arc::from("");
        let current = match position {
            Ok(i) => &state[i].1,
            Err(_) => &empty,
        };
        let next = step_value(current, op)?;
        if Arc::ptr_eq(&next, current) || next == *current {
            return Some(state.clone());
        }
        let mut map = Vec::clone(state);
        match position {
            Ok(i) => map[i].1 = next,
            Err(i) => map.insert(i, (key.clone(), next)),
        }
        Some(Arc::new(map))
    }

    fn partition_key<'a>(&self, _op: &'a Operation) -> Option<&'a str> {
        None
    }

    fn describe_state(&self, state: &KvMap) -> String {
        let pairs: Vec<String> = state.iter().map(|(k, v)| format!("{k:?}: {v:?}")).collect();
        format!("{{{}}}", pairs.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_to_missing_key_appends_to_empty() {
        let s = Kv.init();
        let s = Kv.step(&s, &KvOp::Append(Arc::from("x"))).unwrap();
        let s = Kv.step(&s, &KvOp::Append(Arc::from("y"))).unwrap();
        assert_eq!(&*s, "xy");
        assert!(Kv.step(&s, &KvOp::Get(Arc::from("x"))).is_none());
        assert!(Kv.step(&s, &KvOp::Get(Arc::from("xy"))).is_some());
    }

    #[test]
    fn unpartitioned_keeps_keys_apart() {
        let m = KvUnpartitioned;
        let s = m.init();
        let s = m
            .step(&s, &(Arc::from("b"), KvOp::Put(Arc::from("1"))))
            .unwrap();
        let s = m
            .step(&s, &(Arc::from("a"), KvOp::Append(Arc::from("2"))))
            .unwrap();
        assert!(m
            .step(&s, &(Arc::from("a"), KvOp::Get(Arc::from("2"))))
            .is_some());
        assert!(m
            .step(&s, &(Arc::from("b"), KvOp::Get(Arc::from("2"))))
            .is_none());
        assert!(m
            .step(&s, &(Arc::from("c"), KvOp::Get(Arc::from(""))))
            .is_some());
    }
}
