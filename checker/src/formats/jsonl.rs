//! Our JSON lines history format (DESIGN.md, "Contracts"): one event per line,
//!
//! `{"process":3,"type":"invoke","f":"put","key":"k7","value":"x12","time":1523000}`
//!
//! `index`, `node`, `error` and any other fields are ignored.

use std::io::Write;
use std::path::Path;

use crate::history::{Event, EventKind, History, ParseError};
use crate::value::Value;

#[derive(serde::Deserialize)]
struct Line {
    process: serde_json::Value,
    #[serde(rename = "type")]
    kind: String,
    f: String,
    #[serde(default)]
    key: Option<serde_json::Value>,
    #[serde(default)]
    value: serde_json::Value,
    #[serde(default)]
    time: Option<i64>,
}

/// Parses one line into an event; `Ok(None)` for a line that is no client
/// event (blank, or a nemesis event whose process is not an integer).
pub fn parse_line(text: &str, line: usize, path: &Path) -> Result<Option<Event>, ParseError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let parsed: Line = serde_json::from_str(trimmed)
        .map_err(|e| ParseError::syntax(path, line, format!("bad JSON event: {e}")))?;
    let Some(process) = parsed.process.as_i64() else {
        if parsed.process.is_string() {
            return Ok(None);
        }
        return Err(ParseError::syntax(path, line, "process must be an integer"));
    };
    let kind = EventKind::parse(&parsed.kind).ok_or_else(|| {
        ParseError::syntax(
            path,
            line,
            format!(
                "type must be invoke, ok, fail or info, got {:?}",
                parsed.kind
            ),
        )
    })?;
    let key = match parsed.key {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s),
        Some(other) => Some(other.to_string()),
    };
    Ok(Some(Event {
        process,
        kind,
        f: parsed.f,
        key,
        value: Value::from_json(&parsed.value),
        time: parsed.time,
        line,
    }))
}

/// Parses a whole JSON lines history.
pub fn parse(text: &str, path: &Path) -> Result<History, ParseError> {
    let mut events = Vec::new();
    let mut skipped = 0;
    for (i, line) in text.lines().enumerate() {
        match parse_line(line, i + 1, path)? {
            Some(event) => events.push(event),
            None if !line.trim().is_empty() => skipped += 1,
            None => {}
        }
    }
    let mut history = History::from_events(&events, path)?;
    history.skipped_events = skipped;
    Ok(history)
}

/// One event as a JSON object (the contract's field order).
pub fn event_to_json(event: &Event) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("process".into(), event.process.into());
    map.insert("type".into(), event.kind.as_str().into());
    map.insert("f".into(), event.f.clone().into());
    if let Some(key) = &event.key {
        map.insert("key".into(), key.clone().into());
    }
    map.insert("value".into(), event.value.to_json());
    if let Some(time) = event.time {
        map.insert("time".into(), time.into());
    }
    serde_json::Value::Object(map)
}

/// Writes events as JSON lines.
pub fn write_events(events: &[Event], out: &mut dyn Write) -> std::io::Result<()> {
    for event in events {
        let line = event_to_json(event).to_string();
        out.write_all(line.as_bytes())?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Writes a history as JSON lines (an info completion for operations whose
/// outcome is unknown, at the end).
pub fn write_history(history: &History, out: &mut dyn Write) -> std::io::Result<()> {
    write_events(&history.to_events(), out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Status;

    #[test]
    fn parses_the_contract_example() {
        let text = r#"{"process":3,"type":"invoke","f":"put","key":"k7","value":"x12","time":1523000}
{"process":3,"type":"ok","f":"put","key":"k7","value":"x12","time":1790000,"node":"n1"}
"#;
        let h = parse(text, Path::new("h.jsonl")).unwrap();
        assert_eq!(h.len(), 1);
        let op = &h.operations[0];
        assert_eq!(op.key.as_deref(), Some("k7"));
        assert_eq!(op.input, Value::Str("x12".into()));
        assert_eq!(op.status, Status::Ok);
        assert_eq!(op.invoke_time, Some(1523000));
        assert_eq!(op.return_time, Some(1790000));
    }

    #[test]
    fn malformed_line_names_file_and_line() {
        let text = "{\"process\":1,\"type\":\"invoke\",\"f\":\"get\",\"key\":\"a\"}\n{\"process\":1,\"type\":\"ok\"\n";
        let err = parse(text, Path::new("x.jsonl")).unwrap_err();
        assert!(err.to_string().starts_with("x.jsonl:2:"), "{err}");
    }

    #[test]
    fn write_then_parse_round_trips() {
        let text = r#"{"process":1,"type":"invoke","f":"write","value":1,"time":5}
{"process":2,"type":"invoke","f":"read","value":null,"time":6}
{"process":1,"type":"info","f":"write","value":1,"time":7}
{"process":2,"type":"ok","f":"read","value":1,"time":8}
"#;
        let h = parse(text, Path::new("h")).unwrap();
        let mut out = Vec::new();
        write_history(&h, &mut out).unwrap();
        let again = parse(std::str::from_utf8(&out).unwrap(), Path::new("h")).unwrap();
        assert_eq!(again.len(), 2);
        assert_eq!(again.operations[0].status, Status::Info);
        assert_eq!(again.operations[1].output, Value::Int(1));
        assert_eq!(again.operations[1].status, Status::Ok);
    }
}
