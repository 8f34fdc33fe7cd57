//! Linearizability checker (Wing & Gong / Lowe, porcupine-style) with
//! explanations, and the `checker` CLI.
//!
//! This crate is on the pure side of the I/O line except for the file
//! readers and writers in [`formats`] and [`history::read_file`]: a model is a
//! handful of pure functions ([`model::Model`]), the search is a function of
//! the history, and the only clock read is the time budget.

pub mod check;
pub mod formats;
pub mod generate;
pub mod graph;
pub mod history;
pub mod html;
pub mod model;
pub mod oracle;
pub mod report;
pub mod search;
pub mod value;

pub use check::{
    check_history, check_with, explain, CheckResult, GraphMode, Options, PartitionResult,
    UnknownReason, Verdict,
};
pub use history::{Event, EventKind, Format, History, Operation, ParseError, Status};
pub use model::{Model, ModelError, ModelKind};
pub use value::Value;
