//! Turning a stored run into verdicts and numbers: reads `history.jsonl` (a torn last line from
//! an interrupted run is dropped), writes `history.edn`, checks linearizability with the
//! `checker` crate (its page goes to `checker.html`), checks the kv workload for lost
//! acknowledged appends ([`lost_writes`]), and computes the workload's throughput and latency
//! percentiles (HDR histograms) for `results.json`. [`results_json`] also writes the run's
//! `report.html` ([`crate::report`]), because it is where the run info, the nemesis events and
//! the analysis first meet, both in `control test` and in `control analyze <folder>`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{json, Value};

use crate::history::{self, Event, EventType, HistorySummary};
use crate::nemesis::NemesisEvent;
use crate::results::RunDir;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzeError {
    #[error(transparent)]
    History(#[from] history::HistoryError),
    #[error("checker cannot read {path}: {message}")]
    Parse { path: String, message: String },
    #[error("unknown model `{0}`")]
    UnknownModel(String),
    #[error("checker: {0}")]
    Model(String),
    #[error(transparent)]
    Results(#[from] crate::results::ResultsError),
}

/// The combined verdict, as `results.json` writes `valid`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid,
    Unknown,
}

impl Validity {
    pub fn to_json(self) -> Value {
        match self {
            Validity::Valid => Value::Bool(true),
            Validity::Invalid => Value::Bool(false),
            Validity::Unknown => Value::String("unknown".into()),
        }
    }

    /// The documented exit status: 0 valid, 1 invalid, 3 unknown.
    pub fn exit_code(self) -> i32 {
        match self {
            Validity::Valid => 0,
            Validity::Invalid => 1,
            Validity::Unknown => 3,
        }
    }
}

/// What analysis found.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub validity: Validity,
    pub summary: HistorySummary,
    /// The `checks` object of results.json.
    pub checks: Value,
    /// The `stats` object of results.json.
    pub stats: Value,
    /// The run folder (where [`results_json`] writes `report.html`).
    pub run_path: PathBuf,
    /// The history, for the report's plots.
    pub events: Vec<Event>,
    /// The checker's HTML page, embedded in the report when the history is not linearizable.
    pub checker_html: String,
}

/// Result of [`lost_writes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LostWrites {
    /// Keys with a final read after the heal.
    pub keys_checked: u64,
    /// Keys written but never read after the heal: nothing can be said about them.
    pub keys_unchecked: u64,
    /// Acknowledged appends compared with their key's final read.
    pub appends_checked: u64,
    /// Acknowledged appends that could not be compared: no final read of their key, not
    /// complete before it began, or a put may have overwritten them.
    pub appends_unchecked: u64,
    /// Key -> (values missing from the final read, the final read).
    pub lost: BTreeMap<String, (Vec<String>, String)>,
}

impl LostWrites {
    pub fn lost_count(&self) -> usize {
        self.lost.values().map(|(v, _)| v.len()).sum()
    }

    pub fn to_json(&self) -> Value {
        let lost: serde_json::Map<String, Value> = self
            .lost
            .iter()
            .map(|(k, (values, read))| (k.clone(), json!({"values": values, "final_read": read})))
            .collect();
        json!({
            "valid": self.lost.is_empty(),
            "keys_checked": self.keys_checked,
            "keys_unchecked": self.keys_unchecked,
            "appends_checked": self.appends_checked,
            "appends_unchecked": self.appends_unchecked,
            "lost_count": self.lost_count(),
            "lost": lost,
        })
    }
}

/// One operation of a key: invoke time, completion time (None: never completed or `info`,
/// so it may take effect at any later time), outcome, value (the read, for a get).
struct KeyOp<'a> {
    f: &'a str,
    invoke: u64,
    complete: Option<u64>,
    outcome: EventType,
    value: &'a Value,
}

/// Whether `value` (a unique `x<process>-<n>` append) occurs in `read` as a whole value: the
/// occurrence may not continue with a digit, so `x1-1` is not found inside `x1-12`.
fn read_contains(read: &str, value: &str) -> bool {
    !value.is_empty()
        && read.match_indices(value).any(|(at, _)| {
            !read[at + value.len()..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit())
        })
}

