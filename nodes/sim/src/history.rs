//! Recording what simulated clients did, as DESIGN.md's history contract
//! (`history.jsonl`: invoke, then ok / fail / info, per process, with
//! virtual timestamps), for any checker that reads that format.
//!
//! The recorder knows no service: a harness names each operation's `f`,
//! key and value. It stays on this side of the crate order (the checker
//! sits elsewhere): [`Recorder::to_jsonl`] is what a harness hands to the
//! checker's JSON-lines parser.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use crate::host::Micros;

/// An event's `type` in the history contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
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
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Invoke => "invoke",
            EventType::Ok => "ok",
            EventType::Fail => "fail",
            EventType::Info => "info",
        }
    }
}

/// One history event, as a line of `history.jsonl` carries it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recorded {
    pub process: i64,
    pub kind: EventType,
    pub f: &'static str,
    pub key: String,
    /// The value written (put/append), the value read (ok of a get), or none.
    pub value: Option<String>,
    pub time_us: Micros,
}

/// The events of a run, in the order they happened.
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    pub events: Vec<Recorded>,
}

impl Recorder {
    pub fn push(
        &mut self,
        process: i64,
        kind: EventType,
        f: &'static str,
        key: &str,
        value: Option<String>,
        time_us: Micros,
    ) {
        self.events.push(Recorded {
            process,
            kind,
            f,
            key: key.to_string(),
            value,
            time_us,
        });
    }

    /// Operations invoked.
    pub fn operations(&self) -> usize {
        self.count(EventType::Invoke)
    }

    /// Operations completed ok.
    pub fn ok_count(&self) -> usize {
        self.count(EventType::Ok)
    }

    fn count(&self, kind: EventType) -> usize {
        self.events.iter().filter(|e| e.kind == kind).count()
    }

    /// The history as DESIGN.md's JSON lines (`time` in nanoseconds).
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for e in &self.events {
            let value = match &e.value {
                Some(v) => json_string(v),
                None => "null".to_string(),
            };
            let _ = writeln!(
                out,
                "{{\"process\":{},\"type\":\"{}\",\"f\":{},\"key\":{},\"value\":{},\"time\":{}}}",
                e.process,
                e.kind.as_str(),
                json_string(e.f),
                json_string(&e.key),
                value,
                e.time_us * 1_000
            );
        }
        out
    }

    /// With the environment variable `dir_variable` set to a folder, writes
    /// the history there as `<name>-seed<seed>.jsonl` (for the checker CLI
    /// or a bug report); a failure to write is printed, not fatal.
    pub fn save_if_asked(&self, dir_variable: &str, name: &str, seed: u64) {
        if let Ok(dir) = std::env::var(dir_variable) {
            let path = Path::new(&dir).join(format!("{name}-seed{seed}.jsonl"));
            if let Err(error) = std::fs::write(&path, self.to_jsonl()) {
                println!("cannot write {}: {error}", path.display());
            }
        }
    }

    /// The labs' append check, generalised to shared keys and unknown
    /// outcomes: in each key's final value, every `append` that completed
    /// ok appears exactly once, one of unknown outcome at most once, a
    /// failed one never, and each process's appends appear in the order it
    /// issued them. Appended values must be unique strings.
    pub fn check_appends(&self, final_values: &BTreeMap<String, String>) -> Result<(), String> {
        // Per key, in issue order: (value, how it ended, process).
        let mut appends: BTreeMap<&str, Vec<(&str, EventType, i64)>> = BTreeMap::new();
        let mut outstanding: BTreeMap<i64, (&str, usize)> = BTreeMap::new();
        for e in self.events.iter().filter(|e| e.f == "append") {
            match e.kind {
                EventType::Invoke => {
                    let Some(value) = e.value.as_deref() else {
                        continue;
                    };
                    let list = appends.entry(e.key.as_str()).or_default();
                    outstanding.insert(e.process, (e.key.as_str(), list.len()));
                    // Until it completes, its outcome is unknown.
                    list.push((value, EventType::Info, e.process));
                }
                kind => {
                    if let Some((key, i)) = outstanding.remove(&e.process) {
                        if let Some(entry) = appends.get_mut(key).and_then(|l| l.get_mut(i)) {
                            entry.1 = kind;
                        }
                    }
                }
            }
        }
        for (key, list) in appends {
            let text = final_values.get(key).map(String::as_str).unwrap_or("");
            let mut last_offset: BTreeMap<i64, usize> = BTreeMap::new();
            for (value, kind, process) in list {
                let found: Vec<usize> = text.match_indices(value).map(|(i, _)| i).collect();
                match (kind, found.len()) {
                    (EventType::Ok, 1) | (EventType::Info, 0 | 1) | (EventType::Fail, 0) => {}
                    (kind, n) => {
                        return Err(format!(
                            "key {key}: append {value:?} ({}) appears {n} times",
                            kind.as_str()
                        ))
                    }
                }
                if let Some(&offset) = found.first() {
                    if last_offset.get(&process).is_some_and(|p| offset < *p) {
                        return Err(format!(
                            "key {key}: append {value:?} of process {process} appears before an earlier one"
                        ));
                    }
                    last_offset.insert(process, offset);
                }
            }
        }
        Ok(())
    }
}

/// `s` as a JSON string literal.
fn json_string(s: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn append(r: &mut Recorder, process: i64, value: &str, end: EventType, t: Micros) {
        r.push(
            process,
            EventType::Invoke,
            "append",
            "k",
            Some(value.into()),
            t,
        );
        r.push(process, end, "append", "k", Some(value.into()), t + 1);
    }

    #[test]
    fn jsonl_follows_the_contract_and_escapes() {
        let mut r = Recorder::default();
        r.push(3, EventType::Invoke, "get", "k\"1", None, 2);
        r.push(3, EventType::Ok, "get", "k\"1", Some("a\nb".into()), 5);
        assert_eq!(
            r.to_jsonl(),
            "{\"process\":3,\"type\":\"invoke\",\"f\":\"get\",\"key\":\"k\\\"1\",\"value\":null,\"time\":2000}\n\
             {\"process\":3,\"type\":\"ok\",\"f\":\"get\",\"key\":\"k\\\"1\",\"value\":\"a\\u000ab\",\"time\":5000}\n"
        );
        assert_eq!((r.operations(), r.ok_count()), (1, 1));
    }

    #[test]
    fn append_check_counts_and_orders() {
        let mut r = Recorder::default();
        append(&mut r, 1, "x1", EventType::Ok, 0);
        append(&mut r, 1, "x2", EventType::Info, 10);
        append(&mut r, 2, "y1", EventType::Fail, 20);
        let finals = |v: &str| BTreeMap::from([("k".to_string(), v.to_string())]);
        assert!(r.check_appends(&finals("x1x2")).is_ok());
        assert!(
            r.check_appends(&finals("x1")).is_ok(),
            "info may be missing"
        );
        assert!(r.check_appends(&finals("x2")).is_err(), "ok append lost");
        assert!(
            r.check_appends(&finals("x1x1")).is_err(),
            "ok append doubled"
        );
        assert!(r.check_appends(&finals("x2x1")).is_err(), "process order");
        assert!(
            r.check_appends(&finals("x1y1")).is_err(),
            "failed append present"
        );
    }
}
