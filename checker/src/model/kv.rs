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

/// A string value with a polynomial hash maintained through appends, so the
/// search hashes a state in O(1) however long it grows. Equality stays exact
/// (the hash only short-cuts the comparison).
#[derive(Clone, Debug)]
pub struct KvValue {
    hash: u64,
    /// `BASE^len`, to append in O(1) hash work.
    power: u64,
    text: Arc<str>,
}

const BASE: u64 = 0x100_0000_01b3;

impl KvValue {
    /// The value of `text`.
    pub fn new(text: &str) -> KvValue {
        let mut hash = 0u64;
        let mut power = 1u64;
        for &b in text.as_bytes() {
            hash = hash.wrapping_mul(BASE).wrapping_add(u64::from(b) + 1);
            power = power.wrapping_mul(BASE);
        }
        KvValue {
            hash,
            power,
            text: Arc::from(text),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn append(&self, suffix: &KvValue) -> KvValue {
        if self.text.is_empty() {
            return suffix.clone();
        }
        let mut s = String::with_capacity(self.text.len() + suffix.text.len());
        s.push_str(&self.text);
        s.push_str(&suffix.text);
        KvValue {
            hash: self
                .hash
                .wrapping_mul(suffix.power)
                .wrapping_add(suffix.hash),
            power: self.power.wrapping_mul(suffix.power),
            text: Arc::from(s),
        }
    }
}

impl PartialEq for KvValue {
    fn eq(&self, other: &KvValue) -> bool {
        self.hash == other.hash && (Arc::ptr_eq(&self.text, &other.text) || self.text == other.text)
    }
}

impl Eq for KvValue {}

impl std::hash::Hash for KvValue {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

/// A prepared kv operation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvOp {
    /// A get that returned this string.
    Get(KvValue),
    /// A put of this string.
    Put(KvValue),
    /// An append of this string.
    Append(KvValue),
}

fn string_of(op: &Operation, value: &Value) -> Result<KvValue, ModelError> {
    match value {
        Value::Str(s) => Ok(KvValue::new(s)),
        // A get of a missing key may be logged as null; the service reads "".
        Value::Nil => Ok(KvValue::new("")),
        Value::Int(i) => Ok(KvValue::new(&i.to_string())),
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

/// Appends `s` as `{:?}` prints it. Values are usually printable ASCII
/// without quotes or backslashes, which `{:?}` leaves as they are: copy those
/// at once instead of formatting character by character (a check describes
/// its final state, and kv values grow long).
fn push_debug_str(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        use std::fmt::Write;
        let _ = write!(out, "{s:?}");
    }
}

fn step_value(value: &KvValue, op: &KvOp) -> Option<KvValue> {
    match op {
        KvOp::Get(read) => (read == value).then(|| value.clone()),
        KvOp::Put(v) => Some(v.clone()),
        KvOp::Append(v) => Some(value.append(v)),
    }
}

/// Limit on the substring scan of [`Kv::unobservable_unknowns`] (unknown ops
/// times bytes read); above it nothing is dropped.
const UNOBSERVABLE_SCAN_BYTES_MAX: usize = 200_000_000;

/// Get/Put/Append, one partition per key.
#[derive(Clone, Debug, Default)]
pub struct Kv;

impl Model for Kv {
    type State = KvValue;
    type Op = KvOp;

    fn name(&self) -> &'static str {
        "kv"
    }

    fn init(&self) -> KvValue {
        KvValue::new("")
    }

    fn prepare(&self, op: &Operation) -> Result<Option<KvOp>, ModelError> {
        prepare_kv(op, "kv")
    }

    fn step(&self, state: &KvValue, op: &KvOp) -> Option<KvValue> {
        step_value(state, op)
    }

    fn describe_state(&self, state: &KvValue) -> String {
        let mut out = String::with_capacity(state.as_str().len() + 2);
        push_debug_str(&mut out, state.as_str());
        out
    }

    /// A get of `v` can only be reached by appends if the state is a prefix
    /// of `v`; a put among `via` could reset it, so then anything goes.
    fn may_become_legal(&self, state: &KvValue, op: &KvOp, via: &[&KvOp]) -> bool {
        match op {
            KvOp::Get(v) => {
                v == state
                    || v.as_str().starts_with(state.as_str())
                    || via.iter().any(|o| matches!(o, KvOp::Put(_)))
            }
            _ => true,
        }
    }

    fn observes(&self, op: &KvOp) -> bool {
        matches!(op, KvOp::Get(_))
    }

    fn state_heap_bytes(&self, state: &KvValue) -> usize {
        state.as_str().len() + 16
    }

    /// An unknown `append t` is unobservable when no get's value contains
    /// `t`, an unknown `put t` when no get's value starts with `t`: a get
    /// after it (before the next put) would have shown it.
    fn unobservable_unknowns(&self, ops: &[&KvOp], optional: &[bool]) -> Vec<bool> {
        let reads: Vec<&str> = ops
            .iter()
            .filter_map(|op| match op {
                KvOp::Get(v) => Some(v.as_str()),
                _ => None,
            })
            .collect();
        let read_bytes: usize = reads.iter().map(|r| r.len()).sum();
        let unknowns = optional.iter().filter(|&&o| o).count();
        if unknowns.saturating_mul(read_bytes) > UNOBSERVABLE_SCAN_BYTES_MAX {
            return vec![false; ops.len()];
        }
        ops.iter()
            .zip(optional)
            .map(|(op, &opt)| {
                opt && match op {
                    KvOp::Append(t) => {
                        !t.as_str().is_empty() && !reads.iter().any(|r| r.contains(t.as_str()))
                    }
                    KvOp::Put(t) => {
                        !t.as_str().is_empty() && !reads.iter().any(|r| r.starts_with(t.as_str()))
                    }
                    KvOp::Get(_) => false,
                }
            })
            .collect()
    }
}

/// Get/Put/Append with the whole map as a single state.
#[derive(Clone, Debug, Default)]
pub struct KvUnpartitioned;

/// The map state: sorted (key, value) pairs, shared until written.
pub type KvMap = Arc<Vec<(Arc<str>, KvValue)>>;

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
        // The empty value only for a missing key: building it allocates,
        // and the search steps an existing key far more often.
        let empty;
        let current = match position {
            Ok(i) => &state[i].1,
            Err(_) => {
                empty = KvValue::new("");
                &empty
            }
        };
        let next = step_value(current, op)?;
        if next == *current {
            return Some(state.clone());
        }
        let mut map = Vec::clone(state);
        match position {
            Ok(i) => map[i].1 = next,
            Err(i) => map.insert(i, (key.clone(), next)),
        }
        Some(Arc::new(map))
    }

