//! The history: every operation as an invoke followed by ok, fail or info, written as JSON
//! lines (DESIGN.md "Contracts") while the test runs.
//!
//! [`HistoryWriter`] stamps each event's `time` (nanoseconds on the test's monotonic clock)
//! and `index` under one lock and writes the line with a single `write` to an unbuffered file,
//! so lines appear in the order the events happened and an interrupted run leaves every
//! completed line readable. [`read_history`] reads it back, tolerating a torn last line.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The kind of a history event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventType {
    Invoke,
    /// Happened.
    Ok,
    /// Certainly did not happen.
    Fail,
    /// Unknown: may have happened at any time after its invoke, or never.
    Info,
}

impl EventType {
    pub fn name(&self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }
}

/// One line of `history.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub process: u64,
    #[serde(rename = "type")]
    pub kind: EventType,
    pub f: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default)]
    pub value: Value,
    /// Nanoseconds since the test began (one monotonic clock).
    pub time: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Which phase of the test the operation belongs to: absent for the generator's
    /// operations, [`FINAL_READ_PHASE`] for the reads after the final heal that the
    /// lost-writes check compares acknowledged writes with. The checker ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
}

/// The `phase` of the final reads (see [`Event::phase`]).
pub const FINAL_READ_PHASE: &str = "final-read";

impl Event {
    /// An event with the time and index left for the writer to stamp.
    pub fn new(process: u64, kind: EventType, f: &str, key: Option<&str>, value: Value) -> Self {
        Self {
            process,
            kind,
            f: f.to_string(),
            key: key.map(String::from),
            value,
            time: 0,
            index: None,
            node: None,
            error: None,
            phase: None,
        }
    }

    /// Whether the event belongs to the final-read phase.
    pub fn is_final_read(&self) -> bool {
        self.phase.as_deref() == Some(FINAL_READ_PHASE)
    }
}

/// The test's monotonic clock: nanoseconds since it was made.
#[derive(Debug, Clone, Copy)]
pub struct TestClock {
    start: Instant,
}

impl TestClock {
    pub fn new() -> Self {
        Self {
            start: Instant::now(),
        }
    }

    pub fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path}:{line}: {message}")]
    Parse {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("history limit of {limit_events} events reached")]
    Full { limit_events: u64 },
}

struct WriterState {
    file: File,
    next_index: u64,
}

/// Appends events to a JSON lines file, one flushed line per event.
pub struct HistoryWriter {
    path: PathBuf,
    clock: TestClock,
    state: Mutex<WriterState>,
    limit_events: u64,
}

impl std::fmt::Debug for HistoryWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryWriter")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Default cap on a history's length: a runaway generator fills no disk.
pub const HISTORY_EVENTS_MAX: u64 = 20_000_000;

impl HistoryWriter {
    pub fn create(path: &Path, clock: TestClock) -> Result<Self, HistoryError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| HistoryError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self {
            path: path.to_path_buf(),
            clock,
            state: Mutex::new(WriterState {
                file,
                next_index: 0,
            }),
            limit_events: HISTORY_EVENTS_MAX,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn clock(&self) -> TestClock {
        self.clock
    }

    /// Stamps `event` with the current time and the next index, writes it, and returns it.
    pub fn record(&self, mut event: Event) -> Result<Event, HistoryError> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if state.next_index >= self.limit_events {
            return Err(HistoryError::Full {
                limit_events: self.limit_events,
            });
        }
        event.time = self.clock.now_ns();
        event.index = Some(state.next_index);
        let mut line = serde_json::to_string(&event).map_err(|e| HistoryError::Parse {
            path: self.path.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        line.push('\n');
        state
            .file
            .write_all(line.as_bytes())
            .and_then(|()| state.file.flush())
            .map_err(|source| HistoryError::Io {
                path: self.path.clone(),
                source,
            })?;
        state.next_index += 1;
        Ok(event)
    }
}

/// Reads a JSON lines history. A last line without its newline that does not parse is a torn
/// write from an interrupted run and is dropped; any other bad line is an error naming it.
pub fn read_history(path: &Path) -> Result<Vec<Event>, HistoryError> {
    let text = std::fs::read_to_string(path).map_err(|source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let complete = text.ends_with('\n');
    let lines: Vec<&str> = text.lines().collect();
    let mut events = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Event>(line) {
            Ok(event) => events.push(event),
            Err(_) if i + 1 == lines.len() && !complete => break,
            Err(e) => {
                return Err(HistoryError::Parse {
                    path: path.to_path_buf(),
                    line: i + 1,
                    message: e.to_string(),
                })
            }
        }
    }
    Ok(events)
}

/// Counts of a history's operations, and its well-formedness problems (a completion without
/// an outstanding invoke, a second invoke while one is outstanding).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct HistorySummary {
    pub invokes: u64,
    pub ok: u64,
    pub fail: u64,
    pub info: u64,
    /// Invokes with no completion at the end (count as info).
    pub unfinished: u64,
    pub problems: Vec<String>,
}

pub fn summarize(events: &[Event]) -> HistorySummary {
    let mut summary = HistorySummary::default();
    let mut outstanding = std::collections::BTreeMap::new();
    for (i, event) in events.iter().enumerate() {
        match event.kind {
            EventType::Invoke => {
                summary.invokes += 1;
                if outstanding.insert(event.process, i).is_some() {
                    summary.problems.push(format!(
                        "event {i}: process {} invoked twice",
                        event.process
                    ));
                }
            }
            kind => {
                if outstanding.remove(&event.process).is_none() {
                    summary.problems.push(format!(
                        "event {i}: {} for process {} with nothing outstanding",
                        kind.name(),
                        event.process
                    ));
                }
                match kind {
                    EventType::Ok => summary.ok += 1,
                    EventType::Fail => summary.fail += 1,
                    _ => summary.info += 1,
                }
            }
        }
    }
    summary.unfinished = outstanding.len() as u64;
    summary
}

/// EDN for a JSON value: null -> nil, arrays -> vectors, objects -> maps with keyword keys.
fn edn_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("nil"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => edn_string(s, out),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                edn_value(item, out);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                let _ = write!(out, ":{k} ");
                edn_value(v, out);
            }
            out.push('}');
        }
    }
}

