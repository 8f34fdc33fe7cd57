//! Histories: raw events (one line of a file) and the operations they pair into.
//!
//! A history file is a sequence of events in the order they happened. Each
//! client process has at most one operation outstanding; its completion is the
//! next event of the same process. [`History::from_events`] does that pairing
//! and keeps the position of every event, which the search uses as its clock:
//! the file order is the real-time order, whatever the `time` fields say.

use std::path::{Path, PathBuf};

use crate::value::Value;

/// What an event says about its operation (Jepsen's `:type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// The operation starts.
    Invoke,
    /// The operation completed and took effect.
    Ok,
    /// The operation completed and certainly did not take effect.
    Fail,
    /// Unknown outcome: it may have taken effect at any time after its invoke, or never.
    Info,
}

impl EventKind {
    /// The name used in JSON lines and EDN (`invoke`, `ok`, `fail`, `info`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Invoke => "invoke",
            EventKind::Ok => "ok",
            EventKind::Fail => "fail",
            EventKind::Info => "info",
        }
    }

    /// Parses `invoke`, `ok`, `fail`, `info`.
    pub fn parse(s: &str) -> Option<EventKind> {
        match s {
            "invoke" => Some(EventKind::Invoke),
            "ok" => Some(EventKind::Ok),
            "fail" => Some(EventKind::Fail),
            "info" => Some(EventKind::Info),
            _ => None,
        }
    }
}

/// One line of a history: an invocation or a completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Client process id.
    pub process: i64,
    /// Invoke, ok, fail or info.
    pub kind: EventKind,
    /// The operation's function (`get`, `put`, `read`, `cas`, `txn`, ...).
    pub f: String,
    /// Key for keyed models (`kv`, keyed registers); `None` for a single object.
    pub key: Option<String>,
    /// The event's value: the input on an invoke, the result on an ok.
    pub value: Value,
    /// Monotonic time in nanoseconds, when the format has one.
    pub time: Option<i64>,
    /// 1-based line in the source file (0 when the event was built in memory).
    pub line: usize,
}

/// How an operation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Status {
    /// Completed and took effect.
    Ok,
    /// Completed and certainly did not take effect (kept: some models, like
    /// porcupine's etcd register, read a failed CAS as an observation).
    Fail,
    /// Outcome unknown (`info`, or never completed): may take effect at any
    /// time after its invocation, or never.
    Info,
}

impl Status {
    /// `ok`, `fail` or `info`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Info => "info",
        }
    }
}

/// An operation: an invocation paired with its completion.
#[derive(Clone, Debug, PartialEq)]
pub struct Operation {
    /// Position of this operation in [`History::operations`].
    pub id: usize,
    /// Client process id.
    pub process: i64,
    /// Function name (`get`, `put`, `append`, `read`, `write`, `cas`, `txn`, `acquire`, ...).
    pub f: String,
    /// Key for keyed models; `None` for a single object.
    pub key: Option<String>,
    /// The value of the invocation (e.g. the value written, `[old new]` for a CAS).
    pub input: Value,
    /// The value of the completion (e.g. the value read); `Nil` when unknown.
    pub output: Value,
    /// Ok, fail or info.
    pub status: Status,
    /// Position of the invoke event in the history's event order (the search's clock).
    pub invoke_index: usize,
    /// Position of the completion event; `None` for an info or never-completed
    /// operation, whose return is at +infinity.
    pub return_index: Option<usize>,
    /// The invoke's time in nanoseconds, if the format has times.
    pub invoke_time: Option<i64>,
    /// The completion's time in nanoseconds, if any.
    pub return_time: Option<i64>,
    /// Source line of the invoke (for messages).
    pub line: usize,
}

impl Operation {
    /// The value that best describes what the operation did: the completion's
    /// value when it completed ok (reads filled in), the invocation's otherwise.
    pub fn effective_value(&self) -> &Value {
        if self.status == Status::Ok && !self.output.is_nil() {
            &self.output
        } else {
            &self.input
        }
    }
}

/// A paired history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    /// Operations in invocation order.
    pub operations: Vec<Operation>,
    /// Number of events the operations came from (invokes plus completions).
    pub events: usize,
    /// Events that belong to no client operation (e.g. Jepsen nemesis ops), skipped.
    pub skipped_events: usize,
}