    /// In place when this is the only reference to the map: no copy of
    /// the map (and of every key's reference count) per operation.
    fn step_owned(&self, mut state: KvMap, (key, op): &(Arc<str>, KvOp)) -> Result<KvMap, KvMap> {
        let position = state.binary_search_by(|(k, _)| k.as_ref().cmp(key.as_ref()));
        let next = match position {
            Ok(i) => step_value(&state[i].1, op),
            Err(_) => step_value(&KvValue::new(""), op),
        };
        let Some(next) = next else {
            return Err(state);
        };
        match position {
            Ok(i) if state[i].1 == next => {}
            Ok(i) => Arc::make_mut(&mut state)[i].1 = next,
            Err(_) if next.as_str().is_empty() => {}
            Err(i) => Arc::make_mut(&mut state).insert(i, (key.clone(), next)),
        }
        Ok(state)
    }

    fn partition_key<'a>(&self, _op: &'a Operation) -> Option<&'a str> {
        None
    }

    fn may_become_legal(
        &self,
        state: &KvMap,
        (key, op): &(Arc<str>, KvOp),
        via: &[&(Arc<str>, KvOp)],
    ) -> bool {
        let KvOp::Get(v) = op else { return true };
        // A missing key reads "" (compared as text: no value to allocate).
        let current = match state.binary_search_by(|(k, _)| k.as_ref().cmp(key.as_ref())) {
            Ok(i) => state[i].1.as_str(),
            Err(_) => "",
        };
        v.as_str().starts_with(current)
            || via
                .iter()
                .any(|(k, o)| k == key && matches!(o, KvOp::Put(_)))
    }

    fn observes(&self, (_, op): &(Arc<str>, KvOp)) -> bool {
        matches!(op, KvOp::Get(_))
    }

    fn describe_state(&self, state: &KvMap) -> String {
        let mut out = String::from("{");
        for (i, (k, v)) in state.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            push_debug_str(&mut out, k);
            out.push_str(": ");
            push_debug_str(&mut out, v.as_str());
        }
        out.push('}');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_to_missing_key_appends_to_empty() {
        let s = Kv.init();
        let s = Kv.step(&s, &KvOp::Append(KvValue::new("x"))).unwrap();
        let s = Kv.step(&s, &KvOp::Append(KvValue::new("y"))).unwrap();
        assert_eq!(s.as_str(), "xy");
        assert_eq!(s, KvValue::new("xy"));
        assert!(Kv.step(&s, &KvOp::Get(KvValue::new("x"))).is_none());
        assert!(Kv.step(&s, &KvOp::Get(KvValue::new("xy"))).is_some());
    }

    #[test]
    fn step_owned_agrees_with_step_and_leaves_shared_maps_alone() {
        let m = KvUnpartitioned;
        let op = |k: &str, o: KvOp| (Arc::<str>::from(k), o);
        let v = KvValue::new;
        let ops = [
            op("a", KvOp::Get(v(""))),
            op("b", KvOp::Append(v("x"))),
            op("a", KvOp::Put(v("p"))),
            op("b", KvOp::Get(v("x"))),
            op("b", KvOp::Append(v("y"))),
            op("c", KvOp::Put(v(""))),
            op("a", KvOp::Put(v("p"))),
            op("b", KvOp::Get(v("x"))),
        ];
        let mut by_ref = m.init();
        let mut owned = m.init();
        for (n, o) in ops.iter().enumerate() {
            let kept = owned.clone();
            let kept_text = m.describe_state(&kept);
            let expected = m.step(&by_ref, o);
            let got = m.step_owned(owned, o);
            // A shared map is copied, never changed under its other owner.
            assert_eq!(m.describe_state(&kept), kept_text, "op {n}");
            match (expected, got) {
                (Some(e), Ok(g)) => {
                    assert_eq!(e, g, "op {n}");
                    by_ref = e;
                    owned = g;
                }
                (None, Err(back)) => {
                    assert_eq!(back, by_ref, "op {n}: the state comes back unchanged");
                    owned = back;
                }
                (e, g) => panic!("op {n}: step {e:?}, step_owned {g:?}"),
            }
        }
        assert_eq!(m.describe_state(&owned), r#"{"a": "p", "b": "xy"}"#);
    }

    #[test]
    fn describe_escapes_like_debug() {
        for text in ["plain 1 2", "q\"uote", "back\\slash", "tab\t", "é"] {
            assert_eq!(Kv.describe_state(&KvValue::new(text)), format!("{text:?}"));
        }
    }

    #[test]
    fn unpartitioned_keeps_keys_apart() {
        let m = KvUnpartitioned;
        let s = m.init();
        let s = m
            .step(&s, &(Arc::from("b"), KvOp::Put(KvValue::new("1"))))
            .unwrap();
        let s = m
            .step(&s, &(Arc::from("a"), KvOp::Append(KvValue::new("2"))))
            .unwrap();
        assert!(m
            .step(&s, &(Arc::from("a"), KvOp::Get(KvValue::new("2"))))
            .is_some());
        assert!(m
            .step(&s, &(Arc::from("b"), KvOp::Get(KvValue::new("2"))))
            .is_none());
        assert!(m
            .step(&s, &(Arc::from("c"), KvOp::Get(KvValue::new(""))))
            .is_some());
    }

    #[test]
    fn unknown_ops_nobody_read_are_unobservable() {
        let get = KvOp::Get(KvValue::new("ax1yb"));
        let seen = KvOp::Append(KvValue::new("x1y"));
        let unseen = KvOp::Append(KvValue::new("x2y"));
        let put_seen = KvOp::Put(KvValue::new("ax"));
        let put_unseen = KvOp::Put(KvValue::new("x1"));
        let ops = [&get, &seen, &unseen, &put_seen, &put_unseen];
        let optional = [false, true, true, true, true];
        assert_eq!(
            Kv.unobservable_unknowns(&ops, &optional),
            vec![false, false, true, false, true]
        );
        // A definite op is never dropped.
        assert_eq!(Kv.unobservable_unknowns(&ops, &[false; 5]), vec![false; 5]);
    }

    #[test]
    fn a_get_is_reachable_only_by_extending_the_state() {
        let state = KvValue::new("ab");
        let get = KvOp::Get(KvValue::new("abc"));
        let append = KvOp::Append(KvValue::new("c"));
        let put = KvOp::Put(KvValue::new("z"));
        assert!(Kv.may_become_legal(&state, &get, &[&append]));
        assert!(!Kv.may_become_legal(&KvValue::new("ba"), &get, &[&append]));
        assert!(Kv.may_become_legal(&KvValue::new("ba"), &get, &[&append, &put]));
        assert!(Kv.may_become_legal(&KvValue::new("ba"), &append, &[]));
    }
}
