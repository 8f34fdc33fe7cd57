//! Sharded KV (Lab 4B), replicated by our Raft.
//!
//! Pure side of the I/O line, like `kv`: no sockets, clocks or threads. Each
//! replica group is a Raft group hosting a [`ShardKvServer`]; the runtime
//! (simulator harness or node daemon) carries its messages:
//!
//! * clerk requests ([`ShardKvRequest`] / [`ShardKvResponse`]);
//! * what the group's leader asks of others ([`Outbound`]): the controller
//!   for the next configuration, a previous owner for a shard's data
//!   ([`PullRequest`] / [`PullReply`]), a previous owner to delete a shard it
//!   handed over ([`DeleteRequest`] / [`DeleteReply`]).
//!
//! Clients use [`ShardClerk`], a sans-IO clerk: the runtime carries out its
//! [`ClerkAction`]s (send to a server, query the controller, back off) and
//! feeds answers and timeouts back.
//!
//! Every change of shard state goes through the group's Raft log
//! ([`GroupCommand`]): client writes, moving to the next configuration, a
//! received shard installed, a handed-over shard deleted, a deletion
//! confirmed. So every replica of a group agrees on which shards it serves.
//!
//! Shard life cycle in a group (see [`ShardStatus`]): a shard it gains is
//! `Receiving` until the previous owner's data is installed, then
//! `Confirming` (already served) until the previous owner confirms deletion,
//! then `Serving`. A shard it loses is `HandingOver` (frozen, not served)
//! until the new owner asks it to delete it (garbage collection, challenge
//! 1). A group moves to configuration n+1 only once every shard is settled
//! at n; shards untouched by a change are served throughout (challenge 2).

pub mod clerk;
pub mod command;
pub mod server;
pub mod state_machine;

pub use clerk::{Busy, ClerkAction, ShardClerk};
pub use command::{
    DeleteReply, DeleteRequest, GroupCommand, PullReply, PullRequest, ShardData, ShardKvRequest,
    ShardKvResponse,
};
pub use server::{Outbound, Reply, ServerConfig, ServerError, ShardKvServer};
pub use state_machine::{ApplyResult, ShardKvState, ShardStatus};
