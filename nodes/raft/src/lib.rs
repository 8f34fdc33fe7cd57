//! Raft consensus as a pure state machine (sans-I/O).
//!
//! This crate is on the pure side of the I/O line: it owns no sockets, files,
//! clocks, threads or global random number generators. A runtime (the
//! simulator in `nodes/sim`, or the tokio node in `nodes/node`) feeds it ticks
//! and messages and carries out what it asks for, in the order written on
//! [`Ready`].
//!
//! The runtime's loop, for a single-node cluster (a real runtime also
//! sends `messages` to peers and feeds their messages to [`RawNode::step`]):
//!
//! ```
//! use raft::{Config, EntryKind, RawNode, Restored, Role};
//!
//! let mut node = RawNode::new(Config::new(1, vec![1]), Restored::default()).unwrap();
//! node.campaign(); // or tick() until the election timeout fires
//! let mut applied = Vec::new();
//! let mut proposed = false;
//! while applied.is_empty() {
//!     if node.status().role == Role::Leader && !proposed {
//!         node.propose(b"x=1".to_vec()).unwrap();
//!         proposed = true;
//!     }
//!     if node.has_ready() {
//!         let ready = node.ready();
//!         // 1. persist ready.snapshot, ready.entries, ready.hard_state (one fsync)
//!         // 2. send ready.messages
//!         // 3. restore ready.snapshot, then apply ready.committed_entries in order
//!         for entry in ready.committed_entries {
//!             if entry.kind == EntryKind::Normal {
//!                 applied.push(entry.data);
//!             }
//!         }
//!         // 4. serve ready.read_states whose index <= applied
//!         node.advance(); // 5.
//!     } else {
//!         node.tick();
//!     }
//! }
//! assert_eq!(applied, vec![b"x=1".to_vec()]);
//! ```
//!
//! Layout: `log` (entries after a snapshot offset, persistence cursors),
//! `progress` (per-follower replication state and in-flight window),
//! `quorum` (majority maths), `raft` (state, timers, role changes, message
//! dispatch), `election` (votes, pre-vote, lease), `replication` (leader:
//! Appends, snapshots, commit rule, transfer), `follower` (consistency
//! check, snapshot assembly), `read_only` (ReadIndex and lease reads),
//! `raw_node` (the Ready/advance handshake), `message` (the wire types).

mod bytes;
pub mod config;
mod election;
pub mod errors;
mod follower;
mod log;
pub mod message;
mod prng;
pub mod progress;
mod quorum;
mod raft;
pub mod raw_node;
mod read_only;
mod replication;
pub mod types;

pub use config::{Config, ConfigError, Mutations, ReadMode};
pub use errors::{CompactError, ProposeError, StepError};
pub use message::{Message, MessageBody};
pub use progress::ProgressState;
pub use raft::{Counters, ReadState, Role};
pub use raw_node::{FollowerStatus, RawNode, Ready, Status};
pub use types::*;
