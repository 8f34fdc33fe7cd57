//! The lost-acknowledged-writes check: every write the database acknowledged must still be
//! visible in the final reads that the runner makes after the last fault is healed, the
//! recovery period has passed and the generator has stopped (Jepsen's final reads).
//!
//! Pure: a history in, a verdict and its numbers out. The final reads are the ok reads whose
//! events carry `phase: "final-read"` ([`crate::history::FINAL_READ_PHASE`]); the writes are
//! every other operation of the key that is not a read. A write that ended `ok` is
//! acknowledged and must be accounted for; one that ended `info` (or never completed) may or
//! may not have happened; one that ended `fail` certainly did not.
//!
//! * `kv` (get/put/append with values unique per write): the final value must parse as an
//!   optional first put followed by appends, each a write that may have happened, none twice;
//!   every acknowledged append must appear in it unless that put may have replaced it; every
//!   acknowledged put must be that put or one it may have replaced.
//! * `register` / `cas-register` (read/write/cas on small integers): the final read must be a
//!   value that could be last, i.e. written by a write or cas that may have happened and that
//!   no acknowledged write certainly followed (or the initial null, when nothing was
//!   acknowledged). When it is not, the acknowledged writes that no other acknowledged write
//!   followed, and that wrote something else, are the lost ones.
//!
//! Values are not unique in the register workload, so its check is weaker than the `kv` one;
//! the linearizability checker, which sees the same final reads, is the stronger check there.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::Validity;
use crate::history::{Event, EventType};

/// At most this many lost writes, unexpected values and unread keys listed in results.json
/// (the counts are always complete).
pub const LISTED_MAX: usize = 1000;

/// An acknowledged write the final read contradicts.
#[derive(Debug, Clone, PartialEq)]
pub struct LostWrite {
    pub key: String,
    pub f: String,
    pub value: Value,
    pub process: u64,
    /// Nanoseconds on the test's clock.
    pub invoke_time: u64,
    pub complete_time: u64,
    /// The key's final read.
    pub final_read: Value,
}

/// Something in a final read no write explains (never written, written by a failed write,
/// appended twice, or in an impossible order).
#[derive(Debug, Clone, PartialEq)]
pub struct UnexpectedValue {
    pub key: String,
    pub value: Value,
    pub final_read: Value,
    pub reason: String,
}

/// Result of [`check`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LostWrites {
    /// Whether the history holds any final read at all.
    pub final_read_phase: bool,
    /// Keys with at least one write invoked (any outcome).
    pub keys_written: u64,
    /// Written keys with an ok final read.
    pub keys_read: u64,
    /// Written keys without an ok final read: their writes could not be checked.
    pub keys_unread: Vec<String>,
    /// Acknowledged writes compared with their key's final read.
    pub acknowledged_checked: u64,
    /// Acknowledged writes that could not be compared: no final read of their key, or
    /// completed only after it began (the runner stops writes first, so only a hand-made
    /// history has these).
    pub acknowledged_unchecked: u64,
    /// Writes that ended `info` or never completed: they may or may not appear.
    pub unknown_writes: u64,
    pub lost: Vec<LostWrite>,
    pub unexpected: Vec<UnexpectedValue>,
}

impl LostWrites {
    /// Invalid when a write is lost or a value is unexplained; unknown when a written key
    /// has no final read; else valid.
    pub fn validity(&self) -> Validity {
        if !self.lost.is_empty() || !self.unexpected.is_empty() {
            Validity::Invalid
        } else if !self.keys_unread.is_empty() {
            Validity::Unknown
        } else {
            Validity::Valid
        }
    }

