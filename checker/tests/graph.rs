//! The graph pre-pass on hand-written ok/bad pairs: each bad history is a
//! real violation the pre-pass must report (naming the operations), and its
//! ok twin, one change away, must not be reported.

use std::path::Path;

use checker::generate::{generate, Anomaly, GenerateConfig, GeneratedModel};
use checker::graph::{check, GraphVerdict, GraphViolation};
use checker::history::{Event, EventKind, History};
use checker::model::ModelKind;
use checker::value::Value;

/// One event: (process, type, f, value). Key `k` unless the f has a `key:` prefix.
type E<'a> = (i64, &'a str, &'a str, Value);

fn history(events: &[E]) -> History {
    let events: Vec<Event> = events
        .iter()
        .enumerate()
        .map(|(i, (process, kind, f, value))| {
            let (key, f) = match f.split_once(':') {
                Some((k, f)) => (k.to_string(), f.to_string()),
                None => ("k".to_string(), f.to_string()),
            };
            Event {
                process: *process,
                kind: EventKind::parse(kind).expect("kind"),
                f,
                key: Some(key),
                value: value.clone(),
                time: Some(i as i64 * 1000),
                line: i + 1,
            }
        })
        .collect();
    History::from_events(&events, Path::new("<test>")).expect("valid history")
}

fn int(i: i64) -> Value {
    Value::Int(i)
}
fn s(text: &str) -> Value {
    Value::Str(text.to_string())
}
fn pair(a: i64, b: i64) -> Value {
    Value::List(vec![int(a), int(b)])
}
const NIL: Value = Value::Nil;

fn register() -> ModelKind {
    ModelKind::Register { initial: NIL }
}
fn cas_register() -> ModelKind {
    ModelKind::CasRegister { initial: NIL }
}

fn violation(h: &History, model: &ModelKind) -> GraphViolation {
    match check(h, model) {
        GraphVerdict::Violation(v) => v,
        other => panic!("expected a violation, got {other:?}"),
    }
}

fn clean(h: &History, model: &ModelKind) {
    match check(h, model) {
        GraphVerdict::NoViolationFound => {}
        other => panic!("expected no violation, got {other:?}"),
    }
}

/// Stale read: write 1, write 2, then a read of 1.
#[test]
fn register_stale_read_is_a_cycle_naming_the_read() {
    let bad = history(&[
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
        (1, "invoke", "write", int(2)),
        (1, "ok", "write", int(2)),
        (2, "invoke", "read", NIL),
        (2, "ok", "read", int(1)),
    ]);
    let v = violation(&bad, &register());
    assert!(v.operations.contains(&2), "{v:?}");
    assert!(v.operations.contains(&1), "{v:?}");
    assert!(v.explanation.contains("cycle"), "{}", v.explanation);
    assert!(v.explanation.contains("op 2"), "{}", v.explanation);
    assert_eq!(v.key.as_deref(), Some("k"));

    let ok = history(&[
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
        (1, "invoke", "write", int(2)),
        (1, "ok", "write", int(2)),
        (2, "invoke", "read", NIL),
        (2, "ok", "read", int(2)),
    ]);
    clean(&ok, &register());
}

/// The same stale read is fine if the second write overlaps the read.
#[test]
fn register_concurrent_write_makes_old_read_legal() {
    let ok = history(&[
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
        (1, "invoke", "write", int(2)),
        (2, "invoke", "read", NIL),
        (2, "ok", "read", int(1)),
        (1, "ok", "write", int(2)),
    ]);
    clean(&ok, &register());
}

#[test]
fn register_read_of_unwritten_value() {
    let bad = history(&[
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
        (2, "invoke", "read", NIL),
        (2, "ok", "read", int(5)),
    ]);
    let v = violation(&bad, &register());
    assert_eq!(v.operations, vec![1]);
    assert!(
        v.explanation.contains("no operation wrote"),
        "{}",
        v.explanation
    );

    // A write that failed certainly did not happen: reading its value is impossible.
    let bad_failed = history(&[
        (1, "invoke", "write", int(5)),
        (1, "fail", "write", int(5)),
        (2, "invoke", "read", NIL),
        (2, "ok", "read", int(5)),
    ]);
    violation(&bad_failed, &register());

    // An info write may have happened: reading it is fine.
    let ok = history(&[
        (1, "invoke", "write", int(5)),
        (2, "invoke", "read", NIL),
        (2, "ok", "read", int(5)),
        (1, "info", "write", int(5)),
    ]);
    clean(&ok, &register());
}

