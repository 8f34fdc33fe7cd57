//! A small EDN reader (enough for Jepsen histories) and the EDN history writer.
//!
//! Supported: vectors, lists, sets (read as lists), maps, keywords, strings
//! with escapes, integers (with an optional `N`), other numbers (kept as
//! text), `nil`, `true`/`false`, symbols (as strings), `;` comments, commas
//! as whitespace, `#_` discard and tagged literals (`#inst "..."`: the tag is
//! dropped). A history is either one top-level vector/list of op maps, or a
//! sequence of top-level maps (porcupine's kv logs: one per line).
//!
//! Jepsen's independent checker writes keyed values as `:value [k v]`; when
//! every client event's value has that shape (and the history is not a txn
//! or pure-cas history, where a pair means something else), the key is split
//! off into [`Event::key`].

use std::io::Write;
use std::path::Path;

use crate::history::{Event, EventKind, History, ParseError};
use crate::value::Value;

/// Limit on nesting, so a hostile file cannot overflow the stack.
const NESTING_DEPTH_MAX: usize = 256;

/// A reader over EDN text that tracks line numbers.
pub struct Reader<'a> {
    text: &'a [u8],
    position: usize,
    line: usize,
    path: &'a Path,
}

fn is_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b',' | b'(' | b')' | b'[' | b']' | b'{' | b'}' | b'"' | b';'
        )
}

impl<'a> Reader<'a> {
    /// A reader over `text`; `path` names it in errors.
    pub fn new(text: &'a str, path: &'a Path) -> Reader<'a> {
        Reader {
            text: text.as_bytes(),
            position: 0,
            line: 1,
            path,
        }
    }

    /// The current 1-based line.
    pub fn line(&self) -> usize {
        self.line
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        ParseError::syntax(self.path, self.line, message)
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.position).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.position += 1;
        if b == b'\n' {
            self.line += 1;
        }
        Some(b)
    }

    /// Skips whitespace, commas and comments; returns the next byte, if any.
    pub fn skip_whitespace(&mut self) -> Option<u8> {
        while let Some(b) = self.peek() {
            if b.is_ascii_whitespace() || b == b',' {
                self.bump();
            } else if b == b';' {
                while let Some(c) = self.bump() {
                    if c == b'\n' {
                        break;
                    }
                }
            } else {
                return Some(b);
            }
        }
        None
    }

    /// Consumes one byte the caller has peeked.
    pub fn consume(&mut self) {
        self.bump();
    }

    /// Reads the next form; `Ok(None)` at the end of input.
    pub fn read(&mut self) -> Result<Option<Value>, ParseError> {
        if self.skip_whitespace().is_none() {
            return Ok(None);
        }
        self.read_form(0).map(Some)
    }

    fn read_form(&mut self, depth: usize) -> Result<Value, ParseError> {
        if depth > NESTING_DEPTH_MAX {
            return Err(self.error("EDN nested too deeply"));
        }
        let Some(b) = self.skip_whitespace() else {
            return Err(self.error("unexpected end of input"));
        };
        match b {
            b'[' => {
                self.bump();
                Ok(Value::List(self.read_sequence(b']', depth)?))
            }
            b'(' => {
                self.bump();
                Ok(Value::List(self.read_sequence(b')', depth)?))
            }
            b'{' => {
                self.bump();
                let items = self.read_sequence(b'}', depth)?;
                if items.len() % 2 != 0 {
                    return Err(self.error("map with an odd number of forms"));
                }
                let mut entries = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    entries.push((k, v));
                }
                Ok(Value::Map(entries))
            }
            b'"' => {
                self.bump();
                self.read_string()
            }
            b'#' => {
                self.bump();
                match self.peek() {
                    Some(b'{') => {
                        self.bump();
                        Ok(Value::List(self.read_sequence(b'}', depth)?))
                    }
                    Some(b'_') => {
                        self.bump();
                        self.read_form(depth + 1)?;
                        self.read_form(depth)
                    }
                    _ => {
                        // Tagged literal: drop the tag, keep the value.
                        self.read_token();
                        self.read_form(depth + 1)
                    }
                }
            }
            b')' | b']' | b'}' => Err(self.error(format!("unexpected `{}`", b as char))),
            b':' => {
                self.bump();
                let token = self.read_token();
                if token.is_empty() {
                    return Err(self.error("empty keyword"));
                }
                Ok(Value::Keyword(token))
            }
            _ => {
                let token = self.read_token();
                if token.is_empty() {
                    return Err(self.error(format!("unexpected `{}`", b as char)));
                }
                Ok(atom(&token))
            }
        }
    }

    fn read_sequence(&mut self, close: u8, depth: usize) -> Result<Vec<Value>, ParseError> {
        let start = self.line;
        let mut items = Vec::new();
        loop {
            match self.skip_whitespace() {
                None => {
                    return Err(self.error(format!(
                        "unclosed collection opened on line {start} (expected `{}`)",
                        close as char
                    )))
                }
                Some(b) if b == close => {
                    self.bump();
                    return Ok(items);
                }
                Some(_) => items.push(self.read_form(depth + 1)?),
            }
        }
    }

    fn read_string(&mut self) -> Result<Value, ParseError> {
        let start = self.line;
        let mut bytes = Vec::new();
        loop {
            match self.bump() {
                None => return Err(self.error(format!("unterminated string from line {start}"))),
                Some(b'"') => break,
                Some(b'\\') => match self.bump() {
                    Some(b'n') => bytes.push(b'\n'),
                    Some(b't') => bytes.push(b'\t'),
                    Some(b'r') => bytes.push(b'\r'),
                    Some(b'"') => bytes.push(b'"'),
                    Some(b'\\') => bytes.push(b'\\'),
                    Some(other) => {
                        bytes.push(b'\\');
                        bytes.push(other);
                    }
                    None => return Err(self.error("unterminated string escape")),
                },
                Some(b) => bytes.push(b),
            }
        }
        String::from_utf8(bytes)
            .map(Value::Str)
            .map_err(|_| self.error("string is not UTF-8"))
    }

    fn read_token(&mut self) -> String {
        let start = self.position;
        while let Some(b) = self.peek() {
            if is_delimiter(b) {
                break;
            }
            self.bump();
        }
        String::from_utf8_lossy(&self.text[start..self.position]).into_owned()
    }
}

