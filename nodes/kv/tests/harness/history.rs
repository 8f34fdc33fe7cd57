//! Recording a run's history (DESIGN.md JSON lines semantics), checking it
//! with the checker crate's `kv` model, and the lab's own append checks.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use checker::{check_history, EventKind, History, ModelKind, Options, Value, Verdict};
use kv::client::Outcome;
use kv::{Op, OpResult};

use super::Micros;

/// One history event, as a line of `history.jsonl` would carry it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recorded {
    pub process: i64,
    pub kind: EventKind,
    pub f: &'static str,
    pub key: String,
    /// The value written (invoke of put/append), the value read (ok of get), or none.
    pub value: Option<String>,
    pub time_us: Micros,
}

/// The events of a run, in the order they happened.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub events: Vec<Recorded>,
}

fn f_of(op: &Op) -> &'static str {
    match op {
        Op::Get { .. } => "get",
        Op::Put { .. } => "put",
        Op::Append { .. } => "append",
        Op::Cas { .. } => "cas",
    }
}

fn written_value(op: &Op) -> Option<String> {
    match op {
        Op::Put { value, .. } | Op::Append { value, .. } => Some(value.clone()),
        _ => None,
    }
}

impl Recorder {
    pub fn invoke(&mut self, process: i64, op: &Op, now_us: Micros) {
        self.events.push(Recorded {
            process,
            kind: EventKind::Invoke,
            f: f_of(op),
            key: op.key().to_string(),
            value: written_value(op),
            time_us: now_us,
        });
    }

    pub fn complete(&mut self, process: i64, op: &Op, outcome: &Outcome, now_us: Micros) {
        let (kind, value) = match outcome {
            Outcome::Ok(OpResult::Value(read)) => (EventKind::Ok, Some(read.clone())),
            Outcome::Ok(_) => (EventKind::Ok, written_value(op)),
            Outcome::Fail(_) => (EventKind::Fail, written_value(op)),
            Outcome::Unknown(_) => (EventKind::Info, written_value(op)),
        };
        self.events.push(Recorded {
            process,
            kind,
            f: f_of(op),
            key: op.key().to_string(),
            value,
            time_us: now_us,
        });
    }

    /// The checker's events.
    pub fn checker_events(&self) -> Vec<checker::Event> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, e)| checker::Event {
                process: e.process,
                kind: e.kind,
                f: e.f.to_string(),
                key: Some(e.key.clone()),
                value: e.value.clone().map_or(Value::Nil, Value::Str),
                time: Some((e.time_us * 1_000) as i64),
                line: i + 1,
            })
            .collect()
    }

    /// The history as DESIGN.md's JSON lines.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            let value = match &e.value {
                Some(v) => serde_json_string(v),
                None => "null".to_string(),
            };
            let _ = writeln!(
                out,
                "{{\"process\":{},\"type\":\"{}\",\"f\":\"{}\",\"key\":{},\"value\":{},\"time\":{}}}",
                e.process,
                e.kind.as_str(),
                e.f,
                serde_json_string(&e.key),
                value,
                e.time_us * 1_000
            );
        }
        out
    }

    /// With `KV_HISTORY_DIR` set, writes the history there as
    /// `<name>-seed<seed>.jsonl` (for the checker CLI or a bug report).
    pub fn save_if_asked(&self, name: &str, seed: u64) {
        if let Ok(dir) = std::env::var("KV_HISTORY_DIR") {
            let path = Path::new(&dir).join(format!("{name}-seed{seed}.jsonl"));
            if let Err(error) = std::fs::write(&path, self.to_jsonl()) {
                println!("cannot write {}: {error}", path.display());
            }
        }
    }

    /// Checks linearizability with the checker's `kv` model.
    pub fn check(&self, budget: Duration) -> Result<Verdict, String> {
        let history = History::from_events(&self.checker_events(), Path::new("<kv sim>"))
            .map_err(|e| e.to_string())?;
        let options = Options {
            timeout: Some(budget),
            threads: 1,
            ..Options::default()
        };
        let result =
            check_history(&history, &ModelKind::Kv, &options).map_err(|e| e.to_string())?;
        Ok(result.verdict)
    }

    /// Operations completed ok.
    pub fn ok_count(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Ok)
            .count()
    }

    /// The lab's append check, generalised to shared keys and unknown
    /// outcomes: in each key's final value, every append that completed ok
    /// appears exactly once, an append of unknown outcome at most once, a
    /// failed one never, and each process's appends appear in the order it
    /// issued them. `final_values` are read after the run.
    pub fn check_appends(&self, final_values: &BTreeMap<String, String>) -> Result<(), String> {
        // (key) -> list of (value, status) in issue order per process.
        let mut appends: BTreeMap<&str, Vec<(&str, EventKind, i64, usize)>> = BTreeMap::new();
        let mut outstanding: BTreeMap<i64, usize> = BTreeMap::new();
        let mut order = 0usize;
        let mut issued: Vec<(&str, &str, i64, usize, EventKind)> = Vec::new();
        for e in &self.events {
            if e.f != "append" {
                continue;
            }
            match e.kind {
                EventKind::Invoke => {
                    let Some(v) = e.value.as_deref() else {
                        continue;
                    };
                    outstanding.insert(e.process, issued.len());
                    issued.push((e.key.as_str(), v, e.process, order, EventKind::Info));
                    order += 1;
                }
                kind => {
                    if let Some(i) = outstanding.remove(&e.process) {
                        issued[i].4 = kind;
                    }
                }
            }
        }
        for (key, value, process, order, status) in issued {
            appends
                .entry(key)
                .or_default()
                .push((value, status, process, order));
        }
        for (key, list) in appends {
            let text = final_values.get(key).map(String::as_str).unwrap_or("");
            let mut last_offset_per_process: BTreeMap<i64, usize> = BTreeMap::new();
            for (value, status, process, _) in list {
                let found: Vec<usize> = text.match_indices(value).map(|(i, _)| i).collect();
                match (status, found.len()) {
                    (EventKind::Ok, 1) | (EventKind::Info, 0 | 1) => {}
                    (EventKind::Fail, 0) => {}
                    (status, n) => {
                        return Err(format!(
                            "key {key}: append {value:?} ({}) appears {n} times",
                            status.as_str()
                        ))
                    }
                }
                if let Some(&offset) = found.first() {
                    if let Some(&previous) = last_offset_per_process.get(&process) {
                        if offset < previous {
                            return Err(format!(
                                "key {key}: append {value:?} of process {process} appears before an earlier one"
                            ));
                        }
                    }
                    last_offset_per_process.insert(process, offset);
                }
            }
        }
        Ok(())
    }
}

fn serde_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