/// The lost-acknowledged-writes check of the kv workload: for each key, the final read is the
/// last ok `get` invoked at or after `healed_at` (the end of the final heal-all). Every
/// acknowledged (`ok`) append that completed before that read was invoked must appear in it.
///
/// Only appends are checked. A put replaces the whole value, so a put's value is legitimately
/// gone once a later write lands, and an append is legitimately gone when a put took effect
/// after it; so an append is checked only if every put of its key that may have taken effect
/// before the final read (not `fail`, invoked before the read completed) had completed before
/// the append was invoked. Values are unique per write, so a value's absence is unambiguous.
/// Keys with no final read are counted as unchecked, as are appends that could not be
/// compared.
pub fn lost_writes(events: &[Event], healed_at: u64) -> LostWrites {
    let mut outstanding: std::collections::HashMap<u64, usize> = Default::default();
    let mut by_key: BTreeMap<&str, Vec<KeyOp>> = BTreeMap::new();
    let mut ops: Vec<(Option<&str>, KeyOp)> = Vec::new();
    for event in events {
        if event.kind == EventType::Invoke {
            outstanding.insert(event.process, ops.len());
            ops.push((
                event.key.as_deref(),
                KeyOp {
                    f: &event.f,
                    invoke: event.time,
                    complete: None,
                    outcome: EventType::Info,
                    value: &event.value,
                },
            ));
        } else if let Some(i) = outstanding.remove(&event.process) {
            let op = &mut ops[i].1;
            op.outcome = event.kind;
            if event.kind != EventType::Info {
                op.complete = Some(event.time);
            }
            if event.f == "get" {
                op.value = &event.value;
            }
        }
    }
    for (key, op) in ops {
        if let Some(key) = key {
            by_key.entry(key).or_default().push(op);
        }
    }
    let mut result = LostWrites::default();
    for (key, ops) in by_key {
        let acknowledged = |op: &&KeyOp| op.f == "append" && op.outcome == EventType::Ok;
        let final_read = ops
            .iter()
            .filter(|op| op.f == "get" && op.outcome == EventType::Ok && op.invoke >= healed_at)
            .max_by_key(|op| op.complete);
        let Some(read) = final_read else {
            if ops.iter().any(|op| op.f != "get") {
                result.keys_unchecked += 1;
            }
            result.appends_unchecked += ops.iter().filter(acknowledged).count() as u64;
            continue;
        };
        result.keys_checked += 1;
        let read_complete = read.complete.unwrap_or(u64::MAX);
        let read_value = read.value.as_str().unwrap_or("");
        // The latest moment a put that may precede the read could still take effect.
        let overwrite_until = ops
            .iter()
            .filter(|op| {
                op.f == "put" && op.outcome != EventType::Fail && op.invoke < read_complete
            })
            .map(|op| op.complete.unwrap_or(u64::MAX))
            .max();
        let mut missing = Vec::new();
        for append in ops.iter().filter(acknowledged) {
            let before_read = append.complete.is_some_and(|c| c < read.invoke);
            let not_overwritten = overwrite_until.is_none_or(|t| t < append.invoke);
            if !(before_read && not_overwritten) {
                result.appends_unchecked += 1;
                continue;
            }
            result.appends_checked += 1;
            let value = append.value.as_str().unwrap_or("");
            if !read_contains(read_value, value) {
                missing.push(value.to_string());
            }
        }
        if !missing.is_empty() {
            result
                .lost
                .insert(key.to_string(), (missing, read_value.to_string()));
        }
    }
    result
}

