//! Porcupine's Jepsen etcd logs:
//!
//! `INFO  jepsen.util - 17\t:invoke\t:cas\t[1 4]`
//!
//! Fields are separated by tabs or runs of spaces. Values are `nil`, an
//! integer, `[A B]` or `:timed-out`. Pairing is by process, as in every
//! Jepsen history; a crashed process never appears again.

use std::path::Path;

use crate::history::{Event, EventKind, History, ParseError};
use crate::value::Value;

fn parse_value(text: &str) -> Option<Value> {
    let t = text.trim();
    if t == "nil" {
        return Some(Value::Nil);
    }
    if let Some(kw) = t.strip_prefix(':') {
        return Some(Value::Keyword(kw.to_string()));
    }
    if let Some(inner) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        let items: Option<Vec<Value>> = inner.split_whitespace().map(parse_value).collect();
        return items.map(Value::List);
    }
    t.parse::<i64>().ok().map(Value::Int)
}

/// Parses one log line (1-based `line` for errors); `Ok(None)` for a blank line.
pub fn parse_line(text: &str, line: usize, path: &Path) -> Result<Option<Event>, ParseError> {
    let mut fields = text.split_whitespace();
    let Some(first) = fields.next() else {
        return Ok(None);
    };
    let bad = |what: &str| ParseError::syntax(path, line, format!("etcd log line: {what}"));
    if first != "INFO" || fields.next() != Some("jepsen.util") || fields.next() != Some("-") {
        return Err(bad(
            "expected `INFO jepsen.util - <process> <type> <f> <value>`",
        ));
    }
    let process: i64 = fields
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| bad("process is not an integer"))?;
    let kind = fields
        .next()
        .and_then(|t| t.strip_prefix(':'))
        .and_then(EventKind::parse)
        .ok_or_else(|| bad("type must be :invoke, :ok, :fail or :info"))?;
    let f = fields
        .next()
        .and_then(|f| f.strip_prefix(':'))
        .ok_or_else(|| bad("f must be a keyword"))?
        .to_string();
    let rest: Vec<&str> = fields.collect();
    let value = parse_value(&rest.join(" ")).ok_or_else(|| bad("unreadable value"))?;
    Ok(Some(Event {
        process,
        kind,
        f,
        key: None,
        value,
        time: None,
        line,
    }))
}

/// Parses a whole etcd log.
pub fn parse(text: &str, path: &Path) -> Result<History, ParseError> {
    let mut events = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if let Some(event) = parse_line(line, i + 1, path)? {
            events.push(event);
        }
    }
    History::from_events(&events, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Status;

    #[test]
    fn tabs_and_spaces_both_parse() {
        let text = "INFO  jepsen.util - 3\t:invoke\t:cas\t[1 4]\n\
                    INFO  jepsen.util - 17  :invoke :read   nil\n\
                    INFO  jepsen.util - 3\t:fail\t:cas\t[1 4]\n\
                    INFO  jepsen.util - 17  :fail   :read   :timed-out\n";
        let h = parse(text, Path::new("e.log")).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(
            h.operations[0].input,
            Value::List(vec![Value::Int(1), Value::Int(4)])
        );
        assert_eq!(h.operations[0].status, Status::Fail);
        assert_eq!(h.operations[1].output, Value::Keyword("timed-out".into()));
    }

    #[test]
    fn garbage_names_the_line() {
        let err = parse(
            "INFO  jepsen.util - 1 :invoke :read nil\nhello\n",
            Path::new("e.log"),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("e.log:2:"), "{err}");
    }
}
