//! The run's history in `sim::history::Recorder` (DESIGN.md's JSON-lines
//! events), with the KV operations' names and values, checked with the
//! checker crate's `kv` model.

use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

use checker::{check_history, Format, ModelKind, Options, Verdict};
use kv::Op;
use sim::history::{EventType, Recorder};

use super::Micros;

/// The recorder, fed with `kv::Op`s; derefs to it for the generic parts.
#[derive(Clone, Debug, Default)]
pub struct History {
    recorder: Recorder,
}

impl Deref for History {
    type Target = Recorder;
    fn deref(&self) -> &Recorder {
        &self.recorder
    }
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

impl History {
    fn push(
        &mut self,
        process: i64,
        kind: EventType,
        op: &Op,
        value: Option<String>,
        now_us: Micros,
    ) {
        self.recorder
            .push(process, kind, f_of(op), op.key(), value, now_us);
    }
    pub fn invoke(&mut self, process: i64, op: &Op, now_us: Micros) {
        self.push(process, EventType::Invoke, op, written(op), now_us);
    }
    /// `read` is a get's value (ignored for writes).
    pub fn ok(&mut self, process: i64, op: &Op, read: &str, now_us: Micros) {
        let value = match op {
            Op::Get { .. } => Some(read.to_string()),
            _ => written(op),
        };
        self.push(process, EventType::Ok, op, value, now_us);
    }
    pub fn fail(&mut self, process: i64, op: &Op, now_us: Micros) {
        self.push(process, EventType::Fail, op, written(op), now_us);
    }

    /// Linearizability under the checker's `kv` model, within `budget`.
    pub fn check(&self, budget: Duration) -> Result<Verdict, String> {
        let text = self.recorder.to_jsonl();
        let history = checker::history::parse_str(&text, Format::Jsonl, Path::new("<shardkv sim>"))
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
}