#[test]
fn register_read_finishing_before_its_write_starts() {
    let bad = history(&[
        (2, "invoke", "read", NIL),
        (2, "ok", "read", int(1)),
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
    ]);
    let v = violation(&bad, &register());
    assert_eq!(v.operations, vec![0, 1]);
    assert!(
        v.explanation.contains("before it was invoked"),
        "{}",
        v.explanation
    );

    let ok = history(&[
        (2, "invoke", "read", NIL),
        (1, "invoke", "write", int(1)),
        (2, "ok", "read", int(1)),
        (1, "ok", "write", int(1)),
    ]);
    clean(&ok, &register());
}

/// Lost write: 2 was acknowledged, then a later read still sees nil.
#[test]
fn register_initial_value_after_completed_write() {
    let bad = history(&[
        (1, "invoke", "write", int(2)),
        (1, "ok", "write", int(2)),
        (2, "invoke", "read", NIL),
        (2, "ok", "read", NIL),
    ]);
    violation(&bad, &register());
    let ok = history(&[
        (2, "invoke", "read", NIL),
        (1, "invoke", "write", int(2)),
        (1, "ok", "write", int(2)),
        (2, "ok", "read", NIL),
    ]);
    clean(&ok, &register());
}

#[test]
fn cas_chain_and_double_consumption() {
    let ok = history(&[
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
        (2, "invoke", "cas", pair(1, 2)),
        (2, "ok", "cas", pair(1, 2)),
        (3, "invoke", "cas", pair(2, 3)),
        (3, "ok", "cas", pair(2, 3)),
        (1, "invoke", "read", NIL),
        (1, "ok", "read", int(3)),
    ]);
    clean(&ok, &cas_register());

    let bad = history(&[
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
        (2, "invoke", "cas", pair(1, 2)),
        (3, "invoke", "cas", pair(1, 3)),
        (2, "ok", "cas", pair(1, 2)),
        (3, "ok", "cas", pair(1, 3)),
    ]);
    let v = violation(&bad, &cas_register());
    assert_eq!(v.operations, vec![1, 2]);
    assert!(
        v.explanation.contains("both replaced 1"),
        "{}",
        v.explanation
    );
}

/// After cas 1→2 completed, a read of 1 is stale: the "follows" edge and real time form a cycle.
#[test]
fn cas_then_stale_read() {
    let bad = history(&[
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
        (2, "invoke", "cas", pair(1, 2)),
        (2, "ok", "cas", pair(1, 2)),
        (3, "invoke", "read", NIL),
        (3, "ok", "read", int(1)),
    ]);
    let v = violation(&bad, &cas_register());
    assert!(v.operations.contains(&2), "{v:?}");
    assert!(
        v.explanation.contains("applied directly"),
        "{}",
        v.explanation
    );

    let ok = history(&[
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
        (2, "invoke", "cas", pair(1, 2)),
        (3, "invoke", "read", NIL),
        (3, "ok", "read", int(1)),
        (2, "ok", "cas", pair(1, 2)),
    ]);
    clean(&ok, &cas_register());

    // A failed CAS did not happen and constrains nothing (Knossos semantics).
    let ok_failed = history(&[
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
        (2, "invoke", "cas", pair(1, 2)),
        (2, "fail", "cas", pair(1, 2)),
        (3, "invoke", "read", NIL),
        (3, "ok", "read", int(1)),
    ]);
    clean(&ok_failed, &cas_register());
}

#[test]
fn kv_appends_seen_in_two_orders() {
    let bad = history(&[
        (1, "invoke", "append", s("x1y")),
        (2, "invoke", "append", s("x2y")),
        (1, "ok", "append", s("x1y")),
        (2, "ok", "append", s("x2y")),
        (3, "invoke", "get", NIL),
        (3, "ok", "get", s("x1yx2y")),
        (4, "invoke", "get", NIL),
        (4, "ok", "get", s("x2yx1y")),
    ]);
    let v = violation(&bad, &ModelKind::Kv);
    assert!(
        v.explanation.contains("different orders"),
        "{}",
        v.explanation
    );
    assert!(
        v.operations.contains(&2) && v.operations.contains(&3),
        "{v:?}"
    );

    let ok = history(&[
        (1, "invoke", "append", s("x1y")),
        (2, "invoke", "append", s("x2y")),
        (1, "ok", "append", s("x1y")),
        (2, "ok", "append", s("x2y")),
        (3, "invoke", "get", NIL),
        (3, "ok", "get", s("x2yx1y")),
        (4, "invoke", "get", NIL),
        (4, "ok", "get", s("x2yx1y")),
    ]);
    clean(&ok, &ModelKind::Kv);
}

