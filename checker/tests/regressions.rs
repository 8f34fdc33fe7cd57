//! Histories that once made the checker blow up, checked for a definite
//! verdict within the check's budget (the verdict is asserted, never the
//! time: a budget overrun answers `unknown`, which fails the test).
//!
//! The shape: concurrent appends to one key, then one final get. Appends are
//! always legal and every order of them is a distinct state, so memoisation
//! cannot help; only the final get says which order happened. Before the
//! search looked ahead to reads not yet invoked (`Model::observes`), a 51-op
//! history from the KV service's `unreliable_one_key_3a` test (SEED=1) ran
//! out of 2 GiB of cache after 12 s and answered `unknown`.
//!
//! The generated cases print `SEED=n`; replay one with
//! `SEED=n cargo test -p checker --test regressions`.

use std::path::Path;
use std::time::Duration;

use checker::generate::SplitMix64;
use checker::history::{read_file, Event, EventKind, Format, History};
use checker::{check_history, ModelKind, Options, Value, Verdict};

/// The budget every case must finish within (a definite verdict, not `unknown`).
fn options() -> Options {
    Options {
        timeout: Some(Duration::from_secs(30)),
        max_memory_bytes: 256 << 20,
        threads: 1,
        ..Options::default()
    }
}

fn verdict(history: &History) -> Verdict {
    let result = check_history(history, &ModelKind::Kv, &options()).expect("kv history");
    assert!(
        result.memory_bytes < 64 << 20,
        "memory {} bytes",
        result.memory_bytes
    );
    result.verdict
}

#[test]
fn kv_service_one_key_appends_seed1_is_linearizable() {
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kv-one-key-appends-seed1.jsonl");
    let history = read_file(&path, Format::Auto).expect("fixture parses");
    assert_eq!(history.operations.len(), 51);
    assert_eq!(verdict(&history), Verdict::Linearizable);
}

#[test]
fn kv_service_one_key_appends_with_swapped_final_order_is_not() {
    // The same history, but the final get shows two appends of one client
    // (which ran one after the other) in the wrong order.
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kv-one-key-appends-seed1.jsonl");
    let mut history = read_file(&path, Format::Auto).expect("fixture parses");
    let get = history
        .operations
        .iter_mut()
        .find(|op| op.f == "get")
        .expect("a final get");
    let Value::Str(text) = &get.output else {
        panic!("get value is a string")
    };
    let swapped = text
        .replacen("x 3 1 y", "#", 1)
        .replacen("x 3 2 y", "x 3 1 y", 1)
        .replacen('#', "x 3 2 y", 1);
    assert_ne!(&swapped, text);
    get.output = Value::Str(swapped);
    assert_eq!(verdict(&history), Verdict::NotLinearizable);
}

/// `clients` processes each append `per_client` unique values to one key,
/// with random, heavily overlapping durations; about one op in six ends
/// `info` (taking effect half of the time, possibly long after), and its
/// client continues under a new process id. A final get reads the value
/// the ops' linearization points produce; with `corrupt`, two adjacent
/// appends of that value are swapped where real time forbids it.
fn one_key_appends(seed: u64, clients: usize, per_client: usize, corrupt: bool) -> History {
    let mut rng = SplitMix64::new(seed);
    let mut events: Vec<(i64, Event)> = Vec::new();
    // (linearization point, value, invoke, return) of ops that took effect.
    let mut effects: Vec<(i64, String, i64, i64)> = Vec::new();
    let mut end = 0i64;
    for client in 0..clients {
        let mut process = client as i64;
        let mut now = rng.below(50) as i64;
        for n in 0..per_client {
            let value = format!("x {client} {n} y");
            let invoke = now;
            let ret = invoke + 1 + rng.below(400) as i64;
            let info = rng.below(6) == 0;
            let event = |kind: EventKind, time: i64, process: i64| Event {
                process,
                kind,
                f: "append".into(),
                key: Some("0".into()),
                value: Value::Str(value.clone()),
                time: Some(time),
                line: 0,
            };
            events.push((invoke, event(EventKind::Invoke, invoke, process)));
            if info {
                events.push((ret, event(EventKind::Info, ret, process)));
                if rng.below(2) == 0 {
                    let point = invoke + rng.below(2000) as i64;
                    effects.push((point, value, invoke, i64::MAX));
                }
                process += clients as i64;
            } else {
                events.push((ret, event(EventKind::Ok, ret, process)));
                let point = invoke + rng.below((ret - invoke) as u64) as i64;
                effects.push((point, value, invoke, ret));
            }
            end = end.max(ret);
            now = ret + rng.below(30) as i64;
        }
    }
    effects.sort();
    end = end.max(effects.last().map_or(0, |e| e.0)) + 1;
    if corrupt {
        // Two adjacent effects where the first returned before the second was invoked.
        if let Some(i) =
            (0..effects.len().saturating_sub(1)).find(|&i| effects[i].3 < effects[i + 1].2)
        {
            effects.swap(i, i + 1);
        }
    }
    let text: String = effects.iter().map(|e| e.1.as_str()).collect();
    let reader = (2 * clients * per_client) as i64;
    for (kind, value, time) in [
        (EventKind::Invoke, Value::Nil, end),
        (EventKind::Ok, Value::Str(text), end + 1),
    ] {
        events.push((
            time,
            Event {
                process: reader,
                kind,
                f: "get".into(),
                key: Some("0".into()),
                value,
                time: Some(time),
                line: 0,
            },
        ));
    }
    // Stable by time: an op's invoke stays before its completion.
    events.sort_by_key(|(time, _)| *time);
    let events: Vec<Event> = events.into_iter().map(|(_, e)| e).collect();
    History::from_events(&events, Path::new("<generated>")).expect("generated history pairs")
}

fn seeds(cases: u64) -> Vec<u64> {
    match std::env::var("SEED").ok().and_then(|s| s.parse().ok()) {
        Some(seed) => vec![seed],
        None => (1..=cases).collect(),
    }
}

#[test]
fn generated_one_key_appends_with_info_ops_get_definite_verdicts() {
    for seed in seeds(20) {
        println!("SEED={seed}");
        let ok = one_key_appends(seed, 5, 12, false);
        assert!(ok.operations.len() > 60);
        assert_eq!(verdict(&ok), Verdict::Linearizable, "SEED={seed} ok case");
        let bad = one_key_appends(seed, 5, 12, true);
        assert_eq!(
            verdict(&bad),
            Verdict::NotLinearizable,
            "SEED={seed} corrupted case"
        );
    }
}