/// Where a history file's content is wrong.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A line or form is malformed, or events do not pair up.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The file (`<memory>` when parsing a string).
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// `--format auto` could not tell what the file is.
    #[error("{path}: cannot detect the format (give --format)")]
    UnknownFormat {
        /// The file.
        path: PathBuf,
    },
}

impl ParseError {
    pub(crate) fn syntax(path: &Path, line: usize, message: impl Into<String>) -> ParseError {
        ParseError::Syntax {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }
}

/// Input formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// Detect from the content.
    Auto,
    /// Our JSON lines (DESIGN.md "Contracts").
    Jsonl,
    /// Jepsen EDN histories: a vector/list of op maps, or one map per line.
    Edn,
    /// Porcupine's kv test logs: one EDN map per line with `:key`.
    PorcupineKv,
    /// Porcupine's Jepsen etcd logs (`INFO  jepsen.util - 3 :invoke :read nil`).
    PorcupineEtcd,
}

impl Format {
    /// The CLI name.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Jsonl => "jsonl",
            Format::Edn => "edn",
            Format::PorcupineKv => "porcupine-kv",
            Format::PorcupineEtcd => "porcupine-etcd",
        }
    }

    /// Parses a CLI name.
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "auto" => Some(Format::Auto),
            "jsonl" | "json" => Some(Format::Jsonl),
            "edn" => Some(Format::Edn),
            "porcupine-kv" => Some(Format::PorcupineKv),
            "porcupine-etcd" | "etcd-log" => Some(Format::PorcupineEtcd),
            _ => None,
        }
    }
}

impl History {
    /// Pairs events into operations.
    ///
    /// Each completion pairs with its process's outstanding invoke. A process
    /// invoking while it has an operation outstanding is an error, and so is a
    /// completion with no invoke. Invokes never completed become [`Status::Info`].
    pub fn from_events(events: &[Event], path: &Path) -> Result<History, ParseError> {
        use std::collections::HashMap;
        let mut operations: Vec<Operation> = Vec::new();
        let mut outstanding: HashMap<i64, usize> = HashMap::new();
        for (position, event) in events.iter().enumerate() {
            match event.kind {
                EventKind::Invoke => {
                    if let Some(&previous) = outstanding.get(&event.process) {
                        return Err(ParseError::syntax(
                            path,
                            event.line,
                            format!(
                                "process {} invokes while its operation from line {} is outstanding",
                                event.process, operations[previous].line
                            ),
                        ));
                    }
                    let id = operations.len();
                    outstanding.insert(event.process, id);
                    operations.push(Operation {
                        id,
                        process: event.process,
                        f: event.f.clone(),
                        key: event.key.clone(),
                        input: event.value.clone(),
                        output: Value::Nil,
                        status: Status::Info,
                        invoke_index: position,
                        return_index: None,
                        invoke_time: event.time,
                        return_time: None,
                        line: event.line,
                    });
                }
                kind => {
                    let Some(id) = outstanding.remove(&event.process) else {
                        return Err(ParseError::syntax(
                            path,
                            event.line,
                            format!(
                                "{} for process {} without an outstanding invoke",
                                kind.as_str(),
                                event.process
                            ),
                        ));
                    };
                    let op = &mut operations[id];
                    if op.f != event.f {
                        return Err(ParseError::syntax(
                            path,
                            event.line,
                            format!(
                                "completion f {:?} does not match the invoke's f {:?} (line {})",
                                event.f, op.f, op.line
                            ),
                        ));
                    }
                    op.return_time = event.time;
                    match kind {
                        EventKind::Ok => {
                            op.status = Status::Ok;
                            op.output = event.value.clone();
                            op.return_index = Some(position);
                        }
                        EventKind::Fail => {
                            op.status = Status::Fail;
                            op.output = event.value.clone();
                            op.return_index = Some(position);
                        }
                        // Unknown: the return stays at +infinity.
                        _ => {
                            op.status = Status::Info;
                            op.output = Value::Nil;
                        }
                    }
                }
            }
        }
        Ok(History {
            operations,
            events: events.len(),
            skipped_events: 0,
        })
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.operations.len()
    }