/// A get that shrinks: it saw x1 then, later, a get sees only the empty value.
#[test]
fn kv_lost_append_and_shrinking_value() {
    let bad = history(&[
        (1, "invoke", "append", s("x1y")),
        (1, "ok", "append", s("x1y")),
        (2, "invoke", "get", NIL),
        (2, "ok", "get", s("")),
    ]);
    let v = violation(&bad, &ModelKind::Kv);
    assert!(
        v.operations.contains(&0) && v.operations.contains(&1),
        "{v:?}"
    );

    let bad_order = history(&[
        (1, "invoke", "append", s("x1y")),
        (2, "invoke", "append", s("x2y")),
        (1, "ok", "append", s("x1y")),
        (2, "ok", "append", s("x2y")),
        (3, "invoke", "get", NIL),
        (3, "ok", "get", s("x1yx2y")),
        (3, "invoke", "get", NIL),
        (3, "ok", "get", s("x1y")),
    ]);
    violation(&bad_order, &ModelKind::Kv);

    let ok = history(&[
        (1, "invoke", "append", s("x1y")),
        (2, "invoke", "get", NIL),
        (2, "ok", "get", s("")),
        (1, "ok", "append", s("x1y")),
        (2, "invoke", "get", NIL),
        (2, "ok", "get", s("x1y")),
    ]);
    clean(&ok, &ModelKind::Kv);
}

#[test]
fn kv_put_then_stale_get_and_unbuildable_value() {
    let bad = history(&[
        (1, "invoke", "put", s("a1")),
        (1, "ok", "put", s("a1")),
        (1, "invoke", "put", s("a2")),
        (1, "ok", "put", s("a2")),
        (1, "invoke", "append", s("x3y")),
        (1, "ok", "append", s("x3y")),
        (2, "invoke", "get", NIL),
        (2, "ok", "get", s("a1")),
    ]);
    violation(&bad, &ModelKind::Kv);

    let ok = history(&[
        (1, "invoke", "put", s("a1")),
        (1, "ok", "put", s("a1")),
        (1, "invoke", "put", s("a2")),
        (1, "ok", "put", s("a2")),
        (1, "invoke", "append", s("x3y")),
        (1, "ok", "append", s("x3y")),
        (2, "invoke", "get", NIL),
        (2, "ok", "get", s("a2x3y")),
    ]);
    clean(&ok, &ModelKind::Kv);

    let unbuildable = history(&[
        (1, "invoke", "put", s("a1")),
        (1, "ok", "put", s("a1")),
        (2, "invoke", "get", NIL),
        (2, "ok", "get", s("a1zz")),
    ]);
    let v = violation(&unbuildable, &ModelKind::Kv);
    assert_eq!(v.operations, vec![1]);
}

#[test]
fn not_applicable_without_unique_values_or_support() {
    let duplicate = history(&[
        (1, "invoke", "write", int(1)),
        (1, "ok", "write", int(1)),
        (2, "invoke", "write", int(1)),
        (2, "ok", "write", int(1)),
    ]);
    assert!(matches!(
        check(&duplicate, &register()),
        GraphVerdict::NotApplicable(_)
    ));
    assert!(matches!(
        check(&duplicate, &ModelKind::Mutex),
        GraphVerdict::NotApplicable(_)
    ));
    // A violation on one key is reported even if another key is not analysable.
    let mixed = history(&[
        (1, "invoke", "a:write", int(1)),
        (1, "ok", "a:write", int(1)),
        (2, "invoke", "a:write", int(1)),
        (2, "ok", "a:write", int(1)),
        (3, "invoke", "b:read", NIL),
        (3, "ok", "b:read", int(9)),
    ]);
    let v = violation(&mixed, &register());
    assert_eq!(v.key.as_deref(), Some("b"));
}

/// Generated histories: clean ones pass, an injected anomaly is found on its key.
#[test]
fn generated_histories_ok_and_bad() {
    for (i, model) in [
        GeneratedModel::Kv,
        GeneratedModel::Register,
        GeneratedModel::CasRegister,
    ]
    .into_iter()
    .enumerate()
    {
        let seed = 100 + i as u64;
        println!("SEED={seed} model={}", model.name());
        let config = GenerateConfig::new(model, 16, 50, 20_000, seed);
        let ok = generate(&config);
        assert_eq!(ok.history.len(), 20_000);
        clean(&ok.history, &model.model_kind());
        for anomaly in [Anomaly::StaleRead, Anomaly::LostWrite] {
            let bad = generate(&GenerateConfig {
                anomaly: Some(anomaly),
                ..config.clone()
            });
            assert_eq!(bad.anomaly_operations.len(), 3, "{anomaly:?}");
            let v = violation(&bad.history, &model.model_kind());
            assert_eq!(v.key, bad.anomaly_key, "{anomaly:?}: {}", v.explanation);
            // The stale read names the read; the lost write names the lost write.
            let culprit = match anomaly {
                Anomaly::StaleRead => bad.anomaly_operations[2],
                Anomaly::LostWrite => bad.anomaly_operations[1],
            };
            assert!(v.operations.contains(&culprit), "{anomaly:?}: {v:?}");
        }
    }
}
