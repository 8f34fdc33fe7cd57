//! Turning a stored run into verdicts and numbers: reads `history.jsonl` (a torn last line from
//! an interrupted run is dropped), writes `history.edn`, checks linearizability with the
//! `checker` crate, writes the checker's `report.html`, and computes the workload's
//! throughput and latency percentiles (HDR histograms) for `results.json`.
//! `control analyze <folder>` is this module applied to an existing folder.

use std::path::Path;
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
    let report = run.path.join("report.html");
    let report_error = checker::html::write_report(&report, &history, &result)
        .err()
        .map(|e| e.to_string());
    let linearizable = match result.verdict {
        checker::Verdict::Linearizable => Validity::Valid,
        checker::Verdict::NotLinearizable => Validity::Invalid,
        checker::Verdict::Unknown => Validity::Unknown,
    };
    let well_formed = summary.problems.is_empty();
    let validity = match (linearizable, well_formed) {
        (_, false) | (Validity::Invalid, _) => Validity::Invalid,
        (v, true) => v,
    };
    let violations: Vec<Value> = result
        .violations()
        .map(|p| json!({"key": p.key, "operations": p.operations, "unlinearizable": p.unlinearizable}))
        .collect();
    let checks = json!({
        "linearizable": {
            "valid": result.verdict.to_json(),
            "model": result.model,
            "operations": result.operations,
            "partitions": result.partitions,
            "elapsed_ms": result.elapsed.as_millis() as u64,
            "unknown_reason": result.unknown_reason.map(|r| r.as_str()),
            "violations": violations,
            "report": report_error.map_or_else(|| json!("report.html"), |e| json!({"error": e})),
        },
        "history": {
            "valid": well_formed,
            "problems": summary.problems.iter().take(20).collect::<Vec<_>>(),
        },
    });
    Ok(Analysis {
        validity,
        stats: stats(&events),
        checks,
        summary,
    })
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
/// `nemesis`.
pub fn results_json(run_info: &Value, analysis: &Analysis, nemesis: &[NemesisEvent]) -> Value {
    json!({
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
        assert!(run.path.join("report.html").exists());
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