    /// True when there are no operations.
    pub fn is_empty(&self) -> bool {
        self.operations.is_empty()
    }

    /// The events of this history, in their original order (an info
    /// completion is written at the end for operations whose outcome is
    /// unknown). Used by the writers.
    pub fn to_events(&self) -> Vec<Event> {
        let mut positioned: Vec<(usize, Event)> = Vec::with_capacity(self.operations.len() * 2);
        let end = usize::MAX / 2;
        for op in &self.operations {
            positioned.push((
                op.invoke_index,
                Event {
                    process: op.process,
                    kind: EventKind::Invoke,
                    f: op.f.clone(),
                    key: op.key.clone(),
                    value: op.input.clone(),
                    time: op.invoke_time,
                    line: op.line,
                },
            ));
            let (kind, position) = match (op.status, op.return_index) {
                (Status::Ok, Some(i)) => (EventKind::Ok, i),
                (Status::Fail, Some(i)) => (EventKind::Fail, i),
                _ => (EventKind::Info, end + op.id),
            };
            let value = if kind == EventKind::Ok {
                op.output.clone()
            } else {
                op.input.clone()
            };
            positioned.push((
                position,
                Event {
                    process: op.process,
                    kind,
                    f: op.f.clone(),
                    key: op.key.clone(),
                    value,
                    time: op.return_time,
                    line: 0,
                },
            ));
        }
        positioned.sort_by_key(|(position, _)| *position);
        positioned.into_iter().map(|(_, e)| e).collect()
    }
}

/// Reads a history file in the given format (`Format::Auto` detects it).
pub fn read_file(path: &Path, format: Format) -> Result<History, ParseError> {
    let text = std::fs::read_to_string(path).map_err(|source| ParseError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_str(&text, format, path)
}

/// Parses a history from text; `path` only names the source in errors.
pub fn parse_str(text: &str, format: Format, path: &Path) -> Result<History, ParseError> {
    let format = match format {
        Format::Auto => crate::formats::detect(text).ok_or_else(|| ParseError::UnknownFormat {
            path: path.to_path_buf(),
        })?,
        f => f,
    };
    crate::formats::parse(text, format, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(process: i64, kind: EventKind, f: &str, value: Value, line: usize) -> Event {
        Event {
            process,
            kind,
            f: f.into(),
            key: None,
            value,
            time: None,
            line,
        }
    }

    #[test]
    fn pairs_by_process_and_keeps_positions() {
        let events = vec![
            event(1, EventKind::Invoke, "write", Value::Int(1), 1),
            event(2, EventKind::Invoke, "read", Value::Nil, 2),
            event(2, EventKind::Ok, "read", Value::Int(1), 3),
            event(1, EventKind::Info, "write", Value::Int(1), 4),
            event(3, EventKind::Invoke, "read", Value::Nil, 5),
        ];
        let h = History::from_events(&events, Path::new("t")).unwrap();
        assert_eq!(h.len(), 3);
        assert_eq!(h.operations[0].status, Status::Info);
        assert_eq!(h.operations[0].return_index, None);
        assert_eq!(h.operations[1].status, Status::Ok);
        assert_eq!(h.operations[1].output, Value::Int(1));
        assert_eq!(h.operations[1].return_index, Some(2));
        assert_eq!(h.operations[2].status, Status::Info);
    }

    #[test]
    fn double_invoke_is_an_error_with_line() {
        let events = vec![
            event(1, EventKind::Invoke, "write", Value::Int(1), 1),
            event(1, EventKind::Invoke, "write", Value::Int(2), 2),
        ];
        let err = History::from_events(&events, Path::new("h.jsonl")).unwrap_err();
        assert!(err.to_string().starts_with("h.jsonl:2:"), "{err}");
    }

    #[test]
    fn orphan_completion_is_an_error() {
        let events = vec![event(4, EventKind::Ok, "read", Value::Nil, 7)];
        let err = History::from_events(&events, Path::new("h")).unwrap_err();
        assert!(err.to_string().contains("h:7"), "{err}");
    }
}
