//! Turning a stored run into verdicts and numbers: reads `history.jsonl` (a torn last line from
//! an interrupted run is dropped), writes `history.edn`, checks linearizability with the
//! `checker` crate (its page goes to `checker.html`), checks every acknowledged write against
//! the final reads made after the heal ([`lost_writes`]), and computes the workload's throughput and latency
//! percentiles (HDR histograms) for `results.json`. [`results_json`] also writes the run's
//! `report.html` ([`crate::report`]), because it is where the run info, the nemesis events and
//! the analysis first meet, both in `control test` and in `control analyze <folder>`.

pub mod lost_writes;

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

/// Invalid if any verdict is, else unknown if any is, else valid.
pub fn combine(verdicts: &[Validity]) -> Validity {
    if verdicts.contains(&Validity::Invalid) {
        Validity::Invalid
    } else if verdicts.contains(&Validity::Unknown) {
        Validity::Unknown
    } else {
        Validity::Valid
    }
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
    let lost = lost_writes::Semantics::for_model(model).map(|s| lost_writes::check(&events, s));
    let verdicts = [
        linearizable,
        if well_formed {
            Validity::Valid
        } else {
            Validity::Invalid
        },
        // A history recorded without a final-read phase (an older run, or a runner that
        // makes none) has nothing to compare acknowledged writes with: the check says so
        // (unknown, `final_read_phase: false`) and the verdict rests on the other checks. The
        // runner reports a phase that could not read every written key as a run error.
        lost.as_ref()
            .filter(|l| l.final_read_phase)
            .map_or(Validity::Valid, |l| l.validity()),
    ];
    let validity = combine(&verdicts);
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
    use crate::history::{HistoryWriter, TestClock, FINAL_READ_PHASE};

    /// Processes from this one on are final readers (their events carry the final-read phase).
    const FINAL_READER: u64 = 100;

    fn write(run: &RunDir, lines: &[Line]) {
        let writer = HistoryWriter::create(&run.history_jsonl(), TestClock::new()).unwrap();
        for (process, kind, f, key, value) in lines {
            let mut event = Event::new(*process, *kind, f, Some(key), value.clone());
            if *process >= FINAL_READER {
                event.phase = Some(FINAL_READ_PHASE.into());
            }
            writer.record(event).unwrap();
        }
    }

    type Line<'a> = (u64, EventType, &'a str, &'a str, Value);

    /// Writes `lines` as the history of a run in a fresh folder and analyses it with `model`.
    fn analyzed(lines: &[Line], model: &str) -> (tempfile::TempDir, RunDir, Analysis) {
        let root = tempfile::tempdir().unwrap();
        let run = RunDir::create(root.path(), "t", chrono::Local::now()).unwrap();
        write(&run, lines);
        let analysis = analyze(&run, model, Duration::from_secs(10)).unwrap();
        (root, run, analysis)
    }

    #[test]
    fn a_linearizable_history_is_valid_and_gets_numbers() {
        let (_root, run, analysis) = analyzed(
            &[
                (0, EventType::Invoke, "put", "k", json!("a")),
                (0, EventType::Ok, "put", "k", json!("a")),
                (1, EventType::Invoke, "get", "k", Value::Null),
                (1, EventType::Ok, "get", "k", json!("a")),
                (100, EventType::Invoke, "get", "k", Value::Null),
                (100, EventType::Ok, "get", "k", json!("a")),
            ],
            "kv",
        );
        assert_eq!(analysis.validity, Validity::Valid, "{}", analysis.checks);
        assert_eq!(analysis.stats["latency_ok"]["count"], 3);
        assert!(run.history_edn().exists());
        assert!(run.path.join(CHECKER_HTML).exists());
        let lost = &analysis.checks["lost-writes"];
        assert_eq!(lost["valid"], true);
        assert_eq!(
            (lost["keys_written"].as_u64(), lost["keys_read"].as_u64()),
            (Some(1), Some(1))
        );
        assert_eq!(lost["acknowledged_checked"], 1);
        let results = results_json(&json!({"test": "t"}), &analysis, &[]);
        assert_eq!(results["report"], "report.html");
        let page = std::fs::read_to_string(run.path.join("report.html")).unwrap();
        assert!(page.contains("lost-writes") && page.contains("<svg"));
    }

    #[test]
    fn without_a_final_read_phase_the_verdict_rests_on_the_other_checks() {
        let (_root, _run, analysis) = analyzed(
            &[
                (0, EventType::Invoke, "append", "k", json!("x0-1")),
                (0, EventType::Ok, "append", "k", json!("x0-1")),
            ],
            "kv",
        );
        assert_eq!(analysis.checks["linearizable"]["valid"], true);
        let lost = &analysis.checks["lost-writes"];
        assert_eq!(lost["valid"], "unknown");
        assert_eq!(lost["final_read_phase"], false);
        assert_eq!(lost["keys_unread"][0], "k");
        assert_eq!(analysis.validity, Validity::Valid);
    }

    #[test]
    fn a_written_key_the_final_reads_missed_makes_the_run_unknown() {
        let (_root, _run, analysis) = analyzed(
            &[
                (0, EventType::Invoke, "append", "k", json!("x0-1")),
                (0, EventType::Ok, "append", "k", json!("x0-1")),
                (0, EventType::Invoke, "append", "j", json!("x0-2")),
                (0, EventType::Ok, "append", "j", json!("x0-2")),
                (100, EventType::Invoke, "get", "k", Value::Null),
                (100, EventType::Ok, "get", "k", json!("x0-1")),
                (101, EventType::Invoke, "get", "j", Value::Null),
                (101, EventType::Fail, "get", "j", Value::Null),
            ],
            "kv",
        );
        assert_eq!(analysis.checks["lost-writes"]["keys_unread"][0], "j");
        assert_eq!(analysis.validity, Validity::Unknown);
    }

    #[test]
    fn a_lost_append_makes_the_run_invalid() {
        let (_root, _run, analysis) = analyzed(
            &[
                (0, EventType::Invoke, "append", "k", json!("x0-1")),
                (0, EventType::Ok, "append", "k", json!("x0-1")),
                (0, EventType::Invoke, "append", "j", json!("x0-2")),
                (0, EventType::Ok, "append", "j", json!("x0-2")),
                (100, EventType::Invoke, "get", "k", Value::Null),
                (100, EventType::Ok, "get", "k", json!("x0-1")),
                (101, EventType::Invoke, "get", "j", Value::Null),
                (101, EventType::Ok, "get", "j", json!("")),
            ],
            "kv",
        );
        assert_eq!(analysis.validity, Validity::Invalid, "{}", analysis.checks);
        let lost = &analysis.checks["lost-writes"];
        assert_eq!(lost["lost_count"], 1);
        assert_eq!(lost["lost"][0]["key"], "j");
        assert_eq!(lost["lost"][0]["value"], "x0-2");
        assert_eq!(lost["lost"][0]["process"], 0);
        // The linearizability checker sees the final reads too, and also rejects the history.
        assert_eq!(analysis.checks["linearizable"]["valid"], false);
    }

    #[test]
    fn a_register_final_read_is_checked_under_the_cas_register_model() {
        let (_root, _run, analysis) = analyzed(
            &[
                (0, EventType::Invoke, "write", "r1", json!(3)),
                (0, EventType::Ok, "write", "r1", json!(3)),
                (100, EventType::Invoke, "read", "r1", Value::Null),
                (100, EventType::Ok, "read", "r1", json!(3)),
            ],
            "cas-register",
        );
        assert_eq!(analysis.validity, Validity::Valid, "{}", analysis.checks);
        assert_eq!(analysis.checks["lost-writes"]["acknowledged_checked"], 1);
    }

    #[test]
    fn a_stale_read_is_invalid() {
        let (_root, _run, analysis) = analyzed(
            &[
                (0, EventType::Invoke, "put", "k", json!("a")),
                (0, EventType::Ok, "put", "k", json!("a")),
                (1, EventType::Invoke, "get", "k", Value::Null),
                (1, EventType::Ok, "get", "k", json!("")),
            ],
            "kv",
        );
        assert_eq!(analysis.validity, Validity::Invalid, "{}", analysis.checks);
        assert_eq!(analysis.validity.exit_code(), 1);
        assert_eq!(analysis.checks["linearizable"]["violations"][0]["key"], "k");
    }
}