fn atom(token: &str) -> Value {
    match token {
        "nil" => Value::Nil,
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        _ => {
            let digits = token.strip_suffix('N').unwrap_or(token);
            match digits.parse::<i64>() {
                Ok(i) => Value::Int(i),
                Err(_) => Value::Str(token.to_string()),
            }
        }
    }
}

/// Reads every top-level form of `text`.
pub fn read_all(text: &str, path: &Path) -> Result<Vec<Value>, ParseError> {
    let mut reader = Reader::new(text, path);
    let mut forms = Vec::new();
    while let Some(form) = reader.read()? {
        forms.push(form);
    }
    Ok(forms)
}

fn lookup<'v>(map: &'v [(Value, Value)], key: &str) -> Option<&'v Value> {
    map.iter()
        .find(|(k, _)| matches!(k, Value::Keyword(s) if s == key))
        .map(|(_, v)| v)
}

/// An op map as an event; `Ok(None)` for a non-client (nemesis) op.
fn map_to_event(value: &Value, line: usize, path: &Path) -> Result<Option<Event>, ParseError> {
    let Value::Map(map) = value else {
        return Err(ParseError::syntax(
            path,
            line,
            format!("expected an op map, got {value}"),
        ));
    };
    let process = match lookup(map, "process") {
        Some(Value::Int(p)) => *p,
        Some(Value::Keyword(_)) | Some(Value::Str(_)) => return Ok(None),
        _ => {
            return Err(ParseError::syntax(
                path,
                line,
                "op map needs an integer :process",
            ))
        }
    };
    let kind = lookup(map, "type")
        .and_then(Value::as_str)
        .and_then(EventKind::parse)
        .ok_or_else(|| {
            ParseError::syntax(path, line, ":type must be :invoke, :ok, :fail or :info")
        })?;
    let f = lookup(map, "f")
        .and_then(Value::as_str)
        .ok_or_else(|| ParseError::syntax(path, line, "op map needs an :f"))?
        .to_string();
    let key = match lookup(map, "key") {
        None | Some(Value::Nil) => None,
        Some(Value::Str(s)) | Some(Value::Keyword(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    };
    let time = lookup(map, "time").and_then(Value::as_int);
    Ok(Some(Event {
        process,
        kind,
        f,
        key,
        value: lookup(map, "value").cloned().unwrap_or(Value::Nil),
        time,
        line,
    }))
}

/// True when every value looks like Jepsen's independent `[k v]` tuple.
fn looks_independent(events: &[Event]) -> bool {
    if events.is_empty() || events.iter().all(|e| e.key.is_some()) {
        return false;
    }
    let pair =
        |v: &Value| matches!(v.as_list(), Some([k, _]) if k.as_list().is_none() && !k.is_nil());
    events
        .iter()
        .all(|e| e.key.is_none() && e.f != "txn" && pair(&e.value))
        && events.iter().any(|e| e.f != "cas")
}

fn split_independent(events: &mut [Event]) {
    for event in events {
        if let Value::List(items) = std::mem::take(&mut event.value) {
            let mut it = items.into_iter();
            let key = it.next().unwrap_or(Value::Nil);
            event.key = Some(match key {
                Value::Str(s) | Value::Keyword(s) => s,
                other => other.to_string(),
            });
            event.value = it.next().unwrap_or(Value::Nil);
        }
    }
}

/// Parses a Jepsen EDN history (or porcupine's kv log).
pub fn parse_history(text: &str, path: &Path) -> Result<History, ParseError> {
    let mut reader = Reader::new(text, path);
    let mut events = Vec::new();
    let mut skipped = 0;
    let mut push = |value: &Value, line: usize| -> Result<(), ParseError> {
        match map_to_event(value, line, path)? {
            Some(event) => events.push(event),
            None => skipped += 1,
        }
        Ok(())
    };
    match reader.skip_whitespace() {
        None => {}
        Some(b'[') | Some(b'(') => {
            let open_line = reader.line();
            let close = if reader.skip_whitespace() == Some(b'[') {
                b']'
            } else {
                b')'
            };
            reader.consume();
            loop {
                match reader.skip_whitespace() {
                    None => {
                        return Err(ParseError::syntax(
                            path,
                            reader.line(),
                            format!("history opened on line {open_line} is not closed"),
                        ))
                    }
                    Some(b) if b == close => {
                        reader.consume();
                        break;
                    }
                    Some(_) => {
                        let line = reader.line();
                        let form = reader.read_form(1)?;
                        push(&form, line)?;
                    }
                }
            }
            if reader.read()?.is_some() {
                return Err(ParseError::syntax(
                    path,
                    reader.line(),
                    "text after the history",
                ));
            }
        }
        Some(_) => loop {
            if reader.skip_whitespace().is_none() {
                break;
            }
            let line = reader.line();
            let form = reader.read_form(0)?;
            push(&form, line)?;
        },
    }
    if looks_independent(&events) {
        split_independent(&mut events);
    }
    let mut history = History::from_events(&events, path)?;
    history.skipped_events = skipped;
    Ok(history)
}

/// One event as an EDN map; a keyed event uses Jepsen's independent form `:value [k v]`.
pub fn event_to_edn(event: &Event) -> String {
    let value = match &event.key {
        Some(key) => Value::List(vec![Value::Str(key.clone()), event.value.clone()]),
        None => event.value.clone(),
    };
    let mut s = format!(
        "{{:process {}, :type :{}, :f :{}, :value {}",
        event.process,
        event.kind.as_str(),
        event.f,
        value
    );
    if let Some(time) = event.time {
        s.push_str(&format!(", :time {time}"));
    }
    s.push('}');
    s
}

/// Writes a history as a Jepsen EDN vector of op maps, one per line.
pub fn write_history(history: &History, out: &mut dyn Write) -> std::io::Result<()> {
    out.write_all(b"[")?;
    for (i, event) in history.to_events().iter().enumerate() {
        if i > 0 {
            out.write_all(b"\n ")?;
        }
        out.write_all(event_to_edn(event).as_bytes())?;
    }
    out.write_all(b"]\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Status;

    #[test]
    fn reads_the_edn_subset() {
        let forms = read_all(
            "; comment\n[1, -2 3N nil true :kw/x \"s\\\"t\" (a b) {:k [1 2]} #{1} #_ 9 #inst \"t\"]",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(forms.len(), 1);
        let Value::List(items) = &forms[0] else {
            panic!()
        };
        assert_eq!(items[0], Value::Int(1));
        assert_eq!(items[1], Value::Int(-2));
        assert_eq!(items[2], Value::Int(3));
        assert_eq!(items[3], Value::Nil);
        assert_eq!(items[4], Value::Bool(true));
        assert_eq!(items[5], Value::Keyword("kw/x".into()));
        assert_eq!(items[6], Value::Str("s\"t".into()));
        assert_eq!(items.len(), 11);
        assert_eq!(items[10], Value::Str("t".into()));
    }

    #[test]
    fn history_with_nemesis_and_missing_comma() {
        let text = "[{:process 1 :type :invoke, :f :write, :value 3}\n\
                    {:process :nemesis, :type :info, :f :start, :value nil}\n\
                    {:process 1, :type :ok, :f :write, :value 3}]";
        let h = parse_history(text, Path::new("h.edn")).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h.skipped_events, 1);
        assert_eq!(h.operations[0].status, Status::Ok);
    }

    #[test]
    fn independent_tuples_become_keys() {
        let text = "({:process 0, :type :invoke, :f :read, :value [5 nil]}\n\
                     {:process 0, :type :ok, :f :read, :value [5 2]})";
        let h = parse_history(text, Path::new("h.edn")).unwrap();
        assert_eq!(h.operations[0].key.as_deref(), Some("5"));
        assert_eq!(h.operations[0].output, Value::Int(2));
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse_history(
            "[{:process 1 :type :invoke :f :read}\n{:process 2 :type]\n",
            Path::new("b.edn"),
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("b.edn:2:"), "{err}");
        let err = parse_history("[{:process 1 :type :invoke :f :read}\n", Path::new("b.edn"))
            .unwrap_err();
        assert!(err.to_string().contains("not closed"), "{err}");
    }

    #[test]
    fn writer_output_reads_back() {
        let text = "[{:process 1, :type :invoke, :f :put, :value [\"k\" \"x\"], :time 3}\n\
                     {:process 1, :type :ok, :f :put, :value [\"k\" \"x\"], :time 4}]";
        let h = parse_history(text, Path::new("h")).unwrap();
        assert_eq!(h.operations[0].key.as_deref(), Some("k"));
        let mut out = Vec::new();
        write_history(&h, &mut out).unwrap();
        let again = parse_history(std::str::from_utf8(&out).unwrap(), Path::new("h")).unwrap();
        assert_eq!(
            again.operations,
            h.operations
                .iter()
                .map(|o| {
                    let mut o = o.clone();
                    o.line = again.operations[o.id].line;
                    o
                })
                .collect::<Vec<_>>()
        );
    }
}
