//! Raft consensus as a pure state machine (sans-I/O).
//!
//! This crate is on the pure side of the I/O line: it owns no sockets, files,
//! clocks, threads or global random number generators. A runtime (the
//! simulator in `nodes/sim`, or the tokio node in `nodes/node`) feeds it ticks
//! and messages and carries out what it asks for.

pub mod types;

pub use types::*;
