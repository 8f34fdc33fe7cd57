//! Linearizable, exactly-once key/value service replicated by our Raft.
//!
//! This crate is on the pure side of the I/O line, like `raft`: no sockets,
//! files, clocks, threads or tokio. It holds
//!
//! * [`command`]: operations (get/put/append/cas), results, and the CBOR
//!   log-entry codec;
//! * [`state_machine`]: the replicated store with its deduplication table,
//!   snapshot and restore;
//! * [`message`]: the client request/response messages the node daemon
//!   carries over the transport;
//! * [`server`]: the server logic that hosts a Raft node (proposals, ReadIndex
//!   reads, pending-request bookkeeping, snapshot trigger);
//! * [`client`]: the clerk state machine (leader hints, retries with backoff,
//!   timeouts, outcome classification ok / fail / unknown).
//!
//! The simulator and the tokio node daemon host the same code.

pub mod client;
pub mod command;
pub mod message;
pub mod raft_node;
pub mod server;
pub mod state_machine;

pub use client::{Clerk, ClerkConfig, FailReason, Outcome, Send, Step, UnknownReason};
pub use command::{ClientId, Command, Op, OpResult, Seq};
pub use message::{KvRequest, KvResponse};
pub use server::{
    Consensus, KvServer, Leadership, ReadMode, Refusal, Reply, RequestId, ServerConfig,
    TakenSnapshot,
};
pub use state_machine::{ApplyOutcome, KvStateMachine};