    pub fn to_json(&self) -> Value {
        let lost: Vec<Value> = self
            .lost
            .iter()
            .take(LISTED_MAX)
            .map(|l| {
                json!({
                    "key": l.key, "f": l.f, "value": l.value, "process": l.process,
                    "invoke_time": l.invoke_time, "complete_time": l.complete_time,
                    "final_read": l.final_read,
                })
            })
            .collect();
        let unexpected: Vec<Value> = self
            .unexpected
            .iter()
            .take(LISTED_MAX)
            .map(|u| json!({"key": u.key, "value": u.value, "final_read": u.final_read, "reason": u.reason}))
            .collect();
        json!({
            "valid": self.validity().to_json(),
            "final_read_phase": self.final_read_phase,
            "keys_written": self.keys_written,
            "keys_read": self.keys_read,
            "keys_unread": self.keys_unread.iter().take(LISTED_MAX).collect::<Vec<_>>(),
            "acknowledged_checked": self.acknowledged_checked,
            "acknowledged_unchecked": self.acknowledged_unchecked,
            "unknown_writes": self.unknown_writes,
            "lost_count": self.lost.len(),
            "lost": lost,
            "unexpected_count": self.unexpected.len(),
            "unexpected": unexpected,
        })
    }
}

/// Which check a checker model gets: `None` for a model without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Semantics {
    /// get/put/append on strings, unique written values.
    Kv,
    /// read/write/cas on values.
    Register,
}

impl Semantics {
    pub fn for_model(model: &str) -> Option<Semantics> {
        match model {
            "kv" => Some(Semantics::Kv),
            "register" | "cas-register" => Some(Semantics::Register),
            _ => None,
        }
    }
}

/// Whether `f` only reads (everything else is a write of its key).
pub fn is_read(f: &str) -> bool {
    matches!(f, "get" | "read")
}

/// One operation: an invoke paired with its process's completion.
#[derive(Debug, Clone)]
struct Operation<'a> {
    process: u64,
    f: &'a str,
    /// The written value (from the invoke), or the read value (from an ok completion).
    value: &'a Value,
    invoke: u64,
    /// `None` for `info` or no completion: it may take effect at any time after `invoke`.
    complete: Option<u64>,
    outcome: EventType,
    final_read: bool,
}

impl Operation<'_> {
    /// The latest time it could have taken effect.
    fn effect_deadline(&self) -> u64 {
        self.complete.unwrap_or(u64::MAX)
    }

    /// Certainly took effect before `other` did (it completed before `other` was invoked).
    fn precedes(&self, other: &Operation) -> bool {
        self.complete.is_some_and(|c| c < other.invoke)
    }

    fn lost(&self, key: &str, final_read: &Value) -> LostWrite {
        LostWrite {
            key: key.to_string(),
            f: self.f.to_string(),
            value: self.value.clone(),
            process: self.process,
            invoke_time: self.invoke,
            complete_time: self.complete.unwrap_or(self.invoke),
            final_read: final_read.clone(),
        }
    }
}

/// The keyed operations of a history, grouped by key, in invoke order.
fn operations_by_key(events: &[Event]) -> BTreeMap<&str, Vec<Operation<'_>>> {
    let mut outstanding: std::collections::HashMap<u64, (usize, &str)> = Default::default();
    let mut by_key: BTreeMap<&str, Vec<Operation>> = BTreeMap::new();
    for event in events {
        let Some(key) = event.key.as_deref() else {
            continue;
        };
        if event.kind == EventType::Invoke {
            let ops = by_key.entry(key).or_default();
            outstanding.insert(event.process, (ops.len(), key));
            ops.push(Operation {
                process: event.process,
                f: &event.f,
                value: &event.value,
                invoke: event.time,
                complete: None,
                outcome: EventType::Info,
                final_read: event.is_final_read(),
            });
        } else if let Some((i, key)) = outstanding.remove(&event.process) {
            let Some(op) = by_key.get_mut(key).and_then(|ops| ops.get_mut(i)) else {
                continue;
            };
            op.outcome = event.kind;
            if event.kind != EventType::Info {
                op.complete = Some(event.time);
            }
            if is_read(op.f) && event.kind == EventType::Ok {
                op.value = &event.value;
            }
        }
    }
    by_key
}

