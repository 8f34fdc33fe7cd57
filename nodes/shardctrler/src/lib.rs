//! Shard controller (Lab 4A), replicated by our Raft.
//!
//! Pure side of the I/O line: this crate holds the controller's replicated
//! state machine ([`ShardCtrler`]), its log-entry codec ([`CtrlCommand`]), and
//! the rebalancing maths ([`rebalance`]). A runtime (the simulator, or the
//! node daemon) hosts it on a Raft group and routes clerk requests to the
//! leader; every request, queries included, goes through the log, so a query
//! answered by a leader is linearizable.
//!
//! * [`config`]: numbered configurations, [`NSHARDS`], [`key_to_shard`] and
//!   the deterministic minimal-move [`rebalance`];
//! * [`state_machine`]: Join / Leave / Move / Query with exactly-once
//!   semantics for retried requests (client id + sequence number), snapshot
//!   and restore;
//! * [`server`]: a replica's request handling ([`CtrlServer`]) for a runtime
//!   that hosts the controller on a Raft group.

pub mod config;
pub mod server;
pub mod state_machine;

pub use config::{key_to_shard, key_to_shard_of, rebalance, Config, Gid, ShardId, NSHARDS};
pub use server::{CtrlRequest, CtrlResponse, CtrlServer};
pub use state_machine::{
    ApplyOutcome, ClientId, CtrlCommand, CtrlOp, CtrlResult, DecodeError, Seq, ShardCtrler,
};
