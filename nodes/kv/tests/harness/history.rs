//! The run's history in `sim::history::Recorder` (DESIGN.md's JSON-lines
//! events), with the KV operations' names and values, checked with the
//! checker crate's `kv` model.
//!
//! The shardkv tests' harness includes this same file (`#[path]`): both
//! record `kv::Op`s, and `sim` cannot name them (it sits below kv).

use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

use checker::{check_history, Format, ModelKind, Options, Verdict};
use kv::client::Outcome;
use kv::{Op, OpResult};
use sim::history::{EventType, Recorder};

use super::Micros;

/// The recorder, fed with `kv::Op`s; derefs to it for the generic parts
/// (`to_jsonl`, `check_appends`, `save_if_asked`, counts).
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

fn written_value(op: &Op) -> Option<String> {
    match op {
        Op::Put { value, .. } | Op::Append { value, .. } => Some(value.clone()),
        _ => None,
    }
}

impl History {
    pub fn invoke(&mut self, process: i64, op: &Op, now_us: Micros) {
        let (f, key) = (f_of(op), op.key());
        self.recorder.push(
            process,
            EventType::Invoke,
            f,
            key,
            written_value(op),
            now_us,
        );
    }

    pub fn complete(&mut self, process: i64, op: &Op, outcome: &Outcome, now_us: Micros) {
        let (kind, value) = match outcome {
            Outcome::Ok(OpResult::Value(read)) => (EventType::Ok, Some(read.clone())),
            Outcome::Ok(_) => (EventType::Ok, written_value(op)),
            Outcome::Fail(_) => (EventType::Fail, written_value(op)),
            Outcome::Unknown(_) => (EventType::Info, written_value(op)),
        };
        self.recorder
            .push(process, kind, f_of(op), op.key(), value, now_us);
    }

    /// `read` is a get's value (ignored for writes).
    pub fn ok(&mut self, process: i64, op: &Op, read: &str, now_us: Micros) {
        let value = match op {
            Op::Get { .. } => Some(read.to_string()),
            _ => written_value(op),
        };
        self.recorder
            .push(process, EventType::Ok, f_of(op), op.key(), value, now_us);
    }

    pub fn fail(&mut self, process: i64, op: &Op, now_us: Micros) {
        let value = written_value(op);
        self.recorder
            .push(process, EventType::Fail, f_of(op), op.key(), value, now_us);
    }

    /// Linearizability under the checker's `kv` model, within `budget`.
    pub fn check(&self, budget: Duration) -> Result<Verdict, String> {
        let text = self.recorder.to_jsonl();
        let history =
            checker::history::parse_str(&text, Format::Jsonl, Path::new("<simulated history>"))
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