/// Checks every written key's acknowledged writes against its final read.
pub fn check(events: &[Event], semantics: Semantics) -> LostWrites {
    let mut result = LostWrites {
        final_read_phase: events.iter().any(Event::is_final_read),
        ..LostWrites::default()
    };
    for (key, ops) in operations_by_key(events) {
        let writes: Vec<&Operation> = ops
            .iter()
            .filter(|op| !is_read(op.f) && !op.final_read)
            .collect();
        if writes.is_empty() {
            continue;
        }
        result.keys_written += 1;
        result.unknown_writes += writes
            .iter()
            .filter(|w| w.outcome == EventType::Info)
            .count() as u64;
        let final_read = ops
            .iter()
            .filter(|op| op.final_read && is_read(op.f) && op.outcome == EventType::Ok)
            .max_by_key(|op| op.complete);
        let acknowledged = writes.iter().filter(|w| w.outcome == EventType::Ok);
        let Some(read) = final_read else {
            result.keys_unread.push(key.to_string());
            result.acknowledged_unchecked += acknowledged.count() as u64;
            continue;
        };
        result.keys_read += 1;
        let (checked, unchecked): (Vec<&Operation>, Vec<&Operation>) =
            acknowledged.partition(|w| w.precedes(read));
        result.acknowledged_checked += checked.len() as u64;
        result.acknowledged_unchecked += unchecked.len() as u64;
        match semantics {
            Semantics::Kv => check_kv_key(key, read.value, &writes, &checked, &mut result),
            Semantics::Register => {
                check_register_key(key, read.value, &writes, &checked, &mut result)
            }
        }
    }
    result
}

/// Splits a kv final value into the writes it is made of: an optional first put, then
/// appends, each a write that may have happened (not `fail`). Returns the indices into
/// `writes`, and the byte offset of an unexplained rest (`None` when all of it parses).
/// Dynamic programming over offsets, so a value that is a prefix of another (`x1-1`,
/// `x1-12`) cannot mislead it.
fn parse_kv_value(read: &str, writes: &[&Operation]) -> (Vec<usize>, Option<usize>) {
    let candidates: Vec<(usize, &str)> = writes
        .iter()
        .enumerate()
        .filter(|(_, w)| w.outcome != EventType::Fail && matches!(w.f, "put" | "append"))
        .filter_map(|(i, w)| w.value.as_str().filter(|v| !v.is_empty()).map(|v| (i, v)))
        .collect();
    // reached[offset]: the (previous offset, write) that parses read[..offset].
    let mut reached: Vec<Option<(usize, usize)>> = vec![None; read.len() + 1];
    let mut furthest = 0;
    for at in 0..read.len() {
        if at > 0 && reached[at].is_none() {
            continue;
        }
        furthest = at;
        for &(i, value) in &candidates {
            let allowed = at == 0 || writes[i].f == "append";
            let end = at + value.len();
            if allowed && read[at..].starts_with(value) && reached[end].is_none() {
                reached[end] = Some((at, i));
            }
        }
    }
    let (mut end, rest) = if read.is_empty() || reached[read.len()].is_some() {
        (read.len(), None)
    } else {
        (furthest, Some(furthest))
    };
    let mut parts = Vec::new();
    while let Some((start, i)) = reached[end] {
        parts.push(i);
        end = start;
    }
    parts.reverse();
    (parts, rest)
}