fn edn_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// One event as a Jepsen EDN map. A keyed operation's value becomes Jepsen's independent
/// tuple `[key value]`.
pub fn event_to_edn(event: &Event) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "{{:type :{}, :f :{}, :value ",
        event.kind.name(),
        event.f
    );
    match &event.key {
        Some(key) => {
            out.push('[');
            edn_string(key, &mut out);
            out.push(' ');
            edn_value(&event.value, &mut out);
            out.push(']');
        }
        None => edn_value(&event.value, &mut out),
    }
    let _ = write!(out, ", :process {}, :time {}", event.process, event.time);
    if let Some(index) = event.index {
        let _ = write!(out, ", :index {index}");
    }
    if let Some(error) = &event.error {
        out.push_str(", :error ");
        edn_string(error, &mut out);
    }
    if let Some(phase) = &event.phase {
        let _ = write!(out, ", :phase :{phase}");
    }
    out.push('}');
    out
}

/// Writes the whole history as EDN, one map per line.
pub fn write_edn(events: &[Event], path: &Path) -> Result<(), HistoryError> {
    let mut text = String::new();
    for event in events {
        text.push_str(&event_to_edn(event));
        text.push('\n');
    }
    std::fs::write(path, text).map_err(|source| HistoryError::Io {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lines_follow_the_contract() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let writer = HistoryWriter::create(&path, TestClock::new()).unwrap();
        let a = writer
            .record(Event::new(
                3,
                EventType::Invoke,
                "put",
                Some("k7"),
                json!("x12"),
            ))
            .unwrap();
        let b = writer
            .record(Event::new(
                3,
                EventType::Ok,
                "put",
                Some("k7"),
                json!("x12"),
            ))
            .unwrap();
        assert!(b.time >= a.time);
        let text = std::fs::read_to_string(&path).unwrap();
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["process"], 3);
        assert_eq!(first["type"], "invoke");
        assert_eq!(first["f"], "put");
        assert_eq!(first["key"], "k7");
        assert_eq!(first["value"], "x12");
        assert!(first["time"].is_u64());
        assert_eq!(read_history(&path).unwrap(), vec![a, b]);
    }

    #[test]
    fn each_line_is_on_disk_before_record_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let writer = HistoryWriter::create(&path, TestClock::new()).unwrap();
        writer
            .record(Event::new(
                0,
                EventType::Invoke,
                "get",
                Some("a"),
                Value::Null,
            ))
            .unwrap();
        // No drop, no flush call: another reader sees the line now.
        assert_eq!(read_history(&path).unwrap().len(), 1);
    }

    #[test]
    fn torn_last_line_is_dropped_but_bad_middle_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h.jsonl");
        let good = r#"{"process":1,"type":"invoke","f":"read","value":null,"time":5}"#;
        std::fs::write(&path, format!("{good}\n{{\"process\":1,\"ty")).unwrap();
        assert_eq!(read_history(&path).unwrap().len(), 1);
        std::fs::write(&path, format!("{good}\nnot json\n{good}\n")).unwrap();
        let err = read_history(&path).unwrap_err().to_string();
        assert!(err.contains(":2:"), "{err}");
    }

    #[test]
    fn summary_pairs_completions_with_invokes() {
        let e = |p, k, f: &str| Event::new(p, k, f, None, Value::Null);
        let events = vec![
            e(0, EventType::Invoke, "read"),
            e(1, EventType::Invoke, "write"),
            e(0, EventType::Ok, "read"),
            e(1, EventType::Info, "write"),
            e(2, EventType::Invoke, "read"),
            e(3, EventType::Fail, "read"),
        ];
        let s = summarize(&events);
        assert_eq!(
            (s.invokes, s.ok, s.info, s.fail, s.unfinished),
            (3, 1, 1, 1, 1)
        );
        assert_eq!(s.problems.len(), 1, "{:?}", s.problems);
    }

    #[test]
    fn edn_uses_keywords_nil_and_independent_tuples() {
        let mut event = Event::new(2, EventType::Ok, "cas", Some("k\"1"), json!([1, 2]));
        event.time = 99;
        event.index = Some(4);
        assert_eq!(
            event_to_edn(&event),
            r#"{:type :ok, :f :cas, :value ["k\"1" [1 2]], :process 2, :time 99, :index 4}"#
        );
        let mut read = Event::new(0, EventType::Invoke, "read", None, Value::Null);
        assert_eq!(
            event_to_edn(&read),
            "{:type :invoke, :f :read, :value nil, :process 0, :time 0}"
        );
        read.phase = Some(FINAL_READ_PHASE.into());
        assert!(read.is_final_read());
        assert_eq!(
            event_to_edn(&read),
            "{:type :invoke, :f :read, :value nil, :process 0, :time 0, :phase :final-read}"
        );
        let line = serde_json::to_string(&read).unwrap();
        assert!(line.contains(r#""phase":"final-read""#), "{line}");
        assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), read);
    }
}
