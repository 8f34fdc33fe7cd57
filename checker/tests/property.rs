//! Property tests: the checker against the brute-force oracle on random
//! small histories, the graph pre-pass against the oracle, and the checker
//! on large generated histories with and without an injected anomaly.
//!
//! Every randomized test prints `SEED=n` first; replay one case with
//! `SEED=n cargo test -p checker --test property`. `PROPERTY_CASES=n` runs
//! more random cases per model (default 1000).

use std::path::Path;

use checker::check_history;
use checker::generate::{generate, Anomaly, GenerateConfig, GeneratedModel, SplitMix64};
use checker::graph::{self, GraphVerdict};
use checker::history::{Event, EventKind, History};
use checker::model::ModelKind;
use checker::oracle;
use checker::value::Value;
use checker::{GraphMode, Options, Verdict};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

/// The seeds to run: `SEED` alone if set, else `cases` seeds from `base`.
fn seeds(base: u64) -> Vec<u64> {
    if let Some(seed) = env_u64("SEED") {
        return vec![seed];
    }
    let cases = env_u64("PROPERTY_CASES").unwrap_or(1000);
    (0..cases).map(|i| base + i).collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Family {
    Kv,
    Register,
    CasRegister,
}

/// A random history of at most `operations` operations by 2-4 processes.
/// Outputs are random, half the time what a sequential store would answer
/// at the invocation, so both verdicts are common. With `unique`, every
/// written value is distinct (what the graph pre-pass needs).
fn random_history(seed: u64, family: Family, operations: usize, unique: bool) -> History {
    let mut rng = SplitMix64::new(seed);
    let processes = 2 + rng.below(3) as i64;
    let mut events: Vec<Event> = Vec::new();
    let mut pending: Vec<Option<(String, Value)>> = vec![None; processes as usize];
    let mut invoked = 0usize;
    let mut counter = 0i64;
    // The sequential store, applied at invocation.
    let mut text = String::new();
    let mut reg: Option<i64> = None;
    let mut written: Vec<Value> = vec![Value::Nil];
    let fresh_int = |rng: &mut SplitMix64, counter: &mut i64| -> i64 {
        if unique {
            *counter += 1;
            *counter
        } else {
            rng.below(3) as i64
        }
    };
    // One key: the oracle enumerates one partition, the checker's partitioning is moot.
    let keyed = |_f: &str| Some("k".to_string());
    loop {
        let p = rng.below(processes as u64) as usize;
        let all_idle = pending.iter().all(Option::is_none);
        if invoked >= operations && all_idle {
            break;
        }
        match pending[p].take() {
            None if invoked < operations => {
                invoked += 1;
                let roll = rng.below(100);
                let (f, input) = match family {
                    Family::Kv => {
                        if roll < 40 {
                            ("get", Value::Nil)
                        } else {
                            let v = if unique {
                                counter += 1;
                                format!("x{counter}y")
                            } else {
                                ["a", "b"][rng.below(2) as usize].to_string()
                            };
                            written.push(Value::Str(v.clone()));
                            (if roll < 65 { "put" } else { "append" }, Value::Str(v))
                        }
                    }
                    Family::Register | Family::CasRegister => {
                        if roll < 40 {
                            ("read", Value::Nil)
                        } else if roll < 75 || family == Family::Register {
                            let v = fresh_int(&mut rng, &mut counter);
                            written.push(Value::Int(v));
                            ("write", Value::Int(v))
                        } else {
                            let old = written[rng.below(written.len() as u64) as usize].clone();
                            let new = fresh_int(&mut rng, &mut counter);
                            written.push(Value::Int(new));
                            ("cas", Value::List(vec![old, Value::Int(new)]))
                        }
                    }
                };
                // The sequential answer at invocation time.
                let sequential = match (f, &input) {
                    ("get", _) => Value::Str(text.clone()),
                    ("put", Value::Str(v)) => {
                        text = v.clone();
                        input.clone()
                    }
                    ("append", Value::Str(v)) => {
                        text.push_str(v);
                        input.clone()
                    }
                    ("read", _) => reg.map_or(Value::Nil, Value::Int),
                    ("write", v) => {
                        reg = v.as_int();
                        input.clone()
                    }
                    ("cas", Value::List(l)) => {
                        if l[0] == reg.map_or(Value::Nil, Value::Int) {
                            reg = l[1].as_int();
                            input.clone()
                        } else {
                            Value::Keyword("fail".into())
                        }
                    }
                    _ => input.clone(),
                };
                events.push(Event {
                    process: p as i64,
                    kind: EventKind::Invoke,
                    f: f.to_string(),
                    key: keyed(f),
                    value: input,
                    time: None,
                    line: events.len() + 1,
                });
                pending[p] = Some((f.to_string(), sequential));
            }
            None => {}
            Some((f, sequential)) => {
                let roll = rng.below(100);
                let (kind, value) = if roll < 10 {
                    (EventKind::Info, Value::Nil)
                } else if f == "cas" && (sequential == Value::Keyword("fail".into()) || roll < 20) {
                    (EventKind::Fail, Value::Nil)
                } else if f == "get" || f == "read" {
                    let value = if rng.below(2) == 0 {
                        sequential
                    } else if family == Family::Kv {
                        let a = &written[rng.below(written.len() as u64) as usize];
                        let b = &written[rng.below(written.len() as u64) as usize];
                        let join = |v: &Value| v.as_str().unwrap_or("").to_string();
                        match rng.below(3) {
                            0 => Value::Str(join(a)),
                            1 => Value::Str(join(a) + &join(b)),
                            _ => Value::Str(String::new()),
                        }
                    } else {
                        written[rng.below(written.len() as u64) as usize].clone()
                    };
                    (EventKind::Ok, value)
                } else {
                    (EventKind::Ok, Value::Nil)
                };
                events.push(Event {
                    process: p as i64,
                    kind,
                    f: f.clone(),
                    key: keyed(&f),
                    value,
                    time: None,
                    line: events.len() + 1,
                });
            }
        }
    }
    // Leave the last operation of a process open now and then (never completed = info).
    if rng.below(4) == 0 {
        if let Some(last) = events.iter().rposition(|e| e.kind != EventKind::Invoke) {
            events.remove(last);
        }
    }
    History::from_events(&events, Path::new("<random>")).expect("generated history pairs")
}

fn kinds(family: Family) -> Vec<ModelKind> {
    match family {
        Family::Kv => vec![ModelKind::Kv],
        Family::Register => vec![ModelKind::Register {
            initial: Value::Nil,
        }],
        Family::CasRegister => vec![
            ModelKind::CasRegister {
                initial: Value::Nil,
            },
            ModelKind::CasRegister {
                initial: Value::Int(0),
            },
            ModelKind::Etcd,
        ],
    }
}

fn checker_verdict(history: &History, kind: &ModelKind) -> Verdict {
    check_history(history, kind, &Options::default())
        .expect("model accepts the history")
        .verdict
}

/// The verdict with the graph pre-pass run before every search (so any
/// violation it claims decides), and whether it decided.
fn graph_first_verdict(history: &History, kind: &ModelKind) -> (Verdict, bool) {
    let options = Options {
        graph: GraphMode::First,
        ..Options::default()
    };
    let result = check_history(history, kind, &options).expect("model accepts the history");
    let by_graph = result.partition_results.iter().any(|p| p.decided_by_graph);
    (result.verdict, by_graph)
}

#[test]
fn checker_agrees_with_oracle_on_random_small_histories() {
    for (family, base) in [
        (Family::Kv, 1_000_000u64),
        (Family::Register, 2_000_000),
        (Family::CasRegister, 3_000_000),
    ] {
        for kind in kinds(family) {
            let mut verdicts = [0usize; 2];
            for seed in seeds(base) {
                let operations = 1 + (seed % 8) as usize;
                let h = random_history(seed, family, operations, seed % 3 == 0);
                let expected = oracle::check(&h, &kind).expect("small enough");
                let got = checker_verdict(&h, &kind);
                assert_eq!(
                    got,
                    if expected {
                        Verdict::Linearizable
                    } else {
                        Verdict::NotLinearizable
                    },
                    "SEED={seed} model={} history:\n{:#?}",
                    kind.name(),
                    h.operations
                );
                verdicts[usize::from(expected)] += 1;
                // The wired-in pre-pass, run first, must not change any verdict.
                let (first, by_graph) = graph_first_verdict(&h, &kind);
                assert_eq!(
                    first,
                    got,
                    "SEED={seed} model={} with --graph first (decided by graph: {by_graph})\n{:#?}",
                    kind.name(),
                    h.operations
                );
            }
            println!(
                "model {}: {} linearizable, {} not",
                kind.name(),
                verdicts[1],
                verdicts[0]
            );
            if env_u64("SEED").is_none() {
                // Both verdicts must be common, or the test proves little.
                let total = verdicts[0] + verdicts[1];
                assert!(
                    verdicts[0] * 10 >= total,
                    "{}: too few violations {verdicts:?}",
                    kind.name()
                );
                assert!(
                    verdicts[1] * 10 >= total,
                    "{}: too few ok {verdicts:?}",
                    kind.name()
                );
            }
        }
    }
}

/// The graph pre-pass never reports a violation the oracle disagrees with,
/// and for read/write registers and put/get it finds every violation.
#[test]
fn graph_prepass_is_sound_and_complete_where_claimed() {
    for (family, base) in [
        (Family::Kv, 4_000_000u64),
        (Family::Register, 5_000_000),
        (Family::CasRegister, 6_000_000),
    ] {
        for kind in kinds(family).iter().filter(|k| graph::supports(k)) {
            let (mut found, mut violations) = (0usize, 0usize);
            for seed in seeds(base) {
                let operations = 1 + (seed % 8) as usize;
                let h = random_history(seed, family, operations, true);
                let linearizable = oracle::check(&h, kind).expect("small enough");
                let verdict = graph::check(&h, kind);
                // The same through check_history with the graph first: a
                // violation decided by the graph must be a real one.
                let (wired, by_graph) = graph_first_verdict(&h, kind);
                assert_eq!(
                wired == Verdict::Linearizable,
                linearizable,
                "SEED={seed} model={}: check_history with --graph first (decided by graph: {by_graph})\n{:#?}",
                kind.name(),
                h.operations
            );
                if by_graph {
                    assert!(matches!(verdict, GraphVerdict::Violation(_)), "SEED={seed}");
                }
                if let GraphVerdict::Violation(v) = &verdict {
                    assert!(
                    !linearizable,
                    "SEED={seed} model={}: the graph reported a violation in a linearizable history: {}\n{:#?}",
                    kind.name(),
                    v.explanation,
                    h.operations
                );
                    found += 1;
                }
                if !linearizable {
                    violations += 1;
                    // Registers without CAS: blocks and real time decide exactly.
                    if family == Family::Register {
                        assert!(
                        matches!(verdict, GraphVerdict::Violation(_)),
                        "SEED={seed}: register violation missed by the graph: {verdict:?}\n{:#?}",
                        h.operations
                    );
                    }
                }
            }
            println!(
                "model {}: graph found {found} of {violations} violations",
                kind.name()
            );
            if env_u64("SEED").is_none() {
                assert!(
                    found > 0,
                    "{}: the graph never found a violation",
                    kind.name()
                );
            }
        }
    }
}

#[test]
fn oracle_on_known_tiny_histories() {
    let ev = |p: i64, kind: EventKind, f: &str, v: Value| Event {
        process: p,
        kind,
        f: f.into(),
        key: None,
        value: v,
        time: None,
        line: 0,
    };
    let kind = ModelKind::Register {
        initial: Value::Nil,
    };
    // Write 1 then read nil, sequentially: not linearizable.
    let bad = History::from_events(
        &[
            ev(1, EventKind::Invoke, "write", Value::Int(1)),
            ev(1, EventKind::Ok, "write", Value::Int(1)),
            ev(2, EventKind::Invoke, "read", Value::Nil),
            ev(2, EventKind::Ok, "read", Value::Nil),
        ],
        Path::new("t"),
    )
    .unwrap();
    assert!(!oracle::check(&bad, &kind).unwrap());
    // The same write left info: it may not have happened, so reading nil is fine.
    let ok = History::from_events(
        &[
            ev(1, EventKind::Invoke, "write", Value::Int(1)),
            ev(1, EventKind::Info, "write", Value::Int(1)),
            ev(2, EventKind::Invoke, "read", Value::Nil),
            ev(2, EventKind::Ok, "read", Value::Nil),
            ev(3, EventKind::Invoke, "read", Value::Nil),
            ev(3, EventKind::Ok, "read", Value::Int(1)),
        ],
        Path::new("t"),
    )
    .unwrap();
    assert!(oracle::check(&ok, &kind).unwrap());
    // ...but then a later read of nil again is not.
    let mut events = vec![
        ev(1, EventKind::Invoke, "write", Value::Int(1)),
        ev(1, EventKind::Info, "write", Value::Int(1)),
        ev(3, EventKind::Invoke, "read", Value::Nil),
        ev(3, EventKind::Ok, "read", Value::Int(1)),
    ];
    events.push(ev(2, EventKind::Invoke, "read", Value::Nil));
    events.push(ev(2, EventKind::Ok, "read", Value::Nil));
    let bad = History::from_events(&events, Path::new("t")).unwrap();
    assert!(!oracle::check(&bad, &kind).unwrap());
}

#[test]
fn large_generated_histories_are_judged_right() {
    let operations = env_u64("GENERATED_OPERATIONS").unwrap_or(10_000) as usize;
    for (i, model) in [
        GeneratedModel::Kv,
        GeneratedModel::Register,
        GeneratedModel::CasRegister,
    ]
    .into_iter()
    .enumerate()
    {
        let seed = env_u64("SEED").unwrap_or(7_000 + i as u64);
        println!("SEED={seed} model={} operations={operations}", model.name());
        let config = GenerateConfig::new(model, 16, 100, operations, seed);
        let ok = generate(&config);
        let kind = model.model_kind();
        assert_eq!(checker_verdict(&ok.history, &kind), Verdict::Linearizable);
        for anomaly in [Anomaly::StaleRead, Anomaly::LostWrite] {
            let bad = generate(&GenerateConfig {
                anomaly: Some(anomaly),
                ..config.clone()
            });
            let result = check_history(&bad.history, &kind, &Options::default()).unwrap();
            assert_eq!(result.verdict, Verdict::NotLinearizable, "{anomaly:?}");
            let failing: Vec<Option<String>> = result.violations().map(|p| p.key.clone()).collect();
            assert_eq!(failing, vec![bad.anomaly_key.clone()], "{anomaly:?}");
        }
    }
}

#[test]
fn generation_is_deterministic_per_seed() {
    let config = GenerateConfig {
        anomaly: Some(Anomaly::LostWrite),
        ..GenerateConfig::new(GeneratedModel::CasRegister, 8, 10, 2_000, 42)
    };
    let a = generate(&config);
    let b = generate(&config);
    assert_eq!(a.history, b.history);
    assert_eq!(a.anomaly_operations, b.anomaly_operations);
    let c = generate(&GenerateConfig { seed: 43, ..config });
    assert_ne!(a.history, c.history);
    // Some operations end info, and the clients overlap.
    let info = a
        .history
        .operations
        .iter()
        .filter(|o| o.return_index.is_none())
        .count();
    assert!(info > 0 && info < 200, "{info}");
    let overlapping = a
        .history
        .operations
        .windows(2)
        .filter(|w| w[1].invoke_index < w[0].return_index.unwrap_or(usize::MAX))
        .count();
    assert!(overlapping > 500, "{overlapping}");
}