fn check_kv_key(
    key: &str,
    read_value: &Value,
    writes: &[&Operation],
    acknowledged: &[&Operation],
    result: &mut LostWrites,
) {
    let text = read_value.as_str().unwrap_or("");
    let unexpected = |value: &str, reason: &str| UnexpectedValue {
        key: key.to_string(),
        value: Value::String(value.to_string()),
        final_read: read_value.clone(),
        reason: reason.to_string(),
    };
    if !read_value.is_string() {
        result.unexpected.push(unexpected(
            &read_value.to_string(),
            "a kv read must return a string",
        ));
    }
    let (parts, rest) = parse_kv_value(text, writes);
    if let Some(at) = rest {
        result.unexpected.push(unexpected(
            &text[at..],
            "not made of writes that may have happened (never written, or the write failed)",
        ));
    }
    let base = parts.first().map(|&i| writes[i]).filter(|w| w.f == "put");
    let mut seen = BTreeSet::new();
    for &i in &parts {
        let part = writes[i];
        let value = part.value.as_str().unwrap_or("");
        if !seen.insert(i) {
            result
                .unexpected
                .push(unexpected(value, "appended more than once"));
        } else if let Some(put) = base.filter(|b| part.f == "append" && part.precedes(b)) {
            let reason = format!(
                "appended before the put ({}) that begins the value",
                put.value.as_str().unwrap_or("")
            );
            result.unexpected.push(unexpected(value, &reason));
        }
    }
    let present = |w: &Operation| parts.iter().any(|&i| std::ptr::eq(writes[i], w));
    for write in acknowledged {
        // A put that may have taken effect after this write replaced it legitimately.
        let replaced = base
            .is_some_and(|put| !std::ptr::eq(put, *write) && write.invoke < put.effect_deadline());
        if !(present(write) || replaced) {
            result.lost.push(write.lost(key, read_value));
        }
    }
}

/// The value a register write leaves: `write`'s value, `cas`'s new value.
fn register_written<'a>(op: &Operation<'a>) -> Option<&'a Value> {
    match op.f {
        "write" => Some(op.value),
        "cas" => op.value.as_array().and_then(|pair| pair.get(1)),
        _ => None,
    }
}