/// Latency and throughput from paired invoke/completion events.
pub fn stats(events: &[Event]) -> Value {
    let mut outstanding = std::collections::HashMap::new();
    let new_histogram = || Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).ok();
    let mut ok_latency = new_histogram();
    let mut all_latency = new_histogram();
    let (mut first, mut last) = (u64::MAX, 0u64);
    let mut ok_per_second: std::collections::BTreeMap<u64, [u64; 3]> = Default::default();
    for event in events {
        first = first.min(event.time);
        last = last.max(event.time);
        if event.kind == EventType::Invoke {
            outstanding.insert(event.process, event.time);
            continue;
        }
        let Some(start) = outstanding.remove(&event.process) else {
            continue;
        };
        let micros = (event.time.saturating_sub(start) / 1000).max(1);
        if let Some(h) = all_latency.as_mut() {
            let _ = h.record(micros);
        }
        let slot = match event.kind {
            EventType::Ok => {
                if let Some(h) = ok_latency.as_mut() {
                    let _ = h.record(micros);
                }
                0
            }
            EventType::Fail => 1,
            _ => 2,
        };
        ok_per_second.entry(event.time / 1_000_000_000).or_default()[slot] += 1;
    }
    let percentiles = |h: &Option<Histogram<u64>>| match h {
        Some(h) if !h.is_empty() => json!({
            "p50_ms": h.value_at_quantile(0.50) as f64 / 1000.0,
            "p90_ms": h.value_at_quantile(0.90) as f64 / 1000.0,
            "p99_ms": h.value_at_quantile(0.99) as f64 / 1000.0,
            "p999_ms": h.value_at_quantile(0.999) as f64 / 1000.0,
            "max_ms": h.max() as f64 / 1000.0,
            "count": h.len(),
        }),
        _ => Value::Null,
    };
    let ok_total: u64 = ok_per_second.values().map(|c| c[0]).sum();
    let seconds = if last > first {
        (last - first) as f64 / 1e9
    } else {
        0.0
    };
    let timeline: Vec<Value> = ok_per_second
        .iter()
        .map(|(second, [ok, fail, info])| json!({"second": second, "ok": ok, "fail": fail, "info": info}))
        .collect();
    json!({
        "duration_s": seconds,
        "ok_ops_per_sec": if seconds > 0.0 { ok_total as f64 / seconds } else { 0.0 },
        "latency_ok": percentiles(&ok_latency),
        "latency_all": percentiles(&all_latency),
        "per_second": timeline,
    })
}

