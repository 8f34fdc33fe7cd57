//! The run's history as DESIGN.md's JSON-lines events, checked with the
//! checker crate's `kv` model.

use std::path::Path;
use std::time::Duration;

use checker::{check_history, EventKind, History, ModelKind, Options, Value, Verdict};
use kv::Op;

use super::Micros;

#[derive(Clone, Debug)]
pub struct Recorded {
    pub process: i64,
    pub kind: EventKind,
    pub f: &'static str,
    pub key: String,
    pub value: Option<String>,
    pub time_us: Micros,
}

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

fn written(op: &Op) -> Option<String> {
    match op {
        Op::Put { value, .. } | Op::Append { value, .. } => Some(value.clone()),
        _ => None,
    }
}

impl Recorder {
    fn push(
        &mut self,
        process: i64,
        kind: EventKind,
        op: &Op,
        value: Option<String>,
        time_us: Micros,
    ) {
        self.events.push(Recorded {
            process,
            kind,
            f: f_of(op),
            key: op.key().to_string(),
            value,
            time_us,
        });
    }
    pub fn invoke(&mut self, process: i64, op: &Op, now_us: Micros) {
        self.push(process, EventKind::Invoke, op, written(op), now_us);
    }
    pub fn ok(&mut self, process: i64, op: &Op, read: &str, now_us: Micros) {
        let value = if matches!(op, Op::Get { .. }) {
            Some(read.to_string())
        } else {
            written(op)
        };
        self.push(process, EventKind::Ok, op, value, now_us);
    }
    pub fn fail(&mut self, process: i64, op: &Op, now_us: Micros) {
        self.push(process, EventKind::Fail, op, written(op), now_us);
    }

    pub fn operations(&self) -> usize {
        self.events
            .iter()
            .filter(|e| e.kind == EventKind::Invoke)
            .count()
    }

    /// Linearizability under the `kv` model, within `budget`.
    pub fn check(&self, budget: Duration) -> Result<Verdict, String> {
        let events: Vec<checker::Event> = self
            .events
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
            .collect();
        let history =
            History::from_events(&events, Path::new("<shardkv sim>")).map_err(|e| e.to_string())?;
        let options = Options {
            timeout: Some(budget),
            threads: 1,
            ..Options::default()
        };
        let result =
            check_history(&history, &ModelKind::Kv, &options).map_err(|e| e.to_string())?;
        Ok(result.verdict)
    }
}