fn check_register_key(
    key: &str,
    read_value: &Value,
    writes: &[&Operation],
    acknowledged: &[&Operation],
    result: &mut LostWrites,
) {
    // Could `candidate` have been the last write? Only if no acknowledged write certainly
    // came after it.
    let could_be_last = |candidate: &Operation| {
        !acknowledged
            .iter()
            .any(|w| !std::ptr::eq(*w, candidate) && candidate.precedes(w))
    };
    let candidates: Vec<&&Operation> = writes
        .iter()
        .filter(|w| w.outcome != EventType::Fail && register_written(w) == Some(read_value))
        .collect();
    let initial = read_value.is_null() && acknowledged.is_empty();
    if candidates.is_empty() && !read_value.is_null() {
        result.unexpected.push(UnexpectedValue {
            key: key.to_string(),
            value: read_value.clone(),
            final_read: read_value.clone(),
            reason: "no write that may have happened wrote it".into(),
        });
        return;
    }
    if initial || candidates.iter().any(|c| could_be_last(c)) {
        return;
    }
    // The acknowledged writes no other acknowledged write certainly followed: one of them is
    // last in every order, and none wrote what was read.
    for write in acknowledged {
        let followed = acknowledged
            .iter()
            .any(|other| !std::ptr::eq(*other, *write) && write.precedes(other));
        if !followed && register_written(write) != Some(read_value) {
            result.lost.push(write.lost(key, read_value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made history: (process, type, f, key, value, time); final reads are marked by
    /// the caller.
    fn history(lines: &[(u64, EventType, &str, &str, Value, u64)]) -> Vec<Event> {
        lines
            .iter()
            .map(|(process, kind, f, key, value, time)| {
                let mut event = Event::new(*process, *kind, f, Some(key), value.clone());
                event.time = *time;
                event
            })
            .collect()
    }

    /// Appends `events` of a final read of `key` by `process` returning `value` at `time`.
    fn final_read(events: &mut Vec<Event>, process: u64, f: &str, key: &str, value: Value) {
        let time = events.iter().map(|e| e.time).max().unwrap_or(0) + 10;
        for (kind, value, at) in [
            (EventType::Invoke, Value::Null, time),
            (EventType::Ok, value, time + 5),
        ] {
            let mut event = Event::new(process, kind, f, Some(key), value);
            event.time = at;
            event.phase = Some(crate::history::FINAL_READ_PHASE.into());
            events.push(event);
        }
    }

    /// Two acknowledged appends to `k` and an info append that never came back; a put to `j`.
    fn kv_writes() -> Vec<Event> {
        use EventType::*;
        history(&[
            (0, Invoke, "append", "k", json!("x0-1"), 10),
            (0, Ok, "append", "k", json!("x0-1"), 20),
            (1, Invoke, "append", "k", json!("x1-1"), 30),
            (1, Ok, "append", "k", json!("x1-1"), 40),
            (2, Invoke, "append", "k", json!("x2-1"), 50),
            (2, Info, "append", "k", json!("x2-1"), 60),
            (3, Invoke, "put", "j", json!("x3-1"), 70),
            (3, Ok, "put", "j", json!("x3-1"), 80),
            // A read during the test is not a final read.
            (4, Invoke, "get", "k", Value::Null, 90),
            (4, Ok, "get", "k", json!(""), 95),
        ])
    }

    /// [`kv_writes`] with final reads of `k` and `j` (and `extra` events before them), checked.
    fn check_kv(extra: &[Event], k: &str, j: &str) -> LostWrites {
        let mut events = kv_writes();
        events.extend_from_slice(extra);
        final_read(&mut events, 10, "get", "k", json!(k));
        final_read(&mut events, 11, "get", "j", json!(j));
        check(&events, Semantics::Kv)
    }

    #[test]
    fn every_acknowledged_append_present_passes_with_or_without_the_unknown_one() {
        for k in ["x0-1x1-1", "x0-1x1-1x2-1", "x0-1x2-1x1-1"] {
            let result = check_kv(&[], k, "x3-1");
            assert_eq!(result.validity(), Validity::Valid, "{k}: {result:?}");
            assert_eq!((result.keys_written, result.keys_read), (2, 2));
            assert_eq!(result.acknowledged_checked, 3);
            assert_eq!(result.unknown_writes, 1);
            assert_eq!(result.to_json()["valid"], true);
        }
    }

    #[test]
    fn a_lost_acknowledged_append_fails_and_is_listed() {
        // x1-1 is gone; the unknown x2-1 took effect.
        let result = check_kv(&[], "x0-1x2-1", "x3-1");
        assert_eq!(result.validity(), Validity::Invalid);
        assert_eq!(result.lost.len(), 1, "{result:?}");
        let lost = &result.lost[0];
        assert_eq!(
            (
                lost.key.as_str(),
                lost.f.as_str(),
                &lost.value,
                lost.process
            ),
            ("k", "append", &json!("x1-1"), 1)
        );
        assert_eq!((lost.invoke_time, lost.complete_time), (30, 40));
        assert!(result.unexpected.is_empty(), "{result:?}");
        let json = result.to_json();
        assert_eq!(json["valid"], false);
        assert_eq!(json["lost"][0]["value"], "x1-1");
        assert_eq!(json["lost_count"], 1);
    }

    #[test]
    fn a_longer_value_does_not_pass_for_an_acknowledged_one() {
        // `x1-12` was never written: the read holds `x1-1` and an unexplained `2`.
        let result = check_kv(&[], "x0-1x1-12", "x3-1");
        assert_eq!(result.validity(), Validity::Invalid);
        assert_eq!(result.unexpected.len(), 1, "{result:?}");
        assert_eq!(result.unexpected[0].value, json!("2"));
    }

    #[test]
    fn a_lost_put_and_unexpected_values_fail() {
        let result = check_kv(&[], "x0-1x1-1x1-1", "");
        assert_eq!(result.lost.len(), 1, "{result:?}");
        assert_eq!(
            (result.lost[0].key.as_str(), result.lost[0].f.as_str()),
            ("j", "put")
        );
        assert_eq!(result.unexpected.len(), 1, "{result:?}");
        assert_eq!(result.unexpected[0].reason, "appended more than once");
    }

    #[test]
    fn a_put_that_may_come_last_replaces_earlier_appends() {
        use EventType::*;
        // An info put concurrent with the second append: it may have replaced both appends.
        let mut put = history(&[
            (5, Invoke, "put", "k", json!("x5-1"), 35),
            (5, Info, "put", "k", json!("x5-1"), 45),
        ]);
        let result = check_kv(&put, "x5-1x2-1", "x3-1");
        assert_eq!(result.validity(), Validity::Valid, "{result:?}");
        // Had the put failed, the appends would be lost and its value unexplained.
        put[1].kind = Fail;
        let result = check_kv(&put, "x5-1x2-1", "x3-1");
        assert_eq!(result.validity(), Validity::Invalid);
        assert_eq!(result.lost.len(), 2, "{result:?}");
        assert_eq!(result.unexpected.len(), 1, "{result:?}");
    }

    #[test]
    fn a_key_without_a_final_read_is_unknown() {
        let mut events = kv_writes();
        final_read(&mut events, 10, "get", "k", json!("x0-1x1-1"));
        let result = check(&events, Semantics::Kv);
        assert_eq!(result.validity(), Validity::Unknown);
        assert_eq!(result.keys_unread, vec!["j".to_string()]);
        assert_eq!(
            (result.acknowledged_checked, result.acknowledged_unchecked),
            (2, 1)
        );
        // No final-read phase at all: nothing can be said.
        let result = check(&kv_writes(), Semantics::Kv);
        assert!(!result.final_read_phase);
        assert_eq!((result.keys_read, result.keys_unread.len()), (0, 2));
        assert_eq!(result.validity(), Validity::Unknown);
    }

    fn register_writes() -> Vec<Event> {
        use EventType::*;
        history(&[
            (0, Invoke, "write", "r", json!(1), 10),
            (0, Ok, "write", "r", json!(1), 20),
            (1, Invoke, "cas", "r", json!([1, 2]), 30),
            (1, Ok, "cas", "r", json!([1, 2]), 40),
            (2, Invoke, "write", "r", json!(3), 35),
            (2, Info, "write", "r", json!(3), 45),
            (3, Invoke, "cas", "r", json!([2, 4]), 50),
            (3, Fail, "cas", "r", json!([2, 4]), 60),
        ])
    }

    #[test]
    fn a_register_final_read_must_be_a_value_that_could_be_last() {
        for (read, valid) in [
            (json!(2), Validity::Valid),   // the last acknowledged write
            (json!(3), Validity::Valid),   // the unknown write, concurrent with it
            (json!(1), Validity::Invalid), // certainly overwritten by the cas
            (json!(4), Validity::Invalid), // only a failed cas wrote it
            (Value::Null, Validity::Invalid),
        ] {
            let mut events = register_writes();
            final_read(&mut events, 10, "read", "r", read.clone());
            let result = check(&events, Semantics::Register);
            assert_eq!(result.validity(), valid, "read {read}: {result:?}");
            assert_eq!(result.acknowledged_checked, 2);
            if read == json!(1) || read.is_null() {
                assert_eq!(result.lost.len(), 1, "{result:?}");
                assert_eq!(result.lost[0].f, "cas");
                assert_eq!(result.lost[0].process, 1);
            }
            if read == json!(4) {
                assert_eq!(result.unexpected.len(), 1, "{result:?}");
            }
        }
    }

    #[test]
    fn a_register_nobody_acknowledged_a_write_to_may_read_null() {
        use EventType::*;
        let mut events = history(&[
            (0, Invoke, "write", "r", json!(1), 10),
            (0, Info, "write", "r", json!(1), 20),
        ]);
        final_read(&mut events, 10, "read", "r", Value::Null);
        assert_eq!(
            check(&events, Semantics::Register).validity(),
            Validity::Valid
        );
    }
}
