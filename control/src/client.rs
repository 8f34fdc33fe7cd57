//! The `Client` seam (Jepsen's client): turns an operation into a request to the database and
//! its answer into a definite `ok`/`fail` or an indefinite `info`.
//!
//! The rule every client must keep: a timeout or a lost connection after the request may have
//! been sent is [`Completion::Info`] (unknown), never `Fail`; `Fail` only when the database
//! said the operation certainly did not happen.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::cluster::Node;

/// An operation a workload wants done.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub f: String,
    pub key: Option<String>,
    pub value: Value,
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    /// Happened; the value is what the database returned (a read's value, or the written one).
    Ok(Value),
    /// Certainly did not happen.
    Fail(String),
    /// Unknown outcome.
    Info(String),
}

/// A connection used by one logical process at a time.
pub trait Client: Send {
    /// Performs `op`, giving up (as `Info`) after `timeout`.
    fn invoke(&mut self, op: &Op, timeout: Duration) -> Completion;
}

/// Opens clients; one per logical process (a process retired after `info` gets a new one).
pub trait ClientFactory: Send + Sync {
    fn open(&self, node: &Node, process: u64) -> Result<Box<dyn Client>, String>;
}

/// Produces operations (Jepsen's generator) for one logical process.
pub trait Generator: Send {
    fn next_op(&mut self, process: u64) -> Op;
}

/// What a test runs against a database: the operations, the clients that perform them, and
/// the checker model that judges the history. The runner drives any `Workload` with any `Db`.
pub trait Workload: Send + Sync {
    fn name(&self) -> &str;
    /// The checker model name (`kv`, `register`, `cas-register`).
    fn model(&self) -> &str;
    /// Operations for one client thread; `seed` differs per thread and derives from the test's.
    fn generator(&self, seed: u64) -> Box<dyn Generator>;
    /// Clients for this cluster (called once the nodes exist).
    fn clients(&self, nodes: &[Node]) -> Arc<dyn ClientFactory>;
}