/// Text of the history up to its last complete line (drops a torn write).
fn complete_lines(path: &Path) -> Result<String, AnalyzeError> {
    let text = std::fs::read_to_string(path).map_err(|source| history::HistoryError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(match text.rfind('\n') {
        Some(end) => text[..=end].to_string(),
        None => String::new(),
    })
}

/// Checks a run folder's history with `model` (a checker model name) within `timeout`, writes
/// `history.edn` and `report.html`, and returns the verdicts and numbers.
pub fn analyze(run: &RunDir, model: &str, timeout: Duration) -> Result<Analysis, AnalyzeError> {
    let events = history::read_history(&run.history_jsonl())?;
    history::write_edn(&events, &run.history_edn())?;
    let summary = history::summarize(&events);
    let kind = checker::ModelKind::from_name(model, None)
        .ok_or_else(|| AnalyzeError::UnknownModel(model.to_string()))?;
    let path = run.history_jsonl();
    let text = complete_lines(&path)?;
    let history =
        checker::history::parse_str(&text, checker::Format::Jsonl, &path).map_err(|e| {
            AnalyzeError::Parse {
                path: path.display().to_string(),
                message: e.to_string(),
            }
        })?;
    let options = checker::Options {
        timeout: Some(timeout),
        ..checker::Options::default()
    };
    let result = checker::check_history(&history, &kind, &options)
        .map_err(|e| AnalyzeError::Model(e.to_string()))?;
    let checker_html = checker::html::render(&history, &result);
    let report_error = std::fs::write(run.path.join(CHECKER_HTML), &checker_html)
        .err()
        .map(|e| format!("cannot write {CHECKER_HTML}: {e}"));
    let linearizable = match result.verdict {
        checker::Verdict::Linearizable => Validity::Valid,
        checker::Verdict::NotLinearizable => Validity::Invalid,
        checker::Verdict::Unknown => Validity::Unknown,
    };
    let well_formed = summary.problems.is_empty();
    // Lost appends are only defined for the kv model's get/put/append.
    let lost = (model == "kv").then(|| {
        let healed_at = read_nemesis(run)
            .iter()
            .filter(|e| e.phase == "heal-all")
            .map(|e| e.end_time.max(e.time))
            .max()
            .unwrap_or(0);
        lost_writes(&events, healed_at)
    });
    let no_lost = lost.as_ref().is_none_or(|l| l.lost.is_empty());
    let validity = match (linearizable, well_formed && no_lost) {
        (_, false) | (Validity::Invalid, _) => Validity::Invalid,
        (v, true) => v,
    };
    let violations: Vec<Value> = result
        .violations()
        .map(|p| json!({"key": p.key, "operations": p.operations, "unlinearizable": p.unlinearizable}))
        .collect();
    let mut checks = json!({
        "linearizable": {
            "valid": result.verdict.to_json(),
            "model": result.model,
            "operations": result.operations,
            "partitions": result.partitions,
            "elapsed_ms": result.elapsed.as_millis() as u64,
            "unknown_reason": result.unknown_reason.map(|r| r.as_str()),
            "violations": violations,
            "report": report_error.map_or_else(|| json!(CHECKER_HTML), |e| json!({"error": e})),
        },
        "history": {
            "valid": well_formed,
            "problems": summary.problems.iter().take(20).collect::<Vec<_>>(),
        },
    });
    if let Some(lost) = &lost {
        checks["lost-writes"] = lost.to_json();
    }
    Ok(Analysis {
        validity,
        stats: stats(&events),
        checks,
        summary,
        run_path: run.path.clone(),
        events,
        checker_html,
    })
}

/// The checker's own page, beside `report.html`.
pub const CHECKER_HTML: &str = "checker.html";

/// Writes `report.html` into the analysed folder.
pub fn write_report(
    run_info: &Value,
    analysis: &Analysis,
    nemesis: &[NemesisEvent],
) -> std::io::Result<()> {
    let page = crate::report::render(&crate::report::ReportInput {
        run_info,
        validity: analysis.validity,
        checks: &analysis.checks,
        events: &analysis.events,
        nemesis,
        checker_html: Some(&analysis.checker_html),
    });
    std::fs::write(analysis.run_path.join("report.html"), page)
}

/// Reads `nemesis.jsonl` (missing: none).
pub fn read_nemesis(run: &RunDir) -> Vec<NemesisEvent> {
    std::fs::read_to_string(run.nemesis_jsonl())
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The results.json object: `run` (what was run), `valid`, `checks`, `stats`, `ops`,
/// `nemesis`, `report` (`"report.html"`, or `{"error": ...}` when it could not be written).
///
/// Side effect: writes the folder's `report.html` (see the module doc for why here).
pub fn results_json(run_info: &Value, analysis: &Analysis, nemesis: &[NemesisEvent]) -> Value {
    let report = match write_report(run_info, analysis, nemesis) {
        Ok(()) => json!("report.html"),
        Err(e) => json!({"error": format!("cannot write report.html: {e}")}),
    };
    json!({
        "report": report,
        "run": run_info,
        "valid": analysis.validity.to_json(),
        "checks": analysis.checks,
        "ops": {
            "invokes": analysis.summary.invokes,
            "ok": analysis.summary.ok,
            "fail": analysis.summary.fail,
            "info": analysis.summary.info,
            "unfinished": analysis.summary.unfinished,
        },
        "stats": analysis.stats,
        "nemesis": nemesis,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::{HistoryWriter, TestClock};

    fn write(run: &RunDir, lines: &[(u64, EventType, &str, &str, Value)]) {
        let writer = HistoryWriter::create(&run.history_jsonl(), TestClock::new()).unwrap();
        for (process, kind, f, key, value) in lines {
            writer
                .record(Event::new(*process, *kind, f, Some(key), value.clone()))
                .unwrap();
        }
    }

    #[test]
    fn a_linearizable_history_is_valid_and_gets_numbers() {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir::create(root.path(), "t", chrono::Local::now()).unwrap();
        write(
            &run,
            &[
                (0, EventType::Invoke, "put", "k", json!("a")),
                (0, EventType::Ok, "put", "k", json!("a")),
                (1, EventType::Invoke, "get", "k", Value::Null),
                (1, EventType::Ok, "get", "k", json!("a")),
            ],
        );
        let analysis = analyze(&run, "kv", Duration::from_secs(10)).unwrap();
        assert_eq!(analysis.validity, Validity::Valid, "{}", analysis.checks);
        assert_eq!(analysis.stats["latency_ok"]["count"], 2);
        assert!(run.history_edn().exists());
        assert!(run.path.join(CHECKER_HTML).exists());
        // No heal recorded: the last get is the final read, and it holds the put (not checked).
        assert_eq!(analysis.checks["lost-writes"]["valid"], true);
        assert_eq!(analysis.checks["lost-writes"]["keys_checked"], 1);
        let results = results_json(&json!({"test": "t"}), &analysis, &[]);
        assert_eq!(results["report"], "report.html");
        let page = std::fs::read_to_string(run.path.join("report.html")).unwrap();
        assert!(page.contains("lost-writes") && page.contains("<svg"));
    }

    fn at(process: u64, kind: EventType, f: &str, value: Value, time: u64) -> Event {
        let mut e = Event::new(process, kind, f, Some("k"), value);
        e.time = time;
        e
    }

    /// An append acknowledged before the heal, then a final read after it.
    fn append_then_read(read: &str) -> Vec<Event> {
        vec![
            at(0, EventType::Invoke, "append", json!("x0-1"), 10),
            at(0, EventType::Ok, "append", json!("x0-1"), 20),
            at(1, EventType::Invoke, "append", json!("x1-2"), 30),
            at(1, EventType::Ok, "append", json!("x1-2"), 40),
            // A read before the heal does not count as final.
            at(2, EventType::Invoke, "get", Value::Null, 50),
            at(2, EventType::Ok, "get", json!(""), 60),
            at(2, EventType::Invoke, "get", Value::Null, 200),
            at(2, EventType::Ok, "get", json!(read), 210),
        ]
    }

    #[test]
    fn a_lost_append_is_found() {
        // x1-2 is missing; x1-22 must not pass for it.
        let lost = lost_writes(&append_then_read("x0-1x1-22"), 100);
        assert_eq!(lost.appends_checked, 2);
        assert_eq!(lost.lost_count(), 1);
        assert_eq!(lost.lost["k"].0, vec!["x1-2".to_string()]);
        assert_eq!(lost.to_json()["valid"], false);
    }

    #[test]
    fn present_appends_pass() {
        let lost = lost_writes(&append_then_read("x0-1x1-2"), 100);
        assert_eq!((lost.appends_checked, lost.keys_checked), (2, 1));
        assert!(lost.lost.is_empty());
        assert_eq!(lost.to_json()["valid"], true);
    }

    #[test]
    fn keys_without_a_read_after_the_heal_are_unchecked() {
        let lost = lost_writes(&append_then_read("x0-1x1-2"), 205);
        assert_eq!((lost.keys_checked, lost.keys_unchecked), (0, 1));
        assert_eq!((lost.appends_checked, lost.appends_unchecked), (0, 2));
        assert!(lost.lost.is_empty());
    }

    #[test]
    fn appends_a_put_may_have_overwritten_are_not_checked() {
        let mut events = append_then_read("x3-9");
        // An info put (may land any time later) concurrent with the second append.
        events.insert(2, at(3, EventType::Invoke, "put", json!("x3-9"), 25));
        events.insert(3, at(3, EventType::Info, "put", json!("x3-9"), 45));
        let lost = lost_writes(&events, 100);
        assert_eq!((lost.appends_checked, lost.appends_unchecked), (0, 2));
        assert!(lost.lost.is_empty());
        // A failed put cannot overwrite anything: both appends are checked and found missing.
        events[3].kind = EventType::Fail;
        let lost = lost_writes(&events, 100);
        assert_eq!((lost.appends_checked, lost.lost_count()), (2, 2));
    }

    #[test]
    fn a_lost_append_makes_the_run_invalid() {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir::create(root.path(), "t", chrono::Local::now()).unwrap();
        write(
            &run,
            &[
                (0, EventType::Invoke, "append", "k", json!("x0-1")),
                (0, EventType::Ok, "append", "k", json!("x0-1")),
                (1, EventType::Invoke, "get", "k", Value::Null),
                (1, EventType::Ok, "get", "k", json!("x0-1")),
                (0, EventType::Invoke, "append", "j", json!("x0-2")),
                (0, EventType::Ok, "append", "j", json!("x0-2")),
                (1, EventType::Invoke, "get", "j", Value::Null),
                (1, EventType::Ok, "get", "j", json!("")),
            ],
        );
        let analysis = analyze(&run, "kv", Duration::from_secs(10)).unwrap();
        assert_eq!(analysis.validity, Validity::Invalid, "{}", analysis.checks);
        assert_eq!(
            analysis.checks["lost-writes"]["lost"]["j"]["values"][0],
            "x0-2"
        );
        assert!(analysis.checks["lost-writes"]["lost"].get("k").is_none());
    }

    #[test]
    fn a_stale_read_is_invalid() {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir::create(root.path(), "t", chrono::Local::now()).unwrap();
        write(
            &run,
            &[
                (0, EventType::Invoke, "put", "k", json!("a")),
                (0, EventType::Ok, "put", "k", json!("a")),
                (1, EventType::Invoke, "get", "k", Value::Null),
                (1, EventType::Ok, "get", "k", json!("")),
            ],
        );
        let analysis = analyze(&run, "kv", Duration::from_secs(10)).unwrap();
        assert_eq!(analysis.validity, Validity::Invalid, "{}", analysis.checks);
        assert_eq!(analysis.validity.exit_code(), 1);
        assert_eq!(analysis.checks["linearizable"]["violations"][0]["key"], "k");
    }
}
